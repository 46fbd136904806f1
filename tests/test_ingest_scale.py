"""Issue #8 items 4 and 6: the path cache, parent-side triage, streaming into the store, the durability
barrier (one per batch), CIF parsed once."""

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
    monkeypatch.setattr(ingestion, "_read_and_keep", refuse)  # a file read whole to be parsed here
    monkeypatch.setattr(ingestion, "_process_got", refuse)  # bytes the parent read, parsed in the parent
    return called


def _forget_paths(lake) -> None:
    """Empty the path cache: a lake from before it, or every file copied or touched since."""
    with lake.engine.begin() as conn:
        conn.execute(cat.PathStamp.__table__.delete())


def _record_hashing(monkeypatch) -> list[str]:
    """The paths the ingest hashes from now on, in order (the real hash still runs)."""
    hashed: list[str] = []
    real_hash = ingestion._hash_file

    def hash_file(path):
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(ingestion, "_hash_file", hash_file)
    return hashed


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
    hashed = _record_hashing(monkeypatch)
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
    hashed = _record_hashing(monkeypatch)
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
    assert sizes == [1]  # two files, two tasks: this process and a pool of at most one worker
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


def _count_fsyncs(monkeypatch) -> dict[str, int]:
    """Count ``os.fsync`` calls (the barrier's threads too)."""
    real = os.fsync
    n = {"fsync": 0}

    def counted(fd):
        n["fsync"] += 1
        return real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return n


def test_one_durability_barrier_per_batch_covers_its_objects_and_parquet_files(sqlite_lake, tmp_path, monkeypatch):
    from matlake.platform import lake as lake_mod
    from matlake.platform import objects

    files = write_eis_files(tmp_path / "src", 0, 10)
    # Two sources whose parsers keep arrays as objects of their own (a chunked volume, a spectrum image).
    for name in (("imaging", "EMD-3197.map"), ("spectra", "NMC_TM+O_EELS_Spectrum_Image.dm3")):
        shutil.copyfile(sample(*name), tmp_path / "src" / name[1])
        files.append(tmp_path / "src" / name[1])
    events: list[tuple[str, object]] = []
    fsyncs = _count_fsyncs(monkeypatch)
    real_barrier = objects.make_durable

    def barrier(paths):
        paths = [Path(p) for p in paths]
        before = fsyncs["fsync"]
        done = real_barrier(paths)
        events.append(("barrier", (set(paths), fsyncs["fsync"] - before)))
        return done

    real_commit, real_txn = ingestion._commit_batch, lake_mod.Lake._commit_transaction

    def commit(lake, batch, *a, **k):
        events.append(("batch", ({lake.objects.path(s) for o in batch for s in [o.sha256] + [x for x, _ in o.objects]},
                                 fsyncs["fsync"])))
        return real_commit(lake, batch, *a, **k)

    def txn(self, cs, files, *a, **k):
        events.append(("transaction", ({self.root / f["path"] for f in files}, fsyncs["fsync"])))
        return real_txn(self, cs, files, *a, **k)

    monkeypatch.setattr(objects, "make_durable", barrier)
    monkeypatch.setattr(ingestion, "_commit_batch", commit)
    monkeypatch.setattr(lake_mod.Lake, "_commit_transaction", txn)
    fsyncs["fsync"] = 0
    r = sqlite_lake.ingest(files, batch_size=5, progress=False)
    assert (r.new, r.failed, r.errors) == (12, 0, 0), r.summary()
    kinds = [k for k, _ in events]
    assert kinds == ["batch", "barrier", "transaction"] * 3  # one barrier per batch, before its transaction
    in_barriers = 0
    for i in range(0, 9, 3):
        (wrote, fsyncs_before), (synced, n_fsyncs), (registered, fsyncs_at_txn) = (e[1] for e in events[i:i + 3])
        assert wrote and registered and wrote | registered <= synced  # every object and Parquet file of the commit
        # Each file, its folder and the folder above (a new shard or table folder) once.
        assert n_fsyncs == len(synced) + len({p.parent for p in synced} | {p.parent.parent for p in synced})
        assert fsyncs_at_txn == fsyncs_before + n_fsyncs
        in_barriers += n_fsyncs
    assert fsyncs["fsync"] == in_barriers  # no fsync outside the barriers (SQLite's own are not os.fsync)
    assert sum(len(o.objects) for o in r.outcomes) >= 2  # the arrays were objects of their own, synced above
    # After the commits every registered object and data file is there, whole.
    shas = {row[0] for row in sqlite_lake.sql("select sha256 from objects").fetchall()}
    assert shas == {o.sha256 for o in r.outcomes} | {s for o in r.outcomes for s, _ in o.objects}
    assert all(sqlite_lake.objects.verify(s) for s in shas)
    with sqlite_lake.engine.connect() as conn:
        paths = [row[0] for row in conn.execute(select(cat.DataFile.path))]
    assert paths and all((sqlite_lake.root / p).is_file() for p in paths)


def test_objects_written_unsynced_are_fsynced_by_the_barrier_only(tmp_path, monkeypatch):
    from matlake.platform import objects

    store = objects.ObjectStore(tmp_path / "objects")
    fsyncs = _count_fsyncs(monkeypatch)
    a = store.put(b"alpha", sync=False)
    with store.spool() as sp:
        sp.write(b"beta")
        sp.close()
        assert sp.keep(sync=False)
        b = sp.sha
    c, _ = store.put_written(lambda fh: fh.write(b"gamma"), sync=False)
    assert fsyncs["fsync"] == 0
    assert [store.get(s) for s in (a, b, c)] == [b"alpha", b"beta", b"gamma"]
    assert not list((tmp_path / "objects" / objects.SPOOL_DIR).iterdir())
    # Three objects in three folders (names that differ in their first two hex digits): each file
    # and folder once, and the store's root above them (the shard folders were new).
    assert len({store.path(s).parent for s in (a, b, c)}) == 3
    assert store.make_durable([a, b, c, "", a]) == 7
    assert fsyncs["fsync"] == 7
    # A missing object has nothing to make durable (the folders above it still are).
    fsyncs["fsync"] = 0
    assert objects.make_durable([store.path("0" * 64)]) == 1
    assert fsyncs["fsync"] == 1
    # The default put is durable on its own: file and folder.
    fsyncs["fsync"] = 0
    store.put(b"delta")
    assert fsyncs["fsync"] == 2
    # A large unsynced object starts its write-back at once and is handed to a background fsync
    # (a head start for the barrier; nothing fsynced by the writer itself).
    started: list[int] = []
    early: list[Path] = []
    monkeypatch.setattr(objects, "start_writeback", lambda fd: started.append(fd))
    monkeypatch.setattr(objects, "sync_early", lambda path: early.append(Path(path)))
    fsyncs["fsync"] = 0
    big = store.put(b"x" * objects.EARLY_SYNC_BYTES, sync=False)
    with store.spool() as sp:
        sp.write(b"y" * objects.EARLY_SYNC_BYTES)
        sp.keep(sync=False)
        spooled = sp.sha
    written, _ = store.put_written(lambda fh: fh.write(b"z" * objects.EARLY_SYNC_BYTES), sync=False)
    store.put(b"small", sync=False)
    store.put(b"x" * objects.EARLY_SYNC_BYTES, sync=False)  # there already: not written, not synced
    assert len(started) == 3 and fsyncs["fsync"] == 0
    assert early == [store.path(s) for s in (big, spooled, written)]
    assert store.verify(big)


def test_syncfs_barrier_and_a_bad_durability_mode(tmp_path, monkeypatch):
    from matlake.platform import objects

    store = objects.ObjectStore(tmp_path / "objects")
    sha = store.put(b"alpha", sync=False)
    monkeypatch.setenv(objects.DURABILITY_ENV, "nonsense")
    with pytest.raises(ValueError, match="MATLAKE_DURABILITY: expected one of fsync, syncfs, found 'nonsense'"):
        store.make_durable([sha])
    monkeypatch.setenv(objects.DURABILITY_ENV, "syncfs")
    fsyncs = _count_fsyncs(monkeypatch)
    assert store.make_durable([sha]) == 3  # the file, its folder, the store's root
    if objects._syncfs_call() is not None:
        assert fsyncs["fsync"] == 0  # one syncfs of the filesystem instead
    else:
        assert fsyncs["fsync"] == 3  # the portable fallback
    assert store.get(sha) == b"alpha"


def test_a_dask_worker_makes_its_objects_durable_itself(tmp_path, monkeypatch):
    src = tmp_path / "c.cif"
    shutil.copyfile(sample("dft", "MAPbI3_mp-977013_symmetrized.cif"), src)
    fsyncs = _count_fsyncs(monkeypatch)
    out = ingestion.process_source(ingestion.SourceItem(str(src)), str(tmp_path / "objects"), {})
    assert out.status == "ok" and fsyncs["fsync"] == 0  # a local worker leaves it to the commit's barrier
    src.write_text(src.read_text() + "# another copy\n")
    out = ingestion.process_source_durable(ingestion.SourceItem(str(src)), str(tmp_path / "objects"), {})
    assert out.status == "ok" and fsyncs["fsync"] == 3  # the raw object and the folders above it, on the worker


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


# ----------------------------------------------------------------- pool tasks carry runs of files


def test_files_per_task_keeps_every_worker_busy_and_is_bounded():
    assert ingestion.files_per_task(1, 2) == 1
    assert ingestion.files_per_task(12, 2) == 1  # fewer than 4 tasks per worker would be left otherwise
    assert ingestion.files_per_task(80, 2) == 10
    assert ingestion.files_per_task(10_000, 2) == ingestion.MAX_FILES_PER_TASK
    assert ingestion.files_per_task(10_000, 0) == ingestion.MAX_FILES_PER_TASK


def test_pool_tasks_keep_the_order_and_cut_by_count_and_bytes(monkeypatch):
    items = [ingestion.SourceItem(f"/data/{i:03d}.cif") for i in range(100)]
    sizes = {it.path: 1000 for it in items}
    tasks = ingestion.pool_tasks(items, sizes, 2)
    assert [it for t in tasks for it in t] == items
    assert [len(t) for t in tasks] == [12] * 8 + [4]
    # A large file fills a task alone; a file of unknown size too.
    monkeypatch.setattr(ingestion, "TASK_BYTES", 10_000)
    sizes[items[5].path] = 50_000
    del sizes[items[9].path]
    tasks = ingestion.pool_tasks(items[:20], sizes, 1)
    assert [it for t in tasks for it in t] == items[:20]
    assert [items[5]] in tasks and [items[9]] in tasks
    assert all(sum(sizes.get(it.path, 10_000) for it in t) <= 10_000 for t in tasks if len(t) > 1)


def test_an_outcome_batch_crosses_a_pickle_with_each_outcomes_own_rows():
    import pickle

    import pyarrow as pa

    def outcome(path, tables):
        return ingestion.SourceOutcome(path, "ab" * 32, 10, "eis.csv", "1", "ok", tables=tables,
                                       record_ids=[path])

    a = outcome("a", {"impedance": pa.table({"x": [1.0, 2.0]}), "spectra": pa.table({"k": ["s"]})})
    b = outcome("b", {"impedance": pa.table({"x": [3.0]})})
    c = outcome("c", {"impedance": pa.table({"x": pa.array([4], pa.int64())})})  # same name, other schema
    d = ingestion.SourceOutcome("d", "", 0, "unknown", "0", "failed", message="cannot read")
    e = outcome("e", {"impedance": pa.table({"x": [5.0, 6.0, 7.0]})})
    batch = ingestion.OutcomeBatch([a, b, c, d, e])
    back = pickle.loads(pickle.dumps(batch)).outcomes
    assert [o.path for o in back] == ["a", "b", "c", "d", "e"]
    for sent, got in zip([a, b, c, d, e], back):
        assert set(got.tables) == set(sent.tables)
        for name, table in sent.tables.items():
            assert got.tables[name].equals(table)
        assert (got.status, got.message, got.record_ids, got.sha256) == (sent.status, sent.message,
                                                                            sent.record_ids, sent.sha256)
    assert a.tables["impedance"].num_rows == 2  # the sender's outcomes keep their tables


def test_parallel_ingest_in_tasks_of_many_files_matches_one_worker(tmp_path, monkeypatch):
    """Outcomes, ledger and rows are the same whether a task carries one file or many, with a bad file
    and a second copy of the same bytes among them."""
    from matlake.platform.lake import Lake

    src = write_eis_files(tmp_path / "src", 0, 40)
    bad = tmp_path / "src" / "broken.csv"
    bad.write_text("frequency,z_real\n1,not-a-number\n")
    twin = tmp_path / "src" / "twin.csv"
    twin.write_bytes(src[3].read_bytes())
    files = src[:20] + [bad, twin] + src[20:]
    sent: list[int] = []
    started: list = []
    real_submit, real_process = ingestion._WorkerPool.submit, ingestion._process_got

    def counting(self, fn, /, *args, **kwargs):
        future = real_submit(self, fn, *args, **kwargs)
        if fn is ingestion.process_sources:
            sent.append(len(args[0]))
        else:
            started.append(future)  # the pool's first, trivial task
        return future

    def after_the_pool_started(item, got, store, known, started_at):
        for future in started:  # so that the pool gets tasks too, however slowly it starts
            future.result(timeout=300)
        return real_process(item, got, store, known, started_at)

    monkeypatch.setattr(ingestion._WorkerPool, "submit", counting)
    monkeypatch.setattr(ingestion, "_process_got", after_the_pool_started)
    monkeypatch.setattr(ingestion, "POOL_WORTH_SECONDS", 0.0)  # 42 small files: worth a pool here, for the test
    one = Lake.init(tmp_path / "one")
    two = Lake.init(tmp_path / "two")
    r1 = one.ingest(files, workers=1, batch_size=16, progress=False)
    r2 = two.ingest(files, workers=2, batch_size=16, progress=False)

    def summary(r):
        return [(Path(o.path).name, o.status, o.sha256, o.parser, len(o.record_ids)) for o in r.outcomes]

    assert summary(r1) == summary(r2)
    assert (r2.new, r2.unchanged, r2.failed) == (40, 1, 1)
    q = "select record_id, version, source_name, frequency, z_real from impedance order by record_id, frequency"
    assert one.sql(q).arrow().equals(two.sql(q).arrow())
    assert len(one.sql(q).arrow()) > 0
    assert max(sent) > 1  # pool tasks carried several files
    assert sum(sent) < 42  # and this process parsed some
    one.close()
    two.close()


def test_this_process_parses_tasks_while_the_pool_is_busy_and_outcomes_keep_their_order(tmp_path, monkeypatch):
    """_parse_tasks: the pool gets tasks in order; while the outcome due is still in the pool, this process
    parses the next task itself, never more than TASKS_AHEAD tasks beyond the one due."""
    from concurrent.futures import Future

    ahead = 6
    monkeypatch.setattr(ingestion, "TASKS_AHEAD", ahead)
    monkeypatch.setattr(ingestion, "POOL_WORTH_SECONDS", 0.0)
    files = write_eis_files(tmp_path / "src", 0, 24)
    items = [ingestion.SourceItem(str(p)) for p in files]
    tasks = [items[i:i + 2] for i in range(0, 24, 2)]
    root = str(tmp_path / "objects")
    events: list[tuple[str, int]] = []
    real, real_read = ingestion.process_source, ingestion._read_and_keep

    def watched(item, store, known):
        events.append(("here", items.index(item)))
        return real_read(item, store, {})

    class Busy(Future):  # a pool task that is never done until its outcomes are asked for (but the first)
        def __init__(self, task):
            super().__init__()
            self.task = task

        def done(self):
            return self.task is tasks[0]  # the pool has delivered a task: it is waited for, not taken over

        def result(self, timeout=None):
            events.append(("pool", items.index(self.task[0])))
            return ingestion.OutcomeBatch([real(it, root, {}) for it in self.task])

    class Pool:
        def submit(self, fn, task, objects_root):
            assert fn is ingestion.process_sources and objects_root == root
            return Busy(task)

    monkeypatch.setattr(ingestion, "_read_and_keep", watched)
    ready = Future()
    ready.set_result(True)
    taken = []
    for o in ingestion._parse_tasks(tasks, root, {}, Pool(), 2, ready):
        taken.append(o.path)
        due = len(taken) // 2  # the task whose outcomes are due next
        here = [i // 2 for who, i in events if who == "here"]
        assert all(t - due <= ahead + 1 for t in here)  # never further ahead than TASKS_AHEAD (+ the one due)
    assert taken == [it.path for it in items]
    here = {i // 2 for who, i in events if who == "here"}
    pool = {i // 2 for who, i in events if who == "pool"}
    assert here and pool and not here & pool and here | pool == set(range(12))


def test_a_pool_still_starting_is_not_waited_for(tmp_path, monkeypatch):
    """Until the pool's first (trivial) task is done, this process parses every task itself."""
    from concurrent.futures import Future

    files = write_eis_files(tmp_path / "src", 0, 6)
    items = [ingestion.SourceItem(str(p)) for p in files]

    class Starting:
        def submit(self, *args, **kwargs):
            raise AssertionError("a task was handed to a pool that has not started")

    outcomes = list(ingestion._parse_tasks([items[:3], items[3:]], str(tmp_path / "objects"), {}, Starting(), 2,
                                           Future()))
    assert [o.path for o in outcomes] == [it.path for it in items]
    assert all(o.status == "ok" for o in outcomes)



def test_rows_built_straight_to_the_schema_equal_inferred_and_cast_rows_and_bad_rows_still_fail_alike():
    """rows_table builds to the schema when it can; otherwise conform sees the rows as before (same table or
    the same error)."""
    import pyarrow as pa

    from matlake import schemas

    schema = schemas.get("structures")
    target = schema.data_schema()

    def old_way(rows):
        return schema.conform(pa.Table.from_pylist(rows), source="f.cif")

    def new_way(rows):
        return schema.conform(ingestion.rows_table(rows, target), source="f.cif")

    base = {"record_id": "r1", "formula": "Si2", "elements": ["Si"], "nsites": 2, "a": 3.8, "volume": 40.9}
    good = [dict(base), dict(base, record_id="r2", a=4)]  # an int for a float column
    assert new_way(good).equals(old_way(good))
    assert ingestion.rows_table(good, target).schema.equals(target)  # built straight to it
    cast = [dict(base, a="5.25"), dict(base, nsites=3.0)]  # values that conform casts
    for rows in cast:
        assert new_way([rows]).equals(old_way([rows]))
    for bad in ([dict(base, color="red")],  # an unknown column
                [dict(base, a="wide")],  # a value no cast takes
                [dict(base, record_id=None)]):  # a null where none may be
        with pytest.raises(ValueError) as old_error:
            old_way(bad)
        with pytest.raises(ValueError) as new_error:
            new_way(bad)
        assert str(new_error.value) == str(old_error.value)


@pytest.mark.parametrize("worth", [0.0, 3600.0])
def test_the_pool_gets_tasks_only_when_the_files_left_would_take_this_process_long(tmp_path, monkeypatch, worth):
    """A run whose files left would take this process less than POOL_WORTH_SECONDS is parsed here alone."""
    from concurrent.futures import Future

    monkeypatch.setattr(ingestion, "POOL_WORTH_SECONDS", worth)
    files = write_eis_files(tmp_path / "src", 0, 12)
    items = [ingestion.SourceItem(str(p)) for p in files]
    root = str(tmp_path / "objects")
    submitted = []

    class Pool:
        def submit(self, fn, task, objects_root):
            submitted.append(task)
            done = Future()
            done.set_result(ingestion.OutcomeBatch([ingestion.process_source(it, root, {}) for it in task]))
            return done

    ready = Future()
    ready.set_result(True)
    fed: list = []
    outcomes = list(ingestion._parse_tasks([items[i:i + 2] for i in range(0, 12, 2)], root, {}, Pool(), 2, ready, fed))
    assert [o.path for o in outcomes] == [it.path for it in items]
    assert len(submitted) == len(fed)
    assert (len(submitted) > 0) == (worth == 0.0)
