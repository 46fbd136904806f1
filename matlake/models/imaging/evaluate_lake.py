"""The lake side of generated movies and ensemble evaluations (platform-side module).

:func:`generate_movie_into` commits a generated melting movie
(:mod:`matlake.models.imaging.generator`): the frame stack as ONE chunked
object (one chunk per frame and tile) referenced by one ``micrographs`` row per
frame (``technique = file_format = 'generated'``, calibration from the
generator, every parameter incl. the seed in ``metadata_json``), and each
frame's ground-truth mask as a small zlib-chunked object with a
``segmentations`` row (``mask_kind = 'ground_truth'``, annotator = the
generator), all under one ``generate`` activity that holds every parameter.
The same movie generated again is skipped unless ``force``.

:func:`evaluate` reads the frames of micrographs rows lazily (chunk by chunk,
hash-verified) with their ground-truth masks at one snapshot, runs each
*member predictor* over them (:func:`matlake.models.imaging.evaluation.evaluate_ensemble`),
and commits, under one ``evaluate`` activity that *used* every image and mask
at its version and every stored model version, one ``segmentation_evaluations``
row per model, one ``phase_fractions`` row per model and frame, and the PNG
figures as objects (also written to ``out_dir``).

``models`` may also name stored U-net ensembles (model id or ``name[:version]``):
each is loaded, hash-checked, as a
:class:`~matlake.models.imaging.segment_lake.EnsemblePredictor` on the same lake
(:func:`resolve_models`), whose member probabilities the evaluation needs; the stored
``segmentation_predictions`` maps hold only the ensemble mean and its uncertainty
maps, not the members, so they are not reused.

A member predictor is any callable ``frames (b, H, W) -> (M, C, b, H, W)``
member probabilities with attributes ``name``, ``version``, ``parameters``
(dict) and ``model_id`` (the ``model_versions`` id of a stored model, or None
for a baseline such as :class:`~matlake.models.imaging.evaluation.SmoothedThresholdEnsemble`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.base import derived_record_id
from matlake.models.imaging.generator import (
    CLASS_NAMES,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    MovieParameters,
    generate_movie,
    parameters_digest,
    parameters_from,
)

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

__all__ = ["EVALUATOR_NAME", "EVALUATOR_VERSION", "generate_movie_into", "evaluate", "resolve_models",
           "movie_image_ids",
           "FrameStack"]

EVALUATOR_NAME = "matlake-segmentation-evaluation"
EVALUATOR_VERSION = "1"
CHUNKED_MEDIA = "application/vnd.matlake.chunked-array"


def movie_image_ids(digest: str, n_frames: int) -> tuple[list[str], list[str]]:
    """Record ids of the frames and masks of the generated movie with parameter ``digest``."""
    subject = f"movie/{digest}"
    return ([derived_record_id(GENERATOR_NAME, subject, f"frame/{t}") for t in range(n_frames)],
            [derived_record_id(GENERATOR_NAME, subject, f"mask/{t}") for t in range(n_frames)])


def _current_versions(lake: "Lake", table: str, ids: list[str], snapshot: int) -> dict[str, int]:
    if not lake.files_at(snapshot, table):
        return {}
    rows = lake.sql(f"select record_id, version from {table} where record_id in (select unnest(?))",
                    as_of=snapshot, params=[ids]).fetchall()
    return {r: int(v) for r, v in rows}


def generate_movie_into(lake: "Lake", params: MovieParameters | dict[str, Any] | None = None, *,
                        force: bool = False, sample: str | None = None) -> dict[str, Any]:
    """Generate a melting movie and commit its frames and ground-truth masks.

    ``params``: :class:`~matlake.models.imaging.generator.MovieParameters` or a dict of
    overrides.  Returns ``{"snapshot", "skipped", "digest", "image_ids", "mask_ids",
    "parameters"}`` (``snapshot`` None when skipped)."""
    from matlake.arrays import default_chunks
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities, find_same_run

    p = params if isinstance(params, MovieParameters) else parameters_from(params or {})
    record = {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION,
              **{k: v for k, v in p.__dict__.items()}}
    digest = parameters_digest(record)
    image_ids, mask_ids = movie_image_ids(digest, p.n_frames)
    out = {"digest": digest, "image_ids": image_ids, "mask_ids": mask_ids, "parameters": record}
    if not force and find_same_run(lake, "generate", GENERATOR_NAME, GENERATOR_VERSION, record, {}):
        return {**out, "snapshot": None, "skipped": True}
    movie = generate_movie(p)
    assert movie.parameters == record
    snapshot = lake.resolve_snapshot()
    have = _current_versions(lake, "micrographs", image_ids, snapshot)
    stack = lake.put_chunked(movie.frames)
    sample = sample or f"generated-ice-movie-{digest}"
    objects = [ObjectSpec.stored(stack, media_type=CHUNKED_MEDIA, name=f"{sample}.frames")]
    T, H, W = movie.frames.shape
    info_shape = [T, H, W]
    chunk_shape = list(default_chunks((T, H, W)))  # what put_chunked used: one chunk per frame and tile
    images, masks = [], []
    for t in range(T):
        f = movie.frames[t].astype(np.float64)
        meta = {"generator": record, "frame_dose_e_per_px": float(movie.frame_dose[t]),
                "target_ice_fraction": float(movie.target_ice_fraction[t]),
                "true_ice_fraction": float(movie.ice_fraction[t]),
                "note": "generated movie with exact ground truth, not a measurement"}
        images.append({
            "record_id": image_ids[t], "technique": "generated", "height": H, "width": W, "n_channels": 1,
            "dtype": movie.frames.dtype.str, "frame_index": t, "n_frames": T, "stack_axis": "time",
            "pixel_size_x": p.pixel_size_nm, "pixel_unit_x": "nm", "pixel_size_y": p.pixel_size_nm,
            "pixel_unit_y": "nm", "pixel_size_nm_x": p.pixel_size_nm, "pixel_size_nm_y": p.pixel_size_nm,
            "calibration_source": "generator", "frame_time": float(movie.times[t]),
            "frame_interval": 1.0 / p.frame_rate, "exposure_time": 1.0 / p.frame_rate,
            "detector": "simulated electron counting", "sample": sample,
            "intensity_min": float(f.min()), "intensity_max": float(f.max()), "intensity_mean": float(f.mean()),
            "intensity_std": float(f.std()), "array_sha256": stack.sha256, "array_index_sha256": stack.index_sha256,
            "array_shape": info_shape, "chunk_shape": chunk_shape,
            "metadata_json": json.dumps(meta, sort_keys=True), "file_format": "generated",
            "source_locator": f"frame={t}",
        })
        mref = lake.put_chunked(movie.masks[t], codec="zlib")
        objects.append(ObjectSpec.stored(mref, media_type=CHUNKED_MEDIA, name=f"{sample}.mask{t}"))
        frac = float(movie.ice_fraction[t])
        masks.append({
            "record_id": mask_ids[t], "image_id": image_ids[t], "image_version": have.get(image_ids[t], 0) + 1,
            "mask_kind": "ground_truth", "height": H, "width": W, "class_names": list(CLASS_NAMES),
            "class_values": [0, 1], "class_fractions": [1.0 - frac, frac], "array_sha256": mref.sha256,
            "array_index_sha256": mref.index_sha256, "annotator": f"{GENERATOR_NAME} {GENERATOR_VERSION}",
            "metadata_json": json.dumps({"generator_digest": digest, "frame_index": t}),
            "file_format": "generated", "source_locator": f"frame={t}",
        })
    spec = ActivitySpec(name=GENERATOR_NAME, version=GENERATOR_VERSION, parameters=record,
                        generated_entities=[("object", o.sha256) for o in objects],
                        rows={"micrographs": images, "segmentations": masks})
    snap = commit_activities(lake, kind="generate", activities=[spec], objects=objects,
                             message=f"generate a {T}-frame melting-ice movie (seed {p.seed}, dose {p.dose} e/px); "
                                     "not measured data")
    return {**out, "snapshot": snap, "skipped": False}


class FrameStack:
    """Frames of micrographs rows (in the given order) as a (T, H, W) array read lazily:
    slicing reads only the frames asked for, each chunk hash-verified."""

    def __init__(self, lake: "Lake", rows: Sequence[dict[str, Any]], sha_key: str = "array_sha256",
                 index_key: str = "array_index_sha256", frame_key: str | None = "frame_index") -> None:
        self.lake, self.rows = lake, list(rows)
        self.sha_key, self.index_key, self.frame_key = sha_key, index_key, frame_key
        self._open: dict[str, Any] = {}
        if not self.rows:
            raise ValueError("frames: expected at least one image, found none")
        first = self._frame(0)
        self.shape = (len(self.rows), *first.shape)
        self.dtype = first.dtype
        for i, r in enumerate(self.rows):
            shape = (int(r["height"]), int(r["width"]))
            if shape != first.shape:
                raise ValueError(f"image {r.get('record_id')}: expected a {first.shape} frame like the first one, "
                                 f"found {shape}")

    def _array(self, row: dict[str, Any]):
        sha = row[self.sha_key]
        if sha not in self._open:
            self._open[sha] = self.lake.chunked(sha, row[self.index_key])
        return self._open[sha]

    def _frame(self, i: int) -> np.ndarray:
        row = self.rows[i]
        arr = self._array(row)
        if self.frame_key is None or arr.ndim == 2:
            return np.asarray(arr[...])
        return np.asarray(arr[int(row[self.frame_key])])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("FrameStack: expected a slice of frames")
        return np.stack([self._frame(i) for i in range(*key.indices(len(self.rows)))])

    def close(self) -> None:
        for a in self._open.values():
            close = getattr(a, "close", None)
            if close:
                close()
        self._open.clear()


class _MaskStack(FrameStack):
    """Ground-truth masks as class indices (mask values mapped through ``class_values``)."""

    def _frame(self, i: int) -> np.ndarray:
        row = self.rows[i]
        arr = np.asarray(self._array(row)[...])
        if arr.ndim == 3:
            arr = arr[0]
        values = list(row["class_values"])
        lut = {int(v): k for k, v in enumerate(values)}
        out = np.full(arr.shape, -1, np.int64)
        for v, k in lut.items():
            out[arr == v] = k
        if (out < 0).any():
            bad = sorted(set(np.unique(arr[out < 0]).tolist()))[:5]
            raise ValueError(f"mask {row['record_id']}: expected pixel values {values}, found {bad}")
        return out


def _select_images(lake: "Lake", image_ids: Sequence[str] | None, where: str | None,
                   snapshot: int) -> list[dict[str, Any]]:
    cols = ("record_id, version, height, width, frame_index, frame_time, array_sha256, array_index_sha256, "
            "source_name, sample")
    if image_ids is not None:
        ids = list(dict.fromkeys(image_ids))
        rows = lake.sql(f"select {cols} from micrographs where record_id in (select unnest(?))", as_of=snapshot,
                        params=[ids]).arrow().to_pylist()
        found = {r["record_id"] for r in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ValueError(f"images: expected micrographs records, found no {missing[:3]} at snapshot {snapshot}")
    elif where:
        rows = lake.sql(f"select {cols} from micrographs where {where}", as_of=snapshot).arrow().to_pylist()
    else:
        raise ValueError("evaluate: expected image_ids or a where condition, found neither")
    if not rows:
        raise ValueError(f"images: expected at least one micrograph, found none (where {where!r})")
    rows.sort(key=lambda r: (r["array_sha256"], r["frame_index"], r["record_id"]))
    return rows


def _ground_truth(lake: "Lake", rows: list[dict[str, Any]], snapshot: int) -> list[dict[str, Any]] | None:
    if not lake.files_at(snapshot, "segmentations"):
        return None
    ids = [r["record_id"] for r in rows]
    masks = lake.sql("select record_id, version, image_id, image_version, height, width, class_names, "
                     "class_values, array_sha256, array_index_sha256 from segmentations "
                     "where mask_kind = 'ground_truth' and image_id in (select unnest(?)) "
                     "order by image_id, record_id", as_of=snapshot, params=[ids]).arrow().to_pylist()
    by_image: dict[str, dict[str, Any]] = {}
    for m in masks:
        by_image.setdefault(m["image_id"], m)  # one ground truth per image; the first by record id
    if not by_image:
        return None
    missing = [i for i in ids if i not in by_image]
    if missing:
        raise ValueError(f"ground truth: expected a mask for every image or none, found none for "
                         f"{len(missing)} of {len(ids)} (e.g. {missing[0]})")
    out = [by_image[i] for i in ids]
    for r, m in zip(rows, out):
        if (int(m["height"]), int(m["width"])) != (int(r["height"]), int(r["width"])):
            raise ValueError(f"mask {m['record_id']}: expected the shape of image {r['record_id']} "
                             f"({r['height']}x{r['width']}), found {m['height']}x{m['width']}")
    return out


def _model_key(model: Any) -> str:
    mid = getattr(model, "model_id", None)
    if mid:
        return str(mid)
    params = json.dumps(getattr(model, "parameters", {}), sort_keys=True)
    return f"{model.name}:{model.version}:{hashlib.sha256(params.encode()).hexdigest()[:12]}"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def resolve_models(lake: "Lake", models: Sequence[Any], **predictor_options: Any) -> list[Any]:
    """Member predictors of ``models``: a string is a stored model version (its id or
    ``name[:version]``), loaded hash-checked as a
    :class:`~matlake.models.imaging.segment_lake.EnsemblePredictor` on ``lake``; anything
    else is already a predictor (e.g. a baseline) and is kept as it is."""
    out: list[Any] = []
    for m in models:
        if isinstance(m, str):
            from matlake.models.imaging.segment_lake import EnsemblePredictor

            m = EnsemblePredictor(lake, m, **predictor_options)
        out.append(m)
    return out


def evaluate(lake: "Lake", models: Sequence[Any], image_ids: Sequence[str] | None = None, where: str | None = None,
             *, as_of: int | str | None = None, evaluation: str = "default", phase: str = "ice",
             class_names: Sequence[str] = CLASS_NAMES, n_bins: int = 15, batch: int = 8,
             quality_score: str = "mean_entropy", error_threshold: float | None = None,
             out_dir: str | Path | None = None, force: bool = False) -> dict[str, Any]:
    """Evaluate ``models`` (member predictors, or stored model ids / ``name[:version]``,
    see :func:`resolve_models`) on micrographs (``image_ids`` or a SQL ``where`` on
    ``micrographs``) at ``as_of`` against their ground-truth masks, and commit the results.

    ``phase`` names the class whose area fraction is tracked (a name of the masks'
    ``class_names``, or of ``class_names`` when the images have no masks).  Returns
    ``{"snapshot", "skipped", "evaluation_ids", "summary" (one dict per model), "figures"
    (name -> sha256), "files" (PNG paths written)}``."""
    from matlake.models.imaging import plots
    from matlake.models.imaging.evaluation import evaluate_ensemble
    from matlake.platform.derivation import (
        ActivitySpec,
        ObjectSpec,
        commit_activities,
        find_same_run,
        record_versions,
    )

    if not models:
        raise ValueError("evaluate: expected at least one model, found none")
    models = resolve_models(lake, models)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate: expected distinct model names, found {names}")
    snapshot = lake.resolve_snapshot(as_of)
    rows = _select_images(lake, image_ids, where, snapshot)
    truth = _ground_truth(lake, rows, snapshot)
    classes = list(truth[0]["class_names"]) if truth else list(class_names)
    if phase not in classes:
        raise ValueError(f"phase: expected one of {classes}, found {phase!r}")
    phase_idx = classes.index(phase)
    used = {("micrographs", r["record_id"]): int(r["version"]) for r in rows}
    if truth:
        used.update({("segmentations", m["record_id"]): int(m["version"]) for m in truth})
    ids = [r["record_id"] for r in rows]
    set_digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    params = {"evaluation": evaluation, "image_set_sha256": set_digest, "n_images": len(ids), "phase": phase,
              "n_bins": n_bins, "quality_score": quality_score, "error_threshold": error_threshold,
              "where": where, "snapshot_id": snapshot,
              "models": [{"name": m.name, "version": str(m.version), "model_id": getattr(m, "model_id", None),
                          "parameters": getattr(m, "parameters", {})} for m in models]}
    if not force:
        done = find_same_run(lake, "evaluate", EVALUATOR_NAME, EVALUATOR_VERSION, params, used)
        if done:
            return {"snapshot": None, "skipped": True, "activity_id": done, "evaluation_ids": [], "summary": [],
                    "figures": {}, "files": []}
    assert record_versions(lake, list(used), snapshot) == used
    frames = FrameStack(lake, rows)
    masks = _MaskStack(lake, truth, frame_key=None) if truth else None
    results = []
    try:
        for m in models:
            results.append(evaluate_ensemble(m, frames, masks, phase=phase_idx, n_bins=n_bins, batch=batch,
                                             quality_score=quality_score, error_threshold=error_threshold))
    finally:
        frames.close()
        if masks is not None:
            masks.close()
    times = np.array([r["frame_time"] if r["frame_time"] is not None else np.nan for r in rows], float)
    if not np.isfinite(times).all():
        times = np.arange(len(rows), dtype=float)  # frames without times are drawn by index
    title = f"{evaluation} ({len(ids)} images)"
    figs: dict[str, bytes] = {}
    if truth:
        figs["reliability"] = plots.png_bytes(plots.reliability_figure(
            {m.name: ev.metrics["reliability"] for m, ev in zip(models, results)}, title=f"reliability: {title}"))
        figs["risk_coverage"] = plots.png_bytes(plots.risk_coverage_figure(
            {m.name: ev.risk_coverage for m, ev in zip(models, results)}, title=f"risk-coverage: {title}"))
    figs["phase_fraction"] = plots.png_bytes(plots.phase_fraction_figure(
        times, {m.name: (ev.fraction_mean, ev.fraction_std) for m, ev in zip(models, results)},
        truth=results[0].true_fraction, phase=phase, title=f"{phase} fraction: {title}"))
    for m, ev in zip(models, results):
        pm = ev.panel_maps
        figs[f"panel:{m.name}"] = plots.png_bytes(plots.panel_figure(
            ev.panel_image, ev.panel_truth, pm.predicted, pm.entropy, pm.mutual_information,
            title=f"{m.name}: frame {ev.panel_frame} ({ids[ev.panel_frame]})"))
    objects = {k: ObjectSpec(data=v, media_type="image/png", name=f"{evaluation}-{k.replace(':', '-')}.png")
               for k, v in figs.items()}
    files: list[str] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for o in objects.values():
            path = out / o.name
            path.write_bytes(o.data)
            files.append(str(path))
    subject = f"{evaluation}/{set_digest}"
    eval_rows, frac_rows, summary, eval_ids = [], [], [], []
    shared = {k: o.sha256 for k, o in objects.items() if not k.startswith("panel:")}
    for m, ev in zip(models, results):
        key = _model_key(m)
        eid = derived_record_id(EVALUATOR_NAME, subject, f"model/{key}")
        eval_ids.append(eid)
        met = ev.metrics
        q = ev.quality or {}
        rc = ev.risk_coverage
        fig_ids = {**shared, "panel": objects[f"panel:{m.name}"].sha256}
        row = {
            "record_id": eid, "evaluation": evaluation, "model_name": m.name, "model_version": str(m.version),
            "model_id": getattr(m, "model_id", None),
            "model_parameters_json": json.dumps(getattr(m, "parameters", {}), sort_keys=True),
            "n_members": ev.n_members, "class_names": classes, "phase": phase, "n_images": len(ids),
            "n_pixels": met.get("n_pixels", len(ids) * int(rows[0]["height"]) * int(rows[0]["width"])),
            "image_ids": ids, "accuracy": met.get("accuracy"), "iou": met.get("iou"), "dice": met.get("dice"),
            "mean_iou": _clean(met.get("mean_iou")), "ece": met.get("ece"), "mce": _clean(met.get("mce")),
            "n_bins": n_bins, "brier": met.get("brier"), "brier_binary": met.get("brier_binary"),
            "nll": met.get("nll"), "mean_entropy": met["mean_entropy"],
            "mean_mutual_information": met["mean_mutual_information"], "quality_score": quality_score,
            "error_threshold": ev.error_threshold, "n_bad_images": q.get("n_flagged"),
            "quality_auroc": _clean(q.get("auroc")), "quality_spearman": _clean(q.get("spearman")),
            "aurc": q.get("aurc"), "oracle_aurc": q.get("oracle_aurc"), "excess_aurc": q.get("excess_aurc"),
            "phase_fraction_mae": ev.phase_fraction_mae,
            "reliability_json": json.dumps(met["reliability"]) if "reliability" in met else None,
            "risk_coverage_json": json.dumps({"coverage": rc.coverage.tolist(), "risk": rc.risk.tolist()})
            if rc is not None else None,
            "figures_json": json.dumps(fig_ids, sort_keys=True),
            "evaluation_json": json.dumps({**params, "model": {"name": m.name, "key": key},
                                           "panel_frame": ev.panel_frame}, sort_keys=True, default=str),
        }
        eval_rows.append(row)
        summary.append({k: row[k] for k in ("model_name", "n_members", "accuracy", "mean_iou", "ece", "brier",
                                            "nll", "mean_entropy", "mean_mutual_information", "quality_auroc",
                                            "aurc", "phase_fraction_mae")} | {"evaluation_id": eid})
        s = ev.frame_scores
        for t, r in enumerate(rows):
            err = None if ev.frame_errors is None else float(ev.frame_errors[t])
            frac_rows.append({
                "record_id": derived_record_id(EVALUATOR_NAME, eid, f"frame/{r['record_id']}/{phase}"),
                "evaluation_id": eid, "evaluation": evaluation, "model_name": m.name,
                "model_id": getattr(m, "model_id", None), "image_id": r["record_id"],
                "image_version": int(r["version"]), "frame_index": int(r["frame_index"]),
                "frame_time": r["frame_time"], "phase": phase, "fraction_mean": float(ev.fraction_mean[t]),
                "fraction_std": float(ev.fraction_std[t]), "fraction_ensemble": float(ev.fraction_ensemble[t]),
                "fraction_expected": float(ev.fraction_expected[t]),
                "member_fractions": [float(v) for v in ev.fraction_members[:, t]],
                "true_fraction": None if ev.true_fraction is None else float(ev.true_fraction[t]),
                "error_rate": err, "mean_entropy": float(s["mean_entropy"][t]),
                "mean_mutual_information": float(s["mean_mutual_information"][t]),
                "uncertain_fraction": float(s["uncertain_fraction"][t]),
                "flagged": None if err is None else bool(err > ev.error_threshold),
            })
    model_entities = [("model", str(m.model_id)) for m in models if getattr(m, "model_id", None)]
    spec = ActivitySpec(name=EVALUATOR_NAME, version=EVALUATOR_VERSION, parameters=params, used=used,
                        used_entities=model_entities,
                        generated_entities=[("object", o.sha256) for o in objects.values()],
                        rows={"segmentation_evaluations": eval_rows, "phase_fractions": frac_rows})
    snap = commit_activities(lake, kind="evaluate", activities=[spec], objects=list(objects.values()),
                             message=f"evaluate {', '.join(names)} on {len(ids)} images ({evaluation})")
    return {"snapshot": snap, "skipped": False, "evaluation_ids": eval_ids, "summary": summary,
            "figures": {k: o.sha256 for k, o in objects.items()}, "files": files}


def plot_evaluations(lake: "Lake", evaluation_ids: Sequence[str], out_dir: str | Path,
                     as_of: int | str | None = None) -> list[str]:
    """Redraw, from the stored rows, the reliability diagram, risk-coverage curve and
    phase-fraction series of ``segmentation_evaluations`` records (several overlay) and
    copy each one's stored panel figure; returns the PNG paths written to ``out_dir``."""
    from matlake.models.imaging import plots

    if not evaluation_ids:
        raise ValueError("plot: expected at least one evaluation id, found none")
    snapshot = lake.resolve_snapshot(as_of)
    rows = lake.sql("select * from segmentation_evaluations where record_id in (select unnest(?))", as_of=snapshot,
                    params=[list(evaluation_ids)]).arrow().to_pylist()
    found = {r["record_id"]: r for r in rows}
    missing = [e for e in evaluation_ids if e not in found]
    if missing:
        raise ValueError(f"plot: expected segmentation_evaluations records, found no {missing[:3]}")
    rows = [found[e] for e in evaluation_ids]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    tag = rows[0]["evaluation"]
    rel = {r["model_name"]: json.loads(r["reliability_json"]) for r in rows if r["reliability_json"]}
    if rel:
        written.append(str(plots.save(plots.reliability_figure(rel, title=f"reliability: {tag}"),
                                      out / f"{tag}-reliability.png")))
    rc = {}
    for r in rows:
        if r["risk_coverage_json"]:
            d = json.loads(r["risk_coverage_json"])
            rc[r["model_name"]] = (np.asarray(d["coverage"]), np.asarray(d["risk"]))
    if rc:
        written.append(str(plots.save(plots.risk_coverage_figure(rc, title=f"risk-coverage: {tag}"),
                                      out / f"{tag}-risk_coverage.png")))
    fr = lake.sql("select evaluation_id, frame_time, frame_index, fraction_mean, fraction_std, true_fraction, phase "
                  "from phase_fractions where evaluation_id in (select unnest(?)) "
                  "order by evaluation_id, frame_time, frame_index", as_of=snapshot,
                  params=[list(evaluation_ids)]).arrow().to_pylist()
    series, times, truth, phase = {}, None, None, "phase"
    for r in rows:
        pts = [p for p in fr if p["evaluation_id"] == r["record_id"]]
        if not pts:
            continue
        phase = pts[0]["phase"]
        t = [p["frame_time"] if p["frame_time"] is not None else p["frame_index"] for p in pts]
        times = times if times is not None else t
        if len(t) != len(times):
            continue  # a different image set: not drawn on the same axis
        series[r["model_name"]] = ([p["fraction_mean"] for p in pts], [p["fraction_std"] for p in pts])
        if truth is None and all(p["true_fraction"] is not None for p in pts):
            truth = [p["true_fraction"] for p in pts]
    if series:
        written.append(str(plots.save(plots.phase_fraction_figure(times, series, truth=truth, phase=phase,
                                                                  title=f"{phase} fraction: {tag}"),
                                      out / f"{tag}-phase_fraction.png")))
    for r in rows:
        panel = json.loads(r["figures_json"] or "{}").get("panel")
        if panel:
            path = out / f"{tag}-panel-{r['model_name']}.png"
            path.write_bytes(lake.objects.get(panel))
            written.append(str(path))
    return written
