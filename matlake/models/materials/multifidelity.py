"""Multi-fidelity regression: learn a scarce high fidelity (e.g. HSE) with a plentiful low one (GGA).

Data are long-form: one row per (subject, fidelity) with descriptors ``X`` of the subject,
a ``fidelity`` label and the target ``value``.  Strategies (:data:`STRATEGIES`), all
scored on the high-fidelity rows under the **same** folds (a fold is a function of
(subject key, cv_seed); every row of a test subject, at any fidelity, is out of training):

- ``single``: the baseline; one model on the high-fidelity rows only;
- ``feature``: fidelity as a feature (one-hot columns appended to X), one model on all rows,
  predicting with the high-fidelity column set;
- ``delta``: Delta-learning; a model of the low fidelity on every low row and a model of
  (high - low) on the subjects that have both; prediction = low model + delta model,
  sigma = sqrt(sigma_low^2 + sigma_delta^2);
- ``delta_known_low``: as ``delta`` but using the subject's *computed* low-fidelity value
  when it has one (the usual case: GGA is cheap for every candidate), else the low model.

:func:`two_fidelity_data` generates a seeded test problem with a planted relation (see its
docstring); :func:`compare` runs the strategies and the mean predictor under one set of folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matlake.models.materials.regressors import make_folds, make_regressor, regression_metrics

STRATEGIES = ("single", "feature", "delta", "delta_known_low")
GENERATOR_NAME = "two-fidelity-planted"
GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class TwoFidelityData:
    """Generated data: ``x`` (n, d); ``low`` (n,) every subject; ``high`` (n,) NaN where not computed."""

    keys: list[str]
    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    parameters: dict[str, Any]

    def long(self, low_name: str = "GGA", high_name: str = "HSE") -> pd.DataFrame:
        """One row per (subject, fidelity) with a value: subject_key, x0.., fidelity, value."""
        cols = {f"x{j}": self.x[:, j] for j in range(self.x.shape[1])}
        lo = pd.DataFrame({"subject_key": self.keys, **cols, "fidelity": low_name, "value": self.low})
        hi = pd.DataFrame({"subject_key": self.keys, **cols, "fidelity": high_name, "value": self.high})
        return pd.concat([lo, hi.dropna(subset=["value"])], ignore_index=True)


def two_fidelity_data(n: int = 300, n_high: int = 30, d: int = 4, seed: int = 0, scale: float = 1.3,
                      offset: float = 0.8, noise: float = 0.05) -> TwoFidelityData:
    """A seeded two-fidelity problem with a planted offset and scale.

    ``x ~ U[0, 1]^d``; the low fidelity is
    ``f(x) = sin(2 pi x0) + 2 x1^2 + 0.5 x2 (+ 0.3 x0 x3 when d > 3)`` plus Gaussian noise
    ``noise``; the high fidelity is ``scale * f(x) + offset + 0.3 x1`` plus its own noise
    (a systematic offset and scale, as HSE widens GGA gaps, and a small smooth correction).
    Every subject has the low value; ``n_high`` subjects drawn without replacement have the
    high one.  One ``numpy.random.default_rng(seed)`` stream draws x, then the noises, then the
    high subset.
    """
    if d < 3:
        raise ValueError(f"d: expected at least 3 descriptors, found {d}")
    if not 0 < n_high <= n:
        raise ValueError(f"n_high: expected 1..{n}, found {n_high}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n, d))
    f = np.sin(2 * np.pi * x[:, 0]) + 2 * x[:, 1] ** 2 + 0.5 * x[:, 2] + (0.3 * x[:, 0] * x[:, 3] if d > 3 else 0.0)
    low = f + rng.normal(0.0, noise, n)
    high_all = scale * f + offset + 0.3 * x[:, 1] + rng.normal(0.0, noise, n)
    chosen = rng.choice(n, size=n_high, replace=False)
    high = np.full(n, np.nan)
    high[chosen] = high_all[chosen]
    params = {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "n": n, "n_high": n_high, "d": d,
              "seed": seed, "scale": scale, "offset": offset, "noise": noise}
    return TwoFidelityData([f"gen-{seed}-{i:05d}" for i in range(n)], x, low, high, params)


@dataclass
class MultiFidelityResult:
    """Per-strategy metrics (on high-fidelity rows, out of fold) and the fold record."""

    metrics: dict[str, dict[str, float]]
    fold_info: dict[str, Any]
    predictions: dict[str, np.ndarray]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame.from_dict(self.metrics, orient="index").rename_axis("strategy")


def _fit_predict(kind: str, seed: int, params: dict[str, Any], x_tr: np.ndarray, y_tr: np.ndarray,
                 x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return make_regressor(kind, seed, **params).fit(x_tr, y_tr).predict(x_te)


def strategy_predict(strategy: str, kind: str, x: np.ndarray, low: np.ndarray, high: np.ndarray,
                     train: np.ndarray, test: np.ndarray, seed: int = 0,
                     params: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(value, sigma) of the high fidelity for rows ``test`` from the data of rows ``train`` (boolean masks)."""
    params = params or {}
    has_lo, has_hi = np.isfinite(low), np.isfinite(high)
    xt = x[test]
    if strategy == "single":
        r = train & has_hi
        return _fit_predict(kind, seed, params, x[r], high[r], xt)
    if strategy == "feature":
        r_lo, r_hi = train & has_lo, train & has_hi
        xs = np.vstack([np.column_stack([x[r_lo], np.ones(r_lo.sum()), np.zeros(r_lo.sum())]),
                        np.column_stack([x[r_hi], np.zeros(r_hi.sum()), np.ones(r_hi.sum())])])
        ys = np.concatenate([low[r_lo], high[r_hi]])
        return _fit_predict(kind, seed, params, xs, ys, np.column_stack([xt, np.zeros(len(xt)), np.ones(len(xt))]))
    if strategy in ("delta", "delta_known_low"):
        r_lo, r_both = train & has_lo, train & has_lo & has_hi
        lo_m, lo_s = _fit_predict(kind, seed, params, x[r_lo], low[r_lo], xt)
        d_m, d_s = _fit_predict(kind, seed, params, x[r_both], high[r_both] - low[r_both], xt)
        if strategy == "delta_known_low":
            known = has_lo[test]
            lo_m = np.where(known, low[test], lo_m)
            lo_s = np.where(known, 0.0, lo_s)
        return lo_m + d_m, np.sqrt(lo_s ** 2 + d_s ** 2)
    raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, found {strategy!r}")


def compare(x: np.ndarray, low: np.ndarray, high: np.ndarray, keys: Sequence[Any], kind: str = "gp",
            strategies: Sequence[str] = STRATEGIES, n_folds: int = 5, cv_seed: int = 0, seed: int = 0,
            **params: Any) -> MultiFidelityResult:
    """Out-of-fold high-fidelity predictions of each strategy and the mean predictor, same folds.

    ``low`` / ``high`` (n,) per subject with NaN where not computed; folds over all subjects by
    (key, cv_seed).  Metrics as :func:`matlake.models.materials.regressors.regression_metrics`
    (``baseline_*``: the mean of the training folds' high values).
    """
    x, low, high = np.asarray(x, float), np.asarray(low, float), np.asarray(high, float)
    folds, info = make_folds(keys, n_folds, cv_seed)
    has_hi = np.isfinite(high)
    preds = {s: (np.full(len(x), np.nan), np.full(len(x), np.nan)) for s in strategies}
    base = np.full(len(x), np.nan)
    for f in range(n_folds):
        test, train = has_hi & (folds == f), folds != f
        if not test.any():
            continue
        if (train & has_hi).sum() < 2:
            raise ValueError(f"fold {f}: expected at least 2 high-fidelity training rows, found {int((train & has_hi).sum())}")
        base[test] = high[train & has_hi].mean()
        for s in strategies:
            m, sd = strategy_predict(s, kind, x, low, high, train, test, seed, params)
            preds[s][0][test], preds[s][1][test] = m, sd
    metrics = {s: regression_metrics(high[has_hi], preds[s][0][has_hi], base[has_hi], preds[s][1][has_hi])
               for s in strategies}
    return MultiFidelityResult(metrics, {**info, "kind": kind, "n_high": int(has_hi.sum())},
                               {s: v[0] for s, v in preds.items()})
