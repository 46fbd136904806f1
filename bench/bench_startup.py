"""Start-up cost of the ``matlake`` command, for one or more checkouts of matlake.

Makes a lake with a few tables (a CIF, a vasprun and an EIS file from
``samples/``: ``structures``, ``calculations``, ``impedance``), then times whole
commands, each a fresh process as a user runs it, wall clock from start to exit:

* ``python -c pass``: the interpreter alone;
* the reference, a Python one-liner running the same query through DuckDB:
  ``python -c "import duckdb; duckdb.sql('select 1').fetchall()"``;
* ``import sqlalchemy, pyarrow, duckdb``: the libraries that opening a lake
  needs today (catalog, table schemas, query engine), a floor for ``matlake sql``;
* for each checkout (``--code NAME=PATH`` puts PATH first on ``PYTHONPATH``):
  ``matlake --help``, ``matlake sql "select 1"`` and
  ``matlake sql "select count(*) from structures"``.

All variants take turns round by round (``--repeat`` rounds); the table gives
the best and median wall-clock run, the median as a multiple of the
reference's median, and the same for CPU time (user + system), which other
work on a busy machine disturbs less.  Goals (issue #8): ``matlake --help`` <= 0.5 s and ``matlake sql
"select 1"`` <= 3x the reference.

Run: ``.venv/bin/python bench/bench_startup.py [--repeat 9] [--code before=/path/to/old --code after=.] [--json]``
"""

from __future__ import annotations

import argparse
import os
import resource
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
from common import emit_json, format_machine, machine_info, table  # noqa: E402

SAMPLES = ("dft/MAPbI3_mp-977013_symmetrized.cif", "dft/Si_static_vasprun.xml.gz", "eis/impedancepy_exampleData.csv")
REFERENCE = "duckdb one-liner"
HELP_GOAL_S = 0.5
SQL_GOAL_RATIO = 3.0


def _variants(codes: list[tuple[str, Path]], lake: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (argv, extra environment)."""
    py = sys.executable
    plain: dict[str, str] = {"PYTHONPATH": ""}
    out = {
        "python -c pass": ([py, "-c", "pass"], plain),
        REFERENCE: ([py, "-c", "import duckdb; duckdb.sql('select 1').fetchall()"], plain),
        "import sqlalchemy, pyarrow, duckdb": ([py, "-c", "import sqlalchemy, pyarrow, duckdb"], plain),
    }
    for name, root in codes:
        env = {"PYTHONPATH": str(root)}
        cli = [py, "-m", "matlake.platform.cli"]
        out[f"{name}: matlake --help"] = (cli + ["--help"], env)
        out[f"{name}: matlake sql 'select 1'"] = (cli + ["sql", "--lake", str(lake), "select 1"], env)
        out[f"{name}: matlake sql 'select count(*) from structures'"] = (
            cli + ["sql", "--lake", str(lake), "select count(*) from structures"], env)
    return out


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds: user + system) of one command."""
    # cwd holds no matlake: ``-m``/``-c`` put it first on sys.path.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=dict(os.environ, **env), cwd=cwd, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _make_lake(root: Path, lake: Path, cwd: Path) -> None:
    script = ("import sys, matlake; lake = matlake.init(sys.argv[1]); "
              "r = lake.ingest(sys.argv[2:], progress=False); assert r.failed == r.errors == 0, r.summary()")
    files = [str(HERE.parent / "samples" / s) for s in SAMPLES]
    subprocess.run([sys.executable, "-c", script, str(lake), *files], env=dict(os.environ, PYTHONPATH=str(root)),
                   cwd=cwd, check=True, capture_output=True, timeout=600)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=9, help="rounds of runs (default 9)")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=PATH",
                    help="a checkout to time (repeatable; default: this one); the lake is made by the last")
    ap.add_argument("--json", action="store_true", help="print a JSON record instead of a table")
    args = ap.parse_args(argv)
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code] or [("this", HERE.parent)]

    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        lake = work / "lake"
        _make_lake(codes[-1][1], lake, work)
        variants = _variants(codes, lake)
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for name, (cmd, env) in variants.items():  # one untimed run each: page cache and .pyc files
            _run(cmd, env, work)
        for _ in range(args.repeat):
            for name, (cmd, env) in variants.items():
                w, c = _run(cmd, env, work)
                wall[name].append(w)
                cpu[name].append(c)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(v) for name, v in wall.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    ref, ref_cpu = med[REFERENCE], med_cpu[REFERENCE]
    rows = []
    for name, v in wall.items():
        goal = ""
        if name.endswith("matlake --help"):
            goal = f"<= {HELP_GOAL_S} s: {'met' if med[name] <= HELP_GOAL_S else 'not met'}"
        elif name.endswith("matlake sql 'select 1'"):
            goal = f"<= {SQL_GOAL_RATIO:g}x: {'met' if med[name] <= SQL_GOAL_RATIO * ref else 'not met'}"
        rows.append([name, round(min(v), 3), round(med[name], 3), round(med[name] / ref, 2),
                     round(med_cpu[name], 3), round(med_cpu[name] / ref_cpu, 2), goal])
    result = {"machine": machine_info(), "repeat": args.repeat, "codes": {n: str(p) for n, p in codes},
              "wall_s": wall, "cpu_s": cpu, "median_wall_s": med, "median_cpu_s": med_cpu,
              "median_wall_over_reference": {n: m / ref for n, m in med.items()},
              "median_cpu_over_reference": {n: m / ref_cpu for n, m in med_cpu.items()}}
    if args.json:
        emit_json(result)
    else:
        print(format_machine(result["machine"]))
        print(table(["command", "best (s)", "median (s)", "median / ref", "CPU median (s)", "CPU / ref", "goal"],
                    rows))
        print(f"ref = {REFERENCE}; CPU = user + system time of the process, less disturbed than wall clock "
              f"by other work on the machine; goals are judged on the wall-clock medians.")
    return result


if __name__ == "__main__":
    main()
