"""Concurrency stress: N ingest + M query + 1 train/predict processes on one lake.

    .venv/bin/python bench/concurrency.py [--ingesters 8] [--queriers 4] [--files 240] [--catalog URL]

The scenario of tests/test_concurrency.py with adjustable sizes: overlapping,
shuffled lists of synthetic EIS files (10% byte-identical copies), queries that
check snapshot consistency at every snapshot they see, a composition-regressor
trainer seeded with the Materials Project sample.  Checks that every process
exits 0 with no lock error, that the impedance table reconciles exactly with
the ledger, and that doctor is clean; prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import matlake  # noqa: E402
from matlake.platform.operations import doctor  # noqa: E402
from workers import file_shas, reconcile, write_eis_files, write_ingest_lists  # noqa: E402

WORKERS = ROOT / "tests" / "workers.py"
SAMPLES_DFT = ROOT / "samples" / "dft"


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKERS), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ingesters", type=int, default=8)
    ap.add_argument("--queriers", type=int, default=4)
    ap.add_argument("--files", type=int, default=240)
    ap.add_argument("--catalog", help="catalog URL (default: SQLite in the lake folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "lake"
        lake = matlake.init(root, catalog=args.catalog)
        lake.ingest([SAMPLES_DFT / "MP_stable_entries_Mg_Ga_N.json", SAMPLES_DFT / "MAPbI3_mp-977013_symmetrized.cif"],
                    progress=False)
        lake.close()
        files = write_eis_files(work / "src", 0, args.files, duplicates=args.files // 10)
        lists = write_ingest_lists(files, work, args.ingesters, args.files * 3 // 8, seed=0)
        stop = work / "stop"
        t0 = time.time()
        readers = [spawn("query", str(root), str(stop)) for _ in range(args.queriers)]
        trainer = spawn("train", str(root), str(stop))
        batches = [1, 2, 3, 4, 5, 8, 13, 21]
        ingesters = [spawn("ingest", str(root), str(lf), str(batches[i % len(batches)])) for i, lf in enumerate(lists)]
        results: dict[str, list] = {}
        lock_errors = 0
        for name, procs in (("ingest", ingesters), ("query", readers), ("train", [trainer])):
            if name == "query":
                ingest_seconds = time.time() - t0
                stop.touch()
            for p in procs:
                out, err = p.communicate()
                if p.returncode:
                    raise SystemExit(f"{name} process exited {p.returncode}: {err[-2000:]}")
                lock_errors += err.lower().count("locked") + err.lower().count("deadlock")
                results.setdefault(name, []).append(json.loads(out.strip().splitlines()[-1]))
        lake = matlake.open(str(root))
        figures = reconcile(lake)
        distinct = file_shas(work / "src")
        assert figures["records"] == len(distinct), (figures, len(distinct))
        rep = doctor(lake)
        assert rep.ok, rep.problems
        print(json.dumps({
            "catalog": "postgresql" if args.catalog else "sqlite", "ingesters": args.ingesters,
            "queriers": args.queriers, "files": len(files), "distinct": len(distinct),
            "records": figures["records"], "snapshots": lake.last_snapshot(),
            "ingest_commits": sum(r["commits"] for r in results["ingest"]),
            "queries": sum(r["queries"] for r in results["query"]), "models": results["train"][0]["models"],
            "predictions": results["train"][0]["predictions"], "lock_errors": lock_errors,
            "ingest_seconds": round(ingest_seconds, 1), "total_seconds": round(time.time() - t0, 1)}))
        lake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
