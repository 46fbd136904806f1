"""Scheduled ingestion jobs: the job file, leases, runs, and the scheduler.

A job file (``jobs.toml`` in the lake directory, or ``--jobs FILE``) declares
jobs as ``[[job]]`` tables::

    [[job]]
    name = "eis-lab1"                 # letters, digits, '.', '_', '-'
    sources = ["raw/eis/**/*.z", "/mnt/potentiostat/*.mpt"]
    kind = "eis"                      # default "auto" (detect per file)
    options = { }                     # parser options
    schedule = "*/5 * * * *"          # cron: 5 fields, or 6 with seconds FIRST
    retries = 2                       # transient failures (read errors, catalog locks)
    workers = 1                       # parser processes
    dask = "tcp://scheduler:8786"     # optional: parse on a Dask cluster instead
    settle_seconds = 2                # files modified more recently wait for the next run
    lease_ttl = 60                    # seconds before a dead runner's lease expires
    batch_size = 64                   # files per commit
    timezone = "Europe/Berlin"        # optional, for the schedule (default: local time)
    compact = "auto"                  # optional: after a run that committed, `matlake compact --auto`

Relative ``sources`` are resolved against the directory that *contains* the
lake directory (``/data/lake`` -> ``/data``), never the current directory, so
a job behaves the same from a shell and under systemd.  ``**`` matches any
depth; a glob that names a folder takes every non-hidden file below it.  Cron
day-of-week numbers follow standard cron (0 or 7 = Sunday).

A run (``run_job``) holds the lease ``job:NAME`` while it works, so two runs
of one job never overlap, whatever process or host starts them.  It is
incremental through the ingest ledger: files whose bytes were already ingested
by the same parser version count as ``unchanged``.  Each run is recorded in
``job_runs``; a run that ingested something is also committed as an activity
of kind ``job`` whose parameters hold the counts and which *generated* the
snapshots of its ingest batches.  A run with nothing new commits nothing.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matlake.lazy_imports import lazy_function, lazy_module

# Imported at first use: every matlake command imports this module to register `jobs`.
cat = lazy_module("matlake.platform.catalog")
delete = lazy_function("sqlalchemy", "delete")
insert = lazy_function("sqlalchemy", "insert")
or_ = lazy_function("sqlalchemy", "or_")
select = lazy_function("sqlalchemy", "select")
update = lazy_function("sqlalchemy", "update")

if TYPE_CHECKING:
    import argparse

    from sqlalchemy import Engine

    from matlake.platform.ingestion import SourceOutcome
    from matlake.platform.lake import Lake

JOB_FILE = "jobs.toml"
DEFAULT_LEASE_TTL = 60.0
DEFAULT_SETTLE = 2.0
EXIT_LEASE_HELD = 75  # EX_TEMPFAIL: another run holds the job; try again later
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class JobFileError(ValueError):
    """The job file is missing or invalid; the message names file, job, field, expected, found."""


class LeaseHeld(RuntimeError):
    """Another process holds the lease (another run of the same job is in progress)."""

    def __init__(self, name: str, holder: str, expires_at: datetime | None) -> None:
        self.name, self.holder, self.expires_at = name, holder, expires_at
        until = f", lease expires {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
        super().__init__(f"{name} is held by {holder}{until}")


# --------------------------------------------------------------------------- the job file


@dataclass(frozen=True)
class Job:
    """One declared ingestion job (see the module docstring for the fields)."""

    name: str
    sources: tuple[str, ...]
    base_dir: Path
    kind: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    retries: int = 2
    workers: int = 1
    dask: str | None = None
    settle_seconds: float = DEFAULT_SETTLE
    lease_ttl: float = DEFAULT_LEASE_TTL
    batch_size: int = 64
    timezone: str | None = None
    compact: bool = False

    @property
    def lease_name(self) -> str:
        return f"job:{self.name}"

    def patterns(self) -> list[str]:
        """Source globs as absolute patterns."""
        out = []
        for s in self.sources:
            s = os.path.expanduser(s)
            out.append(s if os.path.isabs(s) else str(self.base_dir / s))
        return out


_FIELDS = {"name", "sources", "kind", "options", "schedule", "retries", "workers", "dask", "settle_seconds",
           "lease_ttl", "batch_size", "timezone", "compact"}


def job_file_path(lake: "Lake", jobs: str | os.PathLike | None = None) -> Path:
    """``jobs`` if given, else ``jobs.toml`` in the lake directory."""
    return Path(jobs).resolve() if jobs else lake.root / JOB_FILE


def load_jobs(path: str | os.PathLike, base_dir: str | os.PathLike) -> dict[str, Job]:
    """Read and validate a job file; relative sources resolve against ``base_dir``."""
    path = Path(path)
    if not path.is_file():
        raise JobFileError(f"{path}: no job file (write [[job]] entries to {JOB_FILE} in the lake directory "
                           "or pass --jobs FILE)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobFileError(f"{path}: expected TOML, found a syntax error ({exc})") from exc
    return parse_jobs(data, str(path), Path(base_dir))


def parse_jobs(data: dict[str, Any], file: str, base_dir: Path) -> dict[str, Job]:
    """Validate the parsed TOML of a job file."""
    extra = set(data) - {"job"}
    if extra:
        raise JobFileError(f"{file}: top level: expected only [[job]] tables, found keys {sorted(extra)}")
    entries = data.get("job", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise JobFileError(f"{file}: field job: expected [[job]] tables (an array of tables), "
                           f"found {type(entries).__name__}")
    jobs: dict[str, Job] = {}
    for i, entry in enumerate(entries):
        job = _parse_job(entry, file, i, base_dir)
        if job.name in jobs:
            raise JobFileError(f"{file}: job #{i + 1}: field name: expected a unique name, found {job.name!r} twice")
        jobs[job.name] = job
    return jobs


def _parse_job(entry: dict[str, Any], file: str, index: int, base_dir: Path) -> Job:
    label = f"job #{index + 1}"

    def bad(fld: str, expected: str, found: Any) -> JobFileError:
        return JobFileError(f"{file}: {label}: field {fld}: expected {expected}, found {found!r}")

    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad("name", "a name of letters, digits, '.', '_' or '-' (at most 100 characters)", name)
    label = f"job {name!r}"
    unknown = set(entry) - _FIELDS
    if unknown:
        raise JobFileError(f"{file}: {label}: unknown field(s) {sorted(unknown)}; expected some of {sorted(_FIELDS)}")
    sources = entry.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s.strip() for s in sources):
        raise bad("sources", "a non-empty list of glob strings", sources)

    def integer(fld: str, default: int, minimum: int) -> int:
        v = entry.get(fld, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise bad(fld, f"an integer >= {minimum}", v)
        return v

    def number(fld: str, default: float, minimum: float, strict: bool = False) -> float:
        v = entry.get(fld, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum or (strict and v == minimum):
            raise bad(fld, f"a number of seconds {'>' if strict else '>='} {minimum:g}", v)
        return float(v)

    kind = entry.get("kind", "auto")
    if not isinstance(kind, str):
        raise bad("kind", "a string", kind)
    if kind != "auto":
        from matlake.ingest import kinds

        if kind not in kinds():
            raise bad("kind", f"'auto' or one of {kinds()}", kind)
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise bad("options", "a table of parser options", options)
    if kind != "auto":  # a file option (a table's map) given relative to the job file, like sources
        from matlake.ingest import all_parsers

        for opt in {n for p in all_parsers() if p.kind == kind for n in p.file_options}:
            if isinstance(options.get(opt), str) and not Path(options[opt]).expanduser().is_absolute():
                options = {**options, opt: str(base_dir / options[opt])}
    tz = entry.get("timezone")
    if tz is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            if not isinstance(tz, str):
                raise ValueError
            ZoneInfo(tz)
        except (ValueError, ZoneInfoNotFoundError):
            raise bad("timezone", "an IANA time zone name such as 'Europe/Berlin'", tz) from None
    schedule = entry.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, str):
            raise bad("schedule", "a cron string", schedule)
        try:
            cron_trigger(schedule, tz)
        except ValueError as exc:
            raise JobFileError(f"{file}: {label}: field schedule: {exc}") from None
    compact = entry.get("compact", False)
    if compact not in (False, "auto"):
        raise bad("compact", "'auto' (or false)", compact)
    dask = entry.get("dask")
    if dask is not None and (not isinstance(dask, str) or not dask.strip()):
        raise bad("dask", "a Dask scheduler address such as 'tcp://host:8786'", dask)
    return Job(
        name=name, sources=tuple(sources), base_dir=base_dir, kind=kind, options=dict(options), schedule=schedule,
        retries=integer("retries", 2, 0), workers=integer("workers", 1, 1), dask=dask,
        settle_seconds=number("settle_seconds", DEFAULT_SETTLE, 0.0),
        lease_ttl=number("lease_ttl", DEFAULT_LEASE_TTL, 0.0, strict=True),
        batch_size=integer("batch_size", 64, 1), timezone=tz, compact=compact == "auto",
    )


_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_dow(field_: str) -> str:
    """Standard-cron day-of-week (0/7 = Sunday) in APScheduler 3 terms (which counts 0 = Monday)."""
    parts = []
    for part in field_.split(","):
        base, _, step = part.partition("/")
        if base == "*" and not step:
            return "*"
        if not re.fullmatch(r"\*|\d+(-\d+)?", base):
            parts.append(part)  # names (mon-fri) already mean what they say
            continue
        if step and not step.isdigit():
            raise ValueError(f"expected a day-of-week step number, found {step!r}")
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            lo, hi = (int(x) for x in base.split("-"))
        else:
            lo = hi = int(base)
            if step:
                hi = 6  # "n/s" means n, n+s, ... up to Saturday
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi):
            raise ValueError(f"expected day-of-week numbers 0-7 (0 and 7 = Sunday), found {part!r}")
        days = range(lo, hi + 1, int(step) if step else 1)
        parts.extend(_DOW_NAMES[d % 7] for d in days)
    return ",".join(dict.fromkeys(parts))


def cron_trigger(expr: str, tz: str | None = None):
    """An APScheduler ``CronTrigger`` from a cron string.

    Five fields: ``minute hour day month day-of-week`` (standard cron).  Six
    fields: ``second minute hour day month day-of-week`` (seconds first).
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 cron fields (minute hour day month day-of-week) or 6 with seconds first, "
                         f"found {len(fields)} in {expr!r}")
    if len(fields) == 5:
        fields = ["0"] + fields
    second, minute, hour, day, month, dow = fields
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_cron_dow(dow), timezone=tz)
    except ValueError as exc:
        raise ValueError(f"expected a valid cron expression, found {expr!r} ({exc})") from None


# --------------------------------------------------------------------------- leases


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """A named lease in the catalog's ``leases`` table.

    ``try_acquire`` inserts the row, or takes it over when it has expired, in
    one transaction; ``renew`` pushes the expiry ``ttl`` seconds ahead and
    fails when someone else took the lease over; ``release`` deletes it.  As a
    context manager it acquires (raising :class:`LeaseHeld`), renews from a
    heartbeat thread every ``ttl / 3`` seconds, and releases on exit.
    """

    def __init__(self, engine: Engine, name: str, ttl: float = DEFAULT_LEASE_TTL, holder: str | None = None) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl: expected a positive number of seconds, found {ttl!r}")
        self.engine, self.name, self.ttl = engine, name, float(ttl)
        self.holder = holder or default_holder()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        def txn() -> Any:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                return fn(conn)

        return cat.retrying(txn)

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired, or already ours."""
        L = cat.Lease

        def fn(conn) -> bool:
            now = cat.utcnow()
            values = {"holder": self.holder, "acquired_at": now, "expires_at": now + timedelta(seconds=self.ttl),
                      "heartbeat": now}
            from sqlalchemy.exc import IntegrityError

            try:
                with conn.begin_nested():
                    conn.execute(insert(L).values(name=self.name, **values))
                return True
            except IntegrityError:
                pass  # the row exists: take it only if it expired (or is ours)
            res = conn.execute(update(L).where(L.name == self.name, or_(L.expires_at < now, L.holder == self.holder))
                               .values(**values))
            return res.rowcount == 1

        ok = bool(self._write(fn))
        if ok:
            self.lost.clear()
        return ok

    def acquire(self, wait: bool = False, timeout: float | None = None, stop: threading.Event | None = None,
                poll: float | None = None) -> None:
        """Acquire or raise :class:`LeaseHeld`; with ``wait``, poll until free (or ``timeout`` s, or ``stop``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = poll if poll is not None else min(1.0, max(0.05, self.ttl / 10))
        while True:
            if self.try_acquire():
                return
            if not wait or (deadline is not None and time.monotonic() >= deadline) or (stop and stop.is_set()):
                info = self.current() or {}
                raise LeaseHeld(self.name, info.get("holder", "another process"), info.get("expires_at"))
            if stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)

    def renew(self) -> bool:
        """Extend the lease; False (and ``lost`` set) when another holder has it now."""
        L = cat.Lease

        def fn(conn) -> int:
            now = cat.utcnow()
            return conn.execute(update(L).where(L.name == self.name, L.holder == self.holder)
                                .values(expires_at=now + timedelta(seconds=self.ttl), heartbeat=now)).rowcount

        ok = self._write(fn) == 1
        if not ok:
            self.lost.set()
        return ok

    def release(self) -> None:
        L = cat.Lease
        self._write(lambda conn: conn.execute(delete(L).where(L.name == self.name, L.holder == self.holder)))

    def current(self) -> dict[str, Any] | None:
        """The lease row (holder, acquired_at, expires_at, heartbeat) or None."""
        L = cat.Lease
        with self.engine.connect() as conn:
            row = conn.execute(select(L.name, L.holder, L.acquired_at, L.expires_at, L.heartbeat)
                               .where(L.name == self.name)).mappings().first()
        if row is None:
            return None
        return {k: _aware(v) if isinstance(v, datetime) else v for k, v in row.items()}

    def start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        interval = self.ttl / 3
        last_ok = time.monotonic()
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return  # taken over: the run sees ``lost`` and stops
                last_ok = time.monotonic()
            except Exception:  # noqa: BLE001 - catalog unreachable: keep trying until the lease would lapse
                if time.monotonic() - last_ok >= self.ttl:
                    self.lost.set()
                    return

    def __enter__(self) -> "Lease":
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_heartbeat()
        self.release()


# --------------------------------------------------------------------------- sources


def source_files(job: Job) -> list[Path]:
    """Files matched by the job's globs: sorted, unique, hidden files skipped."""
    from matlake.platform.ingestion import expand_paths

    seen: dict[str, Path] = {}
    for pattern in job.patterns():
        for match in sorted(glob.glob(pattern, recursive=True)):
            p = Path(match)
            try:
                found = expand_paths([p]) if p.is_dir() else [p] if p.is_file() else []
            except FileNotFoundError:  # vanished between glob and stat
                continue
            for f in found:
                seen.setdefault(str(f.resolve()), f.resolve())
    return [seen[k] for k in sorted(seen)]


def settle(files: list[Path], settle_seconds: float, now: float | None = None) -> tuple[list[Path], list[Path]]:
    """Split files into (ready, deferred).

    A file is deferred when it was modified within ``settle_seconds`` of now
    (mtime in the future counts as recent) or when its size or mtime changed
    between two stats; it is picked up by a later run.  Files that vanished
    are dropped.
    """
    now = time.time() if now is None else now
    first: dict[Path, tuple[int, int]] = {}
    deferred: list[Path] = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        if now - st.st_mtime < settle_seconds:
            deferred.append(f)
        else:
            first[f] = (st.st_size, st.st_mtime_ns)
    ready: list[Path] = []
    for f, sig in first.items():
        try:
            st = os.stat(f)
        except OSError:
            continue
        (ready if (st.st_size, st.st_mtime_ns) == sig else deferred).append(f)
    return ready, sorted(deferred)


@dataclass
class PlannedFile:
    path: str
    status: str  # new | unchanged | deferred | unreadable
    parser: str = ""
    parser_version: str = ""
    sha256: str = ""
    message: str = ""


def plan(lake: "Lake", job: Job) -> list[PlannedFile]:
    """What a run would do now, without writing anything (``jobs run --dry-run``).

    Each settled file is read, hashed and its parser detected exactly as
    ``ingest`` does; it is ``new`` unless the ledger holds a success for its
    (sha256, parser, parser version) or a failure tried with the job's kind
    and options.  A file whose stat stamp matches the path cache (see
    ``ingestion.FileStamp``) is not read whole: its cached sha256 and parser
    (or its first 8 KiB) decide, as they do in ``ingest``.
    """
    import hashlib

    from matlake.ingest import detect
    from matlake.platform.ingestion import (HEAD_BYTES, UNKNOWN_PARSER, SourceItem, _ledger_index, attempt_key,
                                            decompress, path_cache, registry_fingerprint, resolve_file_options,
                                            success_key, triage)

    known = _ledger_index(lake)
    options = resolve_file_options(job.kind, job.options)[0]  # a table's map read as ingest reads it
    tried = attempt_key(job.kind, options)
    ready, deferred = settle(source_files(job), job.settle_seconds)
    cache = path_cache(lake, [str(p) for p in ready])
    registry = registry_fingerprint()
    out = [PlannedFile(str(p), "deferred", message=f"modified within {job.settle_seconds:g} s") for p in deferred]
    for p in ready:
        quick = triage(SourceItem(str(p), job.kind, dict(options)), known, cache.get(str(p)), registry)
        if quick is not None:
            out.append(PlannedFile(str(p), "unchanged", quick.parser, quick.parser_version, quick.sha256))
            continue
        try:
            raw = p.read_bytes()
        except OSError as exc:
            out.append(PlannedFile(str(p), "unreadable", message=exc.strerror or str(exc)))
            continue
        sha = hashlib.sha256(raw).hexdigest()
        parser, version = UNKNOWN_PARSER, "0"
        try:
            found = detect(decompress(raw, p.name)[:HEAD_BYTES], p.name, job.kind)
            if found is not None:
                parser, version = found.name, found.version
        except Exception:  # noqa: BLE001 - a corrupt file (ParseError) or a detector bug: the run records it
            pass  # it is still new until the ledger records its failure
        # the rule ingest applies: unchanged after a success, or after this very attempt (same kind and options)
        seen = (sha, parser, version, success_key(parser, options)) in known or (sha, parser, version, tried) in known
        status = "unchanged" if seen else "new"
        out.append(PlannedFile(str(p), status, parser, version, sha))
    out.sort(key=lambda f: f.path)
    return out


# --------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    run_id: str
    job: str
    status: str  # ok | failed | interrupted | lease-lost
    new: int = 0
    unchanged: int = 0
    failed: int = 0
    deferred: int = 0
    records: int = 0
    snapshots: list[int] = field(default_factory=list)
    activity_id: str | None = None
    error: str = ""
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"job {self.job} run {self.run_id} {self.status}: {self.new} new, {self.unchanged} unchanged, "
                f"{self.failed} failed, {self.deferred} deferred files; {self.records} records"
                + (f"; error: {self.error}" if self.error else ""))


def _transient_read_error(o: "SourceOutcome") -> bool:
    # process_source reports an unreadable file with no hash; it is not in the ledger.
    return o.status == "failed" and not o.sha256


def run_job(
    lake: "Lake",
    job: Job,
    *,
    wait: bool = False,
    wait_timeout: float | None = None,
    trigger: str = "manual",
    stop: threading.Event | None = None,
    holder: str | None = None,
    backoff: float = 0.5,
) -> RunResult:
    """Run ``job`` once under its lease; raises :class:`LeaseHeld` when another run holds it.

    ``stop`` (e.g. set by SIGTERM) ends the run early but cleanly: files
    parsed so far are committed, the rest are counted as deferred.  Transient
    failures (unreadable files, catalog lock/serialization errors) are retried
    ``job.retries`` times with exponential back-off starting at ``backoff`` s.
    """
    stop = stop or threading.Event()
    lease = Lease(lake.engine, job.lease_name, ttl=job.lease_ttl, holder=holder)
    lease.acquire(wait=wait, timeout=wait_timeout, stop=stop)
    lease.start_heartbeat()
    try:
        return _run_locked(lake, job, lease, trigger, stop, backoff)
    finally:
        lease.stop_heartbeat()
        try:
            lease.release()
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass


def _run_locked(lake: "Lake", job: Job, lease: Lease, trigger: str, stop: threading.Event,
                backoff: float) -> RunResult:
    from matlake.platform.ingestion import SourceItem, ingest
    from matlake.platform.lake import new_id

    R = cat.JobRun
    run_id = new_id("run")
    started = cat.utcnow()

    def write(fn: Callable[[Any], Any]) -> Any:
        def txn() -> Any:
            with lake.engine.connect().execution_options(write=True) as conn, conn.begin():
                return fn(conn)

        return cat.retrying(txn)

    def begin(conn) -> None:
        # We hold the lease, so a run still marked running died without finishing.
        conn.execute(update(R).where(R.job_name == job.name, R.status == "running").values(
            status="abandoned", ended_at=started, error="the process ended before the run finished"))
        conn.execute(insert(R).values(run_id=run_id, job_name=job.name, holder=lease.holder, trigger=trigger,
                                      started_at=started, status="running", n_new=0, n_unchanged=0, n_failed=0,
                                      n_deferred=0, n_records=0, error=""))

    write(begin)
    result = RunResult(run_id, job.name, "ok")
    done: dict[str, SourceOutcome] = {}
    deferred: list[Path] = []
    items: list[SourceItem] = []

    def halted() -> bool:
        return stop.is_set() or lease.lost.is_set()

    try:
        ready, deferred = settle(source_files(job), job.settle_seconds)
        items = [SourceItem(str(p), job.kind, dict(job.options)) for p in ready]
        delay = backoff
        for attempt in range(job.retries + 1):
            todo = [it for it in items if it.path not in done]
            if not todo or halted():
                break
            try:
                report = ingest(lake, items=todo, workers=job.workers, dask=job.dask, batch_size=job.batch_size,
                                progress=False, on_outcome=lambda o: done.__setitem__(o.path, o), stop=halted)
                result.snapshots.extend(report.snapshots)
            except Exception as exc:  # noqa: BLE001 - retried only when transient
                if not cat.is_transient(exc) or attempt == job.retries:
                    raise
            else:
                retry = [p for p, o in done.items() if _transient_read_error(o)]
                if not retry or attempt == job.retries:
                    break
                for p in retry:
                    del done[p]
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
        if lease.lost.is_set():
            result.status, result.error = "lease-lost", "another holder took over the lease; the run stopped"
        elif stop.is_set():
            result.status = "interrupted"
    except Exception as exc:  # noqa: BLE001 - recorded on the run and in its activity
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}".strip().splitlines()[0]

    for o in done.values():
        if o.status == "ok":
            result.new += 1
            result.records += len(o.record_ids)
        elif o.status == "unchanged":
            result.unchanged += 1
        else:
            result.failed += 1
            result.failures.append(o.message)
    # Left for a later run: not settled yet, or not reached before a stop.
    result.deferred = len(deferred) + sum(1 for it in items if it.path not in done)
    if job.compact and result.snapshots and result.status == "ok":
        from matlake.platform.operations import compact

        try:
            compact(lake, auto=True)  # under the job's lease; does nothing until the policy is met
        except Exception as exc:  # noqa: BLE001 - the ingest is committed; the run reports the compaction error
            result.error = f"compaction failed: {type(exc).__name__}: {exc}".strip().splitlines()[0]
    _finish(lake, job, result, started, trigger, write)
    return result


def _finish(lake: "Lake", job: Job, result: RunResult, started: datetime, trigger: str,
            write: Callable[[Callable[[Any], Any]], Any]) -> None:
    """Commit the run's activity, then close its ``job_runs`` row.

    A run that committed no ingest snapshot (every file unchanged or deferred,
    or a run that failed before writing) changed nothing in the lake: it
    commits no activity and so no snapshot; its ``job_runs`` row alone
    records it, with ``activity_id`` empty.
    """
    if result.snapshots:
        _commit_activity(lake, job, result, started, trigger)
    R = cat.JobRun
    write(lambda conn: conn.execute(update(R).where(R.run_id == result.run_id).values(
        activity_id=result.activity_id, ended_at=cat.utcnow(), status=result.status, n_new=result.new,
        n_unchanged=result.unchanged, n_failed=result.failed, n_deferred=result.deferred,
        n_records=result.records, error=result.error[:4000])))


def _commit_activity(lake: "Lake", job: Job, result: RunResult, started: datetime, trigger: str) -> None:
    """The run as a ``job`` activity that generated its ingest snapshots."""
    import matlake
    from matlake.platform.lake import ChangeSet

    cs = ChangeSet("job", f"job {job.name}: {result.new} new, {result.failed} failed")
    act = cs.activity("job", job.name, agent_version=matlake.__version__, started_at=started,
                      status="ok" if result.status == "ok" else "failed", error=result.error, parameters={
                          "run_id": result.run_id, "trigger": trigger, "run_status": result.status,
                          "new": result.new, "unchanged": result.unchanged, "failed": result.failed,
                          "deferred": result.deferred, "records": result.records, "sources": list(job.sources),
                          "kind": job.kind, "options": job.options, "workers": job.workers, "dask": job.dask,
                          "snapshots": result.snapshots})
    act.ended_at = cat.utcnow()
    for sid in result.snapshots:
        act.generated("snapshot", str(sid))
    try:
        lake.commit(cs)
        result.activity_id = act.activity_id
    except Exception as exc:  # noqa: BLE001 - the run row still records the outcome
        result.error = (result.error + "; " if result.error else "") + f"activity not committed: {exc}"
        if result.status == "ok":
            result.status = "failed"


def recent_runs(lake: "Lake", job: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``job_runs`` rows, newest first."""
    R = cat.JobRun
    q = select(R.run_id, R.job_name, R.status, R.trigger, R.started_at, R.ended_at, R.n_new, R.n_unchanged,
               R.n_failed, R.n_deferred, R.n_records, R.activity_id, R.error)
    if job:
        q = q.where(R.job_name == job)
    with lake.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q.order_by(R.started_at.desc()).limit(limit))]
    for r in rows:
        r["started_at"], r["ended_at"] = _aware(r["started_at"]), _aware(r["ended_at"])
    return rows


def active_leases(lake: "Lake") -> list[dict[str, Any]]:
    L = cat.Lease
    with lake.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            select(L.name, L.holder, L.acquired_at, L.expires_at, L.heartbeat).order_by(L.name))]
    return [{k: _aware(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]


# --------------------------------------------------------------------------- the scheduler


def serve(
    lake: "Lake",
    jobs: dict[str, Job],
    *,
    stop: threading.Event | None = None,
    log: Callable[[str], None] | None = None,
    install_signals: bool = True,
) -> int:
    """Run every job that has a ``schedule`` on its cron schedule until ``stop`` is set.

    SIGTERM and SIGINT set ``stop`` (when ``install_signals``): no new run
    starts, a run in progress commits what it has parsed, records itself as
    ``interrupted`` and releases its lease; then this returns 0.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    log = log or (lambda msg: print(f"{datetime.now().isoformat(timespec='seconds')} {msg}", flush=True))
    stop = stop or threading.Event()
    scheduled = [j for j in jobs.values() if j.schedule]
    if not scheduled:
        raise JobFileError("no job has a schedule: add schedule = \"*/5 * * * *\" (for example) to a [[job]]")

    def fire(job: Job) -> None:
        if stop.is_set():
            return
        try:
            res = run_job(lake, job, trigger="schedule", stop=stop)
            log(res.summary())
            for msg in res.failures[:20]:
                log(f"  FAILED {msg}")
        except LeaseHeld as exc:
            log(f"job {job.name}: skipped, another run is in progress ({exc})")
        except Exception as exc:  # noqa: BLE001 - one bad run must not stop the scheduler
            log(f"job {job.name}: run failed: {type(exc).__name__}: {exc}")

    if install_signals:
        def on_signal(signum: int, _frame: Any) -> None:
            if not stop.is_set():
                log(f"received {signal.Signals(signum).name}: finishing the current run and stopping")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    # max_instances=1 + coalesce: a run that outlasts its interval is not stacked up in this
    # process; the lease covers other processes and hosts.
    sched = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
                                executors={"default": {"type": "threadpool", "max_workers": max(1, len(scheduled))}})
    for job in scheduled:
        sched.add_job(fire, cron_trigger(job.schedule, job.timezone), args=[job], id=job.name, name=job.name)
    sched.start()
    try:
        for j in sched.get_jobs():
            log(f"job {j.id}: schedule {jobs[j.id].schedule!r}, next run {j.next_run_time.isoformat(timespec='seconds')}")
        while not stop.wait(0.5):
            pass
    finally:
        stop.set()
        sched.shutdown(wait=True)  # waits for the run in progress, which has seen ``stop``
    log("stopped")
    return 0


# --------------------------------------------------------------------------- command line


def _load(args: "argparse.Namespace") -> tuple["Lake", dict[str, Job], Path]:
    from matlake.platform.lake import Lake

    lake = Lake.open(args.lake)
    path = job_file_path(lake, args.jobs)
    return lake, load_jobs(path, lake.root.parent), path


def _get(jobs: dict[str, Job], name: str, path: Path) -> Job:
    if name not in jobs:
        raise JobFileError(f"{path}: no job named {name!r}; jobs: {sorted(jobs)}")
    return jobs[name]


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"matlake: {signal.Signals(signum).name}: stopping after the current batch", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop


def cmd_jobs_list(args: "argparse.Namespace") -> int:
    import pandas as pd

    from matlake.platform.cli import print_frame

    lake, jobs, path = _load(args)
    last = {}
    for r in reversed(recent_runs(lake, limit=1000)):
        last[r["job_name"]] = r
    now = datetime.now(timezone.utc)
    rows = []
    for j in jobs.values():
        nxt = cron_trigger(j.schedule, j.timezone).get_next_fire_time(None, now) if j.schedule else None
        r = last.get(j.name)
        rows.append({"job": j.name, "kind": j.kind, "schedule": j.schedule or "(manual)",
                     "next run": nxt.isoformat(timespec="seconds") if nxt else "",
                     "sources": ", ".join(j.sources),
                     "last run": f"{r['status']} {r['started_at']:%Y-%m-%d %H:%M:%S}" if r else ""})
    print(f"{path}")
    print_frame(pd.DataFrame(rows))
    return 0


def cmd_jobs_run(args: "argparse.Namespace") -> int:
    lake, jobs, path = _load(args)
    job = _get(jobs, args.name, path)
    if args.dry_run:
        planned = plan(lake, job)
        for f in planned:
            what = f"{f.parser} {f.parser_version}" if f.parser else ""
            if f.status != "unchanged" or args.verbose:
                print(f"{f.status:10s} {what:22s} {f.path}" + (f"  ({f.message})" if f.message else ""))
        counts = {s: sum(1 for f in planned if f.status == s) for s in ("new", "unchanged", "deferred", "unreadable")}
        print(f"dry run of job {job.name}: would ingest {counts['new']} new files; {counts['unchanged']} unchanged, "
              f"{counts['deferred']} deferred, {counts['unreadable']} unreadable; nothing written")
        return 0
    stop = _stop_on_signals()
    try:
        res = run_job(lake, job, wait=args.wait, wait_timeout=args.wait_timeout, stop=stop)
    except LeaseHeld as exc:
        print(f"matlake: error: job {job.name} is already running ({exc}); "
              "use --wait to wait for it", file=sys.stderr)
        return EXIT_LEASE_HELD
    for msg in res.failures:
        print(f"FAILED {msg}", file=sys.stderr)
    print(res.summary())
    return {"ok": 0, "interrupted": 130}.get(res.status, 1)


def cmd_jobs_status(args: "argparse.Namespace") -> int:
    import pandas as pd

    from matlake.platform.cli import print_frame

    from matlake.platform.lake import Lake

    lake = Lake.open(args.lake)
    rows = recent_runs(lake, args.name, args.limit)
    for r in rows:
        r["started_at"] = f"{r['started_at']:%Y-%m-%d %H:%M:%S}"
        r["ended_at"] = f"{r['ended_at']:%Y-%m-%d %H:%M:%S}" if r["ended_at"] else ""
        r.pop("activity_id")
    cols = {"run_id": "run", "job_name": "job", "n_new": "new", "n_unchanged": "unchanged", "n_failed": "failed",
            "n_deferred": "deferred", "n_records": "records"}
    print_frame(pd.DataFrame(rows).rename(columns=cols), args.limit)
    held = active_leases(lake)
    if held:
        print("\nleases held now:")
        for h in held:
            print(f"  {h['name']}: {h['holder']} since {h['acquired_at']:%Y-%m-%d %H:%M:%S}, "
                  f"expires {h['expires_at']:%H:%M:%S} UTC")
    return 0


def cmd_jobs_serve(args: "argparse.Namespace") -> int:
    lake, jobs, path = _load(args)
    if args.only:
        jobs = {n: _get(jobs, n, path) for n in args.only}
    return serve(lake, jobs)


def register(subparsers: Any, common: "argparse.ArgumentParser") -> None:
    """Add ``matlake jobs list|run|status|serve`` to the command line."""
    import argparse

    jobs_file = argparse.ArgumentParser(add_help=False)
    jobs_file.add_argument("--jobs", metavar="FILE", help=f"job file (default: {JOB_FILE} in the lake directory)")
    p = subparsers.add_parser("jobs", help="scheduled ingestion jobs: list, run, status, serve")
    sub = p.add_subparsers(dest="jobs_command", metavar="ACTION")
    sub.required = True

    s = sub.add_parser("list", parents=[common, jobs_file], help="jobs in the job file, next run, last run")
    s.set_defaults(func=cmd_jobs_list)

    s = sub.add_parser("run", parents=[common, jobs_file], help="run one job now (incremental)")
    s.add_argument("name")
    s.add_argument("--dry-run", action="store_true", help="list the files a run would ingest; write nothing")
    s.add_argument("--verbose", "-v", action="store_true", help="dry run: list unchanged files too")
    s.add_argument("--wait", action="store_true",
                   help=f"wait while another run holds the job (default: exit {EXIT_LEASE_HELD})")
    s.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS")
    s.set_defaults(func=cmd_jobs_run)

    s = sub.add_parser("status", parents=[common], help="recent runs with their counts, and leases held")
    s.add_argument("name", nargs="?", help="only this job")
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=cmd_jobs_status)

    s = sub.add_parser("serve", parents=[common, jobs_file],
                       help="run scheduled jobs until SIGTERM/SIGINT (e.g. under systemd)")
    s.add_argument("--only", action="append", metavar="NAME", help="serve only this job (repeatable)")
    s.set_defaults(func=cmd_jobs_serve)


__all__ = ["Job", "JobFileError", "Lease", "LeaseHeld", "PlannedFile", "RunResult", "cron_trigger", "job_file_path",
           "load_jobs", "parse_jobs", "plan", "recent_runs", "register", "run_job", "serve", "settle", "source_files"]
