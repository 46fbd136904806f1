"""Luminescence in the lake: generate emitter sets, fit their peaks, summarise the ensemble, plot a fit.

- :func:`generate_emitters` commits a seeded emitter set
  (:func:`matlake.models.spectra.luminescence.generate_emitter_set`) as
  `spectra` rows (technique 'pl', source_kind 'generated', code and
  code_parameters_json with the seed) and the planted values as
  `spectrum_labels` rows ('center_nm', 'fwhm_nm', 'line_shape'), all generated
  by one ``generate`` activity that used nothing.
- :func:`fit_peaks` runs :class:`PeakFitter` (a
  :class:`~matlake.models.base.Featurizer`) through
  :func:`matlake.platform.modeling.featurize`: one `pl_peak_fits` row per
  spectrum **and model tried**, the lowest-BIC one flagged ``chosen`` (so the
  BIC margins stay queryable); one ``featurize`` activity used every spectrum
  at its version.  Record ids are ``derived_record_id('pl-peak-fit', spectrum,
  'fit:<model>')``: a forced re-run or a new fitter version adds versions.
- :func:`emitter_statistics` reads the chosen fits (view ``pl_peak_choice``)
  joined with their spectra, filtered by a SQL condition, at one snapshot, and
  commits one `emitter_statistics` row with an ``analyze`` activity that used
  every fit record at its version; its record id is keyed by the condition, so
  the same selection over changed fits adds a version.
- :func:`plot_fit` writes a PNG of a spectrum, its fitted line and baseline,
  and the residuals.

Every function skips work already done (same version, parameters and input
versions) unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.base import Featurizer, derived_record_id
from matlake.models.spectra import luminescence as lum

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from matlake.platform.lake import Lake
    from matlake.platform.modeling import FeaturizeReport

__all__ = ["PeakFitter", "fit_peaks", "FITTER_NAME", "FITTER_VERSION", "generate_emitters", "GenerateReport",
           "emitter_statistics", "StatisticsReport", "STATISTICS_NAME", "STATISTICS_VERSION", "SELECTION_SQL",
           "plot_fit", "fit_figure", "resolve_spectrum"]

FITTER_NAME = "pl-peak-fit"
FITTER_VERSION = "1"
STATISTICS_NAME = "pl-emitter-statistics"
STATISTICS_VERSION = "1"

# The chosen fit of each spectrum (latest run) with the spectrum's descriptive columns: what --where sees.
SELECTION_SQL = ("select c.record_id as fit_id, c.version as fit_version, c.* exclude (record_id, version), "
                 "s.technique, s.sample, s.source_kind, s.source_name, s.code, s.instrument, s.measured_at "
                 "from pl_peak_choice c join spectra s on s.record_id = c.subject_id")


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class PeakFitter(Featurizer):
    """Fit one line + linear baseline with each line shape to each PL/CL spectrum (see :mod:`..luminescence`).

    Parameters
    ----------
    models: line shapes to try (default all four); the lowest BIC is chosen.
    window: (low, high) fit window in nm; None: found around each spectrum's maximum.
    auto_window_fwhm: half-width of the automatic window in estimated FWHMs.
    """

    name = FITTER_NAME
    version = FITTER_VERSION
    subject_table = "spectra"
    input_sql = ("select record_id as subject_id, technique, sample, source_kind, source_name, code, axis, "
                 "axis_unit, axis_quantity, intensity from spectra where technique in ('pl', 'cl')")

    def __init__(self, models: Sequence[str] = lum.LINE_SHAPES, window: Sequence[float] | None = None,
                 auto_window_fwhm: float = 5.0) -> None:
        models = [str(m).strip().lower().replace("-", "").replace("_", "") for m in models]
        unknown = [m for m in models if m not in lum.LINE_SHAPES]
        if unknown or not models:
            raise ValueError(f"models: expected some of {', '.join(lum.LINE_SHAPES)}, found {unknown or 'none'}")
        if window is not None:
            if len(window) != 2 or not float(window[0]) < float(window[1]):
                raise ValueError(f"window: expected two wavelengths low < high in nm, found {list(window)}")
            window = [float(window[0]), float(window[1])]
        if not (auto_window_fwhm > 0):
            raise ValueError(f"auto_window_fwhm: expected a positive number of FWHMs, found {auto_window_fwhm}")
        super().__init__(models=list(dict.fromkeys(models)), window=window, auto_window_fwhm=float(auto_window_fwhm))

    def featurize_one(self, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        from matlake.models.spectra.units import spectrum_ev_to_nm

        subject = str(row["subject_id"])
        label = f"spectrum {subject}" + (f" ({row['source_name']})" if row.get("source_name") else "")
        if row.get("axis") is None or row.get("intensity") is None:
            raise lum.PeakFitError(f"{label}: axis/intensity: expected arrays, found null")
        x = np.asarray(row["axis"], float)
        y = np.asarray(row["intensity"], float)
        unit = row.get("axis_unit")
        if unit == "eV" and row.get("axis_quantity") == "energy":
            if np.any(x <= 0) or not np.all(np.isfinite(x)):
                raise lum.PeakFitError(f"{label}: axis: expected positive finite energies in eV, found others")
            x, y = spectrum_ev_to_nm(x, y)
        elif unit != "nm":
            raise lum.PeakFitError(f"{label}: axis_unit: expected 'nm' (wavelength) or 'eV' (energy), "
                                   f"found {unit!r}")
        p = self.params
        result = lum.fit_peak(x, y, models=p["models"], window=p["window"], auto_window_fwhm=p["auto_window_fwhm"],
                              label=label)
        params_json = json.dumps(p, sort_keys=True)
        failed = json.dumps(result.failed, sort_keys=True) if result.failed else None
        rows = []
        for f in result.fits:
            baseline_at_center = f.baseline_intercept + f.baseline_slope * (f.center_nm - f.x_ref_nm)
            rows.append({
                "record_id": derived_record_id(self.name, subject, f"fit:{f.model}"), "subject_id": subject,
                "model": f.model, "chosen": f.chosen, "delta_bic": _clean(f.delta_bic),
                "models_tried": list(p["models"]), "window_min": result.window_nm[0],
                "window_max": result.window_nm[1], "window_source": result.window_source,
                "n_points": f.n_points, "n_params": f.n_params, "noise_sd": result.noise_sd,
                "center_nm": f.center_nm, "center_nm_stderr": _clean(f.center_nm_stderr),
                "fwhm_nm": f.fwhm_nm, "fwhm_nm_stderr": _clean(f.fwhm_nm_stderr),
                "center_ev": f.center_ev, "center_ev_stderr": _clean(f.center_ev_stderr),
                "fwhm_ev": f.fwhm_ev, "fwhm_ev_stderr": _clean(f.fwhm_ev_stderr),
                "height": f.height, "height_stderr": _clean(f.height_stderr), "amplitude": f.amplitude,
                "amplitude_stderr": _clean(f.amplitude_stderr), "fraction": f.fraction,
                "baseline_at_center": baseline_at_center, "baseline_slope": f.baseline_slope,
                "x_ref_nm": f.x_ref_nm, "param_names": f.param_names, "param_values": f.param_values,
                "param_stderr": [_clean(v) for v in f.param_stderr], "chi_square": _clean(f.chi_square),
                "reduced_chi_square": _clean(f.reduced_chi_square), "aic": _clean(f.aic), "bic": _clean(f.bic),
                "r_squared": _clean(f.r_squared), "success": f.success, "message": f.message, "nfev": f.nfev,
                "failed_models_json": failed, "featurizer": self.name, "featurizer_version": self.version,
                "params_json": params_json,
            })
        return {"pl_peak_fits": rows}


def fit_peaks(lake: "Lake", where: str | None = None, *, models: Sequence[str] = lum.LINE_SHAPES,
              window: Sequence[float] | None = None, auto_window_fwhm: float = 5.0,
              as_of: int | str | None = None, force: bool = False, progress: bool = False) -> "FeaturizeReport":
    """Fit the PL/CL spectra of ``lake`` matching the SQL condition ``where`` and commit `pl_peak_fits` rows.

    ``where`` sees subject_id, technique, sample, source_kind, source_name, code, axis_unit.
    Spectra already fitted by this fitter version with the same options are skipped unless ``force``.
    A spectrum that cannot be fitted is reported in the report's errors; the others are committed.
    """
    from matlake.platform.modeling import featurize

    fitter = PeakFitter(models=models, window=window, auto_window_fwhm=auto_window_fwhm)
    return featurize(lake, fitter, as_of=as_of, where=where, progress=progress, force=force)


# --------------------------------------------------------------------------- generator

@dataclass
class GenerateReport:
    snapshot: int | None  # None: the same set was generated before (nothing added)
    activity_id: str
    already: bool
    spectrum_ids: list[str]
    n_labels: int


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generate_emitters(lake: "Lake", n: int = 50, seed: int = 0, *, sample: str = "generated hBN emitters",
                      force: bool = False, **options: Any) -> GenerateReport:
    """Generate ``n`` emitter spectra with ``seed`` and commit them with their planted labels.

    ``options`` go to :func:`~matlake.models.spectra.luminescence.generate_emitter_set`
    (noise, centre/FWHM mean and SD, line_shapes, axis_nm, ...).  The same call
    again adds nothing (returns the earlier activity) unless ``force``.
    """
    from matlake.platform import catalog as cat
    from matlake.platform.derivation import commit_derived, find_same_run

    started = cat.utcnow()
    emitters = lum.generate_emitter_set(n, seed, **options)
    common = {k: v for k, v in emitters[0].parameters.items() if k != "index"}
    params = {**common, "sample": sample}
    if not force:
        done = find_same_run(lake, "generate", lum.GENERATOR_NAME, lum.GENERATOR_VERSION, params, {})
        if done:
            ids = [r[0] for r in lake.sql("select record_id from spectra where activity_id = ? order by record_id",
                                          params=[done]).fetchall()]
            return GenerateReport(None, done, True, ids, 0)
    key = f"seed={seed}:{_digest(params)}"
    spectra, labels = [], []
    for e in emitters:
        rid = derived_record_id(lum.GENERATOR_NAME, key, f"emitter:{e.index}")
        x = [float(v) for v in e.wavelength_nm]
        spectra.append({
            "record_id": rid, "technique": "pl", "axis": x, "axis_unit": "nm", "axis_quantity": "wavelength",
            "intensity": [float(v) for v in e.intensity], "intensity_unit": "counts",
            "intensity_quantity": "counts", "n_points": len(x), "axis_min": x[0], "axis_max": x[-1],
            "measurement_mode": "PL", "source_kind": "generated", "code": lum.GENERATOR_NAME,
            "code_version": lum.GENERATOR_VERSION, "code_parameters_json": lum.parameters_json(e),
            "sample": sample, "source_locator": f"emitter={e.index}",
            "metadata_json": json.dumps({"planted": {
                "center_nm": e.center_nm, "fwhm_nm": e.fwhm_nm, "line_shape": e.line_shape, "height": e.height,
                "fraction": e.fraction, "baseline_at_center": e.baseline_at_center,
                "baseline_slope": e.baseline_slope, "noise_sd": e.noise_sd}}, sort_keys=True),
        })
        for label, value, text, unit in (("center_nm", e.center_nm, None, "nm"), ("fwhm_nm", e.fwhm_nm, None, "nm"),
                                         ("line_shape", None, e.line_shape, None)):
            labels.append({"record_id": derived_record_id(lum.GENERATOR_NAME, rid, f"label:{label}"),
                           "subject_id": rid, "label": label, "value": value, "value_text": text, "unit": unit,
                           "method": "planted by generator"})
    sid, act = commit_derived(lake, kind="generate", name=lum.GENERATOR_NAME, version=lum.GENERATOR_VERSION,
                              parameters=params, used={}, rows={"spectra": spectra, "spectrum_labels": labels},
                              started_at=started, message=f"{lum.GENERATOR_NAME}: {n} emitters, seed {seed}")
    return GenerateReport(sid, act, False, [s["record_id"] for s in spectra], len(labels))


# --------------------------------------------------------------------------- ensemble statistics

@dataclass
class StatisticsReport:
    snapshot: int | None  # None: the same statistics were committed before
    activity_id: str
    already: bool
    row: dict[str, Any]


def emitter_statistics(lake: "Lake", where: str | None = None, *, name: str | None = None,
                       as_of: int | str | None = None, force: bool = False) -> StatisticsReport:
    """N, mean and SD of centre and FWHM (nm and eV) over the chosen fits matching ``where``, committed.

    ``where`` is a SQL condition over :data:`SELECTION_SQL`'s columns: every
    `pl_peak_fits` column (fit_id, model, center_nm, fwhm_nm, reduced_chi_square, ...)
    and the spectrum's technique, sample, source_kind, source_name, code, instrument,
    measured_at.  SDs are sample SDs (ddof 1): the spread over emitters.
    """
    from matlake.platform import catalog as cat
    from matlake.platform.derivation import commit_derived, find_same_run
    from matlake.platform.lake import LakeError

    started = cat.utcnow()
    sid = lake.resolve_snapshot(as_of)
    sql = SELECTION_SQL if not where else f"select * from ({SELECTION_SQL}) where {where}"
    sql += " order by subject_id"
    frame = lake.sql(sql, as_of=sid).df()
    what = f"selection {where!r}" if where else "every chosen fit"
    if len(frame) < 2:
        raise LakeError(f"emitter statistics: expected at least 2 chosen peak fits for {what} at snapshot {sid}, "
                        f"found {len(frame)} (run `matlake spectra fit-peaks` first?)")
    used = {("pl_peak_fits", str(r)): int(v) for r, v in zip(frame["fit_id"], frame["fit_version"])}
    label = name or where or "all chosen fits"
    params = {"selection_sql": sql, "where": where, "name": label, "snapshot_id": sid}
    if not force:
        done = find_same_run(lake, "analyze", STATISTICS_NAME, STATISTICS_VERSION, params, used)
        if done:
            row = lake.sql("select * from emitter_statistics_all where activity_id = ?", params=[done]).df()
            return StatisticsReport(None, done, True, row.iloc[0].to_dict())

    def sd(col: str) -> float:
        return float(np.std(frame[col].to_numpy(float), ddof=1))

    def median(col: str) -> float | None:
        v = frame[col].dropna().to_numpy(float)
        return float(np.median(v)) if v.size else None

    counts = Counter(str(m) for m in frame["model"])
    row = {
        "record_id": derived_record_id(STATISTICS_NAME, _digest({"where": where, "name": label}), "statistics"),
        "name": label, "selection_sql": sql, "where_sql": where, "snapshot_id": sid, "n_emitters": len(frame),
        "center_nm_mean": float(frame["center_nm"].mean()), "center_nm_sd": sd("center_nm"),
        "fwhm_nm_mean": float(frame["fwhm_nm"].mean()), "fwhm_nm_sd": sd("fwhm_nm"),
        "center_ev_mean": float(frame["center_ev"].mean()), "center_ev_sd": sd("center_ev"),
        "fwhm_ev_mean": float(frame["fwhm_ev"].mean()), "fwhm_ev_sd": sd("fwhm_ev"),
        "center_nm_stderr_median": median("center_nm_stderr"), "fwhm_nm_stderr_median": median("fwhm_nm_stderr"),
        "models": sorted(counts), "model_counts_json": json.dumps(dict(sorted(counts.items()))),
        "fit_ids": [str(v) for v in frame["fit_id"]], "spectrum_ids": [str(v) for v in frame["subject_id"]],
        "method": f"{STATISTICS_NAME} {STATISTICS_VERSION}: mean and sample SD (ddof 1) over chosen fits",
    }
    new_sid, act = commit_derived(lake, kind="analyze", name=STATISTICS_NAME, version=STATISTICS_VERSION,
                                  parameters=params, used=used, rows={"emitter_statistics": [row]},
                                  started_at=started, message=f"{STATISTICS_NAME}: {len(frame)} emitters ({label})")
    return StatisticsReport(new_sid, act, False, row)


# --------------------------------------------------------------------------- plot

def resolve_spectrum(lake: "Lake", ident: str, as_of: int | str | None = None) -> str:
    """The record_id of a `spectra` row given its record_id, a unique prefix (>= 6 characters) or its source name."""
    ident = ident.strip()
    rows = lake.sql("select record_id from spectra where record_id = ? or source_name = ? or "
                    "(length(?) >= 6 and starts_with(record_id, ?)) order by record_id", as_of,
                    [ident, ident, ident, ident]).fetchall()
    if not rows:
        raise ValueError(f"spectrum: expected a record_id (or unique prefix, >= 6 characters) or a source name of a "
                         f"spectra record, found no match for {ident!r}")
    if len(rows) > 1:
        raise ValueError(f"spectrum: expected one match for {ident!r}, found {len(rows)}: "
                         + ", ".join(r[0] for r in rows[:5]))
    return rows[0][0]


def fit_figure(x_nm: np.ndarray, y: np.ndarray, fit: dict[str, Any], title: str = "") -> "Figure":
    """Data, fitted line + baseline and baseline over the fit window, with a residual panel below.

    ``fit`` is a `pl_peak_fits` row (model, param_names, param_values, x_ref_nm, window_min/max, ...).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x = np.asarray(x_nm, float)
    yy = np.asarray(y, float)
    params = dict(zip(fit["param_names"], (float(v) for v in fit["param_values"])))
    inside = (x >= fit["window_min"]) & (x <= fit["window_max"])
    model_y = lum.evaluate_line(fit["model"], params, fit["x_ref_nm"], x[inside])
    base_y = params["b_intercept"] + params["b_slope"] * (x[inside] - fit["x_ref_nm"])
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax, axr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot(x, yy, ".", ms=2, color="0.4", label="data")
    ax.plot(x[inside], model_y, "-", lw=1.5, label=f"{fit['model']} + baseline")
    ax.plot(x[inside], base_y, "--", lw=0.8, label="baseline")
    ax.axvline(fit["center_nm"], color="0.6", lw=0.6)
    ax.set_ylabel("intensity")
    ax.legend(fontsize=8)
    ax.set_title(title or (f"{fit['model']}: centre {fit['center_nm']:.2f} nm ({fit['center_ev']:.4f} eV), "
                           f"FWHM {fit['fwhm_nm']:.2f} nm"), fontsize=9)
    ax.grid(alpha=0.3)
    axr.plot(x[inside], yy[inside] - model_y, ".", ms=2)
    axr.axhline(0, color="0.5", lw=0.6)
    if fit.get("noise_sd"):
        for sgn in (-2, 2):
            axr.axhline(sgn * fit["noise_sd"], color="0.6", lw=0.6, ls="--")
    axr.set_xlabel("wavelength / nm")
    axr.set_ylabel("residual")
    axr.grid(alpha=0.3)
    return fig


def plot_fit(lake: "Lake", spectrum: str, out_dir: str | Path = ".", *, model: str | None = None,
             as_of: int | str | None = None, dpi: int = 120) -> Path:
    """Write ``<name>_<id8>_peakfit.png`` for one spectrum and its chosen fit (or its ``model`` fit).

    Returns the path of the PNG."""
    from matlake.models.spectra.units import spectrum_ev_to_nm

    sid = resolve_spectrum(lake, spectrum, as_of)
    x, y, unit, quantity, name = lake.sql("select axis, intensity, axis_unit, axis_quantity, "
                                          "coalesce(source_name, sample) from spectra where record_id = ?",
                                          as_of, [sid]).fetchone()
    x, y = np.asarray(x, float), np.asarray(y, float)
    if unit == "eV" and quantity == "energy":
        x, y = spectrum_ev_to_nm(x, y)
    if model is None:
        frame = lake.sql("select * from pl_peak_choice where subject_id = ?", as_of, [sid]).df()
    else:
        frame = lake.sql("select * from pl_peak_fits where subject_id = ? and model = ?", as_of, [sid, model]).df()
    if frame.empty:
        raise ValueError(f"spectrum {sid}: expected a pl_peak_fits row{f' for model {model}' if model else ''}, "
                         "found none (run `matlake spectra fit-peaks` first)")
    fit = frame.iloc[0].to_dict()
    fig = fit_figure(x, y, fit, title=f"{name or sid}: {fit['model']}, centre {fit['center_nm']:.2f} nm, "
                                      f"FWHM {fit['fwhm_nm']:.2f} nm, red. chi2 {fit['reduced_chi_square']:.2f}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(name)).stem if name else "spectrum") + f"_{sid[:8]}"
    path = out / f"{stem}_peakfit.png"
    fig.savefig(path, dpi=dpi)
    return path
