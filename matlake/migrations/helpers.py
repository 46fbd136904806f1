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


def backfill_attempt_keys(conn: sa.Connection) -> None:
    """Give every existing non-``ok`` ledger row the attempt key of the kind and
    options kept in its ingest activity (``auto`` and none for old activities)."""
    import json

    from matlake.platform.ingestion import attempt_key

    rows = conn.execute(sa.text(
        "select l.id, a.parameters_json from ingest_ledger l join activities a on a.activity_id = l.activity_id "
        "where l.status <> 'ok'")).fetchall()
    updates = []
    for lid, params_json in rows:
        params = json.loads(params_json or "{}")
        updates.append({"id": lid, "key": attempt_key(params.get("kind", "auto"), params.get("options") or {})})
    if updates:
        conn.execute(sa.text("update ingest_ledger set attempt_key = :key where id = :id"), updates)


def drop_extra_attempts(conn: sa.Connection) -> None:
    """Before the attempt key leaves the ledger's key: keep one row per (sha256,
    parser, parser_version), the ``ok`` one when there is one, else the oldest."""
    rows = conn.execute(sa.text(
        "select id, sha256, parser, parser_version, status from ingest_ledger order by id")).fetchall()
    keep: dict[tuple[str, str, str], tuple[int, str]] = {}
    drop: list[int] = []
    for lid, sha, parser, version, status in rows:
        key = (sha, parser, version)
        if key not in keep:
            keep[key] = (lid, status)
        elif status == "ok" and keep[key][1] != "ok":
            drop.append(keep[key][0])
            keep[key] = (lid, status)
        else:
            drop.append(lid)
    for i in range(0, len(drop), 500):
        conn.execute(sa.text("delete from ingest_ledger where id in :ids").bindparams(
            sa.bindparam("ids", expanding=True)), {"ids": drop[i:i + 500]})
