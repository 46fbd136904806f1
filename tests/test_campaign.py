"""Campaigns in a lake (SQLite): planted relation recovered, exact rerun, lineage, report, active learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matlake.models.materials import campaign as cp
from matlake.models.materials import campaign_lake as cl
from matlake.models.materials import enumerate as en
from matlake.models.materials.site_model import SiteRegressor, site_mean_from_sites
from matlake.platform.lake import LakeError
from matlake.platform.modeling import train
from matlake.platform.provenance import lineage

SPEC = """
name = "planted-gap"
seed = 11
batch_size = 100
pessimistic_k = 1.0

[space]
grid = 4
max_mixed_sites = 1
[[space.sites]]
name = "A"
species = ["Cs", "MA", "FA"]
[[space.sites]]
name = "B"
species = ["Pb", "Sn", "Ge"]
[[space.sites]]
name = "X"
species = ["I", "Br", "Cl"]
multiplicity = 3
[space.constraints]
charge_neutral = true

[featurizer]
name = "site-mean"
properties = ["ionic_radius"]

[[models]]
property = "gap"
model = "site-gp-gap"
unit = "eV"

[[filters]]
name = "not-metallic"
where = "gap_hi >= 0.8"

[ranking]
score = "gap_mean"
top_k = 10

[active]
property = "gap"
rule = "ei"
maximize = true
retrain = true
"""

MAP = {"dataset": "planted", "subject": "id", "molecules": {"MA": "CH3NH3", "FA": "CH(NH2)2"},
       "sites": {"A": "A", "B": "B", "X": {"column": "X", "multiplicity": 3}},
       "property": [{"column": "gap", "name": "gap", "unit": "eV", "fidelity": "PBE"}]}


def planted(keys: list[str], space: en.Space, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """The planted relation (eV): a smooth function of the site-averaged ionic radii plus noise."""
    x, names = site_mean_from_sites([en.parse_key(k) for k in keys], ["A", "B", "X"], ["ionic_radius"])
    ra, rb, rx = x.T
    y = 1.6 + 1.2 * (ra - 2.1) - 2.0 * (rb - 1.0) - 1.5 * (rx - 2.0) + 2.0 * (rx - 2.0) ** 2
    return y + np.random.default_rng(seed).normal(0, noise, len(keys))


def frame_of(keys: list[str], values: np.ndarray, prefix: str) -> pd.DataFrame:
    rows = []
    for i, (k, v) in enumerate(zip(keys, values)):
        occ = en.parse_key(k)
        cell = {s: "".join(sp if f == 1 else f"{sp}{f:g}" for sp, f in occ[s].items()) for s in "ABX"}
        rows.append({"id": f"{prefix}{i:03d}", **cell, "gap": round(float(v), 6)})
    return pd.DataFrame(rows)


@pytest.fixture
def setup(sqlite_lake, tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC)
    spec = cp.CampaignSpec.from_toml(spec_path)
    all_keys = [k for b in en.enumerate_candidates(spec.space) for k in b.column("candidate_key").to_pylist()]
    truth = dict(zip(all_keys, planted(all_keys, spec.space, noise=0.0)))
    rng = np.random.default_rng(5)
    first = sorted(rng.choice(all_keys, 40, replace=False).tolist())
    sqlite_lake.ingest_frame(frame_of(first, planted(first, spec.space, seed=1), "t"), MAP, name="round0.csv")
    module = SiteRegressor(property="gap", dataset="planted", unit="eV", seed=3, properties=["ionic_radius"],
                           cv_folds=3)
    info = train(sqlite_lake, module)
    return sqlite_lake, spec_path, spec, truth, set(first), info


@pytest.mark.slow  # trains a Gaussian process in the lake (about 10-40 s on a busy 2-core machine)
def test_campaign_recovers_planted_top_and_reruns_exactly(setup, tmp_path):
    lake, spec_path, spec, truth, first, info = setup
    assert len(truth) == en.count(spec.space) == 351
    out = cl.run(lake, spec_path)
    c = out["counts"]
    assert c["excluded"] == 40 and c["candidates"] == 311 and out["model_ids"] == {"gap": info.model_id}
    assert out["retrained"] == {}  # the model was trained on the snapshot the run reads
    # precision at k: the predicted top 10 against the planted top 10 of the candidates scored
    k = 10
    ranked = lake.sql("select c.candidate_key from campaign_ranks r join campaign_candidates c "
                      "on c.record_id = r.subject_id where r.run_id = ? order by r.rank limit 10",
                      params=[out["run_id"]]).df()["candidate_key"].tolist()
    pool = sorted((k_ for k_ in truth if k_ not in first), key=lambda k_: -truth[k_])
    precision = len(set(ranked) & set(pool[:k])) / k
    print(f"precision@{k} = {precision:.2f}; CV RMSE {info.metrics['cv_rmse']:.4f} eV vs mean predictor "
          f"{info.metrics['cv_rmse_mean_predictor']:.4f} eV")
    assert precision >= 0.7
    assert info.metrics["cv_rmse"] < 0.5 * info.metrics["cv_rmse_mean_predictor"]
    # filter decisions carry the reason and the values seen
    bad = lake.sql("select failed_filter, reason from campaign_decisions where run_id = ? and not passed",
                   params=[out["run_id"]]).fetchall()
    assert bad and all(f == "not-metallic" and "gap_hi=" in r for f, r in bad)
    # same spec, same snapshot, same models -> byte-identical outputs
    again = cl.run(lake, spec_path, as_of=out["snapshot_read"])
    assert again["digests"] == out["digests"] and again["run_id"] != out["run_id"]
    # ... also from another process with two BLAS threads
    import os
    import subprocess
    import sys

    code = ("import json, matlake; from matlake.models.materials import campaign_lake as cl; "
            f"lk = matlake.open({str(lake.root)!r}); "
            f"print(json.dumps(cl.run(lk, {str(spec_path)!r}, as_of={out['snapshot_read']})['digests']))")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == out["digests"]
    stored = cl.runs(lake, "planted-gap")
    assert len(stored) == 3 and len(set(stored["digests_json"])) == 1
    # lineage of the best candidate's rank reaches the model, its training snapshot and the raw file
    rid = lake.sql("select record_id from campaign_ranks where run_id = ? and rank = 1",
                   params=[stored["run_id"].iloc[-1]]).fetchone()[0]
    g = lineage(lake, rid, "up", max_fanout=100)
    nodes = set(g.nodes())
    raw = lake.sql("select sha256 from ledger where status = 'ok'").fetchall()
    assert ("model", info.model_id) in nodes
    assert ("snapshot", str(info.snapshot_id)) in nodes
    assert any(("object", sha) in nodes for (sha,) in raw)
    # report from the records, kept as objects
    rep = cl.report(lake, "planted-gap", tmp_path / "report")
    names = {Path(f).name for f in rep["files"]}
    assert {"top.csv", "top.md", "dist_gap.png", "parity_gap.png"} <= names
    top = pd.read_csv(tmp_path / "report" / "top.csv")
    assert len(top) == 10 and list(top["rank"]) == list(range(1, 11))
    assert lake.sql("select count(*) from objects where sha256 in (select unnest(?))",
                    params=[list(rep["objects"].values())]).fetchone()[0] == len(names)
    from matlake.platform.operations import doctor

    assert doctor(lake, deep=True).ok


@pytest.mark.slow  # trains a Gaussian process in the lake (about 10-40 s on a busy 2-core machine)
def test_active_learning_loop(setup, tmp_path):
    lake, spec_path, spec, truth, first, info = setup
    lake.tag("before-retrain")
    out = cl.run(lake, spec_path)
    best0 = max(truth[k] for k in first)
    nxt = cl.propose(lake, "planted-gap", 10, csv=tmp_path / "todo.csv")
    todo = nxt["todo"]
    assert len(todo) == 10 and list(todo["rank"]) == list(range(1, 11))
    assert not set(todo["candidate_key"]) & first
    assert pd.read_csv(tmp_path / "todo.csv")["candidate_key"].tolist() == todo["candidate_key"].tolist()
    assert todo["value"].is_monotonic_decreasing
    # "compute" the proposals (planted relation + noise) and ingest them as a new file
    keys = todo["candidate_key"].tolist()
    lake.ingest_frame(frame_of(keys, planted(keys, spec.space, seed=2), "r1-"), MAP, name="round1.csv")
    best1 = max(truth[k] for k in first | set(keys))
    second = cl.run(lake, spec_path)
    assert set(second["retrained"]) == {"gap"} and second["model_ids"]["gap"] != info.model_id
    assert second["counts"]["excluded"] == 50 and second["counts"]["candidates"] == 301
    new = lake.sql("select n_train, snapshot_id from model_versions where model_id = ?",
                   params=[second["model_ids"]["gap"]]).fetchone()
    assert new[0] == 50
    print(f"best planted gap computed: {best0:.3f} eV before, {best1:.3f} eV after one EI round of 10; "
          f"global best {max(truth.values()):.3f} eV")
    assert best1 > best0
    # rerun at the same snapshot: no retraining, identical outputs
    third = cl.run(lake, spec_path, as_of=second["snapshot_read"])
    assert third["retrained"] == {} and third["digests"] == second["digests"]
    # pinning: "latest at tag" keeps the first model, a bare name follows the retrained one
    assert cl.resolve_model(lake, cp.ModelRef("gap", "site-gp-gap", tag="before-retrain")).model_id == info.model_id
    assert cl.resolve_model(lake, cp.ModelRef("gap", "site-gp-gap")).model_id == second["model_ids"]["gap"]
    # a featurizer that does not give the model's descriptors is refused, naming what is missing
    wrong = cp.CampaignSpec.from_dict({**json.loads(spec.canonical_json()),
                                       "featurizer": {"name": "site-mean", "properties": ["mass"]}})
    with pytest.raises(LakeError, match="missing \\['A_ionic_radius'"):
        cl.run(lake, wrong)
    st = cl.status(lake, "planted-gap")
    assert len(st) == 3 and st["candidates"].tolist() == [311, 301, 301]


def test_pure_core_pareto_and_errors(tmp_path):
    spec = cp.CampaignSpec.from_dict({**__import__("tomllib").loads(SPEC), "ranking": {
        "objectives": [["gap", "max"], ["ehull", "min"]], "top_k": 5},
        "models": [{"property": "gap", "model": "m1"}, {"property": "ehull", "model": "m2"}],
        "filters": [{"name": "stable", "where": "ehull_lo < 0.1"}]})
    scorers = {
        "gap": cp.callable_scorer("m1", lambda x, n: (x[:, n.index("X_ionic_radius")], np.full(len(x), 0.1))),
        "ehull": cp.callable_scorer("m2", lambda x, n: (x[:, n.index("A_ionic_radius")] - 2.0, np.zeros(len(x)))),
    }
    out = cp.run_campaign(spec, scorers)
    again = cp.run_campaign(spec, scorers)
    assert out.digests() == again.digests()
    ranks = out.ranks.to_pandas()
    assert (ranks["pareto_rank"] >= 1).all() and ranks["rank"].min() == 1
    front = ranks[ranks["pareto_rank"] == 1]
    assert front["rank"].max() == len(front)  # the front ranks first
    dec = out.decisions.to_pandas()
    assert set(dec.loc[~dec["passed"], "failed_filter"]) == {"stable"}
    with pytest.raises(cp.SpecError, match="ranking"):
        cp.CampaignSpec.from_dict({**__import__("tomllib").loads(SPEC), "ranking": {}})
    with pytest.raises(cp.SpecError, match="filters"):
        bad = cp.CampaignSpec.from_dict({**__import__("tomllib").loads(SPEC),
                                         "filters": [{"where": "no_such_column > 1"}]})
        cp.run_campaign(bad, {"gap": scorers["gap"]})


def _cli(argv: list[str]) -> int:
    """Run ``matlake campaign ...`` through the module's register() (the lead lists it in EXTENSIONS)."""
    import argparse

    from matlake.models.materials import campaign_cli

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lake")
    parser = argparse.ArgumentParser(prog="matlake")
    campaign_cli.register(parser.add_subparsers(dest="command"), common)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.slow  # trains a Gaussian process in the lake (about 10-40 s on a busy 2-core machine)
def test_cli_run_status_next_report(setup, tmp_path, capsys):
    lake, spec_path, spec, truth, first, info = setup
    root = str(lake.root)
    assert _cli(["campaign", "run", str(spec_path), "--lake", root, "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "311 candidates (closed-form count 351, 40 already in the lake)" in out and "ranks" in out
    assert _cli(["campaign", "status", "planted-gap", "--lake", root]) == 0
    assert "planted-gap" in capsys.readouterr().out
    assert _cli(["campaign", "next", "planted-gap", "--budget", "3", "--csv", str(tmp_path / "t.csv"),
                 "--lake", root]) == 0
    assert "3 campaign_todo rows" in capsys.readouterr().out and (tmp_path / "t.csv").exists()
    assert (tmp_path / "rep" / "top.md").read_text().startswith("# Campaign planted-gap")


def test_cli_module_imports_stay_light():
    import subprocess
    import sys

    code = ("import sys, matlake.models.materials.campaign_cli as m; "
            "heavy = [x for x in ('pandas', 'pyarrow', 'numpy', 'duckdb', 'sklearn', 'sqlalchemy') if x in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow  # trains a Gaussian process in the lake
def test_campaign_with_descriptor_vector_models(sqlite_lake, tmp_path):
    """Wiring to models.MaterialsRegressor: trained on material_features vectors (materials-sites),
    scored through the campaign's elemental-site-mean featurizer (same descriptors, same order)."""
    from matlake.models.materials.models import MaterialsRegressor
    from matlake.models.materials.models_lake import featurize_materials

    spec_doc = __import__("tomllib").loads(SPEC)
    spec_doc["featurizer"] = {"name": "elemental-site-mean"}
    spec_doc["models"] = [{"property": "gap", "model": "materials-gp/planted/gap/PBE", "unit": "eV"}]
    spec = cp.CampaignSpec.from_dict(spec_doc)
    keys = [k for b in en.enumerate_candidates(spec.space) for k in b.column("candidate_key").to_pylist()]
    truth = dict(zip(keys, planted(keys, spec.space, noise=0.0)))
    first = sorted(np.random.default_rng(5).choice(keys, 40, replace=False).tolist())
    lake = sqlite_lake
    lake.ingest_frame(frame_of(first, planted(first, spec.space, seed=1), "t"), MAP, name="round0.csv")
    featurize_materials(lake, "planted", kind="sites", stats=("mean",))
    info = train(lake, MaterialsRegressor(kind="gp", dataset="planted", target="gap", fidelity="PBE",
                                          featurizer="materials-sites", cv_folds=3))
    stored = lake.sql("select f.\"values\", s.sites_json from material_features f join material_subjects s "
                      "on s.record_id = f.subject_id order by s.record_id").fetchall()
    import pyarrow as pa

    ks = [en.site_key(json.loads(sj), spec.space) for _, sj in stored]
    fr = en.fraction_matrix(ks, spec.space)
    batch = pa.RecordBatch.from_arrays([pa.array(fr[:, j]) for j in range(fr.shape[1])], names=spec.space.columns)
    x, _ = cp.elemental_site_mean(batch, spec.space, {})
    ref = np.array([v for v, _ in stored], float)
    assert np.allclose(np.nan_to_num(x), np.nan_to_num(ref), rtol=0, atol=1e-9)  # same vectors as stored
    out = cl.run(lake, spec)
    assert out["model_ids"] == {"gap": info.model_id} and out["counts"]["candidates"] == 311
    top = lake.sql("select c.candidate_key from campaign_ranks r join campaign_candidates c on c.record_id = r.subject_id "
                   "where r.run_id = ? order by r.rank limit 10", params=[out["run_id"]]).df()["candidate_key"]
    pool = sorted((k for k in truth if k not in set(first)), key=lambda k: -truth[k])[:10]
    precision = len(set(top) & set(pool)) / 10
    print(f"precision@10 with MaterialsRegressor gp: {precision:.2f}")
    assert precision >= 0.6
    # campaign next reads the model's training view (its target column is y) for EI's best value
    nxt = cl.propose(lake, "planted-gap", 3)
    assert nxt["best"] == pytest.approx(lake.sql("select max(value) from material_targets where name = 'gap'"
                                                 ).fetchone()[0])
    assert len(nxt["todo"]) == 3
    # the report's parity plot from the model's out-of-fold predictions (the folds of its CV metrics)
    rep = cl.report(lake, "planted-gap", tmp_path / "rep")
    assert "parity_gap.png" in {Path(f).name for f in rep["files"]} and not rep["notes"]
    from matlake.platform.modeling import load_model, read_view

    _, module, _ = load_model(lake, info.model_id)
    _, _, frame = read_view(lake, info.view_sql, info.snapshot_id, producer=info.name)
    oof = module.cv_predictions(frame)
    rmse = float(np.sqrt(np.mean((oof["predicted"] - oof["target"]) ** 2)))
    assert rmse == pytest.approx(info.metrics["cv_rmse"], rel=1e-9) and (oof["std"] > 0).all()


def test_shipped_example_spec_and_its_generated_table():
    """samples/campaigns: the spec parses, its space has the closed-form count, the CSV is what the
    documented generator writes, and the planted relation is what the docstring states."""
    import importlib.util
    import math

    from conftest import sample

    spec = cp.CampaignSpec.from_toml(sample("campaigns", "perovskite_demo.toml"))
    assert en.count(spec.space) == 3 ** 3 + 3 * (math.comb(6, 2) - 3) * 3 ** 2 == 351
    assert spec.filters[1].where.startswith("dhd_hi") and spec.objectives == (("gap", "max"), ("dhd", "min"))
    assert spec.active["property"] == "dhd" and spec.featurizer["name"] == "elemental-site-mean"
    loader = importlib.util.spec_from_file_location("make_data", sample("campaigns", "make_data.py"))
    make_data = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(make_data)
    shipped = pd.read_csv(sample("campaigns", "perovskite_demo.csv"))
    pd.testing.assert_frame_equal(shipped, make_data.make(), check_exact=False, rtol=0, atol=1e-9)
    # CsPbI3: r_A 1.88, r_B 1.19, r_X 2.20 A, chi_X 2.66 -> gap 1.35 eV; t = 4.08 / (sqrt 2 * 3.39)
    v = make_data.planted_values(["A:Cs|B:Pb|X:I"])
    t = (1.88 + 2.20) / (math.sqrt(2) * (1.19 + 2.20))
    assert v["gap"][0] == pytest.approx(1.35, abs=1e-9)
    assert v["dhd"][0] == pytest.approx(2.0 * (t - 0.9) ** 2 - 0.06 + 0.05 * 0.2, abs=1e-9)


def test_record_ids_hashed_in_duckdb_equal_derived_record_id():
    """Campaign record ids are hashed in bulk inside DuckDB; they must stay byte-for-byte the
    ids that ``derived_record_id`` gives, or a re-run would add records instead of versions."""
    import pyarrow as pa

    from matlake.models.base import derived_record_id

    ids = [f"c{i}-é'\"" for i in range(3000)]
    props = pa.array(["band_gap", "e_hull", "ü"] * 1000)
    for name in ("demo", "it's a\x00b ünïcode"):
        assert cl._rids(name, ids).to_pylist() == [derived_record_id(f"campaign:{name}", c) for c in ids]
        assert cl._rids(name, pa.chunked_array([ids[:7], ids[7:]]), "score:", props).to_pylist() == [
            derived_record_id(f"campaign:{name}", c, f"score:{p}") for c, p in zip(ids, props.to_pylist())]
        assert cl._rids(name, pa.array(ids[:5]), "rank").to_pylist() == [
            derived_record_id(f"campaign:{name}", c, "rank") for c in ids[:5]]
    assert cl._rids("demo", []).to_pylist() == []
