"""Linear Kramers–Kronig validity test (lin-KK) for impedance spectra.

Method: Schönleber, Klotz, Ivers-Tiffée, "A Method for Improving the Robustness
of linear Kramers-Kronig Validity Tests", Electrochim. Acta 131 (2014) 20–27.

A spectrum is KK-consistent when a circuit of series R, M RC elements with fixed,
log-spaced time constants (and series L, optionally series C) reproduces it.
Only the element values enter linearly, so each fit is one linear least-squares
problem.  M is raised from 1 until the under/over-fit measure

    mu = 1 - sum(|R_k|, R_k < 0) / sum(|R_k|, R_k >= 0)

falls below the cut-off c.  Rows are weighted by 1/|Z| (relative residuals).
mu is meant to fall from ~1 (under-fit) towards 0 as the RC elements start to
fit noise.  A *negative* mu (negative resistances outweigh the positive ones) is
outside that range: on smooth data it comes from a time-constant grid too
coarse for the spectrum (typically next to a series capacitance), not from
over-fitting, so it is not taken as a stop signal and M keeps growing.
impedance.py stops there (e.g. at M = 3 on a noise-free R-RC-C spectrum);
whenever mu >= 0 the rule is exactly impedance.py's.  ``min_m`` optionally
withholds the mu test until M reaches a minimum, e.g. one RC per decade.

Conventions follow matlake: Z = Z' + jZ'' with capacitive Z'' < 0, frequency in Hz,
omega = 2 pi f.  The defaults (fit on the real part, then series L on the
imaginary remainder; M counted from 1; time constants 1/(2 pi f_max) ...
1/(2 pi f_min)) are the ones documented by impedance.py's ``linKK`` so that
the numbers agree with it; ``fit_type="complex"`` is Schönleber's Eq. 14.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

FitType = Literal["real", "imag", "complex"]

__all__ = ["LinKKResult", "lin_kk", "time_constants", "check_spectrum"]


def check_spectrum(frequency_hz: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a spectrum; raise ValueError naming the bad field."""
    f = np.asarray(frequency_hz, dtype=float)
    zz = np.asarray(z)
    if f.ndim != 1:
        raise ValueError(f"frequency_hz: expected a 1-D array, found shape {f.shape}")
    if zz.shape != f.shape:
        raise ValueError(
            f"z: expected the same shape as frequency_hz {f.shape}, found {zz.shape}"
        )
    if not np.iscomplexobj(zz):
        raise ValueError(f"z: expected complex impedance values, found dtype {zz.dtype}")
    zz = zz.astype(complex)
    if f.size < 3:
        raise ValueError(f"frequency_hz: expected at least 3 points, found {f.size}")
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError("frequency_hz: expected finite values > 0 Hz, found zero, negative or NaN")
    if not np.all(np.isfinite(zz)):
        raise ValueError("z: expected finite values, found NaN or inf")
    if np.any(zz == 0):
        raise ValueError("z: expected non-zero impedance at every point, found Z = 0")
    if np.unique(f).size != f.size:
        raise ValueError("frequency_hz: expected distinct frequencies, found duplicates")
    return f, zz


def time_constants(frequency_hz: np.ndarray, m: int) -> np.ndarray:
    """M time constants (s), log-spaced from 1/(2 pi f_max) to 1/(2 pi f_min)."""
    if m < 1:
        raise ValueError(f"m: expected a number of RC elements >= 1, found {m}")
    f = np.asarray(frequency_hz, dtype=float)
    t_min = 1.0 / (2 * np.pi * f.max())
    t_max = 1.0 / (2 * np.pi * f.min())
    if m == 1:
        return np.array([t_min])
    return np.logspace(np.log10(t_min), np.log10(t_max), m)


@dataclass
class LinKKResult:
    """Outcome of a lin-KK test.

    Attributes: ``m`` RC elements with time constants ``tau`` (s) and resistances
    ``resistances`` (Ohm); ``r_series`` (Ohm), ``inductance`` (H), ``capacitance``
    (F, None when not fitted); ``mu`` (dimensionless); ``z_fit`` (Ohm, complex);
    ``residuals_real``/``residuals_imag`` = (Z - Z_fit)/|Z| per point;
    ``pseudo_chi_square`` = sum of both squared relative residuals.
    """

    m: int
    mu: float
    tau: np.ndarray
    resistances: np.ndarray
    r_series: float
    inductance: float
    capacitance: float | None
    z_fit: np.ndarray
    residuals_real: np.ndarray
    residuals_imag: np.ndarray
    pseudo_chi_square: float
    fit_type: str
    c: float | None
    mu_history: list[float] = field(default_factory=list)

    @property
    def noise_estimate(self) -> float:
        """RMS relative residual over real and imaginary parts (dimensionless)."""
        n = self.residuals_real.size
        return float(np.sqrt(self.pseudo_chi_square / (2 * n)))

    def evaluate(self, frequency_hz: np.ndarray) -> np.ndarray:
        """Impedance (Ohm) of the fitted KK circuit at ``frequency_hz`` (Hz)."""
        w = 2 * np.pi * np.asarray(frequency_hz, dtype=float)
        z = self.r_series + 1j * w * self.inductance
        z = z + (self.resistances[None, :] / (1 + 1j * w[:, None] * self.tau[None, :])).sum(axis=1)
        if self.capacitance is not None:
            z = z - 1j / (w * self.capacitance)
        return z


def _mu(resistances: np.ndarray) -> float:
    pos = np.abs(resistances[resistances >= 0]).sum()
    neg = np.abs(resistances[resistances < 0]).sum()
    if pos == 0:
        return -np.inf  # all mass negative: maximal over-fit
    return float(1.0 - neg / pos)


def _solve(
    w: np.ndarray,
    z: np.ndarray,
    tau: np.ndarray,
    fit_type: FitType,
    add_cap: bool,
) -> tuple[float, np.ndarray, float, float]:
    """One linear fit; returns (R_series, R_k, L, 1/C)."""
    mag = np.abs(z)
    k = 1.0 / (1.0 + 1j * w[:, None] * tau[None, :])  # RC element kernels, unit R
    m = tau.size
    # columns: R_series, R_1..R_M, L, [1/C]
    n_col = m + 2 + int(add_cap)
    a_re = np.zeros((w.size, n_col))
    a_im = np.zeros((w.size, n_col))
    a_re[:, 0] = 1.0
    a_re[:, 1 : m + 1] = k.real
    a_im[:, 1 : m + 1] = k.imag
    a_im[:, m + 1] = w
    if add_cap:
        a_im[:, m + 2] = -1.0 / w
    a_re /= mag[:, None]
    a_im /= mag[:, None]
    b_re = z.real / mag
    b_im = z.imag / mag

    if fit_type == "complex":
        x = np.linalg.lstsq(np.vstack([a_re, a_im]), np.concatenate([b_re, b_im]), rcond=None)[0]
    elif fit_type == "real":
        # The real part fixes R_series and R_k; L (and 1/C) then come from the
        # imaginary remainder, as in impedance.py.
        x = np.zeros(n_col)
        x[: m + 1] = np.linalg.lstsq(a_re[:, : m + 1], b_re, rcond=None)[0]
        rest = b_im - a_im[:, 1 : m + 1] @ x[1 : m + 1]
        x[m + 1 :] = np.linalg.lstsq(a_im[:, m + 1 :], rest, rcond=None)[0]
    elif fit_type == "imag":
        x = np.zeros(n_col)
        cols = list(range(1, n_col))
        x[cols] = np.linalg.lstsq(a_im[:, cols], b_im, rcond=None)[0]
        # R_series from the real remainder with weights 1/|Z|^2 (Boukamp 1995, Eq. 7)
        z_re_model = (k.real @ x[1 : m + 1])
        wts = 1.0 / mag**2
        x[0] = float(np.sum(wts * (z.real - z_re_model)) / np.sum(wts))
    else:
        raise ValueError(f"fit_type: expected 'real', 'imag' or 'complex', found {fit_type!r}")
    inv_c = float(x[m + 2]) if add_cap else 0.0
    return float(x[0]), x[1 : m + 1], float(x[m + 1]), inv_c


def lin_kk(
    frequency_hz: np.ndarray,
    z: np.ndarray,
    c: float | None = 0.85,
    max_m: int = 50,
    fit_type: FitType = "real",
    add_cap: bool = False,
    min_m: int = 1,
) -> LinKKResult:
    """Run the lin-KK test.

    Parameters
    ----------
    frequency_hz: frequencies (Hz), any order.
    z: complex impedance (Ohm), Z' + jZ'' with capacitive Z'' < 0.
    c: mu cut-off; M grows from 1 until mu < c (at most ``max_m``).  ``None``
        fits exactly ``max_m`` elements.
    fit_type: 'real' (default, as impedance.py), 'imag' or 'complex'.
    add_cap: also fit a series capacitance (for spectra without a low-frequency
        intercept, e.g. blocking electrodes).
    min_m: the mu test applies only from M = ``min_m`` on (1: Schönleber's rule).
    """
    f, zz = check_spectrum(frequency_hz, z)
    if c is not None and not (0.0 < c <= 1.0):
        raise ValueError(f"c: expected a mu cut-off in (0, 1], found {c}")
    if max_m < 1:
        raise ValueError(f"max_m: expected >= 1, found {max_m}")
    if not (1 <= min_m <= max_m):
        raise ValueError(f"min_m: expected 1 <= min_m <= max_m = {max_m}, found {min_m}")
    w = 2 * np.pi * f
    history: list[float] = []
    if c is None:
        m = max_m
        tau = time_constants(f, m)
        sol = _solve(w, zz, tau, fit_type, add_cap)
        mu = _mu(sol[1])
        history.append(mu)
    else:
        m = 0
        while m < max_m:
            m += 1
            tau = time_constants(f, m)
            sol = _solve(w, zz, tau, fit_type, add_cap)
            mu = _mu(sol[1])
            history.append(mu)
            # mu < 0 is under-resolution, not over-fitting (see the module notes)
            if m >= min_m and 0.0 <= mu <= c:
                break
    r0, rk, ind, inv_c = sol
    cap = (1.0 / inv_c if inv_c != 0 else np.inf) if add_cap else None
    result = LinKKResult(
        m=m,
        mu=mu,
        tau=tau,
        resistances=rk,
        r_series=r0,
        inductance=ind,
        capacitance=cap,
        z_fit=np.empty(0, complex),
        residuals_real=np.empty(0),
        residuals_imag=np.empty(0),
        pseudo_chi_square=0.0,
        fit_type=fit_type,
        c=c,
        mu_history=history,
    )
    z_fit = result.evaluate(f)
    err = (zz - z_fit) / np.abs(zz)
    result.z_fit = z_fit
    result.residuals_real = err.real
    result.residuals_imag = err.imag
    result.pseudo_chi_square = float(np.sum(err.real**2 + err.imag**2))
    return result
