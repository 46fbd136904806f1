"""One FEFF10 run: write ``feff.inp`` into a work folder, run the pipeline, parse ``xmu.dat``.

Pure apart from its own work folder (no lake access).  FEFF comes from the
optional ``feff10-rs`` wheel (extra ``feff``), imported here only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_TAIL_LINES = 40
# Files kept as objects after a run: the input, the spectrum and FEFF's logs.
OUTPUT_FILES = ("xmu.dat",)


class FeffNotInstalled(RuntimeError):
    """The ``feff10`` package is missing (install the ``feff`` extra)."""


def require_feff():
    """The ``feff10`` module, or :class:`FeffNotInstalled` naming the extra."""
    try:
        import feff10
    except ImportError as exc:
        raise FeffNotInstalled("FEFF10 is not installed: pip install 'matlake[feff]' (the feff10-rs wheel; "
                               "FEFF itself is under its own licence)") from exc
    return feff10


def feff_version() -> str:
    """'FEFF 10.0 via feff10-rs <version>' (the wrapper's version from its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"feff10-rs {version('feff10-rs')}"
    except PackageNotFoundError:
        return "feff10-rs (not installed)"


@dataclass
class FeffRun:
    """The outcome of one run.  ``ok`` False: ``error`` is one line, ``log_tail`` FEFF's last log lines."""

    ok: bool
    input_text: str
    energy: list[float] = field(default_factory=list)  # eV (xmu.dat column omega)
    mu: list[float] = field(default_factory=list)  # xmu.dat column mu (normalised at E0 + 50 eV)
    mu0: list[float] = field(default_factory=list)  # embedded-atom background, same normalisation
    k: list[float] = field(default_factory=list)  # photoelectron wave number, 1/Angstrom
    outputs: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes (xmu.dat, log)
    log_tail: str = ""
    error: str = ""
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _log(work: Path) -> str:
    # FEFF writes one log per stage group (log.dat, log1.dat, ...); keep them in order.
    parts = []
    for p in [*sorted(work.glob("log*.dat")), work / "stdout.txt"]:
        if not p.is_file():
            continue
        try:
            parts.append(f"== {p.name}\n" + p.read_text(errors="replace"))
        except OSError:
            continue
    return "\n".join(parts)


@contextlib.contextmanager
def _stdout_to(path: Path):
    """Send file descriptors 1 and 2 to ``path`` while FEFF runs: its stage workers print their
    progress there (kept in the log object) instead of flooding the caller's terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _tail(text: str, n: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def parse_xmu(text: str) -> dict[str, list[float]]:
    """Columns of an ``xmu.dat`` (omega, e, k, mu, mu0, chi); ValueError when it holds no rows."""
    rows = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        rows.append([float(v) for v in s.split()])
    if not rows or any(len(r) < 6 for r in rows):
        raise ValueError(f"xmu.dat: expected rows of 6 numbers (omega e k mu mu0 chi), found {len(rows)} rows")
    cols = list(zip(*rows))
    return {"omega": list(cols[0]), "e": list(cols[1]), "k": list(cols[2]), "mu": list(cols[3]),
            "mu0": list(cols[4]), "chi": list(cols[5])}


def run_feff(input_text: str, work_dir: str | Path | None = None, stage_timeout: float | None = None,
             keep: bool = False) -> FeffRun:
    """Run FEFF10 on ``input_text`` in ``work_dir`` (a fresh temporary folder by default, removed
    afterwards unless ``keep``).  FEFF failing, timing out (``stage_timeout`` seconds per stage) or
    writing no usable ``xmu.dat`` gives ``ok=False`` with the error and the log tail; never raises
    for those."""
    feff10 = require_feff()
    own = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="feff-")) if own else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    inp_path = work / "feff.inp"
    inp_path.write_text(input_text)
    t0 = time.perf_counter()
    run = FeffRun(ok=False, input_text=input_text)
    try:
        try:
            inp = feff10.FeffInput.parse(input_text)
            config = feff10.FeffConfig(str(work), inp, stage_timeout=stage_timeout)
            with _stdout_to(work / "stdout.txt"):
                result = feff10.FeffPipeline(config).run()
            run.stage_seconds = {sr.stage.executable_name: float(sr.duration_secs) for sr in result.stages}
        except feff10.FeffError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            run.error = f"FEFF failed: {type(exc).__name__}: {first}"
        log = _log(work)
        run.log_tail = _tail(log)
        if log:
            run.outputs["log.txt"] = log.encode()
        xmu = work / "xmu.dat"
        if not run.error:
            if not xmu.is_file():
                run.error = "FEFF wrote no xmu.dat"
            else:
                text = xmu.read_text(errors="replace")
                try:
                    cols = parse_xmu(text)
                except ValueError as exc:
                    run.error = f"FEFF output unusable: {exc}"
                else:
                    run.energy, run.mu, run.mu0, run.k = cols["omega"], cols["mu"], cols["mu0"], cols["k"]
                    run.outputs["xmu.dat"] = text.encode()
                    run.ok = True
    finally:
        run.seconds = time.perf_counter() - t0
        if own and not keep:
            shutil.rmtree(work, ignore_errors=True)
    return run
