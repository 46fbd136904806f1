"""Pure spectrum features on a common grid, vectorised over spectra.

Every kind maps a matrix ``Y`` of shape ``(n_spectra, n_grid)`` (intensities on
the grid ``grid``, strictly increasing, in eV unless ``axis_unit`` says
otherwise) to a matrix ``(n_spectra, n_features)``.  The kinds follow the XANES
featurization study (intensity, derivative, CDF, cubic, CWT) and the Gaussian
peak features of the multimodal EELS/XAS study:

``intensity``
    the values on the grid (unit: the intensity's, ``I``).
``derivative``
    dI/dE at each grid point, ``numpy.gradient`` with the grid as coordinates
    (second-order central differences inside, one-sided at the ends; unit I/eV).
``cdf``
    ``cumsum(I) / sum(I)`` along the grid, the study's definition (no trapezoid
    weights: on an evenly spaced grid this is the discrete CDF of the
    intensity).  Dimensionless, rises to exactly 1 at the last point.  A CDF
    needs a non-negative intensity with a positive sum: a negative value (or a
    sum <= 0) raises ``ValueError`` naming the spectrum index, unless
    ``negative="clip"`` asks to set negative values to 0 first (measured
    normalised spectra can dip slightly below 0 before the edge).
``gaussians``
    weights of ``n_gaussians`` (20) Gaussians at fixed, evenly spaced centres
    from the first to the last grid point, all with one FWHM (default: the
    spacing of the centres, in eV), fitted to the spectrum as a non-negative
    sum by NNLS (unique for this full-rank basis; deterministic).  Unit I.
    The unconstrained least-squares solution is computed for all spectra at
    once; where it is already non-negative it *is* the NNLS solution, and only
    the other spectra go through ``scipy.optimize.nnls`` one by one.
``cubic``
    piecewise cubic least-squares fits over consecutive windows of
    ``window`` (5) eV starting at the first grid point (a point at E belongs
    to window ``floor((E - E_first) / window)``; a window with fewer than 4
    points joins the one before).  Per window the coefficients c0..c3 of
    ``c0 + c1 u + c2 u^2 + c3 u^3`` in the local coordinate u = E - (window
    start) in eV; unit of ck is I/eV^k.
``cwt``
    continuous wavelet transform with the Ricker (Mexican hat) wavelet at
    widths 1..10 grid points, as SciPy's former ``signal.cwt(y, ricker,
    widths)``: wavelet of ``min(10 a, n_grid)`` points, amplitude
    ``2 / (sqrt(3 a) pi^(1/4))``, convolved with the spectrum in ``same``
    mode (zero padding).  Flattened width-major: features ``[a*n_grid + j]``
    for width index a and grid point j.  Unit I.

Nothing here touches the lake; :mod:`matlake.models.spectra.featurize` is the
platform side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["FEATURE_KINDS", "feature_matrix", "gaussian_basis", "cubic_windows", "ricker", "cwt_operator",
           "kind_parameters"]

FEATURE_KINDS: tuple[str, ...] = ("intensity", "derivative", "cdf", "gaussians", "cubic", "cwt")

# Defaults of each kind's parameters (the platform stores them with every vector).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "intensity": {},
    "derivative": {},
    "cdf": {"negative": "raise"},
    "gaussians": {"n_gaussians": 20, "fwhm": None},
    "cubic": {"window": 5.0},
    "cwt": {"widths": list(range(1, 11))},
}


def kind_parameters(kind: str, **params: Any) -> dict[str, Any]:
    """The full parameter set of ``kind``: its defaults updated with ``params``.

    Raises ValueError for an unknown kind or parameter (naming the accepted ones).
    """
    if kind not in _DEFAULTS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {', '.join(FEATURE_KINDS)}")
    unknown = set(params) - set(_DEFAULTS[kind])
    if unknown:
        accepted = ", ".join(sorted(_DEFAULTS[kind])) or "none"
        raise ValueError(f"feature kind {kind!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                         f"accepted: {accepted}")
    return {**_DEFAULTS[kind], **params}


def _unit(base: str, per_axis: int, axis_unit: str) -> str:
    """``base`` divided by ``axis_unit`` to the power ``per_axis`` ('' base means dimensionless)."""
    if per_axis == 0:
        return base
    denom = axis_unit if per_axis == 1 else f"{axis_unit}^{per_axis}"
    return f"{base}/{denom}" if base else f"1/{denom}"


def _check(grid: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = np.asarray(grid, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if grid.ndim != 1 or len(grid) < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError(f"grid: expected at least 2 strictly increasing points, found shape {grid.shape}")
    if Y.ndim != 2 or Y.shape[1] != len(grid):
        raise ValueError(f"Y: expected shape (n_spectra, {len(grid)}) matching the grid, found {Y.shape}")
    bad = ~np.isfinite(Y).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"spectrum {i}: expected finite intensities, found NaN or infinity "
                         f"({int(bad.sum())} spectra affected)")
    return grid, Y


# ----------------------------------------------------------------------------- the kinds

def _intensity(grid: np.ndarray, Y: np.ndarray, p: dict, unit: str, axis_unit: str):
    return Y.copy(), None, unit


def _derivative(grid: np.ndarray, Y: np.ndarray, p: dict, unit: str, axis_unit: str):
    return np.gradient(Y, grid, axis=1), None, _unit(unit, 1, axis_unit)


def _cdf(grid: np.ndarray, Y: np.ndarray, p: dict, unit: str, axis_unit: str):
    mode = p["negative"]
    if mode not in ("raise", "clip"):
        raise ValueError(f"cdf: parameter negative: expected 'raise' or 'clip', found {mode!r}")
    if mode == "clip":
        Y = np.clip(Y, 0.0, None)
    else:
        neg = (Y < 0).any(axis=1)
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise ValueError(f"spectrum {i}: cdf expects non-negative intensities, found minimum {Y[i].min():.6g} "
                             f"({int(neg.sum())} spectra with negative values; negative='clip' sets them to 0)")
    total = Y.sum(axis=1)
    zero = ~(total > 0)
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        raise ValueError(f"spectrum {i}: cdf expects a positive intensity sum, found {total[i]:.6g}")
    return np.cumsum(Y, axis=1) / total[:, None], None, ""


def gaussian_basis(grid: np.ndarray, n_gaussians: int = 20, fwhm: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """(basis of shape (n_grid, n_gaussians), centres in eV, FWHM in eV) of the ``gaussians`` kind.

    Centres are evenly spaced from the first to the last grid point; the
    default FWHM is their spacing.  Each Gaussian has peak height 1.
    """
    grid = np.asarray(grid, dtype=float)
    if int(n_gaussians) < 1:
        raise ValueError(f"gaussians: parameter n_gaussians: expected at least 1, found {n_gaussians}")
    centres = np.linspace(grid[0], grid[-1], int(n_gaussians))
    if fwhm is None:
        fwhm = float(centres[1] - centres[0]) if len(centres) > 1 else float(grid[-1] - grid[0])
    fwhm = float(fwhm)
    if not fwhm > 0:
        raise ValueError(f"gaussians: parameter fwhm: expected a positive width in eV, found {fwhm}")
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    basis = np.exp(-0.5 * ((grid[:, None] - centres[None, :]) / sigma) ** 2)
    return basis, centres, fwhm


def _gaussians(grid: np.ndarray, Y: np.ndarray, p: dict, unit: str, axis_unit: str):
    from scipy.optimize import nnls

    basis, centres, _ = gaussian_basis(grid, p["n_gaussians"], p["fwhm"])
    if basis.shape[1] > basis.shape[0]:
        raise ValueError(f"gaussians: expected at most {basis.shape[0]} Gaussians for a {basis.shape[0]}-point "
                         f"grid, found n_gaussians={basis.shape[1]}")
    # Unconstrained least squares for every spectrum at once; a non-negative
    # solution there is the (unique) NNLS solution as well.
    W = np.linalg.lstsq(basis, Y.T, rcond=None)[0].T
    for i in np.flatnonzero((W < 0).any(axis=1)):
        W[i] = nnls(basis, Y[i])[0]
    names = [f"g{k + 1:02d}@{c:.6g}" for k, c in enumerate(centres)]
    return W, names, unit


def cubic_windows(grid: np.ndarray, window: float = 5.0) -> list[np.ndarray]:
    """Grid-point indices of each window of the ``cubic`` kind (``window`` in eV).

    A point at E is in window ``floor((E - E_first) / window)`` (1e-9 eV
    slack, so a point exactly on a boundary opens the next window); a window
    with fewer than 4 points (too few for a cubic) joins the one before it,
    and a first window that small takes in the next.
    """
    grid = np.asarray(grid, dtype=float)
    if not float(window) > 0:
        raise ValueError(f"cubic: parameter window: expected a positive width in eV, found {window}")
    if len(grid) < 4:
        raise ValueError(f"cubic: expected a grid of at least 4 points, found {len(grid)}")
    which = np.floor((grid - grid[0]) / float(window) + 1e-9).astype(int)
    groups = [np.flatnonzero(which == w) for w in np.unique(which)]
    merged: list[np.ndarray] = []
    for g in groups:
        if merged and (len(g) < 4 or len(merged[-1]) < 4):
            merged[-1] = np.concatenate([merged[-1], g])
        else:
            merged.append(g)
    return merged


def _cubic(grid: np.ndarray, Y: np.ndarray, p: dict, unit: str, axis_unit: str):
    windows = cubic_windows(grid, p["window"])
    out = np.empty((Y.shape[0], 4 * len(windows)))
    names: list[str] = []
    for w, idx in enumerate(windows):
        u = grid[idx] - grid[idx[0]]
        V = np.vander(u, 4, increasing=True)
        # (V^+ Y_w^T)^T: the least-squares coefficients of every spectrum in this window
        out[:, 4 * w:4 * w + 4] = Y[:, idx] @ np.linalg.pinv(V).T
        names += [f"w{w + 1}c{k}@{grid[idx[0]]:.6g}" for k in range(4)]
    return out, names, (f"{unit}/{axis_unit}^k for ck" if unit else f"{axis_unit}^-k for ck")


def ricker(points: int, width: float) -> np.ndarray:
    """The Ricker (Mexican hat) wavelet sampled at ``points`` points, width ``width`` points:
    ``2/(sqrt(3 a) pi^(1/4)) (1 - t^2/a^2) exp(-t^2/(2 a^2))``, t centred on the middle point."""
    a = float(width)
    t = np.arange(points) - (points - 1.0) / 2.0
    amp = 2.0 / (math.sqrt(3.0 * a) * math.pi ** 0.25)
    return amp * (1.0 - (t / a) ** 2) * np.exp(-0.5 * (t / a) ** 2)


@lru_cache(maxsize=32)
def _cwt_operator_cached(n: int, widths: tuple[float, ...]) -> np.ndarray:
    blocks = []
    eye = np.eye(n)
    for a in widths:
        wav = ricker(min(int(10 * a), n), a)
        # column j: the 'same'-mode convolution of the j-th unit vector, so Y @ block.T convolves every row
        blocks.append(np.stack([np.convolve(eye[j], wav, mode="same") for j in range(n)], axis=1))
    op = np.concatenate(blocks, axis=0).T.copy()  # (n, n_widths * n)
    op.setflags(write=False)
    return op


def cwt_operator(n: int, widths: tuple[float, ...] = tuple(range(1, 11))) -> np.ndarray:
    """The linear map of the ``cwt`` kind as a matrix (n, len(widths) * n): ``Y @ op`` is the CWT."""
    widths = tuple(float(a) for a in widths)
    if not widths or min(widths) <= 0:
        raise ValueError(f"cwt: parameter widths: expected positive widths in grid points, found {list(widths)}")
    return _cwt_operator_cached(int(n), widths)


def _cwt(grid: np.ndarray, Y: np.ndarray, p: dict, unit: str, axis_unit: str):
    widths = tuple(float(a) for a in p["widths"])
    out = Y @ cwt_operator(len(grid), widths)
    names = [f"a{a:g}@{e:.6g}" for a in widths for e in grid]
    return out, names, unit


_KINDS: dict[str, Callable[..., tuple[np.ndarray, list[str] | None, str]]] = {
    "intensity": _intensity, "derivative": _derivative, "cdf": _cdf,
    "gaussians": _gaussians, "cubic": _cubic, "cwt": _cwt,
}


def feature_matrix(kind: str, grid: np.ndarray, Y: np.ndarray, *, intensity_unit: str = "",
                   axis_unit: str = "eV", **params: Any) -> tuple[np.ndarray, list[str] | None, str]:
    """Y: (n_spectra, n_grid) intensities on the common grid (eV) -> (n_spectra, n_features) matrix,
    component names (None when components are the grid points) and the unit of the values.

    ``intensity_unit`` is the unit of Y ('' for dimensionless, e.g. normalised
    mu) and ``axis_unit`` that of the grid; they only shape the returned unit
    string.  ``params`` are the kind's parameters (see the module docstring and
    :func:`kind_parameters`).  Raises ValueError for an unknown kind or
    parameter, a Y that does not match the grid, a non-finite intensity or
    (``cdf``) a negative intensity or non-positive sum, naming the spectrum index.
    """
    p = kind_parameters(kind, **params)
    grid, Y = _check(grid, Y)
    return _KINDS[kind](grid, Y, p, intensity_unit, axis_unit)
