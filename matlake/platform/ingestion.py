"""Running parsers over files: hashing, dedup, object storage, ledger, commits.

Parsers (``matlake.ingest``) are pure; this module does everything around
them.  Each source file becomes one ``ingest`` activity that *used* the raw
object and generated the file's rows, plus one ledger row (``ok`` or
``failed``).  Files are parsed in worker processes (``workers``) or on a Dask
cluster (``dask``), and committed in batches: one Parquet file per table per
batch, one catalog transaction per batch.

Re-ingesting bytes already seen by the same parser version is a no-op; a
newer parser version re-parses and adds version n+1 of the same records.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import select

from matlake.ingest import ParseContext, ParseError, detect
from matlake.platform import catalog as cat
from matlake.platform.objects import ObjectStore

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

HEAD_BYTES = 8192
UNKNOWN_PARSER = "unknown"
MAX_SOURCE_BYTES = 2 * 1024**3  # a single source file larger than this is refused, not read


@dataclass
class SourceItem:
    """One thing to ingest: a file path, or bytes already in the object store (retry)."""

    path: str
    kind: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    object_sha: str | None = None  # read from the store instead of the path


@dataclass
class SourceOutcome:
    path: str
    sha256: str
    size: int
    parser: str
    parser_version: str
    status: str  # ok | failed | unchanged
    message: str = ""
    tables: dict[str, pa.Table] = field(default_factory=dict)
    objects: list[tuple[str, int]] = field(default_factory=list)  # (sha, size) written by the parser
    record_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class IngestReport:
    new: int = 0
    unchanged: int = 0
    failed: int = 0
    records: int = 0
    snapshots: list[int] = field(default_factory=list)
    outcomes: list[SourceOutcome] = field(default_factory=list)

    def summary(self) -> str:
        snaps = f", snapshots {self.snapshots[0]}..{self.snapshots[-1]}" if self.snapshots else ""
        return (f"{self.new} new, {self.unchanged} unchanged, {self.failed} failed files; "
                f"{self.records} records{snaps}")


# --------------------------------------------------------------------------- pure per-file work


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named, and files below folders named (recursive, sorted, hidden skipped)."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                rel = sub.relative_to(path).parts
                if sub.is_file() and not any(part.startswith(".") for part in rel):
                    out.append(sub)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return out


COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".lzma", ".z")  # names path-based readers would decompress


def _gzip_error(exc: Exception) -> ParseError:
    return ParseError("gzip stream", "a complete gzip file", f"a corrupt or truncated one ({exc})")


def decompress(raw: bytes, name: str) -> bytes:
    """Transparent gzip: the raw object is kept compressed, parsers see content."""
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _gzip_error(exc) from exc
    return raw


def content_head(raw: bytes, n: int = 8192) -> bytes:
    """The first ``n`` bytes of the content, decompressing only what that needs."""
    if raw[:2] != b"\x1f\x8b":
        return raw[:n]
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            return fh.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(exc) from exc


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def process_source(item: SourceItem, objects_root: str, known: frozenset[tuple[str, str, str]]) -> SourceOutcome:
    """Read, hash, detect, parse one source; keep its raw bytes and arrays as objects.

    Runs in worker processes: it touches only the object store (content
    addressed, idempotent) and never the catalog or Parquet tables.
    """
    started = cat.utcnow()
    store = ObjectStore(Path(objects_root))
    name = Path(item.path).name
    stamp: tuple[int, int] | None = None
    try:
        if item.object_sha:
            raw = store.get(item.object_sha)
        else:
            st = os.stat(item.path)
            stamp = (st.st_size, st.st_mtime_ns)
            size = st.st_size
            if size > MAX_SOURCE_BYTES:
                return SourceOutcome(item.path, "", size, UNKNOWN_PARSER, "0", "failed",
                                     f"{item.path}: field size: expected at most {MAX_SOURCE_BYTES} bytes, found {size}",
                                     started_at=started, ended_at=cat.utcnow())
            with open(item.path, "rb") as fh:
                raw = fh.read()
    except OSError as exc:
        return SourceOutcome(item.path, "", 0, UNKNOWN_PARSER, "0", "failed",
                             f"{item.path}: cannot read: {exc.strerror or exc}", started_at=started, ended_at=cat.utcnow())
    sha = hashlib.sha256(raw).hexdigest()
    out = SourceOutcome(item.path, sha, len(raw), UNKNOWN_PARSER, "0", "failed", started_at=started)
    try:
        head = content_head(raw, HEAD_BYTES)
    except ParseError as exc:
        store.put(raw, sha)
        out.message = str(exc.with_file(item.path))
        out.ended_at = cat.utcnow()
        return out
    try:
        parser = detect(head, name, item.kind)
    except ValueError as exc:  # unknown --kind
        out.message = f"{item.path}: {exc}"
        out.ended_at = cat.utcnow()
        return out
    if parser is None:
        out.parser_version = "0"
        if (sha, UNKNOWN_PARSER, "0") in known:
            out.status = "unchanged"
            return out
        store.put(raw, sha)
        what = "any known format" if item.kind == "auto" else f"a {item.kind} file"
        out.message = (f"{item.path}: field content: expected {what}, found unrecognised content "
                       f"starting {head[:40]!r}")
        out.ended_at = cat.utcnow()
        return out
    out.parser, out.parser_version = parser.name, parser.version
    if (sha, parser.name, parser.version) in known:
        out.status = "unchanged"
        return out
    store.put(raw, sha)  # the raw bytes are kept whatever happens next
    try:
        content = decompress(raw, name)
    except ParseError as exc:
        out.message = f"{exc.with_file(item.path)} (parser {parser.name} {parser.version})"
        out.ended_at = cat.utcnow()
        return out
    plain_file = (content is raw and stamp is not None and not name.lower().endswith(COMPRESSED_SUFFIXES))
    ctx = ParseContext(source_sha256=sha, filename=name, parser=parser.name, options=item.options,
                       content_path=item.path if plain_file else None)
    try:
        result = parser.parse(content, ctx)
        if ctx.content_path and _stamp(item.path) != stamp:
            # The file changed under us: parse the bytes we hashed, not the file.
            ctx = ParseContext(source_sha256=sha, filename=name, parser=parser.name, options=item.options)
            result = parser.parse(content, ctx)
    except ParseError as exc:
        out.message = f"{exc.with_file(item.path)} (parser {parser.name} {parser.version})"
        out.ended_at = cat.utcnow()
        return out
    except Exception as exc:  # noqa: BLE001 - a parser bug must not sink the batch
        out.message = (f"{item.path}: parser {parser.name} {parser.version} failed unexpectedly: "
                       f"{type(exc).__name__}: {exc}")
        out.ended_at = cat.utcnow()
        return out
    tables: dict[str, pa.Table] = {}
    rids: list[str] = []
    from matlake import schemas

    try:
        for tname, rows in result.tables.items():
            table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
            table = schemas.get(tname).conform(table, source=item.path)
            tables[tname] = table
            rids.extend(table.column("record_id").to_pylist())
    except (KeyError, ValueError, pa.ArrowException) as exc:
        out.message = f"{item.path}: parser {parser.name} {parser.version} produced invalid rows: {exc}"
        out.ended_at = cat.utcnow()
        return out
    for osha, data in ctx.objects.items():
        store.put(data, osha)
        out.objects.append((osha, len(data)))
    out.status = "ok"
    out.tables = tables
    out.record_ids = rids
    out.warnings = list(result.warnings)
    out.ended_at = cat.utcnow()
    return out


# --------------------------------------------------------------------------- executors


def _map_local(items: list[SourceItem], objects_root: str, known: frozenset, workers: int) -> Iterator[SourceOutcome]:
    if workers <= 1 or len(items) <= 1:
        for it in items:
            yield process_source(it, objects_root, known)
        return
    import multiprocessing as mp

    # spawn: a forked child would inherit the parent's catalog connections and DuckDB threads.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(process_source, it, objects_root, known) for it in items]
        for f in futures:
            yield f.result()
    finally:
        # A consumer that stops early (``stop``, an error) must not wait for the whole queue.
        pool.shutdown(wait=True, cancel_futures=True)


def _map_dask(items: list[SourceItem], objects_root: str, known: frozenset, address: str) -> Iterator[SourceOutcome]:
    from distributed import Client, as_completed

    with Client(address) as client:
        # Scatter the ledger keys as one object: scatter() splits a bare set into
        # one future per element (and fails outright on an empty set).
        [known_f] = client.scatter([known], broadcast=True, hash=False)
        futures = client.map(process_source, items, objects_root=objects_root, known=known_f, pure=False)
        try:
            for f in as_completed(futures):
                yield f.result()
        finally:
            client.cancel(futures)  # no-op for finished ones; frees the cluster on an early stop


# --------------------------------------------------------------------------- orchestration


def _ledger_keys(lake: "Lake") -> frozenset[tuple[str, str, str]]:
    with lake.engine.connect() as conn:
        rows = conn.execute(select(cat.LedgerEntry.sha256, cat.LedgerEntry.parser, cat.LedgerEntry.parser_version))
        return frozenset((a, b, c) for a, b, c in rows)


def _commit_batch(lake: "Lake", batch: list[SourceOutcome], known: frozenset, message: str,
                  how: dict[str, tuple[str, dict[str, Any]]] | None = None) -> int | None:
    """One commit for a batch of parsed sources.  ``how`` maps a source path to the
    (kind, options) it was ingested with, kept in the activity so a retry can reuse them."""
    from matlake.platform.lake import ChangeSet

    seen_parsers = {(s, p) for (s, p, _v) in known}
    cs = ChangeSet("ingest", message)
    for o in batch:
        kind, options = (how or {}).get(o.path, ("auto", {}))
        act = cs.activity("ingest", o.parser, o.parser_version,
                          parameters={"source_path": o.path, "kind": kind, "options": options,
                                      "warnings": o.warnings[:20]},
                          started_at=o.started_at, status="ok" if o.status == "ok" else "failed", error=o.message)
        act.ended_at = o.ended_at
        if o.sha256:
            act.used("object", o.sha256)
            cs.add_object(o.sha256, o.size, original_name=Path(o.path).name)
        for osha, size in o.objects:
            cs.add_object(osha, size, media_type="application/x-npz")
            act.generated("object", osha)
        version = 1 if (o.sha256, o.parser) not in seen_parsers else None
        for tname, table in o.tables.items():
            cs.add_rows(tname, table, act, version=version, source=o.path)
        if o.sha256:
            cs.add_ledger(source_path=o.path, sha256=o.sha256, size=o.size, parser=o.parser,
                          parser_version=o.parser_version, status=o.status, message=o.message,
                          record_ids=o.record_ids, activity=act)
    return lake.commit(cs)


def ingest(
    lake: "Lake",
    paths: Sequence[str | os.PathLike] | None = None,
    *,
    kind: str = "auto",
    options: dict[str, Any] | None = None,
    workers: int = 1,
    batch_size: int = 64,
    progress: bool | None = None,
    dask: str | None = None,
    items: Sequence[SourceItem] | None = None,
    on_outcome: Callable[[SourceOutcome], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> IngestReport:
    """Ingest files/folders (or prepared ``items``) into the lake; returns counts and outcomes.

    ``stop`` is polled before each parsed file is taken: once it returns True no
    further file is taken, the files taken so far are committed, and the rest
    are left for a later run.
    """
    if items is None:
        files = expand_paths(paths or [])
        items = [SourceItem(str(p.resolve()), kind, dict(options or {})) for p in files]
    items = list(items)
    how = {it.path: (it.kind, dict(it.options)) for it in items}
    report = IngestReport()
    known = _ledger_keys(lake)
    show = sys.stderr.isatty() if progress is None else progress
    stream: Iterable[SourceOutcome]
    if dask:
        stream = _map_dask(items, str(lake.objects.root), known, dask)
    else:
        stream = _map_local(items, str(lake.objects.root), known, workers)
    if show:
        from tqdm import tqdm

        stream = tqdm(stream, total=len(items), desc="ingest", unit="file", file=sys.stderr)
    pending: list[SourceOutcome] = []
    batch_keys: set[tuple[str, str, str]] = set()

    def flush() -> None:
        nonlocal known
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        batch_keys.clear()
        # Until committed: a bounded retry count here used to drop, uncommitted but reported
        # as new, the sources of a batch that lost the race three times (8-process stress test).
        while batch:
            try:
                sid = _commit_batch(lake, batch, known, f"ingest {len(batch)} files", how)
                if sid is not None:
                    report.snapshots.append(sid)
                known = known | {(o.sha256, o.parser, o.parser_version) for o in batch}
                break
            except Exception as exc:
                from matlake.platform.lake import DuplicateSource

                if not isinstance(exc, DuplicateSource):
                    raise
                # Another process committed some of these sources first: drop them and retry.
                known = _ledger_keys(lake)
                kept = [o for o in batch if (o.sha256, o.parser, o.parser_version) not in known]
                if len(kept) == len(batch):
                    raise  # not another process's commit: retrying could loop forever
                for o in batch:
                    if (o.sha256, o.parser, o.parser_version) in known:
                        _count(o, "unchanged")
                batch = kept
        for o in batch:
            _count(o, o.status)

    def _count(o: SourceOutcome, status: str) -> None:
        if status == "unchanged":
            o.status = "unchanged"
            o.tables = {}
            report.unchanged += 1
        elif status == "ok":
            report.new += 1
            report.records += len(o.record_ids)
        else:
            report.failed += 1
        o.tables = {}  # rows are in the lake now; do not keep them in memory
        report.outcomes.append(o)
        if on_outcome:
            on_outcome(o)

    for o in stream:
        if stop is not None and stop():
            break
        key = (o.sha256, o.parser, o.parser_version)
        if o.status == "unchanged" or key in batch_keys or (o.sha256 and key in known):
            _count(o, "unchanged")  # includes the same bytes twice in one batch
            continue
        if not o.sha256:  # unreadable file: nothing to keep, report only
            _count(o, "failed")
            continue
        batch_keys.add(key)
        pending.append(o)
        if len(pending) >= batch_size:
            flush()
    flush()
    return report
