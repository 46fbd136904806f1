"""Reading a lake's catalog for queries, with SQLAlchemy or with the standard library.

A query needs only a few catalog reads: the last snapshot id, the snapshot a tag
names, the data files and deletion vectors live at a snapshot, and the small
catalog tables shown as views (``snapshots``, ``ledger``, ...).
:class:`CatalogReads` implements all of them, and the query engines built on
them, over one primitive, :meth:`CatalogReads.catalog_rows` (read-only SQL with
``:name`` parameters -> column names and row tuples).  Two classes provide it:

* :class:`~matlake.platform.lake.Lake`, through its SQLAlchemy engine (every
  catalog, and everything that writes);
* :class:`ReadOnlyLake`, through a read-only stdlib ``sqlite3`` connection, for a
  SQLite catalog.  It imports neither SQLAlchemy nor Alembic, which cost more
  than the rest of ``matlake sql "select 1"`` together.

Both feed the same :class:`~matlake.platform.query.QueryEngine`, so a query gives
the same answer through either.  :func:`open_for_query` picks the light one when
it can and falls back to :meth:`Lake.open <matlake.platform.lake.Lake.open>`
otherwise (PostgreSQL, a SQLite URL with options, a catalog file that cannot be
opened read-only, a revision other than the code's head), so every failure is
reported exactly as before: a revision mismatch, in particular, is still
confirmed by Alembic before the lake refuses to open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from matlake.platform.config import LakeConfig, default_location, is_url, local_config
from matlake.platform.errors import LakeError
from matlake.platform.objects import ObjectStore

if TYPE_CHECKING:
    from typing import Self

    from matlake.platform.query import QueryEngine, Result

# The catalog reads of a query, in SQL that SQLite and PostgreSQL both run (``:name`` parameters).
LAST_SNAPSHOT_SQL = "select last_snapshot from lake_state where id = 1"
TAG_SNAPSHOT_SQL = "select snapshot_id from tags where name = :name"
TAG_NAMES_SQL = "select name from tags order by name"
FILES_AT_SQL = ("select table_name, path, rows, max_version, tombstones, schema_version, id, bytes from data_files "
                "where added_snapshot <= :sid and (retired_snapshot is null or retired_snapshot > :sid)")
VECTORS_AT_SQL = ("select data_file_id, path, rows from deletion_vectors where added_snapshot <= :sid "
                  "and (retired_snapshot is null or retired_snapshot > :sid)")
MAX_CACHED_ENGINES = 8  # query engines kept per lake object (one per snapshot queried)


class CatalogReads:
    """The catalog reads a query needs, and the per-snapshot query engines built on them.

    A subclass sets ``root`` (the lake folder), ``objects`` (its
    :class:`ObjectStore`) and ``_query_engines`` (a dict), and implements
    :meth:`catalog_rows` and :meth:`_release` (its catalog connection).  Either kind of
    lake is a context manager that closes it."""

    root: Path
    objects: ObjectStore
    _query_engines: dict[int, Any]

    def close(self) -> None:
        self._query_engines.clear()
        self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Self":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def catalog_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of one read-only catalog query with ``:name`` parameters."""
        raise NotImplementedError

    # ---- snapshots and tags
    def last_snapshot(self) -> int:
        rows = self.catalog_rows(LAST_SNAPSHOT_SQL)[1]
        if len(rows) != 1:
            raise LakeError(f"catalog: expected one lake_state row, found {len(rows)}")
        return int(rows[0][0])

    def resolve_snapshot(self, as_of: int | str | None = None) -> int:
        """A snapshot id from an id, a tag name, 'latest' or None (latest)."""
        last = self.last_snapshot()
        if as_of is None or as_of == "latest":
            return last
        if isinstance(as_of, int) or (isinstance(as_of, str) and as_of.isdigit()):
            sid = int(as_of)
            if sid < 0 or sid > last:
                raise LakeError(f"snapshot {sid} does not exist (latest is {last})")
            return sid
        found = self.catalog_rows(TAG_SNAPSHOT_SQL, {"name": as_of})[1]
        if not found or found[0][0] is None:
            known = [r[0] for r in self.catalog_rows(TAG_NAMES_SQL)[1]]
            raise LakeError(f"unknown tag or snapshot {as_of!r}; known tags: {known}")
        return int(found[0][0])

    # ---- the manifest at a snapshot
    def files_at(self, snapshot: int, table: str | None = None) -> list[dict[str, Any]]:
        """Data files visible at ``snapshot``: registered at or before it, not retired at or before it."""
        sql, params = FILES_AT_SQL, {"sid": int(snapshot)}
        if table is not None:
            sql, params = sql + " and table_name = :table", {**params, "table": table}
        cols, rows = self.catalog_rows(sql + " order by id", params)
        return [dict(zip(cols, r)) for r in rows]

    def deletion_vectors_at(self, snapshot: int) -> dict[int, tuple[str | None, int]]:
        """data file id -> (sidecar path or None for 'every row', replaced rows), live at ``snapshot``."""
        rows = self.catalog_rows(VECTORS_AT_SQL, {"sid": int(snapshot)})[1]
        return {int(fid): (path, int(n)) for fid, path, n in rows}

    # ---- querying (platform.query does the work)
    def query_engine(self, as_of: int | str | None = None) -> "QueryEngine":
        from matlake.platform.query import QueryEngine

        sid = self.resolve_snapshot(as_of)
        qe = self._query_engines.get(sid)
        if qe is None:
            qe = QueryEngine(self, sid)
            if len(self._query_engines) > MAX_CACHED_ENGINES:
                self._query_engines.clear()
            self._query_engines[sid] = qe
        return qe

    def sql(self, query: str, as_of: int | str | None = None, params: Sequence[Any] | None = None) -> "Result":
        """Run DuckDB SQL over the views at a snapshot; returns a :class:`~matlake.platform.query.Result`
        (``.df()``, ``.arrow()``, ``.fetchall()``, ``.fetchone()`` on DuckDB 1.4 to 2.x)."""
        return self.query_engine(as_of).sql(query, params=params)

    def table(self, name: str, as_of: int | str | None = None, all_versions: bool = False) -> "Result":
        """Table or view ``name`` at a snapshot (latest versions unless ``all_versions``)."""
        return self.query_engine(as_of).table(name, all_versions=all_versions)


class ReadOnlyLake(CatalogReads):
    """A lake with a SQLite catalog, opened for queries only, through a read-only stdlib
    ``sqlite3`` connection (no SQLAlchemy).  Make one with :func:`open_for_query`, which
    checks the catalog's revision first.  Like a ``sqlite3`` connection, use it from the
    thread that opened it."""

    def __init__(self, config: LakeConfig, connection: sqlite3.Connection) -> None:
        self.config = config
        self.root = config.root
        self.objects = ObjectStore(config.objects_dir)
        self._con = connection
        self._query_engines = {}

    @classmethod
    def connect(cls, config: LakeConfig) -> "ReadOnlyLake | None":
        """The read-only lake when its catalog is a plain SQLite file at the code's head
        revision; None when the full :class:`Lake` must open it (and report what is wrong)."""
        from matlake.platform import migrate

        path = sqlite_catalog_path(config.catalog_url)
        if path is None:
            return None
        try:
            # mode=ro: this connection can never write; WAL readers do not block the lake's writers.
            # timeout: wait out a checkpoint's lock as long as the full lake's connections do.
            con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=120, isolation_level=None)
        except sqlite3.Error:
            return None  # e.g. no catalog file: Lake.open reports it as it always has
        try:
            if migrate.sqlite_revisions(con) != [migrate.head()]:
                con.close()
                return None  # another revision (or none, or several): Alembic confirms and reports it
        except sqlite3.Error:
            con.close()
            return None
        return cls(config, con)

    def catalog_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        cur = self._con.execute(sql, dict(params or {}))
        try:
            return [d[0] for d in cur.description], cur.fetchall()
        finally:
            cur.close()

    def _release(self) -> None:
        self._con.close()

    def __repr__(self) -> str:
        return f"ReadOnlyLake({str(self.root)!r})"


def sqlite_catalog_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` catalog URL (as :func:`~matlake.platform.config.sqlite_url`
    writes them, read as SQLAlchemy reads them); None for anything else (another database,
    an in-memory catalog, URL options), which only the full :class:`Lake` opens."""
    scheme, sep, rest = url.partition(":///")
    if not sep or scheme not in ("sqlite", "sqlite+pysqlite") or "?" in rest:
        return None
    database = unquote(rest)
    if database in ("", ":memory:"):
        return None
    return Path(database)


def open_for_query(path_or_url: str | Path | None = None) -> CatalogReads:
    """A lake to query: a :class:`ReadOnlyLake` for a SQLite catalog at the code's
    revision, else :meth:`Lake.open <matlake.platform.lake.Lake.open>`.  Finds the lake
    as ``Lake.open`` does (``path_or_url``, else ``$MATLAKE_LAKE``, else the current folder)."""
    if not is_url(default_location(path_or_url)):
        light = ReadOnlyLake.connect(local_config(path_or_url))
        if light is not None:
            return light
    from matlake.platform.lake import Lake

    return Lake.open(path_or_url)
