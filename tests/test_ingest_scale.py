"""Issue #8 items 4 and 6: the path cache, parent-side triage, streaming into the store, fsyncs, CIF parsed once."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from matlake.platform import catalog as cat
from matlake.platform import ingestion
from tests.conftest import sample
from tests.workers import write_eis_files


def _stamps(lake) -> dict[str, str]:
    with lake.engine.connect() as conn:
        return dict(conn.execute(select(cat.PathStamp.path, cat.PathStamp.sha256)).all())


def _age(paths, seconds: float = 60.0) -> None:
    """Back-date mtimes (ctime stays now: the tests that need it settled set RACY_NS to 0)."""
    t = time.time() - seconds
    for p in paths:
        os.utime(p, (t, t))


def _no_parsing(monkeypatch) -> list[str]:
    called: list[str] = []

    def refuse(item, *a, **k):
        called.append(item.path)
        raise AssertionError(f"{item.path} was read and parsed again")

    monkeypatch.setattr(ingestion, "process_source", refuse)
    monkeypatch.setattr(ingestion, "_process_got", refuse)  # bytes the parent read, parsed in the parent
    return called


def _forget_paths(lake) -> None:
    """Empty the path cache: a lake from before it, or every file copied or touched since."""
    with lake.engine.begin() as conn:
        conn.execute(cat.PathStamp.__table__.delete())


def _no_pool(monkeypatch) -> None:
    def no_pool(*a, **k):
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(ingestion, "worker_pool", no_pool)


def _same_size_other_bytes(text: str) -> str:
    changed = text.replace("1", "2", 1) if "1" in text else text.replace("0", "9", 1)
    assert changed != text and len(changed) == len(text)
    return changed


def test_unchanged_files_are_decided_from_the_cache_without_parsing_or_a_pool(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 6)
    first = lake.ingest(files, progress=False)
    assert (first.new, first.failed, first.errors) == (6, 0, 0)
    cached = _stamps(lake)
    assert set(cached) == {str(p.resolve()) for p in files}
    assert all(cached[str(p.resolve())] == o.sha256 for p in files for o in first.outcomes if o.path == str(p.resolve()))

    _no_parsing(monkeypatch)

    def no_reading(*a, **k):
        raise AssertionError("a cached file was opened: its detection is cached too")

    monkeypatch.setattr(ingestion, "_file_content_head", no_reading)

    def no_pool(*a, **k):
        raise AssertionError("a worker pool was started for a no-op")

    monkeypatch.setattr(ingestion, "worker_pool", no_pool)
    again = lake.ingest(files, workers=2, progress=False)
    assert (again.new, again.unchanged, again.failed) == (0, 6, 0)
    assert {o.prior for o in again.outcomes} == {"ok"}
    assert [o.sha256 for o in again.outcomes] == [o.sha256 for o in first.outcomes]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_noop_with_an_empty_path_cache_is_decided_in_the_parent(lake, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 6)
    first = lake.ingest(files, progress=False)
    assert first.new == 6
    _forget_paths(lake)
    called = _no_parsing(monkeypatch)
    _no_pool(monkeypatch)
    hashed: list[str] = []
    real_hash = ingestion._hash_file

    def hash_file(path):
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(ingestion, "_hash_file", hash_file)
    again = lake.ingest(files, workers=workers, progress=False)
    assert (again.new, again.unchanged, again.failed, again.errors, called) == (0, 6, 0, 0, [])
    assert {o.prior for o in again.outcomes} == {"ok"}
    assert [o.sha256 for o in again.outcomes] == [o.sha256 for o in first.outcomes]
    assert sorted(hashed) == sorted(str(p.resolve()) for p in files)  # each read once, here
    # The path cache is written again, so the next run reads nothing.
    assert _stamps(lake) == {o.path: o.sha256 for o in first.outcomes}
    hashed.clear()

    def no_reading(*a, **k):
        raise AssertionError("a cached file was opened")

    monkeypatch.setattr(ingestion, "_file_content_head", no_reading)
    third = lake.ingest(files, workers=workers, progress=False)
    assert (third.unchanged, hashed) == (6, [])


@pytest.mark.parametrize("workers", [1, 2])
def test_same_size_other_bytes_without_a_cache_entry_are_parsed_again(lake, tmp_path, monkeypatch, workers):
    import hashlib

    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 3)
    lake.ingest(files, progress=False)
    _forget_paths(lake)
    target = files[0]
    changed = _same_size_other_bytes(target.read_text())
    target.write_text(changed)
    reads: list[str] = []
    real_read = ingestion._read_source

    def read_source(item, *a, **k):
        reads.append(item.path)
        return real_read(item, *a, **k)

    monkeypatch.setattr(ingestion, "_read_source", read_source)
    _no_pool(monkeypatch)  # one file to parse: no pool for it
    r = lake.ingest(files, workers=workers, progress=False)
    assert (r.new, r.unchanged, r.failed, r.errors) == (1, 2, 0, 0)
    by_path = {o.path: o for o in r.outcomes}
    got = by_path[str(target.resolve())]
    assert (got.status, got.sha256) == ("ok", hashlib.sha256(changed.encode()).hexdigest())
    assert lake.sql(f"select status from ledger where sha256 = '{got.sha256}'").fetchall() == [("ok",)]
    # One worker parses the bytes the parent hashed; with more, the process that parses reads them itself.
    assert reads == ([] if workers == 1 else [str(target.resolve())])


def test_a_file_changed_between_stat_and_read_is_decided_by_its_new_bytes(lake, tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 4)
    lake.ingest(files, progress=False)
    _forget_paths(lake)
    # files[0] becomes a copy of files[3] (bytes the ledger has), files[1] new bytes of the same size,
    # each after the parent's stat and before its read.
    new_text = {files[0]: files[3].read_text(), files[1]: _same_size_other_bytes(files[1].read_text())}
    pending = {str(p.resolve()): text for p, text in new_text.items()}
    real_hash = ingestion._hash_file

    def change_then_hash(path):
        if path in pending:
            Path(path).write_text(pending.pop(path))
        return real_hash(path)

    monkeypatch.setattr(ingestion, "_hash_file", change_then_hash)
    r = lake.ingest(files, progress=False)
    assert pending == {}  # both were changed under the parent
    assert (r.new, r.unchanged, r.failed, r.errors) == (1, 3, 0, 0)
    by_path = {o.path: o for o in r.outcomes}
    for p, text in new_text.items():
        o = by_path[str(p.resolve())]
        assert o.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert by_path[str(files[0].resolve())].status == "unchanged"
    assert by_path[str(files[1].resolve())].status == "ok"
    # The cache holds, for each path, the bytes there now under the stamp they have now (or nothing).
    ps = cat.PathStamp
    with lake.engine.connect() as conn:
        rows = conn.execute(select(ps.path, ps.sha256, ps.device, ps.inode, ps.size, ps.mtime_ns,
                                   ps.ctime_ns)).all()
    for path, sha, *stamp in rows:
        assert sha == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert ingestion.FileStamp(*stamp) == ingestion.FileStamp.of(os.stat(path))


def test_new_files_of_a_size_the_ledger_lacks_are_read_once_by_the_parser(sqlite_lake, tmp_path, monkeypatch):
    from tests.workers import eis_csv

    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    sqlite_lake.ingest(write_eis_files(tmp_path / "old", 0, 2), progress=False)
    new = []
    for seed in (10, 11):
        p = tmp_path / "new" / f"long_{seed}.csv"
        p.parent.mkdir(exist_ok=True)
        p.write_text(eis_csv(seed, n_points=31))  # another length: a size no ledger row has
        new.append(p)
    hashed: list[str] = []
    real_hash = ingestion._hash_file

    def hash_file(path):
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(ingestion, "_hash_file", hash_file)
    r = sqlite_lake.ingest(new, progress=False)
    assert (r.new, hashed) == (2, [])  # not read to be decided: read once, where they were parsed


def test_unreadable_paths_of_a_noop_are_decided_in_the_parent(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    folder = tmp_path / "src"
    files = write_eis_files(folder, 0, 3)
    os.mkfifo(folder / "pipe.csv")
    (folder / "gone.csv").symlink_to(tmp_path / "moved-away.csv")
    first = lake.ingest([folder], progress=False)
    assert (first.new, first.failed) == (3, 2)
    _forget_paths(lake)
    _no_parsing(monkeypatch)
    _no_pool(monkeypatch)
    again = lake.ingest([folder], workers=2, progress=False)
    assert (again.new, again.unchanged, again.failed, again.still_failed) == (0, 3, 2, 2)
    assert sorted(o.message for o in again.outcomes if o.status == "failed") == sorted(
        o.message for o in first.outcomes if o.status == "failed")
    assert lake.sql("select count(*) from ledger").fetchone() == (5,)  # nothing recorded twice
    assert {o.path for o in again.outcomes if o.status == "unchanged"} == {str(p.resolve()) for p in files}


def test_a_cached_path_tried_with_another_kind_is_detected_again_from_its_head(sqlite_lake, tmp_path, monkeypatch):
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 2)
    sqlite_lake.ingest(files, progress=False)
    heads: list[str] = []
    real_head = ingestion._file_content_head

    def head(fh, n):
        heads.append(fh.name)
        return real_head(fh, n)

    monkeypatch.setattr(ingestion, "_file_content_head", head)
    called = _no_parsing(monkeypatch)
    r = sqlite_lake.ingest(files, kind="eis", progress=False)  # the same parser: a success is unchanged
    assert (r.unchanged, called) == (2, [])
    assert sorted(heads) == sorted(str(p.resolve()) for p in files)
    heads.clear()
    again = sqlite_lake.ingest(files, kind="eis", progress=False)  # the detection with kind=eis is cached now
    assert (again.unchanged, heads) == (2, [])


def test_a_changed_file_with_the_same_size_and_mtime_is_hashed_again(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 3)
    lake.ingest(files, progress=False)
    target = files[0]
    before = os.stat(target)
    text = target.read_text()
    # Same length, other bytes, mtime put back exactly: only ctime tells.
    changed = text.replace("1", "2", 1) if "1" in text else text.replace("0", "9", 1)
    assert changed != text and len(changed) == len(text)
    target.write_text(changed)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    # Another file moved over the path: same size and mtime, new inode.
    other = files[1].with_name("other.csv")
    other.write_text(files[2].read_text().replace("0", "8", 1))
    os.utime(other, ns=(os.stat(files[1]).st_atime_ns, os.stat(files[1]).st_mtime_ns))
    if os.stat(other).st_size != os.stat(files[1]).st_size:
        pytest.skip("the generated files differ in size")  # pragma: no cover - write_eis_files is fixed-width
    os.replace(other, files[1])
    r = lake.ingest(files, progress=False)
    assert (r.new, r.unchanged) == (2, 1)
    by_path = {o.path: o for o in r.outcomes}
    assert by_path[str(files[0].resolve())].status == "ok"
    assert by_path[str(files[1].resolve())].status == "ok"
    assert _stamps(lake)[str(files[0].resolve())] == by_path[str(files[0].resolve())].sha256


def test_a_file_changed_within_the_racy_window_is_not_cached(sqlite_lake, tmp_path):
    files = write_eis_files(tmp_path / "src", 0, 2)  # written just now: ctime is this second
    r = sqlite_lake.ingest(files, progress=False)
    assert r.new == 2
    assert _stamps(sqlite_lake) == {}  # hashed again next time, when they have settled


def test_the_pool_is_sized_to_the_files_that_need_parsing(sqlite_lake, tmp_path, monkeypatch):
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    old = write_eis_files(tmp_path / "src", 0, 4)
    sqlite_lake.ingest(old, progress=False)
    new = write_eis_files(tmp_path / "src", 4, 2)
    sizes: list[int] = []
    real = ingestion.worker_pool

    def counting(workers, known=None):
        sizes.append(workers)
        return real(workers, known)

    monkeypatch.setattr(ingestion, "worker_pool", counting)
    r = sqlite_lake.ingest(old + new, workers=4, progress=False)
    assert (r.new, r.unchanged) == (2, 4)
    assert sizes == [2]
    assert [o.path for o in r.outcomes] == [str(p.resolve()) for p in old + new]  # order kept


def test_a_cached_path_whose_parser_changed_is_parsed_again(sqlite_lake, tmp_path, monkeypatch):
    """The ledger key names the parser version: a newer parser re-parses a cached, unchanged file."""
    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    files = write_eis_files(tmp_path / "src", 0, 2)
    sqlite_lake.ingest(files, progress=False)
    import dataclasses

    import matlake.ingest as registry

    bumped = tuple(dataclasses.replace(p, version=p.version + ".1") for p in registry.all_parsers())
    monkeypatch.setattr(registry, "all_parsers", lambda: bumped)  # a new release of every parser
    r = sqlite_lake.ingest(files, progress=False)
    assert (r.new, r.unchanged) == (2, 0)
    assert {o.parser_version.endswith(".1") for o in r.outcomes} == {True}


def _plain_chgcar(dest: Path) -> Path:
    out = dest / "Si_CHGCAR"
    out.write_bytes(gzip.decompress(sample("dft", "Si_static_CHGCAR.gz").read_bytes()))
    return out


@pytest.mark.parametrize("compressed", [False, True])
def test_large_sources_are_streamed_into_the_store_and_parsed_exactly(sqlite_lake, tmp_path, monkeypatch, compressed):
    from pymatgen.io.vasp import Chgcar

    from matlake.platform.objects import SPOOL_DIR, sha256_file

    monkeypatch.setattr(ingestion, "STREAM_BYTES", 1024)  # every source here is "large"
    src = _plain_chgcar(tmp_path)
    ref = Chgcar.from_file(str(src))
    if compressed:
        gz = tmp_path / "Si_CHGCAR.gz"
        gz.write_bytes(sample("dft", "Si_static_CHGCAR.gz").read_bytes())
        src = gz
    held: list[int] = []
    real_read = ingestion._read_source

    def watch(*a, **k):
        got = real_read(*a, **k)
        held.append(-1 if got.raw is None else len(got.raw))
        return got

    monkeypatch.setattr(ingestion, "_read_source", watch)
    r = sqlite_lake.ingest([src], progress=False)
    assert (r.new, r.failed, r.errors) == (1, 0, 0), r.summary()
    assert held == [-1]  # never read into memory whole
    o = r.outcomes[0]
    assert sha256_file(sqlite_lake.objects.path(o.sha256)) == o.sha256 == sha256_file(src)
    assert not list((sqlite_lake.objects.root / SPOOL_DIR).iterdir())
    grid = sqlite_lake.sql("select array_sha256 from volumetric").fetchone()[0]
    from matlake.ingest.base import decode_array

    assert np.array_equal(decode_array(sqlite_lake.objects.get(grid)), ref.data["total"])
    # The same bytes under another name: hashed again (no cache yet), unchanged, the spool removed.
    twin = tmp_path / ("twin.gz" if compressed else "twin_CHGCAR")
    shutil.copyfile(src, twin)
    again = sqlite_lake.ingest([twin], progress=False)
    assert (again.new, again.unchanged) == (0, 1)
    assert not list((sqlite_lake.objects.root / SPOOL_DIR).iterdir())


def test_one_fsync_per_object_and_one_per_object_folder_per_batch(sqlite_lake, tmp_path, monkeypatch):
    from matlake.platform import objects

    files = write_eis_files(tmp_path / "src", 0, 12)
    root = sqlite_lake.objects.root
    events: list[tuple[str, object]] = []  # ("file", None) | ("dir", path) | ("commit", batch folders) | ("end", None)
    real_fsync_path, real_fsync = objects.fsync_path, os.fsync
    in_dir_sync = {"n": 0}

    def dir_sync(path):
        events.append(("dir", Path(path)))
        in_dir_sync["n"] += 1
        try:
            real_fsync_path(path)
        finally:
            in_dir_sync["n"] -= 1

    def file_sync(fd):
        if not in_dir_sync["n"]:
            events.append(("file", None))
        real_fsync(fd)

    monkeypatch.setattr(objects, "fsync_path", dir_sync)
    monkeypatch.setattr(os, "fsync", file_sync)
    real_commit = ingestion._commit_batch

    def commit(lake, batch, *a, **k):
        folders = {lake.objects.path(s).parent for o in batch for s in [o.sha256] + [x for x, _ in o.objects]}
        events.append(("commit", folders))
        try:
            return real_commit(lake, batch, *a, **k)
        finally:
            events.append(("end", None))

    monkeypatch.setattr(ingestion, "_commit_batch", commit)
    r = sqlite_lake.ingest(files, batch_size=5, progress=False)
    assert r.new == 12
    objects_written = sum(1 for _ in sqlite_lake.objects.iter_files())
    outside_files = inside = 0
    window: list[Path] | None = None
    for kind, what in events:
        if kind == "commit":
            window, expected = [], what
        elif kind == "end":
            store_dirs = [p for p in window if p.parent == root]
            assert len(store_dirs) == len(set(store_dirs))  # each folder once per batch
            assert set(store_dirs) == expected  # and every folder the batch wrote into
            inside += 1
            window = None
        elif kind == "dir":
            if window is None:
                assert what.parent != root, f"object folder {what} fsynced outside a batch commit"
            else:
                window.append(what)
        elif window is None:
            outside_files += 1
    assert inside == 3
    assert outside_files == objects_written  # one fsync per object, written by process_source


def test_a_cif_text_is_parsed_once(sqlite_lake, tmp_path, monkeypatch):
    from pymatgen.io import cif

    calls = {"n": 0}
    real = cif.CifFile.from_str.__func__

    def counted(cls, text):
        calls["n"] += 1
        return real(cls, text)

    monkeypatch.setattr(cif.CifFile, "from_str", classmethod(counted))
    src = sample("dft", "MAPbI3_mp-977013_symmetrized.cif")
    r = sqlite_lake.ingest([src], progress=False)
    assert (r.new, r.errors) == (1, 0)
    assert calls["n"] == 1
    ref = cif.CifParser(str(src)).parse_structures(primitive=False)[0]
    from pymatgen.core import Structure
    import json

    got = sqlite_lake.sql("select structure_json, spacegroup_number from structures").fetchone()
    assert Structure.from_dict(json.loads(got[0])) == ref
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    assert got[1] == SpacegroupAnalyzer(ref, symprec=0.1).get_space_group_number()


def test_a_bad_cif_block_is_reported_and_the_good_ones_kept(sqlite_lake, tmp_path):
    good = sample("dft", "MAPbI3_mp-977013_symmetrized.cif").read_text()
    cell = "".join(f"_cell_length_{x} 3.0\n" for x in "abc") + "".join(f"_cell_angle_{x} 90\n" for x in
                                                                       ("alpha", "beta", "gamma"))
    bad = "data_broken\n" + cell  # a cell without atom sites: pymatgen reads the block, builds no structure
    path = tmp_path / "two.cif"
    path.write_text(good + "\n" + bad)
    r = sqlite_lake.ingest([path], progress=False)
    assert (r.new, r.failed, r.errors) == (1, 0, 0), r.summary()
    assert any(w.startswith("cif_block=1 (data_broken): ValueError") and "_atom_site_label" in w
               for w in r.outcomes[0].warnings)
    assert sqlite_lake.sql("select count(*) from structures").fetchone()[0] == 1


def test_jobs_dry_run_uses_the_path_cache(sqlite_lake, tmp_path, monkeypatch):
    from matlake.platform import jobs as J

    monkeypatch.setattr(ingestion, "RACY_NS", 0)
    raw = tmp_path / "raw"
    files = write_eis_files(raw, 0, 3)
    _age(files)
    sqlite_lake.ingest(files, progress=False)
    job = J.Job(name="scan", sources=(str(raw / "*.csv"),), base_dir=tmp_path, settle_seconds=0)
    read: list[str] = []
    real = Path.read_bytes

    def spy(self):
        read.append(str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    planned = J.plan(sqlite_lake, job)
    assert [p.status for p in planned] == ["unchanged"] * 3
    assert not [p for p in read if p.startswith(str(raw))]
