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


def superseded_to_deletion_vectors(conn: sa.Connection) -> None:
    """Turn the ``superseded`` rows (record id and version per replaced row) into deletion
    vectors: per data file, one cumulative vector per snapshot that replaced some of its
    rows, each retired by the next; a file whose every row is replaced gets no sidecar."""
    entries = conn.execute(sa.text(
        "select s.data_file_id, s.record_id, s.version, s.snapshot_id, f.path, f.rows, f.table_name, f.sha256, "
        "f.added_snapshot from superseded s join data_files f on f.id = s.data_file_id")).fetchall()
    if not entries:
        return
    import duckdb
    import numpy as np
    import pyarrow as pa

    from matlake.platform.lake import write_deletion_vector

    root = Path(conn.execute(sa.text("select value from lake_settings where key = 'root'")).scalar())
    by_file: dict[int, list] = {}
    for e in entries:
        by_file.setdefault(e.data_file_id, []).append(e)
    con = duckdb.connect()
    rows = []
    try:
        for fid, es in sorted(by_file.items()):
            f = es[0]
            con.register("replaced", pa.table({"record_id": [e.record_id for e in es],
                                               "version": pa.array([e.version for e in es], pa.int32()),
                                               "snapshot_id": [max(e.snapshot_id, f.added_snapshot) for e in es]}))
            found = con.execute(
                "select r.snapshot_id, d.file_row_number from read_parquet(?, file_row_number=true) d "
                "join replaced r on r.record_id = d.record_id and r.version = d.version order by 1, 2",
                [str(root / f.path)]).fetchall()
            con.unregister("replaced")
            snaps = sorted({s for s, _p in found})
            for i, snap in enumerate(snaps):
                positions = np.array(sorted(p for s, p in found if s <= snap), dtype=np.int64)
                entry = {"data_file_id": fid, "table_name": f.table_name, "path": None, "sha256": "",
                         "rows": len(positions), "added_snapshot": snap,
                         "retired_snapshot": snaps[i + 1] if i + 1 < len(snaps) else None}
                if len(positions) < f.rows:
                    entry.update(write_deletion_vector(root, f.table_name, f.sha256, positions)[0])
                rows.append(entry)
    finally:
        con.close()
    if rows:
        conn.execute(sa.text(
            "insert into deletion_vectors (data_file_id, table_name, path, sha256, rows, added_snapshot, "
            "retired_snapshot) values (:data_file_id, :table_name, :path, :sha256, :rows, :added_snapshot, "
            ":retired_snapshot)"), rows)


def expand_used_sets(conn: sa.Connection) -> None:
    """Write every used set as one ``used`` link per member (the form before used sets)."""
    sets = conn.execute(sa.text("select activity_id, table_name, members, members_sha256 from used_sets "
                                "order by id")).fetchall()
    if not sets:
        return
    import duckdb

    from matlake import schemas

    root = Path(conn.execute(sa.text("select value from lake_settings where key = 'root'")).scalar())
    con = duckdb.connect()
    links = []
    try:
        for aid, table, members, sha in sets:
            if members == "object":
                found = con.execute("select record_id, version from read_parquet(?)",
                                    [str(root / "objects" / sha[:2] / sha[2:])]).fetchall()
            else:
                found = []
                for t, schema in schemas.TABLES.items():
                    if not any(c.name == "subject_id" for c in schema.columns):
                        continue
                    paths = [str(root / p) for (p,) in conn.execute(sa.text(
                        "select path from data_files where table_name = :t order by id"), {"t": t})]
                    if paths:
                        found += con.execute(  # in the order the activity wrote them
                            "select subject_id, null from read_parquet(?, union_by_name=true, filename=true, "
                            "file_row_number=true) where activity_id = ? and subject_id is not null "
                            "group by subject_id order by min(list_position(?, filename)), min(file_row_number)",
                            [paths, aid, paths]).fetchall()
            seen = set()
            for rid, version in found:
                if rid not in seen:
                    seen.add(rid)
                    links.append({"activity_id": aid, "role": "used", "entity_kind": "record", "entity_id": rid,
                                  "entity_version": version, "table_name": table})
    finally:
        con.close()
    if links:
        conn.execute(sa.text("insert into links (activity_id, role, entity_kind, entity_id, entity_version, "
                             "table_name) values (:activity_id, :role, :entity_kind, :entity_id, :entity_version, "
                             ":table_name)"), links)
