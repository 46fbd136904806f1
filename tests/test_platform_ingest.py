"""Ingest through the platform: real files from samples/, dedup, versions,
bad input kept and reported, values equal to pymatgen's own parse."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
from conftest import sample

from matlake.platform import ingestion


@pytest.fixture(scope="module")
def dft_dir():
    return sample("dft")


def _copy(src, dst_dir, name=None):
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


def test_every_dft_file_ingests_and_values_equal_pymatgen(lake, dft_dir):
    from pymatgen.io.vasp import Chgcar, Locpot, Vasprun

    report = lake.ingest([dft_dir], progress=False)
    assert report.failed == 0, [o.message for o in report.outcomes if o.status == "failed"]
    assert report.new == len(list(dft_dir.iterdir()))
    for name in ("Si_static_vasprun.xml.gz", "YPO4_static_vasprun.xml.gz", "GaN_vN_bulk_vasprun.xml.gz"):
        vr = Vasprun(str(dft_dir / name), parse_dos=False, parse_potcar_file=False)
        gap, cbm, vbm, _direct = vr.eigenvalue_band_properties
        row = lake.sql("select energy, energy_per_atom, band_gap, cbm, vbm, efermi, structure_id from calculations "
                       "where source_name = ?", params=[name]).fetchone()
        assert row[0] == pytest.approx(vr.final_energy, abs=1e-9)
        assert row[1] == pytest.approx(vr.final_energy / len(vr.final_structure), abs=1e-9)
        assert row[2] == pytest.approx(gap, abs=1e-9)
        assert (row[3], row[4]) == pytest.approx((cbm, vbm), abs=1e-9)
        # pymatgen reads the Fermi level with the DOS; the lake stores it from a lighter parse
        efermi = Vasprun(str(dft_dir / name), parse_potcar_file=False).efermi
        assert row[5] == pytest.approx(efermi, abs=1e-9)
        s = lake.structure(row[6])
        assert np.allclose(s.lattice.matrix, vr.final_structure.lattice.matrix, atol=1e-12)
        assert s.composition == vr.final_structure.composition
    for name, cls, shape in (("Si_static_CHGCAR.gz", Chgcar, (60, 60, 60)), ("Si_static_LOCPOT.gz", Locpot, (60, 60, 60))):
        ref = cls.from_file(str(dft_dir / name))
        rid = lake.sql("select record_id from volumetric where source_name = ?", params=[name]).fetchone()[0]
        grid = lake.volumetric(rid)
        assert grid.data.shape == shape
        assert np.array_equal(grid.data, ref.data["total"])  # exact, bit for bit
        assert grid.data.sum() == ref.data["total"].sum()
        assert np.allclose(grid.structure.lattice.matrix, ref.structure.lattice.matrix)
    si = lake.sql("select integral from volumetric where source_name = 'Si_static_CHGCAR.gz'").fetchone()[0]
    assert si == pytest.approx(8.0, abs=0.05)  # 2 Si atoms x 4 valence electrons


def test_reingest_adds_no_rows_files_or_objects(lake, dft_dir):
    lake.ingest([dft_dir], progress=False)
    before = (lake.last_snapshot(), sorted(p for p in (lake.root / "tables").rglob("*.parquet")),
              sorted(lake.objects.iter_files()))
    report = lake.ingest([dft_dir], progress=False)
    n_files = len([p for p in dft_dir.iterdir() if p.is_file()])
    assert (report.new, report.failed, report.unchanged) == (0, 0, n_files)  # every file, each one unchanged
    assert [o.status for o in report.outcomes] == ["unchanged"] * n_files
    after = (lake.last_snapshot(), sorted(p for p in (lake.root / "tables").rglob("*.parquet")),
             sorted(lake.objects.iter_files()))
    assert after == before


def test_same_bytes_under_two_names_are_one_source(sqlite_lake, tmp_path, dft_dir):
    src = dft_dir / "MAPbI3_mp-977013_symmetrized.cif"
    _copy(src, tmp_path / "in", "a.cif")
    _copy(src, tmp_path / "in", "b.cif")
    report = sqlite_lake.ingest([tmp_path / "in"], progress=False)
    assert (report.new, report.unchanged) == (1, 1)
    assert sqlite_lake.sql("select count(*) from structures").fetchone() == (1,)


def test_bad_input_is_kept_reported_and_the_batch_goes_on(lake, tmp_path, dft_dir):
    folder = tmp_path / "batch"
    _copy(dft_dir / "MAPbI3_mp-977013_symmetrized.cif", folder)
    raw = gzip.decompress((dft_dir / "Si_static_vasprun.xml.gz").read_bytes())
    (folder / "truncated_vasprun.xml").write_bytes(raw[: len(raw) * 6 // 10])
    (folder / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    report = lake.ingest([folder], progress=False)
    assert (report.new, report.failed) == (1, 3)
    failed = lake.sql("select source_path, sha256, parser, message from ledger where status = 'failed' "
                      "order by source_path").fetchall()
    assert len(failed) == 3
    for path, sha, parser, message in failed:
        assert path in message  # names the file
        assert "expected" in message and "found" in message
        assert lake.objects.exists(sha)  # the raw bytes are kept
    by_name = {p.rsplit("/", 1)[-1]: (parser, m) for p, _s, parser, m in failed}
    assert by_name["truncated_vasprun.xml"][0] == "vasprun"
    assert "gzip" in by_name["broken.gz"][1]
    assert lake.sql("select count(*) from structures").fetchone() == (1,)
    # failures are remembered: the same bytes are not retried with the same parser version
    again = lake.ingest([folder], progress=False)
    assert (again.new, again.failed, again.unchanged) == (0, 0, 4)


def test_newer_parser_version_adds_version_2_and_tag_keeps_version_1(lake, tmp_path, dft_dir, monkeypatch):
    import dataclasses

    import matlake.ingest as registry

    cif = _copy(dft_dir / "MAPbI3_mp-977013_symmetrized.cif", tmp_path / "in")
    lake.ingest([cif], progress=False)
    lake.tag("before-reparse")
    v1 = lake.sql("select record_id, version, formula from structures").fetchall()
    parsers = registry.all_parsers()
    bumped = tuple(dataclasses.replace(p, version=p.version + ".post1") if p.name == "structure" else p for p in parsers)
    monkeypatch.setattr(registry, "all_parsers", lambda: bumped)
    report = lake.ingest([cif], progress=False)
    assert report.new == 1
    v2 = lake.sql("select record_id, version, formula from structures").fetchall()
    assert [r[0] for r in v2] == [r[0] for r in v1] and {r[1] for r in v2} == {2}
    assert lake.sql("select record_id, version, formula from structures", as_of="before-reparse").fetchall() == v1
    assert lake.sql("select count(*) from structures_all").fetchone() == (2,)


def test_forced_kind_that_does_not_match_fails_clearly(sqlite_lake, dft_dir):
    report = sqlite_lake.ingest([dft_dir / "MAPbI3_mp-977013_symmetrized.cif"], kind="vasp", progress=False)
    assert report.failed == 1
    assert "expected a vasp file" in report.outcomes[0].message
    params = json.loads(sqlite_lake.sql("select parameters_json from activities").fetchone()[0])
    assert (params["kind"], params["options"]) == ("vasp", {})  # kept, so `matlake retry` reads it the same way


def test_parallel_workers_give_the_same_records(tmp_path, dft_dir):
    import matlake

    serial = matlake.init(tmp_path / "serial")
    parallel = matlake.init(tmp_path / "parallel")
    serial.ingest([dft_dir], progress=False)
    parallel.ingest([dft_dir], workers=2, progress=False)
    q = "select record_id, energy from calculations order by record_id"
    assert serial.sql(q).fetchall() == parallel.sql(q).fetchall()
    q = "select record_id, array_sha256 from volumetric order by record_id"
    assert serial.sql(q).fetchall() == parallel.sql(q).fetchall()


def _watch_pools(monkeypatch):
    """Record every parse pool started (its size and ledger index) and every task submitted to one."""
    import pickle

    seen = {"pools": [], "tasks": []}
    real_pool, real_submit = ingestion.worker_pool, ingestion._WorkerPool.submit

    def pool(workers, known=None):
        seen["pools"].append((workers, known))
        return real_pool(workers, known)

    def submit(self, fn, /, *args, **kwargs):
        seen["tasks"].append(pickle.dumps((fn, args, kwargs)))
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(ingestion, "worker_pool", pool)
    monkeypatch.setattr(ingestion._WorkerPool, "submit", submit)
    return seen


def test_parallel_reingest_sends_the_ledger_once_per_worker_not_with_every_file(sqlite_lake, tmp_path, monkeypatch):
    from sqlalchemy import func, select

    from matlake.platform import catalog as cat
    from workers import write_eis_files

    files = write_eis_files(tmp_path / "src", 0, 12)
    first = sqlite_lake.ingest(files, workers=1, progress=False)
    assert (first.new, first.failed, first.errors) == (12, 0, 0)

    def ledger_rows():
        with sqlite_lake.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(cat.LedgerEntry)).scalar_one()

    rows_before = ledger_rows()
    seen = _watch_pools(monkeypatch)
    # A no-op is decided in the parent (no pool); 12 new files of the same sizes are parsed by the pool.
    more = write_eis_files(tmp_path / "src", 12, 12)
    again = sqlite_lake.ingest(files + more, workers=2, progress=False)
    assert (again.new, again.unchanged, again.failed, again.errors) == (12, 12, 0, 0)
    assert all(o.status == "unchanged" and o.prior == "ok" for o in again.outcomes[:12])
    assert ledger_rows() == rows_before + 12
    # One pool of 1 worker (2 workers: this process parses too), started with the whole ledger index ...
    [(size, known)] = seen["pools"]
    assert size == 1 and len(known) == rows_before
    shas = {sha for (sha, _parser, _version, _attempt) in known}
    assert shas == {o.sha256 for o in first.outcomes}
    # ... and tasks (its start-up probe, and files if they were worth it), none carrying a key of the ledger.
    assert 1 <= len(seen["tasks"]) <= 12
    for task in seen["tasks"]:
        assert not any(sha.encode() in task for sha in shas)


def test_parse_pool_is_sized_to_the_files_and_not_started_for_one(sqlite_lake, tmp_path, monkeypatch):
    from workers import write_eis_files

    files = write_eis_files(tmp_path / "src", 0, 3)
    seen = _watch_pools(monkeypatch)
    one = sqlite_lake.ingest(files[:1], workers=8, progress=False)
    assert one.new == 1 and seen["pools"] == []
    rest = sqlite_lake.ingest(files, workers=8, progress=False)
    assert (rest.new, rest.unchanged) == (2, 1)
    # the unchanged one is decided here; two tasks are left: this process and a pool of at most 1 worker
    assert [size for size, _known in seen["pools"]] == [1]
    assert {o.path for o in rest.outcomes} == {str(p.resolve()) for p in files}


def test_process_source_without_a_ledger_index_outside_a_worker_is_refused(tmp_path):
    from workers import write_eis_files

    [path] = write_eis_files(tmp_path / "src", 0, 1)
    with pytest.raises(RuntimeError, match="needs the ledger index"):
        ingestion.process_source(ingestion.SourceItem(str(path)), str(tmp_path / "objects"))


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_parse_workers_survive_the_stop_signals_that_systemd_and_ctrl_c_send_to_the_whole_group(signame):
    import os
    import signal

    pool = ingestion.worker_pool(1)
    try:
        pid = pool.submit(os.getpid).result(timeout=120)
        os.kill(pid, getattr(signal, signame))  # what KillMode=control-group or a terminal's Ctrl-C does
        # a worker that died would break the pool (BrokenProcessPool) and fail the run it was parsing for
        assert pool.submit(os.getpid).result(timeout=120) == pid
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_expand_paths_is_recursive_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.cif").write_text("x")
    (tmp_path / "a" / ".hidden").write_text("x")
    (tmp_path / "a" / "y.cif").write_text("x")
    got = [p.relative_to(tmp_path).as_posix() for p in ingestion.expand_paths([tmp_path / "a"])]
    assert got == ["a/b/x.cif", "a/y.cif"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        ingestion.expand_paths([tmp_path / "missing"])


def test_sources_are_recorded_under_the_path_resolve_gives(tmp_path, monkeypatch):
    """The recorded path (one realpath per folder) is ``Path.resolve()``'s, and a broken link's own."""
    import os
    from pathlib import Path

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.csv", "b.csv", "sub/c.csv"):
        (src / name).write_text("x")
    (tmp_path / "linked").symlink_to(src)  # a folder reached through a link
    (src / "ln.csv").symlink_to(src / "a.csv")  # a file that is a link
    (src / "broken.csv").symlink_to(tmp_path / "gone.csv")
    os.mkfifo(src / "pipe.csv")
    monkeypatch.chdir(tmp_path)
    for given in ([src], [Path("linked")], [Path("src/../linked/sub")],
                  [Path("linked/a.csv"), Path("src/ln.csv"), Path("./src/broken.csv"), src / "pipe.csv"]):
        files = ingestion.expand_paths(given)
        real_dirs: dict[str, str] = {}
        got = [ingestion._source_path(p, real_dirs) for p in files]
        assert got == [str(p.resolve() if p.exists() else p.absolute()) for p in files]
    assert ingestion._source_path(Path("src/broken.csv"), {}) == str(tmp_path / "src" / "broken.csv")
    assert ingestion._source_path(Path("linked/b.csv"), {}) == str(src.resolve() / "b.csv")


def test_ledger_records_parser_and_record_ids(sqlite_lake, dft_dir):
    sqlite_lake.ingest([dft_dir / "Si_static_vasprun.xml.gz"], progress=False)
    row = sqlite_lake.sql("select parser, parser_version, status, record_ids_json, n_records from ledger").fetchone()
    assert row[0] == "vasprun" and row[2] == "ok"
    ids = json.loads(row[3])
    assert len(ids) == row[4] == 2  # the calculation and its final structure
    got = {r[0] for r in sqlite_lake.sql("select record_id from calculations union all select record_id from structures").fetchall()}
    assert got == set(ids)


def test_uncompressed_files_parse_from_their_own_path_with_equal_values(sqlite_lake, tmp_path, dft_dir):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("Si_static_vasprun.xml.gz", "Si_static_CHGCAR.gz"):
        (plain / name[:-3]).write_bytes(gzip.decompress((dft_dir / name).read_bytes()))
    report = sqlite_lake.ingest([plain, dft_dir / "Si_static_vasprun.xml.gz", dft_dir / "Si_static_CHGCAR.gz"],
                                progress=False)
    assert (report.new, report.failed) == (4, 0)
    rows = sqlite_lake.sql("select energy, band_gap, efermi from calculations order by source_name").fetchall()
    assert rows[0] == rows[1]
    grids = sqlite_lake.sql("select array_sha256, integral from volumetric").fetchall()
    assert grids[0] == grids[1]  # the same grid bytes, whichever way the file came


def test_content_head_reads_only_the_start_of_a_gzip_stream(dft_dir):
    raw = (dft_dir / "Si_static_CHGCAR.gz").read_bytes()
    assert ingestion.content_head(raw, 100) == gzip.decompress(raw)[:100]
    with pytest.raises(ingestion.ParseError, match="gzip stream"):
        ingestion.content_head(b"\x1f\x8b\x08\x00garbage", 100)
