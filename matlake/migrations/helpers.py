"""Data steps used by migrations (kept beside them, as AiiDA does)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def backfill_superseded(conn: sa.Connection) -> None:
    """Register, for every record with several versions, each replaced row version.

    The replacing snapshot is the one that added the file holding the next
    version.  Needs the lake root (``lake_settings.root``) to read the files;
    a catalog without data files has nothing to do.
    """
    files = conn.execute(sa.text(
        "select id, table_name, path, added_snapshot from data_files where max_version > 1")).fetchall()
    if not files:
        return
    root = conn.execute(sa.text("select value from lake_settings where key = 'root'")).scalar()
    all_files = conn.execute(sa.text("select id, table_name, path, added_snapshot from data_files")).fetchall()
    import duckdb

    con = duckdb.connect()
    by_table: dict[str, list] = {}
    for f in all_files:
        by_table.setdefault(f.table_name, []).append(f)
    rows = []
    for table in {f.table_name for f in files}:
        meta = {str(Path(root) / f.path): f for f in by_table[table]}
        found = con.execute(
            "select record_id, version, filename from read_parquet(?, filename=true, union_by_name=true)",
            [list(meta)]).fetchall()
        versions: dict[str, list[tuple[int, str]]] = {}
        for rid, ver, fname in found:
            versions.setdefault(rid, []).append((ver, fname))
        for rid, vs in versions.items():
            vs.sort()
            for (ver, fname), (_next_ver, next_fname) in zip(vs, vs[1:]):
                rows.append({"table_name": table, "data_file_id": meta[fname].id, "record_id": rid,
                             "version": ver, "snapshot_id": meta[next_fname].added_snapshot})
    con.close()
    if rows:
        conn.execute(sa.text("insert into superseded (table_name, data_file_id, record_id, version, snapshot_id) "
                             "values (:table_name, :data_file_id, :record_id, :version, :snapshot_id)"), rows)
