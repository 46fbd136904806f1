"""Issue #8 items 1-3: used sets instead of per-record links, deletion vectors instead of
superseded rows, views made on first use, compaction into proper row groups and ``--auto``."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import sample

from matlake.migrations.helpers import expand_used_sets
from matlake.models.dft.composition import CompositionRegressor
from matlake.models.eis.analysis import analyze
from matlake.platform import migrate
from matlake.platform.lake import ROW_GROUP_ROWS, ChangeSet, highest_per_index, id_digest, sorted_distinct
from matlake.platform.operations import AUTO_MIN_FILES, compact, doctor
from matlake.platform.provenance import lineage, render_tree, to_dot


def _commit(lake, rows, table="structures", name="t"):
    cs = ChangeSet("test", name)
    act = cs.activity("ingest", name, "1")
    cs.add_rows(table, rows, act)
    return lake.commit(cs)


def _latest_by_ranking(lake, table: str, sid: int) -> list[tuple]:
    """The latest live rows computed the slow, obvious way (rank every version) as the reference."""
    return lake.sql(f"select record_id, version from (select *, row_number() over (partition by record_id "
                    f"order by version desc) as rk from {table}_all) where rk = 1 and not tombstone order by 1",
                    as_of=sid).fetchall()


def _answers(lake, roots: list[str]) -> dict[str, tuple[str, str, str]]:
    lake._query_engines.clear()
    out = {}
    for r in roots:
        up, down = lineage(lake, r, direction="up"), lineage(lake, r, direction="down", max_fanout=100)
        out[r] = (render_tree(up, "up"), render_tree(down, "down"), to_dot(lineage(lake, r, direction="both")))
    return out


@pytest.fixture
def modelled(lake):
    """DFT samples trained on and predicted twice (a second model version), EIS spectra analysed."""
    lake.ingest([sample("dft")], progress=False)
    lake.ingest([sample("eis", "impedancepy_exampleData.csv"), sample("eis", "impedancepy_Circuit3_EIS_1.z")],
                progress=False)
    lake.tag("train-set")
    first = lake.train(CompositionRegressor(n_estimators=20), as_of="train-set")
    lake.predict(first.model_id)
    second = lake.train(CompositionRegressor(n_estimators=25), as_of="train-set")
    lake.predict(second.model_id)
    lake.predict(second.model_id)  # the same model again: a new version of every prediction
    analyze(lake, drt=False)
    return lake, first, second


def test_bulk_activities_write_one_set_row_not_one_link_per_record(modelled):
    lake, first, _second = modelled
    with lake.engine.connect() as conn:
        per_record = conn.execute(sa.text(
            "select count(*) from links l join activities a using (activity_id) where l.role = 'used' and "
            "l.entity_kind = 'record' and a.kind in ('train', 'predict', 'featurize')")).scalar()
        sets = conn.execute(sa.text("select a.kind, u.table_name, u.n_rows, u.digest, u.members, u.snapshot_id "
                                    "from used_sets u join activities a using (activity_id) order by u.id")).fetchall()
    assert per_record == 0
    assert [(k, t, m) for k, t, _n, _d, m, _s in sets] == [
        ("train", "calculations", "object"), ("predict", "structures", "generated"),
        ("train", "calculations", "object"), ("predict", "structures", "generated"),
        ("predict", "structures", "generated"), ("featurize", "impedance", "object")]
    # The set's members object lists the structures the first model trained on at the tagged snapshot,
    # and the digest pins them in the order used.
    with lake.engine.connect() as conn:
        members_sha = conn.execute(sa.text("select members_sha256 from used_sets order by id limit 1")).scalar()
    members = pq.read_table(lake.objects.path(members_sha)).column("record_id").to_pylist()
    trained_on = [r[0] for r in lake.sql(f"select subject_id from ({first.view_sql})", as_of="train-set").fetchall()]
    assert sorted(members) == sorted(map(str, trained_on)) and len(members) == first.n_train == sets[0][2]
    assert sets[0][3] == hashlib.sha256("".join(f"{m}\n" for m in members).encode()).hexdigest()
    assert id_digest(pa.array(members)) == sets[0][3] != id_digest(pa.array(members[::-1]))
    assert sets[0][5] == lake.resolve_snapshot("train-set")
    # SQL users still see one 'used' row per member in the links view.
    n_links = lake.sql("select count(*) from links where role = 'used' and entity_kind = 'record'").fetchone()[0]
    assert n_links == sum(n for _k, _t, n, *_ in sets)


def test_lineage_answers_are_those_of_per_record_links(modelled):
    """The same trees, up and down, from every record, model, activity and raw file, whether the
    catalog holds used sets or (as before them) one link per used record."""
    lake, first, second = modelled
    # A few of each kind keep the test short: both versions of two predictions, structures used by
    # predict runs, calculations used by training, an EIS fit, raw files, and every bulk activity.
    roots = [r[0] for r in lake.sql(
        "(select record_id from predictions_all order by subject_id, record_id, version limit 4) "
        "union all (select record_id from structures order by 1 limit 2) "
        "union all (select record_id from calculations order by 1 limit 2) "
        "union all (select record_id from eis_fits limit 1) "
        "union all (select sha256 from ledger order by source_path limit 3) "
        "union all select activity_id from activities where kind in ('train', 'predict', 'featurize')").fetchall()]
    roots += [first.model_id, second.model_id]
    with_sets = _answers(lake, roots)
    with lake.engine.connect().execution_options(write=True) as conn, conn.begin():
        expand_used_sets(conn)  # the downgrade's conversion: exactly the links the old code wrote
        conn.execute(sa.text("delete from used_sets"))
        n = conn.execute(sa.text("select count(*) from links where role = 'used' and entity_kind = 'record'")).scalar()
    assert n > 9  # the sets became links
    with_links = _answers(lake, roots)
    assert with_sets.keys() == with_links.keys()
    for r in roots:
        assert with_sets[r] == with_links[r], r


def test_featurize_skips_what_an_earlier_set_used(sqlite_lake):
    lake = sqlite_lake
    lake.ingest([sample("eis", "impedancepy_Circuit3_EIS_1.z")], progress=False)
    assert analyze(lake, drt=False).n_subjects == 1
    again = analyze(lake, drt=False)
    assert (again.snapshot, again.n_subjects, again.skipped) == (None, 0, 1)


@pytest.mark.parametrize("cached", [False, True], ids=["files", "small-file-cache"])
def test_a_partial_reversion_is_applied_by_position_inside_duckdb_at_every_snapshot(lake, cached, monkeypatch):
    from matlake.platform import query

    monkeypatch.setattr(query, "SMALL_CACHE_MIN_FILES", 2 if cached else 10**9)
    sids = [_commit(lake, [{"record_id": f"s{i}", "formula": "Si"} for i in range(50)])]
    sids.append(_commit(lake, [{"record_id": f"s{i}", "formula": "C"} for i in range(0, 50, 3)]))
    sids.append(_commit(lake, [{"record_id": f"s{i}", "formula": "N"} for i in range(0, 50, 5)]))
    lake.delete("structures", ["s7", "s10"])
    sids.append(lake.last_snapshot())
    for sid in sids:
        got = lake.sql("select record_id, version from structures order by 1", as_of=sid).fetchall()
        assert got == _latest_by_ranking(lake, "structures", sid)
    assert lake.sql("select formula from structures where record_id = 's15'").fetchone() == ("N",)
    assert lake.sql("select count(*) from structures where record_id in ('s7', 's10')").fetchone() == (0,)
    with lake.engine.connect() as conn:
        live = conn.execute(sa.text("select v.rows, f.rows from deletion_vectors v join data_files f "
                                    "on f.id = v.data_file_id where v.retired_snapshot is null order by f.id")).fetchall()
    # file 1 lost every multiple of 3 or 5 (re-versioned) and s7 (deleted); s10 was deleted from file 3
    assert [tuple(r) for r in live][0] == (len({i for i in range(50) if i % 3 == 0 or i % 5 == 0 or i == 7}), 50)
    assert doctor(lake).problems == []


def test_building_a_query_engine_reads_no_replaced_rows_and_names_only_the_queried_views(sqlite_lake, monkeypatch):
    lake = sqlite_lake
    _commit(lake, [{"record_id": f"s{i}", "formula": "Si"} for i in range(20)])
    _commit(lake, [{"record_id": f"s{i}", "formula": "C"} for i in range(10)])
    reads = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: reads.append(a) or real(*a, **k))
    lake._query_engines.clear()
    qe = lake.query_engine()
    assert qe.sql("select count(*) from structures").fetchone() == (20,)
    assert reads == []  # the sidecar is read by DuckDB, not by Python
    views = {r[0] for r in qe.con.execute("select view_name from duckdb_views() where not internal").fetchall()
             if not r[0].startswith("_")}
    assert views == {"structures", "structures_all"}
    assert qe.sql("select count(*) from predictions").fetchone() == (0,)


def test_compaction_writes_row_groups_by_size_and_keeps_time_travel_and_replacements(lake):
    sids = [_commit(lake, [{"record_id": f"s{i}", "formula": "Si"}]) for i in range(12)]
    sids.append(_commit(lake, [{"record_id": f"s{i}", "formula": "C"} for i in range(0, 12, 2)]))
    before = {sid: lake.sql("select record_id, version, formula from structures order by 1", as_of=sid).fetchall()
              for sid in sids}
    assert compact(lake, "structures", auto=True) == []  # 13 small files: under the automatic policy
    (res,) = compact(lake, "structures")
    assert res.merged_files == 13 and res.rows == 18
    meta = pq.ParquetFile(lake.root / res.path).metadata
    assert meta.num_row_groups == -(-18 // ROW_GROUP_ROWS) == 1
    for sid, rows in before.items():
        assert lake.sql("select record_id, version, formula from structures order by 1", as_of=sid).fetchall() == rows
    assert lake.sql("select record_id, version, formula from structures order by 1").fetchall() == before[sids[-1]]
    # the replaced rows moved with their file: one vector on the merged file, 6 positions
    with lake.engine.connect() as conn:
        live = conn.execute(sa.text("select v.rows from deletion_vectors v join data_files f on f.id = v.data_file_id "
                                    "where f.path = :p and v.retired_snapshot is null"), {"p": res.path}).fetchall()
    assert [r[0] for r in live] == [6]
    # a later correction of a compacted row lands on the merged file's vector
    _commit(lake, [{"record_id": "s1", "formula": "B"}])
    assert lake.sql("select version, formula from structures where record_id = 's1'").fetchone() == (2, "B")
    assert _latest_by_ranking(lake, "structures", lake.last_snapshot()) == lake.sql(
        "select record_id, version from structures order by 1").fetchall()
    rep = doctor(lake)
    assert rep.problems == [] and rep.orphans == []



def test_reversioning_a_compacted_file_replaces_each_records_highest_version_row(lake):
    # After compaction one file holds several versions of s0..s4; the version look-up must take
    # each record's highest one, and its row, whatever order the new rows come in.
    _commit(lake, [{"record_id": f"s{i}", "formula": "Si"} for i in range(10)])
    _commit(lake, [{"record_id": f"s{i}", "formula": "C"} for i in range(5)])
    _commit(lake, [{"record_id": f"s{i}", "formula": "N"} for i in range(2)])
    (res,) = compact(lake, "structures")
    compacted = lake.last_snapshot()
    before = lake.sql("select record_id, version, formula from structures order by 1").fetchall()
    assert lake.latest_versions("structures", ["s5", "s2", "s0", "s2", "nope"]) == {
        "s0": (3, res.path), "s2": (2, res.path), "s5": (1, res.path)}
    # Partial: a sidecar merging the 7 rows replaced before compaction with 3 new ones
    # (an older row picked by mistake would be "replaced twice" and refused).
    sid = _commit(lake, [{"record_id": r, "formula": "B"} for r in ("s5", "s2", "s0")])
    got = lake.sql("select record_id, version, formula from structures where formula = 'B' order by 1").fetchall()
    assert got == [("s0", 4, "B"), ("s2", 3, "B"), ("s5", 2, "B")]
    assert _latest_by_ranking(lake, "structures", sid) == lake.sql(
        "select record_id, version from structures order by 1").fetchall()
    q = ("select v.rows, v.path is null from deletion_vectors v join data_files f on f.id = v.data_file_id "
         "where f.path = :p and v.retired_snapshot is null")
    with lake.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.text(q), {"p": res.path})] == [(10, False)]
    # Every remaining live row of the merged file replaced, in stored order: the file is retired whole.
    rest = [r for (r,) in lake.sql("select record_id from structures where formula <> 'B' order by 1").fetchall()]
    last = _commit(lake, [{"record_id": r, "formula": "O"} for r in rest])
    with lake.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.text(q), {"p": res.path})] == [(17, True)]
    assert lake.sql("select count(*), count(distinct record_id) from structures").fetchone() == (10, 10)
    assert _latest_by_ranking(lake, "structures", last) == lake.sql(
        "select record_id, version from structures order by 1").fetchall()
    assert lake.sql("select record_id, version, formula from structures order by 1", as_of=compacted
                    ).fetchall() == before
    assert doctor(lake).problems == []



def test_highest_per_index_keeps_each_index_highest_version_in_any_order():
    import numpy as np

    rng = np.random.default_rng(3)
    idx = rng.integers(0, 40, 200)  # repeated indexes, some missing
    version = rng.permutation(200) + 1  # distinct, so the winner is unique
    pos = np.arange(200) * 10
    got_idx, got_version, got_pos = highest_per_index(50, idx, version, pos)
    want = {}
    for i, v, p in zip(idx.tolist(), version.tolist(), pos.tolist()):
        if i not in want or v > want[i][0]:
            want[i] = (v, p)
    assert sorted(zip(got_idx.tolist(), got_version.tolist(), got_pos.tolist())) == sorted(
        (i, v, p) for i, (v, p) in want.items())
    # one match per index: returned as given, in the given order
    once = np.array([4, 1, 3])
    out = highest_per_index(5, once, np.array([1, 7, 2]), np.array([0, 1, 2]))
    assert [a.tolist() for a in out] == [[4, 1, 3], [1, 7, 2], [0, 1, 2]]
    assert [len(a) for a in highest_per_index(5, np.array([], np.int64), np.array([], np.int64))] == [0, 0]



def test_rows_reversioning_a_whole_file_in_its_order_are_matched_row_for_row(lake, monkeypatch):
    from matlake.platform import lake as lake_module

    monkeypatch.setattr(lake_module, "SAME_ORDER_MIN_ROWS", 10)
    first = [{"record_id": f"s{i}", "formula": "Si"} for i in range(10)]
    s1 = _commit(lake, first)
    s2 = _commit(lake, [{"record_id": "s3", "formula": "C"}])
    joined = []
    real = type(lake)._join_versions
    monkeypatch.setattr(type(lake), "_join_versions",
                        lambda self, ids, paths, codes: joined.append(paths) or real(self, ids, paths, codes))
    s3 = _commit(lake, [dict(r, formula="N") for r in first])
    with lake.engine.connect() as conn:
        path_of = dict(conn.execute(sa.text("select added_snapshot, path from data_files")).all())
    # The first file matched by comparing its ids; only the file with s3's newer version was joined.
    assert joined == [[path_of[s2]]]
    assert lake.sql("select record_id, version, formula from structures order by 1").fetchall() == [
        (f"s{i}", 3 if i == 3 else 2, "N") for i in range(10)]
    assert lake.sql("select record_id, version, formula from structures where record_id in ('s2', 's3') order by 1",
                    as_of=s2).fetchall() == [("s2", 1, "Si"), ("s3", 2, "C")]
    q = ("select f.added_snapshot, v.rows, v.path is null from deletion_vectors v join data_files f "
         "on f.id = v.data_file_id where v.retired_snapshot is null order by 1")
    with lake.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.text(q))] == [(s1, 10, True), (s2, 1, True)]
    # Now the only live file: matched without any join.
    joined.clear()
    last = _commit(lake, [dict(r, formula="O") for r in first])
    assert joined == []
    assert lake.sql("select record_id, version from structures order by 1").fetchall() == [
        (f"s{i}", 4 if i == 3 else 3) for i in range(10)]
    assert _latest_by_ranking(lake, "structures", last) == lake.sql(
        "select record_id, version from structures order by 1").fetchall()
    # Fewer rows than SAME_ORDER_MIN_ROWS: joined (no file read to compare), same answer.
    monkeypatch.setattr(lake_module, "SAME_ORDER_MIN_ROWS", 11)
    _commit(lake, [dict(r, formula="B") for r in first])
    assert len(joined) == 1
    assert lake.sql("select record_id, version from structures order by 1").fetchall() == [
        (f"s{i}", 5 if i == 3 else 4) for i in range(10)]
    assert doctor(lake).problems == []


def test_auto_compaction_runs_once_the_policy_is_met(sqlite_lake):
    lake = sqlite_lake
    for i in range(AUTO_MIN_FILES):
        _commit(lake, [{"record_id": f"s{i}", "formula": "Si"}])
    (res,) = compact(lake, auto=True)
    assert (res.table, res.merged_files) == ("structures", AUTO_MIN_FILES)
    assert compact(lake, auto=True) == []


def test_a_lake_with_per_record_links_and_superseded_rows_migrates_up_and_down(lake):
    lake.ingest([sample("dft")], progress=False)
    info = lake.train(CompositionRegressor(n_estimators=20))
    lake.predict(info.model_id)
    lake.predict(info.model_id)
    pred = lake.sql("select record_id from predictions order by 1 limit 1").fetchone()[0]
    roots = [pred, info.model_id]
    before = _answers(lake, roots)
    latest = lake.sql("select record_id, version from predictions order by 1").fetchall()
    migrate.downgrade(lake.engine, "0004")  # the sets become links, the vectors superseded rows
    with lake.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from superseded")).scalar() == 9
        n = conn.execute(sa.text("select count(*) from links where entity_kind = 'record'")).scalar()
    assert n == info.n_train + 9 + 9
    migrate.upgrade(lake.engine)  # old links stay readable as they are
    assert _answers(lake, roots) == before
    assert lake.sql("select record_id, version from predictions order by 1").fetchall() == latest
    assert doctor(lake).problems == []


def test_a_job_with_compact_auto_compacts_once_the_policy_is_met(sqlite_lake, monkeypatch):
    import shutil

    from matlake.platform import jobs as J
    from matlake.platform import operations

    lake = sqlite_lake
    with pytest.raises(J.JobFileError, match=r"field compact: expected 'auto' \(or false\), found 'yes'"):
        J.parse_jobs({"job": [{"name": "e", "sources": ["raw/*"], "compact": "yes"}]}, "jobs.toml", lake.root.parent)
    job = J.parse_jobs({"job": [{"name": "e", "sources": ["raw/*"], "compact": "auto", "batch_size": 1,
                                 "settle_seconds": 0}]}, "jobs.toml", lake.root.parent)["e"]
    monkeypatch.setattr(operations, "AUTO_MIN_FILES", 3)
    raw = lake.root.parent / "raw"
    raw.mkdir()
    names = ["impedancepy_Circuit3_EIS_1.z", "impedancepy_exampleDataBioLogic.mpt", "impedancepy_exampleDataGamry.DTA"]
    shutil.copyfile(sample("eis", names[0]), raw / names[0])
    assert J.run_job(lake, job).status == "ok"
    assert lake.sql("select count(*) from activities where kind = 'compact'").fetchone() == (0,)  # 1 file
    for n in names[1:]:
        shutil.copyfile(sample("eis", n), raw / n)
    run = J.run_job(lake, job)
    assert (run.status, run.new) == ("ok", 2)
    compacted = lake.sql("select name from activities where kind = 'compact' order by 1").fetchall()
    assert ("compact:impedance",) in compacted
    assert lake.sql("select count(*) from data_files where table_name = 'impedance' "
                    "and retired_snapshot is null").fetchone() == (1,)
    assert lake.sql("select count(*) from impedance").fetchone() == (3,)


def test_cli_compact_auto_prints_the_policy_and_merges_when_met(sqlite_lake):
    import subprocess
    import sys

    lake = sqlite_lake

    def matlake(*args):
        return subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args, "--lake", str(lake.root)],
                              capture_output=True, text=True, timeout=300, check=True).stdout

    for i in range(AUTO_MIN_FILES - 1):
        _commit(lake, [{"record_id": f"s{i}", "formula": "Si"}])
    assert f"no table has {AUTO_MIN_FILES} or more small live files" in matlake("compact", "--auto")
    _commit(lake, [{"record_id": "last", "formula": "C"}])
    out = matlake("compact", "--auto")
    assert f"structures: merged {AUTO_MIN_FILES} files ({AUTO_MIN_FILES} rows)" in out
    assert lake.sql("select count(*) from structures").fetchone() == (AUTO_MIN_FILES,)


def test_sorted_distinct_sorts_and_drops_repeats_like_unique():
    import numpy as np

    rng = np.random.default_rng(5)
    for values in (rng.integers(0, 50, 300), rng.permutation(300), np.arange(10), np.array([], np.int64),
                   np.array([7])):
        got = sorted_distinct(values.astype(np.int64))
        assert got.tolist() == np.unique(values).tolist()
