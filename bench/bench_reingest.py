"""No-op re-ingest with 1 and 2 parse workers, for one or more checkouts of matlake.

A lake is made with ``--files`` small synthetic EIS CSVs (``tests/workers.py``
``write_eis_files``), ingested once; then every timed run re-ingests all of them,
which is a no-op (every file ``unchanged``, nothing committed).  Each run is a
fresh Python process importing the code of one checkout (``--code NAME=PATH``
puts PATH first on ``PYTHONPATH``); only the ``lake.ingest`` call is timed (it
includes starting the worker pool).  The variants (checkout x workers) take
turns round by round; the table gives the median and best of ``--repeat`` runs.

Run: ``.venv/bin/python bench/bench_reingest.py [--files 2000] [--repeat 3]
[--code before=/path/to/main --code after=.]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import emit_json, format_machine, machine_info, table  # noqa: E402

# One timed run, in a fresh process: argv = lake, file list, workers.
RUN = """
import json, sys, time
import matlake
lake = matlake.open(sys.argv[1])
files = open(sys.argv[2]).read().split("\\n")
t = time.perf_counter()
r = lake.ingest(files, workers=int(sys.argv[3]), progress=False)
dt = time.perf_counter() - t
assert (r.new, r.unchanged, r.failed, r.errors) == (0, len(files), 0, 0), r.summary()
print(json.dumps({"s": dt, "code": matlake.__file__}))
"""

SETUP = """
import sys
import matlake
lake = matlake.init(sys.argv[1])
r = lake.ingest(open(sys.argv[2]).read().split("\\n"), workers=1, progress=False)
assert r.failed == r.errors == 0, r.summary()
"""


def _python(code_root: Path, script: str, *args: str, cwd: Path) -> str:
    # cwd: ``python -c`` puts the current directory before PYTHONPATH, so it must hold no matlake.
    env = dict(os.environ, PYTHONPATH=str(code_root))
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=900, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"run failed ({code_root}): {done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="files in the lake and re-ingested (default 2000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of timed runs (default 3)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=PATH",
                    help="a checkout to time (repeatable; default: this one)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the lake is made")
    ap.add_argument("--json", action="store_true", help="print a JSON record instead of a table")
    args = ap.parse_args(argv)
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code] or [("this", HERE.parent)]

    from workers import write_eis_files

    work = Path(tempfile.mkdtemp(prefix="bench-reingest-", dir=args.workdir))
    files = write_eis_files(work / "src", 0, args.files)
    listing = work / "files.txt"
    listing.write_text("\n".join(str(p.resolve()) for p in files))
    lake = work / "lake"
    _python(codes[-1][1], SETUP, str(lake), str(listing), cwd=work)

    runs: dict[tuple[str, int], list[float]] = {(n, w): [] for n, _ in codes for w in args.workers}
    for _ in range(args.repeat):
        for name, root in codes:
            for w in args.workers:
                got = json.loads(_python(root, RUN, str(lake), str(listing), str(w), cwd=work).strip().splitlines()[-1])
                if not Path(got["code"]).resolve().is_relative_to(root):
                    raise RuntimeError(f"{name}: imported {got['code']}, not the code under {root}")
                runs[(name, w)].append(got["s"])

    med = {k: statistics.median(v) for k, v in runs.items()}
    rows = []
    for (name, w), v in runs.items():
        base = med[(name, args.workers[0])]
        rows.append([name, w, args.files, round(min(v), 3), round(med[(name, w)], 3),
                     round(med[(name, w)] / base, 2)])
    result = {"machine": machine_info(), "files": args.files, "repeat": args.repeat,
              "codes": {n: str(p) for n, p in codes},
              "runs": {f"{n}/{w}": v for (n, w), v in runs.items()},
              "median_s": {f"{n}/{w}": m for (n, w), m in med.items()}}
    if args.json:
        emit_json(result)
    else:
        print(format_machine(result["machine"]))
        print(table(["code", "workers", "files", "best (s)", "median (s)",
                     f"median / {args.workers[0]} worker"], rows))
    return result


if __name__ == "__main__":
    main()
