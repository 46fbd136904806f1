"""DuckDB views over one snapshot of the lake.

Each process queries with an in-memory DuckDB connection: science tables are
views over the Parquet files registered at the snapshot (``T_all`` holds every
version, ``T`` the latest live version of each record), small catalog tables
are handed over as Arrow when a query mentions them, and the domain views of
:mod:`matlake.schemas` sit on top.  Nothing here takes a lock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from matlake import schemas

if TYPE_CHECKING:
    from matlake.platform.reader import CatalogReads

# Catalog views: name -> SQL over the catalog (parameter :sid = the snapshot).
CATALOG_VIEWS: dict[str, str] = {
    "snapshots": "select snapshot_id, created_at, kind, message from snapshots where snapshot_id <= :sid",
    "tags": "select name, snapshot_id, created_at, note from tags where snapshot_id <= :sid",
    "activities": "select activity_id, kind, name, agent_version, parameters_json, matlake_version, git_commit, "
                  "\"user\", host, started_at, ended_at, status, error, snapshot_id from activities "
                  "where snapshot_id <= :sid",
    "catalog_links": "select l.activity_id, l.role, l.entity_kind, l.entity_id, l.entity_version, l.table_name "
                     "from links l join activities a on a.activity_id = l.activity_id where a.snapshot_id <= :sid",
    "ledger": "select id, source_path, sha256, size, parser, parser_version, status, message, record_ids_json, "
              "n_records, activity_id, snapshot_id, created_at, attempt_key, detail from ingest_ledger "
              "where snapshot_id <= :sid",
    "model_versions": "select model_id, name, version, module, module_version, target, view_sql, snapshot_id, "
                      "metrics_json, params_json, artifact_sha256, n_train, activity_id, created_at "
                      "from model_versions where snapshot_id <= :sid",
    "objects": "select sha256, hash_algo, size, media_type, original_name, snapshot_id from objects "
               "where snapshot_id <= :sid",
    "data_files": "select id, table_name, path, sha256, rows, bytes, schema_version, max_version, tombstones, "
                  "added_snapshot, retired_snapshot from data_files where added_snapshot <= :sid",
    "deletion_vectors": "select data_file_id, table_name, path, rows, added_snapshot, retired_snapshot "
                        "from deletion_vectors where added_snapshot <= :sid",
    "used_sets": "select u.activity_id, u.table_name, u.snapshot_id, u.view_sql, u.n_rows, u.digest, u.members, "
                 "u.members_sha256 from used_sets u join activities a on a.activity_id = u.activity_id "
                 "where a.snapshot_id <= :sid",
}
# Views derived from catalog views and tables; created on demand with their dependencies.
DERIVED_VIEWS = ("links",)
READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA"}  # PRAGMA: e.g. show_tables


class QueryError(Exception):
    """A query that cannot run (bad SQL, a write through a read-only channel)."""


class QueryEngine:
    """Views over one snapshot.  Building one reads two small catalog lists (the
    snapshot's data files and their deletion vectors); a view is created the first
    time a query names it (with the views it depends on), so a query over one
    table never plans scans of the others.

    ``catalog`` is anything with the catalog reads of
    :class:`~matlake.platform.reader.CatalogReads`: a full ``Lake`` (SQLAlchemy) or
    a ``ReadOnlyLake`` (stdlib sqlite3); the engine is the same for both."""

    def __init__(self, catalog: "CatalogReads", snapshot: int) -> None:
        self.catalog = catalog
        self.root = catalog.root
        self.snapshot = snapshot
        self.con = duckdb.connect(":memory:")
        # Many small files are opened again by every query: keep their footers.
        self.con.execute("set parquet_metadata_cache = true")
        self._registered: set[str] = set()
        self._created: set[str] = set()
        self._files: dict[str, list[dict[str, Any]]] = {}
        for f in catalog.files_at(snapshot):
            self._files.setdefault(f["table_name"], []).append(f)
        # data file id -> (sidecar path or None for 'every row', replaced rows), live at this snapshot
        self._vectors = catalog.deletion_vectors_at(snapshot)
        self.row_tables: list[str] = list(schemas.TABLES)

    # ---- views, created when first named
    def ensure(self, names: Sequence[str]) -> None:
        """Create the views ``names`` (tables, ``T_all``, domain views) and what they depend on."""
        for name in names:
            base = name[:-4] if name.endswith("_all") else name
            if base in schemas.TABLES:
                self._row_views(base)
            elif name in schemas.VIEWS and name not in self._created:
                self._created.add(name)  # first: a view naming itself must not recurse
                self.ensure(sorted(_words(schemas.VIEWS[name])))
                self.con.execute(f"create view {name} as {schemas.VIEWS[name]}")

    def _row_views(self, name: str) -> None:
        if name in self._created:
            return
        self._created.add(name)
        schema = schemas.TABLES[name]
        fs = self._files.get(name, [])
        if not fs:
            self.con.register(f"_empty_{name}", schema.arrow_schema().empty_table())
            self.con.execute(f"create view {name}_all as select * from _empty_{name}")
            self.con.execute(f"create view {name} as select * exclude (tombstone) from {name}_all")
            return
        small = _small_files(fs)
        small_ids = {f["id"] for f in small}
        big = [f for f in fs if f["id"] not in small_ids]
        if small:
            # Data files never change: many small ones are read once, with their row positions,
            # into one in-memory table, so warm queries do not open each file again.
            self.con.execute(f"create temp table _small_{name} as select * from "
                             f"{_scan(self.root, small, positions=True)}")
        everything = []
        if big:
            everything.append(f"select * from {_scan(self.root, big)}")
        if small:
            everything.append(f"select * exclude (filename, file_row_number) from _small_{name}")
        self.con.execute(f"create view {name}_all as " + " union all by name ".join(everything))

        # A file whose every row was replaced leaves the latest view; a partly replaced one is
        # read with its row positions and anti-joined with its deletion vector, inside DuckDB.
        dead = [f for f in fs if f["id"] in self._vectors and self._vectors[f["id"]][0] is None]
        dirty = [f for f in fs if f["id"] in self._vectors and self._vectors[f["id"]][0] is not None]
        dirty_ids = {f["id"] for f in dirty} | {f["id"] for f in dead}
        replaced = ""
        if dirty:
            mapping = pa.table({
                "dv_file": [str(self.root / self._vectors[f["id"]][0]) for f in dirty],
                "data_file": [str(self.root / f["path"]) for f in dirty]})
            self.con.register(f"_dvmap_{name}", mapping)
            dvs = ", ".join(_quote(p) for p in mapping.column("dv_file").to_pylist())
            replaced = (f" anti join (select m.data_file as filename, v.pos as file_row_number from "
                        f"read_parquet([{dvs}], filename=true) v join _dvmap_{name} m on m.dv_file = v.filename) x "
                        f"using (filename, file_row_number)")
        tombstones = any(f["tombstones"] for f in fs)
        parts = []
        clean_big = [f for f in big if f["id"] not in dirty_ids]
        dirty_big = [f for f in big if f["id"] in dirty_ids and f not in dead]
        if clean_big:
            parts.append(f"select * exclude (tombstone) from {_scan(self.root, clean_big)}"
                         + (" where not tombstone" if tombstones else ""))
        if dirty_big:
            parts.append(f"select d.* exclude (tombstone, filename, file_row_number) from "
                         f"{_scan(self.root, dirty_big, positions=True)} d{replaced}"
                         + (" where not d.tombstone" if tombstones else ""))
        if small:
            gone = [f for f in small if f in dead]
            conditions = (["not d.tombstone"] if tombstones else []) + (
                [f"d.filename not in ({', '.join(_quote(str(self.root / f['path'])) for f in gone)})"]
                if gone else [])
            parts.append(f"select d.* exclude (tombstone, filename, file_row_number) from _small_{name} d"
                         + (replaced if any(f in dirty for f in small) else "")
                         + (" where " + " and ".join(conditions) if conditions else ""))
        if not parts:
            self.con.execute(f"create view {name} as select * exclude (tombstone) from {name}_all limit 0")
            return
        self.con.execute(f"create view {name} as " + " union all by name ".join(parts))

    # ---- catalog views, registered when first mentioned
    def _prepare(self, query: str) -> None:
        words = _words(query)
        if "links" in words:
            words |= {"catalog_links", "used_sets"}
        for name in CATALOG_VIEWS:
            if name in words and name not in self._registered:
                self._register_catalog(name)
        self.ensure(sorted(w for w in words if w in schemas.VIEWS or w in schemas.TABLES
                           or (w.endswith("_all") and w[:-4] in schemas.TABLES)))
        if "links" in words and "links" not in self._registered:
            self._links_view()

    def _links_view(self) -> None:
        """``links``: the catalog's links, each row's *generated* link, and the members of used sets."""
        self.ensure([f"{t}_all" for t in self.row_tables])
        # entity_version cast: a catalog view registered from zero rows has text columns (see _register_catalog)
        parts = ["select activity_id, role, entity_kind, entity_id, entity_version::integer as entity_version, "
                 "table_name from catalog_links"]
        for t in self.row_tables:
            parts.append(f"select activity_id, 'generated', 'record', record_id, version, '{t}' from {t}_all")
            if any(c.name == "subject_id" for c in schemas.get(t).columns):
                parts.append(f"select u.activity_id, 'used', 'record', d.subject_id, null::integer, u.table_name "
                             f"from used_sets u join (select distinct activity_id, subject_id from {t}_all) d "
                             f"on d.activity_id = u.activity_id where u.members = 'generated'")
        sets = self.con.execute("select activity_id, table_name, members_sha256 from used_sets "
                                "where members = 'object'").fetchall()
        for aid, table, sha in sets:
            parts.append(f"select '{aid}', 'used', 'record', record_id, version::integer, '{table}' "
                         f"from read_parquet({_quote(str(self.catalog.objects.path(sha)))})")
        self.con.execute("create view links as " + " union all ".join(parts))
        self._registered.add("links")

    def _register_catalog(self, name: str) -> None:
        cols, rows = self.catalog.catalog_rows(CATALOG_VIEWS[name], {"sid": self.snapshot})
        arrays = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        table = pa.table(arrays) if rows else pa.table({c: pa.array([], pa.string()) for c in cols})
        self.con.register(f"_cat_{name}", table)
        self.con.execute(f"create or replace view {name} as select * from _cat_{name}")
        self._registered.add(name)

    # ---- public
    def sql(self, query: str, params: Sequence[Any] | None = None, read_only: bool = False):
        if read_only:
            check_read_only(query, self.con)
        self._prepare(query)
        try:
            rel = self.con.sql(query, params=list(params)) if params else self.con.sql(query)
        except duckdb.Error as exc:
            raise QueryError(error_message(exc, self.names() + [f"{t}_all" for t in self.row_tables])) from exc
        return Result(rel)

    def table(self, name: str, all_versions: bool = False):
        known = set(self.row_tables) | set(schemas.VIEWS) | set(CATALOG_VIEWS) | set(DERIVED_VIEWS)
        if name not in known:
            raise QueryError(f"unknown table or view {name!r}; known: {sorted(known)}")
        target = f"{name}_all" if all_versions and name in self.row_tables else name
        return self.sql(f"select * from {target}")

    def names(self) -> list[str]:
        return sorted(set(self.row_tables) | set(schemas.VIEWS) | set(CATALOG_VIEWS) | set(DERIVED_VIEWS))


def to_arrow_table(source: Any) -> pa.Table:
    """Every row of a DuckDB relation, or of the result pending on a connection
    after ``execute``, as one pyarrow Table, on DuckDB 1.4 to 2.x.

    DuckDB 1.x: ``.arrow()`` is a Table; 2.x: ``.arrow()`` streams a
    RecordBatchReader and a connection has only ``.to_arrow_table()``, which
    1.4 connections lack."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        fetch = getattr(source, name, None)
        if fetch is not None:
            out = fetch()
            return out.read_all() if isinstance(out, pa.RecordBatchReader) else out
    raise TypeError(f"expected a DuckDB relation or connection, found {type(source).__name__}")


def to_arrow_reader(source: Any, batch_rows: int) -> pa.RecordBatchReader:
    """The rows of a DuckDB relation or pending connection result as a stream of
    record batches of at most ``batch_rows`` rows, on DuckDB 1.4 to 2.x."""
    for name in ("to_arrow_reader", "fetch_record_batch", "fetch_arrow_reader"):
        fetch = getattr(source, name, None)
        if fetch is not None:
            return fetch(batch_rows)
    raise TypeError(f"expected a DuckDB relation or connection, found {type(source).__name__}")


class Result:
    """A DuckDB relation with stable conveniences across DuckDB 1.4 to 2.x:
    ``.df()`` (pandas), ``.arrow()`` (a pyarrow Table, never a stream),
    ``.arrow_reader()`` (a stream of record batches), ``.fetchall()``,
    ``.fetchone()`` (DuckDB 2 relations have none), ``.columns``.  Anything
    else is the relation's own API (``.relation``), which differs between releases."""

    def __init__(self, relation: "duckdb.DuckDBPyRelation | None") -> None:
        self.relation = relation

    def arrow(self) -> pa.Table:
        if self.relation is None:
            return pa.table({})
        return to_arrow_table(self.relation)

    def arrow_reader(self, batch_rows: int = 65_536) -> pa.RecordBatchReader:
        """The rows as record batches of at most ``batch_rows`` rows, read as consumed."""
        if self.relation is None:
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        return to_arrow_reader(self.relation, batch_rows)

    def df(self):
        import pandas as pd

        return self.relation.df() if self.relation is not None else pd.DataFrame()

    def fetchall(self) -> list[tuple]:
        return self.relation.fetchall() if self.relation is not None else []

    def fetchone(self) -> tuple | None:
        """The first row, or None when there is none."""
        rows = self.relation.limit(1).fetchall() if self.relation is not None else []
        return rows[0] if rows else None

    @property
    def columns(self) -> list[str]:
        return list(self.relation.columns) if self.relation is not None else []

    def __getattr__(self, name: str):
        if name == "relation":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.relation, name)

    def __repr__(self) -> str:
        return repr(self.relation)


# Small-file cache of a query engine: a table's files under SMALL_FILE_BYTES are held in memory
# once it has SMALL_CACHE_MIN_FILES of them, up to SMALL_CACHE_BYTES of Parquet per table.
SMALL_FILE_BYTES = 1 << 20
SMALL_CACHE_MIN_FILES = 8
SMALL_CACHE_BYTES = 64 << 20


def _small_files(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The files of one table worth caching in memory (see SMALL_FILE_BYTES); none if too few."""
    if len(files) < SMALL_CACHE_MIN_FILES:
        return []
    budget, out = SMALL_CACHE_BYTES, []
    for f in files:
        size = int(f.get("bytes") or SMALL_FILE_BYTES)
        if size < SMALL_FILE_BYTES and size <= budget:
            out.append(f)
            budget -= size
    return out if len(out) >= SMALL_CACHE_MIN_FILES else []


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _words(sql: str) -> set[str]:
    """The identifiers a query may name (lower case)."""
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql.lower()))


def _scan(root: Path, files: list[dict[str, Any]], positions: bool = False) -> str:
    """A DuckDB scan of ``files``.  Files of one schema version have the same columns, so each
    version is one ``read_parquet`` that binds from a single footer; only several versions
    side by side (older files with fewer columns) are combined by name.  (``union_by_name``
    over every file read all their footers each time a query was bound: 3.5x at 500 files.)"""
    extra = ", filename=true, file_row_number=true" if positions else ""
    by_version: dict[int, list[str]] = {}
    for f in files:
        by_version.setdefault(int(f.get("schema_version") or 0), []).append(_quote(str(root / f["path"])))
    scans = [f"select * from read_parquet([{', '.join(paths)}]{extra})" for _v, paths in sorted(by_version.items())]
    if len(scans) == 1:
        return scans[0][len("select * from "):]
    return "(" + " union all by name ".join(scans) + ")"


_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")
_MAX_ERROR_LINES = 8


def error_message(exc: BaseException, names: Sequence[str] = ()) -> str:
    """DuckDB's error as a few lines: the message, then its hints.

    DuckDB puts what helps the user after the first line: "Candidate
    bindings: ...", "Did you mean ...?", candidate functions, or the query
    line with a caret under the error.  They are kept (at most
    ``_MAX_ERROR_LINES`` lines).  For an unknown table, DuckDB can only suggest
    the views registered so far or its own system tables, so the suggestion
    is made from ``names`` (the lake's tables and views) instead.
    """
    lines = [ln.rstrip() for ln in str(exc).strip("\n").splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    missing = _MISSING_TABLE.search(lines[0])
    if missing and names:
        import difflib

        wanted = missing.group(1).strip("\"'").split(".")[-1]
        lines = [lines[0]] + [ln for ln in lines[1:] if not ln.startswith("Did you mean")]
        pool = sorted({n for n in names if wanted.lower().endswith("_all") or not n.endswith("_all")})
        close = difflib.get_close_matches(wanted.lower(), pool, n=3, cutoff=0.6)
        if close:
            lines.append("Did you mean " + " or ".join(f'"{c}"' for c in close) + "?")
        else:
            lines.append("Tables and views: " + ", ".join(n for n in pool if not n.endswith("_all")))
    if len(lines) > _MAX_ERROR_LINES:
        lines = lines[:_MAX_ERROR_LINES - 1] + [f"... ({len(lines) - _MAX_ERROR_LINES + 1} more lines)"]
    return "\n".join(lines)


def check_read_only(query: str, con: "duckdb.DuckDBPyConnection | None" = None) -> None:
    """Refuse anything but SELECT-like statements (the CLI's default).  ``con``: a connection
    to parse with (default: DuckDB's module-level one, a database of its own)."""
    try:
        statements = (duckdb if con is None else con).extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {error_message(exc)}") from exc
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_TYPES:
            raise QueryError(f"read-only query expected, found a {kind} statement (use --write to allow it)")
