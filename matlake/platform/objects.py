"""Content-addressed object store: ``objects/ab/cdef...`` named by sha256.

Objects are written to a temporary file and then given their name (a hard link,
see :func:`publish`, which never replaces an existing object), so a reader never
sees a partial object and a crash leaves at worst a temporary or an
unregistered file that ``matlake gc`` removes.  An object is never modified.
An object is durable once its file and its folder are fsynced:
:meth:`ObjectStore.put` does both per object by default; ingest passes
``sync=False`` (no fsync at all) and makes everything a batch wrote durable in
one barrier (:func:`make_durable`: the objects and the commit's Parquet files,
fsynced together) right before the catalog transaction that registers them.
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
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
        elif sum(memoryview(p).nbytes for p in parts) >= WRITEBACK_BYTES:
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


WRITEBACK_BYTES = 1 << 20  # unsynced files this large start their write-back at once (start_writeback)
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

    Only a head start: a large object's write-back then overlaps the parsing that
    follows, and the barrier (:func:`make_durable`) has less left to wait for.  It
    guarantees nothing and its errors are ignored: the barrier's fsync reports them.
    """
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


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
        if sync:
            fsync_path(self.tmp)
        elif self.size >= WRITEBACK_BYTES:
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

    def put_parts(self, parts: "Sequence[bytes | memoryview]", *, sync: bool = True) -> tuple[str, int]:
        """Store the concatenation of ``parts`` without joining them in memory: hashed part by part,
        then written unless the object exists.  Returns (sha256, size in bytes)."""
        digest = hashlib.sha256()
        size = 0
        for part in parts:
            digest.update(part)
            size += memoryview(part).nbytes
        sha = digest.hexdigest()
        path = self.path(sha)
        if not path.exists():
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
