"""How ingest records what goes wrong: bad input (``failed``) apart from parser bugs
(``error``), files it cannot read, re-tries with another kind or options, ``--strict``,
``retry``, and the messages a user reads.  Ledger behaviour runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import sqlalchemy as sa
from conftest import sample

import matlake.ingest as registry
from matlake.platform import cli, ingestion, migrate
from matlake.platform.operations import doctor, retry

CSV = "impedancepy_exampleData.csv"
CIF = "MAPbI3_mp-977013_symmetrized.cif"


def _ledger(lake, where: str = "true") -> list[tuple]:
    return lake.sql(f"select source_path, sha256, parser, status, message, detail, attempt_key from ledger "
                    f"where {where} order by id").fetchall()


def _copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _with_parser(monkeypatch, name: str, parse, detect=None, kind: str = "structure") -> None:
    """Put a test parser first in the registry: it reads files named ``*.boom``."""
    extra = registry.Parser(name=name, version="1", kind=kind, parse=parse,
                            detect=detect or (lambda head, filename: filename.endswith(".boom")),
                            description="test format")
    parsers = (extra,) + tuple(p for p in registry.all_parsers() if p.name != name)
    monkeypatch.setattr(registry, "all_parsers", lambda: parsers)


def _crash(data, ctx):
    return {}["a key the parser forgot"]  # a bug: KeyError from the parser's own code


# --------------------------------------------------------------------------- error vs failed


def test_parser_bug_is_an_error_with_traceback_counted_apart_from_bad_input(lake, tmp_path, monkeypatch):
    _with_parser(monkeypatch, "boom", _crash)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.boom").write_bytes(b"some content\n")
    (folder / "sub" / "bad.cif").write_text("data_x\n_cell_length_a 5\n")  # bad input for the CIF parser
    report = lake.ingest([folder], progress=False)
    assert (report.new, report.failed, report.errors) == (0, 1, 1)
    assert "0 new, 0 unchanged, 1 failed, 1 errors files" in report.summary()
    rows = {os.path.basename(r[0]): r for r in _ledger(lake)}
    path, sha, parser, status, message, detail, _key = rows["a.boom"]
    assert (parser, status) == ("boom", "error")
    assert path in message and "KeyError" in message and "a bug" in message
    assert "Traceback" in detail and "_crash" in detail
    assert lake.objects.exists(sha)  # the raw bytes are kept
    assert rows["bad.cif"][3] == "failed" and rows["bad.cif"][5] == ""
    act = lake.sql("select status, error from activities where name = 'boom'").fetchone()
    assert act[0] == "error" and "KeyError" in act[1]
    assert doctor(lake).ok


def test_detector_bug_and_rows_the_schema_refuses_are_errors_not_bad_input(sqlite_lake, tmp_path, monkeypatch):
    def bad_detect(head, filename):
        if filename.endswith(".det"):
            raise IndexError("detector bug")
        return False

    def wrong_rows(data, ctx):
        result = registry.ParseResult()
        result.add_rows("structures", [{"record_id": ctx.record_id("x"), "not_a_column": 1}])
        return result

    _with_parser(monkeypatch, "detbug", wrong_rows,
                 detect=lambda h, f: bad_detect(h, f) or f.endswith(".boom"))
    (tmp_path / "x.det").write_text("anything\n")
    (tmp_path / "y.boom").write_text("anything else\n")
    report = sqlite_lake.ingest([tmp_path / "x.det", tmp_path / "y.boom"], progress=False)
    assert (report.errors, report.failed) == (2, 0)
    by_name = {os.path.basename(r[0]): r for r in _ledger(sqlite_lake)}
    assert "format detector crashed: IndexError: detector bug" in by_name["x.det"][4]
    assert "produced rows its table refuses" in by_name["y.boom"][4] and "not_a_column" in by_name["y.boom"][4]


def test_reingest_leaves_an_error_unchanged_and_retry_tries_it_again_until_fixed(lake, tmp_path, monkeypatch):
    _with_parser(monkeypatch, "boom", _crash)
    src = tmp_path / "s.boom"
    src.write_bytes(b"content\n")
    lake.ingest([src], progress=False)
    again = lake.ingest([src], progress=False)
    assert (again.unchanged, again.errors, again.still_failed) == (1, 0, 1)
    assert again.outcomes[0].prior == "error"

    res = retry(lake)  # still the same bug: a new error row, nothing lost
    assert res.candidates == 1 and res.report.errors == 1 and not res.nothing_new
    assert [r[3] for r in _ledger(lake)] == ["error", "error"]

    def fixed(data, ctx):  # the bug fixed without a new parser version (a file without records)
        return registry.ParseResult(tables={"structures": []})

    _with_parser(monkeypatch, "boom", fixed)
    res = retry(lake)
    assert (res.report.new, res.report.errors) == (1, 0)
    assert [r[3] for r in _ledger(lake)] == ["error", "error", "ok"]
    assert retry(lake).candidates == 0  # an ok row settles it


def test_ledger_errors_lists_errors_with_traceback_and_strict_counts_unchanged_failures(
        sqlite_lake, tmp_path, monkeypatch, capsys):
    _with_parser(monkeypatch, "boom", _crash)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "e.boom").write_bytes(b"x\n")
    (folder / "f.cif").write_text("data_x\n")
    lake_arg = ["--lake", str(sqlite_lake.root)]
    assert cli.main(["ingest", str(folder), "--no-progress", *lake_arg]) == 0
    out = capsys.readouterr()
    assert "ERROR " in out.err and "FAILED " in out.err and "1 failed, 1 errors" in out.out
    # nothing new this time, but both files are still failed: --strict says so and exits 1
    assert cli.main(["ingest", str(folder), "--no-progress", "--strict", *lake_arg]) == 1
    out = capsys.readouterr()
    assert "2 unchanged (2 of them failed before)" in out.out
    assert "STILL FAILED" in out.err and "STILL ERROR" in out.err
    assert cli.main(["ledger", "--errors", "--traceback", *lake_arg]) == 0
    out = capsys.readouterr().out
    assert "error boom 1" in out and "Traceback" in out and "f.cif" not in out
    assert cli.main(["ledger", "--failed", *lake_arg]) == 0
    out = capsys.readouterr().out
    assert "f.cif" in out and "e.boom" not in out


# --------------------------------------------------------------------------- files not read


def test_special_file_gets_a_failed_row_and_an_activity_without_bytes_once(lake, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    fifo = folder / "pipe.cif"
    os.mkfifo(fifo)  # root reads any file, but nobody reads a FIFO as a source
    _copy(sample("dft", CIF), folder / CIF)
    report = lake.ingest([folder], progress=False)
    assert (report.new, report.failed) == (1, 1)
    rows = _ledger(lake, "status = 'failed'")
    assert len(rows) == 1
    path, sha, parser, _status, message, _detail, key = rows[0]
    assert (path, sha, parser) == (str(fifo), "", "unknown") and key.startswith("unread:")
    assert "not a regular file (a FIFO)" in message and str(fifo) in message
    act = lake.sql("select a.status, a.parameters_json from activities a join ledger l using (activity_id) "
                   "where l.sha256 = ''").fetchone()
    assert act[0] == "failed" and json.loads(act[1])["source_path"] == str(fifo)
    assert lake.sql("select count(*) from catalog_links l join ledger g using (activity_id) "
                    "where g.sha256 = ''").fetchone() == (0,)  # no object was used

    again = lake.ingest([fifo], progress=False)  # still unreadable: reported, not recorded twice
    assert again.failed == 1 and again.still_failed == 1
    assert len(_ledger(lake, "status = 'failed'")) == 1

    fifo.unlink()  # the file becomes readable: its row does not block it
    _copy(sample("dft", CIF), fifo)
    fixed = lake.ingest([fifo], progress=False)
    assert (fixed.new + fixed.unchanged, fixed.failed) == (1, 0)
    assert doctor(lake).ok


def test_broken_symlink_in_a_folder_gets_a_failed_row_naming_the_link_and_its_target(sqlite_lake, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    link = folder / "gone.cif"
    link.symlink_to(tmp_path / "moved-away.cif")  # a dangling link: a file the walk finds but cannot read
    _copy(sample("dft", CIF), folder / CIF)
    report = sqlite_lake.ingest([folder], progress=False)
    assert (report.new, report.failed) == (1, 1)
    rows = _ledger(sqlite_lake, "status = 'failed'")
    assert len(rows) == 1
    path, sha, _parser, _status, message, _detail, _key = rows[0]
    assert (path, sha) == (str(link), "")
    assert f"broken symbolic link to {tmp_path / 'moved-away.cif'}" in message

    again = sqlite_lake.ingest([link], progress=False)  # named directly: the same row, not a crash
    assert again.failed == 1 and len(_ledger(sqlite_lake, "status = 'failed'")) == 1


def test_permission_denied_is_a_failed_row_naming_the_reason(sqlite_lake, tmp_path, monkeypatch):
    src = _copy(sample("dft", CIF), tmp_path / CIF)

    def denied(path, *args, **kwargs):  # what chmod 000 does to a user other than root
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ingestion, "open", denied, raising=False)
    report = sqlite_lake.ingest([src], progress=False)
    assert report.failed == 1
    [(path, sha, _p, status, message, _d, key)] = _ledger(sqlite_lake)
    assert (path, sha, status, message) == (str(src), "", "failed", f"{src}: cannot read: Permission denied")
    monkeypatch.delattr(ingestion, "open")
    assert sqlite_lake.ingest([src], progress=False).new == 1  # readable again: not blocked by that row


def test_oversized_file_is_refused_unread_under_a_configurable_limit_then_read_when_raised(
        lake, tmp_path, monkeypatch):
    src = _copy(sample("dft", CIF), tmp_path / CIF)
    size = src.stat().st_size
    monkeypatch.setenv("MATLAKE_MAX_SOURCE_BYTES", "100")
    report = lake.ingest([src], progress=False)
    assert report.failed == 1
    [(path, sha, _p, status, message, _d, _k)] = _ledger(lake)
    assert (sha, status) == ("", "failed")
    assert f"field size: expected at most 100 bytes ($MATLAKE_MAX_SOURCE_BYTES), found {size}" in message
    assert list(lake.objects.iter_files()) == []  # not read, so nothing stored

    monkeypatch.setenv("MATLAKE_MAX_SOURCE_BYTES", str(size))
    report = lake.ingest([src], progress=False)
    assert (report.new, report.failed) == (1, 0)
    assert lake.sql("select count(*) from structures").fetchone() == (1,)


def test_bad_size_limit_is_rejected_before_any_work(sqlite_lake, tmp_path, monkeypatch):
    src = _copy(sample("dft", CIF), tmp_path / CIF)
    monkeypatch.setenv("MATLAKE_MAX_SOURCE_BYTES", "2GB")
    with pytest.raises(ValueError, match=r"MATLAKE_MAX_SOURCE_BYTES: expected a positive number of bytes, found '2GB'"):
        sqlite_lake.ingest([src], progress=False)
    assert sqlite_lake.last_snapshot() == 0


# --------------------------------------------------------------------------- trying again


def test_failed_file_is_tried_again_with_another_kind_and_ok_records_stay_deduplicated(lake, tmp_path):
    src = _copy(sample("eis", CSV), tmp_path / "spectrum.cif")  # the name says CIF, the content is EIS
    first = lake.ingest([src], progress=False)
    assert first.failed == 1 and first.outcomes[0].parser == "structure"
    same = lake.ingest([src], progress=False)
    assert (same.unchanged, same.still_failed) == (1, 1)
    forced = lake.ingest([src], kind="eis", progress=False)
    assert (forced.new, forced.failed, forced.unchanged) == (1, 0, 0)
    assert lake.sql("select count(*) from impedance").fetchone()[0] >= 1
    # once ok, the bytes are done for this parser version, whatever the options
    for options in ({}, {"sample": "other"}):
        rep = lake.ingest([src], kind="eis", options=options, progress=False)
        assert (rep.new, rep.unchanged) == (0, 1)


def test_failed_file_is_tried_again_with_other_options(lake, tmp_path):
    src = _copy(sample("eis", CSV), tmp_path / CSV)
    bad = lake.ingest([src], options={"temperature": -5}, progress=False)
    assert bad.failed == 1 and "option temperature" in bad.outcomes[0].message
    assert lake.ingest([src], options={"temperature": -5}, progress=False).unchanged == 1
    good = lake.ingest([src], options={"temperature": 298.15}, progress=False)
    assert (good.new, good.failed) == (1, 0)
    keys = [r[6] for r in _ledger(lake)]
    assert keys[0] == ingestion.attempt_key("auto", {"temperature": -5}) and keys[1] == ""


def test_unknown_kind_is_rejected_before_any_work_listing_the_kinds(sqlite_lake, tmp_path, capsys):
    src = _copy(sample("dft", CIF), tmp_path / CIF)
    with pytest.raises(registry.UnknownKind, match="unknown kind 'vsp'; known kinds: auto, .*vasp"):
        sqlite_lake.ingest([src], kind="vsp", progress=False)
    with pytest.raises(registry.UnknownKind):
        ingestion.ingest(sqlite_lake, items=[ingestion.SourceItem(str(src), "strucure")], progress=False)
    assert sqlite_lake.last_snapshot() == 0 and list(sqlite_lake.objects.iter_files()) == []
    assert cli.main(["ingest", str(src), "--kind", "vsp", "--lake", str(sqlite_lake.root)]) == 1
    err = capsys.readouterr().err
    assert "unknown kind 'vsp'" in err and all(k in err for k in registry.kinds())


def test_raw_bytes_of_every_failure_are_kept_so_retry_finds_them(lake, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.cif").write_bytes(b"")
    (folder / "garbage.bin").write_bytes(bytes(range(256)))
    (folder / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    _copy(sample("eis", CSV), folder / "wrong.cif")
    report = lake.ingest([folder], kind="structure", progress=False)
    assert report.failed == 4
    for _path, sha, *_rest in _ledger(lake):
        assert lake.objects.exists(sha)
    res = retry(lake)
    assert res.missing_objects == [] and res.candidates == 4 and res.nothing_new


# --------------------------------------------------------------------------- messages


def test_unsupported_content_names_the_kinds_and_formats_and_prints_no_bytes(sqlite_lake, tmp_path):
    data = b"\x01\x02MAGIC\xff\xfe" * 50  # no NUL byte, but not text either
    src = tmp_path / "mystery.dat"
    src.write_bytes(data)
    report = sqlite_lake.ingest([src], progress=False)
    msg = report.outcomes[0].message
    assert msg.startswith(f"{src}: unsupported format: field content: expected any supported format, found binary")
    for p in registry.all_parsers():
        assert p.kind in msg and p.description.split(" → ")[0] in msg
    assert "MAGIC" not in msg and "\\x" not in msg
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n")
    msg = sqlite_lake.ingest([text], kind="vasp", progress=False).outcomes[0].message
    assert "unsupported format" in msg and "expected a vasp file" in msg
    assert "vasprun.xml" in msg and "eis" not in msg and "just some notes" not in msg
    msg = sqlite_lake.ingest([text], kind="eis", progress=False).outcomes[0].message
    assert "expected an eis file" in msg


def test_empty_file_says_empty_file(sqlite_lake, tmp_path):
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.cif").write_bytes(b"")
    (folder / "b.csv.gz").write_bytes(gzip.compress(b""))
    (folder / "c.txt").write_bytes(b"\n  \n")
    report = sqlite_lake.ingest([folder], progress=False)
    msgs = sorted(o.message for o in report.outcomes)
    assert msgs == [f"{folder / 'a.cif'}: empty file", f"{folder / 'b.csv.gz'}: empty file (gzip of nothing)",
                    f"{folder / 'c.txt'}: empty file (only whitespace)"]


def test_parse_error_found_text_is_escaped_and_capped():
    err = registry.ParseError("header", "text", "a\x00b\x1b[31m" + "x" * 1000)
    assert "\x00" not in str(err) and "\x1b" not in str(err) and "\\x00" in str(err)
    assert str(err).endswith("characters)") and len(str(err)) < 400


# --------------------------------------------------------------------------- migration 0004


def test_migration_0004_keys_old_failures_by_their_kind_and_options_and_downgrades(lake, tmp_path):
    src = _copy(sample("eis", CSV), tmp_path / CSV)
    lake.ingest([src], options={"temperature": -5}, progress=False)
    lake.ingest([src], options={"temperature": -7}, progress=False)
    lake.ingest([src], progress=False)
    assert [r[3] for r in _ledger(lake)] == ["failed", "failed", "ok"]
    migrate.downgrade(lake.engine, "0003")  # one row per (bytes, parser version): the ok one stays
    with lake.engine.connect() as conn:
        rows = conn.execute(sa.text("select status from ingest_ledger")).fetchall()
        assert [r[0] for r in rows] == ["ok"]
    migrate.upgrade(lake.engine)
    with lake.engine.connect() as conn:
        rows = conn.execute(sa.text("select status, attempt_key from ingest_ledger")).fetchall()
    assert [tuple(r) for r in rows] == [("ok", "")]


def test_migration_0004_backfills_attempt_keys_from_the_activity(lake, tmp_path):
    src = _copy(sample("eis", CSV), tmp_path / CSV)
    lake.ingest([src], kind="eis", options={"temperature": -5}, progress=False)
    migrate.downgrade(lake.engine, "0003")
    migrate.upgrade(lake.engine)
    with lake.engine.connect() as conn:
        [row] = conn.execute(sa.text("select status, attempt_key from ingest_ledger")).fetchall()
    assert tuple(row) == ("failed", ingestion.attempt_key("eis", {"temperature": -5}))
    assert lake.ingest([src], kind="eis", options={"temperature": -5}, progress=False).unchanged == 1


def test_retry_reads_a_file_that_could_not_be_read_again_from_its_path(sqlite_lake, tmp_path, monkeypatch):
    src = _copy(sample("dft", CIF), tmp_path / CIF)
    monkeypatch.setenv("MATLAKE_MAX_SOURCE_BYTES", "100")
    assert sqlite_lake.ingest([src], progress=False).failed == 1
    assert retry(sqlite_lake).report.failed == 1  # still too large: reported again, not recorded twice
    assert len(_ledger(sqlite_lake)) == 1
    monkeypatch.delenv("MATLAKE_MAX_SOURCE_BYTES")
    res = retry(sqlite_lake)
    assert (res.candidates, res.report.new) == (1, 1)
    assert retry(sqlite_lake).candidates == 0
    gone = tmp_path / "gone.cif"  # too large, then deleted: nothing left to retry
    monkeypatch.setenv("MATLAKE_MAX_SOURCE_BYTES", "1")
    gone.write_text("data_x\n")
    sqlite_lake.ingest([gone], progress=False)
    gone.unlink()
    res = retry(sqlite_lake)
    assert res.candidates == 0 and res.missing_objects == [f"{gone}: was not read (no raw object) and is gone"]
