"""Helpers shared by the benchmark scripts: machine description, timing, tables.

Benchmarks measure; they do not assert.  Each script prints a table and, with
``--json``, a machine-readable record that includes :func:`machine_info`.
"""

from __future__ import annotations

import gc
import json
import os
import platform as _stdlib_platform  # the standard-library module, not matlake.platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _stdlib_platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    except OSError:
        pass
    return None


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def code_version() -> str:
    """Git commit of the code under test, '+dirty' when the working tree has changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM (GiB), load average and library versions of this run."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "loadavg_at_start": load,
        "os": f"{_stdlib_platform.system()} {_stdlib_platform.release()}",
        "python": _stdlib_platform.python_version(),
        "matlake": _pkg("matlake"),
        "code": code_version(),
        "pymatgen": _pkg("pymatgen"),
        "duckdb": _pkg("duckdb"),
        "pandas": _pkg("pandas"),
        "pyarrow": _pkg("pyarrow"),
        "numpy": _pkg("numpy"),
        "sqlalchemy": _pkg("sqlalchemy"),
    }


def format_machine(info: dict[str, Any]) -> str:
    return (f"{info['date']}  {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
            f"load {info['loadavg_at_start']}, code {info['code']}\n"
            f"Python {info['python']}, pymatgen {info['pymatgen']}, duckdb {info['duckdb']}, "
            f"pandas {info['pandas']}, pyarrow {info['pyarrow']}, numpy {info['numpy']}")


@dataclass
class Timing:
    """Wall-clock samples (seconds) of one measured operation."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "best_s": self.best, "median_s": self.median, "samples_s": self.samples}


def time_call(fn: Callable[[], Any], repeat: int, name: str = "", setup: Callable[[], Any] | None = None) -> tuple[Timing, Any]:
    """Run ``fn`` ``repeat`` times (``setup`` before each, untimed); returns timings and the last result.

    The garbage collector runs before each sample and is left enabled during
    it, so collection cost that belongs to the operation is counted.
    """
    t = Timing(name)
    result = None
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        t.samples.append(time.perf_counter() - t0)
    return t, result


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (also readable in a terminal)."""
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"
        return str(x)

    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def emit_json(payload: dict[str, Any]) -> None:
    json.dump(payload, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
