"""Filter + aggregate over 10^6 ``calculations`` rows: ``lake.sql`` (DuckDB) vs pandas.

Generates ``--rows`` synthetic calculation rows (formulas drawn from a pool
with a long-tailed frequency, energies, band gaps, run types), commits them
through ChangeSets in ``--commits`` commits (as many ingests would), then
times one typical query

    select reduced_formula, count(*), avg(band_gap), min(energy_per_atom)
    from calculations where band_gap > 1 and run_type = 'GGA'
    group by reduced_formula order by 2 desc, 1 limit 20

(``, 1`` breaks ties in the count so both sides must return the same 20
rows), the variants taking turns round by round, through

* ``lake.sql(q).df()`` cold (``Lake.open`` + first query: catalog read, views,
  DuckDB) and warm (the lake's cached query engine);
* pandas cold (``pd.read_parquet`` of the same Parquet files, only the needed
  columns, then the same filter/groupby) and cold reading every column;
* pandas warm (the DataFrame already in memory);

then commits a second version of one record, which turns the latest-version
view into a window over all rows, and times the query again against the
snapshot before it.

All variants must return the same table (checked).  The OS page cache is warm
for every variant (the files were just written); "cold" means a new process-
level reader, not a cold disk.

Run: ``.venv/bin/python bench/bench_query.py [--rows 1000000] [--commits 5] [--repeat 7] [--json]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit_json, format_machine, machine_info, table, time_call  # noqa: E402

QUERY = ("select reduced_formula, count(*) as n, avg(band_gap) as avg_gap, min(energy_per_atom) as min_epa "
         "from calculations where band_gap > 1 and run_type = 'GGA' "
         "group by reduced_formula order by 2 desc, 1 limit 20")
NEEDED = ["reduced_formula", "band_gap", "energy_per_atom", "run_type"]
RUN_TYPES = np.array(["GGA", "GGA+U", "PBEsol", "SCAN", "r2SCAN", "HSE06"])
RUN_TYPE_WEIGHTS = np.array([0.45, 0.25, 0.1, 0.08, 0.07, 0.05])
ELEMENTS = ("H Li Be B C N O F Na Mg Al Si P S Cl K Ca Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Rb Sr Y Zr Nb Mo "
            "Ru Rh Pd Ag Cd In Sn Sb Te I Cs Ba La Ce Nd Sm Gd Hf Ta W Ir Pt Au Pb Bi").split()


def formula_pool(n: int, rng: np.random.Generator) -> tuple[list[str], list[list[str]], list[int]]:
    """``n`` distinct reduced formulas of 1-4 elements with small integer amounts, their
    sorted element lists and atoms per formula unit."""
    formulas: dict[str, tuple[list[str], int]] = {}
    while len(formulas) < n:
        k = int(rng.integers(1, 5))
        els = sorted(rng.choice(ELEMENTS, size=k, replace=False).tolist())
        amounts = rng.integers(1, 7, size=k).tolist()
        g = int(np.gcd.reduce(amounts))
        amounts = [a // g for a in amounts]
        f = "".join(e + (str(a) if a > 1 else "") for e, a in zip(els, amounts))
        formulas.setdefault(f, (els, sum(amounts)))
    names = list(formulas)
    return names, [formulas[f][0] for f in names], [formulas[f][1] for f in names]


def make_rows(n: int, pool_size: int, seed: int) -> pa.Table:
    """``n`` synthetic ``calculations`` rows (record_id + data columns, unset ones left out).

    Formula frequencies fall off like 1/(rank + 10), as in real databases where a
    few systems are computed many times; band gaps are 0 for ~40 % of rows (metals)
    and exponential (mean 1.5 eV) otherwise; energies per atom are normal around
    -5 eV/atom.
    """
    rng = np.random.default_rng(seed)
    names, elements, natoms = formula_pool(pool_size, rng)
    w = 1.0 / (np.arange(pool_size) + 10.0)
    idx = rng.choice(pool_size, size=n, p=w / w.sum())
    take = pa.array(idx)
    ids = np.frombuffer(rng.bytes(16 * n), dtype="S16")
    record_ids = pa.array([b.hex() for b in ids], pa.string())  # hex like real sha-derived ids
    z = rng.integers(1, 5, size=n)  # formula units per cell
    nsites = np.asarray(natoms)[idx] * z
    epa = rng.normal(-5.0, 1.5, size=n)
    gap = np.where(rng.random(n) < 0.4, 0.0, rng.exponential(1.5, size=n))
    run_type = RUN_TYPES[rng.choice(len(RUN_TYPES), size=n, p=RUN_TYPE_WEIGHTS)]
    reduced = pa.array(names, pa.string()).take(take)
    return pa.table({
        "record_id": record_ids,
        "formula": reduced,  # the cell formula is not needed by the query; reuse the reduced one
        "reduced_formula": reduced,
        "elements": pa.array(elements, pa.list_(pa.string())).take(take),
        "nsites": pa.array(nsites.astype(np.int32)),
        "code": pa.array(np.full(n, "VASP")),
        "run_type": pa.array(run_type),
        "functional": pa.array(np.full(n, "PBE")),
        "is_hubbard": pa.array(run_type == "GGA+U"),
        "encut": pa.array(np.full(n, 520.0)),
        "ispin": pa.array(rng.integers(1, 3, size=n).astype(np.int32)),
        "electronic_converged": pa.array(rng.random(n) > 0.01),
        "energy": pa.array(epa * nsites),
        "energy_per_atom": pa.array(epa),
        "band_gap": pa.array(gap),
        "is_metal": pa.array(gap == 0.0),
        "source_name": pa.array(np.full(n, "vasprun.xml.gz")),
    })


def pandas_query(df: pd.DataFrame) -> pd.DataFrame:
    """The benchmark query in pandas, same semantics and column names as the SQL."""
    d = df[(df["band_gap"] > 1) & (df["run_type"] == "GGA")]
    g = d.groupby("reduced_formula", sort=False).agg(
        n=("band_gap", "size"), avg_gap=("band_gap", "mean"), min_epa=("energy_per_atom", "min"))
    g = g.reset_index().sort_values(["n", "reduced_formula"], ascending=[False, True]).head(20)
    return g.reset_index(drop=True)


def same_result(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    """Raise unless ``a`` and ``b`` hold the same 20 rows (floats to 1e-9 relative)."""
    cols = ["reduced_formula", "n", "avg_gap", "min_epa"]
    a, b = a[cols].reset_index(drop=True), b[cols].reset_index(drop=True)
    if len(a) != len(b) or list(a["reduced_formula"].astype(str)) != list(b["reduced_formula"].astype(str)):
        raise RuntimeError(f"{what}: expected formulas {list(a['reduced_formula'])}, found {list(b['reduced_formula'])}")
    if not np.array_equal(a["n"].to_numpy(np.int64), b["n"].to_numpy(np.int64)):
        raise RuntimeError(f"{what}: counts differ: {a['n'].tolist()} vs {b['n'].tolist()}")
    for c in ("avg_gap", "min_epa"):
        if not np.allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-9, atol=0):
            raise RuntimeError(f"{what}: column {c} differs: {a[c].tolist()} vs {b[c].tolist()}")


def round_robin(variants: list[tuple[str, Any]], repeat: int) -> dict[str, tuple[Timing, Any]]:
    """Time each variant ``repeat`` times, one of each per round, so load that comes
    and goes on a shared machine hits all variants alike."""
    out = {name: (Timing(name), None) for name, _ in variants}
    for _ in range(repeat):
        for name, fn in variants:
            t, result = time_call(fn, 1, name)
            out[name][0].samples.extend(t.samples)
            out[name] = (out[name][0], result)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 10^6)")
    ap.add_argument("--commits", type=int, default=5, help="commits to split them into (default 5)")
    ap.add_argument("--pool", type=int, default=20_000, help="distinct formulas (default 20000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed repetitions per variant (default 7)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the lake is made")
    ap.add_argument("--json", action="store_true", help="print a JSON record instead of tables")
    args = ap.parse_args(argv)

    from matlake.platform.lake import ChangeSet, Lake

    info = machine_info()
    root = Path(tempfile.mkdtemp(prefix="matlake-bench-query-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        rows = make_rows(args.rows, args.pool, seed=20261123)
        gen_s = time.perf_counter() - t0

        lake = Lake.init(root / "lake")
        bounds = np.linspace(0, args.rows, args.commits + 1).astype(int)
        commit = Timing("commit")
        for i in range(args.commits):
            part = rows.slice(bounds[i], bounds[i + 1] - bounds[i])
            t0 = time.perf_counter()
            cs = ChangeSet("bench", f"bench rows {bounds[i]}..{bounds[i + 1]}")
            act = cs.activity("ingest", "bench", "1")
            cs.add_rows("calculations", part, act, version=1)
            lake.commit(cs)
            commit.samples.append(time.perf_counter() - t0)
        files = lake.files_at(lake.last_snapshot(), "calculations")
        paths = [str(lake.root / f["path"]) for f in files]
        parquet_mb = sum(Path(p).stat().st_size for p in paths) / 1e6
        lake.close()

        # reference result: pandas on the generated Arrow table
        reference = pandas_query(rows.select(NEEDED).to_pandas())

        def lake_cold() -> pd.DataFrame:
            lk = Lake.open(root / "lake")
            try:
                return lk.sql(QUERY).df()
            finally:
                lk.close()

        warm_lake = Lake.open(root / "lake")
        warm_lake.sql(QUERY).df()  # builds and caches the query engine

        def pandas_cold() -> pd.DataFrame:
            return pandas_query(pd.read_parquet(paths, columns=NEEDED))

        def pandas_cold_all() -> pd.DataFrame:
            return pandas_query(pd.read_parquet(paths))

        loaded = pd.read_parquet(paths, columns=NEEDED)
        lake_cold()  # warm-up: imports, OS page cache
        pandas_cold()
        variants = [
            ("lake.sql cold (Lake.open + query)", lake_cold),
            ("lake.sql warm (cached query engine)", lambda: warm_lake.sql(QUERY).df()),
            ("pandas cold (read_parquet 4 columns + query)", pandas_cold),
            ("pandas cold (read_parquet all columns + query)", pandas_cold_all),
            ("pandas warm (DataFrame in memory)", lambda: pandas_query(loaded)),
        ]
        timings: dict[str, Timing] = {}
        for name, (t, result) in round_robin(variants, args.repeat).items():
            same_result(reference, result, name)
            timings[name] = t
        sid_v1 = warm_lake.last_snapshot()

        # where a cold lake.sql spends its time: open (catalog engine, migration check),
        # query engine (catalog read of the snapshot's files, DuckDB views), the query itself
        phases: dict[str, Timing] = {k: Timing(k) for k in ("Lake.open", "query engine (views)", "query")}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            lk = Lake.open(root / "lake")
            t1 = time.perf_counter()
            lk.query_engine()
            t2 = time.perf_counter()
            lk.sql(QUERY).df()
            t3 = time.perf_counter()
            lk.close()
            for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                phases[k].samples.append(dt)

        # one corrected record (version 2) switches the latest-version view to a window over all rows
        first_id = rows.column("record_id")[0].as_py()
        cs = ChangeSet("bench", "one corrected record")
        act = cs.activity("ingest", "bench", "2")
        cs.add_rows("calculations", rows.slice(0, 1), act, version=2)
        warm_lake.commit(cs)
        v2_lake = Lake.open(root / "lake")
        v2_lake.sql(QUERY).df()
        v2 = round_robin([
            ("lake.sql warm, all records at version 1 (as_of the snapshot before)",
             lambda: warm_lake.sql(QUERY, as_of=sid_v1).df()),
            ("lake.sql cold, one record at version 2", lake_cold),
            ("lake.sql warm, one record at version 2", lambda: v2_lake.sql(QUERY).df()),
        ], args.repeat)
        for name, (_t, result) in v2.items():
            same_result(reference, result, name)
        t_v1_again = v2["lake.sql warm, all records at version 1 (as_of the snapshot before)"][0]
        t_v2_cold = v2["lake.sql cold, one record at version 2"][0]
        t_v2_warm = v2["lake.sql warm, one record at version 2"][0]
        n_latest = v2_lake.sql("select count(*) from calculations").fetchone()[0]
        if n_latest != args.rows or v2_lake.sql(
                "select version from calculations where record_id = ?", params=[first_id]).fetchone()[0] != 2:
            raise RuntimeError(f"latest view after a version-2 row: expected {args.rows} rows with record "
                               f"{first_id} at version 2, found {n_latest} rows")
        v2_lake.close()
        warm_lake.close()
        import duckdb

        duck_threads = duckdb.connect().execute("select current_setting('threads')").fetchone()[0]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base_best = timings["pandas cold (read_parquet 4 columns + query)"].best
    base_median = timings["pandas cold (read_parquet 4 columns + query)"].median
    all_t = list(timings.values()) + [t_v1_again, t_v2_cold, t_v2_warm]
    payload = {
        "benchmark": "query", "machine": info, "rows": args.rows, "commits": args.commits, "pool": args.pool,
        "repeat": args.repeat, "query": QUERY, "duckdb_threads": duck_threads, "parquet_mb": parquet_mb,
        "generate_s": gen_s, "commit": commit.as_dict(),
        "cold_phases": {k: t.as_dict() for k, t in phases.items()},
        "timings": {t.name: t.as_dict() for t in all_t},
        "baseline": "pandas cold (read_parquet 4 columns + query)",
    }
    if args.json:
        emit_json(payload)
        return payload

    print(format_machine(info))
    print(f"\n{args.rows:,} rows in {args.commits} commits ({len(paths)} Parquet files, {parquet_mb:.1f} MB), "
          f"{args.pool:,} formulas; DuckDB threads = {duck_threads}; {args.repeat} repetitions.\n"
          f"Query: {QUERY}\nAll variants return the same 20 rows (checked).\n")
    rows_out = [[t.name, t.best, t.median, t.best / base_best, t.median / base_median] for t in all_t]
    print(table(["variant", "best (s)", "median (s)", "ratio to pandas cold (best)", "ratio (median)"], rows_out))
    print("\nlake.sql cold, by phase (median s): " + ", ".join(f"{k} {t.median:.3f}" for k, t in phases.items()))
    print(f"\ncommit of {args.rows:,} rows: total {sum(commit.samples):.2f} s "
          f"({args.rows / sum(commit.samples):,.0f} rows/s; per commit of ~{args.rows // args.commits:,} rows: "
          f"best {commit.best:.2f} s, median {commit.median:.2f} s); generating the rows took {gen_s:.2f} s")
    return payload


if __name__ == "__main__":
    main()
