"""Model modules and the descriptor featurizer on tabular materials datasets (pure: no Lake access).

**Featurizer** :class:`MaterialsDescriptors` (``kind``):

- ``defect``: :func:`~matlake.models.materials.descriptors.defect_features` of subjects whose
  tags name the host, site, impurity and host type (tag columns ``AB``, ``Site``,
  ``Impurity``, ``Type`` by default, as in the DFT_impurities map);
- ``sites``: per-site means (and ``stats``) of ``sites_json`` for a site ``pattern`` (ABX3);
- ``composition``: composition-weighted statistics of ``composition_json``.

It writes one ``material_features`` row per subject with featurizer ``materials-<kind>``;
the parameters record the element table's name, version and sha256.  All vectors are
computed in one vectorised batch (:meth:`MaterialsDescriptors.prime`) before the platform's
``featurize`` commits them; a subject whose tags do not parse gets its own error.

**Model modules** (one property, one fidelity of one dataset per model version; params
``dataset``, ``target``, ``fidelity``, ``featurizer``, ``kind``, CV settings, ``regressor``
parameters):

- :class:`MaterialsRegressor`: ``kind`` rf / gb / gp (skops artifact: a dict of sklearn
  estimators and arrays, :func:`~matlake.models.materials.regressors.to_artifact`);
- :class:`MaterialsMLP`: the torch MLP deep ensemble (state dict; the fill values and
  scaling are buffers).

The view joins ``material_features`` with ``material_targets`` (and ``material_subjects``
for the key and tags); ``fit`` cross-validates on folds of (subject key, ``cv_seed``) and,
with ``group_by`` (a tag such as ``Impurity`` or ``AB``), on grouped folds too; both sets of
metrics (``cv_*`` and ``cv_grouped_*``, with the mean-predictor ``baseline_*`` and the folds'
sha256) go into the model version's metrics.  ``predict`` covers every subject of the
dataset with features; sigma as in :mod:`matlake.models.materials.regressors`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from matlake.models.base import Featurizer, ModelModule, TorchModelModule, derived_record_id
from matlake.models.materials.descriptors import (
    FEATURIZER_VERSION,
    PEROVSKITE_SITES,
    composition_features,
    defect_features,
    site_features,
    split_host,
)
from matlake.models.materials.elements import element_table
from matlake.models.materials.regressors import (
    DEFAULTS,
    cross_validate,
    from_artifact,
    make_regressor,
    to_artifact,
)

if TYPE_CHECKING:
    import torch

DESCRIPTOR_KINDS = ("defect", "sites", "composition")
_NAME = re.compile(r"^[A-Za-z0-9_.:+()/\- ]+$")


def _literal(value: Any) -> str:
    """``value`` as an SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _check_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what}: expected a name of letters, digits, spaces and ._:+()/-, found {value!r}")
    return value


class MaterialsDescriptors(Featurizer):
    """Descriptor vectors of a dataset's subjects (see the module docstring)."""

    version = FEATURIZER_VERSION
    subject_table = "material_subjects"

    def __init__(self, dataset: str, kind: str = "defect", stats: tuple[str, ...] | list[str] = ("mean",),
                 pattern: tuple[str, ...] | list[str] = PEROVSKITE_SITES,
                 tag_columns: dict[str, str] | None = None) -> None:
        if kind not in DESCRIPTOR_KINDS:
            raise ValueError(f"descriptor kind: expected one of {', '.join(DESCRIPTOR_KINDS)}, found {kind!r}")
        tags = {"host": "AB", "site": "Site", "impurity": "Impurity", "type": "Type", **(tag_columns or {})}
        table = element_table()
        super().__init__(dataset=_check_name("dataset", dataset), kind=kind, stats=list(stats), pattern=list(pattern),
                         tag_columns=tags, element_table={"name": table.name, "version": table.version,
                                                          "sha256": table.digest()},
                         **({"a_site_table": element_table(a_site=True).digest()} if kind == "sites" else {}))
        self._rows: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, str] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"materials-{self.params['kind']}"

    @property
    def input_sql(self) -> str:  # type: ignore[override]
        return ("select record_id as subject_id, subject_key, tags_json, sites_json, composition_json "
                f"from material_subjects where dataset = {_literal(self.params['dataset'])} order by subject_id")

    def prime(self, rows: list[dict[str, Any]]) -> None:
        """Compute every subject's vector at once (rows of ``input_sql``)."""
        kind = self.params["kind"]
        ok: list[dict[str, Any]] = []
        inputs: list[Any] = []
        table = element_table()
        for row in rows:
            sid = str(row["subject_id"])
            try:
                if kind == "defect":
                    tags = json.loads(row["tags_json"] or "{}")
                    cols = self.params["tag_columns"]
                    vals = [tags.get(cols[k]) for k in ("host", "site", "impurity", "type")]
                    if any(v is None for v in vals):
                        raise ValueError(f"expected tags {[cols[k] for k in ('host', 'site', 'impurity', 'type')]}, "
                                         f"found {sorted(tags)}")
                    for sym in (*split_host(vals[0]), vals[2]):
                        if sym not in table.index:
                            raise ValueError(f"unknown element {sym!r}")
                    # per-row check of the site and type: a bad one must not sink the batch
                    defect_features([vals[0]], [vals[1]], [vals[2]], [vals[3]], table)
                    inputs.append(vals)
                elif kind == "sites":
                    if not row["sites_json"]:
                        raise ValueError("expected sites (sites_json), found none")
                    inputs.append(json.loads(row["sites_json"]))
                else:
                    if not row["composition_json"]:
                        raise ValueError("expected a composition (composition_json), found none")
                    comp = {str(k): float(v) for k, v in json.loads(row["composition_json"]).items()}
                    unknown = [s for s in comp if s not in table.index]
                    if unknown:
                        raise ValueError(f"unknown species {unknown}")
                    inputs.append(comp)
                ok.append(row)
            except (ValueError, KeyError, TypeError) as exc:
                self._errors[sid] = str(exc)
        if not ok:
            return
        if kind == "defect":
            cols = list(zip(*inputs))
            x, names, units = defect_features(*cols, table=table)
        elif kind == "sites":
            x, names, units = site_features(inputs, self.params["pattern"], tuple(self.params["stats"]))
        else:
            x, names, units = composition_features(inputs, table, tuple(self.params["stats"]))
        params_json = json.dumps(self.params, sort_keys=True)
        for row, vec in zip(ok, x):
            sid = str(row["subject_id"])
            self._rows[sid] = {"record_id": derived_record_id(self.name, sid), "subject_id": sid,
                               "subject_table": self.subject_table, "featurizer": self.name,
                               "featurizer_version": self.version, "parameters_json": params_json,
                               "names": names, "values": [float(v) for v in vec], "units": units}

    def featurize_one(self, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        sid = str(row["subject_id"])
        if sid in self._errors:
            raise ValueError(self._errors[sid])
        if sid not in self._rows:  # not primed (a direct call): compute this one
            self.prime([row])
            if sid in self._errors:
                raise ValueError(self._errors[sid])
        return {"material_features": [self._rows[sid]]}


_COMMON: dict[str, Any] = {"dataset": None, "target": None, "fidelity": None, "featurizer": "materials-defect",
                           "kind": "rf", "seed": 0, "cv_folds": 5, "cv_seed": 0, "group_by": None, "regressor": {}}


class MaterialsRegressor(ModelModule):
    """One property at one fidelity of a dataset from its descriptor vectors (rf, gb or gp)."""

    version = "1"
    subject_table = "material_subjects"
    kinds: ClassVar[tuple[str, ...]] = ("rf", "gb", "gp")
    # exactly what rf/gb (trees) and gp (its kernel) artifacts hold beyond skops' defaults
    trusted_types = ("sklearn.tree._tree.Tree", "sklearn.gaussian_process.kernels.ConstantKernel",
                     "sklearn.gaussian_process.kernels.Product", "sklearn.gaussian_process.kernels.RBF",
                     "sklearn.gaussian_process.kernels.Sum", "sklearn.gaussian_process.kernels.WhiteKernel")

    def __init__(self, **params: Any) -> None:
        merged = {**_COMMON, **params}
        unknown = set(merged) - set(_COMMON) - {"n_inputs", "unit", "feature_names"}
        if unknown:
            raise ValueError(f"materials model: unknown parameter(s) {sorted(unknown)}; known: {sorted(_COMMON)}")
        for key in ("dataset", "target", "fidelity", "featurizer"):
            _check_name(key, merged[key])
        if merged["group_by"] is not None:
            _check_name("group_by", merged["group_by"])
        if merged["kind"] not in self.kinds:
            raise ValueError(f"{type(self).__name__}: kind: expected one of {', '.join(self.kinds)}, "
                             f"found {merged['kind']!r}")
        unknown = set(merged["regressor"]) - set(DEFAULTS[merged["kind"]])
        if unknown:
            raise ValueError(f"regressor {merged['kind']}: unknown parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(DEFAULTS[merged['kind']])}")
        super().__init__(**merged)

    @property
    def name(self) -> str:  # type: ignore[override]
        p = self.params
        return f"materials-{p['kind']}/{p['dataset']}/{p['target']}/{p['fidelity']}"

    @property
    def target(self) -> str:  # type: ignore[override]
        return str(self.params["target"])

    @property
    def unit(self) -> str:  # type: ignore[override]
        return str(self.params.get("unit") or "")

    @property
    def train_sql(self) -> str:  # type: ignore[override]
        p = self.params
        return ("select f.subject_id, f.\"values\" as x, t.value as y, t.unit, s.subject_key, s.tags_json "
                "from material_features f join material_targets t on t.subject_id = f.subject_id "
                "join material_subjects s on s.record_id = f.subject_id "
                f"where f.featurizer = {_literal(p['featurizer'])} and t.dataset = {_literal(p['dataset'])} "
                f"and t.name = {_literal(p['target'])} and t.fidelity = {_literal(p['fidelity'])} "
                "order by f.subject_id")

    @property
    def predict_sql(self) -> str:  # type: ignore[override]
        p = self.params
        return ("select f.subject_id, f.\"values\" as x from material_features f "
                "join material_subjects s on s.record_id = f.subject_id "
                f"where f.featurizer = {_literal(p['featurizer'])} and s.dataset = {_literal(p['dataset'])} "
                "order by f.subject_id")

    # ------------------------------------------------------------------ data
    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        if frame.empty:
            p = self.params
            raise ValueError(f"{self.name}: no rows: no {p['featurizer']} features of dataset {p['dataset']} with "
                             f"property {p['target']!r} at fidelity {p['fidelity']!r} (run matlake materials featurize)")
        dup = frame["subject_id"].duplicated()
        if dup.any():
            raise ValueError(f"{self.name}: expected one feature vector and one {self.target} value per subject, "
                             f"found several for {frame['subject_id'][dup].iloc[0]}")
        widths = frame["x"].map(len)
        want = int(self.params.get("n_inputs") or widths.iloc[0])
        bad = widths != want
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{self.name}: subject {frame['subject_id'].iloc[i]}: expected {want} features, "
                             f"found {widths.iloc[i]}")
        return np.vstack([np.asarray(v, dtype=float) for v in frame["x"]])

    def _cv(self, frame: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        p = self.params
        keys = frame["subject_key"].astype(str).tolist()
        reg = dict(p["regressor"])
        res = cross_validate(x, y[:, None], [self.target], keys, p["kind"], int(p["cv_folds"]), int(p["cv_seed"]),
                             seed=int(p["seed"]), **reg)
        metrics: dict[str, Any] = {"n_train": float(len(y)), **res.fold_info}
        metrics.update({f"cv_{k}": v for k, v in res.metrics[self.target].items()})
        if p["group_by"]:
            tags = [json.loads(t or "{}") for t in frame["tags_json"]]
            groups = [t.get(p["group_by"]) for t in tags]
            if any(g is None for g in groups):
                raise ValueError(f"{self.name}: group_by: expected tag {p['group_by']!r} on every subject, "
                                 f"found tags {sorted(tags[groups.index(None)])}")
            g = cross_validate(x, y[:, None], [self.target], keys, p["kind"], int(p["cv_folds"]), int(p["cv_seed"]),
                               groups=groups, grouped_by=p["group_by"], seed=int(p["seed"]), **reg)
            metrics.update({f"cv_grouped_{k}": v for k, v in g.metrics[self.target].items()})
            metrics["cv_grouped_fold_sha256"] = g.fold_info["cv_fold_sha256"]
            metrics["cv_grouped_by"] = p["group_by"]
        return metrics

    def _prepare(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        x = self.matrix(frame)
        units = set(frame["unit"].astype(str))
        if len(units) != 1:
            raise ValueError(f"{self.name}: expected one unit of {self.target}, found {sorted(units)}")
        self.params["unit"] = units.pop()
        self.params["n_inputs"] = int(x.shape[1])
        return x, frame["y"].to_numpy(float)

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
        x, y = self._prepare(frame)
        metrics = self._cv(frame, x, y)
        model = make_regressor(self.params["kind"], int(self.params["seed"]), **self.params["regressor"]).fit(x, y)
        return to_artifact(model), metrics

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        value, sigma = from_artifact(artifact).predict(self.matrix(frame))
        return pd.DataFrame({"subject_id": frame["subject_id"].astype(str).to_numpy(), "value": value,
                             "uncertainty": sigma})


class MaterialsMLP(TorchModelModule, MaterialsRegressor):
    """The torch MLP deep ensemble for one property (state dict artifact)."""

    kinds = ("mlp",)

    def __init__(self, **params: Any) -> None:
        MaterialsRegressor.__init__(self, **{"kind": "mlp", **params})

    def build_network(self) -> "torch.nn.Module":
        n = self.params.get("n_inputs")
        if not n:
            raise ValueError(f"{self.name}: the input width is unknown (params n_inputs); train the model first")
        return make_regressor("mlp", int(self.params["seed"]), **self.params["regressor"]).build(int(n))

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
        x, y = self._prepare(frame)
        metrics = self._cv(frame, x, y)
        model = make_regressor("mlp", int(self.params["seed"]), **self.params["regressor"]).fit(x, y)
        return model.net_, metrics

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        model = make_regressor("mlp", int(self.params["seed"]), **self.params["regressor"])
        model.net_ = artifact
        value, sigma = model.predict(self.matrix(frame))
        return pd.DataFrame({"subject_id": frame["subject_id"].astype(str).to_numpy(), "value": value,
                             "uncertainty": sigma})


MODEL_MODULES = {"rf": MaterialsRegressor, "gb": MaterialsRegressor, "gp": MaterialsRegressor, "mlp": MaterialsMLP}


def model_module(kind: str, **params: Any) -> MaterialsRegressor:
    """The model module for regressor ``kind`` (rf, gb, gp, mlp) with ``params``."""
    if kind not in MODEL_MODULES:
        raise ValueError(f"kind: expected one of {', '.join(MODEL_MODULES)}, found {kind!r}")
    return MODEL_MODULES[kind](kind=kind, **params)
