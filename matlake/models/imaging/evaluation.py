"""Evaluating a segmentation ensemble on frames with ground truth (pure: arrays in, numbers out).

:func:`evaluate_ensemble` runs a *member predictor* (a callable taking frames
``(b, H, W)`` and returning member probabilities ``(M, C, b, H, W)``) over a
movie or image set a few frames at a time, so memory is bounded by the batch,
and gathers:

- pixel metrics of the ensemble mean probability
  (:class:`StreamingMetrics`: the same numbers as
  :func:`matlake.models.imaging.calibration.segmentation_metrics` on all pixels
  at once, accumulated batch by batch);
- per-frame uncertainty scores (:func:`~matlake.models.imaging.uncertainty.image_scores`),
  per-frame error rates and phase fractions (members' mean ± std, ensemble, truth);
- the quality flag: a per-frame score (``mean_entropy`` by default) judged by
  AUROC against frames whose error rate is above ``error_threshold`` (default:
  the median frame error, i.e. "is this frame in the worse half") and by a
  risk-coverage curve over frames;
- the maps of one frame for a panel figure.

:class:`SmoothedThresholdEnsemble` is a small non-learned ensemble (Gaussian
smoothing at several widths + Otsu threshold + logistic softening) used as a
baseline and in tests; U-net ensembles plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matlake.models.imaging.calibration import (
    DEFAULT_BINS,
    RiskCoverage,
    _EPS,
    flatten,
    quality_flag_metrics,
    risk_coverage,
)
from matlake.models.imaging.uncertainty import (
    DEFAULT_ENTROPY_THRESHOLD,
    UncertaintyMaps,
    image_scores,
    phase_fractions,
    uncertainty_maps,
)

__all__ = ["StreamingMetrics", "EnsembleEvaluation", "evaluate_ensemble", "SmoothedThresholdEnsemble", "otsu",
           "PerImagePredictor"]

MemberPredictor = Callable[[np.ndarray], np.ndarray]


class StreamingMetrics:
    """Pixel metrics accumulated over batches: confusion matrix, confidence-bin sums, Brier and NLL sums."""

    def __init__(self, n_classes: int, n_bins: int = DEFAULT_BINS) -> None:
        self.C, self.n_bins = int(n_classes), int(n_bins)
        self.confusion = np.zeros((self.C, self.C), np.int64)
        self.count = np.zeros(self.n_bins, np.int64)
        self.sum_conf = np.zeros(self.n_bins)
        self.sum_ok = np.zeros(self.n_bins)
        self.brier_sum = 0.0
        self.brier_binary_sum = 0.0
        self.nll_sum = 0.0
        self.n = 0
        self._edges = np.linspace(0.0, 1.0, self.n_bins + 1)

    def add(self, prob: np.ndarray, labels: np.ndarray) -> None:
        """Add mean probabilities ``prob`` (C, *S) against ``labels`` (*S)."""
        p, y = flatten(prob, labels)
        if p.shape[1] != self.C:
            raise ValueError(f"prob: expected {self.C} classes, found {p.shape[1]}")
        pred = np.argmax(p, axis=1)
        conf = p.max(axis=1)
        self.confusion += np.bincount(y * self.C + pred, minlength=self.C * self.C).reshape(self.C, self.C)
        ids = np.searchsorted(self._edges[1:-1], conf, side="left")
        self.count += np.bincount(ids, minlength=self.n_bins)
        self.sum_conf += np.bincount(ids, weights=conf, minlength=self.n_bins)
        self.sum_ok += np.bincount(ids, weights=(pred == y).astype(np.float64), minlength=self.n_bins)
        idx = np.arange(y.size)
        py = p[idx, y]
        # sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_y + 1
        self.brier_sum += float(np.sum(np.sum(p * p, axis=1) - 2.0 * py + 1.0))
        if self.C == 2:
            self.brier_binary_sum += float(np.sum((p[:, 1] - y) ** 2))
        self.nll_sum += float(-np.sum(np.log(np.clip(py, _EPS, 1.0 - _EPS))))
        self.n += int(y.size)

    def result(self) -> dict[str, Any]:
        """The metrics dict of :func:`~matlake.models.imaging.calibration.segmentation_metrics`."""
        if self.n == 0:
            raise ValueError("metrics: expected at least one pixel, found none")
        cm = self.confusion.astype(np.float64)
        inter = np.diag(cm)
        union = cm.sum(axis=0) + cm.sum(axis=1) - inter
        total = cm.sum(axis=0) + cm.sum(axis=1)
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
        dice = np.where(total > 0, 2 * inter / np.where(total > 0, total, 1), np.nan)
        nz = self.count > 0
        mean_conf = np.full(self.n_bins, np.nan)
        acc = np.full(self.n_bins, np.nan)
        mean_conf[nz] = self.sum_conf[nz] / self.count[nz]
        acc[nz] = self.sum_ok[nz] / self.count[nz]
        gap = np.abs(acc[nz] - mean_conf[nz])
        ece = float(np.sum(self.count[nz] / self.n * gap))
        from matlake.models.imaging.calibration import Reliability

        rel = Reliability(self._edges.copy(), self.count.copy(), mean_conf, acc, ece, float(gap.max()))
        out: dict[str, Any] = {
            "n_pixels": self.n, "accuracy": float(inter.sum() / self.n),
            "iou": [None if np.isnan(v) else float(v) for v in iou],
            "dice": [None if np.isnan(v) else float(v) for v in dice],
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "ece": rel.ece, "mce": rel.mce, "brier": self.brier_sum / self.n, "nll": self.nll_sum / self.n,
            "reliability": rel.as_dict(),
        }
        if self.C == 2:
            out["brier_binary"] = self.brier_binary_sum / self.n
        return out


@dataclass
class EnsembleEvaluation:
    """Everything :func:`evaluate_ensemble` measured (per-frame arrays have length T)."""

    metrics: dict[str, Any]
    frame_scores: dict[str, np.ndarray]
    frame_errors: np.ndarray | None
    quality: dict[str, Any] | None
    risk_coverage: RiskCoverage | None
    fraction_members: np.ndarray  # (M, T)
    fraction_mean: np.ndarray
    fraction_std: np.ndarray
    fraction_ensemble: np.ndarray
    fraction_expected: np.ndarray
    true_fraction: np.ndarray | None
    n_members: int
    phase: int
    quality_score: str
    error_threshold: float | None
    panel_frame: int
    panel_image: np.ndarray
    panel_truth: np.ndarray | None
    panel_maps: UncertaintyMaps
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def phase_fraction_mae(self) -> float | None:
        if self.true_fraction is None:
            return None
        return float(np.mean(np.abs(self.fraction_mean - self.true_fraction)))


def _frame_maps(maps: UncertaintyMaps, i: int) -> UncertaintyMaps:
    """Frame ``i`` of batch maps (class axis first in ``mean``, frames first elsewhere)."""
    return UncertaintyMaps(mean=maps.mean[:, i].copy(), predicted=maps.predicted[i].copy(),
                           confidence=maps.confidence[i].copy(), entropy=maps.entropy[i].copy(),
                           expected_entropy=maps.expected_entropy[i].copy(),
                           mutual_information=maps.mutual_information[i].copy(), variance=maps.variance[i].copy(),
                           total_variance=maps.total_variance[i].copy())


def evaluate_ensemble(predict: MemberPredictor, frames: Any, masks: Any | None = None, *, phase: int = 1,
                      n_bins: int = DEFAULT_BINS, batch: int = 8, quality_score: str = "mean_entropy",
                      error_threshold: float | None = None,
                      entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
                      panel_frame: int | None = None) -> EnsembleEvaluation:
    """Evaluate ``predict`` on ``frames`` (T, H, W; anything sliceable along frames, e.g. a lazy
    chunked array) against integer ``masks`` (T, H, W) when given.

    ``quality_score`` is a key of :func:`~matlake.models.imaging.uncertainty.image_scores`;
    ``error_threshold`` (fraction of wrong pixels) defaults to the median frame error;
    ``panel_frame`` (default: the frame with the largest error, else the middle one) is
    kept for the panel figure."""
    T = int(frames.shape[0])
    if T < 1:
        raise ValueError("frames: expected at least one frame, found none")
    if masks is not None and tuple(masks.shape) != tuple(frames.shape[:3]):
        raise ValueError(f"masks: expected shape {tuple(frames.shape[:3])}, found {tuple(masks.shape)}")
    acc: StreamingMetrics | None = None
    scores: dict[str, list[np.ndarray]] = {}
    errors: list[np.ndarray] = []
    fr_members, fr_ens, fr_exp, true_fr = [], [], [], []
    n_members = 0
    if panel_frame is not None and not 0 <= panel_frame < T:
        raise ValueError(f"panel_frame: expected 0..{T - 1}, found {panel_frame}")
    panel: tuple[float, int, np.ndarray, np.ndarray | None, UncertaintyMaps] | None = None
    for t0 in range(0, T, batch):
        t1 = min(T, t0 + batch)
        x = np.asarray(frames[t0:t1])
        P = np.asarray(predict(x))
        if P.ndim != 5 or P.shape[2:] != x.shape[:3]:
            raise ValueError(f"member predictor: expected probabilities (M, C, {t1 - t0}, {x.shape[1]}, "
                             f"{x.shape[2]}), found shape {P.shape}")
        n_members = P.shape[0]
        maps = uncertainty_maps(P)
        s = image_scores(maps, entropy_threshold, frame_axes=1)
        for k, v in s.items():
            scores.setdefault(k, []).append(np.asarray(v))
        f = phase_fractions(P, phase)
        fr_members.append(f.members)
        fr_ens.append(f.ensemble)
        fr_exp.append(f.expected)
        y = None
        if masks is not None:
            y = np.asarray(masks[t0:t1]).astype(np.int64)
            if acc is None:
                acc = StreamingMetrics(P.shape[1], n_bins)
            acc.add(maps.mean, y)
            errors.append((maps.predicted != y).reshape(t1 - t0, -1).mean(axis=1))
            true_fr.append((y == phase).reshape(t1 - t0, -1).mean(axis=1))
        for i in range(t1 - t0):
            t = t0 + i
            err = float(errors[-1][i]) if y is not None else 0.0
            if panel_frame is not None:
                want = t == panel_frame
            elif y is not None:
                want = panel is None or err > panel[0]
            else:
                want = t == T // 2
            if want:
                panel = (err, t, x[i], None if y is None else y[i], _frame_maps(maps, i))
    frame_scores = {k: np.concatenate(v) for k, v in scores.items()}
    if quality_score not in frame_scores:
        raise ValueError(f"quality_score: expected one of {sorted(frame_scores)}, found {quality_score!r}")
    metrics = acc.result() if acc is not None else {}
    metrics["mean_entropy"] = float(np.mean(frame_scores["mean_entropy"]))
    metrics["mean_mutual_information"] = float(np.mean(frame_scores["mean_mutual_information"]))
    frame_errors = np.concatenate(errors) if errors else None
    quality = rc = None
    thr = None
    if frame_errors is not None:
        thr = float(np.median(frame_errors)) if error_threshold is None else float(error_threshold)
        quality = quality_flag_metrics(frame_scores[quality_score], frame_errors, thr)
        rc = risk_coverage(frame_scores[quality_score], frame_errors)
    members = np.concatenate(fr_members, axis=1)
    assert panel is not None
    _, idx, image, truth, maps = panel
    return EnsembleEvaluation(
        metrics=metrics, frame_scores=frame_scores, frame_errors=frame_errors, quality=quality, risk_coverage=rc,
        fraction_members=members, fraction_mean=members.mean(axis=0), fraction_std=members.std(axis=0),
        fraction_ensemble=np.concatenate(fr_ens), fraction_expected=np.concatenate(fr_exp),
        true_fraction=np.concatenate(true_fr) if true_fr else None, n_members=n_members, phase=phase,
        quality_score=quality_score, error_threshold=thr, panel_frame=int(idx), panel_image=image,
        panel_truth=truth, panel_maps=maps,
        parameters={"phase": phase, "n_bins": n_bins, "batch": batch, "quality_score": quality_score,
                    "error_threshold": error_threshold, "entropy_threshold": entropy_threshold})


def otsu(values: np.ndarray, n_bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of ``values`` on a ``n_bins`` histogram."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=n_bins, range=(lo, hi))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))] + 0.5 * (edges[1] - edges[0]))


@dataclass(frozen=True)
class SmoothedThresholdEnsemble:
    """A non-learned ensemble for two-phase frames where the ``dark_class`` is darker.

    Member m smooths the frame with a Gaussian of ``sigmas[m]`` px, takes Otsu's
    threshold ``tau`` of the smoothed frame and gives
    ``p_dark = 1 / (1 + exp((s - tau) / (softness x std(s))))``.  Members differ
    only in their smoothing, so they disagree near interfaces and on noisy
    (low-dose) frames.  Deterministic; ``name``/``version`` identify it in records.
    """

    sigmas: tuple[float, ...] = (1.0, 2.0, 3.0)
    softness: float = 0.15
    dark_class: int = 1
    name: str = "smoothed-threshold"
    version: str = "1"
    model_id: str | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        return {"sigmas": list(self.sigmas), "softness": self.softness, "dark_class": self.dark_class}

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        x = np.asarray(frames, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        M, b = len(self.sigmas), x.shape[0]
        P = np.empty((M, 2, b, *x.shape[1:]))
        for m, sigma in enumerate(self.sigmas):
            for t in range(b):
                s = gaussian_filter(x[t], sigma, mode="reflect") if sigma > 0 else x[t]
                tau = otsu(s)
                scale = self.softness * (float(s.std()) or 1.0)
                z = np.clip((s - tau) / scale, -60.0, 60.0)
                dark = 1.0 / (1.0 + np.exp(z))
                P[m, self.dark_class, t] = dark
                P[m, 1 - self.dark_class, t] = 1.0 - dark
        return P


@dataclass
class PerImagePredictor:
    """A member predictor from a per-image function ``image (H, W) -> (M, C, H, W)``.

    This is how a trained ensemble plugs into :func:`evaluate_ensemble` and
    :func:`matlake.models.imaging.evaluate_lake.evaluate`: e.g.
    ``PerImagePredictor(lambda img: member_probabilities(net, img), name="EA",
    version="3", model_id=model_id)``.  Frames go through ``fn`` one by one and are
    stacked on the frame axis (axis 2)."""

    fn: Callable[[np.ndarray], np.ndarray]
    name: str
    version: str = "1"
    model_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        return np.stack([np.asarray(self.fn(f), dtype=np.float64) for f in frames], axis=2)
