"""Uncertainty maps, calibration and quality-flag metrics: closed forms and scikit-learn/scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matlake.models.imaging import calibration as cal
from matlake.models.imaging.uncertainty import (
    entropy,
    image_scores,
    phase_fractions,
    uncertainty_maps,
)


def _dirichlet_members(rng: np.random.Generator, M: int, C: int, H: int, W: int, alpha: float = 0.7) -> np.ndarray:
    g = rng.gamma(alpha, size=(M, C, H, W))
    return g / g.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- uncertainty: closed forms


def test_agreeing_members_have_zero_mutual_information():
    rng = np.random.default_rng(0)
    p = _dirichlet_members(rng, 1, 3, 8, 9)
    P = np.repeat(p, 5, axis=0)  # five identical members
    m = uncertainty_maps(P)
    assert np.allclose(m.mutual_information, 0.0, atol=1e-12)
    assert np.allclose(m.entropy, m.expected_entropy, atol=1e-12)
    assert np.allclose(m.variance, 0.0, atol=1e-15) and np.allclose(m.total_variance, 0.0, atol=1e-15)
    assert np.allclose(m.mean, p[0], atol=1e-15)


@pytest.mark.parametrize("C", [2, 3, 7])
def test_uniform_members_have_entropy_log_c(C):
    P = np.full((4, C, 5, 6), 1.0 / C)
    m = uncertainty_maps(P)
    assert np.allclose(m.entropy, math.log(C), atol=1e-12)
    assert np.allclose(m.expected_entropy, math.log(C), atol=1e-12)
    assert np.allclose(m.mutual_information, 0.0, atol=1e-12)


def test_two_confident_disagreeing_members_have_mi_log2():
    P = np.zeros((2, 2, 4, 4))
    P[0, 0] = 1.0  # member 0 says class 0 everywhere
    P[1, 1] = 1.0  # member 1 says class 1 everywhere
    m = uncertainty_maps(P)
    assert np.allclose(m.mutual_information, math.log(2), atol=1e-15)
    assert np.allclose(m.expected_entropy, 0.0)
    assert np.allclose(m.entropy, math.log(2), atol=1e-15)
    # member probabilities of the predicted class are 1 and 0: variance 1/4; summed over 2 classes 1/2
    assert np.allclose(m.variance, 0.25) and np.allclose(m.total_variance, 0.5)
    assert (m.predicted == 0).all()  # a tie goes to the lower class


def test_mutual_information_bounds_and_entropy_definition():
    rng = np.random.default_rng(1)
    P = _dirichlet_members(rng, 4, 3, 16, 16)
    m = uncertainty_maps(P)
    assert (m.mutual_information >= 0).all()
    assert (m.mutual_information <= math.log(4) + 1e-12).all()  # MI <= log M
    assert (m.entropy <= math.log(3) + 1e-12).all()
    # entropy against a direct formula at a few pixels
    for (i, j) in [(0, 0), (3, 7), (15, 15)]:
        pbar = P[:, :, i, j].mean(axis=0)
        h = -sum(q * math.log(q) for q in pbar)
        eh = np.mean([-sum(q * math.log(q) for q in P[k, :, i, j]) for k in range(4)])
        assert m.entropy[i, j] == pytest.approx(h, abs=1e-12)
        assert m.mutual_information[i, j] == pytest.approx(h - eh, abs=1e-12)
        assert m.variance[i, j] == pytest.approx(np.var(P[:, int(np.argmax(pbar)), i, j]), abs=1e-15)
    # two classes: total variance = twice the predicted-class variance
    P2 = _dirichlet_members(rng, 5, 2, 6, 6)
    m2 = uncertainty_maps(P2)
    assert np.allclose(m2.total_variance, 2 * m2.variance, atol=1e-15)
    assert entropy(np.array([0.0, 1.0])) == 0.0


def test_image_scores_per_frame_and_threshold():
    P = np.zeros((2, 2, 3, 4, 4))
    P[:, 0] = 1.0  # frames confident and agreeing ...
    P[0, :, 1] = 0.5  # ... except frame 1 where member 0 is a coin flip
    m = uncertainty_maps(P)
    s = image_scores(m, entropy_threshold=0.1, frame_axes=1)
    assert s["mean_entropy"].shape == (3,)
    assert s["mean_entropy"][0] == 0.0 and s["mean_entropy"][2] == 0.0
    # frame 1: mean over members = (0.75, 0.25)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert s["mean_entropy"][1] == pytest.approx(h, abs=1e-12)
    assert s["mean_mutual_information"][1] == pytest.approx(h - 0.5 * math.log(2), abs=1e-12)
    assert list(s["uncertain_fraction"]) == [0.0, 1.0, 0.0]
    whole = image_scores(m, entropy_threshold=0.1)
    assert whole["mean_entropy"] == pytest.approx(h / 3, abs=1e-12)


def test_phase_fractions_mean_and_spread():
    T, H, W = 3, 4, 5
    P = np.zeros((2, 2, T, H, W))
    P[:, 0] = 1.0
    # member 0 calls 4 pixels of frame t ice (class 1), member 1 calls 8
    for t in range(T):
        P[0, :, t].reshape(2, -1)[:, :4] = [[0.0], [1.0]]
        P[1, :, t].reshape(2, -1)[:, :8] = [[0.2], [0.8]]
    f = phase_fractions(P, phase=1)
    assert np.allclose(f.members, [[4 / 20] * 3, [8 / 20] * 3])
    assert np.allclose(f.mean, 6 / 20) and np.allclose(f.std, 2 / 20)
    # ensemble mean: 4 pixels (1+0.8)/2 = 0.9, 4 pixels 0.4 -> class 0
    assert np.allclose(f.ensemble, 4 / 20)
    assert np.allclose(f.expected, (4 * 0.9 + 4 * 0.4) / 20)


@pytest.mark.parametrize("bad,msg", [
    (np.ones((2, 2)), "shape"),
    (np.full((2, 2, 3, 3), 0.6), "sum to 1"),
    (np.full((2, 2, 3, 3), np.nan), "finite"),
])
def test_bad_member_probabilities_are_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        uncertainty_maps(bad)


# --------------------------------------------------------------------------- calibration vs references


def _prob_labels(seed: int, C: int, shape=(24, 30)):
    rng = np.random.default_rng(seed)
    g = rng.gamma(1.0, size=(C, *shape)) + 1e-3
    p = g / g.sum(axis=0)
    # labels drawn from a sharpened version so the classifier is informative but miscalibrated
    q = p ** 2 / (p ** 2).sum(axis=0)
    u = rng.random(shape)
    y = (u[None] > np.cumsum(q, axis=0)).sum(axis=0)
    return p, y


@pytest.mark.parametrize("C,seed", [(2, 0), (3, 1), (4, 2)])
def test_metrics_match_scikit_learn(C, seed):
    from sklearn.metrics import brier_score_loss, f1_score, jaccard_score, log_loss

    p, y = _prob_labels(seed, C)
    pf, yf = p.reshape(C, -1).T, y.reshape(-1)
    pred = np.argmax(pf, axis=1)
    m = cal.segmentation_metrics(p, y)
    assert m["accuracy"] == pytest.approx(np.mean(pred == yf), abs=1e-15)
    assert np.allclose(m["iou"], jaccard_score(yf, pred, average=None, labels=list(range(C))), atol=1e-12)
    assert np.allclose(m["dice"], f1_score(yf, pred, average=None, labels=list(range(C))), atol=1e-12)
    assert m["nll"] == pytest.approx(log_loss(yf, pf, labels=list(range(C))), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(yf, pf, labels=list(range(C)), scale_by_half=False),
                                       abs=1e-12)
    if C == 2:
        assert m["brier_binary"] == pytest.approx(brier_score_loss(yf, pf[:, 1]), abs=1e-12)
        assert m["brier_binary"] == pytest.approx(m["brier"] / 2, abs=1e-12)
    assert cal.brier_score(p, y) == m["brier"] and cal.nll(p, y) == m["nll"]


def test_reliability_matches_calibration_curve():
    from sklearn.calibration import calibration_curve

    p, y = _prob_labels(3, 2, (40, 40))
    p1 = p[1].reshape(-1)
    y1 = y.reshape(-1) == 1
    # exact bin edges must land in the lower bin, as in scikit-learn
    p1[:15] = np.linspace(0, 1, 15)
    for n_bins in (5, 10, 15):
        prob_true, prob_pred = calibration_curve(y1, p1, n_bins=n_bins, strategy="uniform")
        rel = cal.reliability(p1, y1, n_bins)
        nz = rel.count > 0
        assert np.allclose(rel.accuracy[nz], prob_true, atol=1e-12)
        assert np.allclose(rel.mean_confidence[nz], prob_pred, atol=1e-12)


@pytest.mark.parametrize("C,seed", [(2, 4), (3, 5)])
def test_ece_against_a_direct_loop(C, seed):
    p, y = _prob_labels(seed, C)
    pf, yf = p.reshape(C, -1).T, y.reshape(-1)
    n_bins = 15
    conf = pf.max(axis=1)
    correct = np.argmax(pf, axis=1) == yf
    ece, mce = 0.0, 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = [i for i in range(conf.size) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0.0)]
        if not sel:
            continue
        acc = sum(correct[i] for i in sel) / len(sel)
        mc = sum(conf[i] for i in sel) / len(sel)
        ece += len(sel) / conf.size * abs(acc - mc)
        mce = max(mce, abs(acc - mc))
    assert cal.expected_calibration_error(p, y) == pytest.approx(ece, abs=1e-12)
    assert cal.max_calibration_error(p, y) == pytest.approx(mce, abs=1e-12)
    assert ece > 0.01  # the sharpened labels make the probabilities miscalibrated


def test_perfectly_calibrated_and_confident_cases():
    y = np.array([[0, 1], [1, 0]])
    p = np.stack([1.0 - y, y]).astype(float)
    m = cal.segmentation_metrics(p, y)
    assert m["accuracy"] == 1.0 and m["ece"] == 0.0 and m["brier"] == 0.0 and m["mean_iou"] == 1.0
    assert m["nll"] == pytest.approx(-math.log(1 - np.finfo(float).eps))
    # a class absent from truth and prediction has no IoU and is left out of the mean
    p3 = np.concatenate([p, np.zeros((1, 2, 2))])
    m3 = cal.segmentation_metrics(p3, y)
    assert m3["iou"][2] is None and m3["mean_iou"] == 1.0


def test_roc_auc_and_spearman_match_references():
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    s = np.round(rng.random(200), 1)  # many ties
    e = np.clip(s * 0.3 + rng.normal(0, 0.1, 200), 0, 1)
    bad = e > 0.15
    assert cal.roc_auc(s, bad) == pytest.approx(roc_auc_score(bad, s), abs=1e-12)
    assert cal.rank_correlation(s, e) == pytest.approx(spearmanr(s, e).statistic, abs=1e-12)
    assert math.isnan(cal.roc_auc(s, np.zeros(200, bool)))
    q = cal.quality_flag_metrics(s, e, 0.15)
    assert q["n_flagged"] == int(bad.sum()) and q["auroc"] > 0.8


def test_risk_coverage_closed_forms():
    errors = np.array([0, 0, 1, 1], float)
    rc = cal.risk_coverage(np.array([0.1, 0.2, 0.3, 0.4]), errors)  # perfect ordering
    assert np.allclose(rc.risk, [0, 0, 1 / 3, 1 / 2])
    assert rc.aurc == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4) and rc.excess_aurc == pytest.approx(0.0)
    worst = cal.risk_coverage(np.array([0.4, 0.3, 0.2, 0.1]), errors)
    assert np.allclose(worst.risk, [1, 1, 2 / 3, 1 / 2]) and worst.excess_aurc > 0.5
    # equal uncertainty: kept together, so the curve does not depend on item order
    tie = cal.risk_coverage(np.zeros(4), errors)
    assert np.allclose(tie.risk, 0.5)
    tie2 = cal.risk_coverage(np.zeros(4), errors[::-1])
    assert np.allclose(tie.risk, tie2.risk)
    assert np.allclose(rc.coverage, [0.25, 0.5, 0.75, 1.0])


def test_bad_labels_are_refused():
    p, y = _prob_labels(7, 2, (4, 4))
    with pytest.raises(ValueError, match="labels: expected shape"):
        cal.segmentation_metrics(p, y[:3])
    with pytest.raises(ValueError, match="labels: expected values in 0..1"):
        cal.segmentation_metrics(p, y + 2)


# --------------------------------------------------------------------------- the evaluation core


def test_evaluate_ensemble_streams_the_same_numbers_as_one_shot():
    from matlake.models.imaging.evaluation import SmoothedThresholdEnsemble, evaluate_ensemble, otsu
    from matlake.models.imaging.generator import generate_movie

    movie = generate_movie(seed=4, n_frames=9, height=32, width=40, dose=6.0, bad_frame_fraction=0.3)
    ens = SmoothedThresholdEnsemble()
    ev = evaluate_ensemble(ens, movie.frames, movie.masks, batch=4, error_threshold=0.1)
    P = ens(movie.frames)
    m = uncertainty_maps(P)
    ref = cal.segmentation_metrics(m.mean, movie.masks)
    for k in ("accuracy", "ece", "mce", "brier", "brier_binary", "nll", "mean_iou"):
        assert ev.metrics[k] == pytest.approx(ref[k], abs=1e-12), k
    assert ev.metrics["reliability"]["count"] == ref["reliability"]["count"]
    errors = cal.per_image_errors(m.predicted, movie.masks)
    assert np.allclose(ev.frame_errors, errors, atol=1e-15)
    assert ev.panel_frame == int(np.argmax(errors))  # the worst frame is kept for the panel
    f = phase_fractions(P, 1)
    assert np.allclose(ev.fraction_mean, f.mean) and np.allclose(ev.fraction_std, f.std)
    assert np.allclose(ev.true_fraction, movie.ice_fraction)
    assert ev.quality["n_flagged"] == int((errors > 0.1).sum())
    # Otsu on a two-level image splits the levels
    two = np.r_[np.full(50, 2.0), np.full(50, 7.0)]
    assert 2.0 < otsu(two) < 7.0
    with pytest.raises(ValueError, match="member predictor: expected probabilities"):
        evaluate_ensemble(lambda x: np.ones((2, 2, 1, 1, 1)) / 2, movie.frames, movie.masks)


def test_per_image_predictor_stacks_frames():
    from matlake.models.imaging.evaluation import PerImagePredictor, SmoothedThresholdEnsemble

    ens = SmoothedThresholdEnsemble(sigmas=(1.0, 2.0))
    frames = np.random.default_rng(0).poisson(5.0, (3, 16, 20)).astype(np.float32)
    wrapped = PerImagePredictor(lambda img: ens(img)[:, :, 0], name="wrapped", model_id="model_x")
    assert np.array_equal(wrapped(frames), ens(frames))
    assert wrapped(frames).shape == (2, 2, 3, 16, 20)
