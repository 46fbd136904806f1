"""Generated spectra, spectra model modules, multimodal fusion and shift robustness.

The generator's physics is checked against xraylarch (E0 of the generated Ni K
edges); the models against the relations the generator planted (oxidation
state, Ni-O distance, a two-edge XOR defect).  The ``spectrum_features`` rows
the models train on come from the platform featurizer
(:func:`~matlake.models.spectra.featurize.featurize_spectra` on the raw spectra).  Data sets are small so the file runs in well under a minute.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from matlake.models.base import artifact_format
from matlake.models.spectra import generator as gen
from matlake.models.spectra.evaluation import shift_curve, shift_test, shifted_features, write_shift_png
from matlake.models.spectra.featurize import featurize_spectra
from matlake.models.spectra.grids import BUILTIN_GRIDS, resolve_grid
from matlake.models.spectra.models import (
    SpectraForestClassifier,
    SpectraForestRegressor,
    class_spread,
    fold_assignment,
    folds_digest,
    select_device,
)
from matlake.models.spectra.models_lake import generate_into, train_spectra_model
from matlake.platform.modeling import load_model
from matlake.platform.provenance import lineage

TRAIN = "s.sample like 'gen-xanes-train-%'"
TEST = "s.sample like 'gen-xanes-test-%'"


def commit_features(lake, kind: str, grid_name: str) -> str:
    """spectrum_features rows of every spectrum of the grid's edge, through the platform featurizer."""
    grid = resolve_grid(grid_name)
    report = featurize_spectra(lake, kind, grid_name, source="spectra",
                               where=f"element = '{grid.element}' and edge = '{grid.edge}'")
    assert not report.errors, report.errors
    return report.activity_id


# --------------------------------------------------------------------------- the generator (pure)


def test_generator_is_reproducible_from_its_seed():
    a = gen.generate("xanes", 6, seed=11)
    b = gen.generate("xanes", 6, seed=11)
    c = gen.generate("xanes", 6, seed=12)
    longer = gen.generate("xanes", 9, seed=11)
    for s, t, u in zip(a.spectra, b.spectra, longer.spectra):
        assert np.array_equal(s.intensity, t.intensity) and s.truth == t.truth
        assert np.array_equal(s.intensity, u.intensity)  # sample i does not depend on n
    assert not np.allclose(a.spectra[0].intensity, c.spectra[0].intensity)
    rows_a, rows_b = gen.generated_rows(a), gen.generated_rows(b)
    assert [r["record_id"] for r in rows_a["spectra"]] == [r["record_id"] for r in rows_b["spectra"]]
    assert rows_a == rows_b
    row = rows_a["spectra"][0]
    assert row["source_kind"] == "generated" and row["code"] == gen.CODE
    p = json.loads(row["code_parameters_json"])
    assert p["seed"] == 11 and p["parameters"]["shift_per_state"] == 1.5 and "energy_shift" in p["drawn"]
    e1, e2 = gen.generate("eels", 4, seed=5), gen.generate("eels", 4, seed=5)
    assert all(np.array_equal(s.intensity, t.intensity) for s, t in zip(e1.spectra, e2.spectra))


def test_generated_ni_k_edge_moves_1p5_ev_per_oxidation_state_by_larch():
    from larch import Group
    from larch.xafs import pre_edge

    p = gen.XanesParameters()
    e = p.axis()
    found = {}
    for q in gen.OXIDATION_STATES:
        g = Group()
        pre_edge(e, gen.ni_k_xanes(e, q, gen.NI_O_DISTANCE[q], 0.3, params=p), group=g)
        found[q] = g.e0
        assert abs(g.e0 - (p.e0_ni2 + 1.5 * (q - 2))) <= 0.3  # larch's E0 = the planted edge
    assert found[3] - found[2] == pytest.approx(1.5, abs=0.3)
    assert found[4] - found[3] == pytest.approx(1.5, abs=0.3)
    # With noise and a random misalignment, larch's E0 follows the planted E0 (which includes the shift).
    for s in gen.generate("xanes", 8, seed=3).spectra:
        g = Group()
        pre_edge(s.axis, s.intensity, group=g)
        assert abs(g.e0 - s.truth["e0"]) <= 0.8, s.truth


def test_generated_oscillation_period_follows_the_ni_o_distance():
    """The first-shell term is sin(2kR + phi): its zero crossings in k are (n pi - phi) / 2R."""
    p = gen.XanesParameters(exafs_sigma2=0.0)
    e = np.linspace(8345.0, 8420.0, 4000)
    for r in (1.88, 2.09):
        base = gen.ni_k_xanes(e, 2, r, 0.0, params=gen.XanesParameters(exafs_amplitude=0.0, exafs_sigma2=0.0))
        osc = gen.ni_k_xanes(e, 2, r, 0.0, params=p) - base
        k = np.sqrt(gen.HBAR2_2M * (e - p.e0_ni2))
        crossings = k[1:][np.diff(np.sign(osc)) != 0]
        spacing = np.diff(crossings[crossings > 1.0])
        assert np.median(spacing) == pytest.approx(np.pi / (2 * r), rel=0.02)


def test_planted_defect_needs_both_edges():
    s = gen.generate("eels", 400, seed=9)
    o = [x for x in s.spectra if x.element == "O"]
    a = np.array([x.truth["o_k_prepeak_high"] for x in o])
    b = np.array([x.truth["ni_l3_shifted"] for x in o])
    d = np.array([x.truth["defect"] for x in o])
    assert np.array_equal(d, np.logical_xor(a, b).astype(float))
    for bit in (a, b):  # each edge's hidden bit alone says ~nothing about the defect
        assert abs(d[bit == 1].mean() - 0.5) < 0.1 and abs(d[bit == 0].mean() - 0.5) < 0.1
    for x in s.spectra:  # the spectra cover the published grids
        grid = BUILTIN_GRIDS["eels-o-k" if x.element == "O" else "eels-ni-l"]
        assert x.axis[0] <= grid.start and x.axis[-1] >= grid.stop and (x.intensity >= 0).all()


def test_generator_refuses_bad_parameters():
    with pytest.raises(ValueError, match="unknown parameter.*shift_mx"):
        gen.parameters_from("xanes", {"shift_mx": 2})
    with pytest.raises(ValueError, match="expected kind 'xanes' or 'eels', found 'xps'"):
        gen.generate("xps", 3, 1)
    with pytest.raises(ValueError, match="oxidation state"):
        gen.ni_k_xanes(np.arange(3.0), 5, 2.0, 0.0)


# --------------------------------------------------------------------------- pure model helpers


def test_fold_assignment_is_seeded_balanced_and_order_free():
    keys = [f"s{i}" for i in range(23)]
    f1 = fold_assignment(keys, 5, 7)
    f2 = fold_assignment(keys[::-1], 5, 7)[::-1]
    assert np.array_equal(f1, f2)
    assert sorted(np.bincount(f1)) == [4, 4, 5, 5, 5]
    assert not np.array_equal(f1, fold_assignment(keys, 5, 8))
    assert folds_digest(keys, f1) == folds_digest(keys[::-1], f2[::-1])
    with pytest.raises(ValueError, match="at least 5 distinct samples"):
        fold_assignment(keys[:3], 5, 0)


def test_class_spread_is_the_standard_deviation_of_the_class_distribution():
    proba = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.25, 0.5, 0.25]])
    classes = np.array([2.0, 3.0, 4.0])
    want = [np.sqrt(np.sum(p * (classes - p @ classes) ** 2)) for p in proba]
    assert np.allclose(class_spread(proba, classes), want)
    assert class_spread(np.array([[0.3, 0.7]]), np.array([0.0, 1.0]))[0] == pytest.approx(np.sqrt(0.21))


def test_model_parameters_are_checked():
    with pytest.raises(ValueError, match="featurizer: expected one of .* found 'fourier'"):
        SpectraForestClassifier(featurizer="fourier")
    with pytest.raises(ValueError, match="unknown parameter"):
        SpectraForestRegressor(n_trees=3)
    m = SpectraForestRegressor(label="mean_ni_o_distance", grids="eels-o-k,eels-ni-l")
    assert m.params["grids"] == ["eels-o-k", "eels-ni-l"] and m.unit == "Angstrom"
    assert m.name == "spectra-rf-regressor/mean_ni_o_distance/cdf/eels-o-k+eels-ni-l"
    assert "list_concat(e0.vector, e1.vector)" in m.train_sql and "e1.sample = e0.sample" in m.train_sql


def test_torch_device_follows_cuda_availability():
    import torch

    assert select_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert select_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")


# --------------------------------------------------------------------------- through a lake


def test_generate_commits_labelled_spectra_once(lake):
    out = generate_into(lake, "xanes", 5, seed=1, dataset="demo")
    assert not out["skipped"] and out["n_spectra"] == 5 and out["n_labels"] == 15
    again = generate_into(lake, "xanes", 5, seed=1, dataset="demo")
    assert again["skipped"] and again["activity_id"] == out["activity_id"]
    rows = lake.sql("select source_kind, code, code_version, sample, technique from spectra").df()
    assert set(rows.source_kind) == {"generated"} and set(rows.code) == {gen.CODE}
    assert sorted(rows["sample"]) == [f"gen-xanes-demo-{i:05d}" for i in range(5)]
    labels = lake.sql("select label, method, count(*) n from spectrum_labels group by all").df()
    assert set(labels.label) == {"oxidation_state", "mean_ni_o_distance", "energy_shift"}
    assert set(labels.method) == {gen.PLANTED} and set(labels.n) == {5}
    params = json.loads(lake.sql("select parameters_json from activities where activity_id = ?",
                                 params=[out["activity_id"]]).fetchone()[0])
    assert params["seed"] == 1 and params["generator_version"] == gen.GENERATOR_VERSION
    assert params["parameters"]["counts"] == gen.XanesParameters().counts
    forced = generate_into(lake, "xanes", 5, seed=1, dataset="demo", force=True)
    assert not forced["skipped"]
    assert lake.sql("select max(version) from spectra").fetchone()[0] == 2  # the same records, new versions


@pytest.fixture(scope="module")
def xanes_lake(tmp_path_factory):
    """120 generated training and 60 test Ni K spectra with intensity, derivative and CDF features."""
    import matlake

    lk = matlake.init(tmp_path_factory.mktemp("spectra_models") / "lake")
    gens = {"train": generate_into(lk, "xanes", 120, seed=1, dataset="train")["activity_id"],
            "test": generate_into(lk, "xanes", 60, seed=2, dataset="test")["activity_id"]}
    for kind in ("intensity", "derivative", "cdf"):
        commit_features(lk, kind, "xanes-ni-k")
    lk.tag("features")
    yield lk, gens
    lk.close()


@pytest.fixture(scope="module")
def classifiers(xanes_lake):
    lk, _ = xanes_lake
    return {kind: train_spectra_model(lk, "spectra-rf-classifier", as_of="features", featurizer=kind,
                                      where=TRAIN, n_estimators=40, cv_folds=3)
            for kind in ("intensity", "derivative", "cdf")}


def test_oxidation_state_models_recover_the_planted_relation(xanes_lake, classifiers):
    lk, _ = xanes_lake
    clf = classifiers["cdf"]
    # Reported in the model version: 3 fixed folds over the 120 training samples.
    assert clf.n_train == 120 and clf.metrics["cv_folds"] == 3 and clf.params["cv_seed"] == 0
    assert clf.metrics["cv_accuracy"] >= 0.8 and clf.metrics["cv_macro_f1"] >= 0.8
    assert clf.metrics["cv_accuracy"] > clf.metrics["baseline_accuracy"] + 0.3
    reg = train_spectra_model(lk, "spectra-rf-regressor", as_of="features", featurizer="intensity", where=TRAIN,
                              n_estimators=40, cv_folds=3)
    assert reg.metrics["cv_r2"] >= 0.8 and reg.metrics["cv_mae"] <= 0.3
    dist = train_spectra_model(lk, "spectra-rf-regressor", as_of="features", featurizer="intensity",
                               label="mean_ni_o_distance", where=TRAIN, n_estimators=40, cv_folds=3)
    assert dist.metrics["cv_r2"] >= 0.7 and dist.metrics["cv_mae"] <= 0.04  # Angstrom; states 0.08-0.13 apart
    # The folds are a function of the rows and the seed: recomputed from the stored view, the digest matches.
    frame = lk.sql(clf.view_sql, as_of=clf.snapshot_id).df()
    assert folds_digest(frame["sample"], fold_assignment(frame["sample"], 3, 0)) == clf.metrics["cv_fold_sha256"]
    assert reg.metrics["cv_fold_sha256"] == clf.metrics["cv_fold_sha256"]  # same samples, same folds


def test_predictions_with_uncertainty(xanes_lake, classifiers):
    lk, _ = xanes_lake
    info = classifiers["intensity"]
    out = lk.predict(info.model_id, where="sample like 'gen-xanes-test-%'")
    assert out["n"] == 60
    pred = lk.sql("select p.*, l.value as truth from predictions p join spectrum_labels l "
                  "on l.subject_id = p.subject_id and l.label = 'oxidation_state' where p.model_id = ?",
                  params=[info.model_id]).df()
    assert len(pred) == 60 and set(pred.subject_table) == {"spectra"} and set(pred.target) == {"oxidation_state"}
    assert (pred.value == pred.truth).mean() >= 0.8
    assert (pred.uncertainty >= 0).all() and (pred.uncertainty > 0).any() and (pred.uncertainty <= 1.0).all()
    # Wrong predictions are less certain than right ones, on average.
    right, wrong = pred.uncertainty[pred.value == pred.truth], pred.uncertainty[pred.value != pred.truth]
    if len(wrong):
        assert wrong.mean() > right.mean()


@pytest.mark.slow
def test_lineage_of_a_prediction_reaches_model_snapshot_and_generator(xanes_lake):
    lk, gens = xanes_lake
    # A small model (8 training spectra) keeps the walk short.
    info = train_spectra_model(lk, "spectra-rf-classifier", as_of="features", featurizer="cdf", n_estimators=5,
                               cv_folds=2, where="s.sample between 'gen-xanes-train-00000' and 'gen-xanes-train-00007'")
    assert info.n_train == 8
    out = lk.predict(info.model_id, where="sample = 'gen-xanes-test-00000'")
    assert out["n"] == 1
    rid = lk.sql("select record_id from predictions where model_id = ?", params=[info.model_id]).fetchone()[0]
    g = lineage(lk, rid, direction="up", max_fanout=100)
    assert ("model", info.model_id) in g.reaches("model")
    assert ("snapshot", str(info.snapshot_id)) in g.reaches("snapshot")
    acts = {n[1] for n in g.reaches("activity")}
    assert gens["test"] in acts  # the predicted spectrum was generated
    assert gens["train"] in acts  # the model's training spectra were generated
    assert info.activity_id in acts


def test_shift_curves_for_intensity_derivative_and_cdf(xanes_lake, classifiers, tmp_path):
    lk, _ = xanes_lake
    ids = [classifiers[k].model_id for k in ("intensity", "derivative", "cdf")]
    shifts = [0.0, 1.0, 2.0, 3.0]
    out = shift_test(lk, ids, where=TEST, shifts=shifts)
    assert not out["skipped"]
    acc = {s["featurizer"]: s["values"] for s in out["series"] if s["metric"] == "accuracy"}
    assert set(acc) == {"intensity", "derivative", "cdf"}
    for kind, values in acc.items():
        assert len(values) == 4 and values[0] >= 0.75, (kind, values)
        assert values[-1] < values[0] - 0.2, (kind, values)  # a 3 eV shift = two oxidation states of edge shift
    rows = lk.sql("select * from spectrum_model_evaluations order by featurizer, metric").df()
    assert set(rows.model_id) == set(ids) and set(rows.evaluation) == {"shift-robustness"}
    assert all(list(p) == shifts for p in rows.perturbations) and set(rows.n_test) == {60}
    test_set = json.loads(rows.test_set_json.iloc[0])
    assert test_set["generated"] == [{"generator": gen.GENERATOR_NAME, "kind": "xanes", "dataset": "test",
                                      "seed": 2, "n": 60}]
    assert test_set["n_overlap_with_training"] == 0
    models_used = {r[0] for r in lk.sql("select entity_id from links where activity_id = ? and role = 'used' "
                                        "and entity_kind = 'model'", params=[out["activity_id"]]).fetchall()}
    assert models_used == set(ids)  # the evaluation used the model versions it evaluated
    points = lk.sql("select perturbation_value, metric_value from spectrum_model_evaluation_points "
                    "where featurizer = 'cdf' and metric = 'accuracy' order by perturbation_value").fetchall()
    assert [p for p, _ in points] == shifts and [v for _, v in points] == pytest.approx(acc["cdf"])
    assert shift_test(lk, ids, where=TEST, shifts=shifts)["skipped"]  # the same test again adds nothing
    with pytest.raises(ValueError, match="no Ni K spectra with label 'oxidation_state' match s.sample = 'none'"):
        shift_test(lk, ids[:1], where="s.sample = 'none'")
    png = write_shift_png(out["series"], tmp_path / "shift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shift_curve_pure_step_matches_a_direct_prediction(xanes_lake, classifiers):
    lk, _ = xanes_lake
    info, module, artifact = load_model(lk, classifiers["cdf"].model_id)
    test = lk.sql(f"select s.record_id, s.axis, s.intensity, l.value from spectra s join spectrum_labels l "
                  f"on l.subject_id = s.record_id and l.label = 'oxidation_state' where {TEST} order by 1").df()
    grid = BUILTIN_GRIDS["xanes-ni-k"]
    curve = shift_curve(module, artifact, test.record_id, test.axis, test.intensity, test.value, [0.0], grid)
    # At zero shift the re-featurized vectors are the committed ones.
    x0 = shifted_features(test.axis, test.intensity, 0.0, "cdf", grid)
    stored = lk.sql("select vector from spectrum_features where featurizer = 'cdf' and spectrum_id in "
                    "(select unnest(?)) order by spectrum_id", params=[list(test.record_id)]).df()
    assert np.allclose(np.vstack(stored.vector), x0)
    direct = module.predict(artifact, pd.DataFrame({"subject_id": test.record_id, "x": list(x0)}))
    assert curve["accuracy"][0] == pytest.approx(float(np.mean(direct.value.to_numpy() == test.value.to_numpy())))
    with pytest.raises(ValueError, match="expected feature vectors of 100 values .*found 5 .subject short"):
        module.predict(artifact, pd.DataFrame({"subject_id": ["short"], "x": [np.zeros(5)]}))


@pytest.mark.slow
def test_gradient_boosting_search_on_recorded_folds(xanes_lake):
    lk, _ = xanes_lake
    small = {"n_iter": 2, "n_estimators_range": [10, 30], "max_depth_range": [2, 3], "cv_folds": 3,
             "featurizer": "intensity", "where": TRAIN}
    reg = train_spectra_model(lk, "spectra-gb-regressor", as_of="features", **small)
    assert reg.metrics["cv_r2"] >= 0.7 and 10 <= reg.metrics["best_n_estimators"] <= 30
    again = train_spectra_model(lk, "spectra-gb-regressor", as_of="features", **small)
    assert again.metrics == reg.metrics  # seeded search, fixed folds: the same choice and scores
    clf = train_spectra_model(lk, "spectra-gb-classifier", as_of="features", **small)
    assert clf.metrics["cv_accuracy"] >= 0.75
    for info in (reg, clf):
        _, module, artifact = load_model(lk, info.model_id)
        frame = lk.sql(module.predict_sql, as_of="features").df().head(10)
        out = module.predict(artifact, frame)
        assert (out.uncertainty >= 0).all() and np.isfinite(out.value).all()


@pytest.fixture
def one_torch_thread():
    """On a shared 2-core machine torch's default thread pool oversubscribes (10x slower here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["spectra-mlp-regressor", "spectra-cnn-regressor"])
def test_torch_models_train_and_predict_on_cpu(xanes_lake, module, one_torch_thread):
    lk, _ = xanes_lake
    info = train_spectra_model(lk, module, as_of="features", featurizer="intensity", where=TRAIN, cv_folds=2,
                               n_members=2, epochs=60, batch_size=128, learning_rate=3e-3, seed=3)
    assert info.params["n_inputs"] == 100 and info.metrics["trained_on_cuda"] == float(select_device() == "cuda")
    assert info.metrics["cv_r2"] >= 0.5, info.metrics
    assert artifact_format(lk.objects.get(info.artifact_sha256)) in ("safetensors", "torch")
    out = lk.predict(info.model_id, where="sample like 'gen-xanes-test-%'")
    pred = lk.sql("select p.value, p.uncertainty, l.value truth from predictions p join spectrum_labels l "
                  "on l.subject_id = p.subject_id and l.label = 'oxidation_state' where p.model_id = ?",
                  params=[info.model_id]).df()
    assert out["n"] == 60 and (pred.uncertainty > 0).all()
    assert np.mean(np.abs(pred.value - pred.truth)) <= 0.5


def test_training_errors_name_what_is_missing(xanes_lake):
    lk, _ = xanes_lake
    with pytest.raises(ValueError, match="no rows .*gaussians features on xanes-ni-k"):
        train_spectra_model(lk, "spectra-rf-classifier", featurizer="gaussians", n_estimators=5)
    with pytest.raises(ValueError, match="integral label values for 'mean_ni_o_distance'"):
        train_spectra_model(lk, "spectra-rf-classifier", label="mean_ni_o_distance", n_estimators=5)
    with pytest.raises(ValueError, match="expected one of spectra-"):
        train_spectra_model(lk, "forest", featurizer="cdf")


# --------------------------------------------------------------------------- multimodal fusion


@pytest.mark.slow
def test_multimodal_model_beats_each_single_edge_on_the_planted_defect(sqlite_lake):
    lk = sqlite_lake
    generate_into(lk, "eels", 160, seed=3, dataset="train")
    for grid in ("eels-o-k", "eels-ni-l"):
        commit_features(lk, "cdf", grid)
    acc = {}
    for grids in (["eels-o-k"], ["eels-ni-l"], ["eels-o-k", "eels-ni-l"]):
        info = train_spectra_model(lk, "spectra-rf-classifier", featurizer="cdf", grids=grids, label="defect",
                                   n_estimators=60, cv_folds=4)
        assert info.n_train == 160
        acc["+".join(grids)] = info.metrics["cv_accuracy"]
        fused_id = info.model_id
    fused = acc["eels-o-k+eels-ni-l"]
    assert fused >= 0.75, acc
    assert acc["eels-o-k"] <= 0.65 and acc["eels-ni-l"] <= 0.65, acc
    assert fused >= max(acc["eels-o-k"], acc["eels-ni-l"]) + 0.15, acc
    with pytest.raises(ValueError, match="single-grid models; this one fuses"):
        shift_test(lk, [fused_id])
    # Each edge does carry its own bit: the information is there, only the defect needs both.
    own = train_spectra_model(lk, "spectra-rf-classifier", featurizer="cdf", grids=["eels-ni-l"],
                              label="ni_l3_shifted", n_estimators=30, cv_folds=4)
    assert own.metrics["cv_accuracy"] >= 0.9


# --------------------------------------------------------------------------- command line


def test_cli_generate_train_and_shift_test(tmp_path):
    import matlake
    from matlake.platform.cli import main

    path = tmp_path / "lake"
    lk = matlake.init(path)
    assert main(["spectra", "generate", "--lake", str(path), "--kind", "xanes", "--n", "40", "--seed", "4"]) == 0
    assert main(["spectra", "generate", "--lake", str(path), "--kind", "xanes", "--n", "20", "--seed", "5",
                 "--dataset", "test", "--set", "shift_max=0.5"]) == 0
    commit_features(lk, "cdf", "xanes-ni-k")
    assert main(["spectra", "train", "spectra-rf-classifier", "--lake", str(path), "--featurizer", "cdf",
                 "--where", TRAIN, "--param", "n_estimators=20", "--param", "cv_folds=3"]) == 0
    png = tmp_path / "out" / "shift.png"
    assert main(["spectra", "shift-test", "spectra-rf-classifier/oxidation_state/cdf/xanes-ni-k", "--lake",
                 str(path), "--where", TEST, "--shifts", "0:2:1", "--png", str(png)]) == 0
    assert png.exists()
    row = lk.sql("select perturbations from spectrum_model_evaluations where metric = 'accuracy'").fetchone()
    assert list(row[0]) == [0.0, 1.0, 2.0]
    test_params = json.loads(lk.sql("select code_parameters_json from spectra where sample like 'gen-xanes-test-%' "
                                    "limit 1").fetchone()[0])
    assert test_params["parameters"]["shift_max"] == 0.5 and test_params["seed"] == 5
    lk.close()
