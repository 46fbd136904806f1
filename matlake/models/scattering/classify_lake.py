"""The lake side of the speckle classifier: train on a view of simulated series, evaluate on held-out views.

- :func:`train_classifier` trains :class:`~matlake.models.scattering.classifier.SpeckleDensityModule`
  through :func:`matlake.platform.modeling.train` on the series of one simulated data set
  (its view SQL and snapshot go into ``model_versions``; the used set is the series).  The
  module reads the frames through ``Lake.chunked`` (verified per frame), given to it as a
  function, so the module itself stays free of the lake.
- :func:`evaluate_classifier` evaluates a model version on named conditions (condition ->
  data set name, e.g. ``{"mono": "test-mono", "poly-0.2": "test-poly"}``) and commits one
  ``speckle_evaluations`` row per condition with accuracy, macro-F1, per-class accuracy,
  the confusion matrix (JSON, and a PNG object), chance = 1/K, and the accuracy drop from
  the ``reference`` condition, under one ``evaluate`` activity that used the model and
  every test series at its version.  The same evaluation (model, conditions, snapshot of
  the same series versions) is skipped unless ``force``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from matlake.models.base import derived_record_id
from matlake.models.scattering.classifier import (SpeckleDensityModule, evaluate, predict_cnn,
                                                  series_view_sql)

if TYPE_CHECKING:
    from matlake.platform.lake import Lake
    from matlake.platform.modeling import ModelInfo

EVALUATION_NAME = "speckle-evaluation"
EVALUATION_VERSION = "1"


def _reader(lake: "Lake"):
    return lambda sha, index_sha: lake.chunked(sha, index_sha).read()


def train_classifier(lake: "Lake", dataset: str = "train", as_of: int | str | None = None,
                     **params: Any) -> "ModelInfo":
    """Train the speckle CNN on the series of simulated data set ``dataset`` at snapshot ``as_of``.
    ``params``: :class:`~matlake.models.scattering.classifier.TrainConfig` fields (epochs, seed, ...)."""
    from matlake.platform.errors import LakeError
    from matlake.platform.modeling import train

    sid = lake.resolve_snapshot(as_of)
    rows = lake.sql(series_view_sql(dataset), as_of=sid).arrow().to_pylist()
    if not rows:
        raise LakeError(f"no simulated disk series of data set {dataset!r} at snapshot {sid} "
                        "(run `matlake scattering simulate` first)")
    label = json.loads(rows[0]["label_json"])
    module = SpeckleDensityModule(dataset=dataset, n_classes=int(label["n_classes"]), n_grid=int(rows[0]["height"]),
                                  class_values=[float(v) for v in label["class_values"]], **params)
    return train(lake, module, as_of=sid)  # modeling.train hands it the chunk reader (load_arrays)


def evaluate_classifier(lake: "Lake", model: str, conditions: Mapping[str, str], reference: str | None = "mono",
                        as_of: int | str | None = None, force: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` (id or name) on each condition's data set; returns
    ``{"snapshot", "activity_id", "skipped", "rows"}`` (rows as committed or found)."""
    from matlake.models.scattering.plots import confusion_png
    from matlake.platform.derivation import (ActivitySpec, ObjectSpec, commit_activities, find_same_run,
                                             record_versions)
    from matlake.platform.errors import LakeError
    from matlake.platform.modeling import load_model

    info, module, net = load_model(lake, model)
    if not isinstance(module, SpeckleDensityModule):
        raise LakeError(f"model {info.name} ({info.module}) is not a speckle density classifier")
    module.frame_reader = _reader(lake)
    k = int(info.params["n_classes"])
    class_values = [float(v) for v in info.params.get("class_values", [])]
    sid = lake.resolve_snapshot(as_of)
    frames: dict[str, Any] = {}
    for cond, dataset in conditions.items():
        frame = lake.sql(series_view_sql(dataset), as_of=sid).df()
        if frame.empty:
            raise LakeError(f"condition {cond!r}: no simulated disk series of data set {dataset!r} at snapshot {sid}")
        frames[cond] = frame
    used = record_versions(lake, [("scattering_series", r) for f in frames.values() for r in f["subject_id"]], sid)
    params = {"model_id": info.model_id, "conditions": dict(conditions), "reference": reference, "snapshot_id": sid}
    if not force:
        done = find_same_run(lake, "evaluate", EVALUATION_NAME, EVALUATION_VERSION, params, used)
        if done:
            rows = lake.sql("select * from speckle_evaluations where activity_id = ? order by condition",
                            params=[done]).arrow().to_pylist()
            return {"snapshot": None, "activity_id": done, "skipped": True, "rows": rows}
    results, objects, generated = {}, [], []
    names = [f"{v:g}" for v in class_values] or [str(i) for i in range(k)]
    for cond, frame in frames.items():
        patterns, labels, mask = module.load_patterns(frame)
        pred, _ = predict_cnn(net, patterns, mask)
        m = evaluate(labels, pred, k)
        png = confusion_png(m["confusion"], names, f"{info.name} v{info.version}: {cond} "
                                                   f"(acc {m['accuracy']:.2f}, chance {m['chance']:.2f})")
        obj = ObjectSpec(data=png, media_type="image/png", name=f"{info.model_id}-{cond}-confusion.png")
        objects.append(obj)
        generated.append(("object", obj.sha256))
        label = json.loads(frame["label_json"].iloc[0])
        results[cond] = (m, obj.sha256, label, len(frame))
    ref_acc = results[reference][0]["accuracy"] if reference in results else None
    rows = []
    for cond, (m, png_sha, label, n_series) in results.items():
        rows.append({
            "record_id": derived_record_id(EVALUATION_NAME, info.model_id, cond),
            "model_id": info.model_id, "model_name": info.name, "model_version": info.version,
            "condition": cond, "dataset": conditions[cond], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "chance": m["chance"], "per_class_accuracy": m["per_class_accuracy"],
            "confusion_json": json.dumps(m["confusion"]), "class_values": class_values or None,
            "n": m["n"], "n_series": n_series, "polydispersity": label.get("polydispersity"),
            "counts": label.get("counts"), "reference_condition": reference if ref_acc is not None else None,
            "accuracy_drop": (ref_acc - m["accuracy"]) if ref_acc is not None else None,
            "data_snapshot": sid, "test_sql": series_view_sql(conditions[cond]), "confusion_png_sha256": png_sha,
        })
    act = ActivitySpec(name=EVALUATION_NAME, version=EVALUATION_VERSION, parameters=params, used=used,
                       used_entities=[("model", info.model_id)], generated_entities=generated,
                       rows={"speckle_evaluations": rows})
    snapshot = commit_activities(lake, kind="evaluate", activities=[act], objects=objects,
                                 message=f"evaluate {info.name} v{info.version} on {', '.join(conditions)}")
    aid = find_same_run(lake, "evaluate", EVALUATION_NAME, EVALUATION_VERSION, params, used)
    return {"snapshot": snapshot, "activity_id": aid, "skipped": False, "rows": rows}
