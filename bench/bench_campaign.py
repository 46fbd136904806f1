"""Campaign scoring at scale: featurize + score + filter ~10^6 candidates.

Space (default): A in {K, Rb, Cs, MA, FA}, B in {Ca, Sr, Ba, Ge, Sn, Pb}, X in {Cl, Br, I}
(x3), fractions in steps of 1/6, at most 3 species per site, mixing on up to 3 sites:
1,219,540 candidates (closed-form count, checked against the enumeration).
Two Gaussian-process models (``SiteRegressor`` estimators, site-mean ionic radius and
mass descriptors, trained on ``--n-train`` random candidates with planted relations)
score every candidate (mean and std); two filters run in DuckDB; the top 100 by a
score are kept.  Each mode runs in its own process so its peak RSS is its own:

- ``streaming``: :func:`campaign.stream_scores`-style record batches (``--batch``
  rows): enumerate -> features -> predictions -> DuckDB filters -> running top 100;
- ``pandas``: the naive way: every candidate built as Python rows into one DataFrame,
  features with pandas column arithmetic, one predict call per model on the whole
  matrix, ``DataFrame.query`` for the filters;
- ``dask``: the space split into pieces (:func:`enumerate.partitions`) scored by a
  ``LocalCluster`` (``--workers`` processes, one thread each); peak RSS is the sum of
  the workers' peaks plus the client's;
- ``lake`` (optional): ``run_campaign`` with every output kept, then one commit of the
  five campaign tables into a new SQLite lake (``campaign_lake.commit_outputs``).

Run: ``.venv/bin/python bench/bench_campaign.py [--grid 6] [--modes streaming,pandas,dask] [--json]``
Benchmarks measure; they do not assert (beyond the counts agreeing).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

A = ["K", "Rb", "Cs", "MA", "FA"]
B = ["Ca", "Sr", "Ba", "Ge", "Sn", "Pb"]
X = ["Cl", "Br", "I"]


def spec_doc(args: argparse.Namespace) -> dict[str, Any]:
    sites = [{"name": "A", "species": A, "max_species": args.max_species},
             {"name": "B", "species": B, "max_species": args.max_species},
             {"name": "X", "species": X, "multiplicity": 3, "max_species": args.max_species}]
    return {"name": "bench", "seed": 0, "batch_size": args.batch,
            "space": {"grid": args.grid, "max_mixed_sites": args.max_mixed, "sites": sites},
            "featurizer": {"name": "site-mean", "properties": ["ionic_radius", "mass"]},
            "models": [{"property": "gap", "model": "gp-gap"}, {"property": "ehull", "model": "gp-ehull"}],
            "filters": [{"name": "gap-window", "where": "gap_lo >= 1.0 and gap_hi <= 2.5"},
                        {"name": "stable", "where": "ehull_hi <= 0.05"}],
            "ranking": {"score": "gap_mean - ehull_mean", "top_k": 100}}


def planted(x, names):
    import numpy as np

    ra, rb, rx = (x[:, names.index(f"{s}_ionic_radius")] for s in "ABX")
    gap = 1.6 + 1.2 * (ra - 2.1) - 2.0 * (rb - 1.0) - 1.5 * (rx - 2.0) + 2.0 * (rx - 2.0) ** 2
    ehull = 0.02 + 0.3 * (ra / rb - 1.9) ** 2 - 0.01 * x[:, names.index("B_mass")] / 100
    return {"gap": gap, "ehull": ehull + 0 * np.sum(x, 1)}


class GPScorer:
    """A fitted sklearn GP pipeline as a campaign scorer."""

    def __init__(self, model_id: str, est: Any) -> None:
        self.model_id, self.est, self.unit = model_id, est, "eV"

    def predict(self, x, names):
        scaled = self.est.named_steps["scale"].transform(x)
        return self.est.named_steps["gp"].predict(scaled, return_std=True)


def train_scorers(spec, n_train: int) -> dict[str, GPScorer]:
    """GPs on ``n_train`` random candidates of the space (seeded) with the planted relations."""
    import numpy as np
    import pyarrow as pa
    from threadpoolctl import threadpool_limits

    from matlake.models.materials import campaign as cp
    from matlake.models.materials import enumerate as en
    from matlake.models.materials.site_model import SiteRegressor

    rng = np.random.default_rng(0)
    parts = en.partitions(spec.space, rows=2**62)
    sample = []
    for p in parts:  # a few random rows of every piece, so mixed and pure candidates are both seen
        batch = next(en.enumerate_partition(spec.space, p, batch_size=50_000))
        take = rng.choice(batch.num_rows, min(batch.num_rows, max(1, n_train // len(parts))), replace=False)
        sample.append(batch.take(pa.array(np.sort(take))))
    tab = pa.Table.from_batches(sample).combine_chunks().to_batches()[0]
    x, names = cp.site_mean(tab, spec.space, cp.featurizer_params(spec))
    y = planted(x, names)
    out = {}
    with threadpool_limits(1):
        for prop in ("gap", "ehull"):
            est = SiteRegressor(property=prop, properties=["ionic_radius", "mass"], seed=0)._estimator()
            est.fit(x, y[prop])
            out[prop] = GPScorer(f"gp-{prop}", est)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _topk(tables, k=100):
    import pyarrow as pa

    t = pa.concat_tables(tables)
    return t.sort_by([("score", "descending"), ("candidate_key", "ascending")]).slice(0, k)


def score_piece(spec, scorers, batches) -> tuple[int, int, Any]:
    """Score batches, filter in DuckDB, keep the running top 100: (n, n_passed, top table)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    from matlake.models.materials import campaign as cp

    con = duckdb.connect()
    n = passed = 0
    top = None
    for batch in batches:
        sb = cp.score_batch(batch, spec, scorers)
        dec = cp.decide_batch(sb, spec.filters, con)
        t = pa.Table.from_batches([sb]).filter(dec.column("passed"))
        n += sb.num_rows
        passed += t.num_rows
        t = t.select(["candidate_id", "candidate_key", "formula"]).append_column(
            "score", pc.subtract(t.column("gap_mean"), t.column("ehull_mean")))
        top = _topk([top, t] if top is not None else [t])
    con.close()
    return n, passed, top


def mode_streaming(spec, scorers) -> dict[str, Any]:
    from matlake.models.materials import enumerate as en

    t0 = time.perf_counter()
    n, passed, top = score_piece(spec, scorers, en.enumerate_candidates(spec.space, spec.batch_size))
    return {"seconds": time.perf_counter() - t0, "n": n, "passed": passed,
            "top": top.column("candidate_key").to_pylist()[:5]}


def mode_pandas(spec, scorers) -> dict[str, Any]:
    import itertools

    import numpy as np
    import pandas as pd

    from matlake.models.materials import enumerate as en
    from matlake.models.materials.campaign import ELEMENT_PROPERTIES

    t0 = time.perf_counter()
    space = spec.space
    rows = []
    pure = [en._site_options(s, space.site_grid(s), False) for s in space.sites]
    mixed = [en._site_options(s, space.site_grid(s), True) for s in space.sites]
    for k in range(space.max_mixed_sites + 1):
        for subset in itertools.combinations(range(len(space.sites)), k):
            opts = [mixed[i] if i in subset else pure[i] for i in range(len(space.sites))]
            for combo in itertools.product(*[range(len(o.texts)) for o in opts]):
                row = {"candidate_key": "|".join(f"{space.sites[i].name}:{opts[i].texts[j]}"
                                                 for i, j in enumerate(combo)),
                       "formula": "".join(opts[i].formula[j] for i, j in enumerate(combo))}
                for i, j in enumerate(combo):
                    for sp, f in zip(space.sites[i].species, opts[i].fractions[j]):
                        row[f"{space.sites[i].name}_{sp}"] = f
                rows.append(row)
    df = pd.DataFrame(rows)
    del rows
    names = []
    for s in space.sites:
        for p in ("ionic_radius", "mass"):
            df[f"{s.name}_{p}"] = sum(df[f"{s.name}_{sp}"] * ELEMENT_PROPERTIES[sp][p] for sp in s.species)
            names.append(f"{s.name}_{p}")
    x = df[names].to_numpy()
    for prop, sc in scorers.items():
        mean, std = sc.predict(x, names)
        df[f"{prop}_mean"], df[f"{prop}_std"] = mean, std
        df[f"{prop}_lo"], df[f"{prop}_hi"] = mean - spec.pessimistic_k * std, mean + spec.pessimistic_k * std
    ok = df.query(" and ".join(f"({f.where})" for f in spec.filters))
    ok = ok.assign(score=ok["gap_mean"] - ok["ehull_mean"]).sort_values(["score", "candidate_key"],
                                                                         ascending=[False, True])
    return {"seconds": time.perf_counter() - t0, "n": len(df), "passed": len(ok),
            "top": ok["candidate_key"].head(5).tolist()}


def _dask_piece(spec_json: str, scorers, part) -> tuple[int, int, Any]:
    import json as _json

    from matlake.models.materials import campaign as cp
    from matlake.models.materials import enumerate as en

    spec = cp.CampaignSpec.from_dict(_json.loads(spec_json))
    return score_piece(spec, scorers, en.enumerate_partition(spec.space, part, spec.batch_size))


def mode_dask(spec, scorers, workers: int, piece_rows: int) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    from matlake.models.materials import enumerate as en

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(lambda: sys.path.insert(0, str(ROOT)))
        t0 = time.perf_counter()
        sc = client.scatter(scorers, broadcast=True)
        parts = en.partitions(spec.space, rows=piece_rows)
        futures = [client.submit(_dask_piece, spec.canonical_json(), sc, p, pure=False) for p in parts]
        results = client.gather(futures)
        top = _topk([r[2] for r in results if r[2] is not None])
        seconds = time.perf_counter() - t0
        worker_peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"seconds": seconds, "n": sum(r[0] for r in results), "passed": sum(r[1] for r in results),
            "top": top.column("candidate_key").to_pylist()[:5], "pieces": len(parts),
            "worker_peak_rss_mib": round(sum(worker_peaks.values()), 1)}


def mode_lake(spec, scorers) -> dict[str, Any]:
    import tempfile

    import matlake
    from matlake.models.materials import campaign as cp
    from matlake.models.materials.campaign_lake import commit_outputs

    t0 = time.perf_counter()
    out = cp.run_campaign(spec, scorers, keep_scored=False)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        lake = matlake.init(Path(tmp) / "lake")
        res = commit_outputs(lake, spec, out, lake.last_snapshot(), {p: s.model_id for p, s in scorers.items()},
                             {}, 0)
        t2 = time.perf_counter()
        rows = lake.sql("select count(*) from campaign_scores").fetchone()[0]
        lake.close()
    return {"seconds": t2 - t0, "score_seconds": t1 - t0, "commit_seconds": t2 - t1, "n": out.counts["candidates"],
            "passed": out.counts["passed"], "score_rows_committed": rows, "snapshot": res["snapshot"],
            "top": []}


def worker(args: argparse.Namespace) -> None:
    from matlake.models.materials import campaign as cp
    from matlake.models.materials import enumerate as en

    spec = cp.CampaignSpec.from_dict(spec_doc(args))
    t0 = time.perf_counter()
    scorers = train_scorers(spec, args.n_train)
    train_s = time.perf_counter() - t0
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.blas_threads):
        if args.worker == "streaming":
            res = mode_streaming(spec, scorers)
        elif args.worker == "pandas":
            res = mode_pandas(spec, scorers)
        elif args.worker == "dask":
            res = mode_dask(spec, scorers, args.workers, args.piece_rows)
        else:
            res = mode_lake(spec, scorers)
    res.update(mode=args.worker, train_seconds=train_s, closed_form=en.count(spec.space),
               peak_rss_mib=round(peak_rss_mib(), 1))
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=6)
    ap.add_argument("--max-species", type=int, default=3)
    ap.add_argument("--max-mixed", type=int, default=3)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--piece-rows", type=int, default=131072)
    ap.add_argument("--blas-threads", type=int, default=1)
    ap.add_argument("--modes", default="streaming,pandas,dask")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from bench.common import machine_info

    results = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--worker", mode] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("worker", "modes", "json") and v is not None]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{mode}: failed\n{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(line[7:]))
    print(f"{'mode':<10} {'candidates':>11} {'passed':>8} {'seconds':>8} {'cand/s':>9} {'peak RSS MiB':>13}  top-1")
    for r in results:
        rss = r["peak_rss_mib"] + r.get("worker_peak_rss_mib", 0)
        extra = f" (client {r['peak_rss_mib']} + workers {r['worker_peak_rss_mib']})" if "worker_peak_rss_mib" in r else ""
        if r["mode"] == "lake":
            extra = f" (score {r['score_seconds']:.1f} s + commit {r['commit_seconds']:.1f} s)"
        print(f"{r['mode']:<10} {r['n']:>11,} {r['passed']:>8,} {r['seconds']:>8.1f} {r['n'] / r['seconds']:>9,.0f} "
              f"{rss:>13,.0f}  {(r['top'] or [''])[0]}{extra}")
    if results:
        print(f"closed-form count {results[0]['closed_form']:,}; model training {results[0]['train_seconds']:.1f} s "
              "(not in the times)")
        tops = {tuple(r["top"]) for r in results if r["top"]}
        print("same top candidates in every mode" if len(tops) == 1 else f"top candidates differ: {tops}")
    if args.json:
        print(json.dumps({"machine": machine_info(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
