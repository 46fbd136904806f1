"""Model modules that learn labels of spectra from their feature vectors.

Every module here trains on a **view** joining ``spectrum_features`` (one
vector per spectrum, featurizer and grid) with ``spectrum_labels``; the view is
built from the module's parameters, which :func:`matlake.platform.modeling.train`
records with the model version (so ``predict`` rebuilds the same view):

``featurizer``  feature kind (``intensity``, ``derivative``, ``cdf``, ...; see
                :mod:`matlake.models.spectra.features`), default ``cdf``;
``grids``       named grids, one per edge (default ``["xanes-ni-k"]``).  With
                several grids the vectors of the spectra of one ``sample`` are
                concatenated in this order (multimodal fusion: a join on
                ``sample``); the first grid's spectrum is the row's subject;
``label``       the ``spectrum_labels.label`` to learn (default ``oxidation_state``),
                read from the first grid's spectrum;
``where``       optional SQL condition over the spectra row ``s`` and the
                feature row ``f`` choosing the training rows (e.g.
                ``s.sample like 'gen-xanes-train-%'``); the predict view covers
                every spectrum with features (``matlake predict --where`` narrows it).

Training rows name the first grid's ``spectrum_features`` record as subject, so
the train activity *used* the feature records (whose lineage reaches the
spectra and what made them); predictions are about ``spectra`` rows.  The other
edges' features of a fused row are fixed by the view SQL and the snapshot that
the model version records.

Cross-validation folds are fixed and recorded: a row's key is its ``sample``
(else its spectrum id); keys are ordered by ``sha256(cv_seed:key)`` and the
i-th key goes to fold ``i mod cv_folds`` (:func:`fold_assignment`).  The same
rows and seed always give the same folds, whatever the row order, and models
on different featurizers or edges of the same samples share their folds.  The
metrics carry ``cv_fold_sha256``, a digest of the (key, fold) pairs.

Uncertainty (the ``predictions.uncertainty`` column, one sigma in the label's unit):

- random-forest regression: the standard deviation of the trees' predictions;
- classification (random forest, gradient boosting): the standard deviation of the
  predicted class distribution over the numeric class values,
  ``sqrt(sum_c p_c (c - sum p c)^2)`` (``sqrt(p (1 - p))`` for a 0/1 label);
  the value is the most probable class;
- gradient-boosting regression: the standard deviation over the cross-validation
  ensemble (the chosen configuration refitted on each fold's training part);
- torch MLP and 1D CNN: the standard deviation over a deep ensemble of
  ``n_members`` networks trained from different seeds.

Gradient boosting picks its hyper-parameters by a **randomised search**
(``sklearn.model_selection.RandomizedSearchCV``, ``n_iter`` draws from fixed
distributions, seeded) scored on the same recorded folds; its ``cv_*`` metrics
are those folds' out-of-fold predictions with the chosen configuration, so they
are optimistic by the selection (no nested cross-validation).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from matlake.models.base import ModelModule, TorchModelModule
from matlake.models.spectra.features import FEATURE_KINDS

if TYPE_CHECKING:
    import torch

LABEL_UNITS = {"mean_ni_o_distance": "Angstrom", "energy_shift": "eV"}
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_COMMON_DEFAULTS: dict[str, Any] = {"featurizer": "cdf", "grids": ["xanes-ni-k"], "label": "oxidation_state",
                                    "where": None, "seed": 0, "cv_folds": 5, "cv_seed": 0}


def fold_assignment(keys: Any, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) of each key: keys ranked by sha256(f"{seed}:{key}"), rank mod n_folds.

    Balanced (fold sizes differ by at most one) and independent of the keys' order.
    """
    keys = [str(k) for k in keys]
    if n_folds < 2:
        raise ValueError(f"cv_folds: expected at least 2, found {n_folds}")
    if len(set(keys)) < n_folds:
        raise ValueError(f"cross-validation: expected at least {n_folds} distinct samples for {n_folds} folds, "
                         f"found {len(set(keys))}")
    digest = {k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest() for k in set(keys)}
    rank = {k: i for i, k in enumerate(sorted(digest, key=lambda k: (digest[k], k)))}
    return np.array([rank[k] % n_folds for k in keys], dtype=int)


def folds_digest(keys: Any, folds: np.ndarray) -> str:
    """sha256 of the sorted (key, fold) pairs: two trainings used the same folds iff equal."""
    text = "\n".join(f"{k}\t{f}" for k, f in sorted(zip((str(k) for k in keys), folds.tolist())))
    return hashlib.sha256(text.encode()).hexdigest()


def regression_metrics(y: np.ndarray, pred: np.ndarray, prefix: str = "cv_") -> dict[str, float]:
    """R^2, MAE and RMSE of ``pred`` against ``y`` (units of y), and the MAE of predicting the mean."""
    resid = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {f"{prefix}r2": float(1.0 - np.sum(resid ** 2) / ss_tot) if ss_tot > 0 else float("nan"),
            f"{prefix}mae": float(np.mean(np.abs(resid))), f"{prefix}rmse": float(np.sqrt(np.mean(resid ** 2))),
            "baseline_mae": float(np.mean(np.abs(y - y.mean())))}


def classification_metrics(y: np.ndarray, pred: np.ndarray, prefix: str = "cv_") -> dict[str, float]:
    """Accuracy and macro-F1 of class predictions, and the accuracy of always predicting the majority class."""
    from sklearn.metrics import f1_score

    values, counts = np.unique(y, return_counts=True)
    return {f"{prefix}accuracy": float(np.mean(pred == y)),
            f"{prefix}macro_f1": float(f1_score(y, pred, average="macro", labels=values)),
            "baseline_accuracy": float(counts.max() / len(y))}


def class_spread(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Standard deviation of the class distribution ``proba`` (rows) over numeric ``classes``."""
    c = np.asarray(classes, dtype=float)
    mean = proba @ c
    return np.sqrt(np.clip(proba @ (c ** 2) - mean ** 2, 0.0, None))


class SpectraModel(ModelModule):
    """Shared parameters, views and data handling of the spectra model modules (see the module docstring)."""

    base_name: ClassVar[str] = "spectra-model"
    classifier: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    subject_table = "spectrum_features"
    predict_subject_table = "spectra"
    trusted_types = ("sklearn.tree._tree.Tree",)

    def __init__(self, **params: Any) -> None:
        merged = {**_COMMON_DEFAULTS, **self.defaults, **params}
        if isinstance(merged["grids"], str):
            merged["grids"] = [g for g in merged["grids"].split(",") if g]
        unknown = set(merged) - set(_COMMON_DEFAULTS) - set(self.defaults) - {"n_inputs"}
        if unknown:
            raise ValueError(f"{self.base_name}: unknown parameter(s) {sorted(unknown)}; known: "
                             f"{sorted(set(_COMMON_DEFAULTS) | set(self.defaults))}")
        if merged["featurizer"] not in FEATURE_KINDS:
            raise ValueError(f"{self.base_name}: featurizer: expected one of {', '.join(FEATURE_KINDS)}, "
                             f"found {merged['featurizer']!r}")
        grids = merged["grids"]
        if not isinstance(grids, list) or not grids or len(set(grids)) != len(grids):
            raise ValueError(f"{self.base_name}: grids: expected a non-empty list of distinct grid names, "
                             f"found {grids!r}")
        for value in [*grids, merged["label"]]:
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(f"{self.base_name}: expected a grid or label name of letters, digits and ._+-, "
                                 f"found {value!r}")
        super().__init__(**merged)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:  # type: ignore[override]
        """``base/label/featurizer/grid[+grid]``: each combination numbers its own versions."""
        p = self.params
        return f"{self.base_name}/{p['label']}/{p['featurizer']}/{'+'.join(p['grids'])}"

    @property
    def target(self) -> str:  # type: ignore[override]
        return str(self.params["label"])

    @property
    def unit(self) -> str:  # type: ignore[override]
        return LABEL_UNITS.get(self.target, "")

    # ------------------------------------------------------------------ views
    def _edges_sql(self, training: bool) -> str:
        p = self.params
        # 'where' picks the training set; predictions cover every spectrum with features (matlake predict --where).
        cond = f" and ({p['where']})" if p["where"] and training else ""
        ctes = [f"e{i} as (select s.sample, f.record_id as feature_id, f.spectrum_id, f.vector "
                f"from spectrum_features f join spectra s on s.record_id = f.spectrum_id "
                f"where f.featurizer = '{p['featurizer']}' and f.grid_name = '{grid}'{cond})"
                for i, grid in enumerate(p["grids"])]
        vector = "e0.vector"
        joins = ""
        for i in range(1, len(p["grids"])):
            vector = f"list_concat({vector}, e{i}.vector)"
            joins += f" join e{i} on e{i}.sample = e0.sample"
        return f"with {', '.join(ctes)} select @SUBJECT@, e0.spectrum_id, e0.sample, {vector} as x from e0{joins}"

    @property
    def train_sql(self) -> str:  # type: ignore[override]
        base = self._edges_sql(True).replace("@SUBJECT@", "e0.feature_id as subject_id", 1)
        return (f"select v.*, l.value as y from ({base}) v join spectrum_labels l "
                f"on l.subject_id = v.spectrum_id and l.label = '{self.target}' "
                f"where l.value is not null order by v.subject_id")

    @property
    def predict_sql(self) -> str:  # type: ignore[override]
        base = self._edges_sql(False).replace("@SUBJECT@", "e0.spectrum_id as subject_id", 1)
        return f"select * from ({base}) order by subject_id"

    # ------------------------------------------------------------------ data
    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The feature matrix of a view's ``x`` column; errors name the first bad row."""
        if frame.empty:
            raise ValueError(f"{self.name}: no rows (no {self.params['featurizer']} features on "
                             f"{'+'.join(self.params['grids'])} with label {self.target!r} matched)")
        dup = frame["subject_id"].duplicated()
        if dup.any():
            sid = frame["subject_id"][dup].iloc[0]
            raise ValueError(f"{self.name}: expected one feature vector per spectrum and grid, found several for "
                             f"{sid} (features with different parameters, or a sample with two spectra of one "
                             f"edge); narrow them with the 'where' parameter, e.g. f.params_json = '...'")
        lengths = frame["x"].map(len)
        want = int(self.params.get("n_inputs") or lengths.iloc[0])
        bad = lengths != want
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{self.name}: subject {frame['subject_id'].iloc[i]}: expected a feature vector of "
                             f"{want} values, found {lengths.iloc[i]}")
        x = np.vstack([np.asarray(v, dtype=float) for v in frame["x"]])
        if not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise ValueError(f"{self.name}: subject {frame['subject_id'].iloc[i]}: expected finite features, "
                             "found NaN or infinity")
        return x

    def training_data(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(X, y, fold of each row, fold metrics) of a training view."""
        x = self.matrix(frame)
        y = frame["y"].to_numpy(float)
        if self.classifier and not np.allclose(y, np.round(y)):
            raise ValueError(f"{self.name}: a classifier needs integral label values for {self.target!r}, "
                             f"found e.g. {y[~np.isclose(y, np.round(y))][0]!r}")
        keys = [s if isinstance(s, str) and s else sid for s, sid in zip(frame["sample"], frame["spectrum_id"])]
        k, seed = int(self.params["cv_folds"]), int(self.params["cv_seed"])
        folds = fold_assignment(keys, k, seed)
        info: dict[str, Any] = {"n_train": float(len(y)), "cv_folds": float(k), "cv_seed": float(seed),
                                "cv_fold_sha256": folds_digest(keys, folds)}
        if self.classifier and len(np.unique(y)) < 2:
            raise ValueError(f"{self.name}: expected at least 2 classes of {self.target!r}, found {np.unique(y)}")
        return x, y, folds, info

    def cv_metrics(self, y: np.ndarray, oof: np.ndarray) -> dict[str, float]:
        return classification_metrics(y, oof) if self.classifier else regression_metrics(y, oof)

    def predict_matrix(self, frame: pd.DataFrame, estimator: Any) -> np.ndarray:
        """The feature matrix of a predict view, checked against the width the estimator was fitted on."""
        x = self.matrix(frame)
        want = getattr(estimator, "n_features_in_", x.shape[1])
        if x.shape[1] != want:
            raise ValueError(f"{self.name}: expected feature vectors of {want} values (as in training), found "
                             f"{x.shape[1]} (subject {frame['subject_id'].iloc[0]})")
        return x

    def _out(self, frame: pd.DataFrame, value: np.ndarray, sigma: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"subject_id": frame["subject_id"].to_numpy(), "value": np.asarray(value, float),
                             "uncertainty": np.asarray(sigma, float)})


# ---------------------------------------------------------------------------- random forests


class _ForestModel(SpectraModel):
    """Random forests: out-of-fold CV predictions on the recorded folds, then one forest on every row."""

    def _forest(self) -> Any:
        raise NotImplementedError

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
        x, y, folds, info = self.training_data(frame)
        oof = np.empty_like(y)
        for f in range(int(self.params["cv_folds"])):
            test = folds == f
            oof[test] = self._forest().fit(x[~test], y[~test]).predict(x[test])
        model = self._forest().fit(x, y)
        return model, {**info, **self.cv_metrics(y, oof)}


class SpectraForestClassifier(_ForestModel):
    """Random-forest classification of a spectrum label (default: Ni oxidation state 2/3/4)."""

    base_name = "spectra-rf-classifier"
    version = "1"
    classifier = True
    defaults = {"n_estimators": 200, "min_samples_leaf": 1}

    def _forest(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=int(self.params["n_estimators"]),
                                      min_samples_leaf=int(self.params["min_samples_leaf"]),
                                      random_state=int(self.params["seed"]), n_jobs=1)

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        proba = artifact.predict_proba(self.predict_matrix(frame, artifact))
        classes = artifact.classes_
        return self._out(frame, classes[np.argmax(proba, axis=1)], class_spread(proba, classes))


class SpectraForestRegressor(_ForestModel):
    """Random-forest regression of a spectrum label (oxidation state, Ni-O distance); sigma = spread over trees."""

    base_name = "spectra-rf-regressor"
    version = "1"
    defaults = {"n_estimators": 200, "min_samples_leaf": 1}

    def _forest(self):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=int(self.params["n_estimators"]),
                                     min_samples_leaf=int(self.params["min_samples_leaf"]),
                                     random_state=int(self.params["seed"]), n_jobs=1)

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        x = self.predict_matrix(frame, artifact)
        per_tree = np.stack([t.predict(x) for t in artifact.estimators_])
        return self._out(frame, per_tree.mean(axis=0), per_tree.std(axis=0))


# ---------------------------------------------------------------------------- gradient boosting


class _Boosting(SpectraModel):
    """Gradient boosting with a seeded randomised hyper-parameter search on the recorded folds."""

    defaults = {"n_iter": 12, "n_estimators_range": [50, 300], "learning_rate_range": [0.02, 0.3],
                "max_depth_range": [2, 5], "subsample_range": [0.6, 1.0], "min_samples_leaf_range": [1, 10]}

    def _estimator(self):
        raise NotImplementedError

    def search_space(self) -> dict[str, Any]:
        """The distributions the search draws from (recorded through the ``*_range`` parameters)."""
        from scipy.stats import loguniform, randint, uniform

        p = self.params
        lo_n, hi_n = p["n_estimators_range"]
        lo_lr, hi_lr = p["learning_rate_range"]
        lo_d, hi_d = p["max_depth_range"]
        lo_s, hi_s = p["subsample_range"]
        lo_l, hi_l = p["min_samples_leaf_range"]
        return {"n_estimators": randint(int(lo_n), int(hi_n) + 1), "learning_rate": loguniform(lo_lr, hi_lr),
                "max_depth": randint(int(lo_d), int(hi_d) + 1), "subsample": uniform(lo_s, hi_s - lo_s),
                "min_samples_leaf": randint(int(lo_l), int(hi_l) + 1)}

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
        from sklearn.base import clone
        from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

        x, y, folds, info = self.training_data(frame)
        scoring = "accuracy" if self.classifier else "neg_mean_absolute_error"
        search = RandomizedSearchCV(self._estimator(), self.search_space(), n_iter=int(self.params["n_iter"]),
                                    scoring=scoring, cv=PredefinedSplit(folds), refit=True, n_jobs=1,
                                    random_state=int(self.params["seed"]))
        search.fit(x, y)
        best = search.best_estimator_
        members, oof = [], np.empty_like(y)
        for f in range(int(self.params["cv_folds"])):
            test = folds == f
            m = clone(best).fit(x[~test], y[~test])
            oof[test] = m.predict(x[test])
            members.append(m)
        metrics = {**info, **self.cv_metrics(y, oof), "search_best_score": float(search.best_score_),
                   "search_n_iter": float(self.params["n_iter"])}
        metrics.update({f"best_{k}": float(v) for k, v in search.best_params_.items()})
        return {"model": best, "members": members}, metrics


class SpectraBoostingRegressor(_Boosting):
    """Gradient-boosting regression; sigma = spread of the cross-validation ensemble."""

    base_name = "spectra-gb-regressor"
    version = "1"

    def _estimator(self):
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(random_state=int(self.params["seed"]))

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        x = self.predict_matrix(frame, artifact["model"])
        spread = np.stack([m.predict(x) for m in artifact["members"]]).std(axis=0)
        return self._out(frame, artifact["model"].predict(x), spread)


class SpectraBoostingClassifier(_Boosting):
    """Gradient-boosting classification; sigma = spread of the predicted class distribution."""

    base_name = "spectra-gb-classifier"
    version = "1"
    classifier = True

    def _estimator(self):
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(random_state=int(self.params["seed"]))

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        model = artifact["model"]
        proba = model.predict_proba(self.predict_matrix(frame, model))
        return self._out(frame, model.classes_[np.argmax(proba, axis=1)], class_spread(proba, model.classes_))


# ---------------------------------------------------------------------------- torch


def select_device(preference: str = "auto") -> str:
    """'cuda' when ``preference`` is 'auto' and torch sees a GPU, else the preference ('cpu' or 'cuda')."""
    from matlake.optional import require_torch

    torch = require_torch("the spectra torch models")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', found {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch sees no CUDA device")
    return preference


def _ensemble_class():
    """The torch ensemble module (built lazily: torch is imported only when a torch model is used)."""
    from matlake.optional import require_torch

    torch = require_torch("the spectra torch models")
    nn = torch.nn

    class SpectraEnsemble(nn.Module):
        """``n_members`` networks and the scaling of inputs and target, kept as buffers."""

        def __init__(self, members: list[nn.Module], n_inputs: int) -> None:
            super().__init__()
            self.members = nn.ModuleList(members)
            self.register_buffer("x_mean", torch.zeros(n_inputs))
            self.register_buffer("x_scale", torch.ones(n_inputs))
            self.register_buffer("y_mean", torch.zeros(1))
            self.register_buffer("y_scale", torch.ones(1))

        def member_outputs(self, x: "torch.Tensor") -> "torch.Tensor":
            """(n_members, n) predictions in the label's unit."""
            z = (x - self.x_mean) / self.x_scale
            return torch.stack([m(z).squeeze(-1) for m in self.members]) * self.y_scale + self.y_mean

    return SpectraEnsemble


class _TorchSpectraModel(TorchModelModule, SpectraModel):
    """A deep ensemble regressor on spectrum feature vectors; sigma = spread over members."""

    defaults = {"n_members": 3, "epochs": 200, "batch_size": 64, "learning_rate": 1e-3, "weight_decay": 1e-4,
                "device": "auto"}
    per_feature_scaling: ClassVar[bool] = True

    def member(self, n_inputs: int) -> "torch.nn.Module":
        raise NotImplementedError

    def build_network(self) -> "torch.nn.Module":
        n = self.params.get("n_inputs")
        if not n:
            raise ValueError(f"{self.name}: the input width is unknown (params n_inputs); train the model first")
        return _ensemble_class()([self.member(int(n)) for _ in range(int(self.params["n_members"]))], int(n))

    def _train(self, x: np.ndarray, y: np.ndarray, device: str) -> "torch.nn.Module":
        from matlake.optional import require_torch

        torch = require_torch("the spectra torch models")
        p = self.params
        torch.manual_seed(int(p["seed"]))
        net = _ensemble_class()([self.member(x.shape[1]) for _ in range(int(p["n_members"]))], x.shape[1])
        if self.per_feature_scaling:
            mean, scale = x.mean(axis=0), x.std(axis=0)
        else:  # a convolution sees the spectrum's shape: one offset and scale for all points
            mean, scale = np.full(x.shape[1], x.mean()), np.full(x.shape[1], x.std())
        net.x_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        net.x_scale.copy_(torch.as_tensor(np.where(scale > 1e-12, scale, 1.0), dtype=torch.float32))
        net.y_mean.fill_(float(y.mean()))
        net.y_scale.fill_(float(y.std()) if y.std() > 1e-12 else 1.0)
        net.to(device)
        # copies: frame columns can be read-only numpy views, which torch refuses to wrap
        xt = torch.tensor(np.array(x, dtype=np.float32), device=device)
        zt = (torch.tensor(np.array(y, dtype=np.float32), device=device) - net.y_mean) / net.y_scale
        scaled = (xt - net.x_mean) / net.x_scale
        for i, member in enumerate(net.members):
            gen = torch.Generator().manual_seed(int(p["seed"]) * 1000 + i)  # each member its own batches
            opt = torch.optim.Adam(member.parameters(), lr=float(p["learning_rate"]),
                                   weight_decay=float(p["weight_decay"]))
            member.train()
            for _ in range(int(p["epochs"])):
                order = torch.randperm(len(y), generator=gen).to(device)
                for start in range(0, len(y), int(p["batch_size"])):
                    idx = order[start:start + int(p["batch_size"])]
                    opt.zero_grad()
                    loss = torch.nn.functional.mse_loss(member(scaled[idx]).squeeze(-1), zt[idx])
                    loss.backward()
                    opt.step()
            member.eval()
        return net.eval()

    def _predict_members(self, net: "torch.nn.Module", x: np.ndarray, device: str) -> np.ndarray:
        from matlake.optional import require_torch

        torch = require_torch("the spectra torch models")
        net = net.to(device).eval()
        with torch.no_grad():
            out = net.member_outputs(torch.as_tensor(x, dtype=torch.float32, device=device))
        return out.cpu().numpy().astype(float)

    def fit(self, frame: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
        x, y, folds, info = self.training_data(frame)
        device = select_device(str(self.params["device"]))
        oof = np.empty_like(y)
        for f in range(int(self.params["cv_folds"])):
            test = folds == f
            oof[test] = self._predict_members(self._train(x[~test], y[~test], device), x[test], device).mean(axis=0)
        net = self._train(x, y, device)
        # build_network (at load time) needs the input width: recorded with the model version's params.
        self.params["n_inputs"] = int(x.shape[1])
        return net.cpu(), {**info, **self.cv_metrics(y, oof), "trained_on_cuda": float(device == "cuda")}

    def predict(self, artifact: Any, frame: pd.DataFrame) -> pd.DataFrame:
        out = self._predict_members(artifact, self.matrix(frame), select_device(str(self.params["device"])))
        return self._out(frame, out.mean(axis=0), out.std(axis=0))


class SpectraMLPRegressor(_TorchSpectraModel):
    """Fully connected network in -> 128 -> 64 -> 1 (ReLU), a deep ensemble of ``n_members``."""

    base_name = "spectra-mlp-regressor"
    version = "1"

    def member(self, n_inputs: int) -> "torch.nn.Module":
        from matlake.optional import require_torch

        nn = require_torch("the spectra torch models").nn
        return nn.Sequential(nn.Linear(n_inputs, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1))


class SpectraCNNRegressor(_TorchSpectraModel):
    """1D convolutional network over the feature vector (a spectrum on its grid), a deep ensemble.

    Conv1d(1->16, 7) ReLU MaxPool(2) Conv1d(16->32, 5) ReLU AdaptiveAvgPool(8) -> 256 -> 64 -> 1.
    """

    base_name = "spectra-cnn-regressor"
    version = "1"
    per_feature_scaling = False

    def member(self, n_inputs: int) -> "torch.nn.Module":
        from matlake.optional import require_torch

        nn = require_torch("the spectra torch models").nn
        return nn.Sequential(nn.Unflatten(1, (1, n_inputs)), nn.Conv1d(1, 16, 7, padding=3), nn.ReLU(),
                             nn.MaxPool1d(2), nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(8),
                             nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 1))


MODEL_MODULES = {cls.base_name: cls for cls in (SpectraForestClassifier, SpectraForestRegressor,
                                                SpectraBoostingRegressor, SpectraBoostingClassifier,
                                                SpectraMLPRegressor, SpectraCNNRegressor)}
