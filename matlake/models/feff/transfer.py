"""The transfer experiment: models trained on computed FEFF spectra, applied to measured ones.

Steps, all through the platform and committed as records:

1. the computed Ni K spectra go through the study's ``xanes-study`` pipeline (shift by
   ``shift_ev``, 3 eV FWHM Gaussian, max-normalise, ``xanes-ni-k`` grid, 8330-8370 eV);
   the measured spectra through ``xanes-measured`` (larch-like pre-edge normalisation,
   max-normalise, same grid): ``spectra_processed`` rows;
2. each feature kind (raw intensity, derivative, CDF, Gaussians, cubic, CWT) on those rows:
   ``spectrum_features``;
3. per feature kind, random-forest oxidation-state classification and regression and
   mean Ni-O distance regression, trained on the computed spectra only, with the spectra
   module's fixed 5-fold CV (folds grouped by ``sample``, i.e. by structure): ``model_versions``
   with their ``cv_*`` metrics;
4. each model's shift-robustness curve (test spectra moved by -3..+3 eV, re-gridded and
   re-featurized, scored against the labels) as ``spectrum_model_evaluations`` rows, one
   ``evaluate`` activity that used every test spectrum and label;
5. predictions of every model on the measured spectra: ``predictions``.

``shift_ev`` defaults to -5 eV: the smallest round shift that keeps every computed spectrum
covering the grid from 8330 eV after a further +3 eV test shift (FEFF's XANES grid starts
only ~2-3 eV below its edge).  It is not an energy calibration against experiment: without
self-consistent potentials FEFF's absolute edge positions do not follow the Ni oxidation
state, and the computed edges land 0-4 eV above the Ni foil's 8333 eV.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matlake.models.base import derived_record_id

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

TRANSFER_NAME = "feff-transfer-shift"
TRANSFER_VERSION = "1"
GRID = "xanes-ni-k"
SHIFT_EV = -5.0
TEST_SHIFTS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
FEATURIZERS = ("intensity", "derivative", "cdf", "gaussians", "cubic", "cwt")
# cdf: a measured spectrum normalised by the pre-edge line dips slightly below 0 before the edge.
FEATURE_PARAMS: dict[str, dict[str, Any]] = {"cdf": {"negative": "clip"}}
TASKS = (("spectra-rf-classifier", "oxidation_state"), ("spectra-rf-regressor", "oxidation_state"),
         ("spectra-rf-regressor", "mean_ni_o_distance"))
COMPUTED = "s.source_kind = 'computed' and s.code = 'FEFF 10.0'"


def computed_pipeline(shift_ev: float = SHIFT_EV, grid: str | None = GRID):
    from matlake.models.spectra.processing import xanes_study_pipeline

    return xanes_study_pipeline(shift_ev, 3.0, grid)


def measured_pipeline(grid: str | None = GRID):
    from matlake.models.spectra.processing import Pipeline, Step

    steps = [Step("normalize", {}), Step("max_normalize")]
    if grid:
        steps.append(Step("grid", {"grid": grid}))
    return Pipeline("xanes-measured", tuple(steps))


@dataclass
class TransferReport:
    models: pd.DataFrame  # one row per featurizer x task: model id, cv metrics
    curves: list[dict[str, Any]]  # shift-robustness series (as evaluation.shift_test returns them)
    predictions: pd.DataFrame  # model predictions on the measured spectra
    evaluation_activity: str | None = None
    notes: list[str] = field(default_factory=list)


def _train(lake: "Lake", module: str, label: str, featurizer: str, n_estimators: int):
    from matlake.models.spectra.models_lake import train_spectra_model

    return train_spectra_model(lake, module, featurizer=featurizer, grids=[GRID], label=label,
                               where=COMPUTED, n_estimators=n_estimators)


def run_transfer(lake: "Lake", measured: Sequence[str | Path] = (), featurizers: Sequence[str] = FEATURIZERS,
                 shift_ev: float = SHIFT_EV, test_shifts: Sequence[float] = TEST_SHIFTS,
                 n_estimators: int = 200, tasks: Sequence[tuple[str, str]] = TASKS) -> TransferReport:
    """Run the experiment on the computed FEFF spectra in ``lake`` (``measured``: files to ingest first)."""
    from matlake.models.spectra.evaluation import shift_curve
    from matlake.models.spectra.featurize import featurize_spectra
    from matlake.models.spectra.grids import BUILTIN_GRIDS
    from matlake.models.spectra.processing import process, run_pipeline
    from matlake.platform.derivation import commit_derived
    from matlake.platform.modeling import load_model, predict

    notes: list[str] = []
    if measured:
        lake.ingest([str(p) for p in measured], progress=False)
    rep = process(lake, computed_pipeline(shift_ev), where="source_kind = 'computed' and code = 'FEFF 10.0'")
    if rep.errors:
        notes.append(f"computed processing errors: {rep.errors}")
    rep = process(lake, measured_pipeline(), where="source_kind = 'measured' and element = 'Ni' and edge = 'K' "
                                                   "and technique in ('xas', 'xanes', 'exafs')")
    if rep.errors:
        notes.append(f"measured processing errors: {rep.errors}")
    for kind in featurizers:
        rep = featurize_spectra(lake, kind, GRID, "processed", where="pipeline in ('xanes-study', 'xanes-measured')",
                                **FEATURE_PARAMS.get(kind, {}))
        if rep.errors:
            notes.append(f"{kind} featurize errors: {rep.errors}")
    sid = lake.last_snapshot()
    test = lake.sql(f"select s.record_id, s.version, s.axis, s.intensity from spectra s where {COMPUTED} "
                    "order by s.record_id", as_of=sid).df()
    pipe = computed_pipeline(shift_ev, grid=None)
    axes, ints = [], []
    for x, y in zip(test["axis"], test["intensity"]):
        out = run_pipeline(pipe, np.asarray(x, float), np.asarray(y, float))
        axes.append(out.axis)
        ints.append(out.intensity)
    labels = lake.sql("select record_id, version, subject_id, label, value from spectrum_labels "
                      "where subject_id in (select unnest(?))", as_of=sid,
                      params=[test["record_id"].tolist()]).df()
    model_rows, series, eval_rows, preds = [], [], [], []
    used: dict[tuple[str, str], int] = {("spectra", r.record_id): int(r.version) for r in test.itertuples()}
    for kind in featurizers:
        for module_name, label in tasks:
            info = _train(lake, module_name, label, kind, n_estimators)
            metrics = {k: v for k, v in info.metrics.items() if k.startswith("cv_") and k != "cv_fold_sha256"}
            model_rows.append({"featurizer": kind, "model": module_name, "label": label,
                               "model_id": info.model_id, **metrics})
            info, module, artifact = load_model(lake, info.model_id)
            lab = labels[labels.label == label].set_index("subject_id")
            keep = test["record_id"].isin(lab.index).to_numpy()
            ids = test["record_id"][keep].tolist()
            truth = lab.loc[ids, "value"].to_numpy(float)
            for r in lab.loc[ids].itertuples():
                used[("spectrum_labels", r.record_id)] = int(r.version)
            fparams = {**FEATURE_PARAMS.get(kind, {})}
            curves = shift_curve(module, artifact, ids, [a for a, k in zip(axes, keep) if k],
                                 [i for i, k in zip(ints, keep) if k], truth, list(test_shifts),
                                 BUILTIN_GRIDS[GRID], fparams or None)
            test_set = {"spectra": f"computed FEFF spectra ({COMPUTED})", "n_overlap_with_training": len(ids),
                        "note": "the training spectra themselves, moved in energy: sensitivity to a shift, "
                                "not generalisation", "pipeline": pipe.to_list(), "snapshot_id": sid}
            for metric, values in curves.items():
                unit = "" if metric in ("accuracy", "macro_f1", "r2", "rounded_accuracy") else module.unit
                eval_rows.append({
                    "record_id": derived_record_id(TRANSFER_NAME, info.model_id, metric),
                    "evaluation": "shift-robustness", "model_id": info.model_id, "model_name": info.name,
                    "model_version": info.version, "module": info.module, "featurizer": kind,
                    "feature_params_json": json.dumps(fparams, sort_keys=True), "grid_name": GRID,
                    "target": label, "metric": metric, "metric_unit": unit, "perturbation": "energy_shift",
                    "perturbation_unit": "eV", "perturbations": list(map(float, test_shifts)),
                    "values": values, "n_test": len(ids), "test_set_json": json.dumps(test_set, sort_keys=True)})
                series.append({"model_id": info.model_id, "label": f"{kind} ({module_name}, {label})",
                               "featurizer": kind, "task": f"{module_name}/{label}", "metric": metric, "unit": unit,
                               "shifts": list(map(float, test_shifts)), "values": values, "n_test": len(ids)})
            res = predict(lake, info.model_id, where="subject_id in (select record_id from spectra "
                                                     "where source_kind = 'measured')")
            if res["n"]:
                got = lake.sql("select p.subject_id, s.sample, s.source_name, p.value, p.uncertainty, p.unit "
                               "from predictions p join spectra s on s.record_id = p.subject_id "
                               "where p.model_id = ?", params=[info.model_id]).df()
                for r in got.itertuples():
                    preds.append({"featurizer": kind, "model": module_name, "label": label,
                                  "spectrum": r.source_name or r.sample, "value": r.value,
                                  "uncertainty": r.uncertainty, "unit": r.unit})
    params = {"models": [m["model_id"] for m in model_rows], "shifts": list(map(float, test_shifts)),
              "shift_ev": shift_ev, "snapshot_id": sid, "featurizers": list(featurizers)}
    _snap, activity = commit_derived(lake, kind="evaluate", name=TRANSFER_NAME, version=TRANSFER_VERSION,
                                     parameters=params, used=used, rows={"spectrum_model_evaluations": eval_rows},
                                     used_entities=[("model", m["model_id"]) for m in model_rows],
                                     message=f"FEFF transfer: shift curves of {len(model_rows)} models")
    return TransferReport(pd.DataFrame(model_rows), series, pd.DataFrame(preds), activity, notes)


def write_curves_png(series: Sequence[dict[str, Any]], path: str | Path, dpi: int = 110) -> Path:
    """One panel per task: the primary metric versus the energy shift, one line per featurizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = {"spectra-rf-classifier/oxidation_state": "accuracy",
               "spectra-rf-regressor/oxidation_state": "mae",
               "spectra-rf-regressor/mean_ni_o_distance": "mae"}
    tasks = [t for t in primary if any(s["task"] == t for s in series)]
    fig, axs = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axs[0], tasks):
        for s in series:
            if s["task"] == task and s["metric"] == primary[task]:
                ax.plot(s["shifts"], s["values"], marker="o", label=s["featurizer"])
        unit = next((s["unit"] for s in series if s["task"] == task and s["metric"] == primary[task]), "")
        ax.set_title(task.split("/", 1)[1] + (" (classifier)" if "classifier" in task else ""), fontsize=9)
        ax.set_xlabel("energy shift of the test spectra (eV)")
        ax.set_ylabel(primary[task] + (f" ({unit})" if unit else ""))
        ax.grid(alpha=0.3)
    axs[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
