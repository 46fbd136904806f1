"""The lake side of materials descriptors and models.

- :func:`commit_element_table`: the elemental property table as ``element_property_tables``
  rows (one ``element-table`` activity; skipped when the same table sha256 is already there).
- :func:`featurize_materials`: :class:`~matlake.models.materials.models.MaterialsDescriptors`
  over a dataset, computed in one batch, committed through
  :func:`matlake.platform.modeling.featurize` (skip / force / per-subject errors).
- :func:`train_property`: one model version of a property at a fidelity through
  :func:`matlake.platform.modeling.train` (view SQL + snapshot recorded, CV metrics).
- :func:`train_levels`: the defect-level convenience: featurize the dataset's defects, then
  train (and predict, into ``predictions``) one model per ``level(...)`` property.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matlake.models.base import derived_record_id
from matlake.models.materials.elements import element_table
from matlake.models.materials.models import MaterialsDescriptors, _literal, model_module

if TYPE_CHECKING:
    from matlake.platform.lake import Lake
    from matlake.platform.modeling import FeaturizeReport, ModelInfo

ELEMENT_TABLE_ACTIVITY = "element-table"


def commit_element_table(lake: "Lake", a_site: bool = False) -> dict[str, Any]:
    """Commit the ``pymatgen-elemental`` (or ``-asite``) table; returns name, version, sha256, snapshot, rows."""
    from matlake.platform.derivation import commit_derived

    table = element_table(a_site=a_site)
    sha = table.digest()
    out = {"table_name": table.name, "table_version": table.version, "table_sha256": sha}
    n = lake.sql("select count(*) from element_property_tables where table_sha256 = ?", params=[sha]).fetchone()[0]
    if n:
        return {**out, "snapshot": None, "rows": int(n), "skipped": True}
    rows = [{"record_id": derived_record_id(table.name, f"{table.version}/{r['species']}", r["property"]), **r}
            for r in table.rows()]
    snapshot, _ = commit_derived(lake, kind=ELEMENT_TABLE_ACTIVITY, name=table.name, version=table.version,
                                 parameters={"table_sha256": sha, "species": len(table.species),
                                             "properties": list(table.properties)},
                                 used={}, rows={"element_property_tables": rows},
                                 message=f"element property table {table.name} v{table.version}")
    return {**out, "snapshot": snapshot, "rows": len(rows), "skipped": False}


def featurize_materials(lake: "Lake", dataset: str, kind: str = "defect", as_of: int | str | None = None,
                        force: bool = False, **params: Any) -> "FeaturizeReport":
    """Descriptor vectors of ``dataset``'s subjects into ``material_features`` (featurizer ``materials-<kind>``)."""
    from matlake.platform.modeling import featurize

    featurizer = MaterialsDescriptors(dataset, kind, **params)
    sid = lake.resolve_snapshot(as_of)
    featurizer.prime(lake.sql(featurizer.input_sql, as_of=sid).df().to_dict("records"))
    return featurize(lake, featurizer, as_of=sid, force=force)


def train_property(lake: "Lake", dataset: str, target: str, fidelity: str, kind: str = "rf",
                   as_of: int | str | None = None, **params: Any) -> "ModelInfo":
    """Train one model version of ``target`` at ``fidelity`` (params as :class:`MaterialsRegressor`)."""
    from matlake.platform.modeling import train

    return train(lake, model_module(kind, dataset=dataset, target=target, fidelity=fidelity, **params), as_of=as_of)


def train_levels(lake: "Lake", dataset: str = "dft_impurities", kind: str = "rf", fidelity: str = "GGA",
                 levels: list[str] | None = None, group_by: str | None = "Impurity", predict: bool = True,
                 as_of: int | str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Featurize the dataset's defects, then train (and predict) one model per transition level.

    ``levels``: property names (default: every ``level(...)`` of the dataset at ``fidelity``).
    Returns one dict per level: target, model id, its CV RMSE/MAE and the mean predictor's,
    grouped-fold RMSE when ``group_by``, and the predict snapshot.
    """
    from matlake.platform.modeling import predict as run_predict

    feat = featurize_materials(lake, dataset, "defect", as_of=as_of)
    if levels is None:
        levels = [r[0] for r in lake.sql(
            "select distinct name from material_targets where dataset = " + _literal(dataset)
            + " and fidelity = " + _literal(fidelity) + " and name like 'level(%' order by name").fetchall()]
    if not levels:
        raise ValueError(f"dataset {dataset!r}: no level(...) properties at fidelity {fidelity!r}")
    out = []
    for level in levels:
        info = train_property(lake, dataset, level, fidelity, kind, group_by=group_by, **params)
        m = info.metrics
        row = {"target": level, "model_id": info.model_id, "model": f"{info.name}:{info.version}",
               "n": int(m["n_train"]), "cv_rmse": m["cv_rmse"], "cv_mae": m["cv_mae"], "cv_r2": m["cv_r2"],
               "baseline_rmse": m["cv_baseline_rmse"], "baseline_mae": m["cv_baseline_mae"],
               "cv_fold_sha256": m["cv_fold_sha256"], "featurize_snapshot": feat.snapshot}
        if group_by:
            row.update({"grouped_by": group_by, "grouped_rmse": m["cv_grouped_rmse"],
                        "grouped_baseline_rmse": m["cv_grouped_baseline_rmse"]})
        if predict:
            row["predict_snapshot"] = run_predict(lake, info.model_id)["snapshot"]
        out.append(row)
    return out


def fidelity_data(lake: "Lake", dataset: str, target: str, low: str, high: str, featurizer: str = "materials-defect",
                  as_of: int | str | None = None) -> dict[str, Any]:
    """Subject keys, descriptor matrix and the ``low`` / ``high`` fidelity values (NaN where missing) of
    ``target`` for every subject of ``dataset`` with ``featurizer`` vectors, at one snapshot."""
    import numpy as np

    sid = lake.resolve_snapshot(as_of)
    sql = ("select s.subject_key, f.\"values\" as x, lo.value as low, hi.value as high "
           "from material_features f join material_subjects s on s.record_id = f.subject_id "
           f"left join material_targets lo on lo.subject_id = f.subject_id and lo.name = {_literal(target)} "
           f"and lo.fidelity = {_literal(low)} "
           f"left join material_targets hi on hi.subject_id = f.subject_id and hi.name = {_literal(target)} "
           f"and hi.fidelity = {_literal(high)} "
           f"where f.featurizer = {_literal(featurizer)} and s.dataset = {_literal(dataset)} order by s.subject_key")
    frame = lake.sql(sql, as_of=sid).df()
    if frame.empty:
        raise ValueError(f"dataset {dataset!r}: no subjects with {featurizer} features")
    if frame["subject_key"].duplicated().any():
        raise ValueError(f"dataset {dataset!r}: expected one {featurizer} vector and one value per fidelity per "
                         f"subject, found several for {frame['subject_key'][frame['subject_key'].duplicated()].iloc[0]}")
    return {"snapshot_id": sid, "sql": sql, "keys": frame["subject_key"].astype(str).tolist(),
            "x": np.vstack([np.asarray(v, float) for v in frame["x"]]),
            "low": frame["low"].to_numpy(float), "high": frame["high"].to_numpy(float)}


def compare_fidelities(lake: "Lake", dataset: str, target: str, low: str = "GGA", high: str = "HSE",
                       featurizer: str = "materials-defect", kind: str = "gp", as_of: int | str | None = None,
                       **params: Any) -> Any:
    """The multi-fidelity strategies (:func:`matlake.models.materials.multifidelity.compare`) on a dataset:
    ``high`` predicted from the descriptors and the ``low`` fidelity, scored on the subjects that have
    ``high``, under folds of (subject key, cv_seed).  The fold record names the snapshot and SQL read."""
    from matlake.models.materials.multifidelity import compare

    data = fidelity_data(lake, dataset, target, low, high, featurizer, as_of)
    res = compare(data["x"], data["low"], data["high"], data["keys"], kind=kind, **params)
    res.fold_info.update({"snapshot_id": data["snapshot_id"], "view_sql": data["sql"], "low": low, "high": high})
    return res
