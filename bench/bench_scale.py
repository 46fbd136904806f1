"""Issue #8 items 1-3: prediction write-back, catalog growth, cold queries after a
re-version, and warm queries over many small commits (before and after ``compact``).

Each measurement is a ratio of two variants timed in alternation (medians), so the
load of a shared machine hits both alike:

* **write-back**: committing ``--rows`` predictions through a ChangeSet (the commit
  ``lake.predict`` makes: one predict activity that used the model and the set of
  subjects) as new records (version 1) and again as version 2 of every record, vs
  ``pyarrow.parquet.write_table`` of the same rows to a file;
* **catalog bytes per predicted row** after both commits (SQLite catalog file, after a
  WAL checkpoint, minus the empty lake's);
* **cold query after a full re-version**: ``Lake.open`` + ``select count(*), avg(value)
  from predictions`` at the snapshot before the re-version vs after it;
* **small files**: warm ``lake.sql`` of a filter + aggregate over ``calculations`` in a
  lake of ``--base`` rows plus 9 single-row commits vs plus ``--commits - 1`` single-row
  commits, and the latter after ``compact``.

On code without used sets (before issue #8) the predict activity records one link per
subject, as that code's ``predict`` did, so the same script measures both.

Run: ``.venv/bin/python bench/bench_scale.py [--rows 100000] [--commits 500] [--repeat 5] [--json]``
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit_json, format_machine, machine_info, table, time_call  # noqa: E402

SMALL_QUERY = ("select run_type, count(*), avg(energy_per_atom) from calculations where band_gap > 1 "
               "group by run_type order by 1")
COLD_QUERY = "select count(*), avg(value) from predictions"


def prediction_rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    subjects = pa.array([f"s{i:012d}" for i in range(n)])
    return pa.table({
        "record_id": pa.array([f"p{i:031d}" for i in range(n)]),
        "model_id": pa.array(["model_bench"] * n), "model_name": pa.array(["bench"] * n),
        "model_version": pa.array(np.ones(n, np.int32)), "subject_id": subjects,
        "subject_table": pa.array(["structures"] * n), "target": pa.array(["energy_per_atom"] * n),
        "value": pa.array(rng.normal(size=n)), "uncertainty": pa.array(rng.random(n)),
        "unit": pa.array(["eV/atom"] * n)})


def commit_predictions(lake: Any, rows: pa.Table) -> int:
    from matlake.platform.lake import ChangeSet

    cs = ChangeSet("predict", "bench")
    act = cs.activity("predict", "bench", "1", parameters={"model_id": "model_bench"})
    act.used("model", "model_bench")
    if hasattr(act, "used_set"):
        act.used_set("structures", lake.last_snapshot(), "select ...", rows.column("subject_id"), members="generated")
    else:  # code before used sets: one link per subject, as its predict wrote
        for s in rows.column("subject_id").to_pylist():
            act.used("record", s, table="structures")
    cs.add_rows("predictions", rows, act, version=None)
    return lake.commit(cs)


def catalog_bytes(lake: Any) -> int:
    path = Path(lake.root) / "catalog.sqlite"
    lake.engine.dispose()
    con = sqlite3.connect(path)
    con.execute("pragma wal_checkpoint(truncate)")
    con.close()
    return path.stat().st_size


def bench_writeback(n: int, repeat: int, work: Path) -> dict[str, Any]:
    import matlake

    rows = prediction_rows(n)
    times = {k: Timing(k) for k in ("commit v1", "commit v2", "pq.write_table")}
    per_row = []
    cold = {k: Timing(k) for k in ("cold query before re-version", "cold query after re-version")}
    for r in range(repeat):
        root = work / f"wb{r}"
        lake = matlake.init(root)
        from matlake.platform.lake import ChangeSet

        cs = ChangeSet("ingest", "bench")  # a snapshot for the predictions to have been read at
        cs.add_rows("structures", [{"record_id": "s0", "formula": "Si"}], cs.activity("ingest", "bench", "1"))
        lake.commit(cs)
        empty = catalog_bytes(lake)
        t, s1 = time_call(lambda: commit_predictions(lake, rows), 1)
        times["commit v1"].samples += t.samples
        t, s2 = time_call(lambda: commit_predictions(lake, rows), 1)
        times["commit v2"].samples += t.samples
        t, _ = time_call(lambda: pq.write_table(rows, work / "plain.parquet", compression="zstd"), 1)
        times["pq.write_table"].samples += t.samples
        per_row.append((catalog_bytes(lake) - empty) / (2 * n))
        lake.close()
        for _ in range(2):
            for name, sid in (("cold query before re-version", s1), ("cold query after re-version", s2)):
                def cold_query(sid=sid):
                    with matlake.open(root) as lk:
                        return lk.sql(COLD_QUERY, as_of=sid).fetchall()
                t, res = time_call(cold_query, 1)
                cold[name].samples += t.samples
                assert res[0][0] == n, res
        shutil.rmtree(root)
    base = times["pq.write_table"].median
    return {
        "rows": n,
        "median_s": {k: v.median for k, v in {**times, **cold}.items()},
        "writeback_ratio_v1": times["commit v1"].median / base,
        "writeback_ratio_v2": times["commit v2"].median / base,
        "catalog_bytes_per_row": float(np.median(per_row)),
        "cold_after_over_before": cold["cold query after re-version"].median / cold["cold query before re-version"].median,
    }


def calc_rows(n: int, start: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"record_id": pa.array([f"c{start + i:09d}" for i in range(n)]),
                     "run_type": pa.array(rng.choice(["GGA", "GGA+U", "SCAN"], n)),
                     "band_gap": pa.array(rng.random(n) * 4), "energy_per_atom": pa.array(rng.normal(-5, 1, n))})


def small_lake(root: Path, base: int, commits: int) -> Any:
    import matlake
    from matlake.platform.lake import ChangeSet

    lake = matlake.init(root)
    for i in range(commits):
        cs = ChangeSet("ingest", "bench")
        act = cs.activity("ingest", "bench", "1")
        cs.add_rows("calculations", calc_rows(base if i == 0 else 1, 0 if i == 0 else base + i, i), act, version=1)
        lake.commit(cs)
    return lake


def bench_small_files(base: int, commits: int, repeat: int, work: Path) -> dict[str, Any]:
    from matlake.platform.operations import compact

    few = small_lake(work / "few", base, 10)
    many = small_lake(work / "many", base, commits)
    compacted = small_lake(work / "compacted", base, commits)
    (res,) = compact(compacted, "calculations")
    lakes = {"10 commits": few, f"{commits} commits": many, f"{commits} commits, compacted": compacted}
    for lk in lakes.values():
        lk.sql(SMALL_QUERY).fetchall()  # warm: the engine is built and cached
    times = {k: Timing(k) for k in lakes}
    answers = {}
    for _ in range(repeat):
        for name, lk in lakes.items():
            t, answers[name] = time_call(lambda lk=lk: lk.sql(SMALL_QUERY).fetchall(), 1)
            times[name].samples += t.samples
    base_t = times["10 commits"].median
    out = {"median_s": {k: v.median for k, v in times.items()},
           "ratio_many": times[f"{commits} commits"].median / base_t,
           "ratio_compacted": times[f"{commits} commits, compacted"].median / base_t,
           "compacted_row_groups": pq.ParquetFile(compacted.root / res.path).metadata.num_row_groups}
    for lk in lakes.values():
        lk.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--base", type=int, default=10_000, help="rows of the first commit of the small-files lakes")
    ap.add_argument("--commits", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-small-files", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    started = time.perf_counter()
    try:
        wb = bench_writeback(args.rows, args.repeat, work)
        sf = None if args.skip_small_files else bench_small_files(args.base, args.commits, args.repeat * 4, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {"machine": machine_info(), "writeback": wb, "small_files": sf,
               "wall_s": time.perf_counter() - started}
    if args.json:
        emit_json(payload)
        return payload
    print(format_machine(payload["machine"]))
    print(f"\nwrite-back of {args.rows} predictions (medians of {args.repeat})")
    print(table(["variant", "median s"], [[k, f"{v:.3f}"] for k, v in wb["median_s"].items()]))
    print(f"commit / pq.write_table: v1 {wb['writeback_ratio_v1']:.2f}x, v2 {wb['writeback_ratio_v2']:.2f}x; "
          f"catalog {wb['catalog_bytes_per_row']:.2f} bytes per predicted row; cold query after/before "
          f"re-version {wb['cold_after_over_before']:.2f}x")
    if sf:
        print(f"\nwarm query over many small commits (base {args.base} rows, medians of {args.repeat * 4})")
        print(table(["lake", "median ms"], [[k, f"{v * 1e3:.2f}"] for k, v in sf["median_s"].items()]))
        print(f"{args.commits} commits / 10: {sf['ratio_many']:.2f}x; after compact: {sf['ratio_compacted']:.2f}x "
              f"({sf['compacted_row_groups']} row group(s))")
    return payload


if __name__ == "__main__":
    main()
