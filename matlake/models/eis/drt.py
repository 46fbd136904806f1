"""Distribution of relaxation times (DRT) by Tikhonov-regularised non-negative fit.

Model (x = ln tau):

    Z(omega) = R_inf + j omega L + integral gamma(x) / (1 + j omega e^x) dx,

so integral gamma dx = R_pol and an ideal RC element R || C gives a peak of area
R at tau = RC.  gamma is expanded in Gaussian radial basis functions centred on
a log-spaced tau grid (one decade beyond the measured band on both sides, width
= grid spacing); the basis integrals are done once by quadrature.  The
coefficients (and R_inf, L) solve

    min || W (A x - Z) ||^2 + lambda || D x ||^2,   x >= 0  (so gamma >= 0)

with W = 1/|Z| on real and imaginary rows and D the first-difference matrix
(penalising roughness, not area, so peak areas are not shrunk).  lambda is given
or chosen by generalised cross validation (GCV) on the unconstrained problem,
then the bounded problem is solved with ``scipy.optimize.lsq_linear``.
Units: tau in s, gamma in Ohm (per unit ln tau), L in H.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.signal

from matlake.models.eis.validity import check_spectrum

__all__ = ["DrtResult", "DrtPeak", "fit_drt"]


@dataclass
class DrtPeak:
    """One DRT peak: position ``tau_s`` (s) and area ``resistance_ohm`` (Ohm)."""

    tau_s: float
    resistance_ohm: float


@dataclass
class DrtResult:
    """DRT on grid ``tau`` (s): ``gamma`` (Ohm per unit ln tau) and fit details."""

    tau: np.ndarray
    gamma: np.ndarray
    lam: float
    r_inf: float
    inductance: float
    r_pol: float
    z_fit: np.ndarray
    residuals_real: np.ndarray
    residuals_imag: np.ndarray
    peaks: list[DrtPeak]


def _basis_integrals(
    omega: np.ndarray, centres: np.ndarray, width: float, quad_per_spacing: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Re and Im of integral phi_m(x)/(1 + j omega e^x) dx for Gaussian phi_m."""
    spacing = centres[1] - centres[0]
    xq = np.arange(centres[0] - 6 * width, centres[-1] + 6 * width, spacing / quad_per_spacing)
    dx = xq[1] - xq[0]
    kern = 1.0 / (1.0 + 1j * omega[:, None] * np.exp(xq)[None, :])  # N x Q
    phi = np.exp(-0.5 * ((xq[:, None] - centres[None, :]) / width) ** 2)  # Q x M
    a = (kern @ phi) * dx
    return a.real, a.imag


def _gamma_on(x: np.ndarray, centres: np.ndarray, width: float, coef: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((x[:, None] - centres[None, :]) / width) ** 2) @ coef


def fit_drt(
    frequency_hz: np.ndarray,
    z: np.ndarray,
    lam: float | None = None,
    points_per_decade: int = 10,
    inductance: bool = False,
    lambdas: np.ndarray | None = None,
) -> DrtResult:
    """Regularised DRT of an impedance spectrum.

    Parameters
    ----------
    frequency_hz: frequencies (Hz).
    z: complex impedance (Ohm), capacitive Im Z < 0.
    lam: regularisation parameter (dimensionless, on the 1/|Z|-weighted
        problem); ``None`` chooses it by GCV over ``lambdas``
        (default logspace(-7, 0, 29)).
    points_per_decade: tau-grid density of the basis.
    inductance: also fit a series inductance L >= 0.
    """
    f, zz = check_spectrum(frequency_hz, z)
    if lam is not None and not (lam > 0 and np.isfinite(lam)):
        raise ValueError(f"lam: expected a positive finite number, found {lam}")
    if points_per_decade < 2:
        raise ValueError(f"points_per_decade: expected >= 2, found {points_per_decade}")
    omega = 2 * np.pi * f
    x_lo = np.log(1.0 / omega.max()) - np.log(10.0)
    x_hi = np.log(1.0 / omega.min()) + np.log(10.0)
    n_basis = int(np.ceil((x_hi - x_lo) / np.log(10.0) * points_per_decade)) + 1
    centres = np.linspace(x_lo, x_hi, n_basis)
    width = centres[1] - centres[0]
    a_re, a_im = _basis_integrals(omega, centres, width)

    # columns: R_inf, [L], basis coefficients; rows weighted by 1/|Z|
    wt = 1.0 / np.abs(zz)
    extra = 1 + int(inductance)
    n_col = extra + n_basis
    a = np.zeros((2 * f.size, n_col))
    a[: f.size, 0] = 1.0
    if inductance:
        a[f.size :, 1] = omega
    a[: f.size, extra:] = a_re
    a[f.size :, extra:] = a_im
    wrow = np.concatenate([wt, wt])
    aw = a * wrow[:, None]
    b = np.concatenate([zz.real, zz.imag]) * wrow
    # column scaling so that one lambda means the same for any impedance scale
    cs = np.linalg.norm(aw, axis=0)
    cs[cs == 0] = 1.0
    aw_s = aw / cs
    d = np.zeros((n_basis - 1, n_col))
    d[:, extra:] = np.diff(np.eye(n_basis), axis=0)
    d_s = d / cs  # penalty acts on the unscaled coefficients

    ata = aw_s.T @ aw_s
    dtd = d_s.T @ d_s
    atb = aw_s.T @ b
    # scale of the penalty relative to the data term
    norm = np.trace(ata) / max(np.trace(dtd), 1e-300)

    if lam is None:
        grid = np.logspace(-7, 0, 29) if lambdas is None else np.asarray(lambdas, float)
        best = (np.inf, grid[0])
        n_obs = b.size
        for lm in grid:
            mat = ata + lm * norm * dtd + 1e-12 * np.trace(ata) * np.eye(n_col)
            try:
                cf = scipy.linalg.cho_factor(mat)
            except np.linalg.LinAlgError:
                continue
            sol = scipy.linalg.cho_solve(cf, atb)
            rss = float(np.sum((aw_s @ sol - b) ** 2))
            trace_h = float(np.trace(scipy.linalg.cho_solve(cf, ata)))
            gcv = n_obs * rss / max(n_obs - trace_h, 1e-9) ** 2
            if gcv < best[0]:
                best = (gcv, float(lm))
        lam = best[1]

    big = np.vstack([aw_s, np.sqrt(lam * norm) * d_s])
    rhs = np.concatenate([b, np.zeros(d_s.shape[0])])
    res = scipy.optimize.lsq_linear(big, rhs, bounds=(0.0, np.inf), method="bvls", tol=1e-12)
    # bvls can return bound-active coefficients a few ulp below 0 (e.g. -1.7e-319):
    # the problem is constrained to x >= 0, so clipping changes no fit, only rounding.
    coef = np.maximum(res.x, 0.0) / cs
    r_inf = float(coef[0])
    ind = float(coef[1]) if inductance else 0.0
    xb = coef[extra:]

    z_fit = r_inf + 1j * omega * ind + a_re @ xb + 1j * (a_im @ xb)
    err = (zz - z_fit) / np.abs(zz)
    # report gamma on a grid 4x finer than the basis for peak positions
    x_out = np.linspace(x_lo, x_hi, 4 * (n_basis - 1) + 1)
    gamma = _gamma_on(x_out, centres, width, xb)
    dx = x_out[1] - x_out[0]
    r_pol = float(np.sum(xb) * width * np.sqrt(2 * np.pi))  # exact area of the Gaussians

    peaks: list[DrtPeak] = []
    if gamma.max() > 0:
        idx, _ = scipy.signal.find_peaks(gamma, height=0.02 * gamma.max())
        minima = np.flatnonzero(
            (gamma[1:-1] <= gamma[:-2]) & (gamma[1:-1] <= gamma[2:])
        ) + 1
        for i in idx:
            left = minima[minima < i]
            right = minima[minima > i]
            lo_i = int(left[-1]) if left.size else 0
            hi_i = int(right[0]) if right.size else gamma.size - 1
            area = float(np.trapezoid(gamma[lo_i : hi_i + 1], dx=dx))
            peaks.append(DrtPeak(tau_s=float(np.exp(x_out[i])), resistance_ohm=area))
    return DrtResult(
        tau=np.exp(x_out),
        gamma=gamma,
        lam=float(lam),
        r_inf=r_inf,
        inductance=ind,
        r_pol=r_pol,
        z_fit=z_fit,
        residuals_real=err.real,
        residuals_imag=err.imag,
        peaks=peaks,
    )
