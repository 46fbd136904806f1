"""The commit protocol, snapshots, tags, time travel, versions and tombstones,
on a SQLite and on a PostgreSQL catalog."""

from __future__ import annotations

import pyarrow as pa
import pytest

import matlake
from matlake.platform.lake import ChangeSet, LakeError


def _commit_structures(lake, rows, version=None, name="test"):
    cs = ChangeSet("test", name)
    act = cs.activity("ingest", name, "1")
    cs.add_rows("structures", rows, act, version=version)
    return lake.commit(cs), act.activity_id


def test_new_lake_is_empty_and_reopens(lake):
    assert lake.last_snapshot() == 0
    assert lake.sql("select count(*) from structures").fetchone() == (0,)
    again = matlake.open(lake.root)
    assert again.config.catalog_url == lake.config.catalog_url
    if not lake.config.is_sqlite:  # a team lake is also found by its catalog URL
        by_url = matlake.open(lake.config.catalog_url)
        assert by_url.root == lake.root
    again.close()


def test_commit_registers_rows_with_provenance_columns(lake):
    sid, act = _commit_structures(lake, [{"record_id": "a", "formula": "Si2", "nsites": 2},
                                         {"record_id": "b", "formula": "GaN", "nsites": 2}])
    assert sid == 1
    df = lake.sql("select * from structures order by record_id").df()
    assert list(df.record_id) == ["a", "b"]
    assert set(df.version) == {1}
    assert set(df.activity_id) == {act}
    assert set(df.schema_version) == {matlake.schemas.get("structures").version}
    assert df.created_at.notna().all()
    files = lake.files_at(sid, "structures")
    assert len(files) == 1 and files[0]["rows"] == 2
    path = lake.root / files[0]["path"]
    assert path.name.startswith(__import__("hashlib").sha256(path.read_bytes()).hexdigest())


def test_tagged_snapshot_reads_exactly_its_rows_after_later_commits_and_versions(lake):
    _commit_structures(lake, [{"record_id": "a", "formula": "Si2"}])
    lake.tag("t1")
    _commit_structures(lake, [{"record_id": "b", "formula": "GaN"}])
    _commit_structures(lake, [{"record_id": "a", "formula": "Si4"}])  # version 2 of a
    latest = lake.sql("select record_id, version, formula from structures order by record_id").fetchall()
    assert latest == [("a", 2, "Si4"), ("b", 1, "GaN")]
    assert lake.sql("select record_id, version, formula from structures", as_of="t1").fetchall() == [("a", 1, "Si2")]
    assert lake.sql("select count(*) from structures_all").fetchone() == (3,)
    assert lake.table("structures", as_of=2).arrow().num_rows == 2


def test_tags_do_not_move_unless_asked(lake):
    _commit_structures(lake, [{"record_id": "a"}])
    lake.tag("t")
    _commit_structures(lake, [{"record_id": "b"}])
    with pytest.raises(LakeError, match="already names snapshot 1"):
        lake.tag("t")
    assert lake.tag("t", move=True) == 2
    with pytest.raises(LakeError, match="unknown tag or snapshot 'nope'"):
        lake.resolve_snapshot("nope")
    with pytest.raises(LakeError, match="does not exist"):
        lake.resolve_snapshot(99)


def test_tombstone_hides_record_but_keeps_history(lake):
    _commit_structures(lake, [{"record_id": "a", "formula": "Si2"}, {"record_id": "b", "formula": "C"}])
    sid = lake.delete("structures", ["a"], reason="wrong file")
    assert lake.sql("select record_id from structures").fetchall() == [("b",)]
    assert lake.sql("select record_id from structures", as_of=sid - 1).fetchall().__len__() == 2
    assert lake.sql("select version, tombstone from structures_all where record_id='a' order by version").fetchall() == [
        (1, False), (2, True)]
    with pytest.raises(LakeError, match="no live records"):
        lake.delete("structures", ["a"])


def test_rows_that_do_not_fit_the_schema_are_refused(lake):
    cs = ChangeSet("test")
    act = cs.activity("ingest", "x")
    with pytest.raises(ValueError, match="unknown columns \\['bogus'\\]"):
        cs.add_rows("structures", [{"record_id": "a", "bogus": 1}], act)
    with pytest.raises(ValueError, match="column 'nsites' expected int32"):
        cs.add_rows("structures", pa.table({"record_id": ["a"], "nsites": ["many"]}), act)
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        cs.add_rows("nope", [{"record_id": "a"}], act)


def test_gc_removes_only_unregistered_files(lake):
    _commit_structures(lake, [{"record_id": "a"}])
    orphan_table = lake.root / "tables" / "structures" / ("0" * 64 + ".parquet")
    orphan_table.write_bytes(b"left by a crashed commit")
    orphan_obj = lake.objects.put(b"unregistered object")
    registered = [lake.root / f["path"] for f in lake.files_at(1)]
    assert lake.gc(grace_seconds=3600)["removed"] == []  # young files may belong to a commit in flight
    out = lake.gc(grace_seconds=0)
    assert sorted(out["removed"]) == sorted([orphan_table.relative_to(lake.root).as_posix(),
                                             lake.objects.path(orphan_obj).relative_to(lake.root).as_posix()])
    assert all(p.exists() for p in registered)
    assert lake.sql("select count(*) from structures").fetchone() == (1,)


def test_catalog_views_follow_the_snapshot(lake):
    _commit_structures(lake, [{"record_id": "a"}], name="first")
    _commit_structures(lake, [{"record_id": "b"}], name="second")
    assert lake.sql("select count(*) from activities", as_of=1).fetchone() == (1,)
    assert lake.sql("select count(*) from activities").fetchone() == (2,)
    links = lake.sql("select role, entity_kind, entity_id from links order by entity_id").fetchall()
    assert links == [("generated", "record", "a"), ("generated", "record", "b")]


def test_empty_change_set_commits_nothing(lake):
    assert lake.commit(ChangeSet("noop")) is None
    assert lake.last_snapshot() == 0


def test_init_refuses_an_existing_lake(sqlite_lake):
    with pytest.raises(LakeError, match="already exists"):
        matlake.init(sqlite_lake.root)


def test_open_missing_lake_says_how_to_create_one(tmp_path):
    with pytest.raises(Exception, match="matlake init"):
        matlake.open(tmp_path / "nowhere")


def test_version_chain_time_travels_and_registers_only_replaced_rows(lake):
    sids = [_commit_structures(lake, [{"record_id": "a", "formula": f"Si{n}"}, {"record_id": f"x{n}"}])[0]
            for n in (1, 2, 3)]
    for n, sid in enumerate(sids, start=1):
        assert lake.sql("select version, formula from structures where record_id = 'a'", as_of=sid).fetchall() == [
            (n, f"Si{n}")]
        assert lake.sql("select count(*) from structures", as_of=sid).fetchone() == (1 + n,)
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    with lake.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select f.added_snapshot, v.path, v.rows, v.added_snapshot, v.retired_snapshot from deletion_vectors v "
            "join data_files f on f.id = v.data_file_id order by v.id")).fetchall()
    # Each commit replaced row 0 ('a') of the previous commit's file, and nothing else.
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [(sids[0], 1, sids[1], None), (sids[1], 1, sids[2], None)]
    for r in rows:
        assert pq.read_table(lake.root / r[1]).column("pos").to_pylist() == [0]


def test_superseded_rows_of_an_old_lake_become_deletion_vectors_and_back(lake):
    import sqlalchemy as sa

    from matlake.platform import migrate

    sids = [_commit_structures(lake, [{"record_id": "a", "formula": f"Si{n}"}, {"record_id": "b", "formula": "C"}],
                               name=f"c{n}")[0] for n in (1, 2, 3)]
    _commit_structures(lake, [{"record_id": "a", "formula": "Si4"}], name="c4")  # 'b' of file 3 stays live
    answers = lambda: [lake.sql("select record_id, version, formula from structures order by 1", as_of=s).fetchall()
                       for s in range(1, 5)]
    q = ("select f.added_snapshot, v.rows, v.path is null, v.added_snapshot, v.retired_snapshot from deletion_vectors v "
         "join data_files f on f.id = v.data_file_id order by v.id")
    with lake.engine.connect() as conn:
        vectors = conn.execute(sa.text(q)).fetchall()
    before = answers()
    assert before[3] == [("a", 4, "Si4"), ("b", 3, "C")]
    # Files 1 and 2 are wholly replaced (no sidecar); file 3 loses its row 'a' only.
    assert [tuple(v) for v in vectors] == [(sids[0], 2, True, sids[1], None), (sids[1], 2, True, sids[2], None),
                                           (sids[2], 1, False, 4, None)]
    migrate.downgrade(lake.engine, "0004")
    with lake.engine.connect() as conn:
        superseded = conn.execute(sa.text("select record_id, version, snapshot_id from superseded "
                                          "order by snapshot_id, record_id")).fetchall()
    assert [tuple(r) for r in superseded] == [("a", 1, 2), ("b", 1, 2), ("a", 2, 3), ("b", 2, 3), ("a", 3, 4)]
    migrate.upgrade(lake.engine)
    lake._query_engines.clear()
    with lake.engine.connect() as conn:
        assert [tuple(v) for v in conn.execute(sa.text(q)).fetchall()] == [tuple(v) for v in vectors]
    assert answers() == before
