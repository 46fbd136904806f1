"""Circuit-free features of an impedance spectrum (numerical complex analysis).

After arXiv:2510.17835: rather than guessing an equivalent circuit, a real
rational function is fitted to Z(s) (``rational.fit_rational``) and its limits,
poles and zeros are read off:

* R0 / R_inf: Re Z at s -> 0 (with a series capacitance removed: then R0 is an
  extrapolation) and at s -> infinity;
* series capacitance C (pole at the origin, only when log|Z| falls with slope
  close to -1 per decade at the low end) and series inductance L (the s term,
  only when Im Z > 0 is actually measured at the high end);
* the order of poles (P) and zeros (Z) by distance from the origin.  For RC
  circuits they are real, negative and interlace with a pole first ("PZPZ");
  complex pairs are written lower-case ("p", "z");
* a constant-phase signature: a run of >= 3 geometrically spaced, alternating
  real poles and zeros.  Between a pole p_i and the next pole p_{i+1} the slope
  of log|Z| is -1 from p_i to the zero z_i and 0 after it, so
  alpha = log(z_i/p_i) / log(p_{i+1}/p_i) (median over the run);
* the number of distinct time constants: in-band poles, with each CPE run
  counted once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from matlake.models.eis.rational import RationalFit, fit_rational
from matlake.models.eis.validity import check_spectrum, lin_kk

__all__ = ["EisFeatures", "extract_features", "FEATURIZER_NAME", "FEATURIZER_VERSION"]

FEATURIZER_NAME = "eis.rational_features"
FEATURIZER_VERSION = "3"  # 2: limits kept in the data's support, supported time constants, fit quality flag;
# 3: near-degenerate pole clusters merged in the fit, a stray pole beyond a CPE ladder's end trimmed

_MIN_CPE_ALPHA = 0.1  # below this a pole/zero ladder is cancellation, not a CPE
_BAND = 10.0  # poles/zeros within [omega_min/_BAND, _BAND*omega_max] are "in band"
_CPE_MIN_POLES = 3
_CPE_MAX_SPACING_DEC = 1.5  # a CPE needs dense poles; distinct RC arcs are further apart
_DOUBLET_RTOL = 1e-2
_TC_BAND = 10**0.5  # a time constant counts when its pole lies within half a decade of the band
_FIT_QUALITY_RATIO = 1.5  # fit error up to this multiple of the lin-KK residual is "at the noise level"
_FIT_QUALITY_FLOOR = 2e-3  # ... or this much above it (noise-free spectra have a KK residual ~ 0)
_KK_VALID = 0.02  # RMS |Z - Z_KK|/|Z| above which the spectrum itself is not KK-consistent


@dataclass
class EisFeatures:
    """Features of one spectrum.  Units: Ohm, F, H, rad/s, s, degrees."""

    r0_ohm: float
    r0_extrapolated: bool
    r_inf_ohm: float
    r_inf_extrapolated: bool
    series_capacitance_f: float | None
    series_inductance_h: float | None
    slope_low_per_decade: float
    slope_high_per_decade: float
    phase_low_deg: float
    phase_high_deg: float
    poles_rad_s: list[complex]
    zeros_rad_s: list[complex]
    pattern: str
    rc_interlacing: bool
    inductive: bool
    n_inductive_points: int
    inductive_indices: list[int]
    cpe_signature: bool
    cpe_alpha: float | None
    n_time_constants: int
    time_constants_s: list[float]
    fit_rel_error: float
    kk_rel_error: float
    fit_reliable: bool
    fit: RationalFit | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (complex numbers as [re, im] pairs)."""
        out = asdict(self)
        out.pop("fit")
        out["poles_rad_s"] = [[float(p.real), float(p.imag)] for p in self.poles_rad_s]
        out["zeros_rad_s"] = [[float(z.real), float(z.imag)] for z in self.zeros_rad_s]
        json.dumps(out)  # fail here, not in the caller, if something is not serialisable
        return out

    def to_rows(self) -> list[tuple[str, float, str]]:
        """(name, value, unit) triples for a long-format features table.

        Booleans are 0/1; absent quantities are NaN; poles and zeros appear as
        ``pole_k_re``/``pole_k_im`` (k from 1, nearest the origin first).
        """
        nan = float("nan")

        def opt(v: float | None) -> float:
            return nan if v is None else float(v)

        rows: list[tuple[str, float, str]] = [
            ("r0", float(self.r0_ohm), "ohm"),
            ("r0_extrapolated", float(self.r0_extrapolated), "1"),
            ("r_inf", float(self.r_inf_ohm), "ohm"),
            ("r_inf_extrapolated", float(self.r_inf_extrapolated), "1"),
            ("series_capacitance", opt(self.series_capacitance_f), "F"),
            ("series_inductance", opt(self.series_inductance_h), "H"),
            ("slope_low", float(self.slope_low_per_decade), "1/decade"),
            ("slope_high", float(self.slope_high_per_decade), "1/decade"),
            ("phase_low", float(self.phase_low_deg), "deg"),
            ("phase_high", float(self.phase_high_deg), "deg"),
            ("n_poles", float(len(self.poles_rad_s)), "1"),
            ("n_zeros", float(len(self.zeros_rad_s)), "1"),
            ("rc_interlacing", float(self.rc_interlacing), "1"),
            ("inductive", float(self.inductive), "1"),
            ("n_inductive_points", float(self.n_inductive_points), "1"),
            ("cpe_signature", float(self.cpe_signature), "1"),
            ("cpe_alpha", opt(self.cpe_alpha), "1"),
            ("n_time_constants", float(self.n_time_constants), "1"),
            ("fit_rel_error", float(self.fit_rel_error), "1"),
            ("kk_rel_error", float(self.kk_rel_error), "1"),
            ("fit_reliable", float(self.fit_reliable), "1"),
        ]
        for k, p in enumerate(self.poles_rad_s, 1):
            rows += [(f"pole_{k}_re", float(p.real), "rad/s"), (f"pole_{k}_im", float(p.imag), "rad/s")]
        for k, z in enumerate(self.zeros_rad_s, 1):
            rows += [(f"zero_{k}_re", float(z.real), "rad/s"), (f"zero_{k}_im", float(z.imag), "rad/s")]
        for k, t in enumerate(self.time_constants_s, 1):
            rows.append((f"tau_{k}", float(t), "s"))
        return rows


def _end_slope(f: np.ndarray, mag: np.ndarray, low: bool) -> float:
    """d log10|Z| / d log10 f over the outermost decade (at least 3 points)."""
    lf = np.log10(f)
    sel = lf <= lf[0] + 1.0 if low else lf >= lf[-1] - 1.0
    if sel.sum() < 3:
        sel = np.zeros(f.size, bool)
        if low:
            sel[:3] = True
        else:
            sel[-3:] = True
    return float(np.polyfit(lf[sel], np.log10(mag[sel]), 1)[0])


def _upper(values: np.ndarray) -> np.ndarray:
    """One entry per real value or conjugate pair, sorted by magnitude."""
    v = values[values.imag >= 0]
    return v[np.argsort(np.abs(v), kind="stable")]


def _cpe_runs(items: list[tuple[float, str]]) -> list[list[tuple[float, str]]]:
    """Maximal runs of alternating real poles/zeros that look geometric."""
    runs: list[list[tuple[float, str]]] = []
    cur: list[tuple[float, str]] = []
    for it in items:
        if it[1] not in "PZ" or (cur and cur[-1][1] == it[1]):
            if cur:
                runs.append(cur)
            cur = [it] if it[1] in "PZ" else []
            continue
        cur.append(it)
    if cur:
        runs.append(cur)
    good = []
    for run in runs:
        run = _trim_stray_end_poles(run)
        poles = np.array([m for m, kind in run if kind == "P"])
        if poles.size < _CPE_MIN_POLES:
            continue
        spacing = np.diff(np.log10(poles))
        if spacing.max() > _CPE_MAX_SPACING_DEC:
            continue
        if spacing.std() > 0.5 * spacing.mean():
            continue
        good.append(run)
    return good


def _trim_stray_end_poles(run: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """The run without leading/trailing zeros and without stray poles at its ends.

    Noise often adds one pole a couple of decades beyond the end of a CPE's
    ladder (seen at 0.1-0.5 % noise on R-CPE spectra): a pole separated from the
    rest of the run by more than _CPE_MAX_SPACING_DEC ends the ladder, it does
    not disqualify it.  Gaps inside the run still do (checked by the caller).
    """
    def strip_zeros(r: list[tuple[float, str]]) -> list[tuple[float, str]]:
        while r and r[0][1] == "Z":
            r = r[1:]
        while r and r[-1][1] == "Z":
            r = r[:-1]
        return r

    run = strip_zeros(run)
    while True:
        poles = [m for m, kind in run if kind == "P"]
        if len(poles) <= _CPE_MIN_POLES:
            return run
        if np.log10(poles[1] / poles[0]) > _CPE_MAX_SPACING_DEC:
            run = strip_zeros(run[1:])
        elif np.log10(poles[-1] / poles[-2]) > _CPE_MAX_SPACING_DEC:
            run = strip_zeros(run[:-1])
        else:
            return run


def _hf_crossing(f: np.ndarray, zz: np.ndarray) -> float | None:
    """Re Z (Ohm) where measured Im Z turns from capacitive to inductive in the upper half of the band.

    That intercept is the measured high-frequency resistance of an inductive
    spectrum; ``f`` ascending.  None when there is no such crossing.
    """
    neg = zz.imag <= 0
    idx = np.flatnonzero(neg[:-1] & ~neg[1:])
    lf = np.log10(f)
    idx = idx[lf[idx] >= 0.5 * (lf[0] + lf[-1])]
    if idx.size == 0:
        return None
    i = int(idx[0])
    t = zz.imag[i] / (zz.imag[i] - zz.imag[i + 1])
    return float(zz.real[i] + t * (zz.real[i + 1] - zz.real[i]))


def _limits(
    f: np.ndarray, zz: np.ndarray, fit: RationalFit, has_cap: bool, noise: float
) -> tuple[float, bool, float, bool]:
    """(R0, R0 extrapolated, R_inf, R_inf extrapolated), Ohm.

    The rational function's limits s -> 0 and s -> infinity are extrapolations:
    a pole just outside the band (or noise at the band edge) can send them
    anywhere, e.g. R_inf = -13 kOhm on a spectrum whose Re Z is 0.016-0.031 Ohm.
    A limit is kept only when it is physical (>= 0) and within one measured span
    of the data's Re Z; then it is flagged extrapolated when the fit has not
    reached it inside the band.  Otherwise the in-band reading is reported: the
    measured capacitive/inductive intercept at the high end when there is one,
    else the fit's Re Z at the band edge (clipped to the measured range).
    """
    re = zz.real
    re_min, re_max = float(re.min()), float(re.max())
    span = re_max - re_min
    edges = fit(np.array([f[0], f[-1]]))
    reached = lambda lim, zedge: abs(lim - zedge.real) <= 3 * noise * abs(zedge)  # noqa: E731

    cross = _hf_crossing(f, zz)
    d = fit.limit_high
    if cross is not None:
        r_inf, r_inf_extrap = cross, False  # measured intercept: no extrapolation needed
    elif 0.0 <= d <= re_max and d >= re_min - span:
        r_inf, r_inf_extrap = d, not reached(d, edges[1])
    else:
        r_inf, r_inf_extrap = float(np.clip(edges[1].real, max(re_min, 0.0), re_max)), False

    r0 = fit.limit_low
    if max(0.0, re_min - span) <= r0 <= re_max + span:
        r0_extrap = has_cap or not reached(r0, edges[0])
    else:
        r0, r0_extrap = float(np.clip(edges[0].real, max(re_min, 0.0), re_max)), has_cap
    return float(r0), bool(r0_extrap), float(r_inf), bool(r_inf_extrap)


def _kk_rel_error(f: np.ndarray, zz: np.ndarray) -> float:
    """RMS |Z - Z_KK| / |Z| of a dense lin-KK fit: the level a stable model can reach.

    Complex fit with series C (the analyzer's variant) but a fixed M of three RC
    elements per decade (at most N/2): the mu rule can stop at an under-resolved
    M whose residual measures the grid, not the data.
    """
    decades = float(np.log10(f[-1] / f[0]))
    m = max(1, min(int(np.ceil(3 * decades)) + 1, f.size // 2))
    kk = lin_kk(f, zz, c=None, max_m=m, fit_type="complex", add_cap=True)
    return float(np.sqrt(np.mean(kk.residuals_real**2 + kk.residuals_imag**2)))


def _supported_time_constants(
    fit: RationalFit, poles: np.ndarray, w_lo: float, w_hi: float
) -> list[float]:
    """Time constants (s) that the data support, fastest first.

    Only poles within half a decade of the band count (stray poles further out
    model the continuation of a CPE beyond the data, not a relaxation that was
    measured), near-cancelling pole-zero pairs are skipped, and a cluster of
    >= 3 poles with gaps <= 1.5 decades - the geometric ladder by which a
    rational function represents a CPE - counts once, at its geometric mean.
    """
    lo, hi = w_lo / _TC_BAND, w_hi * _TC_BAND
    mags: list[float] = []
    for p in poles:
        m = float(abs(p))
        if not (lo <= m <= hi):
            continue
        if fit.zeros.size and np.min(np.abs(fit.zeros - p)) < _DOUBLET_RTOL * m:
            continue  # near-cancelling pair: no visible relaxation
        mags.append(m)
    mags.sort()
    clusters: list[list[float]] = []
    for m in mags:
        if clusters and np.log10(m / clusters[-1][-1]) <= _CPE_MAX_SPACING_DEC:
            clusters[-1].append(m)
        else:
            clusters.append([m])
    taus: list[float] = []
    for cl in clusters:
        if len(cl) >= _CPE_MIN_POLES:
            taus.append(float(1.0 / np.exp(np.mean(np.log(cl)))))
        else:
            taus += [1.0 / m for m in cl]
    return sorted(taus)


def extract_features(
    frequency_hz: np.ndarray, z: np.ndarray, fit: RationalFit | None = None
) -> EisFeatures:
    """Features of one impedance spectrum.

    ``frequency_hz`` in Hz, ``z`` complex impedance in Ohm (Z' + jZ'',
    capacitive Z'' < 0).  ``fit`` may pass a precomputed rational fit.
    """
    f_in, z_in = check_spectrum(frequency_hz, z)
    order = np.argsort(f_in)
    f, zz = f_in[order], z_in[order]
    if fit is None:
        fit = fit_rational(f, zz)
    w_lo, w_hi = 2 * np.pi * f[0], 2 * np.pi * f[-1]
    mag = np.abs(zz)

    slope_low = _end_slope(f, mag, low=True)
    slope_high = _end_slope(f, mag, low=False)
    z_ends = fit(np.array([f[0], f[-1]]))
    phase_low, phase_high = (float(v) for v in np.degrees(np.angle(z_ends)))

    # measured points with Im Z > 0, as indices into the caller's arrays
    ind_idx = sorted(int(i) for i in np.flatnonzero(z_in.imag > 0))

    # series capacitance: a pole at the origin that dominates the low end
    cap = None
    if fit.c0 > 0 and slope_low <= -0.9 and (fit.c0 / w_lo) > 0.5 * mag[0]:
        cap = 1.0 / fit.c0
    # series inductance: the s term, only with measured inductive points
    ind = None
    noise = max(fit.rel_error, 1e-4)
    if fit.e > 0 and np.any(zz.imag[-3:] > 0) and fit.e * w_hi / mag[-1] > 3 * noise:
        ind = float(fit.e)

    poles = _upper(fit.poles)
    zeros = _upper(fit.zeros)
    lo, hi = w_lo / _BAND, w_hi * _BAND
    items: list[tuple[float, str]] = []
    if fit.c0 != 0:
        items.append((0.0, "P"))
    for p in poles:
        if lo <= abs(p) <= hi:
            items.append((float(abs(p)), "P" if p.imag == 0 else "p"))
    for q in zeros:
        if abs(q) <= hi and abs(q) > 0:
            kind = "Z" if q.imag == 0 else "z"
            items.append((float(abs(q)), kind))
    items.sort(key=lambda t: t[0])
    pattern = "".join(kind for _, kind in items)
    real_lhp = all(
        (kind in "PZ") for _, kind in items
    ) and all(q.real <= 0 for q in zeros if abs(q) <= hi)
    alternating = all(a != b for a, b in zip(pattern, pattern[1:]))
    rc_interlacing = bool(pattern) and real_lhp and alternating and pattern[0] == "P"
    zero_first = bool(pattern) and pattern[0] == "Z" and real_lhp

    runs = _cpe_runs([it for it in items if it[0] > 0])
    # local exponents from the zeros of Z - R_inf, so that a series resistor
    # does not pull the zeros towards the poles at high frequency
    zeros_sub = _upper(fit.zeros_minus(fit.d))
    zeros_sub = np.sort(np.abs(zeros_sub[(zeros_sub.imag == 0) & (zeros_sub.real < 0)]))
    alphas: list[float] = []
    for run in runs:
        pm = [m for m, kind in run if kind == "P"]
        for p0, p1 in zip(pm, pm[1:]):
            between = zeros_sub[(zeros_sub > p0) & (zeros_sub < p1)]
            if between.size == 1:
                alphas.append(float(np.log(between[0] / p0) / np.log(p1 / p0)))
    cpe = bool(runs)
    # the resistor-dominated flank of a ZARC slopes towards 0; the CPE exponent
    # is the plateau of the steep side: median of the upper half
    alpha = None
    if alphas:
        srt = np.sort(alphas)
        alpha = float(np.median(srt[srt.size // 2 :]))
        if alpha < _MIN_CPE_ALPHA:
            # zeros sitting on their poles: near-cancelling pairs (noise), not a
            # constant phase; the smallest physical exponents (de Levie pores) are ~0.25
            cpe, alpha = False, None

    taus = _supported_time_constants(fit, poles, w_lo, w_hi)

    # Im Z > 0 counts as inductive only beyond the noise (R-dominated high-frequency
    # points of a capacitive spectrum scatter around Im Z = 0)
    significant = np.any(zz.imag > 3 * noise * mag)
    inductive = bool(significant) or ind is not None or zero_first
    r0, r0_extrap, r_inf, r_inf_extrap = _limits(f, zz, fit, cap is not None, noise)
    kk_rel = _kk_rel_error(f, zz)
    reliable = (
        fit.rel_error <= max(_FIT_QUALITY_RATIO * kk_rel, kk_rel + _FIT_QUALITY_FLOOR)
        and kk_rel <= _KK_VALID
    )
    return EisFeatures(
        r0_ohm=r0,
        r0_extrapolated=r0_extrap,
        r_inf_ohm=r_inf,
        r_inf_extrapolated=r_inf_extrap,
        series_capacitance_f=cap,
        series_inductance_h=ind,
        slope_low_per_decade=slope_low,
        slope_high_per_decade=slope_high,
        phase_low_deg=phase_low,
        phase_high_deg=phase_high,
        poles_rad_s=[complex(p) for p in poles],
        zeros_rad_s=[complex(q) for q in zeros],
        pattern=pattern,
        rc_interlacing=rc_interlacing,
        inductive=inductive,
        n_inductive_points=len(ind_idx),
        inductive_indices=ind_idx,
        cpe_signature=cpe,
        cpe_alpha=alpha,
        n_time_constants=len(taus),
        time_constants_s=taus,
        fit_rel_error=fit.rel_error,
        kk_rel_error=kk_rel,
        fit_reliable=bool(reliable),
        fit=fit,
    )
