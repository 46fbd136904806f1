"""Per-pixel uncertainty of an ensemble of segmentation models, and image-level scores.

Input: the members' class probabilities ``P`` of shape ``(M, C, *spatial)`` (M
members, C classes; ``spatial`` is usually ``(H, W)``, or ``(T, H, W)`` for a
movie), each member's probabilities summing to 1 over the class axis.

With the ensemble mean ``p̄ = mean_m p_m`` (the predictive distribution), all in
nats (natural logarithm, ``0 log 0 = 0``):

- **predictive entropy** ``H[p̄] = -sum_c p̄_c log p̄_c`` (total uncertainty,
  between 0 and ``log C``);
- **expected entropy** ``E_m H[p_m]`` (aleatoric part: what each member itself
  is unsure about);
- **mutual information** ``MI = H[p̄] - E_m H[p_m]`` (epistemic part: how much
  the members disagree; >= 0 by the concavity of the entropy, and equal to
  ``log 2`` for two members confidently predicting different classes);
- **member variance** ``var_m p_m,ŷ`` of the probability of the predicted class
  ``ŷ = argmax_c p̄_c`` over members (population variance, divisor M), and
  ``total_variance = sum_c var_m p_m,c`` summed over classes.  For two classes
  the total is exactly twice the predicted-class variance.

Image-level scores (:func:`image_scores`): mean predictive entropy, mean MI,
mean member variance and the fraction of pixels whose predictive entropy is
above a threshold (default ``0.5 log 2`` nats, half the largest entropy of a
two-class pixel).  They serve as quality flags of a frame; see
:mod:`matlake.models.imaging.calibration` for how well they detect errors.

Per-frame phase fractions (:func:`phase_fractions`): each member's fraction of
pixels predicted as a class, then the mean and standard deviation over
members — the ± ensemble spread of a phase-fraction time series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["UncertaintyMaps", "entropy", "check_member_probabilities", "uncertainty_maps", "image_scores",
           "PhaseFractions", "phase_fractions", "DEFAULT_ENTROPY_THRESHOLD"]

# Half of the largest entropy of a two-class pixel (log 2 nats): a pixel above it is closer to a coin flip
# than to a confident call.
DEFAULT_ENTROPY_THRESHOLD = 0.5 * math.log(2.0)


def entropy(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Shannon entropy (nats) of the distributions along ``axis``; ``0 log 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0.0, p * np.log(np.where(p > 0.0, p, 1.0)), 0.0)
    return -terms.sum(axis=axis)


def check_member_probabilities(P: np.ndarray, atol: float = 1e-4) -> np.ndarray:
    """``P`` as float64 after checking it is ``(M, C, ...)`` member probabilities.

    Raises ``ValueError`` naming the expectation and what was found: fewer than
    3 dimensions, fewer than 2 classes, non-finite values, values outside
    [0, 1], or member distributions whose sum over classes is off 1 by more
    than ``atol`` (float32 softmax outputs are typically 1 +- 1e-7).
    """
    P = np.asarray(P)
    if P.ndim < 3:
        raise ValueError(f"member probabilities: expected shape (M, C, ...spatial), found shape {P.shape}")
    if P.shape[0] < 1 or P.shape[1] < 2:
        raise ValueError(f"member probabilities: expected >= 1 member and >= 2 classes, found shape {P.shape}")
    P = P.astype(np.float64, copy=False)
    if not np.isfinite(P).all():
        raise ValueError(f"member probabilities: expected finite values, found {int((~np.isfinite(P)).sum())} "
                         "NaN/inf")
    lo, hi = float(P.min()), float(P.max())
    if lo < -atol or hi > 1.0 + atol:
        raise ValueError(f"member probabilities: expected values in [0, 1], found [{lo:.6g}, {hi:.6g}]")
    dev = float(np.abs(P.sum(axis=1) - 1.0).max())
    if dev > atol:
        raise ValueError(f"member probabilities: expected each member to sum to 1 over classes (axis 1), "
                         f"found a deviation of {dev:.3g}")
    return P


@dataclass
class UncertaintyMaps:
    """Per-pixel maps of an ensemble (spatial shape ``S``); entropies and MI in nats.

    ``mean``: (C, *S) mean class probabilities; ``predicted``: (*S) argmax of
    ``mean`` (ties go to the lower class); ``confidence``: (*S) max of ``mean``;
    ``entropy``: predictive entropy H[mean]; ``expected_entropy``: mean over
    members of each member's entropy; ``mutual_information``: their difference,
    clipped at 0 (round-off can make it -1e-16); ``variance``: member variance
    of the predicted class's probability; ``total_variance``: member variance
    summed over classes.
    """

    mean: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    variance: np.ndarray
    total_variance: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.mean.shape[0])


def uncertainty_maps(P: np.ndarray) -> UncertaintyMaps:
    """Every per-pixel uncertainty map of member probabilities ``P`` (M, C, *spatial)."""
    P = check_member_probabilities(P)
    mean = P.mean(axis=0)
    predicted = np.argmax(mean, axis=0)
    confidence = np.take_along_axis(mean, predicted[None], axis=0)[0]
    h_mean = entropy(mean, axis=0)
    h_members = entropy(P, axis=1)  # (M, *S)
    expected = h_members.mean(axis=0)
    mi = np.clip(h_mean - expected, 0.0, None)
    var_c = P.var(axis=0)  # (C, *S), divisor M
    var_pred = np.take_along_axis(var_c, predicted[None], axis=0)[0]
    small = np.uint8 if mean.shape[0] <= 255 else np.int32
    return UncertaintyMaps(mean=mean, predicted=predicted.astype(small), confidence=confidence, entropy=h_mean,
                           expected_entropy=expected, mutual_information=mi, variance=var_pred,
                           total_variance=var_c.sum(axis=0))


def image_scores(maps: UncertaintyMaps, entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
                 frame_axes: int | None = None) -> dict[str, np.ndarray | float]:
    """Image-level uncertainty scores of ``maps``.

    Keys: ``mean_entropy``, ``mean_mutual_information``, ``mean_expected_entropy``
    (nats), ``mean_variance`` (predicted-class member variance), ``mean_confidence``
    and ``uncertain_fraction`` (fraction of pixels with predictive entropy above
    ``entropy_threshold`` nats).  With ``frame_axes=k`` the first ``k`` spatial
    axes are kept (e.g. 1 for a (T, H, W) movie: one score per frame, as arrays);
    otherwise each score is one float over all pixels.
    """
    k = 0 if frame_axes is None else int(frame_axes)
    nd = maps.entropy.ndim
    if not 0 <= k < nd:
        raise ValueError(f"image_scores: expected 0 <= frame_axes < {nd}, found {frame_axes}")
    axes = tuple(range(k, nd))

    def reduce(a: np.ndarray) -> np.ndarray | float:
        r = np.asarray(a, dtype=np.float64).mean(axis=axes)
        return float(r) if k == 0 else r

    return {
        "mean_entropy": reduce(maps.entropy),
        "mean_mutual_information": reduce(maps.mutual_information),
        "mean_expected_entropy": reduce(maps.expected_entropy),
        "mean_variance": reduce(maps.variance),
        "mean_confidence": reduce(maps.confidence),
        "uncertain_fraction": reduce(maps.entropy > entropy_threshold),
    }


@dataclass
class PhaseFractions:
    """Fraction of pixels of one class per frame, per ensemble member.

    ``members``: (M, T) each member's fraction (its own argmax per pixel);
    ``mean`` and ``std`` (T,): mean and population standard deviation over
    members; ``ensemble``: (T,) the fraction of the ensemble prediction (argmax
    of the mean probability); ``expected``: (T,) the mean probability of the
    class averaged over pixels (a soft fraction).
    """

    phase: int
    members: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    ensemble: np.ndarray
    expected: np.ndarray


def phase_fractions(P: np.ndarray, phase: int = 1) -> PhaseFractions:
    """Per-frame fraction of class ``phase`` from member probabilities ``P`` of shape
    (M, C, T, H, W) (a movie) or (M, C, H, W) (one frame: T = 1)."""
    P = check_member_probabilities(P)
    if P.ndim == 4:
        P = P[:, :, None]
    if P.ndim != 5:
        raise ValueError(f"phase_fractions: expected (M, C, T, H, W) or (M, C, H, W), found shape {P.shape}")
    C = P.shape[1]
    if not 0 <= phase < C:
        raise ValueError(f"phase_fractions: expected a class in 0..{C - 1}, found {phase}")
    member_pred = np.argmax(P, axis=1)  # (M, T, H, W)
    members = (member_pred == phase).mean(axis=(2, 3))
    mean = P.mean(axis=0)
    ensemble = (np.argmax(mean, axis=0) == phase).mean(axis=(1, 2))
    expected = mean[phase].mean(axis=(1, 2))
    return PhaseFractions(phase=phase, members=members, mean=members.mean(axis=0), std=members.std(axis=0),
                          ensemble=ensemble, expected=expected)
