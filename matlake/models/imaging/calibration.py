"""Accuracy, overlap, calibration and quality-flag metrics of a probabilistic segmentation.

Conventions (all pure numpy):

- Pixel-level functions take ``prob`` with the **class axis first**, shape
  ``(C, *S)`` (``S`` = (H, W), or (T, H, W) for a movie), and integer ``labels``
  of shape ``S`` with values 0..C-1.  The predicted class is ``argmax_c prob``
  (ties to the lower class) and the **confidence** is ``max_c prob``.
- **IoU** of class c = |pred = c ∧ truth = c| / |pred = c ∨ truth = c|; **Dice** =
  2|∩| / (|pred = c| + |truth = c|).  A class absent from both prediction and
  truth has no defined IoU/Dice (NaN) and is left out of the mean IoU.
- **ECE** (Guo et al. 2017, 15 equal-width bins by default): confidences binned
  into ``(b/n, (b+1)/n]`` (a confidence of exactly 0 goes to the first bin, as in
  scikit-learn's ``calibration_curve``); ``ECE = sum_b (n_b/N) |acc_b - conf_b|``;
  **MCE** = ``max_b |acc_b - conf_b|`` over non-empty bins.
- **Brier score** (multi-class, Brier 1950): mean over pixels of
  ``sum_c (p_c - y_c)^2`` with one-hot ``y`` — between 0 and 2.  For two classes
  :func:`brier_score_binary` is scikit-learn's ``brier_score_loss`` convention,
  the mean of ``(p_1 - y)^2``, exactly half of the multi-class value.
- **NLL**: mean of ``-log p_y`` (nats), ``p_y`` clipped to
  ``[eps, 1 - eps]`` with ``eps`` the float64 machine epsilon, as scikit-learn's
  ``log_loss`` does.
- **AUROC** of a score as a detector of a binary event (an image whose error
  rate is above a threshold): the Mann-Whitney statistic, ties counted 1/2;
  NaN when only one kind of event is present.
- **Risk-coverage** (Geifman & El-Yaniv 2017): items (images or pixels) sorted
  by increasing uncertainty; keeping the most confident fraction ``k/N`` has
  risk = mean error of what is kept.  Items with equal uncertainty are kept or
  dropped together (the risk of a tie group is the one after the whole group),
  so the curve does not depend on their order.  **AURC** is the mean of the
  risk over k = 1..N; the oracle AURC sorts by the error itself, and
  ``excess_aurc`` = AURC - oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BINS", "flatten", "accuracy", "confusion_matrix", "iou_per_class", "dice_per_class", "mean_iou",
    "Reliability", "reliability", "expected_calibration_error", "max_calibration_error", "brier_score",
    "brier_score_binary", "nll", "roc_auc", "rank_correlation", "RiskCoverage", "risk_coverage",
    "segmentation_metrics", "quality_flag_metrics", "per_image_errors",
]

DEFAULT_BINS = 15
_EPS = float(np.finfo(np.float64).eps)


def flatten(prob: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``prob`` (C, *S) and ``labels`` (*S) as (N, C) float64 and (N,) int64 after checking them."""
    prob = np.asarray(prob)
    labels = np.asarray(labels)
    if prob.ndim < 1 or prob.shape[1:] != labels.shape:
        raise ValueError(f"labels: expected shape {prob.shape[1:]} (prob without its class axis), "
                         f"found {labels.shape}")
    C = prob.shape[0]
    if C < 2:
        raise ValueError(f"prob: expected >= 2 classes on axis 0, found {C}")
    p = prob.reshape(C, -1).T.astype(np.float64)
    y = labels.reshape(-1)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"labels: expected integer class values, found dtype {labels.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels: expected values in 0..{C - 1}, found {int(y.min())}..{int(y.max())}")
    if not np.isfinite(p).all():
        raise ValueError("prob: expected finite probabilities, found NaN/inf")
    return p, y


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of pixels where ``pred == labels`` (same shapes)."""
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"labels: expected shape {pred.shape}, found {labels.shape}")
    return float(np.mean(pred == labels))


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = truth, columns = prediction."""
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    if y.shape != p.shape:
        raise ValueError(f"labels: expected {p.size} values, found {y.size}")
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Intersection over union per class (NaN for a class absent from prediction and truth)."""
    cm = confusion_matrix(pred, labels, n_classes).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.nan)


def dice_per_class(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice coefficient (F1) per class (NaN for a class absent from prediction and truth)."""
    cm = confusion_matrix(pred, labels, n_classes).astype(np.float64)
    inter = np.diag(cm)
    total = cm.sum(axis=0) + cm.sum(axis=1)
    return np.where(total > 0, 2.0 * inter / np.where(total > 0, total, 1.0), np.nan)


def mean_iou(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Mean of the defined per-class IoUs."""
    iou = iou_per_class(pred, labels, n_classes)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@dataclass
class Reliability:
    """Reliability-diagram data: per bin ``(edges[b], edges[b+1]]`` the number of
    items, their mean confidence and their accuracy (NaN for an empty bin)."""

    edges: np.ndarray
    count: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    ece: float
    mce: float

    def as_dict(self) -> dict[str, Any]:
        def clean(a: np.ndarray) -> list:
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]

        return {"edges": clean(self.edges), "count": [int(c) for c in self.count],
                "mean_confidence": clean(self.mean_confidence), "accuracy": clean(self.accuracy),
                "ece": self.ece, "mce": self.mce}


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS) -> Reliability:
    """Bin ``confidence`` (values in [0, 1]) into ``n_bins`` equal-width right-closed bins and
    compare with the outcome ``correct`` (bool or 0/1) in each; ECE and MCE as in the module docs."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"correct: expected {conf.size} values, found {ok.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins: expected >= 1, found {n_bins}")
    if conf.size and (conf.min() < 0.0 or conf.max() > 1.0 + 1e-9):
        raise ValueError(f"confidence: expected values in [0, 1], found [{conf.min():.6g}, {conf.max():.6g}]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], conf, side="left")  # (lo, hi]; 0 -> bin 0; as sklearn
    count = np.bincount(ids, minlength=n_bins)
    sum_conf = np.bincount(ids, weights=conf, minlength=n_bins)
    sum_ok = np.bincount(ids, weights=ok, minlength=n_bins)
    nz = count > 0
    mean_conf = np.full(n_bins, np.nan)
    acc = np.full(n_bins, np.nan)
    mean_conf[nz] = sum_conf[nz] / count[nz]
    acc[nz] = sum_ok[nz] / count[nz]
    gap = np.abs(acc[nz] - mean_conf[nz])
    n = conf.size
    ece = float(np.sum(count[nz] / n * gap)) if n else float("nan")
    mce = float(gap.max()) if gap.size else float("nan")
    return Reliability(edges, count, mean_conf, acc, ece, mce)


def _pixel_reliability(prob: np.ndarray, labels: np.ndarray, n_bins: int) -> Reliability:
    p, y = flatten(prob, labels)
    pred = np.argmax(p, axis=1)
    return reliability(p.max(axis=1), pred == y, n_bins)


def expected_calibration_error(prob: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE of the max-probability confidence (``n_bins`` equal-width bins)."""
    return _pixel_reliability(prob, labels, n_bins).ece


def max_calibration_error(prob: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Largest |accuracy - confidence| over the non-empty bins."""
    return _pixel_reliability(prob, labels, n_bins).mce


def brier_score(prob: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over pixels of sum_c (p_c - y_c)^2 (0..2)."""
    p, y = flatten(prob, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def brier_score_binary(p_positive: np.ndarray, y: np.ndarray) -> float:
    """Two-class Brier score in scikit-learn's convention: mean of (p_1 - y)^2, y in {0, 1}."""
    p1 = np.asarray(p_positive, dtype=np.float64).reshape(-1)
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    if p1.shape != yy.shape:
        raise ValueError(f"y: expected {p1.size} values, found {yy.size}")
    return float(np.mean((p1 - yy) ** 2))


def nll(prob: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the true class, probabilities clipped to [eps, 1 - eps]."""
    p, y = flatten(prob, labels)
    py = np.clip(p[np.arange(y.size), y], _EPS, 1.0 - _EPS)
    return float(-np.mean(np.log(py)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``x`` with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for the
    boolean ``positive``; Mann-Whitney U / (n_pos n_neg), ties 1/2; NaN with one class only."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    if s.shape != pos.shape:
        raise ValueError(f"positive: expected {s.size} values, found {pos.size}")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(s)
    u = r[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if either is constant."""
    rx, ry = _average_ranks(x), _average_ranks(y)
    if rx.shape != ry.shape:
        raise ValueError(f"y: expected {rx.size} values, found {ry.size}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


@dataclass
class RiskCoverage:
    """Risk-coverage curve: ``coverage[k-1] = k/N`` and ``risk[k-1]`` the mean error of the
    k most confident items; ``aurc`` its mean, ``oracle_aurc`` the best possible ordering's."""

    coverage: np.ndarray
    risk: np.ndarray
    aurc: float
    oracle_aurc: float
    excess_aurc: float = field(init=False)

    def __post_init__(self) -> None:
        self.excess_aurc = float(self.aurc - self.oracle_aurc)


def _risk_curve(u: np.ndarray, e: np.ndarray) -> np.ndarray:
    order = np.argsort(u, kind="mergesort")
    us, es = u[order], e[order]
    k = np.arange(1, u.size + 1, dtype=np.float64)
    risk = np.cumsum(es) / k
    # A tie group is kept or dropped as a whole: every member gets the risk after the group.
    last = np.r_[np.flatnonzero(np.diff(us)), us.size - 1]
    group_end = np.repeat(last, np.diff(np.r_[-1, last]))
    return risk[group_end]


def risk_coverage(uncertainty: np.ndarray, errors: np.ndarray) -> RiskCoverage:
    """Risk-coverage curve and AURC of ``errors`` (per-item error, 0/1 or a rate in [0, 1])
    ranked by ``uncertainty`` (lower = kept first)."""
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if u.shape != e.shape:
        raise ValueError(f"errors: expected {u.size} values, found {e.size}")
    if u.size == 0:
        raise ValueError("risk_coverage: expected at least one item, found none")
    if not (np.isfinite(u).all() and np.isfinite(e).all()):
        raise ValueError("risk_coverage: expected finite uncertainties and errors, found NaN/inf")
    risk = _risk_curve(u, e)
    # The oracle keeps the smallest errors first; equal errors give the same risk in any order.
    oracle = np.cumsum(np.sort(e)) / np.arange(1, e.size + 1, dtype=np.float64)
    coverage = np.arange(1, u.size + 1, dtype=np.float64) / u.size
    return RiskCoverage(coverage, risk, float(risk.mean()), float(oracle.mean()))


def segmentation_metrics(prob: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Every pixel-level metric of mean probabilities ``prob`` (C, *S) against ``labels`` (*S).

    Returns accuracy, per-class IoU and Dice (lists, NaN as None), mean IoU, ECE,
    MCE, Brier (multi-class; for two classes also ``brier_binary``), NLL (nats),
    ``n_pixels`` and the reliability data (``reliability``: a dict per bin)."""
    p, y = flatten(prob, labels)
    C = p.shape[1]
    pred = np.argmax(p, axis=1)
    rel = reliability(p.max(axis=1), pred == y, n_bins)
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    iou = iou_per_class(pred, y, C)
    dice = dice_per_class(pred, y, C)
    out: dict[str, Any] = {
        "n_pixels": int(y.size),
        "accuracy": float(np.mean(pred == y)),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "dice": [None if np.isnan(v) else float(v) for v in dice],
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "ece": rel.ece,
        "mce": rel.mce,
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "nll": float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], _EPS, 1.0 - _EPS)))),
        "reliability": rel.as_dict(),
    }
    if C == 2:
        out["brier_binary"] = float(np.mean((p[:, 1] - y) ** 2))
    return out


def per_image_errors(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-image error rate (fraction of wrong pixels) of (N, H, W) predictions and labels."""
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if pred.shape != labels.shape or pred.ndim < 2:
        raise ValueError(f"labels: expected shape {pred.shape} with an image axis first, found {labels.shape}")
    return (pred != labels).reshape(pred.shape[0], -1).mean(axis=1)


def quality_flag_metrics(scores: np.ndarray, image_errors: np.ndarray, error_threshold: float) -> dict[str, Any]:
    """How well a per-image uncertainty score flags bad images.

    ``auroc``: AUROC of the score for ``image_errors > error_threshold``
    (NaN when all images fall on one side); ``spearman``: rank correlation of
    score and error; ``aurc``, ``oracle_aurc``, ``excess_aurc``: risk-coverage
    with images ranked by the score and risk = mean image error rate;
    ``n_images`` and ``n_flagged`` (images above the threshold)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.asarray(image_errors, dtype=np.float64).reshape(-1)
    bad = e > error_threshold
    rc = risk_coverage(s, e)
    return {"auroc": roc_auc(s, bad), "spearman": rank_correlation(s, e), "aurc": rc.aurc,
            "oracle_aurc": rc.oracle_aurc, "excess_aurc": rc.excess_aurc, "n_images": int(s.size),
            "n_flagged": int(bad.sum()), "error_threshold": float(error_threshold)}
