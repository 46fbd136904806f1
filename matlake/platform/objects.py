"""Content-addressed object store: ``objects/ab/cdef...`` named by sha256.

Objects are written to a temporary file and then given their name (a hard link,
see :func:`publish`, which never replaces an existing object), so a reader never
sees a partial object and a crash leaves at worst a temporary or an
unregistered file that ``matlake gc`` removes.  An object is never modified.
An object is durable once its file and its folder are fsynced:
:meth:`ObjectStore.put` does both per object by default; ingest passes
``sync=False`` and makes everything a batch wrote durable in one barrier
(:func:`make_durable`: the objects and the commit's Parquet files, fsynced
together) right before the catalog transaction that registers them.  Large
unsynced objects are fsynced early, in a background thread, as soon as they are
written (:func:`sync_early`), so that the barrier finds them already on disk.
Large sources are streamed in (:meth:`ObjectStore.spool`): copied and hashed in
one pass, never held whole.

Objects may sit on shared team storage that others can write to, so a read
checks the bytes against the sha256 they are named for (:meth:`ObjectStore.get`
raises :class:`ObjectCorrupted` on a mismatch) before anything parses or
deserialises them.  ``get(sha, verify=False)`` skips the check; use it only
where the bytes are hashed or copied, never parsed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from matlake.platform.errors import LakeError

HASH_ALGO = "sha256:v1"
CHUNK = 1 << 20  # bytes hashed per read when a file is checked without loading it


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (memory stays flat for large objects)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ObjectCorrupted(LakeError):
    """The bytes of an object file do not hash to the sha256 the object is named for.

    The file was changed after it was written (disk fault, or someone with
    write access to ``objects/``); nothing is parsed or deserialised from it.
    """

    def __init__(self, sha: str, found: str, path: Path | str) -> None:
        self.sha, self.found, self.path = sha, found, str(path)
        super().__init__(f"object {sha} is corrupted: expected sha256 {sha}, found {found} in file {self.path} "
                         "(the file changed after it was stored; restore it from a copy of the lake)")

    def __reduce__(self):  # keep the three fields across worker processes
        return (type(self), (self.sha, self.found, self.path))


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory entry is durable only once its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: "bytes | memoryview | Sequence[bytes | memoryview]", *, sync: bool = True,
                 replace: bool = True) -> bool:
    """Write ``data`` (bytes, or a sequence of buffers written one after another) to ``path``
    atomically: temp file + rename; durably (file fsync before the rename, folder fsync
    after) unless ``sync=False``.  True when ``path`` was written.

    With ``sync=False`` nothing is fsynced: the caller passes ``path`` to
    :func:`make_durable` before anything durable refers to it (one barrier for
    many files instead of two fsyncs each).  With ``replace=False`` an existing
    ``path`` is left as it is (see :func:`publish`) and False is returned.
    """
    parts = data if isinstance(data, (list, tuple)) else (data,)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
    large = not sync and sum(memoryview(p).nbytes for p in parts) >= EARLY_SYNC_BYTES
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
        elif large:
            start_writeback(fh.fileno())
    if replace:
        os.replace(tmp, path)
        written = True
    else:
        written = publish(tmp, path)
        if not written:
            os.unlink(tmp)
    if sync and written:
        fsync_path(path.parent)
    elif large and written:
        sync_early(path)
    return written


def publish(tmp: Path, target: Path) -> bool:
    """Give the finished file ``tmp`` the name ``target`` unless that name exists; True when it did.

    For objects, which are never modified: of two writers of the same object (twin files
    in one parallel run, two ingests at once) the second must not replace the first's file,
    which a commit's barrier may already have made durable, with its own unsynced one.  A
    hard link fails when the name exists, where a rename would replace it.  On a
    filesystem without hard links the check and a rename remain (a narrow window).  On
    success ``tmp`` is gone; otherwise it is left to the caller.
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem (some network and FUSE mounts)
        if target.exists():
            return False
        os.replace(tmp, target)
        return True
    os.unlink(tmp)
    return True


EARLY_SYNC_BYTES = 1 << 20  # unsynced files this large start on their way to disk at once (sync_early)
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-out of dirty pages, do not wait


@functools.lru_cache(maxsize=1)
def _sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages to disk now, without waiting
    (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; elsewhere nothing).

    It guarantees nothing and its errors are ignored: an fsync reports them.
    """
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


WRITE_BEHIND_BYTES = 64 << 20  # bytes waiting for the writer thread at most (see ObjectStore.put_parts)


class _Background:
    """This process's object writes and fsyncs in background threads: in flight, and failed.

    One writer thread (:meth:`ObjectStore.put_parts` with ``behind=True``) and one thread
    that fsyncs the files :func:`sync_early` queues, in groups.  Their failures are kept by
    path until :func:`settle_background` raises them.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pid = os.getpid()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="matlake-write-behind")
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.writes: list[tuple[Any, int]] = []  # (future, bytes) in the order submitted
        self.to_sync: list[Path] = []  # files waiting for the next group of early fsyncs
        self.syncing = 0  # files of the group being fsynced now
        self.syncer: threading.Thread | None = None
        self.failed: dict[Path, OSError] = {}

    def fsync(self, path: Path) -> None:
        try:
            fsync_path(path)
        except FileNotFoundError:  # removed meanwhile (gc of an orphan): nothing to make durable
            pass
        except OSError as exc:
            with self.lock:
                self.failed[path] = exc

    def queue_sync(self, path: Path) -> None:
        with self.lock:
            self.to_sync.append(path)
            if self.syncer is None or not self.syncer.is_alive():
                # A daemon: at exit nothing waits for a head start (the barriers have run).
                self.syncer = threading.Thread(target=self._sync_groups, name="matlake-early-sync", daemon=True)
                self.syncer.start()
            self.changed.notify_all()

    def _sync_groups(self) -> None:
        """Fsync what has queued up, all of it at once, until the process ends.

        A group, not one file at a time: each fsync of a file with new data costs a journal
        commit and a flush of the disk's write cache; files fsynced together share them (see
        :func:`make_durable`).  While one group is flushed, the next one gathers.
        """
        while True:
            with self.lock:
                while not self.to_sync:
                    self.changed.wait()
                group, self.to_sync = self.to_sync, []
                self.syncing = len(group)
            try:
                if len(group) == 1:
                    self.fsync(group[0])
                else:
                    lanes = min(SYNC_THREADS, len(group))
                    list(_sync_pool().map(lambda paths: [self.fsync(p) for p in paths],
                                          [group[i::lanes] for i in range(lanes)]))
            except RuntimeError:  # the interpreter is shutting down its thread pools
                return
            finally:
                with self.lock:
                    self.syncing = 0
                    self.changed.notify_all()

    def settle_syncs(self) -> None:
        """Drop the files not yet in a group (the barrier fsyncs them itself, all at once) and
        wait for the group being fsynced."""
        with self.lock:
            self.to_sync.clear()
            while self.syncing:
                self.changed.wait()

    def write(self, path: Path, parts: list) -> None:
        try:
            write_atomic(path, parts, sync=False, replace=False)
        except OSError as exc:
            with self.lock:
                self.failed[path] = exc

    def wait_writes(self, over: int = -1) -> None:
        """Wait for writes, oldest first, until no more than ``over`` bytes wait (-1: none)."""
        while True:
            with self.lock:
                if not self.writes or sum(n for _f, n in self.writes) <= over:
                    return
                future, _n = self.writes.pop(0)
            future.result()  # write() keeps its OSError: nothing else is raised here


_BACKGROUND: "_Background | None" = None
_BACKGROUND_LOCK = threading.Lock()


def _absolute(path: "Path | str") -> Path:
    return Path(os.path.abspath(path))  # one spelling per file, without a system call


def _background() -> _Background:
    """The background work of this process (a forked child, which inherits the object but not
    its threads, gets its own)."""
    global _BACKGROUND
    with _BACKGROUND_LOCK:
        if _BACKGROUND is None or _BACKGROUND.pid != os.getpid():
            _BACKGROUND = _Background()
        return _BACKGROUND


def _forget_background_in_child() -> None:
    # A fork while a thread held the lock would leave the child's copy locked for good.
    global _BACKGROUND, _BACKGROUND_LOCK
    _BACKGROUND, _BACKGROUND_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_background_in_child)


def sync_early(path: Path) -> None:
    """Start fsyncing the unsynced file ``path`` in a background thread, now.

    The barrier (:func:`make_durable`) would otherwise find every large object a batch
    wrote still to be flushed, on a disk with a volatile write cache all of it at once:
    on a virtual disk that was 0.1-0.2 s per commit of 180 MB.  Synced as they come,
    they reach stable storage while the files after them are parsed (fsync releases the
    GIL), and the barrier's own fsyncs find them clean.  A failed early fsync is kept
    and raised by :func:`settle_background` (the barrier calls it): a write-back error
    is reported once per open file, so the barrier's later fsync alone could miss it.
    """
    _background().queue_sync(_absolute(path))


def write_behind(path: Path, parts: "Sequence[bytes | memoryview]") -> None:
    """Write ``parts`` as the unsynced file ``path`` (:func:`write_atomic`, ``replace=False``)
    in the writer thread; the caller must not change the buffers of ``parts`` until
    :func:`settle_background` has returned.  At most :data:`WRITE_BEHIND_BYTES` wait: beyond
    that this call first waits for the oldest writes."""
    bg = _background()
    size = sum(memoryview(part).nbytes for part in parts)
    bg.wait_writes(over=max(0, WRITE_BEHIND_BYTES - size))
    future = bg.writer.submit(bg.write, _absolute(path), list(parts))
    with bg.lock:
        bg.writes.append((future, size))


def settle_background(paths: "Iterable[Path] | None" = None) -> None:
    """Settle this process's background work: every write behind finished; the early fsyncs
    not started dropped (the barrier fsyncs their files itself, all at once), those running
    waited for.  Then raise the OSError of a write or fsync that failed on one of ``paths``
    (default: on any file); the failures raised are forgotten."""
    bg = _BACKGROUND
    if bg is None or bg.pid != os.getpid():
        return
    bg.wait_writes()
    bg.settle_syncs()
    with bg.lock:
        if not bg.failed:
            return
        wanted = set(bg.failed) if paths is None else {_absolute(p) for p in paths} & set(bg.failed)
        if not wanted:
            return
        errors = {p: bg.failed.pop(p) for p in sorted(wanted)}
    first, exc = next(iter(errors.items()))
    raise OSError(exc.errno, f"writing {first} to disk failed ({exc.strerror or exc}); "
                             f"{len(errors)} file(s) not made durable") from exc


SYNC_THREADS = 32  # fsyncs issued at once by make_durable
DURABILITY_ENV = "MATLAKE_DURABILITY"  # how make_durable works: "fsync" (default) or "syncfs"
DURABILITY_MODES = ("fsync", "syncfs")


def durability_mode() -> str:
    """How :func:`make_durable` makes files durable: ``$MATLAKE_DURABILITY`` or ``fsync``.

    ``fsync``: every file and folder fsynced, all at once from a thread pool (portable,
    and flushes only these files).  ``syncfs``: Linux ``syncfs(2)`` once per filesystem
    (flushes every dirty file of that filesystem, other programs' too); where it is
    not available (not Linux, a kernel before 5.8 that does not report write-back
    errors through it) ``fsync`` is used.
    """
    mode = os.environ.get(DURABILITY_ENV, "").strip().lower() or "fsync"
    if mode not in DURABILITY_MODES:
        raise ValueError(f"${DURABILITY_ENV}: expected one of {', '.join(DURABILITY_MODES)}, found {mode!r}")
    return mode


@functools.lru_cache(maxsize=1)
def _syncfs_call() -> "Callable[[int], None] | None":
    """``syncfs(fd)`` raising OSError, or None where it cannot be trusted to report errors."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return None
    if (major, minor) < (5, 8):  # before 5.8 syncfs returned 0 even when write-back failed
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]

    def call(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")

    return call


def _fsync_existing(path: Path) -> bool:
    """fsync ``path`` if it exists; False when it does not (nothing to make durable)."""
    try:
        fsync_path(path)
    except FileNotFoundError:
        return False
    return True


def make_durable(paths: Iterable[Path]) -> int:
    """The durability barrier: when this returns, each file of ``paths`` (content and
    name) is on stable storage; returns how many files and folders were covered.

    For files written with ``sync=False`` (:func:`write_atomic`, :meth:`ObjectStore.put`,
    :meth:`Spool.keep`, :meth:`ObjectStore.put_written`): every file, the folder holding
    it and the folder above that are fsynced (or their filesystems synced, see
    :func:`durability_mode`).
    Called once per commit, right before the catalog transaction that refers to the
    files, so many small files cost one barrier instead of two fsyncs each.  A path
    that does not exist is skipped.  An fsync error (write-back failed) is raised:
    the commit must not go ahead.
    """
    files = sorted({Path(p) for p in paths})
    if not files:
        return 0
    settle_background(files)  # a failure there would not show in the fsyncs below
    # The folder of each file, and the folder above it: a shard folder (``objects/ab``) or a
    # table's folder may itself be new, and its own name is an entry of the folder above.
    folders = sorted({f.parent for f in files} | {f.parent.parent for f in files})
    if durability_mode() == "syncfs" and (syncfs := _syncfs_call()) is not None:
        # One syncfs per filesystem flushes every file and folder on it, renames included.
        devices: dict[int, Path] = {}
        for folder in folders:
            try:
                devices.setdefault(os.stat(folder).st_dev, folder)
            except FileNotFoundError:
                continue
        for folder in devices.values():
            fd = os.open(folder, os.O_RDONLY)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
        return len(files) + len(folders)
    targets = files + folders
    if len(targets) == 1:
        return int(_fsync_existing(targets[0]))
    # Issued together (fsync releases the GIL): a journaling filesystem commits them in one
    # or two journal transactions, instead of one per file, one after the other.  One task per
    # thread, not per file: a task costs the parent more CPU than a fsync of a clean file.
    lanes = min(SYNC_THREADS, len(targets))
    return sum(_sync_pool().map(_fsync_all, [targets[i::lanes] for i in range(lanes)]))


def _fsync_all(paths: list[Path]) -> int:
    return sum(_fsync_existing(p) for p in paths)


_SYNC_POOL: "tuple[int, Any] | None" = None  # (pid, ThreadPoolExecutor): kept across barriers


def _sync_pool() -> Any:
    """The threads that issue a barrier's fsyncs, started once per process (a forked child,
    which inherits the executor but not its threads, gets its own)."""
    global _SYNC_POOL
    if _SYNC_POOL is None or _SYNC_POOL[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _SYNC_POOL = (os.getpid(), ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="matlake-fsync"))
    return _SYNC_POOL[1]


SPOOL_DIR = "spool"  # temporaries of streamed objects; not an object shard (``sha_of_path`` is None: gc removes them)


class Spool:
    """A source being copied into the store while it is hashed (see :meth:`ObjectStore.spool`).

    ``write`` chunks, then ``keep()`` (fsync + rename into place unless the
    object exists; ``sync=False``: no fsync, see :func:`make_durable`) or
    ``discard()``.  Used as a context manager, an unkept spool is removed.
    """

    def __init__(self, store: "ObjectStore") -> None:
        self.store = store
        folder = store.root / SPOOL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.tmp = folder / f".tmp-{uuid.uuid4().hex}"
        self._fh: BinaryIO | None = open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha = ""
        self.path: Path | None = None  # where the bytes are once kept (the object, or the spool itself)

    def write(self, chunk: bytes) -> None:
        assert self._fh is not None, "spool already closed"
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.size += len(chunk)

    def close(self) -> str:
        """Stop writing; returns the sha256 of everything written."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self.sha = self._hash.hexdigest()
        return self.sha

    def keep(self, *, sync: bool = True) -> bool:
        """Move the bytes into the store as object ``sha``; True when this call created it.

        An object that already exists is not rewritten: the spool stays where it
        is (``path``) for the caller to read, until :meth:`discard`.  With
        ``sync=False`` neither the object nor its folder is fsynced: the caller
        passes the object's path to :func:`make_durable` before a commit refers to it.
        """
        sha = self.close()
        target = self.store.path(sha)
        if target.exists():
            self.path = self.tmp
            return False
        large = not sync and self.size >= EARLY_SYNC_BYTES
        if sync:
            fsync_path(self.tmp)
        elif large:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                start_writeback(fd)
            finally:
                os.close(fd)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not publish(self.tmp, target):
            self.path = self.tmp  # another writer made it meanwhile: the same bytes
            return False
        if sync:
            fsync_path(target.parent)
        elif large:
            sync_early(target)
        self.path = target
        return True

    def discard(self) -> None:
        """Remove the spooled copy (never the object it was kept as)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise ValueError(f"object id: expected 64 lowercase hex characters, found {sha!r}")
        return self.root / sha[:2] / sha[2:]

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()

    def put(self, data: bytes, sha: str | None = None, *, sync: bool = True) -> str:
        """Store ``data``; returns its sha256.  Idempotent.

        ``sync=False`` writes without any fsync: the caller makes the object durable
        (:func:`make_durable`) before a commit refers to it.
        """
        sha = sha or sha256_bytes(data)
        path = self.path(sha)
        if not path.exists():
            write_atomic(path, data, sync=sync, replace=False)
        return sha

    def put_parts(self, parts: "Sequence[bytes | memoryview]", *, sync: bool = True,
                  behind: bool = False) -> tuple[str, int]:
        """Store the concatenation of ``parts`` without joining them in memory: hashed part by part,
        then written unless the object exists.  Returns (sha256, size in bytes).

        ``behind=True`` (implies ``sync=False``): the writing is left to a background thread
        (:func:`write_behind`); the object exists once :func:`settle_background` has returned
        (the barrier calls it), and ``parts`` must not change until then.
        """
        digest = hashlib.sha256()
        size = 0
        for part in parts:
            digest.update(part)
            size += memoryview(part).nbytes
        sha = digest.hexdigest()
        path = self.path(sha)
        if not path.exists():
            if behind:
                write_behind(path, parts)
            else:
                write_atomic(path, list(parts), sync=sync, replace=False)
        return sha, size

    def spool(self) -> Spool:
        """A :class:`Spool`: stream bytes in and hash them in one pass, without holding them."""
        return Spool(self)

    def put_written(self, write: "Callable[[BinaryIO], None]", *, sync: bool = True) -> tuple[str, int]:
        """Store what ``write(fh)`` writes to a seekable file, without a copy in memory.

        The file is hashed once written (read back in chunks), fsynced (unless
        ``sync=False``, see :meth:`Spool.keep`) and renamed into place unless the
        object exists.  Returns (sha256, size in bytes).
        """
        with self.spool() as sp:
            assert sp._fh is not None
            write(sp._fh)
            sp._fh.close()
            sp._fh = None
            sha = sp.sha = sha256_file(sp.tmp)
            size = sp.size = sp.tmp.stat().st_size
            sp.keep(sync=sync)
        return sha, size

    def make_durable(self, shas: Iterable[str]) -> int:
        """:func:`make_durable` for the objects ``shas`` (empty and missing ones skipped)."""
        return make_durable(self.path(sha) for sha in shas if sha)

    def get(self, sha: str, *, verify: bool = True) -> bytes:
        """The bytes of object ``sha``, checked against their sha256.

        Raises :class:`ObjectCorrupted` when the file's content does not hash
        to ``sha`` and ``KeyError`` when there is no such object.  With
        ``verify=False`` the check is skipped: only for callers that do not
        parse or deserialise the bytes.
        """
        path = self.path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"object {sha} not found in {self.root}") from None
        if verify:
            found = sha256_bytes(data)
            if found != sha:
                raise ObjectCorrupted(sha, found, path)
        return data

    def check(self, sha: str) -> None:
        """Raise :class:`ObjectCorrupted` (or ``KeyError`` when missing) unless the file of
        ``sha`` hashes to ``sha``; reads the file in chunks without keeping it."""
        path = self.path(sha)
        try:
            found = sha256_file(path)
        except FileNotFoundError:
            raise KeyError(f"object {sha} not found in {self.root}") from None
        if found != sha:
            raise ObjectCorrupted(sha, found, path)

    def verify(self, sha: str) -> bool:
        """True when the file of ``sha`` exists and hashes to ``sha``."""
        try:
            self.check(sha)
        except (KeyError, ObjectCorrupted):
            return False
        return True

    def iter_files(self):
        """Every file under the store (objects and stray temporaries)."""
        if not self.root.exists():
            return
        for sub in self.root.iterdir():
            if sub.is_dir():
                yield from sub.iterdir()

    @staticmethod
    def sha_of_path(path: Path) -> str | None:
        """The sha an object file is named for, or None for a temporary/stray file."""
        name = path.parent.name + path.name
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
            return name
        return None
