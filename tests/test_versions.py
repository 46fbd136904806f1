"""(record_id, version) stays unique when writers race (issue #7).

Versions are looked up before a commit's files are written and checked again
inside its transaction.  The in-process tests interleave a second lake handle
at exactly that gap; the process tests race real processes on deletes,
``eis analyze --force`` and predict, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import matlake
from conftest import sample
from matlake.platform.lake import ChangeSet, Lake, VersionConflict
from matlake.platform.operations import doctor
from matlake.schemas import get as schema_of

WORKERS = Path(__file__).resolve().parent / "workers.py"


def write_poscars(folder: Path, n: int) -> list[Path]:
    """``n`` rock-salt-like NaCl cells with distinct lattice constants (distinct bytes, distinct records)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        a = 5.0 + 0.01 * i
        p = folder / f"POSCAR_{i:03d}"
        p.write_text(f"NaCl cell {i}\n1.0\n{a} 0 0\n0 {a} 0\n0 0 {a}\nNa Cl\n1 1\nDirect\n"
                     "0 0 0\n0.5 0.5 0.5\n")
        paths.append(p)
    return paths


def structure_ids(lake: Lake, tmp_path: Path, n: int) -> list[str]:
    report = lake.ingest(write_poscars(tmp_path / "poscars", n), progress=False, kind="structure")
    assert report.failed == 0 and report.new == n
    return [r for (r,) in lake.sql("select record_id from structures order by record_id").fetchall()]


def versions_of(lake: Lake, table: str, rid: str) -> list[tuple[int, bool]]:
    return lake.sql(f"select version, tombstone from {table}_all where record_id = ? order by version",
                    params=[rid]).fetchall()


def correction(lake: Lake, rid: str, version: int | None = None) -> ChangeSet:
    """A change set re-stating a structures record (as a correction would)."""
    data_cols = ["record_id"] + [c.name for c in schema_of("structures").data_columns]
    row = lake.sql("select * from structures where record_id = ?", params=[rid]).arrow().select(data_cols)
    cs = ChangeSet("correct", "test correction")
    act = cs.activity("correct", "test")
    cs.add_rows("structures", row, act, version=version)
    return cs


@pytest.fixture
def interleave(monkeypatch):
    """``interleave(lake, action)``: run ``action`` once, right after ``lake`` has looked up
    versions and written its files, before its transaction — the race window."""

    def arm(lake: Lake, action) -> list[int]:
        original = Lake._write_tables
        fired: list[int] = []

        def write_then_race(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            if self is lake and not fired:
                fired.append(1)
                action()
            return out

        monkeypatch.setattr(Lake, "_write_tables", write_then_race)
        return fired

    return arm


def table_files(lake: Lake) -> set[str]:
    return {p.relative_to(lake.root).as_posix() for p in (lake.root / "tables").rglob("*.parquet")}


def test_a_version_landing_in_the_race_window_is_rebased_above_it(lake, tmp_path, interleave):
    rid = structure_ids(lake, tmp_path, 1)[0]
    other = matlake.open(lake.root)
    fired = interleave(lake, lambda: other.delete("structures", [rid], reason="concurrent"))
    lake.commit(correction(lake, rid))
    assert fired
    # The concurrent tombstone took version 2; the correction was re-versioned to 3, not a second 2.
    assert versions_of(lake, "structures", rid) == [(1, False), (2, True), (3, False)]
    rep = doctor(lake)
    assert rep.problems == [] and rep.orphans == []  # the file written for version 2 was removed
    other.close()


def test_a_strict_delete_from_stale_reads_is_refused_and_commits_nothing(lake, tmp_path, interleave):
    rid = structure_ids(lake, tmp_path, 1)[0]
    other = matlake.open(lake.root)
    interleave(lake, lambda: other.delete("structures", [rid], reason="first"))
    before_files = table_files(lake)
    last = lake.last_snapshot()
    with pytest.raises(VersionConflict, match=rf"record {rid} .*nothing was committed"):
        lake.delete("structures", [rid], reason="second")
    assert lake.last_snapshot() == last + 1  # only the other delete landed
    assert versions_of(lake, "structures", rid) == [(1, False), (2, True)]
    assert table_files(lake) - before_files == {f["path"] for f in lake.files_at(last + 1, "structures")} - before_files
    assert doctor(lake).problems == [] and doctor(lake).orphans == []
    other.close()


def test_records_declared_new_but_created_concurrently_become_version_two(lake, tmp_path, interleave):
    rid = structure_ids(lake, tmp_path, 1)[0]
    other = matlake.open(lake.root)

    def brand_new(cs: ChangeSet) -> ChangeSet:
        part = cs.rows[0]
        part.data = part.data.set_column(0, "record_id", pa.array(["brand-new-record"]))
        return cs

    # Both writers think the record is theirs to create (version=1, no look-up), as two
    # parser versions reading the same new bytes at once would.
    mine, theirs = brand_new(correction(lake, rid, version=1)), brand_new(correction(lake, rid, version=1))
    fired = interleave(lake, lambda: other.commit(theirs))
    lake.commit(mine)
    assert fired
    assert versions_of(lake, "structures", "brand-new-record") == [(1, False), (2, False)]
    assert doctor(lake).problems == []
    other.close()


def test_doctor_reports_a_repeated_record_version(sqlite_lake, tmp_path):
    lake = sqlite_lake
    rid = structure_ids(lake, tmp_path, 1)[0]
    # The pre-fix failure mode, forced: version=1 skips the look-up, so a caller that wrongly
    # declares an existing record new writes a second version 1 (no concurrent commit to catch it).
    lake.commit(correction(lake, rid, version=1))
    problems = doctor(lake).problems
    assert any("(record_id, version) pairs appear more than once" in p and rid in p for p in problems), problems


# --------------------------------------------------------------------------- real processes


def run_workers(*argsets: list[str]) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, str(WORKERS), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in argsets]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def assert_versions_unique_and_contiguous(lake: Lake, table: str) -> dict[str, list[int]]:
    rows = lake.sql(f"select record_id, list(version order by version) from {table}_all group by 1").fetchall()
    for rid, versions in rows:
        assert versions == list(range(1, len(versions) + 1)), (table, rid, versions)
    return dict(rows)


@pytest.mark.slow
def test_two_processes_deleting_the_same_records_leave_one_tombstone_each(lake, tmp_path):
    ids = structure_ids(lake, tmp_path, 30)
    idsfile = tmp_path / "ids.txt"
    idsfile.write_text("\n".join(ids))
    a, b = run_workers(["delete", str(lake.root), "structures", str(idsfile)],
                       ["delete", str(lake.root), "structures", str(idsfile)])
    assert a["deleted"] + b["deleted"] == 30
    assert a["conflicts"] + a["gone"] + b["conflicts"] + b["gone"] == 30
    history = assert_versions_unique_and_contiguous(lake, "structures")
    assert set(history) == set(ids) and all(v == [1, 2] for v in history.values())
    assert lake.sql("select count(*) from structures").fetchone()[0] == 0
    rep = doctor(lake)
    assert rep.problems == []


@pytest.mark.slow
def test_two_processes_predicting_with_one_model_number_versions_without_gaps(lake, tmp_path):
    from matlake.models.dft.composition import CompositionRegressor

    lake.ingest([sample("dft", "MP_stable_entries_Mg_Ga_N.json")], progress=False)  # training energies
    structure_ids(lake, tmp_path, 5)  # the structures it predicts for
    info = lake.train(CompositionRegressor(n_estimators=5))
    outs = run_workers(["predict", str(lake.root), info.model_id, "4"],
                       ["predict", str(lake.root), info.model_id, "4"])
    n = outs[0]["predictions"] // 4
    assert n > 0 and outs[1]["predictions"] == 4 * n
    history = assert_versions_unique_and_contiguous(lake, "predictions")
    assert len(history) == n and all(len(v) == 8 for v in history.values())
    assert doctor(lake).problems == []


@pytest.mark.slow
def test_two_processes_reanalysing_spectra_with_force_number_versions_without_gaps(lake, tmp_path):
    from workers import write_eis_files

    lake.ingest(write_eis_files(tmp_path / "eis", 0, 2), progress=False)
    outs = run_workers(["analyze", str(lake.root), "3"], ["analyze", str(lake.root), "3"])
    assert outs[0]["subjects"] == outs[1]["subjects"] == 6
    for table in ("eis_validity", "eis_features"):
        history = assert_versions_unique_and_contiguous(lake, table)
        assert len(history) == 2 and all(len(v) == 6 for v in history.values()), (table, history)
    assert doctor(lake).problems == []
