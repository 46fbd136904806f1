"""Routine analysis of the `impedance` table: lin-KK -> features (+ DRT) -> circuit fit.

:class:`EisAnalyzer` is a pure :class:`~matlake.models.base.Featurizer`: one
spectrum row in, rows for `eis_validity`, `eis_features`, `features` (long
form), `eis_fits` and `eis_predicted` out (schemas in
:mod:`matlake.schemas.eis_analysis`).  :func:`analyze` hands it to
:func:`matlake.platform.modeling.featurize`, which reads the spectra at a
snapshot and commits every row in one activity that *used* each spectrum, so
the lineage of a fit reaches the raw file.

Record ids are :func:`~matlake.models.base.derived_record_id` of (analyzer
name, spectrum, key) with key ``validity``, ``features``, ``feature:<name>``,
``fit:<circuit>:<weighting>`` and ``predicted:<circuit>:<weighting>``; they do
not depend on the analyzer version or options.  Re-running ``analyze`` on a
spectrum therefore adds version 2, 3, ... of the same records (views show the
latest; older versions stay in ``<table>_all``), whether or not the version
or options changed - the stored ``featurizer_version`` and the activity's
parameters tell the runs apart.

Defaults: lin-KK as in impedance.py's tutorial (``fit_type='complex'``,
``add_cap=True``, c = 0.85, M <= 100); a spectrum is ``valid`` when the RMS
relative KK residual is at most ``kk_threshold`` = 1 %.  Fits use impedance.py's
unit weighting unless told otherwise, and leave out points with Im Z > 0 when the
circuit has no inductor (impedance.py's ``ignoreBelowX``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.base import Featurizer, derived_record_id
from matlake.models.eis import features as _features
from matlake.models.eis.drt import fit_drt
from matlake.models.eis.features import EisFeatures, extract_features
from matlake.models.eis.validity import lin_kk

if TYPE_CHECKING:
    from matlake.models.eis.circuits import Circuit
    from matlake.platform.lake import Lake
    from matlake.platform.modeling import FeaturizeReport

__all__ = ["EisAnalyzer", "analyze", "auto_initial_guess", "ANALYZER_NAME", "ANALYZER_VERSION"]

ANALYZER_NAME = "eis-analysis"
ANALYZER_VERSION = "3"  # bump when the science (defaults, guess, feature set) changes; 3: features v3
_PER_DECADE = 20  # density of the eis_predicted grid


def _clean(v: float | None) -> float | None:
    """None for absent or non-finite numbers (stored as null)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _top_branches(circuit: "Circuit") -> list:
    """Children of the top-level series connection (the root itself when it is not a series)."""
    from matlake.models.eis.circuits import Series

    return list(circuit.root.children) if isinstance(circuit.root, Series) else [circuit.root]


def _elements_of(node) -> list:
    from matlake.models.eis.circuits import Element

    if isinstance(node, Element):
        return [node]
    return [e for child in node.children for e in _elements_of(child)]


def auto_initial_guess(circuit: "Circuit | str", frequency_hz: np.ndarray, z: np.ndarray,
                       feats: EisFeatures | None = None) -> np.ndarray:
    """A starting point for fitting ``circuit`` to ``z`` (ohm) at ``frequency_hz`` (Hz), from the features.

    Elements in the top-level series take the spectrum's limits: R -> R_inf (ohm),
    L -> the series inductance (H), C -> the series capacitance (F).  Every other
    top-level branch (a parallel group) is one relaxation: the branches get the
    measured time constants fastest first in string order (log-spread over the band
    when there are fewer), share the polarisation resistance R0 - R_inf equally, and
    their capacitances are tau / R; CPEs start at alpha = the CPE signature's alpha
    (else 0.8); finite Warburgs at Z0 = the branch resistance, tau = 1 / (2 pi f_min).
    Values come in ``circuit.param_names`` order.
    """
    from matlake.models.eis.circuits import Element, parse_circuit

    c = parse_circuit(circuit) if isinstance(circuit, str) else circuit
    f = np.asarray(frequency_hz, float)
    zz = np.asarray(z, complex)
    if feats is None:
        feats = extract_features(f, zz)
    w_min, w_max = 2 * np.pi * f.min(), 2 * np.pi * f.max()
    re_min, re_max = float(zz.real.min()), float(zz.real.max())
    r_inf = feats.r_inf_ohm if math.isfinite(feats.r_inf_ohm) and feats.r_inf_ohm > 0 else max(re_min, 1e-12)
    r_pol = feats.r0_ohm - r_inf if math.isfinite(feats.r0_ohm) else float("nan")
    if not (math.isfinite(r_pol) and r_pol > 0):
        r_pol = max(re_max - re_min, 1e-3 * float(np.abs(zz).max()))
    alpha = feats.cpe_alpha if feats.cpe_alpha is not None and 0.3 < feats.cpe_alpha <= 1 else 0.8
    tau_diff = 1.0 / w_min

    branches = _top_branches(c)
    nested = [b for b in branches if not isinstance(b, Element)]
    taus = sorted(t for t in feats.time_constants_s if 1 / (10 * w_max) <= t <= 10 / w_min)
    if len(taus) < len(nested):
        # a CPE-like pole ladder counts as one time constant in the features; a circuit
        # that models it with several branches starts from the ladder's in-band poles
        ladder = sorted(1.0 / abs(p) for p in feats.poles_rad_s if w_min <= abs(p) <= w_max)
        if len(ladder) >= len(nested):
            taus = ladder
    if len(taus) < len(nested):
        taus = list(np.logspace(np.log10(1 / w_max), np.log10(1 / w_min), len(nested) + 2)[1:-1])
    elif len(taus) > len(nested) and nested:
        # keep the strongest-looking spread: evenly chosen among the measured ones
        idx = np.round(np.linspace(0, len(taus) - 1, len(nested))).astype(int)
        taus = [taus[i] for i in idx]

    guess: dict[str, float] = {}

    def put(e, values: Sequence[float]) -> None:
        from matlake.models.eis.circuits import ELEMENT_TYPES

        names = ELEMENT_TYPES[e.kind].parameters
        if len(names) == 1:
            guess[e.label] = float(values[0])
        else:
            for n, v in zip(names, values):
                guess[f"{e.label}_{n}"] = float(v)

    n_top_r = sum(1 for b in branches if isinstance(b, Element) and b.kind == "R") or 1
    k = 0
    for b in branches:
        if isinstance(b, Element):
            if b.kind == "R":
                put(b, [r_inf / n_top_r])
            elif b.kind == "L":
                put(b, [feats.series_inductance_h or 1e-3 * r_inf / w_max])
            elif b.kind == "C":
                put(b, [feats.series_capacitance_f or 10.0 / (w_min * float(np.abs(zz).max()))])
            elif b.kind == "CPE":
                q = feats.series_capacitance_f or 1.0 / (w_min * float(np.abs(zz).max()))
                put(b, [q, alpha])
            elif b.kind == "W":
                put(b, [max(r_pol, 1e-12) * math.sqrt(w_min)])
            else:  # Wo, Ws
                put(b, [r_pol, tau_diff])
            continue
        tau = float(taus[k])
        k += 1
        elems = _elements_of(b)
        n_res = sum(1 for e in elems if e.kind in ("R", "Wo", "Ws", "W")) or 1
        r_b = r_pol / len(nested) / n_res
        for e in elems:
            if e.kind == "R":
                put(e, [r_b])
            elif e.kind == "C":
                put(e, [tau / (r_b * n_res)])
            elif e.kind == "CPE":
                put(e, [tau**alpha / (r_b * n_res), alpha])
            elif e.kind == "L":
                put(e, [tau * r_b])
            elif e.kind == "W":
                put(e, [r_b * math.sqrt(1 / tau)])
            else:  # Wo, Ws
                put(e, [r_b, max(tau_diff, tau)])
    return np.array([guess[n] for n in c.param_names], float)


@lru_cache(maxsize=64)
def _structure(circuit: str) -> tuple[str, int, tuple[str, ...], str, tuple[str, ...] | None]:
    """(topology, rank, unidentifiable names, method, family members or None) of a circuit string."""
    from matlake.models.eis.circuits import identifiability, parse_circuit

    c = parse_circuit(circuit)
    ident = identifiability(c)
    family = None
    if {e.kind for e in c.elements} <= {"R", "C"}:
        from matlake.models.eis.enumeration import family_of

        try:
            family = tuple(family_of(c).members)
        except ValueError:
            family = None  # degenerate network: no family (its parameters are not identifiable)
    return c.topology(), ident.rank, tuple(ident.unidentifiable), ident.method, family


class EisAnalyzer(Featurizer):
    """lin-KK, features, DRT and (optionally) a circuit fit for each `impedance` spectrum.

    Parameters
    ----------
    circuit: equivalent circuit to fit, e.g. ``"R0-p(R1,C1)-p(R2-Wo1,C2)"``; None: no fit.
    weighting: fit residual weighting, ``"unit"`` (impedance.py's), ``"modulus"`` or ``"proportional"``.
    initial: starting values (list in parameter order, or {name: value}); None: :func:`auto_initial_guess`.
    c: lin-KK mu cut-off (None: exactly ``max_m`` RC elements).
    max_m: largest number of lin-KK RC elements.
    fit_type, add_cap: lin-KK fit variant (see :func:`matlake.models.eis.validity.lin_kk`).
    kk_threshold: a spectrum is ``valid`` when its RMS relative KK residual is <= this (dimensionless).
    drt: also compute the distribution of relaxation times.
    exclude_inductive: leave out points with Im Z > 0 from the fit; ``None`` (default) does so
        only when the circuit has no inductor.
    n_starts: fit starts (see :func:`matlake.models.eis.fitting.fit_circuit`).
    """

    name = ANALYZER_NAME
    version = ANALYZER_VERSION
    subject_table = "impedance"
    input_sql = ("select record_id as subject_id, frequency, z_real, z_imag, source_name, file_format, sample "
                 "from impedance")

    def __init__(self, circuit: str | None = None, weighting: str = "unit",
                 initial: Sequence[float] | Mapping[str, float] | None = None, c: float | None = 0.85,
                 max_m: int = 100, fit_type: str = "complex", add_cap: bool = True, kk_threshold: float = 0.01,
                 drt: bool = True, exclude_inductive: bool | None = None, n_starts: int = 1) -> None:
        from matlake.models.eis.fitting import WEIGHTINGS

        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS}, found {weighting!r}")
        if not (kk_threshold > 0):
            raise ValueError(f"kk_threshold: expected a positive RMS relative residual, found {kk_threshold}")
        if circuit is not None:
            from matlake.models.eis.circuits import parse_circuit

            circuit = str(parse_circuit(circuit))  # fail now, with the parser's message, not per spectrum
        if initial is not None and not isinstance(initial, Mapping):
            initial = [float(v) for v in initial]
        elif initial is not None:
            initial = {str(k): float(v) for k, v in initial.items()}
        super().__init__(circuit=circuit, weighting=weighting, initial=initial, c=c, max_m=max_m,
                         fit_type=fit_type, add_cap=add_cap, kk_threshold=kk_threshold, drt=drt,
                         exclude_inductive=exclude_inductive, n_starts=n_starts)

    # ------------------------------------------------------------------ the pure step
    def featurize_one(self, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        p = self.params
        subject = str(row["subject_id"])
        f = np.asarray(row["frequency"], float)
        zr, zi = np.asarray(row["z_real"], float), np.asarray(row["z_imag"], float)
        if not (f.shape == zr.shape == zi.shape):
            raise ValueError(f"spectrum {subject}: expected frequency, z_real, z_imag of equal length, "
                             f"found {f.size}, {zr.size}, {zi.size}")
        z = zr + 1j * zi
        stamp = {"featurizer": self.name, "featurizer_version": self.version}
        rid = lambda key: derived_record_id(self.name, subject, key)  # noqa: E731

        kk = lin_kk(f, z, c=p["c"], max_m=p["max_m"], fit_type=p["fit_type"], add_cap=p["add_cap"])
        res = np.concatenate([kk.residuals_real, kk.residuals_imag])
        rms = float(np.sqrt(np.mean(res**2)))
        validity = {
            "record_id": rid("validity"), "subject_id": subject, "m": kk.m, "mu": _clean(kk.mu), "c": p["c"],
            "max_m": p["max_m"], "fit_type": p["fit_type"], "add_cap": p["add_cap"],
            "r_series": _clean(kk.r_series), "inductance": _clean(kk.inductance),
            "pseudo_chi_square": float(kk.pseudo_chi_square), "rms_residual": rms,
            "max_abs_residual": float(np.abs(res).max()),
            "residuals_real": [float(v) for v in kk.residuals_real],
            "residuals_imag": [float(v) for v in kk.residuals_imag],
            "threshold": p["kk_threshold"], "valid": bool(rms <= p["kk_threshold"]), **stamp,
        }

        feats = extract_features(f, z)
        wide = {
            "record_id": rid("features"), "subject_id": subject, "r0": _clean(feats.r0_ohm),
            "r0_extrapolated": feats.r0_extrapolated, "r_inf": _clean(feats.r_inf_ohm),
            "r_inf_extrapolated": feats.r_inf_extrapolated,
            "series_capacitance": _clean(feats.series_capacitance_f),
            "series_inductance": _clean(feats.series_inductance_h),
            "slope_low": _clean(feats.slope_low_per_decade), "slope_high": _clean(feats.slope_high_per_decade),
            "phase_low": _clean(feats.phase_low_deg), "phase_high": _clean(feats.phase_high_deg),
            "inductive": feats.inductive, "n_inductive_points": feats.n_inductive_points,
            "inductive_indices": list(feats.inductive_indices), "cpe_signature": feats.cpe_signature,
            "cpe_alpha": _clean(feats.cpe_alpha), "n_time_constants": feats.n_time_constants,
            "time_constants_s": [float(t) for t in feats.time_constants_s],
            "poles_real": [float(v.real) for v in feats.poles_rad_s],
            "poles_imag": [float(v.imag) for v in feats.poles_rad_s],
            "zeros_real": [float(v.real) for v in feats.zeros_rad_s],
            "zeros_imag": [float(v.imag) for v in feats.zeros_rad_s],
            "pattern": feats.pattern, "rc_interlacing": feats.rc_interlacing,
            "fit_rel_error": _clean(feats.fit_rel_error), "kk_rel_error": _clean(feats.kk_rel_error),
            "fit_reliable": feats.fit_reliable,
            "features_method": f"{_features.FEATURIZER_NAME} {_features.FEATURIZER_VERSION}", **stamp,
        }
        long_rows = [(n, v, u) for n, v, u in feats.to_rows()]
        if p["drt"]:
            d = fit_drt(f, z)
            wide.update({
                "drt_lambda": _clean(d.lam), "drt_r_pol": _clean(d.r_pol),
                "drt_tau": [float(t) for t in d.tau], "drt_gamma": [float(g) for g in d.gamma],
                "drt_peak_tau": [float(pk.tau_s) for pk in d.peaks],
                "drt_peak_r": [float(pk.resistance_ohm) for pk in d.peaks], "drt_peaks": len(d.peaks),
            })
            long_rows += [("drt_r_pol", float(d.r_pol), "ohm"), ("drt_peaks", float(len(d.peaks)), "1")]
        long_rows += [("kk_m", float(kk.m), "1"), ("kk_mu", float(kk.mu), "1"), ("kk_rms_residual", rms, "1")]
        long_form = [{
            "record_id": rid(f"feature:{n}"), "subject_id": subject, "subject_table": self.subject_table,
            "featurizer": self.name, "featurizer_version": self.version, "feature": n,
            "value": float(v), "unit": u,
        } for n, v, u in long_rows]

        out: dict[str, list[dict[str, Any]]] = {"eis_validity": [validity], "eis_features": [wide],
                                                "features": long_form}
        if p["circuit"]:
            fit_row, predicted = self._fit(subject, f, z, feats, stamp, rid)
            out["eis_fits"] = [fit_row]
            out["eis_predicted"] = [predicted] if predicted else []
        return out

    def _fit(self, subject: str, f: np.ndarray, z: np.ndarray, feats: EisFeatures, stamp: dict[str, str],
             rid) -> tuple[dict[str, Any], dict[str, Any] | None]:
        from matlake.models.eis.circuits import parse_circuit
        from matlake.models.eis.fitting import fit_circuit

        p = self.params
        c = parse_circuit(p["circuit"])
        key = f"{c}:{p['weighting']}"
        exclude = p["exclude_inductive"]
        if exclude is None:
            exclude = not any(e.kind == "L" for e in c.elements)
        keep = z.imag <= 0 if exclude else np.ones(z.size, bool)
        if keep.sum() < 3:
            raise ValueError(f"spectrum {subject}: expected at least 3 points to fit {c}, found {int(keep.sum())} "
                             "with Im Z <= 0")
        if p["initial"] is not None:
            initial = p["initial"]
            guess = (np.array([initial[n] for n in c.param_names], float) if isinstance(initial, Mapping)
                     else np.asarray(initial, float))
            source = "given"
        else:
            guess = auto_initial_guess(c, f[keep], z[keep], feats)
            source = "auto"
        fit = fit_circuit(c, f[keep], z[keep], guess, weighting=p["weighting"], n_starts=p["n_starts"])
        topology, rank, unident, method, family = _structure(str(c))
        fit_row = {
            "record_id": rid(f"fit:{key}"), "subject_id": subject, "circuit": str(c), "topology": topology,
            "weighting": p["weighting"], "parameter_names": list(fit.parameter_names),
            "parameter_units": list(fit.parameter_units), "parameter_values": [float(v) for v in fit.values],
            "parameter_stderr": [float(v) for v in fit.stderr],
            "correlation": [float(v) for v in np.asarray(fit.correlation).ravel()],
            "initial_guess": [float(v) for v in guess], "initial_guess_source": source,
            "n_params": c.n_params, "n_points": fit.n_points, "n_excluded": int((~keep).sum()),
            "chi_square": float(fit.chi_square), "reduced_chi_square": _clean(fit.reduced_chi_square),
            "aic": _clean(fit.aic), "bic": _clean(fit.bic), "success": fit.success, "message": fit.message,
            "n_identifiable": rank, "unidentifiable": list(unident), "identifiability_method": method,
            "family_circuits": list(family) if family is not None else None, **stamp,
        }
        lo, hi = np.log10(f.min()), np.log10(f.max())
        grid = np.logspace(lo, hi, max(int(np.ceil((hi - lo) * _PER_DECADE)) + 1, 2))
        zf = fit.impedance(grid)
        predicted = {
            "record_id": rid(f"predicted:{key}"), "subject_id": subject, "fit_id": fit_row["record_id"],
            "circuit": str(c), "frequency": [float(v) for v in grid], "z_real": [float(v) for v in zf.real],
            "z_imag": [float(v) for v in zf.imag], **stamp,
        }
        return fit_row, predicted


def analyze(lake: "Lake", where: str | None = None, circuit: str | None = None, *, weighting: str = "unit",
            initial: Sequence[float] | Mapping[str, float] | None = None, as_of: int | str | None = None,
            progress: bool = False, force: bool = False, **options: Any) -> "FeaturizeReport":
    """Analyse the `impedance` spectra of ``lake`` (those matching the SQL condition ``where``).

    ``where`` may use the columns subject_id, source_name, file_format and sample.
    ``options`` go to :class:`EisAnalyzer` (c, max_m, fit_type, add_cap, kk_threshold, drt,
    exclude_inductive, n_starts).  Returns the platform's featurize report (new snapshot,
    activity id, rows per table, per-spectrum errors).  Spectra already analysed by this
    analyzer version with the same options are skipped unless ``force``.
    """
    from matlake.platform.modeling import featurize

    analyzer = EisAnalyzer(circuit=circuit, weighting=weighting, initial=initial, **options)
    return featurize(lake, analyzer, as_of=as_of, where=where, progress=progress, force=force)
