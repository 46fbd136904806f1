"""Ingest overhead: ``lake.ingest`` end to end vs bare pymatgen parsing of the same files.

(a) bare pymatgen: the call a user would make on each file path
    (``Vasprun(path, parse_dos=False, parse_projected_eigen=False,
    parse_potcar_file=False)``, ``Chgcar.from_file``, ``Locpot.from_file``,
    ``Structure.from_file`` plus the ``SpacegroupAnalyzer`` symmetry matlake
    stores for a CIF), pymatgen reading the ``.gz`` itself;
(b) ``lake.ingest(files, workers=1, progress=False)`` into a fresh lake: read,
    hash, decompress, detect, parse, keep raw bytes and grids as objects,
    write Parquet, commit the catalog transaction.  Its vasprun parser makes the
    same pymatgen call on the file without the ``<dos>`` and projection blocks
    those options leave unread (``matlake.ingest.vasp.without_unread_blocks``);
(c) so that the platform's own cost stays in view, (a) again with that cut made
    before each vasprun call: the lake's parse inputs, without the lake.

The sample files are the real ones in samples/dft plus ``--copies``
copies of each with one value changed (the last digit of the first grid value
of a CHGCAR/LOCPOT/AECCAR, a trailing comment in a vasprun or CIF), re-gzipped,
so they are new content of the same kind and size: new raw objects and, for
grids, new grid objects.

Then one instrumented run (functions wrapped with timers, no profiler
overhead) says where the time of (b) goes, and re-ingesting the same files
(a no-op) is timed.

Both are run on the files as found (mostly .gz) and on the same files
uncompressed: pymatgen's volumetric reader is much slower on a .gz path than
on a plain one, so the gz comparison alone would flatter the lake.

Optionally (``--chgcar-mb N``, or ``--memory-only``) the peak memory of bare
``Chgcar.from_file`` and of ``lake.ingest`` on one generated plain CHGCAR of N MB,
each in a fresh process (tracemalloc peak, which numpy reports into, and max RSS).

Run: ``.venv/bin/python bench/bench_ingest.py [--repeat 5] [--copies 4] [--json] [--cprofile]
[--chgcar-mb 200] [--memory-only]``
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import types
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit_json, format_machine, machine_info, table  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "samples" / "dft"
KIND_ORDER = ("vasprun", "CHGCAR", "LOCPOT", "AECCAR", "CIF")


def kind_of(name: str) -> str | None:
    """Benchmark kind of a sample file from its name (None: not part of this benchmark)."""
    if "vasprun" in name:
        return "vasprun"
    for k in ("CHGCAR", "LOCPOT", "AECCAR"):
        if k in name:
            return k
    return "CIF" if name.lower().endswith(".cif") else None


def bare_call(kind: str) -> Callable[[str], Any]:
    """The pymatgen call a user would make on a file of ``kind`` (path in, object out)."""
    from pymatgen.core import Structure
    from pymatgen.io.vasp import Chgcar, Locpot, Vasprun

    calls: dict[str, Callable[[str], Any]] = {
        "vasprun": lambda p: Vasprun(p, parse_dos=False, parse_projected_eigen=False, parse_potcar_file=False),
        "CHGCAR": Chgcar.from_file,
        "LOCPOT": Locpot.from_file,
        "AECCAR": Chgcar.from_file,
        "CIF": _cif_with_symmetry,
    }
    return calls[kind]


def _cif_with_symmetry(path: str) -> Any:
    """Like with like for CIF: pymatgen's parse plus the symmetry analysis matlake stores
    (space group symbol and number, crystal system at symprec 0.1 Angstrom)."""
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = Structure.from_file(path)
    sga = SpacegroupAnalyzer(structure, symprec=0.1)
    return structure, sga.get_space_group_symbol(), sga.get_space_group_number(), sga.get_crystal_system()


def _alter(content: bytes, kind: str, k: int) -> bytes:
    """``content`` with one value changed so copy ``k`` is new content that parses alike."""
    if kind == "CIF":
        return content + f"\n# matlake bench copy {k}\n".encode()
    if kind == "vasprun":
        return content + f"<!-- matlake bench copy {k} -->\n".encode()  # XML allows comments after the root
    # volumetric: change the last mantissa digit of the first grid value, so the grid
    # objects differ too (identical grids would be stored once and flatter the lake)
    lines = content.split(b"\n")
    blank = next(i for i, line in enumerate(lines) if not line.strip())
    first = lines[blank + 2]
    e = first.index(b"E")
    digit = (first[e - 1] - 48 + k) % 10 + 48
    lines[blank + 2] = first[: e - 1] + bytes([digit]) + first[e:]
    return b"\n".join(lines)


def make_samples(src: Path, copies: int, dest: Path) -> dict[str, list[Path]]:
    """Sample sets: ``gz`` = the originals (as found, mostly gzipped) plus ``copies``
    altered copies of each; ``plain`` = the same files decompressed (a user whose
    outputs are not gzipped).  Every file has a distinct sha256."""
    originals = sorted(p for p in src.iterdir() if p.is_file() and kind_of(p.name))
    if not originals:
        raise FileNotFoundError(f"{src}: expected the sample VASP/CIF files, found none")
    out: dict[str, list[Path]] = {"gz": [], "plain": []}
    seen: set[str] = set()

    def keep(variant: str, target: Path, data: bytes | None) -> None:
        if data is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        sha = hashlib.sha256(target.read_bytes()).hexdigest()
        if sha in seen:
            raise RuntimeError(f"sample {target} hashes like another sample")
        seen.add(sha)
        out[variant].append(target)

    for k in range(copies + 1):
        for p in originals:
            raw = p.read_bytes()
            gzipped = raw[:2] == b"\x1f\x8b"
            content = gzip.decompress(raw) if gzipped else raw
            if k:
                content = _alter(content, kind_of(p.name), k)
            # copy 0 of the gz set is the original file itself; same name: detection depends on it
            if k == 0:
                keep("gz", p, None)
            else:
                keep("gz", dest / "gz" / f"copy{k}" / p.name,
                     gzip.compress(content, compresslevel=6, mtime=0) if gzipped else content)
            plain_name = p.name.removesuffix(".gz")
            # a file that was not gzipped (CIF) is in both sets: one more newline keeps their hashes apart
            keep("plain", dest / "plain" / f"copy{k}" / plain_name, content if gzipped else content + b"\n")
    return out


# --------------------------------------------------------------------------- runs


def _vasprun_cut(path: str) -> Any:
    """(c): the bare vasprun call on the bytes the lake's parser gives pymatgen (read, gunzipped,
    the blocks it skips cut, written to a temporary file), the cut and the copy timed with it."""
    from matlake.ingest import vasp

    raw = Path(path).read_bytes()
    data, _last_dos = vasp.without_unread_blocks(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    return vasp.pymatgen_vasprun(data, data, Path(path).name)[0]


def cut_rows(data_dir: Path, repeat: int) -> list[list[Any]]:
    """Per sample vasprun: its size before and after the cut, and pymatgen's call on the
    file (uncompressed, in /dev/shm or the temp folder) against the cut and the same call on
    the cut bytes (best of ``repeat``, the two taking turns)."""
    from pymatgen.io.vasp import Vasprun

    from matlake.ingest import vasp

    rows = []
    for src in sorted(p for p in data_dir.iterdir() if kind_of(p.name) == "vasprun"):
        raw = src.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        with vasp._as_file(data, ".xml") as path, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full, cut = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                Vasprun(path, **vasp.VASPRUN_OPTIONS)
                full.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                kept, _last_dos = vasp.without_unread_blocks(data)
                vasp.pymatgen_vasprun(kept, data, src.name)
                cut.append(time.perf_counter() - t0)
        rows.append([src.name.removesuffix(".gz"), round(len(data) / 1e6, 3), round(len(kept) / 1e6, 3),
                     min(full), min(cut), min(full) / min(cut)])
    return rows


def run_bare(files: list[Path], cut: bool = False) -> dict[str, float]:
    """Seconds per kind of the bare pymatgen calls on ``files`` (each file timed alone);
    ``cut``: vasprun files as the lake's parser gives them to pymatgen (see (c))."""
    per: dict[str, float] = defaultdict(float)
    calls = {k: bare_call(k) for k in KIND_ORDER}
    if cut:
        calls["vasprun"] = _vasprun_cut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about POTCARs etc.; same for both sides
        for f in files:
            kind = kind_of(f.name)
            t0 = time.perf_counter()
            calls[kind](str(f))
            per[kind] += time.perf_counter() - t0
    return dict(per)


@contextlib.contextmanager
def fresh_lake(workdir: Path) -> Iterator[Any]:
    from matlake.platform.lake import Lake

    root = Path(tempfile.mkdtemp(prefix="matlake-bench-", dir=workdir))
    lake = Lake.init(root)
    try:
        yield lake
    finally:
        lake.close()
        shutil.rmtree(root, ignore_errors=True)


def run_ingest(lake: Any, files: list[Path]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    report = lake.ingest([str(f) for f in files], workers=1, progress=False)
    return time.perf_counter() - t0, report


def check_report(report: Any, n: int, what: str) -> None:
    """The benchmark only means something if every file was ingested."""
    if report.new != n or report.failed:
        bad = [f"{o.path}: {o.message}" for o in report.outcomes if o.status == "failed"][:3]
        raise RuntimeError(f"{what}: expected {n} new files, found {report.new} new, "
                           f"{report.failed} failed {bad}")


# --------------------------------------------------------------------------- instrumentation


THREAD = " (thread)"  # suffix of a bucket timed in another thread than the main one (the read-ahead)


class Probe:
    """Wraps functions with wall-clock accumulators; nested calls of one bucket count once.
    Time spent in another thread goes to the bucket's name + :data:`THREAD`."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)
        self._depth: dict[tuple[str, int], int] = defaultdict(int)
        self._undo: list[tuple[Callable[[], None]]] = []
        self.missing: list[str] = []

    def wrap(self, bucket: str, fn: Callable) -> Callable:
        probe = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = bucket if threading.current_thread() is threading.main_thread() else bucket + THREAD
            depth = (name, threading.get_ident())  # two threads in one bucket at once both count
            if probe._depth[depth]:
                return fn(*args, **kwargs)
            probe._depth[depth] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                probe.t[name] += time.perf_counter() - t0
                probe.n[name] += 1
                probe._depth[depth] -= 1

        return timed

    def patch(self, owner: Any, attr: str, bucket: str) -> None:
        """Wrap ``owner.attr``; silently skipped when the code under test no longer has it."""
        orig = (owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None))
        if orig is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        if isinstance(orig, classmethod):
            new: Any = classmethod(self.wrap(bucket, orig.__func__))
        elif isinstance(orig, staticmethod):
            new = staticmethod(self.wrap(bucket, orig.__func__))
        else:
            new = self.wrap(bucket, orig)
        setattr(owner, attr, new)
        self._undo.append((lambda o=owner, a=attr, v=orig: setattr(o, a, v),))

    def replace(self, owner: Any, attr: str, new: Any) -> None:
        orig = getattr(owner, attr, None)
        if orig is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        object.__setattr__(owner, attr, new)  # also works on frozen dataclasses (Parser)
        self._undo.append((lambda o=owner, a=attr, v=orig: object.__setattr__(o, a, v),))

    def restore(self) -> None:
        for (undo,) in reversed(self._undo):
            undo()
        self._undo.clear()


def install_probes(probe: Probe) -> None:
    import pyarrow.parquet as pq
    from pymatgen.io.cif import CifFile, CifParser
    from pymatgen.io.vasp import Chgcar, Locpot, Vasprun
    from pymatgen.core.structure import IStructure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from matlake import ingest as ingest_pkg
    from matlake.ingest import base, structures, vasp
    from matlake.platform import ingestion, lake, objects
    from matlake.schemas.base import TableSchema

    probe.patch(ingestion, "process_source", "process_source")
    probe.patch(ingestion, "decompress", "gzip decompress")
    probe.patch(ingestion, "content_head", "gzip decompress")
    probe.patch(ingestion, "detect", "detect")
    probe.patch(ingestion, "_ledger_index", "ledger keys (catalog read)")
    probe.patch(ingestion, "path_cache", "path cache (catalog read + write)")
    probe.patch(ingestion, "remember_paths", "path cache (catalog read + write)")
    probe.patch(ingestion, "triage", "triage in the parent (stat, 8 KiB head, detect)")
    # since the parent also hashes files of sizes the ledger knows: _decide (the same bucket, counted once)
    probe.patch(ingestion, "_decide", "triage in the parent (stat, 8 KiB head, detect)")
    probe.patch(ingestion, "_process_got", "process_source")  # bytes the parent read, parsed there
    # the next file is read, hashed and kept in a thread while this one is parsed (its buckets: THREAD)
    probe.patch(ingestion, "_read_and_keep", READ_AHEAD)
    probe.patch(ingestion, "_read_and_keep", "process_source")  # a small file, read where it is parsed
    probe.patch(ingestion, "_decide", READ_AHEAD)
    probe.patch(ingestion, "_wait_for_read", "waiting for the read-ahead thread")
    probe.replace(ingestion, "hashlib", types.SimpleNamespace(sha256=probe.wrap("sha256 of raw bytes", hashlib.sha256)))
    probe.patch(objects.ObjectStore, "put", "object store put (raw bytes)")
    probe.patch(objects.Spool, "keep", "object store put (raw bytes)")
    probe.patch(objects.ObjectStore, "sync_dirs", "object folder fsyncs (once per batch)")  # code before the barrier
    # the batch's objects and Parquet files made durable together, inside Lake.commit
    probe.patch(objects, "make_durable", "durability barrier (objects + Parquet, once per commit)")
    probe.patch(os, "fsync", "os.fsync (all)")
    for p in ingest_pkg.all_parsers():
        probe.replace(p, "parse", probe.wrap("parser.parse (matlake parser)", p.parse))

    orig_as_file = vasp._as_file

    @contextlib.contextmanager
    def timed_as_file(data: bytes, suffix: str, ctx=None) -> Iterator[str]:
        t0 = time.perf_counter()
        cm = orig_as_file(data, suffix, ctx)
        path = cm.__enter__()
        probe.t["temp-file copy for pymatgen"] += time.perf_counter() - t0
        probe.n["temp-file copy for pymatgen"] += 1
        try:
            yield path
        finally:
            t1 = time.perf_counter()
            cm.__exit__(None, None, None)
            probe.t["temp-file copy for pymatgen"] += time.perf_counter() - t1

    probe.replace(vasp, "_as_file", timed_as_file)
    for owner, attr in ((Vasprun, "__init__"), (Chgcar, "from_file"), (Locpot, "from_file"),
                        (CifFile, "from_str"), (CifParser, "parse_structures"), (CifParser, "_get_structure")):
        probe.patch(owner, attr, PMG_PARSE)
    # the CIF parser builds one CifParser with from_str: count its construction too
    probe.patch(CifParser, "from_str", PMG_PARSE)
    probe.patch(structures, "structure_row", "structure_row")
    probe.patch(vasp, "structure_row", "structure_row")
    for attr in ("__init__", "get_space_group_symbol", "get_space_group_number", "get_crystal_system"):
        probe.patch(SpacegroupAnalyzer, attr, "SpacegroupAnalyzer (spglib)")
    probe.patch(IStructure, "as_dict", "Structure.as_dict")
    probe.replace(structures, "json", types.SimpleNamespace(dumps=probe.wrap("json.dumps of structure", json.dumps),
                                                            loads=json.loads))
    # grids go to the store from inside parser.parse (ctx.put_array -> the platform's array sink)
    probe.patch(base, "encode_array", GRIDS)
    probe.patch(objects.ObjectStore, "put_written", GRIDS)  # code before .npy grid objects
    probe.patch(objects.ObjectStore, "put_parts", GRIDS)
    # grids are written, and large objects fsynced early, by background threads (their buckets: THREAD)
    probe.patch(objects._Background, "write", WRITTEN_BEHIND)
    probe.patch(objects._Background, "fsync", EARLY_FSYNC)
    probe.patch(ingestion, "settle_background", SETTLE)  # before the commit: waits for those threads
    probe.patch(vasp, "band_edges", "band_edges")
    probe.patch(vasp, "without_unread_blocks", CUT)
    probe.patch(TableSchema, "conform", "schema conform (Arrow)")
    # ChangeSet.add_rows conforms the parser's (already conformed) tables a second time
    probe.patch(lake.ChangeSet, "add_rows", "ChangeSet.add_rows (conforms again)")
    conform_timed = TableSchema.__dict__.get("conform")
    if conform_timed is not None:
        conform_orig = conform_timed.__wrapped__

        def conform_split(self: Any, *args: Any, **kwargs: Any) -> Any:
            if probe._depth[("ChangeSet.add_rows (conforms again)", threading.get_ident())]:
                return conform_orig(self, *args, **kwargs)  # counted in the add_rows bucket
            return conform_timed(self, *args, **kwargs)

        TableSchema.conform = conform_split
    probe.patch(lake.Lake, "commit", "Lake.commit")
    probe.patch(lake.Lake, "_write_tables", "Parquet build + write")
    probe.patch(pq, "write_table", "pq.write_table (zstd)")


PMG_PARSE = "pymatgen parse (same call; a vasprun without the blocks it skips)"
CUT = "cutting the blocks pymatgen skips from a vasprun"
READ_AHEAD = "read ahead, beside the parse: stat, read, sha256, raw object put"
GRIDS = "grid objects: .npy header, sha256, write"  # the write: in a thread since write-behind
WRITTEN_BEHIND = "grid objects written behind"
EARLY_FSYNC = "early fsync of large objects"
SETTLE = "waiting for writes behind and early fsyncs"

BREAKDOWN_ROWS: list[tuple[str, int]] = [
    ("ledger keys (catalog read)", 1),
    ("path cache (catalog read + write)", 1),
    ("triage in the parent (stat, 8 KiB head, detect)", 1),
    ("process_source", 1),
    ("sha256 of raw bytes", 2),
    ("gzip decompress", 2),
    ("detect", 2),
    ("object store put (raw bytes)", 2),
    ("parser.parse (matlake parser)", 2),
    ("temp-file copy for pymatgen", 3),
    (CUT, 3),
    (PMG_PARSE, 3),
    ("structure_row", 3),
    ("SpacegroupAnalyzer (spglib)", 4),
    ("Structure.as_dict", 4),
    ("json.dumps of structure", 4),
    ("band_edges", 3),
    (GRIDS, 3),
    ("(rest of parser.parse: grid statistics, rows, warnings)", 3),
    ("schema conform (Arrow)", 2),
    ("(rest of process_source: file read, outcome)", 2),
    ("waiting for the read-ahead thread", 1),
    (SETTLE, 1),
    ("object folder fsyncs (once per batch)", 1),
    ("Lake.commit", 1),
    ("durability barrier (objects + Parquet, once per commit)", 2),
    ("Parquet build + write", 2),
    ("pq.write_table (zstd)", 3),
    ("ChangeSet.add_rows (conforms again)", 1),
    ("(rest of ingest: batching, ChangeSet, provenance)", 1),
    ("os.fsync (all)", 0),
    (READ_AHEAD + THREAD, 0),
    ("triage in the parent (stat, 8 KiB head, detect)" + THREAD, 1),
    ("sha256 of raw bytes" + THREAD, 1),
    ("object store put (raw bytes)" + THREAD, 1),
    (WRITTEN_BEHIND + THREAD, 0),
    (EARLY_FSYNC + THREAD, 0),
]

# computed rows: parent bucket minus its measured children
_REST = {
    "(rest of parser.parse: grid statistics, rows, warnings)": (
        "parser.parse (matlake parser)",
        ("temp-file copy for pymatgen", CUT, PMG_PARSE, "structure_row", "band_edges",
         GRIDS)),
    "(rest of process_source: file read, outcome)": (
        "process_source",
        ("sha256 of raw bytes", "gzip decompress", "detect", "object store put (raw bytes)",
         "parser.parse (matlake parser)", "schema conform (Arrow)")),
}


def bucket_time(run: dict[str, Any], bucket: str) -> float:
    """Seconds of ``bucket`` in an instrumented ``run`` (computed for the 'rest of' rows)."""
    t = run["t"]
    if bucket in _REST:
        parent, children = _REST[bucket]
        kids = sum(t.get(c, 0.0) for c in children if c != "schema conform (Arrow)")
        if "schema conform (Arrow)" in children:
            kids += t.get("schema conform (Arrow)", 0.0)
        return t.get(parent, 0.0) - kids
    if bucket == "(rest of ingest: batching, ChangeSet, provenance)":
        return run["wall_s"] - sum(t.get(b, 0.0) for b in (
            "ledger keys (catalog read)", "path cache (catalog read + write)",
            "triage in the parent (stat, 8 KiB head, detect)", "process_source", "object folder fsyncs (once per batch)",
            "Lake.commit", "ChangeSet.add_rows (conforms again)", "waiting for the read-ahead thread", SETTLE))
    return t.get(bucket, 0.0)


def instrumented_run(files: list[Path], workdir: Path, noop: bool = False) -> dict[str, Any]:
    """One ingest of ``files`` into a fresh lake with probes (then, with ``noop``, a
    re-ingest of the same files): bucket seconds and call counts."""
    probe = Probe()
    install_probes(probe)
    out: dict[str, Any] = {}
    try:
        with fresh_lake(workdir) as lk:
            wall, report = run_ingest(lk, files)
            check_report(report, len(files), "instrumented ingest")
            out["ingest"] = {"wall_s": wall, "t": dict(probe.t), "n": dict(probe.n)}
            if noop:
                probe.t.clear()
                probe.n.clear()
                wall2, report2 = run_ingest(lk, files)
                out["noop"] = {"wall_s": wall2, "t": dict(probe.t), "n": dict(probe.n),
                               "unchanged": report2.unchanged}
    finally:
        probe.restore()
    out["missing_probes"] = probe.missing
    return out


def cprofile_run(files: list[Path], workdir: Path, top: int = 25) -> str:
    import cProfile
    import io
    import pstats

    with fresh_lake(workdir) as lk:
        prof = cProfile.Profile()
        prof.enable()
        run_ingest(lk, files)
        prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# --------------------------------------------------------------------------- peak memory on a large CHGCAR


def write_large_chgcar(path: Path, megabytes: float, data: Path = DATA) -> tuple[int, int, int]:
    """A CHGCAR of about ``megabytes`` MB: the Si sample's cell, a cubic grid, total and diff blocks.

    Values are random, written as VASP writes them (5 per line, %.11E); returns the grid shape.
    """
    import numpy as np

    text = gzip.decompress((data / "Si_static_CHGCAR.gz").read_bytes()).decode()
    lines = text.split("\n")
    header = lines[: next(i for i, line in enumerate(lines) if not line.strip())]  # the POSCAR block
    n = max(8, round((megabytes * 1e6 / 2 / 18) ** (1 / 3)))  # two blocks, 18 characters per value
    rng = np.random.default_rng(8)
    with open(path, "w") as fh:
        fh.write("\n".join(header) + "\n \n")
        for block in range(2):
            fh.write(f"   {n}   {n}   {n}\n")
            values = rng.random(n ** 3) * (100.0 if block == 0 else 1.0)
            full = values[: (len(values) // 5) * 5].reshape(-1, 5)
            np.savetxt(fh, full, fmt="%18.11E", delimiter="")
            if len(values) % 5:
                np.savetxt(fh, values[len(full) * 5:].reshape(1, -1), fmt="%18.11E", delimiter="")
    return (n, n, n)


# One measured run, in a fresh process: argv = mode (bare | ingest), CHGCAR path, lake path, warm-up CHGCAR.
MEMORY_RUN = """
import json, sys, time, tracemalloc
from pymatgen.io.vasp import Chgcar
import matlake

def peak_rss_mb():
    # VmHWM: this process image's peak (ru_maxrss would carry the parent's across exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
mode, path, lake_path, warm = sys.argv[1:5]
# warm-up on the small Si CHGCAR: imports and first-call caches are not part of the measurement
if mode == "bare":
    Chgcar.from_file(warm)
else:
    lake = matlake.init(lake_path)
    assert lake.ingest([warm], progress=False).new == 1
base_rss = peak_rss_mb()
tracemalloc.start()
t = time.perf_counter()
if mode == "bare":
    Chgcar.from_file(path)
else:
    r = lake.ingest([path], progress=False)
    assert r.new == 1, r.summary()
dt = time.perf_counter() - t
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"s": dt, "traced_peak_mb": peak / 1e6, "rss_mb": peak_rss_mb(), "rss_base_mb": base_rss}))
"""


def memory_run(megabytes: float, repeat: int, workdir: Path) -> dict[str, Any]:
    """Peak memory of bare ``Chgcar.from_file`` and of ``lake.ingest`` on one large plain CHGCAR."""
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="matlake-bench-chgcar-", dir=workdir))
    try:
        src = work / "big_CHGCAR"
        grid = write_large_chgcar(src, megabytes)
        warm = work / "Si_small_CHGCAR"
        warm.write_bytes(gzip.decompress((DATA / "Si_static_CHGCAR.gz").read_bytes()))
        runs: dict[str, list[dict[str, float]]] = {"bare": [], "ingest": []}
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        for i in range(repeat):
            for mode in runs:
                lake = work / f"lake{i}"
                done = subprocess.run([sys.executable, "-c", MEMORY_RUN, mode, str(src), str(lake), str(warm)], env=env,
                                      capture_output=True, text=True, cwd=work, timeout=1800)
                if done.returncode != 0:
                    raise RuntimeError(f"memory run {mode} failed: {done.stderr[-2000:]}")
                runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
                shutil.rmtree(lake, ignore_errors=True)
        return {"file_mb": src.stat().st_size / 1e6, "grid": grid, "runs": runs}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_memory(m: dict[str, Any]) -> None:
    def med(mode: str, key: str) -> float:
        vals = sorted(r[key] for r in m["runs"][mode])
        return vals[len(vals) // 2]

    rows = []
    for mode, title in (("bare", "bare Chgcar.from_file"), ("ingest", "lake.ingest (fresh lake)")):
        rows.append([title, round(med(mode, "s"), 2), round(med(mode, "traced_peak_mb"), 1),
                     round(med(mode, "rss_mb"), 1), round(med(mode, "rss_mb") - med(mode, "rss_base_mb"), 1)])
    ratio = [round(rows[1][k] / rows[0][k], 2) if rows[0][k] else float("nan") for k in (2, 3, 4)]
    rows.append(["ratio ingest / bare", round(rows[1][1] / rows[0][1], 2), *ratio])
    rows[-1][3] = round(med("ingest", "rss_mb") / med("bare", "rss_mb"), 2)
    print(f"\n### Peak memory on a large plain CHGCAR ({m['file_mb']:.0f} MB, grid {m['grid']} x 2 blocks; "
          f"median of {len(m['runs']['bare'])} runs, each in a fresh process)\n")
    print(table(["run", "wall (s)", "tracemalloc peak (MB)", "max RSS (MB)", "max RSS above imports (MB)"], rows))


# --------------------------------------------------------------------------- main


def measure(files: list[Path], repeat: int, workdir: Path) -> dict[str, Any]:
    """Timed repetitions of bare pymatgen, ingest per kind, ingest of all files and re-ingest."""
    by_kind = {k: [f for f in files if kind_of(f.name) == k] for k in KIND_ORDER}
    bare = {k: Timing(f"bare {k}") for k in KIND_ORDER}
    ing = {k: Timing(f"ingest {k}") for k in KIND_ORDER}
    bare_total, ing_total = Timing("bare total"), Timing("ingest total")
    cut_total = Timing("bare total, vasprun cut as the lake does")
    noop, commit_part = Timing("re-ingest (no-op)"), Timing("outside the files' own times")
    for _ in range(repeat):
        per = run_bare(files)
        for k in KIND_ORDER:
            bare[k].samples.append(per[k])
        bare_total.samples.append(sum(per.values()))
        cut_total.samples.append(sum(run_bare(files, cut=True).values()))
        for k in KIND_ORDER:
            with fresh_lake(workdir) as lk:
                t, rep = run_ingest(lk, by_kind[k])
                check_report(rep, len(by_kind[k]), f"ingest {k}")
                ing[k].samples.append(t)
        with fresh_lake(workdir) as lk:
            t, rep = run_ingest(lk, files)
            check_report(rep, len(files), "ingest total")
            ing_total.samples.append(t)
            per_file = sum((o.ended_at - o.started_at).total_seconds() for o in rep.outcomes)
            commit_part.samples.append(t - per_file)
            t2, rep2 = run_ingest(lk, files)
            if rep2.unchanged != len(files):
                raise RuntimeError(f"re-ingest: expected {len(files)} unchanged, found {rep2.summary()}")
            noop.samples.append(t2)
    return {"by_kind": by_kind, "bare": bare, "ingest": ing, "bare_total": bare_total,
            "ingest_total": ing_total, "cut_total": cut_total, "noop": noop, "commit": commit_part,
            "bytes": {k: sum(f.stat().st_size for f in fs) for k, fs in by_kind.items()}}


def result_rows(m: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for k in KIND_ORDER:
        b, i = m["bare"][k], m["ingest"][k]
        rows.append([k, len(m["by_kind"][k]), round(m["bytes"][k] / 1e6, 2), b.best, i.best, i.best / b.best,
                     b.median, i.median, i.median / b.median])
    b, i = m["bare_total"], m["ingest_total"]
    rows.append(["all (one ingest call)", sum(len(v) for v in m["by_kind"].values()),
                 round(sum(m["bytes"].values()) / 1e6, 2), b.best, i.best, i.best / b.best,
                 b.median, i.median, i.median / b.median])
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    ap.add_argument("--copies", type=int, default=4, help="altered copies of each sample file (default 4)")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of sample files")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where fresh lakes are made")
    ap.add_argument("--json", action="store_true", help="print a JSON record instead of tables")
    ap.add_argument("--cprofile", action="store_true", help="also print a cProfile of one ingest (gz set)")
    ap.add_argument("--chgcar-mb", type=float, default=0.0,
                    help="also measure peak memory on a generated plain CHGCAR of this many MB (default: skip)")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory measurement")
    args = ap.parse_args(argv)
    if args.memory_only:
        mem = memory_run(args.chgcar_mb or 64.0, args.repeat, args.workdir)
        if args.json:
            emit_json({"benchmark": "ingest-memory", "machine": machine_info(), "memory": mem})
        else:
            print(format_machine(machine_info()))
            print_memory(mem)
        return {"memory": mem}

    info = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="matlake-bench-samples-", dir=args.workdir))
    try:
        sets = make_samples(args.data, args.copies, scratch)
        n_orig = len(sets["gz"]) // (args.copies + 1)
        # warm-up (imports, spglib, lru caches, git rev-parse), not timed
        for variant in ("gz", "plain"):
            run_bare(sets[variant][:n_orig])
            with fresh_lake(args.workdir) as lk:
                check_report(run_ingest(lk, sets[variant][:n_orig])[1], n_orig, "warm-up ingest")
        results = {v: measure(sets[v], args.repeat, args.workdir) for v in ("gz", "plain")}
        # single instrumented runs are at the mercy of other load: keep the fastest of three
        instr = {v: min((instrumented_run(sets[v], args.workdir, noop=True) for _ in range(3)),
                        key=lambda r: r["ingest"]["wall_s"]) for v in ("gz", "plain")}
        instr_kind = {k: min((instrumented_run(results["plain"]["by_kind"][k], args.workdir)["ingest"]
                              for _ in range(3)), key=lambda r: r["wall_s"]) for k in KIND_ORDER}
        prof_text = cprofile_run(sets["gz"], args.workdir) if args.cprofile else ""
        cuts = cut_rows(args.data, max(args.repeat, 5))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    payload: dict[str, Any] = {
        "benchmark": "ingest", "machine": info, "repeat": args.repeat, "copies": args.copies,
        "statistic": "best of repeat (headline) and median of repeat",
        "results": {v: {
            "files": len(sets[v]),
            "per_kind": {k: {"files": len(r["by_kind"][k]), "bytes": r["bytes"][k], "bare": r["bare"][k].as_dict(),
                             "ingest": r["ingest"][k].as_dict()} for k in KIND_ORDER},
            "total": {"bare": r["bare_total"].as_dict(), "ingest": r["ingest_total"].as_dict(),
                      "ratio_best": r["ingest_total"].best / r["bare_total"].best,
                      "ratio_median": r["ingest_total"].median / r["bare_total"].median,
                      "commit_and_orchestration": r["commit"].as_dict(),
                      "bare_vasprun_cut": r["cut_total"].as_dict(),
                      "ratio_to_cut_best": r["ingest_total"].best / r["cut_total"].best,
                      "ratio_to_cut_median": r["ingest_total"].median / r["cut_total"].median},
            "noop_reingest": r["noop"].as_dict(),
        } for v, r in results.items()},
        "breakdown": instr, "breakdown_plain_per_kind": instr_kind,
        "vasprun_cut": [dict(zip(("file", "mb", "cut_mb", "full_s", "cut_s", "speedup"), r)) for r in cuts],
    }
    mem = memory_run(args.chgcar_mb, args.repeat, args.workdir) if args.chgcar_mb else None
    if mem:
        payload["memory"] = mem
    if args.json:
        emit_json(payload)
        return payload

    print(format_machine(info))
    headers = ["kind", "files", "MB", "bare best (s)", "ingest best (s)", "ratio best", "bare median (s)",
               "ingest median (s)", "ratio median"]
    for v, title in (("gz", "files as found (gzipped VASP outputs): pymatgen reads the .gz itself"),
                     ("plain", "the same files uncompressed")):
        r = results[v]
        print(f"\n### {title}\n{len(sets[v])} files ({n_orig} originals + {args.copies} altered copies each), "
              f"{args.repeat} repetitions; ratio = lake.ingest / bare pymatgen\n")
        print(table(headers, result_rows(r)))
        print(f"\nre-ingest of the same {len(sets[v])} files (no-op): best {r['noop'].best:.3f} s, "
              f"median {r['noop'].median:.3f} s; outside the files' own times inside 'all' (commit, "
              f"orchestration, reads before a parse starts): "
              f"best {r['commit'].best:.3f} s, median {r['commit'].median:.3f} s")
        c = r["cut_total"]
        print(f"\n(c) the platform's own cost: bare pymatgen on the lake's parse inputs (each vasprun read, "
              f"gunzipped, cut and written to a temporary file before the same call): {c.best:.3f} s best, "
              f"{c.median:.3f} s median; 'all' ingest / (c): best {r['ingest_total'].best / c.best:.3f}, "
              f"median {r['ingest_total'].median / c.median:.3f}")

    print("\n### The vasprun cut\nEach sample vasprun (uncompressed): pymatgen's call on the file, and the cut "
          "(`without_unread_blocks`, timed) then the same call on what is left; best of "
          f"{max(args.repeat, 5)}, taking turns\n")
    print(table(["file", "MB", "MB after the cut", "pymatgen on the file (s)", "cut + pymatgen (s)", "speed-up"], cuts))

    print("\n### Where the time goes\nInstrumented runs (each function wrapped with a timer; fastest of 3): "
          "all gz files, all plain files, then each plain kind alone into its own lake. Indented rows are part of the row "
          "above; os.fsync overlaps the object store and Parquet writes; the catalog's SQLite fsyncs are "
          "inside Lake.commit. Rows marked (thread) ran in the read-ahead thread, beside the rows above them: "
          "they add to the wall time only as 'waiting for the read-ahead thread'.\n")
    brows = []
    for bucket, level in BREAKDOWN_ROWS:
        row: list[Any] = ["  " * level + bucket]
        for v in ("gz", "plain"):
            t = bucket_time(instr[v]["ingest"], bucket)
            row += [instr[v]["ingest"]["n"].get(bucket, ""), t, 100 * t / instr[v]["ingest"]["wall_s"]]
        brows.append(row + [bucket_time(instr_kind[k], bucket) for k in KIND_ORDER])
    brows.append(["(ingest wall)", 1, instr["gz"]["ingest"]["wall_s"], 100.0, 1, instr["plain"]["ingest"]["wall_s"],
                  100.0] + [instr_kind[k]["wall_s"] for k in KIND_ORDER])
    print(table(["bucket", "gz calls", "gz s", "gz %", "plain calls", "plain s", "plain %"]
                + [f"plain {k} (s)" for k in KIND_ORDER], brows))
    missing = sorted(set(instr["gz"]["missing_probes"]))
    if missing:
        print(f"(probes not installed, the code changed: {missing})")
    print("\nNo-op re-ingest, instrumented:\n")
    nrows = []
    for b in ("ledger keys (catalog read)", "path cache (catalog read + write)",
              "triage in the parent (stat, 8 KiB head, detect)", "process_source", "sha256 of raw bytes",
              "gzip decompress", "detect"):
        row = [b]
        for v in ("gz", "plain"):
            nt = instr[v]["noop"]
            row += [nt["t"].get(b, 0.0), 100 * nt["t"].get(b, 0.0) / nt["wall_s"]]
        nrows.append(row)
    nrows.append(["(re-ingest wall)", instr["gz"]["noop"]["wall_s"], 100.0, instr["plain"]["noop"]["wall_s"], 100.0])
    print(table(["bucket", "gz s", "gz %", "plain s", "plain %"], nrows))
    if mem:
        print_memory(mem)
    if prof_text:
        print("\ncProfile of one ingest of the gz set (top by cumulative time):\n")
        print(prof_text)
    return payload


if __name__ == "__main__":
    main()
