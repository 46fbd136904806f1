"""The SQL catalog: SQLAlchemy models and engine set-up.

The catalog holds everything small and transactional: the table registry, the
manifest of Parquet data files per snapshot and their deletion vectors, tags,
objects, provenance (activities, ``used`` links and used sets; ``generated``
links are the ``activity_id`` column of every row), the ingest ledger and the
model registry.  Nothing in it grows by one row per science row.  The schema is
created and evolved only by the Alembic migrations in ``matlake/migrations``;
these models describe the head revision and are checked against it in tests.

Stored rows are frozen except: ``data_files.retired_snapshot`` (set once, by
compaction), ``deletion_vectors.retired_snapshot`` (set once, by the commit that
extends the vector), ``lake_state.last_snapshot`` (the commit counter), ``tags``
(moved only by an explicit re-tag) and ``leases``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class LakeSetting(Base):
    """Key/value facts about the lake (root directory, creation time)."""

    __tablename__ = "lake_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LakeState(Base):
    """One row; its lock serialises commits so snapshot ids are visible in order."""

    __tablename__ = "lake_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_snapshot: Mapped[int] = mapped_column(BigInteger, default=0)


class TableEntry(Base):
    __tablename__ = "table_registry"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), default="")
    schema_version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    schema_json: Mapped[str] = mapped_column(Text, default="")
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Snapshot(Base):
    __tablename__ = "snapshots"
    snapshot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")


class DataFile(Base):
    __tablename__ = "data_files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(128), index=True)
    path: Mapped[str] = mapped_column(String(512), unique=True)  # relative to the lake root
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    schema_version: Mapped[int] = mapped_column(Integer)
    max_version: Mapped[int] = mapped_column(Integer, default=1)
    tombstones: Mapped[int] = mapped_column(Integer, default=0)
    added_snapshot: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"), index=True)
    retired_snapshot: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"), nullable=True)


class Tag(Base):
    __tablename__ = "tags"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")


class StoredObject(Base):
    """A content-addressed file in objects/ (raw inputs, arrays, model artifacts)."""

    __tablename__ = "objects"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash_algo: Mapped[str] = mapped_column(String(32), default="sha256:v1")
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(64), default="application/octet-stream")
    original_name: Mapped[str] = mapped_column(Text, default="")
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"))


class Activity(Base):
    """A W3C PROV activity: ingest, featurize, train, predict, compact, ..."""

    __tablename__ = "activities"
    activity_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(128))
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    parameters_json: Mapped[str] = mapped_column(Text, default="{}")
    matlake_version: Mapped[str] = mapped_column(String(32), default="")
    git_commit: Mapped[str] = mapped_column(String(64), default="")
    user: Mapped[str] = mapped_column(String(128), default="")
    host: Mapped[str] = mapped_column(String(256), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str] = mapped_column(Text, default="")
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"), index=True)


class Link(Base):
    """Activity *used* entity (or *generated* a non-row entity such as a model or object)."""

    __tablename__ = "links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    activity_id: Mapped[str] = mapped_column(String(40), ForeignKey("activities.activity_id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # used | generated
    entity_kind: Mapped[str] = mapped_column(String(16))  # record | object | model | snapshot
    entity_id: Mapped[str] = mapped_column(String(128), index=True)
    entity_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    table_name: Mapped[str | None] = mapped_column(String(128), nullable=True)


class LedgerEntry(Base):
    """One attempt to ingest a source file: ``ok``, ``failed`` (bad input) or ``error`` (a parser bug).

    The key is (sha256, parser, parser_version, attempt_key).  ``attempt_key``
    is empty for ``ok`` rows, so the same bytes are parsed once per parser
    version whatever the options; a failure's key names the kind and options
    it was tried with, so the same file tried differently is tried again; a
    file that could not be read has no bytes (``sha256`` empty) and a key
    made of its path, size, mtime and the reason.  ``detail`` keeps the
    traceback of an ``error`` row.
    """

    __tablename__ = "ingest_ledger"
    __table_args__ = (UniqueConstraint("sha256", "parser", "parser_version", "attempt_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    parser: Mapped[str] = mapped_column(String(64))
    parser_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)  # ok | failed | error
    message: Mapped[str] = mapped_column(Text, default="")
    attempt_key: Mapped[str] = mapped_column(String(80), default="", server_default="")
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")
    record_ids_json: Mapped[str] = mapped_column(Text, default="[]")
    n_records: Mapped[int] = mapped_column(Integer, default=0)
    activity_id: Mapped[str] = mapped_column(String(40), ForeignKey("activities.activity_id"))
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A trained model: dataset version (view SQL + snapshot), metrics, artifact object."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    module: Mapped[str] = mapped_column(String(256))
    module_version: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(128))
    view_sql: Mapped[str] = mapped_column(Text)
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"))
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    n_train: Mapped[int] = mapped_column(Integer)
    activity_id: Mapped[str] = mapped_column(String(40), ForeignKey("activities.activity_id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


Index("ix_ingest_ledger_status_created", LedgerEntry.status, LedgerEntry.created_at)


class CatalogURLError(ValueError):
    """A catalog URL that names no supported database, or whose driver is not installed."""


# Catalog URL schemes matlake supports -> the SQLAlchemy driver name they use.
# A plain ``postgresql://`` means psycopg 3 whatever SQLAlchemy's own default
# (psycopg2 before SQLAlchemy 2.1, psycopg after), so a URL means the same
# driver on every install; ``postgresql+psycopg2://`` keeps older lakes working.
DRIVERS: dict[str, str] = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg2",
}
# Python module a driver imports -> what to ``pip install`` for it.
DRIVER_PACKAGES: dict[str, str] = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}


def safe_url(url: str | URL) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url).split("@")[-1]


def resolve_url(url: str | URL) -> URL:
    """The SQLAlchemy URL for a catalog URL as the user wrote it (``matlake.toml``,
    ``--catalog``, ``--lake``): the scheme is mapped through :data:`DRIVERS`,
    another driver of SQLite or PostgreSQL is kept as written, and anything else
    is a :class:`CatalogURLError` naming the supported forms."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError as exc:
        raise CatalogURLError(f"catalog URL: expected e.g. postgresql://user@host:5432/db or sqlite:///PATH, "
                              f"found {str(url)!r}") from exc
    driver = DRIVERS.get(parsed.drivername)
    if driver is None and parsed.get_backend_name() in ("sqlite", "postgresql"):
        return parsed  # another DB-API driver for a supported database (e.g. postgresql+pg8000): as written
    if driver is None:
        raise CatalogURLError(f"catalog URL {safe_url(parsed)}: expected one of the schemes "
                              f"{', '.join(s + '://' for s in DRIVERS)}, found {parsed.drivername}://")
    return parsed.set(drivername=driver)


def make_engine(url: str | URL) -> Engine:
    """An engine for the catalog.  SQLite: WAL, a long busy timeout, and
    ``BEGIN IMMEDIATE`` for write transactions so two writers queue instead of
    failing on a lock upgrade.  PostgreSQL: psycopg 3 for ``postgresql://``,
    psycopg2 for ``postgresql+psycopg2://``; a missing driver is a
    :class:`CatalogURLError` saying what to install.  Connects lazily."""
    sa_url = resolve_url(url)
    if sa_url.get_backend_name() == "sqlite":
        engine = create_engine(sa_url, connect_args={"timeout": 120}, poolclass=None)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=120000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover
            mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    try:
        return create_engine(sa_url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except NoSuchModuleError as exc:  # an installed SQLAlchemy without this dialect
        raise CatalogURLError(f"catalog URL {safe_url(sa_url)}: SQLAlchemy has no driver {sa_url.drivername}") from exc
    except ImportError as exc:
        module = (exc.name or sa_url.get_driver_name()).split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise CatalogURLError(f"catalog URL {safe_url(sa_url)} needs the Python driver {module!r}, which is not "
                              f"installed: pip install \"{package}\"") from exc


def is_transient(exc: BaseException) -> bool:
    """Lock and serialization errors worth retrying."""
    if not isinstance(exc, OperationalError):
        text = str(getattr(exc, "orig", exc)).lower()
        return "could not serialize" in text or "deadlock detected" in text
    text = str(exc).lower()
    return "locked" in text or "busy" in text or "could not serialize" in text or "deadlock" in text


def retrying(fn, *, attempts: int = 20, first_delay: float = 0.05):
    """Run ``fn()``; retry transient lock errors with exponential back-off."""
    delay = first_delay
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered by is_transient
            if i == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- jobs (revision 0002)


class Lease(Base):
    """A named, expiring lock held by one process (``host:pid:uuid``).

    The holder renews ``expires_at`` (and ``heartbeat``) while it works and
    deletes the row when done; a row whose ``expires_at`` has passed may be
    taken over.  Times are UTC from the holders' clocks, so hosts sharing a
    catalog need synchronised clocks (NTP) to well within the lease TTL.
    """

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRun(Base):
    """One run of an ingestion job.  Written as ``running`` when the run
    starts; ``ended_at``, ``status``, the counts, ``error`` and
    ``activity_id`` are set once when it ends (``ok``, ``failed``,
    ``interrupted``, ``lease-lost``), or to ``abandoned`` by the next run
    when the process died."""

    __tablename__ = "job_runs"
    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_name: Mapped[str] = mapped_column(String(128))
    activity_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("activities.activity_id"), nullable=True)
    holder: Mapped[str] = mapped_column(String(128))
    trigger: Mapped[str] = mapped_column(String(16), default="manual")  # manual | schedule
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    n_new: Mapped[int] = mapped_column(Integer, default=0)
    n_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_deferred: Mapped[int] = mapped_column(Integer, default=0)
    n_records: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")


Index("ix_job_runs_job_name_started_at", JobRun.job_name, JobRun.started_at)


# --------------------------------------------------------------------------- deletion vectors and used sets (revision 0005)


class DeletionVector(Base):
    """Which rows of one data file later versions replaced, as of ``added_snapshot``.

    Cumulative: a new vector of a file holds every replaced position so far and
    retires the file's previous vector in the same commit, so at any snapshot a
    file has at most one live vector.  ``path`` names a sidecar Parquet file
    with one int64 column ``pos`` (0-based row positions in the data file);
    ``path`` null means every row of the file is replaced: the file leaves the
    latest-version view without a sidecar (it stays in ``T_all`` for history).
    """

    __tablename__ = "deletion_vectors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    data_file_id: Mapped[int] = mapped_column(Integer, ForeignKey("data_files.id"), index=True)
    table_name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    rows: Mapped[int] = mapped_column(BigInteger)  # replaced positions
    added_snapshot: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"), index=True)
    retired_snapshot: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"), nullable=True)


class UsedSet(Base):
    """A bulk activity *used* a set of records: the ids returned by ``view_sql`` at ``snapshot_id``.

    Replaces one ``links`` row per record for train, predict and featurize.
    ``n_rows`` and ``digest`` (sha256 of the sorted ids joined by newlines)
    pin the set; the members are read back from Parquet: ``members = 'generated'``:
    the ``subject_id`` of the rows the activity generated; ``members = 'object'``:
    the Parquet object ``members_sha256`` (columns ``record_id``, ``version``).
    """

    __tablename__ = "used_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    activity_id: Mapped[str] = mapped_column(String(40), ForeignKey("activities.activity_id"), index=True)
    table_name: Mapped[str] = mapped_column(String(128), index=True)
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("snapshots.snapshot_id"))
    view_sql: Mapped[str] = mapped_column(Text, default="")
    n_rows: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(64))
    members: Mapped[str] = mapped_column(String(16))  # generated | object
    members_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class PathStamp(Base):
    """The sha256 last found at a source path, with the file's stat stamp then.

    Ingest (and ``jobs run --dry-run``) reuse ``sha256`` for a path whose
    (device, inode, size, mtime_ns, ctime_ns) are all unchanged instead of
    reading and hashing the file again (and its cached parser detection while
    the kind and the parser registry are the same); anything else re-hashes it.  The
    content hash stays the identity: this is only a cache, and a missing or
    stale entry costs a re-hash, never a wrong record (see
    ``matlake.platform.ingestion.FileStamp`` for the rule).  Device and inode
    are stored as signed 64-bit numbers.
    """

    __tablename__ = "path_stamps"
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    device: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    ctime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The parser detected for these bytes with ``kind`` under ``parser_registry``
    # (a digest of the registered names and versions): reused while both are the same.
    kind: Mapped[str] = mapped_column(String(64), default="")
    parser: Mapped[str] = mapped_column(String(64), default="")
    parser_version: Mapped[str] = mapped_column(String(32), default="")
    parser_registry: Mapped[str] = mapped_column(String(32), default="")
    hashed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
