"""Multi-target regressors with uncertainty, and cross-validation on recorded, seeded folds.

Data: ``X`` (n, d) float with NaN for missing descriptors, ``Y`` (n, t) float with NaN for
missing targets.  Each target gets its own model, fitted on the rows where that target is
finite; missing descriptors are filled with the training rows' column medians (inside the
model, so prediction fills them the same way).

Regressors (:data:`REGRESSORS`, :func:`make_regressor`), each ``fit(X, y)`` then
``predict(X) -> (mean, std)`` with ``std`` one sigma in the target's unit:

- ``rf``: random forest; sigma = standard deviation of the trees' predictions; targets
  with values on the same rows share one multi-output forest (:func:`target_blocks`);
- ``gb``: gradient boosting, ``n_members`` models with different seeds and row
  subsampling (0.8); value = their mean; sigma combines their spread with the half-width of
  two quantile models (16 % / 84 %), see :class:`BoostingRegressor`;
- ``gp``: Gaussian process (constant x RBF + white noise on standardised descriptors, one
  length scale per descriptor when there are at most 10 (``ard``), hyper-parameters by
  maximum marginal likelihood, ``normalize_y``); sigma = the GP's predictive standard
  deviation (noise included);
- ``mlp``: a torch MLP per property (d -> 64 -> 32 -> 1, ReLU), a deep ensemble of
  ``n_members`` networks from different seeds as in the perovskite study's per-property
  networks; sigma = the members' spread.

Folds (:func:`make_folds`): the fold of a subject is a function of (key, ``cv_seed``) only:
keys ranked by sha256(f"{cv_seed}:{key}"), rank mod ``n_folds``
(:func:`matlake.models.spectra.models.fold_assignment`), so the same subjects always get
the same folds in any order.  With ``groups`` (e.g. the impurity element, or the host),
the group's key decides and every subject of a group shares its fold (no leakage of a
group between training and test).  ``cv_fold_sha256`` digests the (key, fold) pairs.

Metrics per target (:func:`cross_validate`): out-of-fold RMSE, MAE and R^2, and the
**mean predictor** under the same folds (predict each test fold with the mean of its
training rows): ``baseline_rmse``, ``baseline_mae``; ``coverage_2sigma`` is the fraction
of out-of-fold errors within two predicted sigmas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from matlake.models.spectra.models import fold_assignment, folds_digest

if TYPE_CHECKING:
    import torch

KINDS = ("rf", "gb", "gp", "mlp")
DEFAULTS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 200, "min_samples_leaf": 1, "max_features": 0.5},
    "gb": {"n_members": 3, "n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "quantiles": True},
    "gp": {"n_restarts": 0, "ard": "auto"},
    "mlp": {"n_members": 3, "epochs": 300, "learning_rate": 3e-3, "weight_decay": 1e-4, "hidden": [64, 32]},
}


def make_folds(keys: Sequence[Any], n_folds: int = 5, cv_seed: int = 0,
               groups: Sequence[Any] | None = None, grouped_by: str = "") -> tuple[np.ndarray, dict[str, Any]]:
    """(fold of each row, fold record) with the fold a function of (key or group, cv_seed)."""
    keys = [str(k) for k in keys]
    basis = keys if groups is None else [str(g) for g in groups]
    folds = fold_assignment(basis, n_folds, cv_seed)
    info = {"cv_folds": int(n_folds), "cv_seed": int(cv_seed), "cv_grouped_by": grouped_by if groups is not None else "",
            "cv_fold_sha256": folds_digest(keys, folds)}
    return folds, info


def _medians(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        med = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0) if len(x) else np.zeros(x.shape[1])
    return np.where(np.isfinite(med), med, 0.0)  # a column with no value at all: 0


def _fill(x: np.ndarray, med: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.where(np.isfinite(x), x, med[None, :])


class ForestRegressor:
    """Random forest; sigma = spread of the trees."""

    kind = "rf"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.params = {**DEFAULTS["rf"], **params}
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ForestRegressor":
        from sklearn.ensemble import RandomForestRegressor

        self.fill_ = _medians(x)
        p = self.params
        self.model_ = RandomForestRegressor(n_estimators=int(p["n_estimators"]), min_samples_leaf=int(p["min_samples_leaf"]),
                                            max_features=p["max_features"], random_state=self.seed, n_jobs=1)
        self.model_.fit(_fill(x, self.fill_), y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xf = _fill(x, self.fill_)
        per_tree = np.stack([t.predict(xf) for t in self.model_.estimators_])
        return per_tree.mean(axis=0), per_tree.std(axis=0)


class BoostingRegressor:
    """Gradient boosting: a small seed ensemble with row subsampling for the value, and two
    quantile models (15.87 % and 84.13 %, i.e. +-1 sigma of a normal) for the noise; sigma =
    sqrt(members' spread^2 + ((q84 - q16) / 2)^2).  The seed spread alone covered only ~17 % of
    the out-of-fold errors within 2 sigma on the impurity levels."""

    kind = "gb"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.params = {**DEFAULTS["gb"], **params}
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> "BoostingRegressor":
        from sklearn.ensemble import GradientBoostingRegressor

        self.fill_ = _medians(x)
        p = self.params
        xf = _fill(x, self.fill_)
        self.members_ = [GradientBoostingRegressor(n_estimators=int(p["n_estimators"]), learning_rate=float(p["learning_rate"]),
                                                   max_depth=int(p["max_depth"]), subsample=0.8,
                                                   random_state=self.seed * 1000 + i).fit(xf, y)
                         for i in range(int(p["n_members"]))]
        self.quantiles_ = ([GradientBoostingRegressor(loss="quantile", alpha=a, n_estimators=int(p["n_estimators"]),
                                                      learning_rate=float(p["learning_rate"]),
                                                      max_depth=int(p["max_depth"]), subsample=0.8,
                                                      random_state=self.seed * 1000 + 999).fit(xf, y)
                            for a in (0.15865525, 0.84134475)] if p["quantiles"] else [])
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xf = _fill(x, self.fill_)
        out = np.stack([m.predict(xf) for m in self.members_])
        var = out.var(axis=0)
        if self.quantiles_:
            lo, hi = (q.predict(xf) for q in self.quantiles_)
            var = var + (np.abs(hi - lo) / 2) ** 2  # abs: the two quantile fits may cross
        return out.mean(axis=0), np.sqrt(var)


class GPRegressor:
    """Gaussian process on standardised descriptors; sigma = predictive standard deviation."""

    kind = "gp"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.params = {**DEFAULTS["gp"], **params}
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GPRegressor":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        self.fill_ = _medians(x)
        xf = _fill(x, self.fill_)
        self.mean_ = xf.mean(axis=0)
        sd = xf.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        d = xf.shape[1]
        ard = self.params["ard"]
        ard = d <= 10 if ard == "auto" else bool(ard)
        # one length scale per descriptor (ARD) when there are few: it lets e.g. a fidelity column
        # have its own scale; with many descriptors one shared scale keeps the fit cheap and stable
        length = np.full(d, np.sqrt(d)) if ard else np.sqrt(d)
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(length_scale=length, length_scale_bounds=(1e-2, 1e4))
                  + WhiteKernel(0.1, (1e-6, 1e1)))
        self.model_ = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=self.seed,
                                               n_restarts_optimizer=int(self.params["n_restarts"]))
        with _one_blas_thread():
            self.model_.fit((xf - self.mean_) / self.scale_, y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (_fill(x, self.fill_) - self.mean_) / self.scale_
        with _one_blas_thread():
            mean, std = self.model_.predict(z, return_std=True)
        return np.asarray(mean, float), np.asarray(std, float)


def _one_blas_thread() -> Any:
    """Small dense solves: BLAS threads only contend (measured 3x slower with 2 threads on a busy machine)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def mlp_ensemble_class():
    """The torch deep-ensemble module (built lazily: torch is imported only when used)."""
    from matlake.optional import require_torch

    torch = require_torch("the materials MLP regressor")
    nn = torch.nn

    class MaterialsMLPEnsemble(nn.Module):
        """``n_members`` MLPs plus the fill values and scaling of inputs and target, as buffers
        (so the state dict alone reproduces predictions)."""

        def __init__(self, n_inputs: int, n_members: int, hidden: Sequence[int]) -> None:
            super().__init__()

            def member() -> nn.Module:
                layers: list[nn.Module] = []
                width = n_inputs
                for h in hidden:
                    layers += [nn.Linear(width, int(h)), nn.ReLU()]
                    width = int(h)
                return nn.Sequential(*layers, nn.Linear(width, 1))

            self.members = nn.ModuleList([member() for _ in range(n_members)])
            self.register_buffer("x_fill", torch.zeros(n_inputs))
            self.register_buffer("x_mean", torch.zeros(n_inputs))
            self.register_buffer("x_scale", torch.ones(n_inputs))
            self.register_buffer("y_mean", torch.zeros(1))
            self.register_buffer("y_scale", torch.ones(1))

        def scaled(self, x: "torch.Tensor") -> "torch.Tensor":
            x = torch.where(torch.isfinite(x), x, self.x_fill)
            return (x - self.x_mean) / self.x_scale

        def member_outputs(self, x: "torch.Tensor") -> "torch.Tensor":
            """(n_members, n) predictions in the target's unit."""
            z = self.scaled(x)
            return torch.stack([m(z).squeeze(-1) for m in self.members]) * self.y_scale + self.y_mean

    return MaterialsMLPEnsemble


class MLPRegressor:
    """Torch MLP deep ensemble for one property; sigma = members' spread."""

    kind = "mlp"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.params = {**DEFAULTS["mlp"], **params}
        self.seed = seed

    def build(self, n_inputs: int) -> "torch.nn.Module":
        return mlp_ensemble_class()(n_inputs, int(self.params["n_members"]), self.params["hidden"])

    def fit(self, x: np.ndarray, y: np.ndarray) -> "MLPRegressor":
        from matlake.optional import require_torch

        torch = require_torch("the materials MLP regressor")
        with _torch_threads(torch, 1):
            return self._fit(torch, x, y)

    def _fit(self, torch: Any, x: np.ndarray, y: np.ndarray) -> "MLPRegressor":
        p = self.params
        torch.manual_seed(int(self.seed))
        net = self.build(x.shape[1])
        fill = _medians(x)
        xf = _fill(x, fill)
        sd = xf.std(axis=0)
        net.x_fill.copy_(torch.as_tensor(fill, dtype=torch.float32))
        net.x_mean.copy_(torch.as_tensor(xf.mean(axis=0), dtype=torch.float32))
        net.x_scale.copy_(torch.as_tensor(np.where(sd > 1e-12, sd, 1.0), dtype=torch.float32))
        net.y_mean.fill_(float(y.mean()))
        net.y_scale.fill_(float(y.std()) if y.std() > 1e-12 else 1.0)
        z = net.scaled(torch.tensor(np.array(x, dtype=np.float32)))
        t = (torch.tensor(np.array(y, dtype=np.float32)) - net.y_mean) / net.y_scale
        for i, m in enumerate(net.members):
            torch.manual_seed(int(self.seed) * 1000 + i)  # each member its own initialisation
            for layer in m:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            opt = torch.optim.Adam(m.parameters(), lr=float(p["learning_rate"]), weight_decay=float(p["weight_decay"]))
            m.train()
            for _ in range(int(p["epochs"])):  # full batch: the data sets are small (10^2-10^4 rows)
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(m(z).squeeze(-1), t)
                loss.backward()
                opt.step()
            m.eval()
        self.net_ = net.eval()
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from matlake.optional import require_torch

        torch = require_torch("the materials MLP regressor")
        with _torch_threads(torch, 1), torch.no_grad():
            out = self.net_.member_outputs(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy().astype(float)
        return out.mean(axis=0), out.std(axis=0)


def to_artifact(model: Any) -> dict[str, Any]:
    """A fitted rf/gb/gp regressor as a dict of sklearn estimators and numpy arrays (skops-safe)."""
    if isinstance(model, ForestRegressor):
        return {"kind": "rf", "seed": model.seed, "fill": model.fill_, "model": model.model_}
    if isinstance(model, BoostingRegressor):
        return {"kind": "gb", "seed": model.seed, "fill": model.fill_, "members": list(model.members_),
                "quantiles": list(model.quantiles_)}
    if isinstance(model, GPRegressor):
        return {"kind": "gp", "seed": model.seed, "fill": model.fill_, "mean": model.mean_, "scale": model.scale_,
                "model": model.model_}
    raise TypeError(f"to_artifact: expected a fitted rf, gb or gp regressor, found {type(model).__name__}")


def from_artifact(artifact: dict[str, Any]) -> Any:
    """The regressor of :func:`to_artifact`'s dict, ready to ``predict``."""
    kind = artifact.get("kind")
    if kind not in ("rf", "gb", "gp"):
        raise ValueError(f"artifact: expected kind rf, gb or gp, found {kind!r}")
    model = REGRESSORS[kind](seed=int(artifact["seed"]))
    model.fill_ = np.asarray(artifact["fill"], float)
    if kind == "gb":
        model.members_ = list(artifact["members"])
        model.quantiles_ = list(artifact.get("quantiles", []))
    else:
        model.model_ = artifact["model"]
    if kind == "gp":
        model.mean_, model.scale_ = np.asarray(artifact["mean"], float), np.asarray(artifact["scale"], float)
    return model


class _torch_threads:
    """Run with ``n`` torch threads, then restore: tiny full-batch networks only lose time to
    thread hand-offs (measured 5x slower with 2 threads on a busy 2-core machine)."""

    def __init__(self, torch: Any, n: int) -> None:
        self.torch, self.n = torch, n

    def __enter__(self) -> None:
        self.before = self.torch.get_num_threads()
        self.torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        self.torch.set_num_threads(self.before)


REGRESSORS = {"rf": ForestRegressor, "gb": BoostingRegressor, "gp": GPRegressor, "mlp": MLPRegressor}


def make_regressor(kind: str, seed: int = 0, **params: Any) -> Any:
    """A fresh regressor of ``kind`` (one of :data:`KINDS`) with ``seed`` and parameters over :data:`DEFAULTS`."""
    if kind not in REGRESSORS:
        raise ValueError(f"regressor: expected one of {', '.join(KINDS)}, found {kind!r}")
    unknown = set(params) - set(DEFAULTS[kind])
    if unknown:
        raise ValueError(f"regressor {kind}: unknown parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS[kind])}")
    return REGRESSORS[kind](seed=seed, **params)


class MultiTargetRegressor:
    """One regressor of ``kind`` per target column, each fitted on the rows where its target is finite."""

    def __init__(self, kind: str, targets: Sequence[str], seed: int = 0, **params: Any) -> None:
        self.kind, self.targets, self.seed, self.params = kind, list(targets), seed, params

    def fit(self, x: np.ndarray, y: np.ndarray) -> "MultiTargetRegressor":
        y = np.asarray(y, float).reshape(len(x), -1)
        if y.shape[1] != len(self.targets):
            raise ValueError(f"expected {len(self.targets)} target columns, found {y.shape[1]}")
        self.blocks_ = target_blocks(self.kind, y)
        self.models_ = []
        for cols in self.blocks_:
            rows = np.isfinite(y[:, cols[0]])
            if rows.sum() < 2:
                raise ValueError(f"target {self.targets[cols[0]]}: expected at least 2 rows with a value, "
                                 f"found {int(rows.sum())}")
            yt = y[rows][:, cols]
            self.models_.append(make_regressor(self.kind, self.seed, **self.params)
                                .fit(x[rows], yt if len(cols) > 1 else yt[:, 0]))
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sigma), each (n, n_targets)."""
        mean = np.empty((len(x), len(self.targets)))
        sigma = np.empty_like(mean)
        for cols, model in zip(self.blocks_, self.models_):
            m, s = model.predict(x)
            mean[:, cols] = np.asarray(m).reshape(len(x), len(cols))
            sigma[:, cols] = np.asarray(s).reshape(len(x), len(cols))
        return mean, sigma


def regression_metrics(y: np.ndarray, pred: np.ndarray, base: np.ndarray, sigma: np.ndarray | None = None) -> dict[str, float]:
    """RMSE, MAE, R^2 of ``pred`` and RMSE/MAE of the mean-predictor ``base`` against ``y`` (y's unit)."""
    r, rb = pred - y, base - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    out = {"n": float(len(y)), "rmse": float(np.sqrt(np.mean(r ** 2))), "mae": float(np.mean(np.abs(r))),
           "r2": float(1 - np.sum(r ** 2) / ss_tot) if ss_tot > 0 else float("nan"),
           "baseline_rmse": float(np.sqrt(np.mean(rb ** 2))), "baseline_mae": float(np.mean(np.abs(rb)))}
    if sigma is not None:
        out["coverage_2sigma"] = float(np.mean(np.abs(r) <= 2 * sigma))
    return out


@dataclass
class CVResult:
    """Out-of-fold predictions and per-target metrics of one regressor under one set of folds."""

    kind: str
    targets: list[str]
    folds: np.ndarray
    fold_info: dict[str, Any]
    oof: np.ndarray
    oof_sigma: np.ndarray
    baseline: np.ndarray
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per target: n, rmse, mae, r2, baseline_rmse, baseline_mae, coverage_2sigma."""
        return pd.DataFrame.from_dict(self.metrics, orient="index").rename_axis("target")

    def flat_metrics(self, prefix: str = "cv_") -> dict[str, Any]:
        """``{prefix}<metric>/<target>`` plus the fold record, for a model version's metrics."""
        out: dict[str, Any] = {f"{k}": v for k, v in self.fold_info.items()}
        for t, m in self.metrics.items():
            out.update({f"{prefix}{k}/{t}": v for k, v in m.items()})
        return out


def cross_validate(x: np.ndarray, y: np.ndarray, targets: Sequence[str], keys: Sequence[Any], kind: str = "rf",
                   n_folds: int = 5, cv_seed: int = 0, groups: Sequence[Any] | None = None, grouped_by: str = "",
                   seed: int = 0, **params: Any) -> CVResult:
    """Out-of-fold predictions of ``kind`` per target on folds of (keys or groups, cv_seed); see the module docstring."""
    x = np.asarray(x, float)
    y = np.asarray(y, float).reshape(len(x), -1)
    folds, info = make_folds(keys, n_folds, cv_seed, groups, grouped_by)
    oof = np.full(y.shape, np.nan)
    sig = np.full(y.shape, np.nan)
    base = np.full(y.shape, np.nan)
    for cols in target_blocks(kind, y):
        has = np.isfinite(y[:, cols[0]])
        for f in range(n_folds):
            test, train = has & (folds == f), has & (folds != f)
            if not test.any():
                continue
            if train.sum() < 2:
                raise ValueError(f"target {targets[cols[0]]}, fold {f}: expected at least 2 training rows, "
                                 f"found {int(train.sum())}")
            yt = y[train][:, cols]
            model = make_regressor(kind, seed, **params).fit(x[train], yt if len(cols) > 1 else yt[:, 0])
            m, s = model.predict(x[test])
            oof[np.ix_(test, cols)] = np.asarray(m).reshape(int(test.sum()), len(cols))
            sig[np.ix_(test, cols)] = np.asarray(s).reshape(int(test.sum()), len(cols))
            base[np.ix_(test, cols)] = yt.mean(axis=0)
    metrics = {}
    for j, name in enumerate(targets):
        has = np.isfinite(y[:, j])
        metrics[name] = regression_metrics(y[has, j], oof[has, j], base[has, j], sig[has, j])
    return CVResult(kind, list(targets), folds, info, oof, sig, base, metrics)


def target_blocks(kind: str, y: np.ndarray) -> list[list[int]]:
    """Target columns fitted together: a random forest fits all targets that have values on exactly
    the same rows as one multi-output forest (the same trees, much faster); every other kind, and
    targets with different rows, one model per target."""
    if kind != "rf":
        return [[j] for j in range(y.shape[1])]
    blocks: dict[bytes, list[int]] = {}
    for j in range(y.shape[1]):
        blocks.setdefault(np.isfinite(y[:, j]).tobytes(), []).append(j)
    return list(blocks.values())
