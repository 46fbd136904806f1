"""Spectrum featurizers: the pure kinds against per-spectrum numpy, the platform featurizers,
PCA as a model version, similarity search inside DuckDB, and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import nnls

from matlake.models.spectra.features import (
    FEATURE_KINDS,
    cubic_windows,
    feature_matrix,
    gaussian_basis,
)
from matlake.models.spectra.grids import BUILTIN_GRIDS

GRID = BUILTIN_GRIDS["xanes-ni-k"].array  # 8330-8370 eV, 100 points
EELS_GRID = BUILTIN_GRIDS["eels-o-k"].array  # 528.9-562.1 eV at 0.2 eV


def edge_spectra(rng: np.random.Generator, n: int, grid: np.ndarray = GRID) -> np.ndarray:
    """Positive XANES-like spectra: an arctan edge at a random E0 plus a white line and noise."""
    e0 = rng.uniform(grid[0] + 10, grid[-1] - 15, n)[:, None]
    height = rng.uniform(0.5, 2.0, n)[:, None]
    edge = 0.5 + np.arctan((grid - e0) / 1.5) / math.pi
    white = height * np.exp(-0.5 * ((grid - e0 - 3.0) / 2.0) ** 2)
    return 0.02 + edge + white + rng.normal(0, 0.01, (n, len(grid))).clip(-0.015, None)


# ----------------------------------------------------------------------------- pure kinds


@pytest.mark.parametrize("seed", [0, 1])
def test_intensity_derivative_cdf_match_per_spectrum_numpy(seed):
    rng = np.random.default_rng(seed)
    Y = edge_spectra(rng, 40)
    X, names, unit = feature_matrix("intensity", GRID, Y)
    assert names is None and np.array_equal(X, Y) and X is not Y
    D, _, dunit = feature_matrix("derivative", GRID, Y, intensity_unit="counts")
    assert dunit == "counts/eV"
    C, _, cunit = feature_matrix("cdf", GRID, Y, intensity_unit="counts")
    assert cunit == ""
    for i, y in enumerate(Y):
        np.testing.assert_allclose(D[i], np.gradient(y, GRID), rtol=1e-12, atol=1e-12)
        ref = np.cumsum(y) / np.sum(y)
        assert np.max(np.abs(C[i] - ref)) <= 1e-12
        assert abs(C[i, -1] - 1.0) <= 1e-12
    # the derivative of a line is its slope, on an uneven grid too
    uneven = np.cumsum(rng.uniform(0.1, 0.5, 60)) + 500.0
    lines = 3.0 + 0.7 * uneven[None, :] * np.ones((2, 1))
    np.testing.assert_allclose(feature_matrix("derivative", uneven, lines)[0], 0.7, rtol=1e-9)


def test_cdf_refuses_negative_and_zero_spectra_naming_the_index():
    Y = edge_spectra(np.random.default_rng(3), 5)
    Y[3, 10] = -0.2
    with pytest.raises(ValueError, match=r"spectrum 3: cdf expects non-negative"):
        feature_matrix("cdf", GRID, Y)
    clipped, _, _ = feature_matrix("cdf", GRID, Y, negative="clip")
    y = Y[3].clip(0, None)
    assert np.max(np.abs(clipped[3] - np.cumsum(y) / y.sum())) <= 1e-12
    Y[3] = 0.0
    with pytest.raises(ValueError, match=r"spectrum 3: cdf expects a positive intensity sum, found 0"):
        feature_matrix("cdf", GRID, Y)
    Y[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"spectrum 1: expected finite intensities"):
        feature_matrix("intensity", GRID, Y)
    with pytest.raises(ValueError, match=r"unknown feature kind 'fft'"):
        feature_matrix("fft", GRID, Y)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) width; accepted: window"):
        feature_matrix("cubic", GRID, Y, width=3)
    with pytest.raises(ValueError, match=r"expected shape \(n_spectra, 100\)"):
        feature_matrix("cdf", GRID, Y[:, :50])


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussians_are_the_nnls_solution(seed):
    rng = np.random.default_rng(seed)
    Y = edge_spectra(rng, 30)
    # a few spectra whose unconstrained fit goes negative, so both paths are exercised
    Y[:5] = rng.uniform(0, 1, (5, len(GRID)))
    W, names, unit = feature_matrix("gaussians", GRID, Y, intensity_unit="")
    basis, centres, fwhm = gaussian_basis(GRID)
    assert W.shape == (30, 20) and len(names) == 20 and names[0] == "g01@8330"
    np.testing.assert_allclose(centres, np.linspace(8330, 8370, 20))
    assert fwhm == pytest.approx(40 / 19)
    # the FWHM really is the full width at half maximum of each basis function
    fine = np.linspace(8330, 8370, 40001)
    g = gaussian_basis(fine)[0][:, 10]
    above = fine[g >= 0.5]
    assert above[-1] - above[0] == pytest.approx(fwhm, abs=2e-3)
    assert (W >= 0).all()
    for i, y in enumerate(Y):
        ref, _ = nnls(basis, y)
        np.testing.assert_allclose(W[i], ref, atol=1e-8)
        # KKT conditions of NNLS, independent of any solver
        grad = basis.T @ (basis @ W[i] - y)
        assert np.all(grad > -1e-8)
        assert np.all(np.abs(grad[W[i] > 1e-10]) < 1e-8)


def test_gaussians_recover_planted_weights():
    basis, _, _ = gaussian_basis(GRID)
    rng = np.random.default_rng(7)
    planted = rng.uniform(0, 2, (6, 20)) * (rng.random((6, 20)) < 0.5)
    W, _, _ = feature_matrix("gaussians", GRID, planted @ basis.T)
    np.testing.assert_allclose(W, planted, atol=1e-8)


@pytest.mark.parametrize("grid", [GRID, EELS_GRID], ids=["xanes-ni-k", "eels-o-k"])
def test_cubic_matches_polyfit_per_window(grid):
    rng = np.random.default_rng(11)
    Y = edge_spectra(rng, 12, grid)
    X, names, unit = feature_matrix("cubic", grid, Y)
    windows = cubic_windows(grid)
    assert sum(len(w) for w in windows) == len(grid)
    assert all(len(w) >= 4 for w in windows)
    # window k holds the points in [E_first + 5k, E_first + 5(k+1)); the last one also takes the
    # grid end (8370 eV = 8330 + 8 * 5 eV would otherwise be a one-point window)
    for k, idx in enumerate(windows):
        upper = np.inf if k == len(windows) - 1 else grid[0] + 5 * (k + 1) - 1e-9
        inside = np.flatnonzero((grid >= grid[0] + 5 * k - 1e-9) & (grid < upper))
        assert np.array_equal(idx, inside)
    assert X.shape == (12, 4 * len(windows)) and len(names) == X.shape[1]
    assert unit == "eV^-k for ck"
    for i, y in enumerate(Y):
        for w, idx in enumerate(windows):
            u = grid[idx] - grid[idx[0]]
            ref = np.polyfit(u, y[idx], 3)[::-1]  # highest power first -> c0..c3
            np.testing.assert_allclose(X[i, 4 * w:4 * w + 4], ref, rtol=1e-7, atol=1e-9)
    # a cubic is reproduced exactly
    u = grid - grid[0]
    exact = feature_matrix("cubic", grid, (1 + 0.5 * u - 0.01 * u**2 + 0.001 * u**3)[None, :])[0]
    first = exact[0, :4]
    np.testing.assert_allclose(first, [1, 0.5, -0.01, 0.001], atol=1e-9)


def _ricker_reference(points: int, a: float) -> np.ndarray:
    """The Ricker wavelet exactly as SciPy < 1.15 defined ``scipy.signal.ricker``."""
    A = 2 / (np.sqrt(3 * a) * (np.pi**0.25))
    vec = np.arange(0, points) - (points - 1.0) / 2
    xsq = vec**2
    wsq = a**2
    return A * (1 - xsq / wsq) * np.exp(-xsq / (2 * wsq))


def test_cwt_matches_per_spectrum_convolution():
    rng = np.random.default_rng(5)
    Y = edge_spectra(rng, 8)
    X, names, unit = feature_matrix("cwt", GRID, Y, intensity_unit="counts")
    assert X.shape == (8, 10 * 100) and unit == "counts" and names[0] == "a1@8330" and names[100] == "a2@8330"
    for i, y in enumerate(Y):
        ref = np.stack([np.convolve(y, _ricker_reference(min(10 * a, len(y)), a), mode="same")
                        for a in range(1, 11)])
        np.testing.assert_allclose(X[i], ref.ravel(), rtol=1e-10, atol=1e-12)
    # a Ricker wavelet integrates to ~0: the CWT of a constant is ~0 away from the zero-padded ends
    flat = feature_matrix("cwt", GRID, np.ones((1, 100)), widths=[2])[0][0]
    assert np.max(np.abs(flat[20:80])) < 1e-3


def test_every_kind_is_deterministic_and_row_independent():
    rng = np.random.default_rng(9)
    Y = edge_spectra(rng, 10)
    for kind in FEATURE_KINDS:
        full = feature_matrix(kind, GRID, Y)[0]
        part = feature_matrix(kind, GRID, Y[3:6])[0]
        np.testing.assert_allclose(full[3:6], part, rtol=1e-12, atol=1e-12, err_msg=kind)
