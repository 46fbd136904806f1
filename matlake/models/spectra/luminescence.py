"""Luminescence (PL/CL) peak fits and emitter sets: pure science on numpy arrays (wavelengths in nm).

**Peak fits** (:func:`fit_peak`).  One emission line plus a linear baseline is
fitted over a window, with each of four lmfit line shapes:

- ``gaussian``: lmfit ``GaussianModel`` (FWHM = 2 sqrt(2 ln 2) sigma);
- ``lorentzian``: ``LorentzianModel`` (FWHM = 2 sigma);
- ``voigt``: ``VoigtModel`` with lmfit's default constraint gamma = sigma, so
  it has the same three line parameters as the others (FWHM = 3.6013 sigma,
  lmfit's Olivero-Longbothum expression, good to 0.02 %);
- ``pseudovoigt``: ``PseudoVoigtModel`` (Lorentzian fraction in [0, 1] free,
  both components of FWHM 2 sigma).

The baseline is ``intercept + slope (lambda - x_ref)`` with ``x_ref`` the
window's first wavelength, so the intercept is a baseline level inside the data
rather than an extrapolation to lambda = 0.  Initial guesses come from the data: the baseline
from the window's two ends, the line from lmfit's ``guess`` on the data minus
that baseline.  Residuals are weighted by one noise level per spectrum,
estimated from second differences (robust MAD; white noise of SD s gives
second differences of SD sqrt(6) s), so the reduced chi-square is near 1 when
a model describes the line to within the noise.  lmfit's standard errors are
scaled by sqrt(reduced chi-square) (its default), and the model with the lowest
BIC (n ln(chi^2/n) + k ln n, lmfit's) is the one chosen.

Centre and FWHM are reported in nm (the fitted parameters) and in eV: the
fitted wavelength line (baseline removed) is converted with the Jacobian
(:func:`matlake.models.spectra.units.line_in_energy`) and its maximum and
half-maximum energies are found; their standard errors are the nm errors times
|dE/dlambda| = hc / lambda^2 (centre) and fwhm_eV / fwhm_nm (width).

The window is given (nm) or found around the maximum: the smoothed spectrum's
maximum, its half-maximum crossings above a baseline level (10th percentile)
give a width estimate w, and the window is the maximum +- ``auto_window_fwhm``
x w (5 by default), clipped to the data.

**Emitter sets** (:func:`generate_emitter_set`).  N emitters, each one line on
a linear baseline with white Gaussian noise, seeded by ``numpy.random.default_rng(seed)``:
centres ~ Normal(590.7, 2.7) nm and FWHM ~ Normal(7.1, 1.7) nm truncated below
at ``fwhm_min_nm`` (0.5 nm; redrawn), the ensemble of the hBN quantum-emitter
study; line shape uniform over the four models (pseudo-Voigt fraction ~
U(0.2, 0.8)); peak height ~ U(500, 2000) counts; baseline 20-100 counts with a
slope in +-0.5 counts/nm; noise SD = ``noise`` x peak height (1 % by default);
axis 540-640 nm in 0.1 nm steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from matlake.models.spectra.units import HC_EV_NM, line_in_energy

__all__ = ["LINE_SHAPES", "PeakFitError", "PeakFit", "PeakFitSet", "fit_peak", "find_window",
           "estimate_noise", "line_profile", "evaluate_line", "evaluate_fit", "parameters_json",
           "GeneratedEmitter", "generate_emitter_set",
           "GENERATOR_NAME", "GENERATOR_VERSION", "EMITTER_ENSEMBLE", "sigma_for_fwhm"]

LINE_SHAPES: tuple[str, ...] = ("gaussian", "lorentzian", "voigt", "pseudovoigt")
GENERATOR_NAME = "pl-emitter-generator"
GENERATOR_VERSION = "1"
EMITTER_ENSEMBLE = {"center_mean_nm": 590.7, "center_sd_nm": 2.7, "fwhm_mean_nm": 7.1, "fwhm_sd_nm": 1.7}
"""The hBN quantum-emitter ensemble: centre 590.7 +- 2.7 nm, FWHM 7.1 +- 1.7 nm (spread over emitters)."""

MIN_POINTS = 10  # fewest points in a fit window (4 line + 2 baseline parameters, and some to spare)
PEAK_SNR_MIN = 5.0  # a line must rise this many noise SDs above the baseline to be fitted


class PeakFitError(ValueError):
    """A spectrum that cannot be fitted; the message names the spectrum, the field, what was expected and found."""


def _model(shape: str):
    from lmfit.models import GaussianModel, LorentzianModel, PseudoVoigtModel, VoigtModel

    classes = {"gaussian": GaussianModel, "lorentzian": LorentzianModel, "voigt": VoigtModel,
               "pseudovoigt": PseudoVoigtModel}
    if shape not in classes:
        raise ValueError(f"line shape: expected one of {', '.join(LINE_SHAPES)}, found {shape!r}")
    return classes[shape](prefix="p_")


def _baseline_model():
    from lmfit.models import LinearModel

    return LinearModel(prefix="b_")


def line_profile(shape: str, x_nm: np.ndarray, amplitude: float, center_nm: float, sigma_nm: float,
                 fraction: float | None = None) -> np.ndarray:
    """One line (no baseline) per nm at ``x_nm``: lmfit's line shape with area ``amplitude`` (counts nm)."""
    from lmfit import lineshapes as ls

    x = np.asarray(x_nm, float)
    if shape == "gaussian":
        return ls.gaussian(x, amplitude, center_nm, sigma_nm)
    if shape == "lorentzian":
        return ls.lorentzian(x, amplitude, center_nm, sigma_nm)
    if shape == "voigt":
        return ls.voigt(x, amplitude, center_nm, sigma_nm, sigma_nm)  # gamma = sigma, as VoigtModel's default
    if shape == "pseudovoigt":
        return ls.pvoigt(x, amplitude, center_nm, sigma_nm, 0.5 if fraction is None else fraction)
    raise ValueError(f"line shape: expected one of {', '.join(LINE_SHAPES)}, found {shape!r}")


def estimate_noise(y: np.ndarray) -> float:
    """White-noise SD of ``y`` from its second differences: 1.4826 MAD / sqrt(6) (robust to the line itself)."""
    d2 = np.diff(np.asarray(y, float), 2)
    if d2.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / math.sqrt(6.0))


def _smooth(y: np.ndarray, n: int = 5) -> np.ndarray:
    if y.size < n:
        return y.copy()
    kernel = np.ones(n) / n
    return np.convolve(np.pad(y, n // 2, mode="edge"), kernel, mode="valid")


def find_window(x_nm: np.ndarray, y: np.ndarray, auto_window_fwhm: float = 5.0,
                label: str = "spectrum") -> tuple[float, float]:
    """(low, high) nm of a fit window around the strongest line (see the module docstring)."""
    ys = _smooth(y)
    base = float(np.percentile(ys, 10))
    i = int(np.argmax(ys))
    height = float(ys[i] - base)
    noise = estimate_noise(y)
    if not (height > PEAK_SNR_MIN * noise) or height <= 0:
        raise PeakFitError(f"{label}: intensity: expected a line at least {PEAK_SNR_MIN:g} noise SDs above the "
                           f"baseline, found a maximum {height:.3g} above it with noise SD {noise:.3g} (no peak)")
    half = base + height / 2
    lo = i
    while lo > 0 and ys[lo] > half:
        lo -= 1
    hi = i
    while hi < ys.size - 1 and ys[hi] > half:
        hi += 1
    width = max(float(x_nm[hi] - x_nm[lo]), 3 * float(np.median(np.diff(x_nm))))
    return (max(float(x_nm[0]), float(x_nm[i]) - auto_window_fwhm * width),
            min(float(x_nm[-1]), float(x_nm[i]) + auto_window_fwhm * width))


@dataclass
class PeakFit:
    """One line shape fitted to one spectrum; wavelengths in nm, energies in eV, intensity in the data's unit."""

    model: str
    success: bool
    message: str
    n_points: int
    n_params: int
    nfev: int
    chi_square: float
    reduced_chi_square: float
    aic: float
    bic: float
    r_squared: float
    center_nm: float
    center_nm_stderr: float | None
    fwhm_nm: float
    fwhm_nm_stderr: float | None
    height: float
    height_stderr: float | None
    amplitude: float
    amplitude_stderr: float | None
    fraction: float | None
    center_ev: float
    center_ev_stderr: float | None
    fwhm_ev: float
    fwhm_ev_stderr: float | None
    baseline_intercept: float
    baseline_slope: float
    x_ref_nm: float
    param_names: list[str]
    param_values: list[float]
    param_stderr: list[float | None]
    delta_bic: float = 0.0
    chosen: bool = False

    def params(self) -> dict[str, float]:
        return dict(zip(self.param_names, self.param_values))


@dataclass
class PeakFitSet:
    """Every model tried on one spectrum, the chosen one (lowest BIC) flagged."""

    fits: list[PeakFit]
    window_nm: tuple[float, float]
    window_source: str  # 'given' or 'auto'
    noise_sd: float
    failed: dict[str, str] = field(default_factory=dict)  # model -> why its fit failed

    @property
    def chosen(self) -> PeakFit:
        return next(f for f in self.fits if f.chosen)


def _stderr(par) -> float | None:
    v = par.stderr
    return float(v) if v is not None and math.isfinite(v) else None


def evaluate_line(model: str, params: dict[str, float], x_ref_nm: float, x_nm: np.ndarray,
                  with_baseline: bool = True) -> np.ndarray:
    """A fitted line (plus its baseline unless ``with_baseline`` is false) at ``x_nm`` (nm), from lmfit's
    parameter values (``p_*`` line, ``b_*`` baseline, in x = wavelength - ``x_ref_nm``)."""
    u = np.asarray(x_nm, float) - x_ref_nm
    line = line_profile(model, u, params["p_amplitude"], params["p_center"], params["p_sigma"],
                        params.get("p_fraction"))
    if not with_baseline:
        return line
    return line + params["b_intercept"] + params["b_slope"] * u


def evaluate_fit(fit: PeakFit, x_nm: np.ndarray, with_baseline: bool = True) -> np.ndarray:
    """The fitted line (plus baseline unless ``with_baseline`` is false) at ``x_nm`` (nm)."""
    return evaluate_line(fit.model, fit.params(), fit.x_ref_nm, x_nm, with_baseline)


def fit_peak(x_nm: Sequence[float], y: Sequence[float], *, models: Sequence[str] = LINE_SHAPES,
             window: tuple[float, float] | None = None, auto_window_fwhm: float = 5.0,
             label: str = "spectrum") -> PeakFitSet:
    """Fit one line + linear baseline with each of ``models`` over ``window`` (nm; None: found around the maximum).

    Raises :class:`PeakFitError` naming ``label`` for input that cannot be fitted
    (non-finite values, too few points, no line above the noise) or when every
    model's fit fails.
    """
    x = np.asarray(x_nm, float)
    yy = np.asarray(y, float)
    if x.ndim != 1 or x.shape != yy.shape:
        raise PeakFitError(f"{label}: intensity: expected one value per axis point ({x.size}), found {yy.size}")
    for name, arr in (("axis", x), ("intensity", yy)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise PeakFitError(f"{label}: {name}: expected finite numbers, found {int(bad.sum())} non-finite "
                               f"(NaN/inf) of {arr.size}, first at index {int(np.argmax(bad))}")
    if x.size >= 2 and np.all(np.diff(x) < 0):  # a descending axis as some spectrometers write it
        x, yy = x[::-1], yy[::-1]
    if x.size < MIN_POINTS or not np.all(np.diff(x) > 0):
        raise PeakFitError(f"{label}: axis: expected at least {MIN_POINTS} strictly increasing wavelengths, "
                           f"found {x.size} points" + ("" if x.size < 2 or np.all(np.diff(x) > 0)
                                                       else " not monotonic"))
    unknown = [m for m in models if m not in LINE_SHAPES]
    if unknown or not models:
        raise ValueError(f"models: expected some of {', '.join(LINE_SHAPES)}, found {list(models)}")
    if window is None:
        lo, hi = find_window(x, yy, auto_window_fwhm, label)
        source = "auto"
    else:
        lo, hi = float(window[0]), float(window[1])
        if not lo < hi:
            raise ValueError(f"window: expected low < high (nm), found {lo} .. {hi}")
        source = "given"
    inside = (x >= lo) & (x <= hi)
    if inside.sum() < MIN_POINTS:
        raise PeakFitError(f"{label}: axis: expected at least {MIN_POINTS} points in the window {lo:.6g}-{hi:.6g} nm, "
                           f"found {int(inside.sum())} (data cover {x[0]:.6g}-{x[-1]:.6g} nm)")
    xw, yw = x[inside], yy[inside]
    # Fit in u = lambda - (window start): MINPACK's finite-difference step is relative to each
    # parameter, so a centre parameter sitting at (or a bounds transform centred on) 0 would get a
    # step below rounding and a singular Jacobian; the centre is checked against the window instead.
    x_ref = float(xw[0])
    u = xw - x_ref
    noise = estimate_noise(yw)
    if not (noise > 0):  # noiseless (e.g. computed) data: weight by a tiny fraction of the signal range
        noise = max(1e-6 * float(np.ptp(yw)), 1e-300)
    # baseline from the window's ends, the line from lmfit's guess on what lies above it
    k = max(2, xw.size // 20)
    left, right = (float(np.mean(u[:k])), float(np.mean(yw[:k]))), (float(np.mean(u[-k:])), float(np.mean(yw[-k:])))
    slope0 = (right[1] - left[1]) / (right[0] - left[0])
    intercept0 = left[1] - slope0 * left[0]
    above = yw - (intercept0 + slope0 * u)
    if not (float(np.max(_smooth(above))) > PEAK_SNR_MIN * noise):
        raise PeakFitError(f"{label}: intensity: expected a line at least {PEAK_SNR_MIN:g} noise SDs above the "
                           f"baseline in {lo:.6g}-{hi:.6g} nm, found a maximum {float(np.max(above)):.3g} above it "
                           f"with noise SD {noise:.3g} (no peak)")
    ss_tot = float(np.sum((yw - yw.mean()) ** 2))

    fits: list[PeakFit] = []
    failed: dict[str, str] = {}
    for shape in models:
        try:
            fits.append(_fit_one(shape, u, yw, above, noise, slope0, intercept0, x_ref, ss_tot))
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            failed[shape] = f"{type(exc).__name__}: {exc}"
    if not fits:
        raise PeakFitError(f"{label}: fit: expected at least one of {', '.join(models)} to converge in "
                           f"{lo:.6g}-{hi:.6g} nm, found every fit failed: "
                           + "; ".join(f"{m}: {v}" for m, v in failed.items()))
    best = min(fits, key=lambda f: f.bic)
    for f in fits:
        f.delta_bic = float(f.bic - best.bic)
        f.chosen = f is best
    return PeakFitSet(fits, (float(xw[0]), float(xw[-1])), source, float(noise), failed)


def _fit_one(shape: str, u: np.ndarray, yw: np.ndarray, above: np.ndarray, noise: float, slope0: float,
             intercept0: float, x_ref: float, ss_tot: float) -> PeakFit:
    peak = _model(shape)
    model = peak + _baseline_model()
    params = peak.guess(above, x=u)
    params.update(_baseline_model().make_params(slope=slope0, intercept=intercept0))
    span = float(u[-1] - u[0])
    step = float(np.median(np.diff(u)))
    params["p_sigma"].set(value=min(max(params["p_sigma"].value, step), span), min=step / 10)
    params["p_amplitude"].set(min=0.0)
    result = model.fit(yw, params, x=u, weights=np.full(u.size, 1.0 / noise), method="leastsq")
    if not np.all(np.isfinite(result.best_fit)):
        raise ArithmeticError("the fitted curve is not finite")
    p = result.params
    names = list(p)
    center = float(p["p_center"].value) + x_ref
    fwhm = float(p["p_fwhm"].value)
    if not (fwhm > 0 and u[0] <= p["p_center"].value <= u[-1]):
        raise ArithmeticError(f"the fit ended at centre {center:.6g} nm, FWHM {fwhm:.4g} nm: expected a "
                              f"centre inside the window {x_ref + u[0]:.6g}-{x_ref + u[-1]:.6g} nm")
    # eV from the fitted wavelength line itself, through the Jacobian
    amp, cen, sig = (float(p[n].value) for n in ("p_amplitude", "p_center", "p_sigma"))
    frac = float(p["p_fraction"].value) if "p_fraction" in p else None
    energy = line_in_energy(lambda lam: line_profile(shape, lam - x_ref, amp, cen, sig, frac), center, fwhm)
    c_err, w_err = _stderr(p["p_center"]), _stderr(p["p_fwhm"])
    ss_res = float(np.sum((yw - result.best_fit) ** 2))
    return PeakFit(
        model=shape, success=bool(result.success), message=str(result.message), n_points=int(u.size),
        n_params=int(result.nvarys), nfev=int(result.nfev), chi_square=float(result.chisqr),
        reduced_chi_square=float(result.redchi), aic=float(result.aic), bic=float(result.bic),
        r_squared=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        center_nm=center, center_nm_stderr=c_err, fwhm_nm=fwhm, fwhm_nm_stderr=w_err,
        height=float(p["p_height"].value), height_stderr=_stderr(p["p_height"]),
        amplitude=amp, amplitude_stderr=_stderr(p["p_amplitude"]), fraction=frac,
        center_ev=energy.peak_ev, center_ev_stderr=None if c_err is None else HC_EV_NM / center**2 * c_err,
        fwhm_ev=energy.fwhm_ev, fwhm_ev_stderr=None if w_err is None else energy.fwhm_ev / fwhm * w_err,
        baseline_intercept=float(p["b_intercept"].value), baseline_slope=float(p["b_slope"].value),
        x_ref_nm=float(x_ref), param_names=names, param_values=[float(p[n].value) for n in names],
        param_stderr=[_stderr(p[n]) for n in names],
    )


# --------------------------------------------------------------------------- generator

@dataclass
class GeneratedEmitter:
    """One generated emitter spectrum with the values planted in it."""

    index: int
    wavelength_nm: np.ndarray
    intensity: np.ndarray  # counts per axis point
    center_nm: float
    fwhm_nm: float
    line_shape: str
    height: float  # counts above the baseline at the centre
    fraction: float | None  # pseudo-Voigt Lorentzian fraction
    baseline_at_center: float  # counts
    baseline_slope: float  # counts / nm
    noise_sd: float  # counts
    parameters: dict[str, Any]  # every generator input, seed and index included


def sigma_for_fwhm(shape: str, fwhm: float) -> float:
    """lmfit's sigma giving a line of FWHM ``fwhm`` (nm): the exact half-maximum width for every shape
    (pseudo-Voigt: both components have FWHM 2 sigma, whatever the fraction)."""
    if shape == "gaussian":
        return fwhm / (2 * math.sqrt(2 * math.log(2)))
    if shape in ("lorentzian", "pseudovoigt"):
        return fwhm / 2
    return fwhm / _voigt_fwhm_per_sigma()


@lru_cache(maxsize=1)
def _voigt_fwhm_per_sigma() -> float:
    """Exact FWHM / sigma of lmfit's Voigt with gamma = sigma (3.6013...), from its half-maximum points."""
    from scipy.optimize import brentq

    top = line_profile("voigt", np.array([0.0]), 1.0, 0.0, 1.0)[0]
    half = brentq(lambda x: line_profile("voigt", np.array([x]), 1.0, 0.0, 1.0)[0] - top / 2, 0.1, 10.0,
                  xtol=1e-14)
    return 2 * half


def generate_emitter_set(n: int, seed: int, *, center_mean_nm: float = 590.7, center_sd_nm: float = 2.7,
                         fwhm_mean_nm: float = 7.1, fwhm_sd_nm: float = 1.7, fwhm_min_nm: float = 0.5,
                         line_shapes: Sequence[str] = LINE_SHAPES, noise: float = 0.01,
                         axis_nm: tuple[float, float, float] = (540.0, 640.0, 0.1),
                         height_range: tuple[float, float] = (500.0, 2000.0),
                         fraction_range: tuple[float, float] = (0.2, 0.8)) -> list[GeneratedEmitter]:
    """``n`` emitter spectra (see the module docstring); the same arguments always give the same spectra.

    ``noise`` is the white-noise SD as a fraction of each line's peak height;
    ``axis_nm`` = (first, last, step) in nm.
    """
    if n < 1:
        raise ValueError(f"n: expected at least 1 emitter, found {n}")
    if not (fwhm_min_nm > 0):
        raise ValueError(f"fwhm_min_nm: expected a positive width in nm, found {fwhm_min_nm}")
    if not (noise >= 0):
        raise ValueError(f"noise: expected a non-negative fraction of the peak height, found {noise}")
    for s in line_shapes:
        if s not in LINE_SHAPES:
            raise ValueError(f"line_shapes: expected some of {', '.join(LINE_SHAPES)}, found {s!r}")
    first, last, step = axis_nm
    if not (step > 0 and last > first + step):
        raise ValueError(f"axis_nm: expected (first, last, step) with step > 0 and last > first + step, "
                         f"found {tuple(axis_nm)}")
    x = np.round(first + step * np.arange(int(round((last - first) / step)) + 1), 9)
    rng = np.random.default_rng(seed)
    common = {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": int(seed), "n": int(n),
              "center_mean_nm": center_mean_nm, "center_sd_nm": center_sd_nm, "fwhm_mean_nm": fwhm_mean_nm,
              "fwhm_sd_nm": fwhm_sd_nm, "fwhm_min_nm": fwhm_min_nm, "line_shapes": list(line_shapes),
              "noise": noise, "axis_nm": list(axis_nm), "height_range": list(height_range),
              "fraction_range": list(fraction_range)}
    out = []
    for i in range(n):
        center = float(rng.normal(center_mean_nm, center_sd_nm))
        fwhm = float(rng.normal(fwhm_mean_nm, fwhm_sd_nm))
        while fwhm < fwhm_min_nm:  # truncated normal: redraw
            fwhm = float(rng.normal(fwhm_mean_nm, fwhm_sd_nm))
        shape = str(line_shapes[int(rng.integers(len(line_shapes)))])
        fraction = float(rng.uniform(*fraction_range)) if shape == "pseudovoigt" else None
        height = float(rng.uniform(*height_range))
        base = float(rng.uniform(20.0, 100.0))
        slope = float(rng.uniform(-0.5, 0.5))
        sigma = sigma_for_fwhm(shape, fwhm)
        unit_top = float(line_profile(shape, np.array([center]), 1.0, center, sigma, fraction)[0])
        line = line_profile(shape, x, height / unit_top, center, sigma, fraction)
        noise_sd = noise * height
        y = line + base + slope * (x - center) + rng.normal(0.0, noise_sd, x.size)
        out.append(GeneratedEmitter(i, x.copy(), y, center, fwhm, shape, height, fraction, base, slope, noise_sd,
                                    {**common, "index": i}))
    return out


def parameters_json(emitter: GeneratedEmitter) -> str:
    """The generator inputs of one emitter as canonical JSON (for ``code_parameters_json``)."""
    return json.dumps(emitter.parameters, sort_keys=True)
