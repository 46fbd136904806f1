"""Crash soak: kill -9 ingest processes at random points of their commits, many times.

    .venv/bin/python bench/crash_soak.py --kills 500 [--parallel 4] [--catalog postgresql://...]

The same campaign as tests/test_crash.py (see ``crash_campaign`` in
tests/workers.py), longer: after every wave of parallel killed ingesters
``doctor`` must report consistent and the table must reconcile with the
ledger; at the end a clean rerun must ingest every file and ``gc --grace 0``
must leave no orphan.  Prints one JSON line of figures.
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
from workers import crash_campaign, file_shas, reconcile  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=500)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--catalog", help="catalog URL (default: SQLite in the lake folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "lake"
        matlake.init(root, catalog=args.catalog).close()
        t0 = time.time()
        stats = crash_campaign(root, work, kills=args.kills, parallel=args.parallel, seed=args.seed)
        listfile = work / "list-final"
        listfile.write_text("\n".join(sorted(str(p) for p in (work / "src").iterdir())))
        out = subprocess.run([sys.executable, str(ROOT / "tests" / "workers.py"), "ingest", str(root),
                              str(listfile), "8"], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"final rerun failed: {out.stderr[-2000:]}")
        lake = matlake.open(str(root))
        ok_shas = {r[0] for r in lake.sql("select sha256 from ledger where status = 'ok'").fetchall()}
        if ok_shas != file_shas(work / "src"):
            raise SystemExit("final rerun did not ingest every file")
        figures = reconcile(lake)
        orphans_before_gc = len(doctor(lake).orphans)
        gc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "gc", "--grace", "0", "--lake", str(root)],
                            capture_output=True, text=True)
        rep = doctor(lake)
        if gc.returncode or not rep.ok or rep.orphans:
            raise SystemExit(f"after gc: rc={gc.returncode} problems={rep.problems[:5]} orphans={len(rep.orphans)}")
        stats.update(files=len(ok_shas), records=figures["records"], snapshots=lake.last_snapshot(),
                     orphans_before_gc=orphans_before_gc, total_seconds=round(time.time() - t0, 1),
                     catalog="postgresql" if args.catalog else "sqlite")
        lake.close()
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
