"""Speckle density classifier: metrics against scikit-learn, held-out accuracy, determinism, artifacts, plots."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from matlake.models.base import torch_state_dumps, torch_state_loads
from matlake.models.scattering import classifier as C
from matlake.models.scattering import plots
from matlake.models.scattering.simulate import SpeckleSpec, build_dataset


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    for k in (2, 4, 5):
        y = rng.integers(0, k, 200)
        p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
        m = C.evaluate(y, p, k)
        assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
        assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", labels=list(range(k))))
        assert m["confusion"] == confusion_matrix(y, p, labels=list(range(k))).tolist()
        np.testing.assert_allclose(m["per_class_accuracy"], recall_score(y, p, average=None, labels=list(range(k))))
        assert m["chance"] == 1 / k and m["n"] == 200
    # a class never predicted and never present counts 0 in macro-F1, as sklearn's zero_division=0
    m = C.evaluate([0, 0, 1], [0, 0, 1], 3)
    assert m["macro_f1"] == pytest.approx(f1_score([0, 0, 1], [0, 0, 1], average="macro", labels=[0, 1, 2],
                                                   zero_division=0))


@pytest.fixture(scope="module")
def trained():
    train = build_dataset(SpeckleSpec(n_per_class=40, seed=1))
    res = C.train_cnn(train.patterns, train.labels, train.mask, 4, C.TrainConfig(epochs=15, seed=0, threads=1), device="cpu")
    return train, res


def test_cnn_held_out_accuracy_well_above_chance(trained):
    train, res = trained
    test = build_dataset(SpeckleSpec(n_per_class=20, seed=2))  # other seeds: other configurations and noise
    pred, prob = C.predict_cnn(res.network, test.patterns, test.mask)
    m = C.evaluate(test.labels, pred, 4)
    assert m["chance"] == 0.25
    assert m["accuracy"] > 0.7, m
    assert m["macro_f1"] > 0.65, m
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    assert res.history["loss"][-1] < 0.6 * res.history["loss"][0]
    assert res.history["config"]["seed"] == 0
    # state dict artifact round trip: same predictions
    net2 = torch_state_loads(torch_state_dumps(res.network), C.build_network(4, 64))
    np.testing.assert_array_equal(C.predict_cnn(net2, test.patterns, test.mask)[1], prob)
    # the radial-average baseline on the same data
    base = C.fit_radial_baseline(train.patterns, train.labels, train.mask)
    acc = (base.predict(C.radial_features(test.patterns, test.mask)) == test.labels).mean()
    assert acc > 0.6


def test_training_is_deterministic_for_a_seed():
    ds = build_dataset(SpeckleSpec(n_per_class=8, number_densities=(0.01, 0.03), seed=4))
    cfg = C.TrainConfig(epochs=2, seed=9, threads=1)
    a = C.train_cnn(ds.patterns, ds.labels, ds.mask, 2, cfg, device="cpu")
    b = C.train_cnn(ds.patterns, ds.labels, ds.mask, 2, cfg, device="cpu")
    c = C.train_cnn(ds.patterns, ds.labels, ds.mask, 2, C.TrainConfig(epochs=2, seed=10, threads=1), device="cpu")
    sa, sb, sc = (r.network.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_plots_are_pngs(trained):
    train, _ = trained
    names = [f"{v:g}" for v in train.class_values]
    png = plots.confusion_png([[5, 1, 0, 0], [0, 4, 2, 0], [0, 0, 6, 0], [0, 0, 1, 5]], names, "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    png = plots.examples_png(train.patterns, train.labels, train.mask, names, per_class=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_binomial_thinning_keeps_poisson_statistics_and_trains():
    # thinning Poisson(lam) counts by p gives Poisson(p lam): mean and variance both p lam
    gen = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((200_000,), 40.0), generator=gen)
    thinned = torch.binomial(counts, torch.full_like(counts, 0.1), generator=gen)
    assert float(thinned.mean()) == pytest.approx(4.0, rel=0.01)
    assert float(thinned.var()) == pytest.approx(4.0, rel=0.03)
    ds = build_dataset(SpeckleSpec(n_per_class=6, number_densities=(0.01, 0.03), seed=4))
    res = C.train_cnn(ds.patterns, ds.labels, ds.mask, 2, C.TrainConfig(epochs=1, seed=1, threads=1,
                                                                          thin_counts=(1e3, 1e4)), device="cpu")
    assert res.history["config"]["thin_counts"] == (1e3, 1e4)
    noiseless = build_dataset(SpeckleSpec(n_per_class=2, number_densities=(0.01,), counts=None, seed=4))
    with pytest.raises(ValueError, match="integer counts"):
        C.train_cnn(noiseless.patterns, noiseless.labels, noiseless.mask, 1,
                    C.TrainConfig(epochs=1, thin_counts=(1e3, 1e4)), device="cpu")
