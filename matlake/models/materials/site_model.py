"""A per-property regressor on per-site descriptors, trained on tabular material data.

:class:`SiteRegressor` is a :class:`~matlake.models.base.ModelModule` for
campaigns: it trains on ``material_properties`` x ``material_subjects``
(``sites_json``: site -> {species: fraction}) and uses the campaign's
``site-mean`` descriptors (per-site fraction-weighted elemental properties),
so a campaign scores candidates with features made exactly as in training.
``kind = "gp"`` (default): standardised features, Gaussian process with a
constant x RBF (one length scale per feature) + white-noise kernel, whose
predictive std is the uncertainty; ``kind = "rf"``: random forest, std over
trees.  Parameters: ``property`` (required), ``dataset``, ``fidelity``,
``sites`` (site names in order), ``properties`` (elemental properties),
``table`` (extra species values), ``seed``, ``cv_folds``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from matlake.models.base import ModelModule


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def site_mean_from_sites(sites: Sequence[Mapping[str, Mapping[str, float]]], site_names: Sequence[str],
                         properties: Sequence[str], table: Mapping[str, Mapping[str, float]] | None = None
                         ) -> tuple[np.ndarray, list[str]]:
    """The ``site-mean`` descriptors (columns ``<site>_<property>``) of occupations
    ``{site: {species: fraction}}`` (fractions normalised per site)."""
    from matlake.models.materials.campaign import ELEMENT_PROPERTIES

    tab = {**ELEMENT_PROPERTIES, **{k: dict(v) for k, v in (table or {}).items()}}
    x = np.zeros((len(sites), len(site_names) * len(properties)))
    for i, occ in enumerate(sites):
        for j, s in enumerate(site_names):
            o = occ.get(s)
            if not o:
                raise ValueError(f"site-mean: subject {i} has no occupation for site {s!r} (found {sorted(occ)})")
            total = sum(float(v) for v in o.values())
            for k, p in enumerate(properties):
                try:
                    x[i, j * len(properties) + k] = sum(float(f) / total * tab[sp][p] for sp, f in o.items())
                except KeyError as exc:
                    raise ValueError(f"site-mean: no {p!r} for species {exc.args[0]!r}") from None
    return x, [f"{s}_{p}" for s in site_names for p in properties]


class SiteRegressor(ModelModule):
    version = "1"
    unit = ""
    subject_table = "material_subjects"
    trusted_types = ("sklearn.tree._tree.Tree", "sklearn.gaussian_process.kernels.ConstantKernel",
                     "sklearn.gaussian_process.kernels.Product", "sklearn.gaussian_process.kernels.RBF",
                     "sklearn.gaussian_process.kernels.Sum", "sklearn.gaussian_process.kernels.WhiteKernel")

    def __init__(self, **params: Any) -> None:
        if "property" not in params:
            raise ValueError("SiteRegressor: parameter 'property' is required")
        params.setdefault("kind", "gp")
        params.setdefault("sites", ["A", "B", "X"])
        params.setdefault("properties", ["ionic_radius", "mass"])
        params.setdefault("seed", 0)
        params.setdefault("cv_folds", 5)
        if params["kind"] not in ("gp", "rf"):
            raise ValueError(f"SiteRegressor: kind must be 'gp' or 'rf', found {params['kind']!r}")
        super().__init__(**params)
        self.name = f"site-{params['kind']}-{params['property']}"
        self.target = str(params["property"])
        self.unit = str(params.get("unit", ""))

    @property
    def train_sql(self) -> str:  # type: ignore[override]
        p = self.params
        where = [f"p.name = {_quote(p['property'])}", "s.sites_json is not null"]
        if p.get("dataset"):
            where.append(f"p.dataset = {_quote(p['dataset'])}")
        if p.get("fidelity"):
            where.append(f"p.fidelity = {_quote(p['fidelity'])}")
        return ("select s.record_id as subject_id, s.sites_json, p.value as target "
                "from material_properties p join material_subjects s on s.record_id = p.subject_id "
                f"where {' and '.join(where)} order by s.record_id")

    @property
    def predict_sql(self) -> str:  # type: ignore[override]
        return "select record_id as subject_id, sites_json from material_subjects where sites_json is not null"

    def features(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        sites = [json.loads(s) for s in frame["sites_json"]]
        return site_mean_from_sites(sites, self.params["sites"], self.params["properties"], self.params.get("table"))

    def _estimator(self) -> Any:
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        seed = int(self.params["seed"])
        if self.params["kind"] == "rf":
            return RandomForestRegressor(n_estimators=200, random_state=seed, min_samples_leaf=2)
        n = len(self.params["sites"]) * len(self.params["properties"])
        kernel = ConstantKernel(1.0) * RBF(length_scale=np.ones(n), length_scale_bounds=(1e-2, 1e3)) \
            + WhiteKernel(1e-2, noise_level_bounds=(1e-6, 1.0))
        return Pipeline([("scale", StandardScaler()),
                         ("gp", GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=int(self.params.get("restarts", 0)),
                                                         random_state=seed))])

    def _predict_x(self, est: Any, x: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.params["kind"] == "rf":
            per_tree = np.stack([t.predict(x.to_numpy()) for t in est.estimators_])
            return per_tree.mean(0), per_tree.std(0)
        scaled = est.named_steps["scale"].transform(x)
        mean, std = est.named_steps["gp"].predict(scaled, return_std=True)
        return mean, std

    def cv_predictions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Out-of-fold predictions (subject_id, target, predicted, std) with folds seeded by ``seed``."""
        from sklearn.model_selection import KFold

        x, names = self.features(frame)
        xf = pd.DataFrame(x, columns=names)
        y = frame["target"].to_numpy(float)
        pred, std = np.zeros(len(y)), np.zeros(len(y))
        folds = KFold(n_splits=min(int(self.params["cv_folds"]), len(y)), shuffle=True,
                      random_state=int(self.params["seed"]))
        for tr, te in folds.split(xf):
            est = self._estimator()
            est.fit(xf.iloc[tr] if self.params["kind"] == "gp" else xf.iloc[tr].to_numpy(), y[tr])
            pred[te], std[te] = self._predict_x(est, xf.iloc[te])
        return pd.DataFrame({"subject_id": frame["subject_id"].to_numpy(), "target": y, "predicted": pred,
                             "std": std})

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        from threadpoolctl import threadpool_limits

        # Small dense problems: BLAS threads only contend (5x slower on a shared 2-core machine).
        with threadpool_limits(1):
            return self._fit(frame)

    def _fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        if len(frame) < 3:
            raise ValueError(f"{self.name}: needs at least 3 training rows, found {len(frame)}")
        cv = self.cv_predictions(frame)
        err = cv["predicted"] - cv["target"]
        base = cv["target"] - cv["target"].mean()
        metrics = {"cv_rmse": float(np.sqrt(np.mean(err ** 2))), "cv_mae": float(np.mean(np.abs(err))),
                   "cv_rmse_mean_predictor": float(np.sqrt(np.mean(base ** 2))), "n_train": float(len(frame))}
        x, names = self.features(frame)
        est = self._estimator()
        xf = pd.DataFrame(x, columns=names)
        est.fit(xf if self.params["kind"] == "gp" else x, frame["target"].to_numpy(float))
        return est, metrics

    def feature_names(self) -> list[str]:
        return [f"{s}_{p}" for s in self.params["sites"] for p in self.params["properties"]]

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        names = self.feature_names()
        if all(n in frame.columns for n in names):
            x = frame[names]
        else:
            x = pd.DataFrame(self.features(frame)[0], columns=names)
        mean, std = self._predict_x(artifact, x)
        return pd.DataFrame({"subject_id": frame["subject_id"].astype(str).to_numpy(), "value": mean,
                             "uncertainty": std})
