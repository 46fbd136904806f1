"""The lake: commit protocol, snapshots, tags, time travel and garbage collection.

Commit protocol (ARCHITECTURE, "Commits, snapshots, time travel"):

1. Parquet files (one per touched table, named by content hash) and objects are
   written first, then made durable in one barrier (``objects.make_durable``: the
   Parquet files and the objects the change set lists in ``unsynced``, fsynced
   together), before anything refers to them.
2. One catalog transaction takes the ``lake_state`` row lock, allocates the
   next snapshot id and registers files, objects, activities, links, used sets,
   ledger rows and model versions together, and extends the deletion vector of
   every data file whose rows the new versions replace (its small sidecar is
   written under the lock, so concurrent commits never drop each other's rows).

A crash between 1 and 2 leaves only unregistered files, which ``gc`` removes;
a crash inside 2 rolls back.  Readers never lock anything: they read the
catalog rows of a snapshot and the immutable files it lists.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

import matlake
from matlake import schemas
from matlake.platform import catalog as cat
from matlake.platform import migrate
from matlake.platform import objects as object_store
from matlake.platform.config import (
    CONFIG_NAME,
    SQLITE_NAME,
    CreatedPaths,
    LakeConfig,
    LakeNotFound,
    default_location,
    is_url,
    local_config,
    read_config,
    sqlite_url,
    write_config,
)
from matlake.platform.errors import LakeError
from matlake.platform.objects import HASH_ALGO, ObjectCorrupted, ObjectStore, sha256_bytes, write_atomic
from matlake.platform.reader import CatalogReads


class DuplicateSource(LakeError):
    """Another process committed the same (sha256, parser, parser version) first."""


class VersionConflict(LakeError):
    """Another commit wrote a newer version of a record this commit meant to
    version, between the version look-up and this commit's transaction.
    ``rebase``: the commit may re-version its rows and try again."""

    def __init__(self, message: str, rebase: bool = False) -> None:
        super().__init__(message)
        self.rebase = rebase


def _fault(point: str) -> None:
    """Crash-test hook: ``MATLAKE_FAULT=POINT`` (or ``POINT:N``, the N-th time this
    process reaches POINT) kills the process with SIGKILL right there, so the
    crash tests can stop a commit at its critical points.  Unset: no effect."""
    spec = os.environ.get("MATLAKE_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _FAULT_HITS[point] = _FAULT_HITS.get(point, 0) + 1
    if _FAULT_HITS[point] >= int(nth or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_HITS: dict[str, int] = {}


# Rows per Parquet row group in data files (commits and compaction): large enough that a scan
# pays little per group, small enough to skip groups by their min/max statistics.
ROW_GROUP_ROWS = 256_000


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@lru_cache(maxsize=1)
def code_identity() -> tuple[str, str]:
    """(matlake version, git commit of the running code or '')."""
    commit = ""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return matlake.__version__, commit


@lru_cache(maxsize=1)
def _who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        user = str(os.getuid())
    return user, socket.gethostname()


# --------------------------------------------------------------------------- change sets


@dataclass
class PendingActivity:
    activity_id: str
    kind: str
    name: str
    agent_version: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=cat.utcnow)
    ended_at: datetime | None = None
    status: str = "ok"
    error: str = ""
    # (role, entity_kind, entity_id, entity_version, table_name)
    links: list[tuple[str, str, str, int | None, str | None]] = field(default_factory=list)
    # used_sets rows (see matlake.platform.catalog.UsedSet) minus activity_id
    sets: list[dict[str, Any]] = field(default_factory=list)

    def used(self, kind: str, entity_id: str, version: int | None = None, table: str | None = None) -> None:
        self.links.append(("used", kind, entity_id, version, table))

    def generated(self, kind: str, entity_id: str, version: int | None = None, table: str | None = None) -> None:
        self.links.append(("generated", kind, entity_id, version, table))

    def used_set(self, table: str, snapshot: int, view_sql: str, record_ids: pa.Array | Sequence[str],
                 members: str = "generated", members_sha256: str | None = None) -> None:
        """This activity used the records ``record_ids`` of ``table``, read by ``view_sql`` at ``snapshot``:
        one catalog row whatever their number.  ``members='generated'``: they are the ``subject_id``
        of the rows it generates; ``'object'``: listed in the Parquet object ``members_sha256``."""
        if members not in ("generated", "object") or (members == "object") != bool(members_sha256):
            raise ValueError(f"used_set members: expected 'generated' or 'object' with members_sha256, "
                             f"found {members!r} with {members_sha256!r}")
        ids = record_ids if isinstance(record_ids, (pa.Array, pa.ChunkedArray)) else pa.array(
            list(record_ids), pa.string())
        self.sets.append({"table_name": table, "snapshot_id": int(snapshot), "view_sql": view_sql,
                          "n_rows": len(ids), "digest": id_digest(ids), "members": members,
                          "members_sha256": members_sha256})


def id_digest(ids: pa.Array | pa.ChunkedArray) -> str:
    """sha256 (hex) of the ids in the order used, each followed by a newline: a used set's fingerprint.

    Order-dependent on purpose: hashing the ids as stored costs one pass over their bytes,
    where sorting 10^6 strings first would cost more than writing them."""
    import hashlib

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.cast(pa.string())
    h = hashlib.sha256()
    if len(ids):
        joined = pa.compute.binary_join(pa.ListArray.from_arrays(pa.array([0, len(ids)], pa.int32()), ids), "\n")
        h.update(joined[0].as_buffer())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class _Rows:
    table: str
    data: pa.Table  # conformed to the data schema (record_id + data columns)
    activity_id: str
    version: int | None  # None: next version of each record, computed at commit
    tombstone: bool
    # On a concurrent new version of one of these records: True re-versions the rows
    # (n+2) and commits; False refuses the commit with VersionConflict (the rows were
    # computed from the version they replace, e.g. a delete of what was read).
    rebase: bool = True


@dataclass
class _Claim:
    """A record this commit versions, and the highest version it saw (0: none)."""

    table: str
    record_id: str
    seen_version: int
    rebase: bool


class ChangeSet:
    """Everything one commit registers.  Build it, then ``lake.commit(cs)``."""

    def __init__(self, kind: str, message: str = "") -> None:
        self.kind = kind
        self.message = message
        self.activities: list[PendingActivity] = []
        self.rows: list[_Rows] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.ledger: list[dict[str, Any]] = []
        self.models: list[dict[str, Any]] = []
        self.retire: list[int] = []
        # Data files already written and fsynced by the caller (compaction): data_files rows minus added_snapshot.
        self.files: list[dict[str, Any]] = []
        # Files written without fsync (an ingest batch's objects) that the commit makes durable in
        # the same barrier as its Parquet files, before the catalog transaction refers to them.
        self.unsynced: list[Path] = []
        # Extra catalog writes run inside the commit's transaction (after its ledger rows), so
        # they land atomically with it and cost no catalog commit of their own (the path cache).
        self.in_transaction: list[Callable[[Any], None]] = []
        # Compaction: merged file path -> (retired data file id, offset of its first row in the merged file),
        # so the retired files' deletion vectors are carried over to the merged file.
        self.merged_from: dict[str, list[tuple[int, int]]] = {}
        # The snapshot the rows were computed from, when it matters: versions are then
        # checked against it, so a strict (rebase=False) change made from stale reads is refused.
        self.read_snapshot: int | None = None

    def activity(self, kind: str, name: str, agent_version: str = "", parameters: dict | None = None,
                 started_at: datetime | None = None, status: str = "ok", error: str = "") -> PendingActivity:
        act = PendingActivity(
            activity_id=new_id("act"), kind=kind, name=name, agent_version=agent_version,
            parameters=dict(parameters or {}), started_at=started_at or cat.utcnow(), status=status, error=error,
        )
        self.activities.append(act)
        return act

    def add_rows(self, table: str, rows: pa.Table | list[dict], activity: PendingActivity,
                 version: int | None = None, tombstone: bool = False, source: str = "",
                 rebase: bool = True) -> None:
        """Rows for ``table`` generated by ``activity``.

        ``version=None`` gives each record the next version after what the lake
        holds (1 for a new record); ``version=1`` declares the records new and
        skips the look-up.  Versions are checked again inside the commit's
        critical section: if another commit versioned one of these records in the
        meantime, ``rebase=True`` re-versions the rows above it and commits,
        ``rebase=False`` raises :class:`VersionConflict` and commits nothing.
        """
        schema = schemas.get(table)
        if not isinstance(rows, pa.Table):
            rows = pa.Table.from_pylist(list(rows)) if rows else schema.data_schema().empty_table()
        conformed = schema.conform(rows, source=source)
        if conformed.num_rows:
            self.rows.append(_Rows(table, conformed, activity.activity_id, version, tombstone, rebase))

    def add_object(self, sha: str, size: int, media_type: str = "application/octet-stream",
                   original_name: str = "") -> None:
        """Register an object already written to the store."""
        self.objects.setdefault(sha, {"sha256": sha, "size": size, "media_type": media_type,
                                      "original_name": original_name, "hash_algo": HASH_ALGO})

    def add_ledger(self, *, source_path: str, sha256: str, size: int, parser: str, parser_version: str,
                   status: str, message: str, record_ids: Sequence[str], activity: PendingActivity,
                   attempt_key: str = "", detail: str = "") -> None:
        """One ingest ledger row (see :class:`matlake.platform.catalog.LedgerEntry` for the key)."""
        self.ledger.append({
            "source_path": source_path, "sha256": sha256, "size": size, "parser": parser,
            "parser_version": parser_version, "status": status, "message": message,
            "record_ids_json": json.dumps(list(record_ids)), "n_records": len(record_ids),
            "activity_id": activity.activity_id, "attempt_key": attempt_key, "detail": detail,
        })

    def add_model(self, **fields: Any) -> None:
        """A model version row; ``snapshot_id`` is the snapshot of its training data."""
        self.models.append(fields)

    def make_durable_at_commit(self, paths: Iterable[Path]) -> None:
        """Files written without fsync (``sync=False``) that this commit refers to: the commit
        makes them durable with its Parquet files, in one barrier, before its catalog transaction."""
        self.unsynced.extend(Path(p) for p in paths)

    def is_empty(self) -> bool:
        return not (self.activities or self.rows or self.objects or self.ledger or self.models or self.retire
                    or self.files)


def write_deletion_vector(root: Path, table: str, data_sha: str, positions: Any) -> tuple[dict[str, str], bool]:
    """Write (fsynced) the deletion-vector sidecar of data file ``data_sha`` of ``table``: Parquet
    with one int64 column ``pos``, the replaced 0-based row positions.  Returns its catalog
    fields (lake-relative ``path``, ``sha256``) and whether this call created the file."""
    buf = io.BytesIO()
    pq.write_table(pa.table({"pos": pa.array(positions, pa.int64())}), buf, compression="zstd")
    data = buf.getvalue()
    sha = sha256_bytes(data)
    # The data file's hash in the name: two files with the same replaced positions get two sidecars.
    rel = f"tables/{table}/_deletes/{data_sha[:16]}-{sha[:32]}.dv"
    path = root / rel
    if path.exists():
        return {"path": rel, "sha256": sha}, False
    write_atomic(path, data)
    return {"path": rel, "sha256": sha}, True


# Rows to version from which a data file of exactly that many rows is read to compare its ids
# with theirs (a whole file re-versioned in order needs no join).  Below it the join is cheap,
# and many small files of equal size (single-row commits) would each be read for nothing.
SAME_ORDER_MIN_ROWS = 4096


def sorted_distinct(positions: Any) -> Any:
    """``positions`` (int numpy array) sorted, each once.  A sort and a neighbour comparison:
    ``np.unique`` hashes integers first on numpy 2.x, a second per 10^6 row positions."""
    import numpy as np

    if len(positions) < 2 or np.all(positions[1:] > positions[:-1]):
        return positions
    out = np.sort(positions)
    keep = np.ones(len(out), bool)
    keep[1:] = out[1:] != out[:-1]
    return out if keep.all() else out[keep]


def highest_per_index(n: int, idx: Any, version: Any, *payload: Any) -> tuple[Any, ...]:
    """Matches (``idx`` in ``0..n-1``, ``version``, payload columns, numpy arrays in any order)
    reduced to the one with the highest version per index, so that a scatter by ``idx`` is
    unambiguous (numpy leaves the winner of a repeated index unspecified).  Most indexes have
    one match: a bincount detects that in one pass, and only otherwise do the matches get sorted."""
    import numpy as np

    if len(idx) and np.bincount(idx, minlength=n).max() > 1:
        order = np.lexsort((version, idx))  # by index, then version: the last of each index is the highest
        last = np.ones(len(order), bool)
        last[:-1] = idx[order][1:] != idx[order][:-1]
        keep = order[last]
        return (idx[keep], version[keep], *(p[keep] for p in payload))
    return (idx, version, *payload)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- the lake


class Lake(CatalogReads):
    """A matlake lake: catalog + Parquet tables + objects.  Use :meth:`open` / :meth:`init`.

    Snapshot ids, tags, the manifest at a snapshot and queries (``last_snapshot``,
    ``resolve_snapshot``, ``files_at``, ``sql``, ``table``, ``query_engine``) come from
    :class:`~matlake.platform.reader.CatalogReads`, over :meth:`catalog_rows`."""

    def __init__(self, config: LakeConfig) -> None:
        self.config = config
        self.root = config.root
        self.engine = cat.make_engine(config.catalog_url)
        self.objects = ObjectStore(config.objects_dir)
        self._query_engines: dict[int, Any] = {}
        self.rebases = 0  # commits re-versioned after a concurrent commit (observability for tests/bench)

    # ---- opening
    @classmethod
    def init(cls, path: str | os.PathLike, catalog: str | None = None) -> "Lake":
        """Create a lake in folder ``path`` with its catalog at URL ``catalog``
        (default: SQLite inside the folder; ``postgresql://...`` for a team).

        All or nothing: when any step fails, the folders and files this call made
        are removed and a catalog that was empty before is migrated back to empty.
        Should that rollback fail too, the error says so and how to finish it."""
        root = Path(path).resolve()
        if (root / CONFIG_NAME).exists():
            raise LakeError(f"a lake already exists at {root}")
        url = catalog or sqlite_url(root)
        engine = cat.make_engine(url)  # a bad URL or a missing driver fails before anything is made
        sqlite_ours = catalog is None and not (root / SQLITE_NAME).exists()  # removed with the files on failure
        made = CreatedPaths()
        fresh = had_version_table = False
        try:
            made.mkdir(root)
            for sub in ("tables", "objects"):
                made.mkdir(root / sub)
            for name in (SQLITE_NAME, SQLITE_NAME + "-wal", SQLITE_NAME + "-shm", SQLITE_NAME + "-journal",
                         CONFIG_NAME + ".tmp", CONFIG_NAME):
                made.claim(root / name)
            try:
                had_version_table = migrate.has_version_table(engine)
                fresh = migrate.current(engine) is None
            except DBAPIError as exc:
                raise LakeError(f"cannot connect to the catalog {cat.safe_url(url)}: {_first_line(exc.orig or exc)}; "
                                f"no lake was created") from exc
            migrate.upgrade(engine)
            with engine.connect().execution_options(write=True) as conn, conn.begin():
                existing = conn.execute(select(cat.LakeSetting.value).where(cat.LakeSetting.key == "root")).scalar()
                if existing and Path(existing) != root:
                    raise LakeError(f"catalog {cat.safe_url(url)} already belongs to the lake at {existing}")
                if not existing:
                    conn.execute(insert(cat.LakeSetting), [
                        {"key": "root", "value": str(root)},
                        {"key": "created_at", "value": cat.utcnow().isoformat()},
                    ])
            write_config(root, url)
            lake = cls(read_config(root))
        except BaseException as exc:
            left = ""
            if fresh and not sqlite_ours:
                try:
                    migrate.downgrade_to_empty(engine, drop_version_table=not had_version_table)
                except Exception as undo_exc:  # noqa: BLE001 - reported with the original error
                    left = (f"; the catalog {cat.safe_url(url)} could not be rolled back ({_first_line(undo_exc)}) "
                            f"and may hold a partly migrated matlake schema: empty it with "
                            f"`matlake db downgrade base --lake CATALOG_URL` before trying again")
            engine.dispose()
            made.undo()
            if left:
                raise LakeError(f"init {root} failed: {_first_line(exc)}{left}") from exc
            orig = getattr(exc, "orig", None)
            if (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == "3F000":  # invalid_schema_name
                raise LakeError(
                    f"init {root} failed: the catalog {cat.safe_url(url)} has no schema to create tables in "
                    f"(the search_path schema named in the URL does not exist): create it first "
                    f"(CREATE SCHEMA name; in psql) and run init again; no lake was created") from exc
            raise
        engine.dispose()
        return lake

    @classmethod
    def open(cls, path_or_url: str | os.PathLike | None = None, upgrade: bool = False) -> "Lake":
        where = default_location(path_or_url)
        if is_url(where):
            engine = cat.make_engine(where)
            try:
                with engine.connect() as conn:
                    root = conn.execute(select(cat.LakeSetting.value).where(cat.LakeSetting.key == "root")).scalar()
            except Exception as exc:  # noqa: BLE001 - turned into a one-line message
                raise LakeNotFound(f"no lake catalog at {where}: {str(exc).splitlines()[0]}") from exc
            finally:
                engine.dispose()
            if not root:
                raise LakeNotFound(f"no lake catalog at {where}: lake_settings.root not set")
            config = read_config(Path(root))
        else:
            config = local_config(path_or_url)
        lake = cls(config)
        if upgrade:
            migrate.upgrade(lake.engine)
        else:
            lake._check_revision()
        return lake

    def _check_revision(self) -> None:
        cur, head = migrate.revision_status(self.engine)
        if cur != head:
            raise LakeError(f"catalog at revision {cur}, code expects {head}: run `matlake db upgrade`")

    def _release(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r}, catalog={self.config.catalog_url.split('@')[-1]!r})"

    # ---- catalog reads (the rest is CatalogReads)
    def catalog_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of one read-only catalog query with ``:name`` parameters."""
        with self.engine.connect() as conn:
            result = conn.execute(text(sql), dict(params or {}))
            return list(result.keys()), [tuple(r) for r in result.fetchall()]

    # ---- tags
    def tag(self, name: str, as_of: int | str | None = None, note: str = "", move: bool = False) -> int:
        """Name a snapshot (default: the latest).  Tags do not move unless ``move``."""
        if not name or name.isdigit() or name == "latest":
            raise LakeError(f"tag name: expected a non-numeric name other than 'latest', found {name!r}")
        sid = self.resolve_snapshot(as_of)

        def txn() -> None:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                old = conn.execute(select(cat.Tag.snapshot_id).where(cat.Tag.name == name)).scalar()
                if old is not None and not move:
                    raise LakeError(f"tag {name!r} already names snapshot {old}; use --move to re-point it")
                if old is not None:
                    conn.execute(update(cat.Tag).where(cat.Tag.name == name).values(snapshot_id=sid, note=note))
                else:
                    conn.execute(insert(cat.Tag).values(name=name, snapshot_id=sid, note=note, created_at=cat.utcnow()))

        cat.retrying(txn)
        return sid

    def tags(self) -> list[dict[str, Any]]:
        with Session(self.engine) as conn:
            rows = conn.execute(select(cat.Tag).order_by(cat.Tag.snapshot_id)).scalars().all()
            return [{"name": t.name, "snapshot_id": t.snapshot_id, "created_at": t.created_at, "note": t.note} for t in rows]

    # ---- committing
    MAX_REBASES = 8

    def commit(self, cs: ChangeSet) -> int | None:
        """Write the change set's files, then register everything in one transaction.

        Versions are looked up at the latest snapshot before the files are
        written, and checked again inside the transaction, under the
        ``lake_state`` lock: if a commit that landed in between versioned one
        of the same records, the rows are re-versioned and written again
        (``rebase``) or the commit is refused with :class:`VersionConflict`.
        So (record_id, version) stays unique however many writers race.

        Returns the new snapshot id (None for an empty change set).  Raises
        :class:`DuplicateSource` when another process already committed one of
        its ledger keys; nothing of this change set is then visible.
        """
        if cs.is_empty():
            return None
        now = cat.utcnow()
        for attempt in range(self.MAX_REBASES + 1):
            base = cs.read_snapshot if (attempt == 0 and cs.read_snapshot is not None) else self.last_snapshot()
            written, replaced, created = self._write_tables(cs, now, base, look_up_all=attempt > 0)
            files = written + list(cs.files)
            _fault("before_barrier")  # files written, not yet durable: a crash leaves orphans for gc
            # The durability barrier: nothing the transaction registers may be lost to a power
            # failure once it commits.  Every Parquet file of this attempt (also one that was
            # already there, maybe left unsynced by a crashed commit) and, once, the unsynced objects.
            object_store.make_durable([*(cs.unsynced if attempt == 0 else ()),
                                       *(self.root / f["path"] for f in written)])
            _fault("after_files")
            sidecars: list[Path] = []  # deletion vectors written inside the transaction
            try:
                sid = cat.retrying(lambda: self._commit_transaction(cs, files, written, replaced, base, now, sidecars))
            except BaseException as exc:
                # Nothing was registered: the sidecars of the failed transaction are unreferenced.
                for path in sidecars:
                    path.unlink(missing_ok=True)
                if not isinstance(exc, VersionConflict):
                    raise
                for path in created:
                    path.unlink(missing_ok=True)
                if not exc.rebase or attempt == self.MAX_REBASES:
                    raise
                self.rebases += 1
                continue
            _fault("after_commit")
            return sid
        raise AssertionError("unreachable")

    def _commit_transaction(self, cs: ChangeSet, files: list[dict[str, Any]], written: list[dict[str, Any]],
                            replaced: list[dict[str, Any]], base: int, now: datetime, sidecars: list[Path]) -> int:
        matlake_version, git_commit = code_identity()
        user, host = _who()
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            last = conn.execute(
                select(cat.LakeState.last_snapshot).where(cat.LakeState.id == 1).with_for_update()
            ).scalar_one()
            if int(last) > base and written:
                # A source another process committed meanwhile is a DuplicateSource (ingest drops
                # it and commits the rest), not a version clash to rebase: its rows carry the same
                # record ids, and rebasing would only race that process again.
                self._check_ledger(conn, cs)
                self._check_versions(conn, cs, written, base)
            sid = int(last) + 1
            conn.execute(insert(cat.Snapshot).values(snapshot_id=sid, created_at=now, kind=cs.kind, message=cs.message))
            self._register_tables(conn, {f["table_name"] for f in files})
            if cs.objects:
                have = set(conn.execute(select(cat.StoredObject.sha256).where(
                    cat.StoredObject.sha256.in_(list(cs.objects)))).scalars())
                new = [dict(o, snapshot_id=sid) for s, o in cs.objects.items() if s not in have]
                if new:
                    conn.execute(insert(cat.StoredObject), new)
            if cs.activities:
                conn.execute(insert(cat.Activity), [{
                    "activity_id": a.activity_id, "kind": a.kind, "name": a.name,
                    "agent_version": a.agent_version,
                    "parameters_json": json.dumps(a.parameters, default=str, sort_keys=True),
                    "matlake_version": matlake_version, "git_commit": git_commit,
                    "user": user, "host": host, "started_at": a.started_at,
                    "ended_at": a.ended_at or now, "status": a.status, "error": a.error, "snapshot_id": sid,
                } for a in cs.activities])
                links = [{"activity_id": a.activity_id, "role": r, "entity_kind": k, "entity_id": e,
                          "entity_version": v, "table_name": t}
                         for a in cs.activities for (r, k, e, v, t) in a.links]
                if links:
                    conn.execute(insert(cat.Link), links)
                sets = [dict(u, activity_id=a.activity_id) for a in cs.activities for u in a.sets]
                if sets:
                    conn.execute(insert(cat.UsedSet), sets)
            if files:
                conn.execute(insert(cat.DataFile), [dict(f, added_snapshot=sid) for f in files])
            if cs.retire:
                res = conn.execute(update(cat.DataFile).where(cat.DataFile.id.in_(cs.retire),
                                                              cat.DataFile.retired_snapshot.is_(None))
                                   .values(retired_snapshot=sid))
                if res.rowcount != len(set(cs.retire)):
                    # A concurrent compaction retired some first: registering our merge would duplicate rows.
                    raise LakeError(f"data files {sorted(cs.retire)}: expected all live, found "
                                    f"{len(set(cs.retire)) - res.rowcount} already retired by another commit")
            if replaced or cs.retire:
                self._register_deletions(conn, sid, replaced, list(cs.retire), files, cs.merged_from, sidecars)
            if cs.ledger:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(cat.LedgerEntry), [dict(r, snapshot_id=sid, created_at=now) for r in cs.ledger])
                except IntegrityError as exc:
                    raise DuplicateSource(f"a source in this batch was committed by another process: {exc.orig}") from exc
            if cs.models:
                conn.execute(insert(cat.ModelVersion), [dict({"created_at": now}, **m) for m in cs.models])
            for write in cs.in_transaction:
                write(conn)
            conn.execute(update(cat.LakeState).where(cat.LakeState.id == 1).values(last_snapshot=sid))
            _fault("in_transaction")
            return sid

    def _check_ledger(self, conn, cs: ChangeSet) -> None:
        """Inside the commit transaction (lock held): raise :class:`DuplicateSource` when a
        ledger key of this change set is already registered."""
        if not cs.ledger:
            return
        keys = {(r["sha256"], r["parser"], r["parser_version"], r["attempt_key"]) for r in cs.ledger}
        found = conn.execute(select(cat.LedgerEntry.sha256, cat.LedgerEntry.parser, cat.LedgerEntry.parser_version,
                                    cat.LedgerEntry.attempt_key)
                             .where(cat.LedgerEntry.sha256.in_(sorted({k[0] for k in keys})))).all()
        dup = sorted(tuple(r) for r in found if tuple(r) in keys)
        if dup:
            raise DuplicateSource(f"a source in this batch was committed by another process: {dup[0][0]} "
                                  f"(parser {dup[0][1]} {dup[0][2]}) and {len(dup) - 1} more")

    def _check_versions(self, conn, cs: ChangeSet, written: list[dict[str, Any]], base: int) -> None:
        """Inside the commit transaction (lock held): refuse the commit if a data file
        registered after ``base`` holds any of our records at our version or above.

        Only files committed since our look-up are read, so the check costs nothing
        without contention.  Compaction copies rows at their old versions and so
        never conflicts.
        """
        import duckdb

        mine = {f["table_name"]: f["path"] for f in written}
        newer = conn.execute(select(cat.DataFile.table_name, cat.DataFile.path).where(
            cat.DataFile.table_name.in_(list(mine)), cat.DataFile.added_snapshot > base)).all()
        if not newer:
            return
        strict = {(r.table, rid) for r in cs.rows if not r.rebase
                  for rid in r.data.column("record_id").to_pylist()}
        con = duckdb.connect()
        try:
            for table, path in sorted(mine.items()):
                others = [str(self.root / p) for t, p in newer if t == table]
                if not others:
                    continue
                clashes = con.execute(
                    "select n.record_id, n.version, max(o.version) "
                    "from read_parquet(?) n join (select record_id, version from read_parquet(?, union_by_name=true)) o "
                    "on o.record_id = n.record_id and o.version >= n.version group by all order by 1",
                    [str(self.root / path), others]).fetchall()
                if clashes:
                    rid, ours, theirs = clashes[0]
                    rebase = not any((table, r) in strict for r, _o, _t in clashes)
                    raise VersionConflict(
                        f"table {table}: record {rid} (and {len(clashes) - 1} more) got version {theirs} from "
                        f"another commit while this one prepared version {ours}; "
                        + ("re-versioning" if rebase else "nothing was committed: read the records again and retry"),
                        rebase=rebase)
        finally:
            con.close()

    def _register_tables(self, conn, names: Iterable[str]) -> None:
        if not names:
            return
        have = set(conn.execute(select(cat.TableEntry.name)).scalars())
        for name in sorted(set(names) - have):
            t = schemas.get(name)
            conn.execute(insert(cat.TableEntry).values(
                name=name, domain=t.domain, schema_version=t.version, description=t.description,
                schema_json=t.arrow_schema().to_string(show_field_metadata=False), registered_at=cat.utcnow()))
        for name in set(names) & have:
            t = schemas.get(name)
            conn.execute(update(cat.TableEntry).where(cat.TableEntry.name == name,
                                                      cat.TableEntry.schema_version < t.version)
                         .values(schema_version=t.version, schema_json=t.arrow_schema().to_string(show_field_metadata=False)))

    def _write_tables(self, cs: ChangeSet, now: datetime, base: int, look_up_all: bool = False,
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Path]]:
        """Write one Parquet file per touched table, versioned against snapshot ``base``.

        Returns the data-file rows, the rows the new versions replace (one entry
        per data file holding them: table, path, row positions) and the files
        this call created.  ``look_up_all`` also looks up records declared new
        (``version=1``): a rebase after a concurrent commit created some of them.
        Versions are computed column-wise (Arrow), never row by row in Python.
        """
        import numpy as np

        by_table: dict[str, list[_Rows]] = {}
        for r in cs.rows:
            by_table.setdefault(r.table, []).append(r)
        out = []
        replaced: list[dict[str, Any]] = []
        created: list[Path] = []
        for table, parts in sorted(by_table.items()):
            schema = schemas.get(table)
            # Version 1 given explicitly (a never-seen source) needs no look-up; anything else does.
            need_versions = [p for p in parts if p.version is None or p.version > 1 or look_up_all]
            # Previous version of every row to version, aligned with the rows (-1: none), and
            # where that version is stored (index into `stored`, row position).
            prev, file_code, file_pos, stored = self._previous_versions(
                table, [p.data.column("record_id") for p in need_versions], base)
            hits_code: list[np.ndarray] = []
            hits_pos: list[np.ndarray] = []
            version_parts: list[np.ndarray] = []
            # By identity: _Rows compares by value, and comparing tables reads all their data.
            looked_up = {id(q) for q in need_versions}
            offset = 0
            for p in parts:
                n = p.data.num_rows
                if id(p) in looked_up:
                    mine = prev[offset:offset + n]
                    found = mine >= 0
                    hits_code.append(file_code[offset:offset + n][found])
                    hits_pos.append(file_pos[offset:offset + n][found])
                    offset += n
                else:
                    mine = np.full(n, -1, np.int64)
                if p.version is None or (p.version == 1 and look_up_all):
                    version_parts.append(np.where(mine >= 0, mine + 1, 1).astype(np.int32))
                else:
                    clash = np.flatnonzero(mine >= p.version)
                    if len(clash):
                        i = int(clash[0])
                        rid = p.data.column("record_id")[i].as_py()
                        raise VersionConflict(f"table {table}: record {rid} already has version "
                                              f"{int(mine[i])}; expected a version above it, found {p.version}")
                    version_parts.append(np.full(n, p.version, dtype=np.int32))
            # The provenance columns of all parts at once (a batch of one-row parts, e.g. one
            # structure per CIF, would otherwise pay for building a table per part).
            counts = np.array([p.data.num_rows for p in parts], dtype=np.int64)
            total = int(counts.sum())
            data = pa.concat_tables([p.data for p in parts])  # all conformed to the data schema: no copy
            activity = pa.DictionaryArray.from_arrays(
                pa.array(np.repeat(np.arange(len(parts), dtype=np.int32), counts)),
                pa.array([p.activity_id for p in parts], pa.string())).cast(pa.string())
            cols = {
                "record_id": data.column("record_id"),
                "version": pa.array(np.concatenate(version_parts)),
                "activity_id": activity,
                "schema_version": pa.array(np.full(total, schema.version, dtype=np.int32)),
                "created_at": pa.array(np.full(total, np.datetime64(now.replace(tzinfo=None), "us")),
                                       pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
                "tombstone": pa.array(np.repeat(np.array([p.tombstone for p in parts], dtype=bool), counts)),
            }
            for c in schema.data_columns:
                cols[c.name] = data.column(c.name)
            full = pa.table(cols, schema=schema.arrow_schema())
            if hits_code:
                codes = np.concatenate(hits_code)
                positions = np.concatenate(hits_pos)
                # bincount, not np.unique: one pass instead of hashing every replaced row's file.
                per_file = np.bincount(codes, minlength=len(stored))
                for k in np.flatnonzero(per_file):
                    mine = positions if per_file[k] == len(codes) else positions[codes == k]
                    # Sorted and distinct (a record given twice in one commit replaces its row once);
                    # already so when the rows come in the stored order, as a re-prediction's do.
                    replaced.append({"table_name": table, "path": stored[int(k)], "positions": sorted_distinct(mine)})
            buf = io.BytesIO()
            pq.write_table(full, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
            data = buf.getvalue()
            sha = sha256_bytes(data)
            rel = f"tables/{table}/{sha}.parquet"
            path = self.root / rel
            if not path.exists():
                write_atomic(path, data, sync=False)  # made durable by the commit's barrier
                created.append(path)
            vcol = full.column("version")
            out.append({
                "table_name": table, "path": rel, "sha256": sha, "rows": full.num_rows, "bytes": len(data),
                "schema_version": schema.version, "max_version": int(pa.compute.max(vcol).as_py()),
                "tombstones": int(pa.compute.sum(full.column("tombstone").cast(pa.int32())).as_py() or 0),
            })
        return out, replaced, created

    def _lookup_versions(self, table: str, record_ids: pa.ChunkedArray | pa.Array,
                         snapshot: int) -> pa.Table | None:
        """(record_id, version, path, pos) of the highest stored version of each of
        ``record_ids`` (distinct) at ``snapshot``: the lake-relative path of the data file
        holding it and its 0-based row position there.  None when the table has no files."""
        import numpy as np

        if len(record_ids) == 0:
            return None
        prev, code, pos, stored = self._previous_versions(table, [record_ids], snapshot)
        if not stored:
            return None
        found = np.flatnonzero(prev >= 0)
        ids = record_ids.combine_chunks() if isinstance(record_ids, pa.ChunkedArray) else record_ids
        return pa.table({
            "record_id": ids.cast(pa.string()).take(pa.array(found)),
            "version": pa.array(prev[found].astype(np.int32)),
            "path": pa.DictionaryArray.from_arrays(pa.array(code[found]), pa.array(stored, pa.string())
                                                   ).cast(pa.string()),
            "pos": pa.array(pos[found])})

    def _previous_versions(self, table: str, ids: list[pa.ChunkedArray], snapshot: int) -> tuple[Any, Any, Any, list[str]]:
        """For the record ids ``ids`` (concatenated), aligned with them: the highest stored version
        at ``snapshot`` (-1: none), the index into the returned file list of the data file holding
        it and its row position there.

        A file holding exactly these ids in this order (the same rows re-versioned, as when one
        model predicts the same subjects again) matches row for row: its record_id column is
        compared, not joined.  The other files that may hold a latest version are joined with the
        ids in DuckDB, returning (row index, version, file code, position) per match; the highest
        version per row is picked in numpy.  (Grouping 10^6 matches by row inside DuckDB, with
        ``arg_max`` over file names, cost five times the join; almost every record has one match,
        its latest version, since files whose every row was replaced are not read.)"""
        import numpy as np

        n = sum(len(c) for c in ids)
        prev = np.full(n, -1, np.int64)
        code = np.full(n, -1, np.int32)
        pos = np.full(n, -1, np.int64)
        files = self._lookup_files(table, snapshot) if n else []
        if not files:
            return prev, code, pos, []
        stored = [f["path"] for f in files]
        # The chunks, not the ChunkedArrays: pa.chunked_array([chunked, ...]) would convert
        # every id to a Python string and back (a second at 10^6 ids).
        all_ids = pa.chunked_array([k for c in ids for k in (
            c.cast(pa.string()).chunks if isinstance(c, pa.ChunkedArray) else [c.cast(pa.string())])], pa.string())
        matches: list[tuple[Any, Any, Any, Any]] = []  # (idx, version, code, pos)
        rest = list(range(len(files)))
        for k, f in enumerate(files if n >= SAME_ORDER_MIN_ROWS else []):
            if f["rows"] != n:  # the catalog's row count rules a file out without reading it
                continue
            same = pq.read_table(self.root / f["path"], columns=["record_id", "version"])
            if same.column("record_id").cast(pa.string()).equals(all_ids):
                every = np.arange(n, dtype=np.int64)
                matches.append((every, same.column("version").to_numpy().astype(np.int64),
                                np.full(n, k, np.int32), every))
                rest.remove(k)
                break
        if rest:
            matches.append(self._join_versions(all_ids, [stored[k] for k in rest], np.array(rest, np.int32)))
        idx, version, at_code, at_pos = highest_per_index(n, *(np.concatenate(c) for c in zip(*matches)))
        prev[idx] = version
        code[idx] = at_code
        pos[idx] = at_pos
        return prev, code, pos, stored

    def _join_versions(self, ids: pa.ChunkedArray, paths: list[str], codes: Any) -> tuple[Any, Any, Any, Any]:
        """Every (index into ``ids``, version, code of the file, row position) where data file
        ``paths[j]`` (code ``codes[j]``) holds one of ``ids``: one DuckDB hash join reading only the
        record_id and version columns, no grouping."""
        import duckdb
        import numpy as np

        from matlake.platform.query import to_arrow_table

        fnames = [str(self.root / p) for p in paths]
        con = duckdb.connect()
        try:
            con.register("ids", pa.table({"record_id": ids, "idx": pa.array(np.arange(len(ids), dtype=np.int64))}))
            con.register("stored", pa.table({"fname": fnames, "code": pa.array(codes, pa.int32())}))
            found = to_arrow_table(con.sql(
                "select i.idx, d.version::bigint as version, s.code, d.file_row_number::bigint as pos "
                "from read_parquet(?, union_by_name=true, filename=true, file_row_number=true) d "
                "join stored s on s.fname = d.filename join ids i on i.record_id = d.record_id",
                params=[fnames]))
        finally:
            con.close()
        return tuple(found.column(c).to_numpy() for c in ("idx", "version", "code", "pos"))

    def _lookup_files(self, table: str, snapshot: int) -> list[dict[str, Any]]:
        """Files of ``table`` at ``snapshot`` that may hold a latest version: a file whose every
        row a later version replaced cannot, and is not read."""
        files = self.files_at(snapshot, table)
        if files:
            dv = cat.DeletionVector
            with self.engine.connect() as conn:
                dead = set(conn.execute(select(dv.data_file_id).where(
                    dv.table_name == table, dv.path.is_(None), dv.added_snapshot <= snapshot,
                    (dv.retired_snapshot.is_(None)) | (dv.retired_snapshot > snapshot))).scalars())
            files = [f for f in files if f["id"] not in dead]
        return files

    def latest_versions(self, table: str, record_ids: Sequence[str],
                        snapshot: int | None = None) -> dict[str, tuple[int, str]]:
        """Highest stored version of each record id at ``snapshot`` (default: the
        latest), with the lake-relative path of the data file holding it."""
        if not record_ids:
            return {}
        found = self._lookup_versions(table, pa.array(sorted(set(record_ids)), pa.string()),
                                      self.last_snapshot() if snapshot is None else snapshot)
        if found is None:
            return {}
        return {r: (int(v), p) for r, v, p in zip(found.column("record_id").to_pylist(),
                                                   found.column("version").to_pylist(),
                                                   found.column("path").to_pylist())}

    def max_versions(self, table: str, record_ids: Sequence[str]) -> dict[str, int]:
        """Highest stored version of each record id (latest snapshot)."""
        return {r: v for r, (v, _path) in self.latest_versions(table, record_ids).items()}

    def _register_deletions(self, conn, sid: int, replaced: list[dict[str, Any]], retired: list[int],
                            new_files: list[dict[str, Any]], merged_from: dict[str, list[tuple[int, int]]],
                            created: list[Path]) -> None:
        """Inside the commit transaction (lock held): give every data file whose rows this commit
        replaces a new cumulative deletion vector, retiring its previous one; when the commit
        retires files (compaction), carry their live vectors over to the merged files
        (``merged_from``: merged path -> (retired file id, row offset in the merged file))."""
        import numpy as np

        dv = cat.DeletionVector
        df = cat.DataFile
        paths = {e["path"] for e in replaced} | {f["path"] for f in new_files}
        info = {r.path: r for r in conn.execute(select(df.id, df.path, df.rows, df.table_name, df.sha256,
                                                       df.retired_snapshot).where(df.path.in_(paths)))} if paths else {}
        gone = sorted(e["path"] for e in replaced if info[e["path"]].retired_snapshot is not None)
        if gone:
            # A compaction merged the files holding the rows we replace after we looked.
            raise VersionConflict(f"data files {gone} were compacted while this commit was prepared", rebase=True)
        # file id -> positions replaced now (new ones, or carried over from retired files)
        add: dict[int, np.ndarray] = {info[e["path"]].id: e["positions"] for e in replaced}
        if retired:
            live_old = {v.data_file_id: v for v in conn.execute(select(dv.__table__).where(
                dv.data_file_id.in_(retired), dv.retired_snapshot.is_(None))).all()}
            rows_of = dict(conn.execute(select(df.id, df.rows).where(df.id.in_(retired))).all())
            for merged, sources in merged_from.items():
                carried = [self._dv_positions(live_old[fid], rows_of[fid]) + offset
                           for fid, offset in sources if fid in live_old]
                if carried:
                    add[info[merged].id] = np.concatenate(carried)
        if not add:
            return
        by_id = {r.id: r for r in info.values()}
        live = {v.data_file_id: v for v in conn.execute(select(dv.__table__).where(
            dv.data_file_id.in_(list(add)), dv.retired_snapshot.is_(None))).all()}
        rows = []
        for fid, positions in sorted(add.items()):
            f = by_id[fid]
            prev = live.get(fid)
            if prev is not None and prev.path is None:
                raise LakeError(f"data file {f.path}: every row was already replaced, found {len(positions)} "
                                f"more replaced rows")
            count = (prev.rows if prev is not None else 0) + len(positions)
            entry = {"data_file_id": fid, "table_name": f.table_name, "path": None, "sha256": "", "rows": count,
                     "added_snapshot": sid}
            if count < f.rows:
                merged = (sorted_distinct(np.concatenate([self._dv_positions(prev, f.rows), positions]))
                          if prev is not None else positions)
                if len(merged) != count:
                    raise LakeError(f"data file {f.path}: {count - len(merged)} rows replaced twice")
                fields, made = write_deletion_vector(self.root, f.table_name, f.sha256, merged)
                entry.update(fields)
                if made:
                    created.append(self.root / fields["path"])
            rows.append(entry)
        if live:
            conn.execute(update(dv).where(dv.id.in_([v.id for v in live.values()])).values(retired_snapshot=sid))
        conn.execute(insert(dv), rows)

    def _dv_positions(self, vector: Any, file_rows: int):
        """The replaced row positions (sorted int64) of a deletion vector row."""
        import numpy as np

        if vector.path is None:
            return np.arange(file_rows, dtype=np.int64)
        return pq.read_table(self.root / vector.path).column("pos").to_numpy()

    def put_object(self, data: bytes) -> str:
        """Write an object to the store (not yet registered: add it to a ChangeSet)."""
        return self.objects.put(data)

    # ---- deleting (tombstones)
    def delete(self, table: str, record_ids: Sequence[str], reason: str = "") -> int | None:
        """Tombstone records: a new version marks them deleted; older versions stay readable."""
        schema = schemas.get(table)
        read_at = self.last_snapshot()
        rel = self.sql(f"select * from {table} where record_id in (select unnest(?))", as_of=read_at,
                       params=[list(record_ids)])
        current = rel.arrow()
        missing = set(record_ids) - set(current.column("record_id").to_pylist())
        if missing:
            raise LakeError(f"table {table}: no live records with ids {sorted(missing)}")
        cs = ChangeSet("delete", reason)
        cs.read_snapshot = read_at
        act = cs.activity("delete", f"delete:{table}", parameters={"reason": reason, "n": len(record_ids)})
        for rid, ver in zip(current.column("record_id").to_pylist(), current.column("version").to_pylist()):
            act.used("record", rid, version=ver, table=table)
        data = current.select(["record_id"] + [c.name for c in schema.data_columns])
        # Strict: the tombstones replace exactly the versions read above.
        cs.add_rows(table, data, act, version=None, tombstone=True, rebase=False)
        return self.commit(cs)

    # ---- garbage collection
    def gc(self, grace_seconds: float = 3600.0, dry_run: bool = False) -> dict[str, Any]:
        """Remove files that no snapshot registers (left by crashed or lost commits).

        Files younger than ``grace_seconds`` are kept: they may belong to a
        commit in flight in another process.
        """
        with self.engine.connect() as conn:
            registered = set(conn.execute(select(cat.DataFile.path)).scalars())
            registered |= set(conn.execute(select(cat.DeletionVector.path).where(
                cat.DeletionVector.path.is_not(None))).scalars())
            objs = set(conn.execute(select(cat.StoredObject.sha256)).scalars())
            models = set(conn.execute(select(cat.ModelVersion.artifact_sha256)).scalars())
        keep_objects = objs | models
        cutoff = time.time() - grace_seconds
        removed: list[str] = []
        freed = 0
        tables_dir = self.config.tables_dir
        if tables_dir.exists():
            for path in tables_dir.rglob("*"):
                if not path.is_file():
                    continue
                rel = path.relative_to(self.root).as_posix()
                if rel in registered or path.stat().st_mtime > cutoff:
                    continue
                removed.append(rel)
                freed += path.stat().st_size
                if not dry_run:
                    path.unlink()
        for path in self.objects.iter_files():
            sha = ObjectStore.sha_of_path(path)
            if (sha is not None and sha in keep_objects) or path.stat().st_mtime > cutoff:
                continue
            removed.append(path.relative_to(self.root).as_posix())
            freed += path.stat().st_size
            if not dry_run:
                path.unlink()
        return {"removed": removed, "bytes": freed, "dry_run": dry_run}

    def structure(self, record_id: str, as_of: int | str | None = None):
        """The pymatgen Structure of a `structures` record."""
        from pymatgen.core import Structure

        row = self.sql("select structure_json from structures where record_id = ?", as_of, [record_id]).fetchone()
        if row is None:
            raise LakeError(f"no structure with record_id {record_id!r}")
        return Structure.from_dict(json.loads(row[0]))

    def volumetric(self, record_id: str, as_of: int | str | None = None) -> "VolumetricGrid":
        """The grid of a `volumetric` record, exactly as parsed, with its structure."""
        from matlake.ingest.base import decode_array

        row = self.sql("select kind, structure_id, array_sha256, diff_sha256, data_unit from volumetric "
                       "where record_id = ?", as_of, [record_id]).fetchone()
        if row is None:
            raise LakeError(f"no volumetric record with record_id {record_id!r}")
        kind, sid, arr, diff, unit = row
        return VolumetricGrid(
            record_id=record_id, kind=kind, data=decode_array(self.objects.get(arr)),
            diff=decode_array(self.objects.get(diff)) if diff else None, unit=unit,
            structure=self.structure(sid, as_of) if sid else None,
        )

    # ---- chunked arrays: micrographs, masks, scattering frames (platform/images.py)
    def put_chunked(self, array: Any, chunks: tuple[int, ...] | None = None, codec: str = "raw"):
        """Store ``array`` as a chunked object (:mod:`matlake.arrays`); returns a ``ChunkedRef``.
        The commit that names it must register it (``derivation.ObjectSpec.stored(ref)``)."""
        from matlake.platform.images import put_chunked

        return put_chunked(self, array, chunks, codec)

    def chunked(self, sha256: str, index_sha256: str):
        """The lazy, per-chunk verified array of a chunked object."""
        from matlake.platform.images import open_chunked

        return open_chunked(self, sha256, index_sha256)

    def image(self, record_id: str, as_of: int | str | None = None):
        """A micrograph or mask as a ``LazyImage`` (tiles read on demand, with its calibration)."""
        from matlake.platform.images import image

        return image(self, record_id, as_of)

    def series(self, series_id: str, as_of: int | str | None = None) -> dict[str, Any]:
        """The ``scattering_series`` row of ``series_id``."""
        from matlake.platform.images import series

        return series(self, series_id, as_of)

    def frames(self, series_id: str, t0: int | None = None, t1: int | None = None, as_of: int | str | None = None):
        """Frames ``t0:t1`` of a scattering series as a numpy array (only those frames are read)."""
        from matlake.platform.images import frames

        return frames(self, series_id, t0, t1, as_of)

    # ---- conveniences that delegate to their owners
    def ingest(self, paths: Sequence[str | os.PathLike], **kwargs: Any):
        from matlake.platform.ingestion import ingest

        return ingest(self, paths, **kwargs)

    def ingest_frame(self, frame: Any, table_map: Any, **kwargs: Any):
        """A pandas DataFrame through a table map (see :func:`matlake.platform.ingestion.ingest_frame`)."""
        from matlake.platform.ingestion import ingest_frame

        return ingest_frame(self, frame, table_map, **kwargs)

    def train(self, module: Any, as_of: int | str | None = None, **kwargs: Any):
        from matlake.platform.modeling import train

        return train(self, module, as_of=as_of, **kwargs)

    def predict(self, model_id: str, **kwargs: Any):
        from matlake.platform.modeling import predict

        return predict(self, model_id, **kwargs)

    def lineage(self, entity_id: str, **kwargs: Any):
        from matlake.platform.provenance import lineage

        return lineage(self, entity_id, **kwargs)


@dataclass
class VolumetricGrid:
    record_id: str
    kind: str
    data: Any  # numpy array, shape = grid
    diff: Any | None
    unit: str
    structure: Any


__all__ = ["ChangeSet", "DuplicateSource", "Lake", "LakeError", "LakeNotFound", "ObjectCorrupted", "PendingActivity",
           "VersionConflict", "VolumetricGrid"]
