"""Weighted complex nonlinear least-squares fitting of equivalent circuits to impedance spectra.

Residuals are ``(Z_model - Z_data) / w`` for the real and the imaginary part, stacked, with
weights ``w`` (ohm):

- ``"unit"``: w = 1 (impedance.py's default objective);
- ``"modulus"``: w = |Z_data| for both parts (impedance.py's ``weight_by_modulus``);
- ``"proportional"``: w = |Z'_data| for the real part and |Z''_data| for the imaginary part
  (Boukamp's proportional weighting; parts that are exactly zero get the median weight).

Parameters whose lower bound is >= 0 (the default: all positive, CPE alpha in (0, 1]) are
fitted as log(p), which keeps them positive and makes the problem scale-free; others are
fitted linearly with ``x_scale='jac'``. Standard errors come from the Jacobian of the
weighted residuals in the original parameters at the optimum, scaled by the residual
variance chi2 / (2N - k) (as scipy's ``curve_fit`` with ``absolute_sigma=False``).
Information criteria use the 2N real residuals: AIC = 2N ln(chi2/2N) + 2k,
BIC = 2N ln(chi2/2N) + k ln(2N), k = number of fitted parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import least_squares

from matlake.models.eis.circuits import Circuit, parse_circuit

__all__ = ["FitResult", "fit_circuit", "WEIGHTINGS"]

WEIGHTINGS = ("unit", "modulus", "proportional")
_LOG_BOX = 50.0
_HUGE = 1e150  # stands in for inf/NaN residuals at absurd trial points, which least_squares cannot take


@dataclass(frozen=True)
class FitResult:
    """Outcome of a circuit fit. Parameter units are those of ``Circuit.param_units``.

    ``stderr`` and ``correlation`` are NaN / absent for fixed parameters; ``residuals`` are
    ``Z_data - Z_fit`` (complex, ohm, unweighted); ``chi_square`` is the weighted sum of squares.
    """

    circuit: str
    parameter_names: tuple[str, ...]
    parameter_units: tuple[str, ...]
    values: np.ndarray
    stderr: np.ndarray
    correlation: np.ndarray
    fixed: tuple[bool, ...]
    weighting: str
    n_points: int
    residuals: np.ndarray
    chi_square: float
    reduced_chi_square: float
    aic: float
    bic: float
    success: bool
    message: str
    n_starts: int
    nfev: int

    @property
    def n_free(self) -> int:
        return int(len(self.fixed) - sum(self.fixed))

    def impedance(self, f: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fitted impedance (ohm) at frequencies ``f`` (Hz)."""
        return parse_circuit(self.circuit).impedance(self.values, f)

    def parameters(self) -> dict[str, float]:
        """{name: fitted value}."""
        return dict(zip(self.parameter_names, (float(v) for v in self.values)))


def _weights(z: np.ndarray, weighting: str) -> tuple[np.ndarray, np.ndarray]:
    if weighting == "unit":
        one = np.ones(len(z))
        return one, one
    if weighting == "modulus":
        m = np.abs(z)
        return m, m
    if weighting == "proportional":
        out = []
        for part in (np.abs(z.real), np.abs(z.imag)):
            # a zero part would give infinite weight to one point
            fill = np.median(part[part > 0]) if np.any(part > 0) else 1.0
            out.append(np.where(part > 0, part, fill))
        return out[0], out[1]
    raise ValueError(f"weighting: expected one of {WEIGHTINGS}, found {weighting!r}")


def _as_full_vector(name: str, circuit: Circuit, values, n_free: int, free: np.ndarray) -> np.ndarray:
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in circuit.param_names]
        if unknown:
            raise ValueError(f"{name}: unknown parameter names {unknown}; expected {list(circuit.param_names)}")
        return values
    v = np.asarray(values, float)
    if v.shape == (circuit.n_params,):
        return v
    if v.shape == (n_free,):
        full = np.full(circuit.n_params, np.nan)
        full[free] = v
        return full
    raise ValueError(
        f"{name}: expected {circuit.n_params} values {list(circuit.param_names)} "
        f"(or {n_free} for the free ones), found shape {v.shape}"
    )


def fit_circuit(
    circuit: Circuit | str,
    f: Sequence[float] | np.ndarray,
    z: Sequence[complex] | np.ndarray,
    initial_guess: Sequence[float] | Mapping[str, float],
    *,
    weighting: str = "unit",
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    fixed: Mapping[str, float] | None = None,
    n_starts: int = 1,
    spread: float = 1.0,
    seed: int = 0,
    max_nfev: int | None = None,
) -> FitResult:
    """Fit ``circuit`` to impedances ``z`` (ohm) measured at frequencies ``f`` (Hz).

    ``initial_guess``: all parameters (in ``circuit.param_names`` order, or a dict), or only the
    free ones when ``fixed`` is given. ``fixed``: {name: value} held constant. ``bounds``:
    (lower, upper) over all parameters; default positive with CPE alpha in (0, 1].
    ``n_starts`` > 1 adds starts whose free parameters are the initial guess times
    10^U(-spread, spread) (log-uniform, seeded by ``seed``; linear parameters are shifted by
    spread * |value| instead); the start with the lowest chi-square wins.
    """
    c = parse_circuit(circuit) if isinstance(circuit, str) else circuit
    f = np.asarray(f, float)
    z = np.asarray(z, complex)
    if f.ndim != 1 or z.shape != f.shape:
        raise ValueError(f"f, z: expected 1-D arrays of equal length, found shapes {f.shape} and {z.shape}")
    if len(f) == 0 or np.any(f <= 0) or not np.all(np.isfinite(f)):
        raise ValueError("f: expected positive finite frequencies in Hz")
    if not np.all(np.isfinite(z)):
        raise ValueError("z: expected finite impedances, found NaN or inf")
    if n_starts < 1:
        raise ValueError(f"n_starts: expected >= 1, found {n_starts}")

    fixed = dict(fixed or {})
    unknown = [k for k in fixed if k not in c.param_names]
    if unknown:
        raise ValueError(f"fixed: unknown parameter names {unknown}; expected names from {list(c.param_names)}")
    is_fixed = np.array([n in fixed for n in c.param_names])
    free = ~is_fixed
    n_free = int(free.sum())
    if n_free == 0:
        raise ValueError("fixed: every parameter is fixed; nothing to fit")

    guess = _as_full_vector("initial_guess", c, initial_guess, n_free, free)
    if isinstance(guess, Mapping):
        guess = np.array([fixed.get(n, guess.get(n, np.nan)) for n in c.param_names], float)
    guess = np.array(guess, float)
    for i, n in enumerate(c.param_names):
        if n in fixed:
            guess[i] = fixed[n]
    if not np.all(np.isfinite(guess)):
        missing = [n for n, g in zip(c.param_names, guess) if not np.isfinite(g)]
        raise ValueError(f"initial_guess: expected finite values for every free parameter, missing {missing}")

    lo, hi = c.default_bounds if bounds is None else (np.asarray(bounds[0], float), np.asarray(bounds[1], float))
    if lo.shape != (c.n_params,) or hi.shape != (c.n_params,):
        raise ValueError(f"bounds: expected two sequences of {c.n_params} values, found shapes {lo.shape}, {hi.shape}")
    if np.any(lo >= hi):
        raise ValueError(f"bounds: expected lower < upper, found {[(float(a), float(b)) for a, b in zip(lo, hi)]}")

    w_re, w_im = _weights(z, weighting)
    log_mask = lo >= 0  # positive parameters are fitted as log(p)
    fr_log = log_mask[free]

    g_free = guess[free]
    if np.any(g_free[fr_log] <= 0):
        bad = [n for n, v, m in zip(np.array(c.param_names)[free], g_free, fr_log) if m and v <= 0]
        raise ValueError(f"initial_guess: expected positive values for positive parameters, found <= 0 for {bad}")

    def to_x(p_free: np.ndarray) -> np.ndarray:
        return np.where(fr_log, np.log(np.where(fr_log, p_free, 1.0)), p_free)

    def to_p(x: np.ndarray) -> np.ndarray:
        p = guess.copy()
        p[free] = np.where(fr_log, np.exp(np.where(fr_log, x, 0.0)), x)
        return p

    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf wanted; log(<0) is discarded
        x_lo = np.where(fr_log, np.log(lo[free]), lo[free])
        x_hi = np.where(fr_log, np.log(hi[free]), hi[free])
    # keep log-parameters within e^50 (~5e21) of the guess so that exp() never overflows
    x_guess = to_x(g_free)
    x_lo = np.where(fr_log, np.maximum(x_lo, x_guess - _LOG_BOX), x_lo)
    x_hi = np.where(fr_log, np.minimum(x_hi, x_guess + _LOG_BOX), x_hi)

    def clip_inside(x: np.ndarray) -> np.ndarray:
        # least_squares needs a strictly feasible start; alpha = 1 sits on its bound
        width = np.where(np.isfinite(x_hi - x_lo), x_hi - x_lo, 1.0)
        margin = 1e-6 * np.minimum(width, 1.0)
        return np.clip(x, x_lo + margin, x_hi - margin)

    def residual(x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            zm = c.impedance(to_p(x), f)
        d = zm - z
        out = np.concatenate([d.real / w_re, d.imag / w_im])
        return np.nan_to_num(out, nan=_HUGE, posinf=_HUGE, neginf=-_HUGE)

    def jac(x: np.ndarray) -> np.ndarray:
        p = to_p(x)
        with np.errstate(all="ignore"):
            _, dz = c.impedance_jacobian(p, f)
        dz = dz[:, free] * np.where(fr_log, p[free], 1.0)[None, :]
        out = np.vstack([dz.real / w_re[:, None], dz.imag / w_im[:, None]])
        return np.nan_to_num(out, nan=0.0, posinf=_HUGE, neginf=-_HUGE)

    rng = np.random.default_rng(seed)
    starts = [to_x(g_free)]
    for _ in range(n_starts - 1):
        u = rng.uniform(-spread, spread, n_free)
        lin = g_free + u * spread * np.abs(g_free)
        starts.append(np.where(fr_log, to_x(g_free) + u * np.log(10.0), lin))

    best = None
    nfev = 0
    for x0 in starts:
        sol = least_squares(
            residual,
            clip_inside(x0),
            jac=jac,
            bounds=(x_lo, x_hi),
            method="trf",
            x_scale=np.where(fr_log, 1.0, np.maximum(np.abs(x0), 1e-12)),
            ftol=1e-14,
            xtol=1e-14,
            gtol=1e-14,
            max_nfev=max_nfev or 200 * (n_free + 1),
        )
        nfev += sol.nfev
        if best is None or sol.cost < best.cost:
            best = sol

    p = to_p(best.x)
    r = residual(best.x)
    chi2 = float(r @ r)
    n_obs = 2 * len(f)
    dof = n_obs - n_free
    _, dz = c.impedance_jacobian(p, f)
    jw = np.vstack([dz[:, free].real / w_re[:, None], dz[:, free].imag / w_im[:, None]])
    stderr = np.full(c.n_params, np.nan)
    corr = np.full((c.n_params, c.n_params), np.nan)
    if dof > 0:
        # pseudo-inverse: a singular J^T J (unidentifiable parameters) gives huge, not failing, errors
        cov = np.linalg.pinv(jw.T @ jw) * (chi2 / dof)
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        stderr[free] = sd
        with np.errstate(invalid="ignore", divide="ignore"):
            sub = cov / np.outer(sd, sd)
        idx = np.flatnonzero(free)
        corr[np.ix_(idx, idx)] = sub
    mean_sq = chi2 / n_obs if chi2 > 0 else np.finfo(float).tiny
    aic = n_obs * np.log(mean_sq) + 2 * n_free
    bic = n_obs * np.log(mean_sq) + n_free * np.log(n_obs)
    return FitResult(
        circuit=str(c),
        parameter_names=c.param_names,
        parameter_units=c.param_units,
        values=p,
        stderr=stderr,
        correlation=corr,
        fixed=tuple(bool(b) for b in is_fixed),
        weighting=weighting,
        n_points=len(f),
        residuals=z - c.impedance(p, f),
        chi_square=chi2,
        reduced_chi_square=chi2 / dof if dof > 0 else float("nan"),
        aic=float(aic),
        bic=float(bic),
        success=bool(best.success),
        message=str(best.message),
        n_starts=len(starts),
        nfev=int(nfev),
    )
