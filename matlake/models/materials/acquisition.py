"""Acquisition rules and pessimistic bounds from predicted (mean, std) (pure, vectorised).

``expected_improvement`` and ``upper_confidence_bound`` score candidates for
the next calculations of an active-learning loop; ``pessimistic`` gives the
value a filter should test when it must hold even k standard deviations on
the unfavourable side.
"""

from __future__ import annotations

import math

import numpy as np


def _pm(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if m.shape != s.shape:
        raise ValueError(f"acquisition: mean and std shapes differ: {m.shape} vs {s.shape}")
    if (s < 0).any():
        raise ValueError("acquisition: std must be >= 0")
    return m, np.nan_to_num(s, nan=0.0)


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, maximize: bool = True,
                         xi: float = 0.0) -> np.ndarray:
    """E[max(Y - best - xi, 0)] for Y ~ N(mean, std^2) (maximising; mirrored when minimising).

    EI = d Phi(d/s) + s phi(d/s) with d = mean - best - xi; where s = 0 it is max(d, 0).
    Same unit as the property."""
    m, s = _pm(mean, std)
    d = (m - best - xi) if maximize else (best - m - xi)
    out = np.maximum(d, 0.0)
    pos = s > 0
    z = d[pos] / s[pos]
    out[pos] = d[pos] * _norm_cdf(z) + s[pos] * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return out


def upper_confidence_bound(mean: np.ndarray, std: np.ndarray, kappa: float = 2.0,
                           maximize: bool = True) -> np.ndarray:
    """mean + kappa std (maximising) or -(mean - kappa std) (minimising: larger is better)."""
    m, s = _pm(mean, std)
    return m + kappa * s if maximize else -(m - kappa * s)


def pessimistic(mean: np.ndarray, std: np.ndarray, k: float, larger_is_better: bool) -> np.ndarray:
    """mean - k std when larger values pass a filter, mean + k std when smaller ones do."""
    m, s = _pm(mean, std)
    return m - k * s if larger_is_better else m + k * s


def acquire(rule: str, mean: np.ndarray, std: np.ndarray, *, best: float | None = None, maximize: bool = True,
            kappa: float = 2.0, xi: float = 0.0) -> np.ndarray:
    """The acquisition value (larger = more worth computing) of rule ``ei`` or ``ucb``."""
    if rule == "ei":
        if best is None:
            raise ValueError("acquisition ei: needs the best observed value")
        return expected_improvement(mean, std, best, maximize, xi)
    if rule == "ucb":
        return upper_confidence_bound(mean, std, kappa, maximize)
    raise ValueError(f"acquisition: expected rule 'ei' or 'ucb', found {rule!r}")
