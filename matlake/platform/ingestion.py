"""Running parsers over files: hashing, dedup, object storage, ledger, commits.

Parsers (``matlake.ingest``) are pure; this module does everything around
them.  Each source file becomes one ``ingest`` activity that *used* the raw
object and generated the file's rows, plus one ledger row: ``ok``,
``failed`` (bad input, or a file that could not be read: then without bytes)
or ``error`` (a detector or parser raised something other than ParseError:
a bug, kept with its traceback).  Files are parsed by ``workers`` processes (this one and a
spawned pool, see :func:`_parse_tasks`) or on a Dask cluster (``dask``), and committed in
batches: one Parquet file per table per batch, one catalog transaction per batch.

Re-ingesting bytes already seen by the same parser version is a no-op; a
newer parser version re-parses and adds version n+1 of the same records.
The parent decides no-ops before any worker starts (:func:`_decide`): a
path whose stat stamp matches the path cache (``path_stamps``, see
:class:`FileStamp`) reuses its cached sha256 and parser without being read; a
file without one is hashed there only when its size is one the ledger knows
(any other size cannot be unchanged); the pool is sized to the files left.  A
failure is tried again when the kind or options differ (see
:func:`attempt_key`); ``matlake retry`` tries errors again as they are.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import gzip
import hashlib
import io
import json
import mmap
import os
import signal
import stat
import statistics
import sys
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import select

from matlake.ingest import ParseContext, ParseError, check_kind, detect, supported_formats
from matlake.ingest.base import array_parts, describe_start, printable
from matlake.platform import catalog as cat
from matlake.platform.objects import ObjectStore, Spool, durability_mode, settle_background

if TYPE_CHECKING:
    from matlake.platform.lake import Lake

HEAD_BYTES = 8192
UNKNOWN_PARSER = "unknown"
MAX_SOURCE_BYTES = 2 * 1024**3  # default: a single source file larger than this is refused, not read
MAX_SOURCE_ENV = "MATLAKE_MAX_SOURCE_BYTES"
OK_KEY = ""  # the attempt key of every ok ledger row: one success per (bytes, parser version)
# Per kind, a ``module:function(lake, items) -> items`` run before parsing that completes the items'
# options from the lake, so the parser stays pure (a mask gets its image's shape and version).  An
# option ``_used`` = [[table, record_id, version], ...] it adds becomes a *used* link of the ingest.
# A table's map file is read here, not by the parser (see read_file_options).
OPTION_RESOLVERS: dict[str, str] = {"mask": "matlake.platform.mask_options:resolve",
                                    "table": "matlake.platform.ingestion:read_file_options"}


def max_source_bytes() -> int:
    """Largest source file read, in bytes: ``$MATLAKE_MAX_SOURCE_BYTES`` if set, else 2 GiB."""
    value = os.environ.get(MAX_SOURCE_ENV, "").strip()
    if not value:
        return MAX_SOURCE_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit <= 0:
        raise ValueError(f"${MAX_SOURCE_ENV}: expected a positive number of bytes, found {value!r}")
    return limit


def attempt_key(kind: str, options: dict[str, Any]) -> str:
    """Ledger key part of a failure: the kind and options it was tried with.

    The same bytes that failed are tried again when the kind or an option
    differs, and come back ``unchanged`` when tried the same way again.
    """
    text = json.dumps({"kind": kind, "options": options}, sort_keys=True, default=str)
    return "try:" + hashlib.sha256(text.encode()).hexdigest()[:24]


def success_key(parser: str, options: Mapping[str, Any]) -> str:
    """Ledger key part of a success: empty (one success per bytes and parser version), or, for a
    parser whose options change what it makes of the same bytes (``keyed_by_options``: a table's
    map), a digest of the options, so the same file read through another map is parsed again."""
    if not _keyed_by_options(parser):
        return OK_KEY
    # Content, not location: the map's parsed content is in the options; where its file was is not.
    content = {k: v for k, v in options.items() if k != "option_files"}
    text = json.dumps(content, sort_keys=True, default=str)
    return "ok:" + hashlib.sha256(text.encode()).hexdigest()[:24]


class OptionFileError(ValueError):
    """An option naming a file (a table's map) that cannot be read or parsed; raised before any work."""


def resolve_file_options(kind: str, options: Mapping[str, Any] | None,
                         base: str | os.PathLike | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Options with every file option of ``kind``'s parsers read: (options, {sha256: bytes}).

    A parser lists in ``file_options`` the options that name a TOML file (``--option
    map=MAP.toml``).  The platform, not the pure parser, reads it: the option's value
    becomes the parsed content, and ``option_files`` records each file's path, sha256
    and size; the bytes are returned to be kept as objects that the ingest activities
    *used*.  So the ledger's attempt key and the activity's parameters hold the whole
    map, and a changed map is a new attempt.  A value that is already parsed (a dict:
    ``retry`` re-reads the options an activity stored, ``ingest_frame`` passes one)
    is left as it is.  A relative path is taken from ``base`` (default: the current
    directory).  Raises :class:`OptionFileError` naming the option and file.
    """
    import tomllib

    out = dict(options or {})
    blobs: dict[str, bytes] = {}
    if kind == "auto":
        return out, blobs
    from matlake.ingest import all_parsers

    names = sorted({n for p in all_parsers() if p.kind == kind for n in p.file_options})
    files = dict(out.get("option_files") or {})
    for name in names:
        value = out.get(name)
        if not isinstance(value, (str, os.PathLike)):
            continue
        path = Path(base or ".") / Path(value).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OptionFileError(f"option {name}: cannot read {str(path)!r}: {exc.strerror or exc}") from exc
        try:
            out[name] = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise OptionFileError(f"option {name}: {str(path)!r} is not a TOML file: {exc}") from exc
        sha = hashlib.sha256(data).hexdigest()
        blobs[sha] = data
        files[name] = {"path": str(path.resolve()), "sha256": sha, "size": len(data)}
    if files:
        out["option_files"] = files
    return out, blobs


def read_file_options(lake: "Lake", items: Sequence["SourceItem"]) -> list[dict[str, Any]]:
    """Option resolver (:data:`OPTION_RESOLVERS`) of kinds whose parsers declare ``file_options``:
    each item's options with those files read (:func:`resolve_file_options`), their bytes kept
    as objects of the store (the commit links them as *used*); each distinct option set is read once."""
    done: dict[str, dict[str, Any]] = {}
    out = []
    for it in items:
        key = json.dumps([it.kind, it.options], sort_keys=True, default=str)
        if key not in done:
            done[key], blobs = resolve_file_options(it.kind, it.options)
            for sha, data in blobs.items():
                lake.objects.put(data, sha)
        out.append(done[key])
    return out


def unread_key(path: str, stamp: tuple[int, int] | None, reason: str) -> str:
    """Ledger key part of a file that was not read (no bytes, so no hash).

    Made of the path, size, mtime and reason: the same unreadable file is
    recorded once, a changed one again, and a later successful read (which
    has a hash) is never blocked by it.
    """
    text = f"{path}\x00{stamp}\x00{reason}"
    return "unread:" + hashlib.sha256(text.encode()).hexdigest()[:24]


LedgerIndex = Mapping[tuple[str, str, str, str], str]  # (sha256, parser, version, attempt key) -> status


@dataclass
class SourceItem:
    """One thing to ingest: a file path, or bytes already in the object store (retry)."""

    path: str
    kind: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    object_sha: str | None = None  # read from the store instead of the path
    again: bool = False  # try even if this attempt is in the ledger (``retry`` of an ``error``)


@dataclass
class SourceOutcome:
    path: str
    sha256: str
    size: int
    parser: str
    parser_version: str
    status: str  # ok | failed | error | unchanged
    message: str = ""
    tables: dict[str, pa.Table] = field(default_factory=dict)
    objects: list[tuple[str, int]] = field(default_factory=list)  # (sha, size) written by the parser
    record_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempt_key: str = OK_KEY
    detail: str = ""  # traceback of an error
    prior: str = ""  # status of the ledger row that made this source unchanged (or an unread one known)
    stamp: "FileStamp | None" = None  # the path's stat stamp to cache with sha256 (see FileStamp), when safe
    ok_key: str = OK_KEY  # the attempt key a success of this parser with these options has (success_key)

    @property
    def still_failed(self) -> bool:
        """Failed or errored now, or unchanged since a failure or error."""
        return self.status in ("failed", "error") or (self.status == "unchanged" and self.prior in ("failed", "error"))

    # Tables cross from a worker to the parent as Arrow IPC streams: reading one back costs the
    # parent ~0.06 ms instead of ~0.5 ms for an unpickled pa.Table (a one-row structures table),
    # and the parent reads every parsed file's tables one after the other.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["tables"] = {name: _table_to_ipc(t) for name, t in self.tables.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["tables"] = {name: _table_from_ipc(data) for name, data in state["tables"].items()}
        self.__dict__.update(state)


class OutcomeBatch:
    """The outcomes of one pool task (a run of files), sent to the parent as one message.

    Per file, the parent would otherwise unpickle one outcome and open one Arrow IPC
    stream per table: serial work in the parent that bounds how much a second worker
    helps.  Here the tables of all the outcomes are packed per (table name, schema)
    into one IPC stream, and each outcome gets its own rows back as zero-copy slices.
    """

    def __init__(self, outcomes: list[SourceOutcome]) -> None:
        self.outcomes = outcomes

    def __getstate__(self) -> dict[str, Any]:
        groups: dict[tuple[str, bytes], int] = {}  # (table name, serialized schema) -> group
        parts: list[list[pa.Table]] = []
        states: list[dict[str, Any]] = []
        layout: list[list[tuple[str, int, int, int]]] = []  # per outcome: (name, group, offset, rows)
        for o in self.outcomes:
            placed = []
            for name, table in o.tables.items():
                key = (name, table.schema.serialize().to_pybytes())
                g = groups.setdefault(key, len(parts))
                if g == len(parts):
                    parts.append([])
                offset = sum(t.num_rows for t in parts[g])
                parts[g].append(table)
                placed.append((name, g, offset, table.num_rows))
            state = dict(o.__dict__)
            state["tables"] = {}  # the worker's own outcome keeps its tables
            states.append(state)
            layout.append(placed)
        streams = [_table_to_ipc(pa.concat_tables(p) if len(p) > 1 else p[0]) for p in parts]
        return {"states": states, "layout": layout, "streams": streams}

    def __setstate__(self, state: dict[str, Any]) -> None:
        tables = [_table_from_ipc(data) for data in state["streams"]]
        self.outcomes = []
        for s, placed in zip(state["states"], state["layout"]):
            o = SourceOutcome.__new__(SourceOutcome)
            o.__dict__.update(s)
            o.tables = {name: tables[g].slice(offset, rows) for name, g, offset, rows in placed}
            self.outcomes.append(o)


def _table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


@dataclass
class IngestReport:
    new: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: int = 0
    records: int = 0
    snapshots: list[int] = field(default_factory=list)
    outcomes: list[SourceOutcome] = field(default_factory=list)

    @property
    def still_failed(self) -> int:
        """Files that failed or errored, now or in the attempt that left them unchanged."""
        return sum(1 for o in self.outcomes if o.still_failed)

    def summary(self) -> str:
        snaps = f", snapshots {self.snapshots[0]}..{self.snapshots[-1]}" if self.snapshots else ""
        old = self.still_failed - self.failed - self.errors
        again = f" ({old} of them failed before)" if old > 0 else ""
        return (f"{self.new} new, {self.unchanged} unchanged{again}, {self.failed} failed, {self.errors} errors "
                f"files; {self.records} records{snaps}")


# --------------------------------------------------------------------------- pure per-file work


_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})  # what Path.exists() calls absent


def _stat_kind(path: str | os.PathLike) -> str:
    """'dir', 'file' (anything else that exists), 'link' (a broken symbolic link) or '' (nothing there),
    from one ``stat`` where ``Path.is_dir()``, ``exists()`` and ``is_symlink()`` took up to three;
    other errors (permission) are raised, as those do."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno not in _MISSING_ERRNOS:
            raise
        return "link" if os.path.islink(path) else ""
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named, and files below folders named (recursive, sorted, hidden skipped)."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        what = _stat_kind(path)
        if what == "dir":
            for sub in sorted(path.rglob("*")):
                rel = sub.relative_to(path).parts
                if not any(part.startswith(".") for part in rel) and _stat_kind(sub) in ("file", "link"):
                    out.append(sub)  # special files and broken links too: they get a failed ledger row
        elif what:
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return out


def _source_path(path: Path, real_dirs: dict[str, str] | None = None) -> str:
    """The path a source is recorded under: ``path.resolve()``, or for a broken link (or a file
    gone) its absolute path, named as itself (resolving it would name a target that is not there).

    ``real_dirs`` caches the resolved folders (a file that is not a link resolves to its
    resolved folder plus its name), so a run over many files of few folders resolves each
    folder once instead of every path component of every file.
    """
    text = os.fspath(path)
    folder, name = os.path.split(text)
    try:
        link = stat.S_ISLNK(os.lstat(text).st_mode)
    except OSError:
        link = True  # gone: the slow path below says how
    if link or real_dirs is None or name in ("", ".", ".."):
        return str(path.resolve() if path.exists() else path.absolute())
    real = real_dirs.get(folder)
    if real is None:
        real = real_dirs[folder] = os.path.realpath(folder or ".")
    return os.path.join(real, name)


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


def _signed64(n: int) -> int:
    """``n`` (an unsigned 64-bit device or inode number) as the signed value a BIGINT column holds."""
    return n - (1 << 64) if n >= (1 << 63) else n


@dataclass(frozen=True)
class FileStamp:
    """What ``stat`` says about the bytes at a path, compared instead of reading them.

    The rule: a path's cached sha256 is reused only when device, inode, size,
    mtime_ns *and* ctime_ns are all what they were when the file was hashed.
    Every write, truncate, rename-over or ``touch -d`` changes ctime (no user
    can set it), and a file replaced by another gets a new inode, so a changed
    file with the same size and mtime is still re-hashed.  A write in the same
    clock tick as the hash could leave all five alike, so a stamp is cached only
    when the file's mtime and ctime are at least :data:`RACY_NS` older than the
    moment its read began (and unchanged across the read): a file still being
    written is hashed again next time.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileStamp":
        return cls(_signed64(st.st_dev), _signed64(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def settled_before(self, t_ns: int) -> bool:
        """True when the last change to the file was at least RACY_NS before ``t_ns`` (wall clock, ns)."""
        return max(self.mtime_ns, self.ctime_ns) <= t_ns - RACY_NS


# Timestamps come from a coarse clock (a few ms on Linux; 1-2 s on some network and FAT
# filesystems); 2 s covers both and a little clock skew between a file server and us.
RACY_NS = 2_000_000_000
STREAM_BYTES = 16 * 1024**2  # sources this large are streamed into the object store, never held whole
READ_CHUNK = 1 << 20


def _unread(item: SourceItem, known: LedgerIndex, started: datetime, stamp: tuple[int, int] | None,
            size: int, reason: str) -> SourceOutcome:
    """The outcome of a file not read: failed, no bytes, keyed by path, size, mtime and reason."""
    key = unread_key(item.path, stamp, reason)
    return SourceOutcome(item.path, "", size, UNKNOWN_PARSER, "0", "failed", f"{item.path}: {reason}",
                         started_at=started, ended_at=cat.utcnow(), attempt_key=key,
                         prior=known.get(("", UNKNOWN_PARSER, "0", key), ""))


def _stat_source(item: SourceItem, known: LedgerIndex, started: datetime, limit: int) -> os.stat_result | SourceOutcome:
    """The stat of a regular file that may be read, or the failed outcome of one that is not read.

    Whether a path can be read is decided from ``stat`` alone (missing, a broken link, not a
    regular file, over ``limit`` bytes), so the parent decides it as well as a worker would.
    """
    try:
        st = os.stat(item.path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileNotFoundError) and os.path.islink(item.path):
            reason = f"broken symbolic link to {os.readlink(item.path)}"
        return _unread(item, known, started, None, 0, f"cannot read: {reason}")
    stamp = (st.st_size, st.st_mtime_ns)
    if not stat.S_ISREG(st.st_mode):
        what = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device or other special file")
        return _unread(item, known, started, stamp, 0, f"cannot read: not a regular file ({what})")
    if st.st_size > limit:
        return _unread(item, known, started, stamp, st.st_size,
                       f"field size: expected at most {limit} bytes (${MAX_SOURCE_ENV}), found {st.st_size}")
    return st


@dataclass
class _Read:
    """A source read once and hashed: its bytes in memory, or (large) spooled into the store."""

    sha: str
    size: int
    raw: bytes | None  # None when spooled
    spool: Spool | None = None
    stamp: tuple[int, int] | None = None  # (size, mtime_ns) from stat; None for a stored object
    cacheable: FileStamp | None = None  # the stamp to remember for this path, when safe (see FileStamp)
    kept: bool = False  # the raw bytes are already object ``sha`` (see keep)

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes of the content (gzip decompressed as far as that needs)."""
        if self.raw is not None:
            return content_head(self.raw, n)
        assert self.spool is not None
        with open(self.spool.tmp if self.spool.path is None else self.spool.path, "rb") as fh:
            return _file_content_head(fh, n)

    def keep(self, store: ObjectStore) -> None:
        """Make the raw bytes object ``sha``, unsynced (the batch's commit makes it durable)."""
        if self.kept:
            return
        if self.spool is not None:
            if self.spool.path is None:
                self.spool.keep(sync=False)
        else:
            assert self.raw is not None
            store.put(self.raw, self.sha, sync=False)
        self.kept = True

    def release(self) -> None:
        """Drop the spooled copy, if any (a kept object stays)."""
        if self.spool is not None:
            self.spool.discard()


def _file_content_head(fh: Any, n: int) -> bytes:
    magic = fh.read(2)
    fh.seek(0)
    if magic != b"\x1f\x8b":
        return fh.read(n)
    try:
        with gzip.GzipFile(fileobj=fh) as gz:
            return gz.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(exc) from exc


def _read_source(item: SourceItem, store: ObjectStore, known: LedgerIndex, started: datetime) -> _Read | SourceOutcome:
    """Read and hash a source once, or return the failed outcome of a file not read.

    Sources of :data:`STREAM_BYTES` or more are copied into the object store's
    spool while they are hashed, never held in memory whole.
    """
    if item.object_sha:
        try:
            raw = store.get(item.object_sha)  # hash-checked on read
        except Exception as exc:  # noqa: BLE001 - missing, unreadable or corrupt: reported, not raised
            return _unread(item, known, started, None, 0, f"cannot read raw object {item.object_sha}: {exc}")
        return _Read(item.object_sha, len(raw), raw, kept=True)  # read from the store
    st = _stat_source(item, known, started, max_source_bytes())
    if isinstance(st, SourceOutcome):
        return st
    stamp = (st.st_size, st.st_mtime_ns)
    read_ns = time.time_ns()
    spool: Spool | None = None
    try:
        with open(item.path, "rb") as fh:
            before = FileStamp.of(os.fstat(fh.fileno()))
            if before.size >= STREAM_BYTES:
                spool = store.spool()
                while chunk := fh.read(READ_CHUNK):
                    spool.write(chunk)
                got = _Read(spool.close(), spool.size, None, spool, stamp)
            else:
                raw = fh.read()
                got = _Read(hashlib.sha256(raw).hexdigest(), len(raw), raw, None, stamp)
            after = FileStamp.of(os.fstat(fh.fileno()))
    except OSError as exc:
        if spool is not None:
            spool.discard()
        return _unread(item, known, started, stamp, st.st_size, f"cannot read: {exc.strerror or exc}")
    if before == after and after.size == got.size and after.settled_before(read_ns):
        got.cacheable = after
    return got


def process_source(item: SourceItem, objects_root: str, known: LedgerIndex | None = None) -> SourceOutcome:
    """Read, hash, detect, parse one source; keep its raw bytes and arrays as objects.

    Runs in worker processes: it touches only the object store (content
    addressed, idempotent) and never the catalog or Parquet tables.
    ``known`` is the ledger's index (see :func:`_ledger_index`); omitted, it is
    the index the worker received once at start (see :func:`worker_pool`).  The status
    is ``ok``; ``failed`` for bad input (a :class:`ParseError`, a file not
    read, unsupported content); ``error`` for any other exception inside a
    detector or parser (a bug: the traceback goes to ``detail``); or
    ``unchanged`` when the ledger already has this attempt (``prior`` then
    says how it ended).  The raw bytes of every failure are kept.  Objects are
    written without any fsync: the commit of the batch makes every object it
    registers durable in one barrier (see :func:`_commit_batch`); a worker on
    another machine uses :func:`process_source_durable`.
    """
    known = _worker_index() if known is None else known
    started = cat.utcnow()
    store = ObjectStore(Path(objects_root))
    got = _read_source(item, store, known, started)
    if isinstance(got, SourceOutcome):
        return got
    out = _process_got(item, got, store, known, started)
    settle_background()  # the arrays written behind exist when this returns
    return out


def process_sources(items: Sequence[SourceItem], objects_root: str) -> OutcomeBatch:
    """:func:`process_source` for each of a run of files, in a pool worker: one task, one reply."""
    batch = OutcomeBatch(list(_process_in_turn(items, ObjectStore(Path(objects_root)), _worker_index())))
    # The parent's barrier cannot wait for this process's writes behind and early fsyncs: done here
    # (a failed one is raised).
    settle_background()
    return batch


def _worker_index() -> LedgerIndex:
    """The ledger index a pool worker received once at start (see :func:`worker_pool`)."""
    if _worker_known is None:
        raise RuntimeError("process_source needs the ledger index: pass known=, or run it in a pool "
                           "started by worker_pool(workers, known)")
    return _worker_known


def _read_and_keep(item: SourceItem, store: ObjectStore, known: LedgerIndex) -> _Read | SourceOutcome:
    """:func:`_read_source`, then the raw bytes kept as their object (unsynced).

    Keeping them before detection changes nothing: every path through
    :func:`_process_read` keeps them, except bytes the ledger already has, whose
    object exists (``put`` then finds it and writes nothing).
    """
    got = _read_source(item, store, known, cat.utcnow())
    if isinstance(got, _Read):
        try:
            got.keep(store)
        except BaseException:
            got.release()
            raise
    return got


def _release(got: object) -> None:
    if isinstance(got, _Read):
        got.release()


READ_AHEAD_FILES = 2  # files read ahead of the one being parsed (each held is under STREAM_BYTES)
READ_AHEAD_BYTES = 1 << 20  # smaller files are read where they are parsed (see _worth_reading_ahead)


def _worth_reading_ahead(item: SourceItem) -> bool:
    """True for a source file of :data:`READ_AHEAD_BYTES` or more.

    A small file costs a few system calls to read and keep, each of which a thread
    would have to win the GIL back for from the parse (up to 5 ms each): it is read
    where it is parsed.  A file that cannot be stat'ed is too, and fails there.
    """
    if item.object_sha:
        return False
    try:
        return os.stat(item.path).st_size >= READ_AHEAD_BYTES
    except OSError:
        return False


def _read_ahead(items: Sequence[Any], read: Callable[[Any], Any], abandon: Callable[[Any], None] = _release,
                depth: int | None = None, worth: Callable[[Any], bool] = lambda item: True,
                ) -> Iterator[tuple[Any, Any]]:
    """``(item, read(item))`` in order, the next items' ``read`` running in a thread meanwhile.

    Reading, hashing and writing the raw object are system calls and C loops that
    release the GIL, so they overlap with the parse of the items before (pymatgen holds
    it): the wall time of a run of large files drops by the time spent hashing and
    copying them.  Of the next ``depth`` items (default :data:`READ_AHEAD_FILES`),
    those ``worth`` it are read ahead, so that a large file after a small one is ready
    too; the others are read here when their turn comes.  Sources larger than
    :data:`STREAM_BYTES` are spooled, not held.  Results the caller never takes (it
    stopped early) go to ``abandon``.
    """
    depth = READ_AHEAD_FILES if depth is None else depth
    if len(items) <= 1 or depth < 1:
        for it in items:
            yield it, read(it)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="matlake-read-ahead") as reader:
        ahead: dict[int, Future] = {}
        looked = 0  # items[:looked] are read ahead or left to be read here
        try:
            for i, it in enumerate(items):
                while looked < len(items) and looked <= i + depth:  # read on while ``it`` is parsed
                    if looked > i and worth(items[looked]):
                        ahead[looked] = reader.submit(read, items[looked])
                    looked += 1
                pending = ahead.pop(i, None)
                got = read(it) if pending is None else _wait_for_read(pending)
                yield it, got
        finally:
            for pending in ahead.values():
                if not pending.cancel():
                    with contextlib.suppress(Exception):
                        abandon(pending.result())


def _wait_for_read(pending: Future) -> Any:
    """The result of a read ahead (a function of its own so that ``bench_ingest`` can time the wait)."""
    return pending.result()


def _process_in_turn(items: Sequence[SourceItem], store: ObjectStore, known: LedgerIndex,
                     seconds: collections.deque[float] | None = None,
                     read: Callable[[SourceItem], "_Read | SourceOutcome"] | None = None) -> Iterator[SourceOutcome]:
    """:func:`process_source` for each item in order, each read while the one before is parsed
    (:func:`_read_ahead`): by ``read`` (default :func:`_read_and_keep`), which may also decide an
    item (an outcome) instead of reading it.  ``seconds``, when given, gets the seconds each took
    here, from the previous outcome to this one (a wait for its read included)."""
    read = read or (lambda it: _read_and_keep(it, store, known))
    t = time.perf_counter()
    for it, got in _read_ahead(items, read, worth=_worth_reading_ahead):
        out = got if isinstance(got, SourceOutcome) else _process_got(it, got, store, known, cat.utcnow())
        if seconds is not None:
            now = time.perf_counter()
            seconds.append(now - t)
            t = now
        yield out


def _process_got(item: SourceItem, got: _Read, store: ObjectStore, known: LedgerIndex,
                 started: datetime) -> SourceOutcome:
    """:func:`process_source` after the read: ``got`` holds the source's bytes, hashed."""
    try:
        out = _process_read(item, got, store, known, started)
    finally:
        got.release()
    out.stamp = got.cacheable
    return out


def process_source_durable(item: SourceItem, objects_root: str,
                           known: LedgerIndex | None = None) -> SourceOutcome:
    """:func:`process_source`, then the objects it wrote are made durable here.

    For workers on another machine (Dask): their writes are in that machine's page
    cache, which the parent's barrier cannot flush.  (The parent's barrier still runs;
    it finds these files clean.)
    """
    from matlake.platform.objects import make_durable

    out = process_source(item, objects_root, known)
    store = ObjectStore(Path(objects_root))
    make_durable(store.path(s) for s in [out.sha256, *(osha for osha, _n in out.objects)] if s)
    return out


def _process_read(item: SourceItem, got: _Read, store: ObjectStore, known: LedgerIndex,
                  started: datetime) -> SourceOutcome:
    name = Path(item.path).name
    sha, raw, stamp = got.sha, got.raw, got.stamp
    out = SourceOutcome(item.path, sha, got.size, UNKNOWN_PARSER, "0", "failed", started_at=started,
                        attempt_key=attempt_key(item.kind, item.options))

    def seen() -> bool:
        """True (and ``out`` unchanged) when the ledger has this success or this attempt."""
        done = known.get((sha, out.parser, out.parser_version, out.ok_key)) if item.again else _committed(out, known)
        if done is None:
            return False
        out.status, out.prior = "unchanged", done
        return True

    def end(status: str, message: str, detail: str = "") -> SourceOutcome:
        if item.again:  # a retried attempt gets a row of its own
            out.attempt_key += ":" + uuid.uuid4().hex[:12]
        got.keep(store)  # the raw bytes of every failure are kept
        out.status, out.message, out.detail = status, message, detail
        out.ended_at = cat.utcnow()
        return out

    def bug(what: str, exc: BaseException) -> SourceOutcome:
        return end("error", f"{item.path}: {what}: {printable(f'{type(exc).__name__}: {exc}')} (a bug, not bad "
                            f"input; traceback in the ledger's detail)", traceback.format_exc())

    try:
        head = got.head(HEAD_BYTES)
    except ParseError as exc:
        return out if seen() else end("failed", str(exc.with_file(item.path)))
    if not head.strip() and len(head) < HEAD_BYTES:
        empty = "empty file" if not got.size else ("empty file (gzip of nothing)" if not head
                                                   else "empty file (only whitespace)")
        return out if seen() else end("failed", f"{item.path}: {empty}")
    try:
        parser = detect(head, name, item.kind)
    except Exception as exc:  # noqa: BLE001 - a detector bug must not sink the batch
        return out if seen() else bug("a format detector crashed", exc)
    if parser is None:
        if seen():
            return out
        article = "an" if item.kind[:1] in ("a", "e", "i", "o", "u") or item.kind.startswith("mp") else "a"
        what = ("any supported format" if item.kind == "auto" else f"{article} {item.kind} file")
        found = "binary data" if describe_start(head).startswith("binary") else "text"
        return end("failed", f"{item.path}: unsupported format: field content: expected {what}, found {found} "
                             f"({got.size} bytes) that no parser recognises; supported kinds and formats: "
                             f"{supported_formats(item.kind)}")
    out.parser, out.parser_version = parser.name, parser.version
    out.ok_key = success_key(parser.name, item.options)
    if seen():
        return out
    got.keep(store)  # the raw bytes are kept whatever happens next
    versioned = f"(parser {parser.name} {parser.version})"
    compressed_name = name.lower().endswith(COMPRESSED_SUFFIXES)
    mapped: mmap.mmap | None = None
    try:
        if raw is not None:
            content = decompress(raw, name)
            plain = content is raw and stamp is not None and not compressed_name
            # An uncompressed file on disk: path readers read it (checked below for changes).
            content_path = item.path if plain else None
        else:
            # Spooled: the spool (or the object it became) holds exactly the hashed bytes.
            assert got.spool is not None and got.spool.path is not None
            content, content_path, mapped = _spooled_content(got.spool.path, parser)
            if compressed_name:
                content_path = None  # path readers would decompress by name
    except ParseError as exc:
        return end("failed", f"{exc.with_file(item.path)} {versioned}")
    def sink(array: Any) -> tuple[str, int]:
        # Arrays go to the store as they are encoded, never held as a second, encoded copy.
        # Hashed here, written by a background thread (the barrier waits for it): see put_parts.
        return store.put_parts(array_parts(array), behind=True)

    def chunked_sink(array: Any, chunks: Any, codec: str) -> tuple[str, int, str]:
        return _put_chunked(store, array, chunks, codec, sync=False)

    ctx = ParseContext(source_sha256=sha, filename=name, parser=parser.name, options=item.options,
                       content_path=content_path, array_sink=sink, chunked_sink=chunked_sink)
    try:
        result = parser.parse(content, ctx)
        if raw is not None and ctx.content_path and _stamp(item.path) != stamp:
            # The file changed under us: parse the bytes we hashed, not the file.
            ctx = ParseContext(source_sha256=sha, filename=name, parser=parser.name, options=item.options,
                               array_sink=sink, chunked_sink=chunked_sink)
            result = parser.parse(content, ctx)
    except ParseError as exc:
        return end("failed", f"{exc.with_file(item.path)} {versioned}")
    except Exception as exc:  # noqa: BLE001 - a parser bug must not sink the batch
        return bug(f"parser {parser.name} {parser.version} crashed", exc)
    finally:
        del content
        if mapped is not None:
            with contextlib.suppress(BufferError):  # a view the parser kept holds it open until collected
                mapped.close()
    tables: dict[str, pa.Table] = {}
    rids: list[str] = []
    from matlake import schemas

    try:
        for tname, rows in result.tables.items():
            if not isinstance(rows, pa.Table) and not rows:
                continue  # no rows for this table (an empty list has no columns to conform)
            schema = schemas.get(tname)
            table = rows if isinstance(rows, pa.Table) else rows_table(list(rows), schema.data_schema())
            table = schema.conform(table, source=item.path)  # a no-op for a table built to its schema
            tables[tname] = table
            rids.extend(table.column("record_id").to_pylist())
    except Exception as exc:  # noqa: BLE001 - rows the schema refuses are the parser's bug
        return bug(f"parser {parser.name} {parser.version} produced rows its table refuses", exc)
    out.objects.extend(ctx.sunk.items())
    for osha in list(ctx.objects):
        data = ctx.objects.pop(osha)  # one encoded array at a time, each dropped once written
        store.put(data, osha, sync=False)
        out.objects.append((osha, len(data)))
        del data
    out.status = "ok"
    out.attempt_key = out.ok_key
    out.tables = tables
    out.record_ids = rids
    out.warnings = list(result.warnings)
    out.ended_at = cat.utcnow()
    return out


def rows_table(rows: list[dict[str, Any]], target: pa.Schema) -> pa.Table:
    """A parser's rows (dicts) as an Arrow table, built straight to ``target`` when that works.

    One conversion instead of two (infer the types, then cast them in ``conform``): a
    third of the cost for a one-row table.  Rows with a key ``target`` lacks, values it
    cannot take as they are (a string for a float, say) or a null in a non-nullable
    column come back as they are, types inferred, so that ``conform`` casts what it
    can and names what is wrong, exactly as before.
    """
    names = set(target.names)
    if all(r.keys() <= names for r in rows):
        try:
            table = pa.Table.from_pylist(rows, schema=target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
        else:
            if all(f.nullable or not table.column(f.name).null_count for f in target):
                return table
    return pa.Table.from_pylist(rows)


def _spooled_content(path: Path, parser: Any) -> tuple[Any, str | None, mmap.mmap | None]:
    """The content of a spooled source for ``parser``: (data, content_path, memory map to close).

    A gzip source is decompressed into memory (the parser needs its content).  A
    plain one is handed to a parser that declares ``buffer_ok`` as a read-only
    memory map of the file (pages are read only where the parser looks), and to
    others as bytes read from it.
    """
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            fh.seek(0)
            try:
                with gzip.GzipFile(fileobj=fh) as gz:
                    return gz.read(), None, None
            except (OSError, EOFError, zlib.error) as exc:
                raise _gzip_error(exc) from exc
        if getattr(parser, "buffer_ok", False):
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            return mapped, str(path), mapped
        fh.seek(0)
        return fh.read(), str(path), None


# --------------------------------------------------------------------------- executors


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}

# The ledger index of this parse worker: sent once when the worker starts (see
# :func:`worker_pool`), not pickled again with every file it is given.
_worker_known: LedgerIndex | None = None


def _ignore_stop_signals() -> None:
    """Worker initializer: SIGTERM and SIGINT are for the parent only.

    systemd (KillMode=control-group) and Ctrl-C signal every process of the group; a
    worker killed mid-file would break the pool and fail the run.  The parent decides:
    it stops taking files, commits what was parsed and shuts the pool down.  A worker
    starts with the signals blocked (see :class:`_WorkerPool`); ignoring them discards
    any that arrived while it started."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _start_worker(known: LedgerIndex | None) -> None:
    """Worker initializer: ignore the stop signals and keep the ledger index for every file."""
    global _worker_known
    _ignore_stop_signals()
    _worker_known = known


class _WorkerPool(ProcessPoolExecutor):
    """Workers are spawned inside ``submit``: spawn them with the stop signals blocked
    (a blocked mask is inherited across fork and exec), so that a signal to the whole
    group cannot kill one before its initializer ignores them.  The parent's own
    signals stay pending for the moment and are delivered as soon as ``submit`` returns."""

    def submit(self, fn, /, *args, **kwargs):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return super().submit(fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def worker_pool(workers: int, known: LedgerIndex | None = None) -> ProcessPoolExecutor:
    """The process pool that parses files: spawned workers that ignore SIGTERM/SIGINT.

    ``known`` (the ledger index) is pickled once per worker, when it starts; a task
    then sends only its files: ``pool.submit(process_sources, items, objects_root)``.
    """
    import multiprocessing as mp

    # spawn: a forked child would inherit the parent's catalog connections and DuckDB threads.
    return _WorkerPool(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_start_worker,
                       initargs=(known,))


@dataclass(frozen=True)
class CachedPath:
    """A path cache entry: the stamp and sha256 of the bytes hashed there, and the parser
    detected for them with ``kind`` under the parser registry ``registry`` (see
    :func:`registry_fingerprint`)."""

    stamp: FileStamp
    sha256: str
    kind: str = ""
    parser: str = ""
    parser_version: str = ""
    registry: str = ""


PathCache = Mapping[str, CachedPath]


@functools.lru_cache(maxsize=1)
def _fingerprint(parsers: tuple[tuple[str, str, str], ...]) -> str:
    return hashlib.sha256(repr(parsers).encode()).hexdigest()[:16]


def registry_fingerprint() -> str:
    """Digest of the parser registry in detection order (names, versions, kinds).

    Detection is a pure function of the first 8 KiB, the file name, the kind and
    this registry, so a cached detection stays valid while all four do.
    """
    from matlake import ingest as registry

    return _fingerprint(tuple((p.name, p.version, p.kind) for p in registry.all_parsers()))


def triage(item: SourceItem, known: LedgerIndex, cached: CachedPath | None,
           registry: str | None = None) -> SourceOutcome | None:
    """The ``unchanged`` outcome of a source, decided without reading it whole; None when it needs work.

    It needs the path's cached sha256 (``cached``, reused only under the
    :class:`FileStamp` rule).  The parser, which the ledger key names, is the
    cached detection when the kind and the registry (``registry``, see
    :func:`registry_fingerprint`) are the same, else it is detected again from the
    first 8 KiB.  Anything else (no cache entry, a changed stamp, a retry, a stored
    object, a file over the size limit, unreadable) is left to the caller.  The
    outcome carries the stamp, so that a fresh detection is cached.  (``ingest``
    goes further, see :func:`_decide`: it also hashes, without a cache entry, a file
    whose size the ledger knows.)
    """
    ctx = _Triage(known, {item.path: cached} if cached is not None else {}, registry)
    out = _decide(item, ctx)
    return out if isinstance(out, SourceOutcome) and out.status == "unchanged" else None


def _keyed_by_options(parser: str) -> bool:
    """Whether a success of ``parser`` is keyed by its options (see :func:`success_key`)."""
    from matlake.ingest import parser_named

    try:
        return bool(parser_named(parser).keyed_by_options)
    except KeyError:  # the unknown parser of a failure
        return False


def _parser_of_head(head: bytes | None, name: str, kind: str) -> tuple[str, str]:
    """(parser, version) that :func:`process_source` records for content starting with ``head``
    (None: a corrupt gzip): the unknown parser for an empty file, unsupported content or a
    detector that raised, as there."""
    parser = None
    if head is not None and (head.strip() or len(head) >= HEAD_BYTES):
        try:
            parser = detect(head, name, kind)
        except Exception:  # noqa: BLE001 - a detector bug is recorded by process_source, as unknown
            parser = None
    return (parser.name, parser.version) if parser else (UNKNOWN_PARSER, "0")


@dataclass
class _Triage:
    """What the parent decides sources with before any worker starts (see :func:`_decide`)."""

    known: LedgerIndex
    cache: PathCache
    registry: str | None  # None: a cached detection is never reused
    sizes: frozenset[int] | None = None  # sizes of the hashed sources in the ledger; None: never hash here
    limit: int = field(default_factory=max_source_bytes)
    shas: frozenset[str] = frozenset()
    keyed: dict[str, bool] = field(default_factory=dict)  # parser name -> keyed_by_options, looked up once
    plain_attempts: dict[str, str] = field(default_factory=dict)  # kind -> attempt key without options
    file_sizes: dict[str, int] = field(default_factory=dict)  # path -> size at its stat, to cut pool tasks

    def __post_init__(self) -> None:
        if self.sizes is not None:
            self.shas = frozenset(key[0] for key in self.known)

    def cached_parser(self, item: SourceItem, cached: CachedPath) -> tuple[str, str] | None:
        """The detection cached with the path, while the kind and the parser registry are the same."""
        if self.registry is not None and cached.kind == item.kind and cached.registry == self.registry \
                and cached.parser:
            return cached.parser, cached.parser_version
        return None

    def unchanged(self, item: SourceItem, sha: str, size: int, parser_version: tuple[str, str],
                  stamp: FileStamp | None, started: datetime) -> SourceOutcome | None:
        """The ``unchanged`` outcome of bytes ``sha`` read by this parser, if the ledger has its success
        or this very attempt (as :func:`_committed` decides); else None."""
        parser, version = parser_version
        if parser not in self.keyed:
            self.keyed[parser] = _keyed_by_options(parser)
        ok_key = success_key(parser, item.options) if self.keyed[parser] else OK_KEY
        if item.options:
            tried = attempt_key(item.kind, item.options)
        else:  # the common case, one JSON digest per run instead of one per file
            tried = self.plain_attempts.get(item.kind) or self.plain_attempts.setdefault(
                item.kind, attempt_key(item.kind, {}))
        done = self.known.get((sha, parser, version, ok_key))
        if done is None:
            done = self.known.get((sha, parser, version, tried))
            if done is None:
                return None
        return SourceOutcome(item.path, sha, size, parser, version, "unchanged", started_at=started,
                             ended_at=cat.utcnow(), attempt_key=tried, prior=done, stamp=stamp, ok_key=ok_key)


def _hash_file(path: str) -> tuple[_Read, FileStamp, FileStamp]:
    """Read and hash the file at ``path`` once, in the parent: (read, stamp before, stamp after).

    A source under :data:`STREAM_BYTES` is held (if it needs parsing, the calling
    process parses these bytes without a second read); a larger one is hashed in
    :data:`READ_CHUNK` pieces and not kept.  Raises ``OSError``.
    """
    read_ns = time.time_ns()
    with open(path, "rb") as fh:
        before = FileStamp.of(os.fstat(fh.fileno()))
        raw: bytes | None
        if before.size < STREAM_BYTES:
            raw = fh.read()
            sha, size = hashlib.sha256(raw).hexdigest(), len(raw)
        else:
            raw, digest, size = None, hashlib.sha256(), 0
            while chunk := fh.read(READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            sha = digest.hexdigest()
        after = FileStamp.of(os.fstat(fh.fileno()))
    got = _Read(sha, size, raw, None, (before.size, before.mtime_ns))
    if before == after and after.size == size and after.settled_before(read_ns):
        got.cacheable = after
    return got, before, after


def _head_at(path: str, stamp: FileStamp) -> tuple[bytes | None, bool]:
    """(content head or None for a corrupt gzip, True) of the file at ``path`` while its stamp is
    ``stamp``; (None, False) once it is another file or changed."""
    try:
        with open(path, "rb") as fh:
            try:
                head: bytes | None = _file_content_head(fh, HEAD_BYTES)
            except ParseError:
                head = None  # a corrupt gzip: process_source records it under the unknown parser
            if FileStamp.of(os.fstat(fh.fileno())) != stamp:
                return None, False
    except OSError:
        return None, False
    return head, True


def _decide(item: SourceItem, ctx: _Triage) -> SourceOutcome | _Read | None:
    """Decide a source in the parent: an outcome, bytes to parse, or None (left to :func:`process_source`).

    - A path that cannot be read is decided from ``stat`` alone: its ``failed``
      outcome (no bytes), exactly as a worker would make it.
    - A stat stamp that matches the path cache (:class:`FileStamp` rule): the
      cached sha256 and detection (or the first 8 KiB) decide, nothing is read
      whole; ``unchanged`` when the ledger has it, else None.
    - Otherwise (no cache entry, or a stale one) a file whose size is the size of
      some hashed source in the ledger (``ctx.sizes``) may be unchanged: it is read
      and hashed here once, and when its sha256 is in the ledger its parser is
      detected (or the cached one reused, for the same bytes) and decided.  Bytes
      that are not unchanged come back as a :class:`_Read` (held when small, so the
      caller can parse them without reading again); a file that changed while it was
      looked at goes to :func:`process_source`.  The sha256 stays the identity: a
      file with the same size but other bytes has another hash and is parsed.
    - A size no hashed ledger source has cannot be unchanged: None, so it is read
      once, by whoever parses it.
    Retries and stored objects are always left to :func:`process_source`.
    """
    if item.again or item.object_sha:
        return None
    started = cat.utcnow()
    st = _stat_source(item, ctx.known, started, ctx.limit)
    if isinstance(st, SourceOutcome):
        return st
    now = FileStamp.of(st)
    ctx.file_sizes[item.path] = now.size
    cached = ctx.cache.get(item.path)
    name = os.path.basename(item.path)
    if cached is not None and now == cached.stamp:
        parser_version = ctx.cached_parser(item, cached)
        if parser_version is None:
            head, same = _head_at(item.path, now)
            if not same:
                return None  # another file now, or changed while we looked
            parser_version = _parser_of_head(head, name, item.kind)
        return ctx.unchanged(item, cached.sha256, now.size, parser_version, now, started)
    if ctx.sizes is None or now.size not in ctx.sizes:
        return None
    try:
        got, before, after = _hash_file(item.path)
    except OSError:
        return None  # process_source tries again and records why it cannot read it
    if not now == before == after:
        return None  # changed between the stat and the read, or during it: process_source reads it again
    held = got if got.raw is not None else None
    if got.sha not in ctx.shas:
        return held  # new bytes
    parser_version = None
    if cached is not None and cached.sha256 == got.sha:
        parser_version = ctx.cached_parser(item, cached)  # touched, not changed: the detection still holds
    if parser_version is None:
        if got.raw is not None:
            try:
                head: bytes | None = content_head(got.raw, HEAD_BYTES)
            except ParseError:
                head = None
        else:
            head, same = _head_at(item.path, after)
            if not same:
                return None
        parser_version = _parser_of_head(head, name, item.kind)
    out = ctx.unchanged(item, got.sha, got.size, parser_version, got.cacheable, started)
    return out if out is not None else held


def _triage_all(items: list[SourceItem], ctx: _Triage) -> tuple[list[SourceOutcome | None], list[SourceItem]]:
    """Every item decided in the parent where it can be (:func:`_decide`): (outcome or None per item,
    the items that need parsing).  Bytes read here for a file that needs parsing are dropped: the
    worker that parses it reads them again (only a file whose size the ledger knows is read here)."""
    pre: list[SourceOutcome | None] = []
    for it in items:
        got = _decide(it, ctx)
        pre.append(got if isinstance(got, SourceOutcome) else None)
    return pre, [it for it, o in zip(items, pre) if o is None]


MAX_FILES_PER_TASK = 16
TASK_BYTES = 8 * 1024**2  # a task holds files of at most this many bytes in all (or one larger file)
TASKS_AHEAD = 16  # tasks handed out beyond the one whose outcomes are due next (see _parse_tasks)
POOL_WORTH_SECONDS = 1.0  # the pool gets tasks only when the files left would take this process longer


def files_per_task(files: int, workers: int) -> int:
    """How many files one pool task carries: up to :data:`MAX_FILES_PER_TASK`, and few enough
    that every worker gets at least four tasks (so that none sits idle at the end of a run)."""
    return max(1, min(MAX_FILES_PER_TASK, files // (4 * max(1, workers))))


def pool_tasks(items: Sequence[SourceItem], sizes: Mapping[str, int], workers: int) -> list[list[SourceItem]]:
    """``items`` cut, in order, into the runs of files that pool tasks carry.

    Each task replies once (:class:`OutcomeBatch`), which saves the parent serial work
    per file; a task ends after :func:`files_per_task` files or :data:`TASK_BYTES` of
    sources (``sizes`` by path, from their stat; a file of unknown size fills a task on
    its own), so large files still spread over the workers.
    """
    per = files_per_task(len(items), workers)
    tasks: list[list[SourceItem]] = []
    task: list[SourceItem] = []
    load = 0
    for it in items:
        size = sizes.get(it.path, TASK_BYTES)
        if task and (len(task) >= per or load + size > TASK_BYTES):
            tasks.append(task)
            task, load = [], 0
        task.append(it)
        load += size
    if task:
        tasks.append(task)
    return tasks


def _map_local(items: list[SourceItem], objects_root: str, known: LedgerIndex, workers: int,
               cache: PathCache | None = None, sizes: frozenset[int] | None = None) -> Iterator[SourceOutcome]:
    """Outcomes in the order of ``items``: decided here where possible (:func:`_decide`), the rest parsed.

    With one worker each file is decided and, if needed, parsed in turn in this
    process (bytes read to decide are parsed as they are, not read again), the next
    large files decided and read by a thread meanwhile (:func:`_read_ahead`).  With
    ``workers`` = n > 1, every file is decided first and the files left are cut into
    tasks (:func:`pool_tasks`) that n processes parse: this one and a pool of at most
    n - 1, started only when there are two tasks or more (see :func:`_parse_tasks`);
    each pool worker gets the ledger index once.
    """
    ctx = _Triage(known, cache or {}, registry_fingerprint(), sizes)
    store = ObjectStore(Path(objects_root))
    if workers <= 1:

        def decide_or_read(it: SourceItem) -> SourceOutcome | _Read:
            got = _decide(it, ctx)
            if got is None:
                return _read_and_keep(it, store, known)
            if isinstance(got, _Read):
                got.keep(store)
            return got

        yield from _process_in_turn(items, store, known, read=decide_or_read)
        return
    pre, need = _triage_all(items, ctx)
    tasks = pool_tasks(need, ctx.file_sizes, workers)
    if len(tasks) <= 1:
        parsed = _process_in_turn(need, store, known)
        for o in pre:
            yield o if o is not None else next(parsed)
        return
    pool = worker_pool(min(workers - 1, len(tasks) - 1), known)
    ready = pool.submit(_worker_ready)
    fed: list[Future] = []
    try:
        outcomes = _parse_tasks(tasks, objects_root, known, pool, workers, ready, fed)
        for o in pre:
            yield o if o is not None else next(outcomes)
    finally:
        # A consumer that stops early (``stop``, an error) must not wait for the whole queue; a run
        # the pool got nothing of does not wait for it at all (its worker exits once it has started).
        pool.shutdown(wait=bool(fed), cancel_futures=True)


def _worker_ready() -> bool:
    """The first task a pool gets: done once a worker has started (imported matlake)."""
    return True


def _parse_tasks(tasks: list[list[SourceItem]], objects_root: str, known: LedgerIndex,
                 pool: ProcessPoolExecutor, workers: int, ready: Future,
                 fed: list[Future] | None = None) -> Iterator[SourceOutcome]:
    """The outcomes of ``tasks``, in order, parsed by ``pool`` and by this process.

    Tasks are handed out in order.  Until ``ready`` (a trivial first task) is done,
    the pool is still starting (~1 s of imports) and this process parses every task
    itself; and it goes on alone when the files left would take it (at the median
    time per file it has parsed so far) less than :data:`POOL_WORTH_SECONDS`, about
    what the worker's parsers take to import: so a short run never waits for the
    pool.  Otherwise the pool is kept fed (four tasks queued per worker, so that it does
    not starve while this process parses a task or commits a batch); whenever the
    next outcome due is still being parsed there, this process parses the next task
    not yet handed out instead of waiting idle.  (A task is never parsed twice: a
    second writer of an object could replace it after the commit's durability
    barrier.)  So n workers are n processes parsing, and only n - 1 of them pay the
    start-up and send their tables through a pipe.  At most :data:`TASKS_AHEAD` tasks
    are handed out beyond the one due, which bounds the outcomes held here.  The
    futures of the tasks handed to the pool are appended to ``fed``.
    """
    fed = [] if fed is None else fed
    queued = 4 * max(1, workers - 1)
    slots: dict[int, Any] = {}  # task index -> its pool future, or its outcomes parsed here
    handed = 0
    seconds: collections.deque[float] = collections.deque(maxlen=64)  # the last files parsed here
    files_from = [0] * (len(tasks) + 1)  # files in tasks[i:], so files_from[handed] are not handed out
    for i in range(len(tasks) - 1, -1, -1):
        files_from[i] = files_from[i + 1] + len(tasks[i])

    store = ObjectStore(Path(objects_root))

    def parse_here() -> None:
        nonlocal handed
        slots[handed] = list(_process_in_turn(tasks[handed], store, known, seconds))
        handed += 1

    def worth_feeding() -> bool:
        # The pool's worker has yet to import its parsers (~1 s, like this process's first file):
        # a run whose files left take this process less than that is finished here alone.
        if fed or not ready.done():
            return bool(fed)
        return bool(seconds) and files_from[handed] * statistics.median(seconds) > POOL_WORTH_SECONDS

    for head in range(len(tasks)):
        while True:
            if worth_feeding():
                running = sum(1 for slot in slots.values() if isinstance(slot, Future) and not slot.done())
                while handed < len(tasks) and running < queued:
                    slots[handed] = pool.submit(process_sources, tasks[handed], objects_root)
                    fed.append(slots[handed])
                    handed, running = handed + 1, running + 1
            if head == handed:  # not handed out yet (the pool is starting, or not worth it): parse it here
                parse_here()
                break
            slot = slots[head]
            if not isinstance(slot, Future) or slot.done():
                break
            if handed >= len(tasks) or handed - head > TASKS_AHEAD:
                break  # wait for it
            parse_here()  # the one due is still in the pool: parse the next one meanwhile
        slot = slots.pop(head)  # dropped once its outcomes are taken
        yield from (slot.result().outcomes if isinstance(slot, Future) else slot)


def _map_dask(items: list[SourceItem], objects_root: str, known: LedgerIndex, address: str,
              cache: PathCache | None = None, sizes: frozenset[int] | None = None) -> Iterator[SourceOutcome]:
    pre, need = _triage_all(items, _Triage(known, cache or {}, registry_fingerprint(), sizes))
    yield from (o for o in pre if o is not None)
    if not need:
        return  # no cluster needed
    from distributed import Client, as_completed

    with Client(address) as client:
        # Scatter the ledger index as one object: scatter() splits a bare collection into
        # one future per element (and fails outright on an empty one).
        [known_f] = client.scatter([known], broadcast=True, hash=False)
        # Durable on the worker: its page cache may be on another machine than the parent's barrier.
        futures = client.map(process_source_durable, need, objects_root=objects_root, known=known_f, pure=False)
        try:
            for f in as_completed(futures):
                yield f.result()
        finally:
            client.cancel(futures)  # no-op for finished ones; frees the cluster on an early stop


# --------------------------------------------------------------------------- orchestration


def _ledger_index(lake: "Lake") -> dict[tuple[str, str, str, str], str]:
    """Every ledger row's key (sha256, parser, parser_version, attempt_key) -> its status."""
    le = cat.LedgerEntry
    with lake.engine.connect() as conn:
        rows = conn.execute(select(le.sha256, le.parser, le.parser_version, le.attempt_key, le.status))
        return {(a, b, c, d): st for a, b, c, d, st in rows}


def _ledger_sizes(lake: "Lake") -> frozenset[int]:
    """The distinct sizes of the hashed sources in the ledger: a file of any other size cannot be
    unchanged, so the parent reads only files of these sizes to decide them (see :func:`_decide`)."""
    le = cat.LedgerEntry
    with lake.engine.connect() as conn:
        return frozenset(conn.execute(select(le.size).where(le.sha256 != "").distinct()).scalars())


PATH_QUERY_CHUNK = 500  # paths per IN (...) lookup


def path_cache(lake: "Lake", paths: Sequence[str]) -> dict[str, CachedPath]:
    """The cache entry of each of ``paths`` that has one (see :class:`FileStamp`, :class:`CachedPath`)."""
    ps = cat.PathStamp
    out: dict[str, CachedPath] = {}
    unique = sorted(set(paths))
    cols = (ps.path, ps.device, ps.inode, ps.size, ps.mtime_ns, ps.ctime_ns, ps.sha256, ps.kind, ps.parser,
            ps.parser_version, ps.parser_registry)
    with lake.engine.connect() as conn:
        for i in range(0, len(unique), PATH_QUERY_CHUNK):
            rows = conn.execute(select(*cols).where(ps.path.in_(unique[i:i + PATH_QUERY_CHUNK])))
            for path, dev, ino, size, mtime, ctime, sha, kind, parser, version, registry in rows:
                out[path] = CachedPath(FileStamp(dev, ino, size, mtime, ctime), sha, kind, parser, version, registry)
    return out


_PATH_STAMP_COLUMNS = ("path", "device", "inode", "size", "mtime_ns", "ctime_ns", "sha256", "kind", "parser",
                       "parser_version", "parser_registry", "hashed_at")


def remember_paths(lake: "Lake", entries: Mapping[str, CachedPath]) -> None:
    """Record (or replace) the cache entry of each path, in one catalog transaction.

    A cache only: a crash loses nothing but a re-hash next time.  A batch's
    entries are written by its commit's own transaction (:func:`_commit_batch`);
    this writes those of a run that committed nothing (a no-op re-ingest).
    """
    if not entries:
        return

    def txn() -> None:
        with lake.engine.connect().execution_options(write=True) as conn, conn.begin():
            _upsert_paths(conn, entries)

    cat.retrying(txn)


def _upsert_paths(conn: Any, entries: Mapping[str, CachedPath]) -> None:
    """Upsert the path cache rows of ``entries`` on ``conn`` (inside the caller's transaction).

    One ``INSERT ... ON CONFLICT (path) DO UPDATE`` through the driver's ``executemany``
    (SQLite and PostgreSQL share the syntax): a cold re-ingest writes one row per file, and
    binding each row through SQLAlchemy's statement layer cost more than the rest of deciding
    the file.  Sorted by path: concurrent upserts lock rows in one order.
    """
    if not entries:
        return
    dialect = conn.dialect
    ps = cat.PathStamp.__table__
    hashed_at: Any = cat.utcnow()
    to_db = ps.c.hashed_at.type.bind_processor(dialect)  # what SQLAlchemy would bind (SQLite: text)
    if to_db is not None:
        hashed_at = to_db(hashed_at)
    rows = [(p, c.stamp.device, c.stamp.inode, c.stamp.size, c.stamp.mtime_ns, c.stamp.ctime_ns, c.sha256, c.kind,
             c.parser, c.parser_version, c.registry, hashed_at) for p, c in sorted(entries.items())]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    cols = _PATH_STAMP_COLUMNS
    sql = (f"INSERT INTO {ps.name} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))}) "
           f"ON CONFLICT (path) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols[1:])}")
    conn.exec_driver_sql(sql, rows)


def _seen_parsers(known: LedgerIndex) -> set[tuple[str, str]]:
    """(sha256, parser) of every ledger key: a source with one is versioned, not new."""
    return {(s, p) for (s, p, _v, _k) in known}


def _key(o: SourceOutcome) -> tuple[str, str, str, str]:
    return (o.sha256, o.parser, o.parser_version, o.attempt_key)


def _commit_batch(lake: "Lake", batch: list[SourceOutcome], known: LedgerIndex, message: str,
                  how: dict[str, tuple[str, dict[str, Any]]] | None = None,
                  seen_parsers: "set[tuple[str, str]] | None" = None,
                  paths: Mapping[str, CachedPath] | None = None) -> int | None:
    """One commit for a batch of attempted sources: an activity and a ledger row each.

    ``how`` maps a source path to the (kind, options) it was ingested with,
    kept in the activity so a retry can reuse them.  A source not read (no
    bytes) still gets both, with an empty sha256 and no *used* object.
    ``seen_parsers``: the (sha256, parser) pairs of ``known``, when the caller
    keeps them (else computed here: a pass over the whole ledger per batch).
    ``paths``: path cache entries to upsert in the commit's own transaction
    (one catalog commit, so one fsync of the catalog, per batch instead of two).
    """
    from matlake.platform.lake import ChangeSet

    if seen_parsers is None:
        seen_parsers = _seen_parsers(known)
    cs = ChangeSet("ingest", message)
    # The workers wrote the objects without fsync: the commit makes every object this batch
    # refers to durable, in the same barrier as its Parquet files, before the catalog refers to them.
    objects = [lake.objects.path(s) for s in sorted(
        {o.sha256 for o in batch if o.sha256} | {osha for o in batch for osha, _n in o.objects})]
    cs.make_durable_at_commit(objects)
    settle_background(objects)  # arrays written behind by this process are there (read below for their type)
    if paths:
        entries = dict(paths)
        cs.in_transaction.append(lambda conn: _upsert_paths(conn, entries))
    for o in batch:
        kind, options = (how or {}).get(o.path, ("auto", {}))
        act = cs.activity("ingest", o.parser, o.parser_version,
                          parameters={"source_path": o.path, "kind": kind, "options": options,
                                      "warnings": o.warnings[:20]},
                          started_at=o.started_at, status=o.status, error=o.message)
        act.ended_at = o.ended_at
        if o.sha256:
            act.used("object", o.sha256)
            cs.add_object(o.sha256, o.size, original_name=Path(o.path).name)
        for ofile in (options.get("option_files") or {}).values():  # a table's map: an input too
            act.used("object", ofile["sha256"])
            cs.add_object(ofile["sha256"], ofile["size"], media_type="application/toml",
                          original_name=Path(ofile["path"]).name)
        if o.status == "ok":
            for table, rid, ver in options.get("_used") or ():
                act.used("record", str(rid), version=None if ver is None else int(ver), table=str(table))
        for osha, size in o.objects:
            cs.add_object(osha, size, media_type=_array_media_type(lake.objects, osha))
            act.generated("object", osha)
        version = 1 if (o.sha256, o.parser) not in seen_parsers else None
        for tname, table in o.tables.items():
            cs.add_rows(tname, table, act, version=version, source=o.path)
        cs.add_ledger(source_path=o.path, sha256=o.sha256, size=o.size, parser=o.parser,
                      parser_version=o.parser_version, status=o.status, message=o.message,
                      record_ids=o.record_ids, activity=act, attempt_key=o.attempt_key, detail=o.detail)
    return lake.commit(cs)


def _put_chunked(store: ObjectStore, array: Any, chunks: Any, codec: str, sync: bool) -> tuple[str, int, str]:
    """Write ``array`` as a chunked object into ``store``: (sha256, size, index sha256);
    ``sync=False``: not fsynced (see :meth:`ObjectStore.put_written`)."""
    from matlake.arrays import write_chunked

    infos = []
    sha, size = store.put_written(lambda fh: infos.append(write_chunked(fh, array, chunks, codec)), sync=sync)
    return sha, size, infos[0].index_sha256


def _array_media_type(store: ObjectStore, sha: str) -> str:
    """Media type of an array object a parser kept, by its magic: chunked, or the exact .npy (.npz
    from earlier versions)."""
    from matlake.arrays import MEDIA_TYPE, is_chunked

    try:
        with open(store.path(sha), "rb") as fh:
            head = fh.read(8)
    except OSError:
        head = b""
    if is_chunked(head):
        return MEDIA_TYPE
    return "application/x-npy" if head.startswith(b"\x93NUMPY") else "application/x-npz"


def resolve_options(lake: "Lake", items: list[SourceItem]) -> list[SourceItem]:
    """``items`` with the options of each kind in :data:`OPTION_RESOLVERS` completed from the lake."""
    import importlib
    from dataclasses import replace

    out = list(items)
    for kind, target in OPTION_RESOLVERS.items():
        at = [i for i, it in enumerate(out) if it.kind == kind]
        if not at:
            continue
        module, _, name = target.partition(":")
        resolved = getattr(importlib.import_module(module), name)(lake, [out[i] for i in at])
        for i, options in zip(at, resolved):
            out[i] = replace(out[i], options=dict(options))
    return out


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

    An unknown ``kind`` (or an item's), a bad ``$MATLAKE_MAX_SOURCE_BYTES`` or
    ``$MATLAKE_DURABILITY`` raise ``ValueError`` before any file is read.  ``stop``
    is polled before each parsed file is taken: once it returns True no further
    file is taken, the files taken so far are committed, and the rest are left
    for a later run.
    """
    check_kind(kind)
    max_source_bytes()
    durability_mode()  # a bad $MATLAKE_DURABILITY is refused before any work, not at the first commit
    if items is None:
        files = expand_paths(paths or [])
        real_dirs: dict[str, str] = {}
        items = [SourceItem(_source_path(p, real_dirs), kind, dict(options or {})) for p in files]
    items = list(items)
    for k in sorted({it.kind for it in items}):
        check_kind(k)
    items = resolve_options(lake, items)
    how = {it.path: (it.kind, dict(it.options)) for it in items}
    report = IngestReport()
    known = _ledger_index(lake)
    sizes = _ledger_sizes(lake)
    cache = path_cache(lake, [it.path for it in items if not it.object_sha])
    fresh: dict[str, CachedPath] = {}  # hashed or detected now, not yet (or differently) in the cache
    registry = registry_fingerprint()
    show = sys.stderr.isatty() if progress is None else progress
    stream: Iterable[SourceOutcome]
    if dask:
        stream = _map_dask(items, str(lake.objects.root), known, dask, cache, sizes)
    else:
        stream = _map_local(items, str(lake.objects.root), known, workers, cache, sizes)
    if show:
        from tqdm import tqdm

        stream = tqdm(stream, total=len(items), desc="ingest", unit="file", file=sys.stderr)
    pending: list[SourceOutcome] = []
    batch_keys: dict[tuple[str, str, str, str], str] = {}

    seen_parsers = _seen_parsers(known)  # kept up to date below, not rebuilt from the ledger per batch

    def flush() -> None:
        nonlocal known, seen_parsers
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        batch_keys.clear()
        # Until committed: a bounded retry count here used to drop, uncommitted but reported
        # as new, the sources of a batch that lost the race three times (8-process stress test).
        while batch:
            try:
                sid = _commit_batch(lake, batch, known, f"ingest {len(batch)} files", how, seen_parsers, fresh)
                fresh.clear()  # written by the commit's transaction
                if sid is not None:
                    report.snapshots.append(sid)
                known = {**known, **{_key(o): o.status for o in batch}}
                seen_parsers |= {(o.sha256, o.parser) for o in batch}
                break
            except Exception as exc:
                from matlake.platform.lake import DuplicateSource

                if not isinstance(exc, DuplicateSource):
                    raise
                # Another process committed some of these sources first: drop them and retry.
                known = _ledger_index(lake)
                seen_parsers = _seen_parsers(known)
                kept = [o for o in batch if _committed(o, known) is None]
                if len(kept) == len(batch):
                    raise  # not another process's commit: retrying could loop forever
                for o in batch:
                    prior = _committed(o, known)
                    if prior is not None:
                        _count(o, "unchanged", prior)
                batch = kept
        for o in batch:
            _count(o, o.status)
        remember()

    def remember() -> None:
        remember_paths(lake, fresh)
        fresh.clear()

    def _count(o: SourceOutcome, status: str, prior: str = "") -> None:
        if status == "unchanged":
            o.status = "unchanged"
            o.prior = prior or o.prior
            report.unchanged += 1
        elif status == "ok":
            report.new += 1
            report.records += len(o.record_ids)
        elif status == "error":
            report.errors += 1
        else:
            report.failed += 1
        o.tables = {}  # rows are in the lake now; do not keep them in memory
        report.outcomes.append(o)
        if on_outcome:
            on_outcome(o)

    for o in stream:
        if stop is not None and stop():
            break
        if o.stamp is not None and o.sha256:
            entry = CachedPath(o.stamp, o.sha256, how[o.path][0], o.parser, o.parser_version, registry)
            if cache.get(o.path) != entry:
                fresh[o.path] = entry
        if not o.sha256 and o.prior:  # not read, as when last recorded: report it, record nothing new
            _count(o, "failed")
            continue
        prior = _committed(o, known) if o.status != "unchanged" else None
        if o.status == "unchanged" or prior is not None:
            _count(o, "unchanged", prior or "")
            continue
        if _key(o) in batch_keys:  # the same bytes (or unread file) twice in one batch
            _count(o, "unchanged", batch_keys[_key(o)])
            continue
        batch_keys[_key(o)] = o.status
        pending.append(o)
        if len(pending) >= batch_size:
            flush()
    flush()
    remember()  # also the paths of a run that found everything unchanged
    return report


def _committed(o: SourceOutcome, known: LedgerIndex) -> str | None:
    """The status of the ledger row that already covers this outcome (its success or this attempt), if any."""
    if not o.sha256:
        return known.get(_key(o))
    done = known.get((o.sha256, o.parser, o.parser_version, o.ok_key))
    return done if done is not None else known.get(_key(o))


def ingest_frame(lake: "Lake", frame: Any, table_map: Mapping[str, Any] | str | os.PathLike, *,
                 name: str | None = None, on_bad_cell: str = "fail") -> IngestReport:
    """Ingest a pandas DataFrame through a table map (kind ``table``, :mod:`matlake.ingest.tables`).

    Nothing enters the lake without raw bytes: the frame is written as CSV (header
    row from its column names, no index, NaN/None as empty cells, floats as their
    shortest round-trip text) and those bytes are ingested like a file, by the same
    parser, with ``file_format`` 'frame'.  ``table_map`` is the parsed map (a dict) or
    the path of its TOML file; its ``header``, ``delimiter``, ``columns`` and
    ``comment`` keys describe a file and are replaced (the frame's columns are the
    names), and the empty cell is added to its missing tokens.  ``name`` is the
    source file name recorded (default ``<dataset>.csv``).  Returns the ingest
    report; a frame with bad cells is a failed file as from the command line.
    """
    import tempfile

    options: dict[str, Any] = {"map": table_map}
    options, blobs = resolve_file_options("table", options)
    for sha, data in blobs.items():
        lake.objects.put(data, sha)
    doc = dict(options["map"])
    for key in ("columns", "comment"):
        doc.pop(key, None)
    doc["header"], doc["delimiter"] = True, ","
    missing = list(doc.get("missing", ["", "NA", "N/A", "nan", "NaN"]))
    doc["missing"] = missing if "" in missing else missing + [""]
    options.update(map=doc, file_format="frame", on_bad_cell=on_bad_cell)
    text = frame.to_csv(index=False, lineterminator="\n", na_rep="")
    stem = name or f"{doc.get('dataset') or 'frame'}.csv"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(stem).name
        path.write_text(text, encoding="utf-8")
        return ingest(lake, [path], kind="table", options=options, progress=False)
