"""The read-only query path (``platform/reader.py``): a SQLite catalog read through the
standard library's sqlite3 gives exactly the answers of the full lake (SQLAlchemy),
for every kind of view, at every snapshot, and fails exactly as the full lake does."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import sample

import matlake
from matlake import schemas
from matlake.platform import migrate
from matlake.platform.lake import ChangeSet, Lake, LakeError
from matlake.platform.query import CATALOG_VIEWS, QueryError
from matlake.platform.reader import ReadOnlyLake, open_for_query, sqlite_catalog_path


def _commit(lake, table, rows, name, used_set=None, model=None):
    cs = ChangeSet("test", name)
    act = cs.activity("featurize" if used_set else "ingest", name, "1")
    cs.add_rows(table, rows, act)
    if used_set:
        act.used_set(**used_set)
    if model:
        cs.add_model(activity_id=act.activity_id, **model)
    return lake.commit(cs)


def _build(lake) -> dict[str, int]:
    """Every kind of thing a query reads: ingested files (ledger, objects, structures,
    calculations and the `dft` view), many small files (the engine's in-memory cache), records
    re-versioned in part (sidecar deletion vectors) and in whole (a retired-in-view file), a
    tombstone, tags, used sets of both kinds (the `links` view), a model version."""
    report = lake.ingest([sample("dft", "MAPbI3_mp-977013_symmetrized.cif"),
                          sample("dft", "Si_static_vasprun.xml.gz")], progress=False)
    assert report.failed == report.errors == 0, report.summary()
    marks = {"ingested": lake.last_snapshot()}
    lake.tag("ingested", note="after the sample files")
    # 10 commits of two rows each: 'shared' is re-versioned every time, so each earlier file holds one replaced row.
    for n in range(10):
        _commit(lake, "structures", [{"record_id": f"r{n}", "formula": f"Si{n + 1}", "nsites": n + 1},
                                     {"record_id": "shared", "formula": f"C{n + 1}", "nsites": n}], f"small-{n}")
    marks["small"] = lake.last_snapshot()
    # Every row of the last file replaced: that file leaves the latest view.
    _commit(lake, "structures", [{"record_id": "r9", "formula": "Ge9"}, {"record_id": "shared", "formula": "Sn"}],
            "whole")
    marks["whole"] = lake.last_snapshot()
    lake.tag("whole")
    lake.delete("structures", ["r3"], reason="test tombstone")
    marks["deleted"] = lake.last_snapshot()
    # A featurize-like activity that used a set of structures ('generated': the features' subject_id) ...
    subjects = ["r1", "r2", "shared"]
    _commit(lake, "features", [{"record_id": f"f-{s}", "subject_id": s, "subject_table": "structures",
                                "feature": "n", "value": float(i)} for i, s in enumerate(subjects)], "featurize",
            used_set={"table": "structures", "snapshot": marks["deleted"], "view_sql": "select * from structures",
                      "record_ids": subjects})
    # ... and one whose members are listed in an object, with a model version.
    buf = io.BytesIO()
    pq.write_table(pa.table({"record_id": ["r0", "r4"], "version": pa.array([1, 1], pa.int32())}), buf)
    members = lake.put_object(buf.getvalue())
    artifact = lake.put_object(b"model bytes")
    cs = ChangeSet("train", "train")
    act = cs.activity("train", "train-test", "1")
    cs.add_object(members, len(buf.getvalue()), "application/vnd.apache.parquet")
    cs.add_object(artifact, 11)
    act.used_set("structures", marks["deleted"], "select * from structures where record_id in ('r0', 'r4')",
                 ["r0", "r4"], members="object", members_sha256=members)
    cs.add_model(model_id="model_test", name="test-model", version=1, module="tests:Model", module_version="1",
                 target="nsites", view_sql="select * from structures", snapshot_id=marks["deleted"],
                 metrics_json=json.dumps({"mae": 0.5}), params_json="{}", artifact_sha256=artifact, n_train=2,
                 activity_id=act.activity_id)
    lake.commit(cs)
    marks["trained"] = lake.last_snapshot()
    return marks


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lake = matlake.init(tmp_path_factory.mktemp("reader") / "lake")
    marks = _build(lake)
    light = open_for_query(lake.root)
    yield lake, light, marks
    light.close()
    lake.close()


QUERIES = [
    "select 41 + 1 as answer",
    "select * from structures order by record_id",
    "select * from structures_all order by record_id, version",
    "select record_id, version, tombstone from structures_all where record_id in ('shared', 'r3', 'r9') "
    "order by record_id, version",
    "select * from calculations order by record_id",
    "select * from dft order by 1",
    "select * from features order by record_id",
] + [f"select * from {name} order by all" for name in CATALOG_VIEWS] + [
    "select * from links order by all",
    "select s.record_id, count(*) as n from structures_all s join links l on l.entity_id = s.record_id "
    "group by 1 order by 1",
]


def test_open_for_query_reads_a_sqlite_catalog_without_sqlalchemy(built):
    lake, light, _marks = built
    assert isinstance(light, ReadOnlyLake) and light.root == lake.root
    assert light.last_snapshot() == lake.last_snapshot()
    assert light.files_at(3) == lake.files_at(3) and light.files_at(3, "structures") == lake.files_at(3, "structures")
    for sid in range(lake.last_snapshot() + 1):
        assert light.deletion_vectors_at(sid) == lake.deletion_vectors_at(sid)


@pytest.mark.parametrize("as_of", [None, "ingested", "whole", "small", "deleted", 0, 1, "latest"])
def test_every_view_answers_as_through_the_full_lake(built, as_of):
    lake, light, marks = built
    as_of = marks[as_of] if as_of in ("small", "deleted") else as_of  # snapshot ids and tags both
    assert light.resolve_snapshot(as_of) == lake.resolve_snapshot(as_of)
    for query in QUERIES:
        expected = lake.sql(query, as_of=as_of).arrow()
        got = light.sql(query, as_of=as_of).arrow()
        assert got.schema == expected.schema, query
        assert got.equals(expected), query


def test_the_fixture_reaches_every_read_path(built):
    # The comparison above is worth something only if the lake has what it is meant to have.
    lake, light, marks = built
    rows = dict(light.sql("select record_id, formula from structures where record_id in ('shared', 'r9', 'r3')"
                          ).fetchall())
    assert rows == {"shared": "Sn", "r9": "Ge9"}  # re-versioned, whole file replaced, tombstoned
    assert light.sql("select formula from structures where record_id = 'shared'", as_of=marks["small"]
                     ).fetchall() == [("C10",)]
    assert light.sql("select count(*) from structures where record_id = 'r3'", as_of="whole").fetchone() == (1,)
    qe = light.query_engine(marks["whole"])
    vectors = qe._vectors
    assert any(path is None for path, _n in vectors.values()) and any(path for path, _n in vectors.values())
    assert len(qe._files["structures"]) >= 8  # the small-file cache
    used = light.sql("select entity_id from links where role = 'used' and entity_kind = 'record' order by 1")
    # r3: the delete's stored link; r0, r4: a members object; r1, r2, shared: the features' subject ids
    assert used.fetchall() == [("r0",), ("r1",), ("r2",), ("r3",), ("r4",), ("shared",)]
    assert light.sql("select count(*) from ledger").fetchone() == (2,)
    assert light.sql("select name from model_versions").fetchall() == [("test-model",)]


def test_table_and_views_by_name_and_python_params(built):
    lake, light, _marks = built
    assert light.table("structures", all_versions=True).arrow().equals(lake.table("structures",
                                                                                  all_versions=True).arrow())
    assert light.table("eis").arrow().equals(lake.table("eis").arrow())  # a domain view over empty tables
    q = "select record_id from structures where nsites > ? order by 1"
    assert light.sql(q, params=[3]).fetchall() == lake.sql(q, params=[3]).fetchall() != []
    with pytest.raises(QueryError, match="unknown table"):
        light.table("nope")


def test_bad_snapshots_and_tags_fail_as_in_the_full_lake(built):
    lake, light, _marks = built
    for bad in ("no-such-tag", 999, "-1"):
        with pytest.raises(LakeError) as full:
            lake.resolve_snapshot(bad)
        with pytest.raises(LakeError) as read:
            light.resolve_snapshot(bad)
        assert str(read.value) == str(full.value)
    with pytest.raises(LakeError, match=r"unknown tag or snapshot 'nope'; known tags: \['ingested', 'whole'\]"):
        light.resolve_snapshot("nope")


def test_the_read_only_connection_cannot_write(built):
    _lake, light, _marks = built
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        light.catalog_rows("insert into tags (name, snapshot_id, created_at, note) values ('x', 1, '', '')")


def test_a_catalog_at_another_revision_is_refused_as_by_the_full_lake(tmp_path):
    lake = matlake.init(tmp_path / "lake")
    previous = migrate.history()[-2][0]
    migrate.downgrade(lake.engine, previous)
    lake.close()
    with pytest.raises(LakeError) as full:
        matlake.open(tmp_path / "lake")
    with pytest.raises(LakeError) as read:
        open_for_query(tmp_path / "lake")
    assert str(read.value) == str(full.value) == (f"catalog at revision {previous}, code expects {migrate.head()}: "
                                                  "run `matlake db upgrade`")


def test_anything_but_a_plain_sqlite_file_opens_the_full_lake(lake):
    # PostgreSQL (and SQLite) lakes through the same call: the light reader only where it can.
    opened = open_for_query(lake.root)
    try:
        assert isinstance(opened, ReadOnlyLake if lake.config.is_sqlite else Lake)
        assert opened.sql("select count(*) from structures").fetchone() == (0,)
    finally:
        opened.close()
    assert sqlite_catalog_path("sqlite:////a b/c%20d.sqlite") == Path("/a b/c d.sqlite")
    assert sqlite_catalog_path("sqlite:///rel.sqlite") == Path("rel.sqlite")
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:////x/c.sqlite?timeout=3", "postgresql://h/db",
                "sqlite+aiosqlite:////x/c.sqlite"):
        assert sqlite_catalog_path(url) is None, url


def test_missing_lake_fails_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("MATLAKE_LAKE", raising=False)
    monkeypatch.chdir(tmp_path)
    for where in (tmp_path / "nowhere", None):
        with pytest.raises(Exception) as full:
            matlake.open(where)
        with pytest.raises(Exception) as read:
            open_for_query(where)
        assert type(read.value) is type(full.value) and str(read.value) == str(full.value)


# --------------------------------------------------------------------------- the command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    env.pop("MATLAKE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_sql_prints_and_writes_what_the_full_lake_does(built, tmp_path):
    # --write runs on the full lake (SQLAlchemy), without it on the read-only reader: same output.
    lake, _light, _marks = built
    for query, extra in [("select * from structures order by record_id", ["--as-of", "whole"]),
                         ("select * from ledger order by id", []),
                         ("select entity_id, role from links order by all", ["--as-of", "ingested"]),
                         ("select * from dft", ["--max-rows", "3"])]:
        light = _cli("sql", query, "--lake", str(lake.root), *extra)
        full = _cli("sql", query, "--lake", str(lake.root), "--write", *extra)
        assert light.returncode == full.returncode == 0, light.stderr + full.stderr
        assert light.stdout == full.stdout and light.stdout.strip()
    csv_light, csv_full = tmp_path / "light.csv", tmp_path / "full.csv"
    assert _cli("sql", "select * from structures_all order by all", "--lake", str(lake.root), "--csv",
                str(csv_light), "--parquet", str(tmp_path / "light.parquet")).returncode == 0
    assert _cli("sql", "select * from structures_all order by all", "--lake", str(lake.root), "--csv",
                str(csv_full), "--parquet", str(tmp_path / "full.parquet"), "--write").returncode == 0
    assert csv_light.read_text() == csv_full.read_text()
    assert pq.read_table(tmp_path / "light.parquet").equals(pq.read_table(tmp_path / "full.parquet"))


def test_cli_sql_errors_are_those_of_the_full_lake(built):
    lake, _light, _marks = built
    for args in (["select * from structurez"], ["select 1", "--as-of", "nope"], ["select 1", "--as-of", "999"]):
        light = _cli("sql", *args, "--lake", str(lake.root))
        full = _cli("sql", *args, "--lake", str(lake.root), "--write")
        assert light.returncode == full.returncode == 1
        assert light.stderr == full.stderr and light.stderr.startswith("matlake: error:")
    refused = _cli("sql", "create table x as select 1", "--lake", str(lake.root))
    assert refused.returncode == 1 and "read-only query expected, found a CREATE" in refused.stderr


def test_read_only_commands_answer_through_the_reader(built):
    lake, _light, _marks = built
    tables = _cli("tables", "--lake", str(lake.root), "--as-of", "whole")
    assert tables.returncode == 0 and "structures" in tables.stdout
    assert f"snapshot {lake.resolve_snapshot('whole')}" in tables.stdout
    for name in schemas.TABLES:
        assert name in tables.stdout
    snaps = _cli("snapshots", "--lake", str(lake.root), "--limit", "3")
    assert snaps.returncode == 0 and str(lake.last_snapshot()) in snaps.stdout
    ledger = _cli("ledger", "--lake", str(lake.root))
    assert ledger.returncode == 0 and "MAPbI3" in ledger.stdout
