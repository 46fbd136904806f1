"""doctor, compact, export (Parquet, DuckDB) and retry."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from matlake.ingest.base import ParseError, Parser, ParseResult
from matlake.platform.cli import main
from matlake.platform.operations import compact, doctor, export_duckdb, export_parquet, retry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import write_eis_files  # noqa: E402


def _ingest_in_commits(lake, folder: Path, commits: int = 3, per_commit: int = 3) -> list[int]:
    """Ingest ``commits`` batches of new EIS files; returns the snapshot of each."""
    sids = []
    for c in range(commits):
        paths = write_eis_files(folder / f"b{c}", c * 100, per_commit)
        rep = lake.ingest(paths, progress=False)
        assert rep.new == per_commit
        sids.append(rep.snapshots[-1])
    return sids


def _rows(lake, as_of=None, table: str = "impedance") -> list[tuple]:
    return sorted(lake.sql(f"select record_id, version, activity_id, z_real from {table}", as_of=as_of).fetchall())


# --------------------------------------------------------------------------- doctor


def test_doctor_flags_corrupt_missing_files_and_lists_orphans(sqlite_lake, tmp_path, capsys):
    lake = sqlite_lake
    _ingest_in_commits(lake, tmp_path / "src", commits=2)
    assert doctor(lake).ok
    orphan = lake.root / "tables" / "impedance" / ("0" * 64 + ".parquet")
    orphan.write_bytes(b"left by a crashed commit")
    rep = doctor(lake)
    assert rep.ok and rep.orphans == ["tables/impedance/" + orphan.name]
    files = lake.files_at(lake.last_snapshot(), "impedance")
    victim = lake.root / files[0]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(data))
    obj_sha = lake.sql("select sha256 from objects limit 1").fetchone()[0]
    lake.objects.path(obj_sha).unlink()
    rep = doctor(lake)
    assert not rep.ok
    assert any(files[0]["path"] in p and "sha256" in p for p in rep.problems)
    assert any(obj_sha in p and "missing" in p for p in rep.problems)
    assert main(["doctor", "--lake", str(lake.root)]) == 1
    out = capsys.readouterr().out
    assert out.count("PROBLEM ") == len(rep.problems) == 2


def test_doctor_flags_rows_of_an_uncommitted_activity(sqlite_lake, tmp_path):
    """A Parquet file registered by hand whose rows name an activity no snapshot committed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import update

    from matlake.platform import catalog as cat

    lake = sqlite_lake
    _ingest_in_commits(lake, tmp_path / "src", commits=1)
    f = lake.files_at(lake.last_snapshot(), "impedance")[0]
    t = pq.read_table(lake.root / f["path"])
    t = t.set_column(t.schema.get_field_index("activity_id"), "activity_id",
                     pa.array(["act_never_committed"] * t.num_rows))
    pq.write_table(t, lake.root / f["path"])
    data = (lake.root / f["path"]).read_bytes()
    with lake.engine.begin() as conn:
        conn.execute(update(cat.DataFile).where(cat.DataFile.id == f["id"]).values(
            sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)))
    rep = doctor(lake)
    assert [p for p in rep.problems if "act_never_committed" in p and "no snapshot committed" in p]


# --------------------------------------------------------------------------- compact


def test_compact_merges_files_in_one_commit_and_keeps_time_travel(lake, tmp_path):
    sids = _ingest_in_commits(lake, tmp_path / "src", commits=4)
    victim = lake.sql("select record_id from impedance order by record_id limit 1").fetchone()[0]
    lake.delete("impedance", [victim], reason="test tombstone")
    before_latest = _rows(lake)
    before_old = _rows(lake, as_of=sids[1])
    before_all = sorted(lake.sql("select record_id, version, tombstone from impedance_all").fetchall())
    old_files = lake.files_at(lake.last_snapshot(), "impedance")
    assert len(old_files) == 5 and victim not in {r[0] for r in before_latest}
    last = lake.last_snapshot()

    results = compact(lake, "impedance")

    assert [(r.table, r.merged_files, r.rows) for r in results] == [("impedance", 5, 13)]
    assert lake.last_snapshot() == last + 1  # one commit
    assert len(lake.files_at(lake.last_snapshot(), "impedance")) == 1
    assert _rows(lake) == before_latest
    assert sorted(lake.sql("select record_id, version, tombstone from impedance_all").fetchall()) == before_all
    assert _rows(lake, as_of=sids[1]) == before_old  # older snapshots still read the retired files
    assert _rows(lake, as_of=last) == before_latest
    assert all((lake.root / f["path"]).exists() for f in old_files)
    assert lake.sql("select count(*) from activities where kind = 'compact'").fetchone()[0] == 1
    assert doctor(lake).ok
    assert compact(lake, "impedance") == []  # one file left: nothing to merge


def test_second_compaction_of_same_files_is_refused(sqlite_lake, tmp_path):
    """Two compactions racing on the same files: the second must not register a duplicate merge."""
    from matlake.platform.lake import ChangeSet, LakeError

    lake = sqlite_lake
    _ingest_in_commits(lake, tmp_path / "src", commits=2)
    ids = [f["id"] for f in lake.files_at(lake.last_snapshot(), "impedance")]
    compact(lake, "impedance")
    cs = ChangeSet("compact", "stale")
    cs.activity("compact", "compact:impedance")
    cs.retire = ids
    with pytest.raises(LakeError, match="already retired"):
        lake.commit(cs)
    assert doctor(lake).ok


# --------------------------------------------------------------------------- export


def test_export_parquet_writes_latest_rows_per_source_file_with_manifest(lake, tmp_path):
    sids = _ingest_in_commits(lake, tmp_path / "src", commits=3)
    lake.tag("first", as_of=sids[0])
    victim = lake.sql("select record_id from impedance order by record_id limit 1").fetchone()[0]
    lake.delete("impedance", [victim])
    out = tmp_path / "export"
    assert main(["export", "--parquet", str(out), "--lake", str(lake.root)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["snapshot_id"] == lake.last_snapshot()
    imp = manifest["tables"]["impedance"]
    assert imp["rows"] == 8 and len(imp["files"]) == 3  # 3 data files with live rows (the tombstone file drops out)
    for f in imp["files"]:
        assert f["path"].startswith("table=impedance/part-")
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert "tombstone" not in [c["name"] for c in imp["schema"]]
    con = duckdb.connect()
    exported = sorted(con.execute(
        "select record_id, version, activity_id, z_real from read_parquet(?, hive_partitioning=true) "
        "where \"table\" = 'impedance'", [str(out / "*" / "*.parquet")]).fetchall())
    assert exported == _rows(lake)
    assert victim not in {r[0] for r in exported}
    first = export_parquet(lake, tmp_path / "export-first", as_of="first")
    assert first["snapshot_id"] == sids[0] and first["tables"]["impedance"]["rows"] == 3


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_export_parquet_needs_no_more_disk_than_its_output(sqlite_lake, tmp_path):
    """Export into a filesystem only 1.1x the export's size (block-rounded): a staged or
    temporary copy would not fit."""
    lake = sqlite_lake
    _ingest_in_commits(lake, tmp_path / "src", commits=4, per_commit=12)
    ref = export_parquet(lake, tmp_path / "ref")
    block = 4096
    used = sum(-(-f.stat().st_size // block) * block for f in (tmp_path / "ref").rglob("*") if f.is_file())
    used += block * (1 + len(ref["tables"]))  # directories
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, int(1.1 * used) // block * block):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        m = export_parquet(lake, mnt / "out")
        assert m["tables"]["impedance"]["rows"] == ref["tables"]["impedance"]["rows"] == 48
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_export_duckdb_file_is_read_only_and_matches_the_lake(lake, tmp_path):
    _ingest_in_commits(lake, tmp_path / "src", commits=2)
    dest = tmp_path / "bi.duckdb"
    info = export_duckdb(lake, dest)
    assert info["tables"]["impedance"] == 6
    assert not os.stat(dest).st_mode & 0o222
    con = duckdb.connect(str(dest), read_only=True)
    try:
        assert sorted(con.execute("select record_id, version, activity_id, z_real from impedance").fetchall()) == _rows(lake)
        assert con.execute("select count(*) from eis").fetchall() == [(6,)]  # domain view inside the file
        assert con.execute("select snapshot_id from matlake_export").fetchall() == [(lake.last_snapshot(),)]
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("delete from impedance")
    finally:
        con.close()


# --------------------------------------------------------------------------- retry


def _test_parser(version: str, fixed: bool) -> Parser:
    """A parser for 'TESTFMT' files of `name value` lines; version 1 rejects comma decimals."""

    def detect(head: bytes, filename: str) -> bool:
        return head.startswith(b"TESTFMT")

    def parse(data: bytes, ctx) -> ParseResult:
        res = ParseResult()
        for i, line in enumerate(data.decode().splitlines()[1:]):
            name, raw = line.split()
            if "," in raw and not fixed:
                raise ParseError(f"line {i + 2} value", "a number with a decimal point", repr(raw))
            res.add_rows("features", [{"record_id": ctx.record_id(f"line={i}"), "subject_id": "s1",
                                       "featurizer": "testfmt", "feature": name,
                                       "value": float(raw.replace(",", "."))}])
        return res

    return Parser(name="testfmt", version=version, kind="testfmt", detect=detect, parse=parse)


def test_retry_after_parser_fix_links_new_records_to_the_same_raw_object(sqlite_lake, tmp_path, monkeypatch, capsys):
    import matlake.ingest as ingest_mod

    lake = sqlite_lake
    src = tmp_path / "m.txt"
    src.write_bytes(b"TESTFMT\nalpha 1.5\nbeta 2,25\n")
    raw_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    parsers = {"p": _test_parser("1", fixed=False)}
    monkeypatch.setattr(ingest_mod, "all_parsers", lambda: (parsers["p"],))

    rep = lake.ingest([src], progress=False)
    assert rep.failed == 1
    msg = lake.sql("select message from ledger where status = 'failed'").fetchone()[0]
    assert "m.txt" in msg and "line 3 value" in msg
    src.unlink()  # retry reads the kept raw object, not the original file

    assert main(["retry", "--lake", str(lake.root)]) == 0
    assert "nothing new to try" in capsys.readouterr().out
    before = lake.last_snapshot()
    assert retry(lake).nothing_new and lake.last_snapshot() == before

    parsers["p"] = _test_parser("2", fixed=True)
    res = retry(lake, parser="testfmt")
    assert res.report.new == 1 and res.report.records == 2
    rows = lake.sql("select feature, value, activity_id from features order by feature").fetchall()
    assert [(f, v) for f, v, _ in rows] == [("alpha", 1.5), ("beta", 2.25)]
    used = {r[0] for r in lake.sql("select entity_id from links where role = 'used' and entity_kind = 'object' "
                                   "and activity_id = ?", params=[rows[0][2]]).fetchall()}
    assert used == {raw_sha}
    ledger = lake.sql("select parser_version, status from ledger where sha256 = ? order by id",
                      params=[raw_sha]).fetchall()
    assert ledger == [("1", "failed"), ("2", "ok")]
    assert retry(lake).candidates == 0  # the source has an ok row now
    assert doctor(lake).ok
