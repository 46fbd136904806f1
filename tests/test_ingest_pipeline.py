"""The ingest path's plumbing: reading one file ahead of the parse, arrays kept as .npy without
a copy, and objects that a second writer never replaces."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from conftest import sample

from matlake.ingest.base import array_parts, decode_array, encode_array
from matlake.platform import ingestion
from matlake.platform.objects import ObjectStore, publish, sha256_bytes, sha256_file, write_atomic

# --------------------------------------------------------------------------- read ahead


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_read_ahead_keeps_order_reads_in_a_thread_and_at_most_depth_items_ahead(depth):
    items = list(range(6))
    started: dict[int, str] = {}
    lock = threading.Lock()

    def read(i):
        with lock:
            started[i] = threading.current_thread().name
        return i * 10

    taken = []
    for it, got in ingestion._read_ahead(items, read, depth=depth):
        assert got == it * 10
        # what has been read when item ``it`` is handed over: itself and at most ``depth`` more
        assert max(started) <= it + depth
        taken.append(it)
    assert taken == items and sorted(started) == items
    # the first is read here (meanwhile the thread reads the next), every later one ahead in the thread
    assert started[0] == threading.main_thread().name
    assert all(started[i].startswith("matlake-read-ahead") for i in items[1:])


def test_items_not_worth_reading_ahead_are_read_here_in_turn():
    where: dict[int, str] = {}

    def read(i):
        where[i] = threading.current_thread().name
        return i

    big = {2, 3, 5}
    out = list(ingestion._read_ahead(list(range(6)), read, worth=lambda i: i in big))
    assert out == [(i, i) for i in range(6)]
    assert {i for i, name in where.items() if name.startswith("matlake-read-ahead")} == big


def test_only_files_of_a_megabyte_or_more_are_worth_reading_ahead(tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_bytes(b"x" * (ingestion.READ_AHEAD_BYTES - 1))
    large.write_bytes(b"x" * ingestion.READ_AHEAD_BYTES)
    assert not ingestion._worth_reading_ahead(ingestion.SourceItem(str(small)))
    assert ingestion._worth_reading_ahead(ingestion.SourceItem(str(large)))
    assert not ingestion._worth_reading_ahead(ingestion.SourceItem(str(tmp_path / "missing")))
    assert not ingestion._worth_reading_ahead(ingestion.SourceItem(str(large), object_sha="0" * 64))


def test_read_ahead_of_one_item_reads_it_here():
    threads = []
    out = list(ingestion._read_ahead(["a"], lambda it: threads.append(threading.current_thread()) or it.upper()))
    assert out == [("a", "A")] and threads == [threading.main_thread()]


def test_a_consumer_that_stops_early_gets_the_read_ahead_abandoned():
    abandoned = []
    reads = []

    def read(i):
        reads.append(i)
        return f"bytes {i}"

    gen = ingestion._read_ahead([1, 2, 3, 4, 5], read, abandon=abandoned.append, depth=2)
    assert next(gen) == (1, "bytes 1")
    gen.close()  # the caller stopped (a stop signal, an error) while items 2 and 3 were read ahead
    assert 1 in reads and set(reads) <= {1, 2, 3}  # never further ahead than asked
    assert sorted(abandoned) == [f"bytes {i}" for i in sorted(reads) if i != 1]  # reads not taken: abandoned


def test_a_read_that_raises_raises_at_its_item():
    def read(i):
        if i == 2:
            raise OSError("disk gone")
        return i

    gen = ingestion._read_ahead([1, 2, 3], read)
    assert next(gen) == (1, 1)
    with pytest.raises(OSError, match="disk gone"):
        next(gen)


def test_an_abandoned_spooled_read_leaves_no_spool(tmp_path, monkeypatch):
    """A large source read ahead and never parsed: its spooled copy is removed, its kept object
    stays (an unregistered file that gc removes, as after a crash)."""
    monkeypatch.setattr(ingestion, "READ_AHEAD_FILES", 2)
    monkeypatch.setattr(ingestion, "STREAM_BYTES", 1024)
    monkeypatch.setattr(ingestion, "READ_AHEAD_BYTES", 1024)
    files = []
    for i in range(4):
        p = tmp_path / f"big{i}.csv"
        p.write_bytes(b"frequency,z_real,z_imag\n" + b"1,2,3\n" * (400 + i))
        files.append(p)
    store = ObjectStore(tmp_path / "objects")
    gen = ingestion._process_in_turn([ingestion.SourceItem(str(p)) for p in files], store, {})
    first = next(gen)
    gen.close()
    assert first.path == str(files[0])
    spool = tmp_path / "objects" / "spool"
    assert not spool.exists() or not list(spool.iterdir())
    assert store.exists(sha256_file(files[0]))  # parsed; the next two may have been read ahead and kept
    assert not store.exists(sha256_file(files[3]))  # never read: at most READ_AHEAD_FILES ahead


def test_one_worker_ingest_reads_ahead_and_matches_the_files(sqlite_lake):
    """The raw object of every file (also a failed one) is kept, whoever read it."""
    src = [sample("dft", "Si_static_CHGCAR.gz"), sample("dft", "Si_static_LOCPOT.gz")]
    bad = sqlite_lake.root.parent / "broken_CHGCAR"
    bad.write_text("not a chgcar\n")
    r = sqlite_lake.ingest([*src, bad], progress=False)
    assert (r.new, r.failed) == (2, 1), r.summary()
    for o, p in zip(r.outcomes, [*src, bad]):
        assert o.sha256 == sha256_file(p)
        assert sha256_file(sqlite_lake.objects.path(o.sha256)) == o.sha256


# --------------------------------------------------------------------------- arrays as .npy


@pytest.mark.parametrize("make", [
    lambda: np.arange(60.0).reshape(3, 4, 5),
    lambda: np.asfortranarray(np.arange(60.0).reshape(3, 4, 5)),  # pymatgen's grids
    lambda: np.arange(60.0).reshape(3, 4, 5)[:, ::2],  # neither order: copied once
    lambda: np.array(2.5),
    lambda: np.zeros((0, 3), np.float32),
    lambda: np.arange(7, dtype=">i4"),
    lambda: np.array([1 + 2j, 3 - 4j]),
], ids=["C", "Fortran", "strided", "0-d", "empty", "big-endian", "complex"])
def test_arrays_are_kept_exactly_as_numpy_save_writes_them(make):
    array = make()
    saved = io.BytesIO()
    np.save(saved, array, allow_pickle=False)
    assert encode_array(array) == saved.getvalue()
    back = decode_array(encode_array(array))
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


def test_a_fortran_ordered_grid_is_hashed_and_written_without_a_copy():
    grid = np.asfortranarray(np.random.default_rng(0).random((8, 9, 10)))
    header, body = array_parts(grid)
    assert np.shares_memory(np.frombuffer(body, np.uint8), grid)
    assert header.startswith(b"\x93NUMPY") and b"'fortran_order': True" in header


def test_object_arrays_are_refused():
    with pytest.raises(ValueError, match="dtype object"):
        array_parts(np.array([{"a": 1}], dtype=object))


def test_arrays_of_older_lakes_npz_still_decode():
    old = io.BytesIO()
    np.savez(old, data=np.arange(5.0))
    assert np.array_equal(decode_array(old.getvalue()), np.arange(5.0))


def test_ingested_grids_are_npy_objects_named_by_their_bytes(sqlite_lake):
    from pymatgen.io.vasp import Chgcar

    src = sample("dft", "Si_static_CHGCAR.gz")
    sqlite_lake.ingest([src], progress=False)
    sha = sqlite_lake.sql("select array_sha256 from volumetric").fetchone()[0]
    path = sqlite_lake.objects.path(sha)
    assert path.read_bytes()[:6] == b"\x93NUMPY" and sha256_file(path) == sha
    media = sqlite_lake.sql("select media_type from objects where sha256 = ?", params=[sha]).fetchone()[0]
    assert media == "application/x-npy"
    ref = Chgcar.from_file(str(src)).data["total"]
    assert np.array_equal(decode_array(sqlite_lake.objects.get(sha)), ref)


def test_put_parts_equals_put_of_the_joined_bytes(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    parts = [b"header", memoryview(np.arange(1000, dtype=np.float64)).cast("B")]
    joined = b"".join(bytes(p) for p in parts)
    sha, size = store.put_parts(parts, sync=False)
    assert (sha, size) == (sha256_bytes(joined), len(joined))
    assert store.get(sha) == joined
    assert store.put_parts(parts) == (sha, size)  # idempotent


# --------------------------------------------------------------------------- no replacing an object


def test_a_second_writer_of_an_object_does_not_replace_the_first(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    data = b"the same bytes, written twice"
    sha = store.put(data, sync=False)
    path = store.path(sha)
    inode = path.stat().st_ino
    # the other writer passed its existence check before the first one renamed: it finds the name taken
    assert write_atomic(path, data, sync=False, replace=False) is False
    assert path.stat().st_ino == inode and path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # its temporary file is gone


def test_publish_links_once_and_leaves_the_loser_its_file(tmp_path):
    target = tmp_path / "obj"
    first, second = tmp_path / "t1", tmp_path / "t2"
    first.write_bytes(b"x")
    second.write_bytes(b"x")
    assert publish(first, target) is True and not first.exists()
    inode = target.stat().st_ino
    assert publish(second, target) is False and second.exists()
    assert target.stat().st_ino == inode


def test_publish_without_hard_links_falls_back_to_a_rename(tmp_path, monkeypatch):
    def no_links(src, dst, *a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "obj"
    tmp = tmp_path / "t1"
    tmp.write_bytes(b"x")
    assert publish(tmp, target) is True and target.read_bytes() == b"x" and not tmp.exists()
    other = tmp_path / "t2"
    other.write_bytes(b"y")
    assert publish(other, target) is False and target.read_bytes() == b"x"


def test_a_spool_that_loses_the_race_reads_from_its_own_copy(tmp_path, monkeypatch):
    from matlake.platform import objects

    store = ObjectStore(tmp_path / "objects")
    sp = store.spool()
    sp.write(b"streamed bytes")
    sha = sp.close()
    target = store.path(sha)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"streamed bytes")  # another process published it after our existence check
    real_exists = objects.Path.exists
    monkeypatch.setattr(objects.Path, "exists", lambda self: False if self == target else real_exists(self))
    assert sp.keep(sync=False) is False
    assert sp.path == sp.tmp and sp.tmp.read_bytes() == b"streamed bytes"
    sp.discard()
    assert not sp.tmp.exists() and target.read_bytes() == b"streamed bytes"


# --------------------------------------------------------------------------- writes behind, early fsyncs


def _fail_in_thread(monkeypatch, owner, name, prefix, exc):
    """``owner.name`` raises ``exc`` when called from a thread whose name starts with ``prefix``."""
    real = getattr(owner, name)

    def maybe_fail(*args, **kwargs):
        if threading.current_thread().name.startswith(prefix):
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, maybe_fail)


def _fail_early_fsyncs(monkeypatch, exc):
    """An early fsync (in whichever thread its group runs) raises ``exc``; the barrier's do not."""
    from matlake.platform import objects

    local = threading.local()
    real_early, real_fsync = objects._Background.fsync, objects.fsync_path

    def early(self, path):
        local.early = True
        try:
            return real_early(self, path)
        finally:
            local.early = False

    def maybe_fail(path):
        if getattr(local, "early", False):
            raise exc
        return real_fsync(path)

    monkeypatch.setattr(objects._Background, "fsync", early)
    monkeypatch.setattr(objects, "fsync_path", maybe_fail)


def _wait_for_early_fsyncs():
    from matlake.platform import objects

    bg = objects._background()
    with bg.lock:
        while bg.to_sync or bg.syncing:
            bg.changed.wait()


def _let_early_fsyncs_run(monkeypatch):
    """Settling drops early fsyncs not started yet: here each runs first, so that a fault injected
    into it is certain to happen (on a loaded machine its thread may not have started in time)."""
    from matlake.platform import objects

    real = objects.settle_background

    def settle(paths=None):
        _wait_for_early_fsyncs()
        return real(paths)

    monkeypatch.setattr(objects, "settle_background", settle)
    monkeypatch.setattr(ingestion, "settle_background", settle)


def test_arrays_written_behind_exist_once_settled_and_are_written_by_the_writer_thread(tmp_path, monkeypatch):
    from matlake.platform import objects

    writers = []
    real = objects.write_atomic

    def recorded(*args, **kwargs):
        writers.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(objects, "write_atomic", recorded)
    store = ObjectStore(tmp_path / "objects")
    grid = np.asfortranarray(np.random.default_rng(1).random((20, 30, 40)))
    sha, size = store.put_parts(array_parts(grid), behind=True)
    objects.settle_background()
    assert store.get(sha) == encode_array(grid) and size == len(encode_array(grid))
    assert writers and all(w.startswith("matlake-write-behind") for w in writers)
    assert objects.make_durable([store.path(sha)]) == 3  # the file, its folder, the store's root


def test_a_failed_write_behind_fails_the_barrier_of_its_object_naming_it(tmp_path, monkeypatch):
    import errno

    from matlake.platform import objects

    store = ObjectStore(tmp_path / "objects")
    _fail_in_thread(monkeypatch, objects, "write_atomic", "matlake-write-behind",
                    OSError(errno.ENOSPC, "No space left on device"))
    sha, _ = store.put_parts([b"header", b"body"], behind=True)
    other = store.put(b"another object", sync=False)
    assert objects.make_durable([store.path(other)]) == 3  # a barrier of other files goes on
    with pytest.raises(OSError, match=f"writing {store.path(sha)} to disk failed .*No space left on device"):
        objects.make_durable([store.path(sha)])
    assert not store.exists(sha)  # nothing half-written under the object's name
    objects.make_durable([store.path(sha)])  # raised once: forgotten (and a missing file is skipped)


def test_a_failed_early_fsync_is_raised_by_the_barrier_though_its_own_fsync_succeeds(tmp_path, monkeypatch):
    """Linux reports a write-back error once per open file: the barrier's later fsync of the same
    file can succeed, so the early fsync's error must be kept and raised."""
    import errno

    from matlake.platform import objects

    store = ObjectStore(tmp_path / "objects")
    _fail_early_fsyncs(monkeypatch, OSError(errno.EIO, "Input/output error"))
    big = store.put(b"x" * objects.EARLY_SYNC_BYTES, sync=False)
    _wait_for_early_fsyncs()  # let it run (the barrier drops an early fsync not started yet)
    small = store.put(b"small", sync=False)  # no early fsync: the barrier's own
    assert objects.make_durable([store.path(small)]) == 3
    with pytest.raises(OSError, match=f"writing {store.path(big)} to disk failed .*Input/output error") as caught:
        objects.make_durable([store.path(big), store.path(small)])
    assert caught.value.errno == errno.EIO


def test_write_behind_waits_once_its_limit_of_bytes_waits(tmp_path, monkeypatch):
    from matlake.platform import objects

    monkeypatch.setattr(objects, "WRITE_BEHIND_BYTES", 100)
    gate = threading.Event()
    real = objects.write_atomic

    def gated(*args, **kwargs):
        gate.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(objects, "write_atomic", gated)
    store = ObjectStore(tmp_path / "objects")
    done = []

    def put_two():
        done.append(store.put_parts([b"a" * 80], behind=True))  # waits for nothing: 80 <= 100 bytes
        done.append(store.put_parts([b"b" * 80], behind=True))  # 160 > 100: waits for the first write

    putter = threading.Thread(target=put_two)
    putter.start()
    putter.join(0.5)
    assert putter.is_alive() and len(done) == 1  # held back while the first write cannot finish
    gate.set()
    putter.join()
    objects.settle_background()
    assert [store.get(sha) for sha, _ in done] == [b"a" * 80, b"b" * 80]


def test_an_ingest_whose_early_fsync_fails_commits_nothing_and_a_retry_commits_all(sqlite_lake, monkeypatch):
    import errno

    from matlake.platform import objects

    src = sample("dft", "Si_static_CHGCAR.gz")  # 2.6 MB: fsynced early
    with monkeypatch.context() as m:
        _fail_early_fsyncs(m, OSError(errno.EIO, "Input/output error"))
        _let_early_fsyncs_run(m)
        with pytest.raises(OSError, match="Input/output error"):
            sqlite_lake.ingest([src], progress=False)
    assert sqlite_lake.sql("select count(*) from ledger").fetchone()[0] == 0
    r = sqlite_lake.ingest([src], progress=False)
    assert (r.new, r.failed, r.errors) == (1, 0, 0), r.summary()
    sha = sqlite_lake.sql("select array_sha256 from volumetric").fetchone()[0]
    assert sqlite_lake.objects.verify(sha) and sqlite_lake.objects.verify(r.outcomes[0].sha256)


def test_a_pool_task_raises_a_failed_early_fsync_of_its_own(tmp_path, monkeypatch):
    """The parent's barrier cannot see a worker's early fsyncs: the worker's task raises."""
    import errno

    from matlake.platform import objects

    monkeypatch.setattr(ingestion, "_worker_known", {})
    _fail_early_fsyncs(monkeypatch, OSError(errno.EIO, "Input/output error"))
    _let_early_fsyncs_run(monkeypatch)
    item = ingestion.SourceItem(str(sample("dft", "Si_static_CHGCAR.gz")))
    with pytest.raises(OSError, match="Input/output error"):
        ingestion.process_sources([item], str(tmp_path / "objects"))


def test_early_fsyncs_queued_meanwhile_go_as_one_group(tmp_path, monkeypatch):
    """While one early fsync runs, the files queued behind it are fsynced together (they share a
    journal commit and a cache flush) once it is done."""
    from matlake.platform import objects

    gate, first_started = threading.Event(), threading.Event()
    groups: list[int] = []
    real_group = objects._Background.fsync

    def fsync(self, path):
        if not first_started.is_set():
            first_started.set()
            gate.wait()  # the first file's fsync is slow: the others queue up meanwhile
        with self.lock:
            groups.append(self.syncing)
        return real_group(self, path)

    monkeypatch.setattr(objects._Background, "fsync", fsync)
    store = ObjectStore(tmp_path / "objects")
    first = store.put(b"0" * objects.EARLY_SYNC_BYTES, sync=False)
    first_started.wait()
    rest = [store.put(bytes([49 + i]) * objects.EARLY_SYNC_BYTES, sync=False) for i in range(5)]
    gate.set()
    _wait_for_early_fsyncs()
    assert groups == [1] + [5] * 5  # the first alone, then the five queued behind it as one group
    objects.make_durable([store.path(s) for s in [first, *rest]])
