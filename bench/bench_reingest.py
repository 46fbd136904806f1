"""No-op re-ingest and new ingest with 1 and 2 parse workers, for one or more checkouts of matlake.

No-op: a lake is made with ``--files`` small synthetic EIS CSVs (``tests/workers.py``
``write_eis_files``), ingested once; then every timed run re-ingests all of them,
which is a no-op (every file ``unchanged``, nothing committed).  ``warm``: the
path cache (``path_stamps``) holds every file, so nothing is read whole; ``cold``:
it is emptied before the run (a lake from before the cache, or files touched
since), so every file is read and hashed again.  The files are left to settle
for 2.5 s before the lake is made (a file changed within 2 s of its read is not
cached, see ``ingestion.FileStamp``).

New: ``--new-cifs N`` also times a new ingest of N distinct CIFs (the sample
MAPbI3 CIF with a comment line that differs, so every file is parsed) into a
fresh lake per run, and once per round what a user would otherwise run over the
same files: pymatgen's parse plus the symmetry analysis matlake stores, in one
fresh process, imports included (the lake's parsers import pymatgen inside the
timed ingest too).

Each run is a fresh Python process importing the code of one checkout (``--code
NAME=PATH`` puts PATH first on ``PYTHONPATH``); only the ``lake.ingest`` call is
timed (it includes starting the worker pool).  The variants take turns round by
round; the table gives the median and best of ``--repeat`` runs, the CPU seconds
they used (process and pool workers), and the load average before each round
(the machine may be shared).

Run: ``.venv/bin/python bench/bench_reingest.py [--files 2000] [--repeat 3]
[--new-cifs 0] [--code before=/path/to/main --code after=.]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import emit_json, format_machine, machine_info, table  # noqa: E402

# One timed run, in a fresh process: argv = lake, file list, workers, cache (warm | cold | new).
RUN = """
import json, resource, sys, time
import matlake
lake = matlake.open(sys.argv[1])
files = open(sys.argv[2]).read().split("\\n")
if sys.argv[4] == "cold":
    import sqlalchemy as sa
    with lake.engine.begin() as conn:
        if sa.inspect(conn).has_table("path_stamps"):
            conn.execute(sa.text("delete from path_stamps"))
def cpu():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
c, t = cpu(), time.perf_counter()
r = lake.ingest(files, workers=int(sys.argv[3]), progress=False)
dt = time.perf_counter() - t
c = cpu() - c  # the parent and its (reaped) pool workers
want = (len(files), 0) if sys.argv[4] == "new" else (0, len(files))
assert (r.new, r.unchanged, r.failed, r.errors) == (*want, 0, 0), r.summary()
print(json.dumps({"s": dt, "cpu_s": c, "code": matlake.__file__}))
"""

# What a user would otherwise run over the same CIFs, in one fresh process: pymatgen's parse plus the
# symmetry analysis matlake stores (as bench_ingest's CIF row).  The imports are timed, as the lake
# runs' parsers import pymatgen inside the timed ingest.
BARE = """
import json, resource, sys, time
def cpu():
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime
c, t = cpu(), time.perf_counter()
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
for path in open(sys.argv[1]).read().splitlines():
    sga = SpacegroupAnalyzer(Structure.from_file(path), symprec=0.1)
    sga.get_space_group_symbol(), sga.get_space_group_number(), sga.get_crystal_system()
print(json.dumps({"s": time.perf_counter() - t, "cpu_s": cpu() - c}))
"""

INIT = """
import sys
import matlake
matlake.init(sys.argv[1])
"""


def write_cifs(folder: Path, n: int) -> list[Path]:
    """``n`` distinct CIFs: the sample MAPbI3 CIF with a numbered comment line (same parse work each)."""
    text = (HERE.parent / "samples" / "dft" / "MAPbI3_mp-977013_symmetrized.cif").read_text()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"c{i:06d}.cif"
        p.write_text(f"# copy {i}\n" + text)
        out.append(p)
    return out

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
    ap.add_argument("--cache", nargs="*", default=["warm", "cold"], choices=["warm", "cold"],
                    help="path-cache states of the no-op runs (default warm cold; none: no no-op runs)")
    ap.add_argument("--new-cifs", type=int, default=0, help="also time a new ingest of this many CIFs (default 0)")
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
    cif_listing = work / "cifs.txt"
    if args.new_cifs:
        cif_listing.write_text("\n".join(str(p.resolve()) for p in write_cifs(work / "cifs", args.new_cifs)))
    time.sleep(2.5)  # let the files settle, so that the first ingest may cache their stamps
    lake = work / "lake"
    _python(codes[-1][1], SETUP, str(lake), str(listing), cwd=work)

    variants = [(c, w) for c in args.cache for w in args.workers]
    if args.new_cifs:
        variants += [("new", w) for w in args.workers]
    runs: dict[tuple[str, str, int], list[float]] = {(n, c, w): [] for n, _ in codes for c, w in variants}
    cpus: dict[tuple[str, str, int], list[float]] = {k: [] for k in runs}
    loads: list[float] = []
    bare: list[float] = []
    bare_cpu: list[float] = []
    for _ in range(args.repeat):
        loads.append(round(os.getloadavg()[0], 2))
        if args.new_cifs:
            got = json.loads(_python(codes[-1][1], BARE, str(cif_listing), cwd=work).strip().splitlines()[-1])
            bare.append(got["s"])
            bare_cpu.append(got["cpu_s"])
        for name, root in codes:
            for cache, w in variants:
                target, lst = lake, listing
                if cache == "new":
                    target = work / f"new-{name}-{w}"
                    shutil.rmtree(target, ignore_errors=True)
                    _python(root, INIT, str(target), cwd=work)
                    lst = cif_listing
                got = json.loads(_python(root, RUN, str(target), str(lst), str(w), cache,
                                         cwd=work).strip().splitlines()[-1])
                if not Path(got["code"]).resolve().is_relative_to(root):
                    raise RuntimeError(f"{name}: imported {got['code']}, not the code under {root}")
                runs[(name, cache, w)].append(got["s"])
                cpus[(name, cache, w)].append(got.get("cpu_s", float("nan")))

    med = {k: statistics.median(v) for k, v in runs.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    rows = []
    for (name, cache, w), v in runs.items():
        base = med[(name, cache, args.workers[0])]
        n = args.new_cifs if cache == "new" else args.files
        what = "new CIFs" if cache == "new" else f"no-op, {cache} cache"
        cpu_base = med_cpu[(name, cache, args.workers[0])]
        cpu = med_cpu[(name, cache, w)]
        rows.append([name, what, w, n, round(min(v), 3), round(med[(name, cache, w)], 3),
                     round(base / med[(name, cache, w)], 2), round(cpu, 2),
                     round(min(w, os.cpu_count() or 1) * cpu_base / cpu, 2)])
    if bare:
        rows.append(["pymatgen", "bare parse + symmetry, same CIFs", 1, args.new_cifs, round(min(bare), 3),
                     round(statistics.median(bare), 3), "", round(statistics.median(bare_cpu), 2), ""])
        for (name, cache, w), m in med.items():
            if cache == "new":
                rows.append([name, "new CIFs / bare pymatgen", w, args.new_cifs, "",
                             round(m / statistics.median(bare), 2), "", "", ""])
    result = {"machine": machine_info(), "files": args.files, "new_cifs": args.new_cifs, "repeat": args.repeat,
              "loadavg_per_round": loads, "codes": {n: str(p) for n, p in codes},
              "runs": {f"{n}/{c}/{w}": v for (n, c, w), v in runs.items()},
              "median_s": {f"{n}/{c}/{w}": m for (n, c, w), m in med.items()},
              "cpu_s": {f"{n}/{c}/{w}": v for (n, c, w), v in cpus.items()},
              "bare_pymatgen_s": bare, "bare_pymatgen_cpu_s": bare_cpu}
    if args.json:
        emit_json(result)
    else:
        print(format_machine(result["machine"]))
        print(f"load average (1 min) before each round: {loads}")
        print(table(["code", "run", "workers", "files", "best (s)", "median (s)",
                     f"speed-up vs {args.workers[0]} worker", "median CPU (s)", "bound if cores were free"], rows))
        print("CPU: user+system seconds of the ingesting process and its pool workers; the bound is "
              "min(workers, cores) x CPU(1 worker) / CPU(n workers), the speed-up an otherwise idle machine "
              "would allow, not a measurement.")
    shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
