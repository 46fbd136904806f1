"""Shift robustness of spectra models: metric versus an energy shift of the test spectra.

The XANES featurization study's question: computed spectra and measured ones
are misaligned in energy by a few eV, so how fast does a model's accuracy fall
as the test spectra move?  For a trained model version and its featurizer
:func:`shift_curve` (pure) moves every test spectrum by ``delta`` eV
(``axis + delta``: features appear ``delta`` higher), interpolates it onto the
model's grid (:func:`~matlake.models.spectra.processing.interpolate_to_grid`),
re-featurizes it with :func:`~matlake.models.spectra.features.feature_matrix`
(the kind and parameters the model was trained on) and scores the model's
predictions against the labels: accuracy and macro-F1 for classifiers; MAE and
R^2 for regressors (plus the accuracy of the rounded value when the label is
integral, e.g. an oxidation state).

:func:`shift_test` is the lake side: it reads the model versions, the test
spectra and their labels at one snapshot, runs the curves and commits one
``spectrum_model_evaluations`` row per model and metric through
:func:`matlake.platform.derivation.commit_derived` (one ``evaluate`` activity
that *used* every test spectrum and label at its version; the model ids are in
its parameters and rows).  :func:`shift_figure` draws the curves (matplotlib,
Agg); the CLI writes it as a PNG when asked (``--png``), it is not stored in
the lake.

Re-featurizing needs the raw spectrum: models whose features were computed
from ``spectra_processed`` rows (an alignment or normalisation pipeline) are
refused rather than scored on features they were not trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matlake.models.base import derived_record_id
from matlake.models.spectra.features import feature_matrix, kind_parameters
from matlake.models.spectra.grids import BUILTIN_GRIDS, Grid, resolve_grid
from matlake.models.spectra.models import SpectraModel, classification_metrics, regression_metrics
from matlake.models.spectra.processing import interpolate_to_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from matlake.platform.lake import Lake

EVALUATION_NAME = "spectra-shift-test"
EVALUATION_VERSION = "1"
DEFAULT_SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
METRIC_UNITS = {"accuracy": "", "macro_f1": "", "r2": "", "rounded_accuracy": ""}

__all__ = ["shifted_features", "shift_curve", "shift_test", "shift_figure", "DEFAULT_SHIFTS"]


def shifted_features(axes: Sequence[np.ndarray], intensities: Sequence[np.ndarray], shift: float, kind: str,
                     grid: Grid, feature_params: dict[str, Any] | None = None) -> np.ndarray:
    """Feature matrix of the spectra moved by ``shift`` eV, on ``grid``.

    Raises :class:`~matlake.models.spectra.processing.GridCoverageError` when a
    moved spectrum no longer covers the grid (its index is in the message).
    """
    rows = []
    for i, (x, y) in enumerate(zip(axes, intensities)):
        try:
            rows.append(interpolate_to_grid(np.asarray(x, float) + shift, np.asarray(y, float), grid))
        except ValueError as exc:
            raise type(exc)(f"test spectrum {i} shifted by {shift:g} eV: {exc}") from exc
    matrix, _names, _unit = feature_matrix(kind, grid.array, np.vstack(rows), **(feature_params or {}))
    return matrix


def shift_curve(module: SpectraModel, artifact: Any, subject_ids: Sequence[str], axes: Sequence[np.ndarray],
                intensities: Sequence[np.ndarray], truth: np.ndarray, shifts: Sequence[float], grid: Grid,
                feature_params: dict[str, Any] | None = None) -> dict[str, list[float]]:
    """Metric name -> value at each shift (eV) of ``module``'s predictions on the shifted spectra."""
    truth = np.asarray(truth, dtype=float)
    out: dict[str, list[float]] = {}
    integral = bool(np.allclose(truth, np.round(truth)))
    for shift in shifts:
        x = shifted_features(axes, intensities, float(shift), module.params["featurizer"], grid, feature_params)
        frame = pd.DataFrame({"subject_id": list(subject_ids), "x": list(x)})
        pred = module.predict(artifact, frame)["value"].to_numpy(float)
        if module.classifier:
            m = classification_metrics(truth, pred, prefix="")
        else:
            m = regression_metrics(truth, pred, prefix="")
            if integral:
                m["rounded_accuracy"] = float(np.mean(np.round(pred) == truth))
        for name, value in m.items():
            if not name.startswith("baseline"):
                out.setdefault(name, []).append(float(value))
    return out


def primary_metric(curves: dict[str, list[float]]) -> str:
    """The metric a figure shows: accuracy for classifiers, MAE for regressors."""
    return "accuracy" if "accuracy" in curves else "mae"


def shift_figure(series: Sequence[dict[str, Any]], title: str = "") -> "Figure":
    """One panel per metric (accuracy, MAE): each series (``label``, ``shifts``, ``metric``, ``values``) a line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    metrics = sorted({s["metric"] for s in series})
    fig = Figure(figsize=(5.0 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for s in series:
            if s["metric"] == metric:
                ax.plot(s["shifts"], s["values"], "o-", ms=4, label=s["label"])
        ax.set_xlabel("energy shift of the test spectra / eV")
        ax.set_ylabel(metric + (f" / {s.get('unit')}" if s.get("unit") else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the lake side


def _feature_params(lake: "Lake", info: Any, kind: str, grid_name: str) -> dict[str, Any]:
    """Parameters of the feature vectors the model version was trained on (its view at its snapshot)."""
    rows = lake.sql("select distinct params_json, subject_table from spectrum_features where record_id in "
                    f"(select subject_id from ({info.view_sql}))", as_of=info.snapshot_id).fetchall()
    if not rows:
        raise ValueError(f"{info.name}: no {kind} features on {grid_name} in its training view at snapshot "
                         f"{info.snapshot_id}")
    tables = {t for _p, t in rows}
    if tables - {"spectra"}:
        raise ValueError(f"{info.name}: its features were computed from {sorted(tables)} rows; the shift test "
                         "re-featurizes raw spectra rows, so it needs features of 'spectra' rows "
                         "(matlake spectra featurize --source spectra)")
    params = {p for p, _t in rows}
    if len(params) > 1:
        raise ValueError(f"{info.name}: expected one parameter set of its {kind} features on {grid_name}, found "
                         f"{sorted(str(p) for p in params)}")
    stored = json.loads(next(iter(params)) or "{}")
    known = kind_parameters(kind)
    return {k: v for k, v in stored.items() if k in known}


def _test_set(lake: "Lake", label: str, grid: Grid, where: str | None, snapshot: int) -> pd.DataFrame:
    conds = ["s.axis_unit = ?"]
    params: list[Any] = [label, grid.unit]
    if grid.element:
        conds.append("s.element = ?")
        params.append(grid.element)
    if grid.edge:
        conds.append("s.edge = ?")
        params.append(grid.edge)
    if where:
        conds.append(f"({where})")
    sql = ("select s.record_id, s.version, s.axis, s.intensity, s.sample, s.source_kind, s.code_parameters_json, "
           "l.record_id as label_id, l.version as label_version, l.value as y from spectra s "
           "join spectrum_labels l on l.subject_id = s.record_id and l.label = ? "
           f"where {' and '.join(conds)} and l.value is not null order by s.record_id")
    return lake.sql(sql, as_of=snapshot, params=params).df()


def _generated_sets(frame: pd.DataFrame) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for kind, text in zip(frame["source_kind"], frame["code_parameters_json"]):
        if kind != "generated" or not text:
            continue
        p = json.loads(text)
        key = (p.get("generator"), p.get("kind"), p.get("dataset"), p.get("seed"))
        seen.setdefault(key, {"generator": key[0], "kind": key[1], "dataset": key[2], "seed": key[3], "n": 0})["n"] += 1
    return list(seen.values())


def shift_test(lake: "Lake", models: Sequence[str], where: str | None = None,
               shifts: Sequence[float] = DEFAULT_SHIFTS, as_of: int | str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Shift curves of ``models`` (ids or names) on the labelled test spectra matching ``where``
    (SQL over ``s``, the spectra row) at snapshot ``as_of``; commits ``spectrum_model_evaluations``.

    Returns ``{"snapshot", "activity_id", "skipped", "series"}``; ``series`` lists per model and
    metric the label, shifts and values.  Everything is checked before anything is written.
    """
    from matlake.models.spectra.processing import user_grid_rows
    from matlake.platform.derivation import commit_derived, find_same_run
    from matlake.platform.modeling import load_model

    shifts = [float(s) for s in shifts]
    if not shifts:
        raise ValueError("shift test: expected at least one shift")
    sid = lake.resolve_snapshot(as_of)
    rows: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    used: dict[tuple[str, str], int] = {}
    evaluated: list[str] = []
    for model in models:
        info, module, artifact = load_model(lake, model)
        if not isinstance(module, SpectraModel):
            raise ValueError(f"model {info.name} ({info.model_id}): expected a spectra model module, "
                             f"found {info.module}")
        if len(module.params["grids"]) != 1:
            raise ValueError(f"model {info.name} ({info.model_id}): the shift test scores single-grid models; "
                             f"this one fuses {module.params['grids']}")
        kind, grid_name = module.params["featurizer"], module.params["grids"][0]
        user_grids = [] if grid_name in BUILTIN_GRIDS else user_grid_rows(lake, sid)
        grid = resolve_grid(grid_name, user_grids)
        for g in user_grids:  # a user-defined grid is an input of the evaluation too
            if g["name"] == grid_name:
                used[("spectral_grids", str(g["record_id"]))] = int(g["version"])
        fparams = _feature_params(lake, info, kind, grid_name)
        test = _test_set(lake, info.target, grid, where, sid)
        if test.empty:
            raise ValueError(f"model {info.name} ({info.model_id}): no {grid.element or ''} {grid.edge or ''} spectra "
                             f"with label {info.target!r} match {where or 'the test set'} at snapshot {sid}")
        train_ids = {r[0] for r in lake.sql(f"select spectrum_id from ({info.view_sql})",
                                            as_of=info.snapshot_id).fetchall()}
        curves = shift_curve(module, artifact, test["record_id"].tolist(), test["axis"].tolist(),
                             test["intensity"].tolist(), test["y"].to_numpy(float), shifts, grid, fparams)
        test_set = {"where": where, "snapshot_id": sid, "label": info.target, "generated": _generated_sets(test),
                    "n_not_generated": int((test["source_kind"] != "generated").sum()),
                    "n_overlap_with_training": int(test["record_id"].isin(train_ids).sum())}
        key_text = json.dumps({"where": where, "shifts": shifts}, sort_keys=True)
        key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
        for metric, values in curves.items():
            unit = METRIC_UNITS.get(metric, module.unit)
            rows.append({
                "record_id": derived_record_id(EVALUATION_NAME, info.model_id, f"{metric}/{key}"),
                "evaluation": "shift-robustness", "model_id": info.model_id, "model_name": info.name,
                "model_version": info.version, "module": info.module, "featurizer": kind,
                "feature_params_json": json.dumps(fparams, sort_keys=True), "grid_name": grid_name,
                "target": info.target, "metric": metric, "metric_unit": unit, "perturbation": "energy_shift",
                "perturbation_unit": "eV", "perturbations": shifts, "values": values, "n_test": len(test),
                "test_set_json": json.dumps(test_set, sort_keys=True)})
            series.append({"model_id": info.model_id, "label": f"{kind} ({info.name.split('/')[0]} v{info.version})",
                           "featurizer": kind, "metric": metric, "unit": unit, "shifts": shifts, "values": values,
                           "n_test": len(test)})
        for r in test.itertuples():
            used[("spectra", r.record_id)] = int(r.version)
            used[("spectrum_labels", r.label_id)] = int(r.label_version)
        evaluated.append(info.model_id)
    params = {"models": evaluated, "where": where, "shifts": shifts, "snapshot_id": sid}
    if not force:
        done = find_same_run(lake, "evaluate", EVALUATION_NAME, EVALUATION_VERSION, params, used)
        if done:
            return {"snapshot": None, "activity_id": done, "skipped": True, "series": series}
    snapshot, activity = commit_derived(lake, kind="evaluate", name=EVALUATION_NAME, version=EVALUATION_VERSION,
                                        parameters=params, used=used, rows={"spectrum_model_evaluations": rows},
                                        message=f"shift test of {len(evaluated)} model(s) on snapshot {sid}")
    return {"snapshot": snapshot, "activity_id": activity, "skipped": False, "series": series}


def write_shift_png(series: Sequence[dict[str, Any]], path: str | Path, metrics: Sequence[str] | None = None,
                    dpi: int = 120) -> Path:
    """Write the curves of ``series`` (the primary metric of each model unless ``metrics``) as a PNG."""
    by_model: dict[str, dict[str, list[float]]] = {}
    for s in series:
        by_model.setdefault(s["model_id"], {})[s["metric"]] = s["values"]
    keep = [s for s in series
            if (s["metric"] in metrics if metrics else s["metric"] == primary_metric(by_model[s["model_id"]]))]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shift_figure(keep, title="shift robustness (generated test spectra)" if keep else "").savefig(path, dpi=dpi)
    return path
