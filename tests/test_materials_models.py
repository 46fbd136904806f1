"""Multi-target regressors, recorded folds and multi-fidelity strategies on generated data."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest

from matlake.models.materials.multifidelity import compare, two_fidelity_data
from matlake.models.materials.regressors import (
    MultiTargetRegressor,
    cross_validate,
    make_folds,
    make_regressor,
    regression_metrics,
)
from tests.conftest import sample


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y0 = 2 x0 - x1^2 + 0.5 sin(3 x2), y1 = x0 x1 + x3, small noise; x uniform in [-1, 1]^5."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 5))
    y0 = 2 * x[:, 0] - x[:, 1] ** 2 + 0.5 * np.sin(3 * x[:, 2]) + rng.normal(0, 0.05, n)
    y1 = x[:, 0] * x[:, 1] + x[:, 3] + rng.normal(0, 0.05, n)
    return x, np.column_stack([y0, y1])


def test_folds_are_a_function_of_key_and_seed() -> None:
    keys = [f"s{i}" for i in range(50)]
    f1, info1 = make_folds(keys, 5, cv_seed=7)
    perm = np.random.default_rng(0).permutation(50)
    f2, info2 = make_folds([keys[i] for i in perm], 5, cv_seed=7)
    assert np.array_equal(f1[perm], f2) and info1["cv_fold_sha256"] == info2["cv_fold_sha256"]
    assert np.bincount(f1).tolist() == [10] * 5
    f3, info3 = make_folds(keys, 5, cv_seed=8)
    assert info3["cv_fold_sha256"] != info1["cv_fold_sha256"] and not np.array_equal(f1, f3)
    groups = [f"g{i % 7}" for i in range(50)]
    fg, infog = make_folds(keys, 5, cv_seed=7, groups=groups, grouped_by="impurity")
    for g in set(groups):  # a group never straddles folds
        assert len(set(fg[[i for i, h in enumerate(groups) if h == g]])) == 1
    assert infog["cv_grouped_by"] == "impurity" and infog["cv_fold_sha256"] != info1["cv_fold_sha256"]


def test_metrics_and_mean_baseline() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(y, y + 0.5, np.full(4, 2.5), np.full(4, 0.3))
    assert m["rmse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 1.0 / 5.0)
    assert m["baseline_mae"] == pytest.approx(1.0) and m["baseline_rmse"] == pytest.approx(np.sqrt(1.25))
    assert m["coverage_2sigma"] == pytest.approx(1.0)


@pytest.mark.parametrize("kind,params", [("rf", {"n_estimators": 60}), ("gb", {"n_estimators": 80, "n_members": 2}),
                                         ("gp", {}), ("mlp", {"epochs": 150, "n_members": 2})])
def test_regressors_learn_planted_relation(kind: str, params: dict) -> None:
    x, y = planted(160, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GP bound warnings on an almost noise-free problem
        res = cross_validate(x, y, ["y0", "y1"], [f"k{i}" for i in range(len(x))], kind, n_folds=4, cv_seed=2,
                             seed=0, **params)
    for t in ("y0", "y1"):
        m = res.metrics[t]
        assert m["n"] == 160
        # clearly better than the mean predictor on the same folds
        assert m["rmse"] < 0.6 * m["baseline_rmse"], (kind, t, m)
        assert m["r2"] > 0.6, (kind, t, m)
    assert np.all(res.oof_sigma >= 0) and np.all(np.isfinite(res.oof))
    assert res.fold_info["cv_seed"] == 2 and len(res.fold_info["cv_fold_sha256"]) == 64
    assert set(res.table().columns) >= {"rmse", "mae", "r2", "baseline_rmse", "baseline_mae"}
    assert "cv_rmse/y0" in res.flat_metrics()


def test_multi_target_with_missing_targets_and_descriptors() -> None:
    x, y = planted(120, seed=4)
    y[::3, 1] = np.nan  # y1 missing on a third of the rows: fitted on the rest
    x[::5, 2] = np.nan  # a missing descriptor is filled with the training median
    model = MultiTargetRegressor("rf", ["y0", "y1"], seed=0, n_estimators=40).fit(x, y)
    mean, sigma = model.predict(x)
    assert mean.shape == sigma.shape == (120, 2) and np.isfinite(mean).all()
    assert len(model.models_) == 2  # different rows per target: two forests
    full = MultiTargetRegressor("rf", ["y0", "y1"], seed=0, n_estimators=40).fit(x, planted(120, 4)[1])
    assert len(full.models_) == 1  # same rows: one multi-output forest
    again = MultiTargetRegressor("rf", ["y0", "y1"], seed=0, n_estimators=40).fit(x, y).predict(x)
    assert np.array_equal(again[0], mean)  # seeded
    with pytest.raises(ValueError, match="expected one of"):
        make_regressor("svm")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_regressor("rf", depth=3)


def test_two_fidelity_generator_is_seeded() -> None:
    a, b = two_fidelity_data(n=80, n_high=10, seed=5), two_fidelity_data(n=80, n_high=10, seed=5)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.high, b.high, equal_nan=True)
    assert int(np.isfinite(a.high).sum()) == 10
    # planted relation: high = 1.3 f + 0.8 + 0.3 x1 (noise 0.05), low = f
    has = np.isfinite(a.high)
    resid = a.high[has] - (1.3 * a.low[has] + 0.8 + 0.3 * a.x[has, 1])
    assert np.abs(resid).max() < 0.5
    long = a.long()
    assert (long["fidelity"] == "HSE").sum() == 10 and (long["fidelity"] == "GGA").sum() == 80


@pytest.mark.parametrize("kind,seed", [("gp", 0), ("rf", 1)])
def test_multifidelity_beats_single_fidelity_when_high_is_scarce(kind: str, seed: int) -> None:
    data = two_fidelity_data(n=120, n_high=20, seed=seed)
    params = {"n_estimators": 60} if kind == "rf" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = compare(data.x, data.low, data.high, data.keys, kind=kind, strategies=("single", "feature", "delta"),
                      n_folds=5, cv_seed=seed, seed=seed, **params)
    m = res.metrics
    assert res.fold_info["n_high"] == 20
    for s in ("feature", "delta"):
        assert m[s]["rmse"] < m["single"]["rmse"], (kind, s, m)
        assert m[s]["mae"] < m["single"]["mae"], (kind, s, m)
    assert min(m["feature"]["rmse"], m["delta"]["rmse"]) < 0.7 * m["single"]["rmse"], (kind, m)
    assert m["single"]["rmse"] < m["single"]["baseline_rmse"]


# --------------------------------------------------------------------------- through a lake


@pytest.fixture
def impurity_lake(sqlite_lake):
    rep = sqlite_lake.ingest([str(sample("defects", "DFT_impurities.csv"))], kind="table",
                             options={"map": str(sample("defects", "DFT_impurities.map.toml"))})
    assert rep.summary().startswith("1 new")
    return sqlite_lake


def test_element_table_and_features_through_the_lake(impurity_lake) -> None:
    from matlake.models.materials.elements import element_table
    from matlake.models.materials.models_lake import commit_element_table, featurize_materials

    lk = impurity_lake
    first = commit_element_table(lk)
    assert not first["skipped"] and first["table_sha256"] == element_table().digest()
    assert commit_element_table(lk)["skipped"]  # same table: nothing new
    r = lk.sql("select value, unit from element_property_tables where species = 'Pb' and property = 'ionic_radius'"
               ).fetchone()
    assert r[0] == pytest.approx(1.19) and r[1] == "Angstrom"
    rep = featurize_materials(lk, "dft_impurities")
    assert rep.n_subjects == 1440 and not rep.errors
    assert featurize_materials(lk, "dft_impurities").skipped == 1440  # done: skipped
    row = lk.sql("select f.names, f.\"values\", f.parameters_json from material_features f join material_subjects s "
                 "on s.record_id = f.subject_id where s.subject_key = 'CdTe|M_A|Cu' "
                 "and f.featurizer = 'materials-defect'").fetchone()
    feats = dict(zip(row[0], row[1]))
    t = element_table()
    chi = dict(zip(t.species, t.column("electronegativity")))
    assert feats["diff_electronegativity"] == pytest.approx(chi["Cu"] - chi["Cd"])
    assert feats["site_M_A"] == 1.0 and feats["type_II-VI"] == 1.0
    assert json.loads(row[2])["element_table"]["sha256"] == t.digest()


@pytest.mark.slow
def test_train_levels_and_predict_with_uncertainty(impurity_lake) -> None:
    from matlake.models.materials.models_lake import train_levels
    from matlake.platform.modeling import load_model
    from matlake.platform.provenance import lineage

    lk = impurity_lake
    rows = train_levels(lk, kind="rf", levels=["level(0/-1)"], regressor={"n_estimators": 40})
    (row,) = rows
    assert row["n"] == 876 and row["cv_rmse"] < 0.75 * row["baseline_rmse"]
    assert row["grouped_by"] == "Impurity" and row["grouped_rmse"] < 0.75 * row["grouped_baseline_rmse"]
    info, module, artifact = load_model(lk, row["model_id"])
    assert info.metrics["cv_fold_sha256"] == row["cv_fold_sha256"] and info.metrics["cv_seed"] == 0
    assert "material_targets" in info.view_sql and module.unit == "eV"
    pred = lk.sql("select p.value, p.uncertainty, p.unit, s.subject_key from predictions p join material_subjects s "
                  "on s.record_id = p.subject_id where p.model_id = ?", params=[row["model_id"]]).df()
    assert len(pred) == 1440 and (pred["uncertainty"] > 0).all() and set(pred["unit"]) == {"eV"}
    # training subjects are fitted closely by a forest; the value is the GGA level in eV
    truth = lk.sql("select s.subject_key, t.value from material_targets t join material_subjects s "
                   "on s.record_id = t.subject_id where t.name = 'level(0/-1)'").df()
    both = pred.merge(truth, on="subject_key", suffixes=("", "_true"))
    assert np.sqrt(np.mean((both["value"] - both["value_true"]) ** 2)) < 0.35
    # same data, same seeds: the same folds and the same metrics
    again = train_levels(lk, kind="rf", levels=["level(0/-1)"], regressor={"n_estimators": 40}, predict=False)[0]
    assert again["cv_fold_sha256"] == row["cv_fold_sha256"] and again["cv_rmse"] == row["cv_rmse"]
    # lineage: a prediction -> model -> training snapshot -> the ingest of the raw CSV
    rid = lk.sql("select record_id from predictions where model_id = ? limit 1", params=[row["model_id"]]).fetchone()[0]
    g = lineage(lk, rid, direction="up", max_fanout=50)
    assert ("model", row["model_id"]) in g.reaches("model")
    assert ("snapshot", str(info.snapshot_id)) in g.reaches("snapshot")
    raw = hashlib.sha256(sample("defects", "DFT_impurities.csv").read_bytes()).hexdigest()
    assert ("object", raw) in g.reaches("object")  # the raw CSV as ingested


def test_mlp_model_module_stores_a_state_dict(impurity_lake) -> None:
    from matlake.models.base import artifact_format
    from matlake.models.materials.models_lake import featurize_materials, train_property
    from matlake.platform.modeling import load_model

    lk = impurity_lake
    featurize_materials(lk, "dft_impurities")
    info = train_property(lk, "dft_impurities", "level(+1/0)", "GGA", kind="mlp", cv_folds=3,
                          regressor={"epochs": 60, "n_members": 2})
    assert artifact_format(lk.objects.get(info.artifact_sha256)) in ("safetensors", "torch")
    assert info.metrics["cv_rmse"] < info.metrics["cv_baseline_rmse"]
    out = lk.predict(info.model_id)
    assert out["n"] == 1440
    _, module, net = load_model(lk, info.model_id)
    assert module.params["n_inputs"] == 65 and len(net.members) == 2


def test_multifidelity_from_an_ingested_frame(sqlite_lake) -> None:
    """Generated two-fidelity data ingested as a table (descriptors given): the lake path equals the pure one."""
    import pandas as pd

    from matlake.models.materials.models_lake import compare_fidelities
    from matlake.platform.ingestion import ingest_frame

    data = two_fidelity_data(n=100, n_high=20, seed=3)
    frame = pd.DataFrame({"key": data.keys, **{f"x{j}": data.x[:, j] for j in range(data.x.shape[1])},
                          "y_gga": data.low, "y_hse": data.high})
    table_map = {"dataset": "mf_generated", "subject": "key",
                 "descriptor": [{"glob": "x*", "unit": ""}],
                 "property": [{"column": "y_gga", "name": "y", "unit": "eV", "fidelity": "GGA"},
                              {"column": "y_hse", "name": "y", "unit": "eV", "fidelity": "HSE"}]}
    rep = ingest_frame(sqlite_lake, frame, table_map)
    assert rep.new == 1, rep.outcomes[0].message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = compare_fidelities(sqlite_lake, "mf_generated", "y", "GGA", "HSE", featurizer="given:mf_generated",
                                 kind="rf", strategies=("single", "feature", "delta"), seed=0, n_estimators=50)
        pure = compare(data.x, data.low, data.high, data.keys, kind="rf", strategies=("single", "feature", "delta"),
                       seed=0, n_estimators=50)
    assert res.fold_info["n_high"] == 20 and res.fold_info["cv_fold_sha256"] == pure.fold_info["cv_fold_sha256"]
    for s in ("single", "feature", "delta"):
        assert res.metrics[s]["rmse"] == pytest.approx(pure.metrics[s]["rmse"], rel=1e-9)
    assert res.metrics["delta"]["rmse"] < res.metrics["single"]["rmse"]


@pytest.mark.parametrize("kind", ["rf", "gb", "gp"])
def test_sklearn_artifacts_round_trip_through_skops(kind: str) -> None:
    from matlake.models.base import artifact_format
    from matlake.models.materials.models import model_module
    from matlake.models.materials.regressors import from_artifact, to_artifact

    x, y = planted(60, seed=2)
    params = {"rf": {"n_estimators": 10}, "gb": {"n_estimators": 20, "n_members": 2}, "gp": {}}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_regressor(kind, 0, **params).fit(x, y[:, 0])
    module = model_module(kind, dataset="d", target="t", fidelity="GGA", regressor=params)
    blob = module.dumps(to_artifact(model))  # refuses types not in trusted_types
    assert artifact_format(blob) == "skops"
    back = from_artifact(module.loads(blob))
    for a, b in zip(model.predict(x), back.predict(x)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
