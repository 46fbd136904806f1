"""Composition-only regression of DFT quantities (energy per atom, band gap).

Features are fraction-weighted statistics (mean, std, min, max) of element
properties from pymatgen's periodic table, in the spirit of Magpie
(Ward et al., npj Comput. Mater. 2, 16028 (2016)); the estimator is a random
forest whose spread over trees is reported as the one-sigma uncertainty.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from matlake.models.base import ModelModule

ELEMENT_PROPERTIES = ("Z", "X", "row", "group", "atomic_mass", "atomic_radius", "mendeleev_no")


@lru_cache(maxsize=256)
def _element_vector(symbol: str) -> tuple[float, ...]:
    from pymatgen.core import Element

    el = Element(symbol)
    vals = []
    for prop in ELEMENT_PROPERTIES:
        v = getattr(el, prop)
        vals.append(float(v) if v is not None and np.isfinite(float(v)) else np.nan)
    return tuple(vals)


def composition_features(formula: str) -> np.ndarray:
    """Fraction-weighted mean, std, min and max of each element property
    (units of the property: Z -, X Pauling, mass amu, radius Angstrom)."""
    from pymatgen.core import Composition

    comp = Composition(formula).fractional_composition
    els = [str(e) for e in comp.elements]
    w = np.array([comp[e] for e in els])
    props = np.array([_element_vector(e) for e in els])  # (n_el, n_prop)
    mean = w @ props
    std = np.sqrt(np.maximum(w @ (props - mean) ** 2, 0.0))
    return np.concatenate([mean, std, props.min(axis=0), props.max(axis=0), [len(els)]])


def feature_names() -> list[str]:
    return [f"{s}_{p}" for s in ("mean", "std", "min", "max") for p in ELEMENT_PROPERTIES] + ["n_elements"]


class CompositionRegressor(ModelModule):
    """Random-forest regression of a `calculations` quantity from the reduced formula."""

    name = "composition-regressor"
    version = "1"
    target = "energy_per_atom"
    unit = "eV/atom"
    subject_table = "calculations"
    train_sql = (
        "select record_id as subject_id, reduced_formula, energy_per_atom as y from calculations "
        "where energy_per_atom is not null and reduced_formula is not null"
    )
    # Predict for every structure in the lake (including ones with no calculation).
    predict_subject_table = "structures"
    predict_sql = "select record_id as subject_id, reduced_formula from structures where reduced_formula is not null"
    # The artifact is a skops zip; a forest's trees are the one type skops does not trust by default.
    trusted_types = ("sklearn.tree._tree.Tree",)

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        x = np.vstack([composition_features(f) for f in frame["reduced_formula"]])
        return np.nan_to_num(x, nan=0.0)

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, float]]:
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.model_selection import KFold, cross_val_predict

        if len(frame) < 3:
            raise ValueError(f"{self.name}: expected at least 3 training rows, found {len(frame)}")
        x, y = self._x(frame), frame["y"].to_numpy(float)
        model = RandomForestRegressor(n_estimators=int(self.params.get("n_estimators", 200)),
                                      random_state=int(self.params.get("seed", 0)), min_samples_leaf=1)
        folds = min(5, len(frame))
        cv = cross_val_predict(model, x, y, cv=KFold(folds, shuffle=True, random_state=0))
        model.fit(x, y)
        metrics = {
            "n_train": float(len(y)),
            "cv_folds": float(folds),
            "cv_mae": float(np.mean(np.abs(cv - y))),
            "train_mae": float(np.mean(np.abs(model.predict(x) - y))),
            "baseline_mae": float(np.mean(np.abs(y - y.mean()))),
        }
        return model, metrics

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        x = self._x(frame)
        per_tree = np.stack([t.predict(x) for t in artifact.estimators_])
        return pd.DataFrame({"subject_id": frame["subject_id"].to_numpy(), "value": per_tree.mean(axis=0),
                             "uncertainty": per_tree.std(axis=0)})
