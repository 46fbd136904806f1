"""Training and prediction around model modules (``matlake.models``).

``train`` reads a module's view at one snapshot, fits, stores the artifact as
an object and registers a model version whose dataset version is the pair
(view SQL, snapshot id); the train activity *used* the snapshot and the set of
training records.  ``predict`` loads a model version and writes rows to
``predictions``; the predict activity *used* the model and the set of its
subjects.  A set is one catalog row (table, snapshot, view SQL, count, digest):
train and featurize list its members in a small Parquet object, predict's are
the ``subject_id`` of the rows it wrote (see :class:`~matlake.platform.catalog.UsedSet`).

An artifact is read back only after its object's sha256 is checked
(:class:`~matlake.platform.objects.ObjectCorrupted` otherwise), and pickle
artifacts of older lakes load only with ``allow_pickle=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from matlake.models.base import ModelModule, artifact_format, load_artifact
from matlake.platform import catalog as cat
from matlake.platform.lake import ChangeSet, LakeError, new_id

if TYPE_CHECKING:
    from matlake.platform.lake import Lake


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    name: str
    version: int
    module: str
    module_version: str
    target: str
    view_sql: str
    snapshot_id: int
    metrics: dict[str, float]
    params: dict[str, Any]
    artifact_sha256: str
    n_train: int
    activity_id: str


def load_module(qualified: str, params: dict[str, Any] | None = None) -> ModelModule:
    """Instantiate ``package.module:Class``."""
    mod_name, _, cls_name = qualified.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise LakeError(f"model module {qualified!r} cannot be loaded: {exc}") from exc
    return cls(**(params or {}))


def model_info(lake: "Lake", model: str) -> ModelInfo:
    """A model version by id, or the latest version of a model name (``name`` or ``name:3``)."""
    mv = cat.ModelVersion
    with Session(lake.engine) as conn:
        if model.startswith("model_"):
            row = conn.execute(select(mv).where(mv.model_id == model)).scalar_one_or_none()
        else:
            name, _, ver = model.partition(":")
            q = select(mv).where(mv.name == name)
            q = q.where(mv.version == int(ver)) if ver else q.order_by(mv.version.desc()).limit(1)
            row = conn.execute(q).scalars().first()
        if row is None:
            raise LakeError(f"no model version {model!r} (give a model_... id or a model name)")
        return ModelInfo(row.model_id, row.name, row.version, row.module, row.module_version, row.target,
                         row.view_sql, row.snapshot_id, json.loads(row.metrics_json), json.loads(row.params_json),
                         row.artifact_sha256, row.n_train, row.activity_id)


def list_models(lake: "Lake") -> list[ModelInfo]:
    mv = cat.ModelVersion
    with lake.engine.connect() as conn:
        ids = conn.execute(select(mv.model_id).order_by(mv.name, mv.version)).scalars().all()
    return [model_info(lake, i) for i in ids]


def read_view(lake: "Lake", sql: str, as_of: int | str | None, where: str | None = None,
              producer: str = "") -> tuple[int, str, pd.DataFrame]:
    """(snapshot id, the SQL run, its rows) of a module's view; the rows must name their ``subject_id``."""
    sid = lake.resolve_snapshot(as_of)
    if where:
        sql = f"select * from ({sql}) where {where}"
    frame = lake.sql(sql, as_of=sid).df()
    if "subject_id" not in frame.columns:
        raise LakeError(f"{producer}: its view must return a subject_id column; found {list(frame.columns)}")
    return sid, sql, frame


def train(lake: "Lake", module: ModelModule | str, as_of: int | str | None = None,
          view_sql: str | None = None, params: dict[str, Any] | None = None) -> ModelInfo:
    """Fit ``module`` on its training view at snapshot ``as_of`` (id, tag or latest)."""
    if isinstance(module, str):
        module = load_module(module, params)
    started = cat.utcnow()
    sid, sql, frame = read_view(lake, view_sql or module.train_sql, as_of, producer=module.name)
    load_arrays = getattr(module, "load_arrays", None)
    if load_arrays is not None:
        # a module that learns from array objects (images, masks) gets a reader that
        # verifies the index and every chunk it reads: read(sha256, index_sha256)
        frame = load_arrays(frame, lake.chunked)
    artifact, metrics = module.fit(frame)
    blob = module.dumps(artifact)
    fmt = artifact_format(blob)
    sha = lake.put_object(blob)
    members_ids = pa.array(frame["subject_id"].astype(str).to_numpy(), pa.string())
    members_sha, members_size = _put_members(lake, members_ids)

    def attempt() -> ModelInfo:
        with lake.engine.connect() as conn:
            last = conn.execute(select(func.max(cat.ModelVersion.version))
                                .where(cat.ModelVersion.name == module.name)).scalar() or 0
        version = int(last) + 1
        model_id = new_id("model")
        cs = ChangeSet("train", f"train {module.name} v{version} on snapshot {sid}")
        act = cs.activity("train", module.name, module.version, started_at=started,
                          parameters={"view_sql": sql, "snapshot_id": sid, "params": module.params,
                                      "module": module.qualified_name(), "artifact_format": fmt})
        act.used("snapshot", str(sid))
        act.used_set(module.subject_table, sid, sql, members_ids, members="object", members_sha256=members_sha)
        act.generated("model", model_id)
        act.generated("object", sha)
        cs.add_object(sha, len(blob), media_type="application/x-model", original_name=f"{module.name}-v{version}")
        cs.add_object(members_sha, members_size, media_type=MEMBERS_MEDIA_TYPE,
                      original_name=f"{module.name}-v{version}-training-set")
        fields = dict(model_id=model_id, name=module.name, version=version, module=module.qualified_name(),
                      module_version=module.version, target=module.target, view_sql=sql, snapshot_id=sid,
                      metrics_json=json.dumps(metrics, sort_keys=True), params_json=json.dumps(module.params, sort_keys=True, default=str),
                      artifact_sha256=sha, n_train=len(frame), activity_id=act.activity_id)
        cs.add_model(**fields)  # snapshot_id: the dataset's snapshot, not the commit's
        lake.commit(cs)
        return model_info(lake, model_id)

    for _ in range(5):  # two trainers of one name may race for a version number
        try:
            return attempt()
        except Exception as exc:  # noqa: BLE001
            if "unique" not in str(exc).lower():
                raise
    raise LakeError(f"could not allocate a version for model {module.name}")


MEMBERS_MEDIA_TYPE = "application/vnd.matlake.used-set+parquet"


def _put_members(lake: "Lake", record_ids: pa.Array, versions: pa.Array | None = None) -> tuple[str, int]:
    """Store a used set's members (record_id, version) as a Parquet object; (sha256, size)."""
    table = pa.table({"record_id": record_ids.cast(pa.string()),
                      "version": versions.cast(pa.int32()) if versions is not None
                      else pa.nulls(len(record_ids), pa.int32())})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    return lake.put_object(data), len(data)


def prediction_record_id(model_id: str, subject_id: str, target: str) -> str:
    return hashlib.sha256(f"{model_id}\x00{subject_id}\x00{target}".encode()).hexdigest()[:32]


def load_model(lake: "Lake", model: str, allow_pickle: bool = False) -> tuple[ModelInfo, ModelModule, Any]:
    """(model version, its module instance, its artifact) of ``model`` (as for :func:`model_info`).

    The artifact's object is hash-checked before it is deserialised; a pickle
    artifact (older lakes) needs ``allow_pickle=True``.
    """
    info = model_info(lake, model)
    module = load_module(info.module, info.params)
    return info, module, _artifact(lake, info, module, allow_pickle)


def _artifact(lake: "Lake", info: ModelInfo, module: ModelModule, allow_pickle: bool) -> Any:
    data = lake.objects.get(info.artifact_sha256)  # verified: raises ObjectCorrupted on a mismatch
    what = f"model {info.name} v{info.version} ({info.model_id}), artifact object {info.artifact_sha256}"
    return load_artifact(module, data, allow_pickle=allow_pickle, what=what)


def predict(lake: "Lake", model: str, as_of: int | str | None = None, view_sql: str | None = None,
            where: str | None = None, allow_pickle: bool = False) -> dict[str, Any]:
    """Predict with a model version over its predict view at ``as_of``; commits to ``predictions``.

    ``where`` is an extra SQL condition on the predict view's rows.
    ``allow_pickle`` lets a pickle artifact (written before skops artifacts)
    be unpickled; only for lakes whose ``objects/`` only trusted people write.
    """
    info = model_info(lake, model)
    module = load_module(info.module, info.params)
    started = cat.utcnow()
    sid, sql, frame = read_view(lake, view_sql or module.predict_sql, as_of, where, producer=module.name)
    if frame.empty:
        return {"model_id": info.model_id, "snapshot": None, "n": 0}
    artifact = _artifact(lake, info, module, allow_pickle)
    load_arrays = getattr(module, "load_arrays", None)
    if load_arrays is not None:  # as in train: array objects are read through the verified reader
        frame = load_arrays(frame, lake.chunked)
    out = module.predict(artifact, frame)
    missing = {"subject_id", "value"} - set(out.columns)
    if missing:
        raise LakeError(f"{module.name}.predict must return columns subject_id, value[, uncertainty]; missing {sorted(missing)}")
    subject_table = getattr(module, "predict_subject_table", module.subject_table)
    unc = out["uncertainty"] if "uncertainty" in out.columns else pd.Series([math.nan] * len(out))
    rows = pd.DataFrame({
        "record_id": [prediction_record_id(info.model_id, str(s), info.target) for s in out["subject_id"]],
        "model_id": info.model_id, "model_name": info.name, "model_version": info.version,
        "subject_id": out["subject_id"].astype(str).to_numpy(), "subject_table": subject_table,
        "target": info.target, "value": out["value"].astype(float).to_numpy(),
        "uncertainty": unc.astype(float).to_numpy(), "unit": module.unit,
    })
    cs = ChangeSet("predict", f"predict {info.name} v{info.version} on snapshot {sid}")
    act = cs.activity("predict", info.name, info.module_version, started_at=started,
                      parameters={"model_id": info.model_id, "view_sql": sql, "snapshot_id": sid})
    act.used("model", info.model_id)
    act.used_set(subject_table, sid, sql, pa.array(rows["subject_id"].to_numpy(), pa.string()), members="generated")
    cs.add_rows("predictions", pa.Table.from_pandas(rows, preserve_index=False), act, version=None)
    new_sid = lake.commit(cs)
    return {"model_id": info.model_id, "snapshot": new_sid, "n": len(rows), "activity_id": act.activity_id}


@dataclass
class FeaturizeReport:
    snapshot: int | None
    activity_id: str | None
    n_subjects: int
    n_rows: dict[str, int]
    errors: dict[str, str]  # subject_id -> message
    skipped: int = 0  # subjects already featurized in this version with these parameters


def _canonical(params: Any) -> str:
    return json.dumps(json.loads(json.dumps(params, default=str)), sort_keys=True)


def _already_done(lake: "Lake", featurizer: Any, versions: dict[str, int]) -> set[str]:
    """Subjects whose current record version an earlier featurize activity of the same
    name, version and parameters already used (and did not fail on)."""
    want = _canonical(featurizer.params)
    with lake.engine.connect() as conn:
        acts = conn.execute(select(cat.Activity.activity_id, cat.Activity.parameters_json).where(
            cat.Activity.kind == "featurize", cat.Activity.name == featurizer.name,
            cat.Activity.agent_version == featurizer.version)).all()
        same = [a for a, p in acts if _canonical(json.loads(p).get("params")) == want]
        if not same:
            return set()
        # Lakes written before used sets keep one link per subject; later runs list them in an object.
        used = conn.execute(select(cat.Link.entity_id, cat.Link.entity_version).where(
            cat.Link.activity_id.in_(same), cat.Link.role == "used", cat.Link.entity_kind == "record")).all()
        objects = conn.execute(select(cat.UsedSet.members_sha256).where(
            cat.UsedSet.activity_id.in_(same), cat.UsedSet.members == "object")).scalars().all()
    done = {rid for rid, ver in used if ver is not None and versions.get(rid) == ver}
    for sha in objects:
        members = pq.read_table(io.BytesIO(lake.objects.get(sha)))
        done |= {rid for rid, ver in zip(members.column("record_id").to_pylist(), members.column("version").to_pylist())
                 if ver is not None and versions.get(rid) == ver}
    return done


def featurize(lake: "Lake", featurizer: Any, as_of: int | str | None = None, where: str | None = None,
              input_sql: str | None = None, progress: bool = False, force: bool = False) -> FeaturizeReport:
    """Run a :class:`~matlake.models.base.Featurizer` over its input view and commit its rows.

    One activity (kind ``featurize``) used every subject record (at its
    version) and generated every row; a subject that fails is reported in the
    activity's parameters and in the returned errors, and the others are
    committed.  Subjects whose current version was already featurized by the
    same featurizer version with the same parameters are skipped, so a
    scheduled run only does new work; ``force`` re-runs them (adding versions).
    """
    started = cat.utcnow()
    sid, sql, frame = read_view(lake, input_sql or featurizer.input_sql, as_of, where, producer=featurizer.name)
    subjects = [str(s) for s in frame["subject_id"]]
    versions = dict(lake.sql(f"select record_id, version from {featurizer.subject_table} "
                             "where record_id in (select unnest(?))", as_of=sid, params=[subjects]).fetchall()
                    ) if subjects else {}
    skip = set() if force else _already_done(lake, featurizer, versions)
    outputs: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    done: list[str] = []
    records = [r for r in frame.to_dict("records") if str(r["subject_id"]) not in skip]
    if progress:
        import sys

        from tqdm import tqdm

        records = tqdm(records, desc=featurizer.name, unit="subject", file=sys.stderr)
    for row in records:
        subject = str(row["subject_id"])
        try:
            result = featurizer.featurize_one(row)
        except Exception as exc:  # noqa: BLE001 - one bad subject must not sink the run
            errors[subject] = f"{type(exc).__name__}: {exc}"
            continue
        done.append(subject)
        for table, rows in result.items():
            outputs.setdefault(table, []).extend(rows)
    if not done and not errors:
        return FeaturizeReport(None, None, 0, {}, {}, skipped=len(skip))
    cs = ChangeSet("featurize", f"{featurizer.name} {featurizer.version} on snapshot {sid}")
    act = cs.activity("featurize", featurizer.name, featurizer.version, started_at=started,
                      parameters={"input_sql": sql, "snapshot_id": sid, "params": featurizer.params,
                                  "n_subjects": len(frame) - len(skip), "skipped": len(skip), "errors": errors},
                      status="ok" if not errors else ("partial" if done else "failed"),
                      error="; ".join(f"{k}: {v}" for k, v in list(errors.items())[:5]))
    if done:
        members_sha, members_size = _put_members(lake, pa.array(done, pa.string()),
                                                 pa.array([versions.get(s) for s in done], pa.int32()))
        cs.add_object(members_sha, members_size, media_type=MEMBERS_MEDIA_TYPE,
                      original_name=f"{featurizer.name}-{featurizer.version}-inputs")
        act.used_set(featurizer.subject_table, sid, sql, pa.array(done, pa.string()), members="object",
                     members_sha256=members_sha)
    # records a featurizer read besides its subjects (a reference spectrum, a user-defined grid)
    for table, rid, ver in getattr(featurizer, "extra_used", ()):
        act.used("record", rid, version=ver, table=table)
    # entities that are not rows (a model version whose artifact the featurizer applies, an object)
    for entity_kind, entity_id in getattr(featurizer, "used_entities", ()):
        act.used(entity_kind, entity_id)
    for table, rows in outputs.items():
        if rows:
            cs.add_rows(table, pa.Table.from_pylist(rows), act, version=None, source=featurizer.name)
    new_sid = lake.commit(cs)
    return FeaturizeReport(new_sid, act.activity_id, len(done), {t: len(r) for t, r in outputs.items()}, errors,
                           skipped=len(skip))
