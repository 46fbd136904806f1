"""XAS pre-edge subtraction and normalisation, following xraylarch's ``pre_edge`` rules.

Pure numpy, energies in eV, mu dimensionless (any absorption-like intensity).
xraylarch is the reference in the tests (E0 within 0.5 eV, edge step within
1 %); it is not a runtime dependency.  The rules, as larch applies them:

- **E0** (:func:`find_e0`): the energy of the largest derivative d(mu)/dE, found
  twice.  First on the raw derivative, ignoring the first and last 2 % of the
  points (at least 3), and only at points whose two neighbours are also "high"
  (above 60 % of the derivative's range, halved up to twice when fewer than 3
  points qualify), so one glitch cannot win.  Then again on the derivative
  smoothed with a Lorentzian (half width = an energy step averaged from the
  data's smallest steps and E0/25000), within +-75 points of the first estimate.
  An estimate in the first 5 % of the points is treated as a glitch: the second
  pass then searches from there to the end.
- **pre-edge line**: a straight line fitted to mu over ``[E0 + pre1, E0 + pre2]``;
  defaults ``pre1`` = the second energy point relative to E0 rounded to 5 eV (to
  2 eV when E0 is within the first 20 points), ``pre2`` = ``pre1 / 2``.  Fewer than
  3 points in the range: the mean instead of a line.
- **post-edge polynomial** of degree ``nnorm`` fitted to mu - pre-edge over
  ``[E0 + norm1, E0 + norm2]``; defaults ``norm2`` = last energy - E0 rounded to
  5 eV, ``norm1`` = min(25, 5 x round(norm2 / 15)), ``nnorm`` = 2 when the
  range spans 300 eV or more, 1 from 30 eV, else 0 (at most 5); fewer than 5
  points lowers it to 1, fewer than 2 to 0.
- **edge step**: post-edge minus pre-edge at the point nearest E0; ``norm`` =
  (mu - pre-edge) / edge step; ``flat`` additionally removes the post-edge
  curve's shape above E0 (larch's ``flat``).

Index selections mirror larch's: the lower end of a fit range is the last point
at or below it, the upper end the nearest point (exclusive, as a Python slice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PreEdgeResult", "find_e0", "pre_edge", "lorentzian_smooth", "MAX_NNORM"]

MAX_NNORM = 5
_TINY_ENERGY = 5e-4  # eV: repeated energies are nudged apart by this (as larch does)


@dataclass(frozen=True)
class PreEdgeResult:
    """The outcome of :func:`pre_edge` (energies in eV; mu in the input's unit).

    ``pre_slope`` is per eV; the pre-edge line is ``pre_slope * E + pre_intercept``.
    ``post_coefs`` are the post-edge polynomial's coefficients in (E - E0), lowest
    first, of the curve fitted to mu - pre-edge: post-edge = pre-edge + poly(E - E0).
    """

    energy: np.ndarray
    mu: np.ndarray
    e0: float
    edge_step: float
    pre_slope: float
    pre_intercept: float
    post_coefs: tuple[float, ...]
    norm: np.ndarray
    flat: np.ndarray
    pre_edge: np.ndarray
    post_edge: np.ndarray
    pre1: float
    pre2: float
    norm1: float
    norm2: float
    nnorm: int
    npre: int
    settings: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        """The ranges and degrees actually used (eV relative to E0), for provenance."""
        return {"e0": self.e0, "pre1": self.pre1, "pre2": self.pre2, "norm1": self.norm1, "norm2": self.norm2,
                "nnorm": self.nnorm, "npre": self.npre, "edge_step": self.edge_step}


def finite_points(x: np.ndarray, y: np.ndarray, x_name: str = "energy",
                  y_name: str = "mu") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) as flat float arrays without the points where either is NaN or inf.

    ValueError (naming the fields) when the lengths differ or fewer than 2 points are left.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"field {y_name} expected the length of {x_name} ({x.size}), found {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        raise ValueError(f"field {x_name} expected at least 2 finite points, found {x.size}")
    return x, y


def _clean(energy: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite points only, sorted by energy, repeated energies nudged apart by 0.5 meV."""
    e, m = finite_points(energy, mu)
    order = np.argsort(e, kind="stable")
    e, m = e[order], m[order]
    if np.diff(e).min() <= 10 * _TINY_ENERGY:
        e = e.copy()
        for i in range(1, e.size):
            if e[i] - e[i - 1] < _TINY_ENERGY:
                e[i] = e[i - 1] + _TINY_ENERGY
    return e, m


def _index_at_or_below(values: np.ndarray, target: float) -> int:
    """Index of the last value <= target (0 when all are above)."""
    return max(int(np.searchsorted(values, target, side="right")) - 1, 0)


def _index_nearest(values: np.ndarray, target: float) -> int:
    return int(np.abs(values - target).argmin())


def _energy_step(energy: np.ndarray, frac_ignore: float = 0.01, n_average: int = 10) -> float:
    """A robust energy step (eV): the mean of the smallest steps after dropping the
    smallest ``frac_ignore`` fraction (and the same fraction at both ends of the scan)."""
    n_skip = int(frac_ignore * energy.size)
    inner = energy[:-1]  # larch drops the last point here too
    inner = inner[n_skip:inner.size - n_skip]  # (larch's [n:-n] is empty for n = 0: a NaN step; not here)
    steps = np.sort(np.diff(inner))
    return float(steps[n_skip:n_skip + n_average].mean())


def lorentzian_smooth(x: np.ndarray, y: np.ndarray, hwhm: float, step: float, n_pad: int = 5) -> np.ndarray:
    """``y`` convolved with a unit-area Lorentzian of half width ``hwhm`` (units of ``x``).

    The data are put on a uniform axis of spacing ``step`` (at most 50 points per
    input point) that starts and ends ``n_pad`` steps beyond the data, reflected
    about both ends (so the ends are not pulled toward zero), convolved, and
    interpolated back onto ``x``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if not step > 1e-12:
        raise ValueError(f"step: expected a positive axis step, found {step}")
    lo = step * int((x[0] - n_pad * step) / step)
    hi = step * int((x[-1] + n_pad * step) / step)
    n = min(1 + int(abs(hi - lo + 0.1 * step) / step), 50 * x.size)
    grid = np.linspace(lo, hi, n)
    yu = np.interp(grid, x, y)
    offsets = np.arange(2 * n) - n  # kernel centred on index n, in steps
    gamma = hwhm / step
    kernel = gamma / (np.pi * (offsets**2 + gamma**2))
    kernel /= kernel.sum()
    # reflection without repeating the end points; the kernel is 2n long, so a
    # "valid" convolution of the (3n - 1)-long padded data gives n values back
    padded = np.concatenate((yu[n - 1:0:-1], yu, yu[::-1]))
    smooth = np.convolve(kernel, padded, mode="valid")[:n]
    return np.interp(x, grid, smooth)


def _e0_pass(energy: np.ndarray, mu: np.ndarray, smooth_step: float | None) -> tuple[float, int, float]:
    """(E0, its index, energy step) from one pass over the derivative (see the module notes)."""
    step = _energy_step(energy) if smooth_step is None else smooth_step
    n_edge = max(3, int(0.02 * energy.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        dmu = np.gradient(mu) / np.gradient(energy)
    if smooth_step is not None:
        dmu = lorentzian_smooth(energy, dmu, hwhm=step, step=step)
    dmu = np.where(np.isfinite(dmu), dmu, -1.0)
    inner = dmu[n_edge:-n_edge] if dmu.size > 2 * n_edge else dmu
    span = max(1e-10, float(np.ptp(inner)))
    scaled = (dmu - inner.min()) / span
    threshold = 0.60 if energy.size > 20 else 0.30
    high = np.flatnonzero(scaled > threshold)
    for _ in range(2):  # too few high points: lower the bar (twice at most)
        if high.size > 3:
            break
        threshold *= 0.5
        high = np.flatnonzero(scaled > threshold)
    if high.size < 3:
        high = np.arange(energy.size)
    is_high = np.zeros(energy.size + 2, dtype=bool)
    is_high[high + 1] = True  # shifted by one so i-1 and i+1 are always valid indices
    best, best_value = 0, 0.0
    for i in high:
        if i < n_edge or i > energy.size - n_edge:
            continue
        if scaled[i] > best_value and is_high[i] and is_high[i + 2]:
            best, best_value = int(i), float(scaled[i])
    return float(energy[best]), best, step


def find_e0(energy: np.ndarray, mu: np.ndarray) -> float:
    """Edge energy E0 (eV): the maximum of d(mu)/dE by larch's two-pass rule (module notes)."""
    e, m = _clean(energy, mu)
    if e.size < 8:
        raise ValueError(f"energy: expected at least 8 points to find E0, found {e.size}")
    e1, i0, step1 = _e0_pass(e, m, None)
    start, stop = max(3, i0 - 75), min(i0 + 75, e.size - 3)
    if i0 < 0.05 * e.size:  # a maximum this close to the start is usually a glitch
        e1 = float(e.mean())
        start, stop = max(3, i0 - 20), e.size - 3
    # smoothing width: between the data's step and a scaled E0 (0.4 eV at 10 keV), both kept in [0.01, 1] eV
    step = 0.5 * (max(0.01, min(1.0, step1)) + max(0.01, min(1.0, e1 / 25000.0)))
    e0, i, _ = _e0_pass(e[start:stop], m[start:stop], step)
    if i < 1:
        e0 = float(e[start + 2])
    return e0


def _round_to(value: float, unit: float) -> float:
    # Python's round (half to even), as larch uses it, so the defaults agree exactly
    return unit * round(value / unit)


def _polyfit(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares polynomial coefficients in x, lowest first (scaled internally for conditioning)."""
    return np.polynomial.Polynomial.fit(x, y, deg=int(degree)).convert().coef


def pre_edge(energy: np.ndarray, mu: np.ndarray, *, e0: float | None = None, step: float | None = None,
             pre1: float | None = None, pre2: float | None = None, norm1: float | None = None,
             norm2: float | None = None, nnorm: int | None = None, npre: int = 1) -> PreEdgeResult:
    """Pre-edge subtraction and normalisation of mu(E), as larch's ``pre_edge`` with ``nvict = 0``.

    ``energy`` in eV (sorted here; non-finite points dropped), ``mu`` dimensionless.
    ``e0`` (eV) is found with :func:`find_e0` when not given or outside the data;
    ``step`` fixes the edge step; ``pre1 < pre2`` and ``norm1 < norm2`` are eV relative to
    E0 (defaults in the module notes); ``nnorm`` is the post-edge polynomial degree
    (0-5); ``npre`` 1 fits a pre-edge line, 0 takes the pre-edge mean.
    """
    e, m = _clean(energy, mu)
    settings = {"e0": e0, "step": step, "pre1": pre1, "pre2": pre2, "norm1": norm1, "norm2": norm2,
                "nnorm": nnorm, "npre": npre}
    if npre not in (0, 1):
        raise ValueError(f"npre: expected 0 (constant) or 1 (line), found {npre}")
    if nnorm is not None and not 0 <= int(nnorm) <= MAX_NNORM:
        raise ValueError(f"nnorm: expected a polynomial degree 0-{MAX_NNORM}, found {nnorm}")
    if e0 is None or not (e[1] <= e0 <= e[-2]):
        e0 = find_e0(e, m)
    e0 = float(e0)
    ie0 = _index_nearest(e, e0)
    rel = e - e0

    if pre1 is None:
        pre1 = _round_to(e[1] - e0, 5.0 if ie0 > 20 else 2.0)  # the first point is often bad
    pre1 = max(float(pre1), float(e[0] - e0))
    if pre2 is None:
        pre2 = 0.5 * pre1
    pre1, pre2 = sorted((float(pre1), float(pre2)))
    if _index_at_or_below(rel, pre2) - _index_at_or_below(rel, pre1) < 3:
        npre = 0  # too few points for a line

    if norm2 is None:
        norm2 = _round_to(e[-1] - e0, 5.0)
    norm2 = float(norm2)
    if norm2 < 0:
        norm2 = e[-1] - e0 - norm2
    norm2 = min(norm2, float(e[-1] - e0))
    if norm1 is None:
        norm1 = min(25.0, 5.0 * round(norm2 / 15.0))
    norm1, norm2 = sorted((float(norm1), norm2))
    norm1 = min(norm1, norm2 - 2.0)
    if nnorm is None:
        span = norm2 - norm1
        nnorm = 2 if span >= 300 else (1 if span >= 30 else 0)
    nnorm = max(min(int(nnorm), MAX_NNORM), 0)

    p1, p2 = _index_at_or_below(e, pre1 + e0), _index_nearest(e, pre2 + e0)
    if npre == 0:
        p2 = p2 + 1 if p2 == p1 else p2
        pre_intercept, pre_slope = float(m[p1:p2].mean()), 0.0
    else:
        p2 = min(e.size, p1 + 2) if p2 - p1 < 2 else p2
        pre_intercept, pre_slope = (float(c) for c in _polyfit(e[p1:p2], m[p1:p2], 1))
    pre_line = pre_intercept + pre_slope * e

    q1, q2 = _index_at_or_below(e, norm1 + e0), _index_nearest(e, norm2 + e0)
    q1 = min(q1, e.size - 3)
    if q2 - q1 < 2:
        q1, nnorm = q1 - 2, 0
    elif q2 - q1 < 5:
        nnorm = min(1, nnorm)
    # fitted in (E - E0): the same curve as larch's fit in E, better conditioned
    post_coefs = _polyfit(rel[q1:q2], (m - pre_line)[q1:q2], nnorm)
    post_curve = np.polynomial.polynomial.polyval(rel, post_coefs)
    post_line = pre_line + post_curve

    edge_step = float(step) if step is not None else float(post_line[ie0] - pre_line[ie0])
    edge_step = max(1e-12, abs(edge_step))
    norm = (m - pre_line) / edge_step
    shape = post_curve / edge_step
    flat = norm - shape + shape[ie0]
    flat[:ie0] = norm[:ie0]
    if not math.isfinite(edge_step):
        raise ValueError(f"edge step: expected a finite number, found {edge_step}")
    return PreEdgeResult(e, m, e0, edge_step, pre_slope, pre_intercept, tuple(float(c) for c in post_coefs),
                         norm, flat, pre_line, post_line, pre1, pre2, norm1, norm2, nnorm, npre, settings)
