"""Content-addressed object store: ``objects/ab/cdef...`` named by sha256.

Objects are written to a temporary file, fsynced, and renamed into place, so a
reader never sees a partial object and a crash leaves at worst a temporary or
an unregistered file that ``matlake gc`` removes.  An object is never modified.
The rename is durable once the object's folder is fsynced: :meth:`ObjectStore.put`
does it per object by default; ingest passes ``sync_dir=False`` and fsyncs each
folder its batch wrote into once, before the commit that registers the objects
(:meth:`ObjectStore.sync_dirs`).  Large sources are streamed in
(:meth:`ObjectStore.spool`): copied and hashed in one pass, never held whole.

Objects may sit on shared team storage that others can write to, so a read
checks the bytes against the sha256 they are named for (:meth:`ObjectStore.get`
raises :class:`ObjectCorrupted` on a mismatch) before anything parses or
deserialises them.  ``get(sha, verify=False)`` skips the check; use it only
where the bytes are hashed or copied, never parsed.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

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


def write_atomic(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` durably: temp file + fsync + rename (+ dir fsync).

    With ``sync_dir=False`` the caller fsyncs ``path.parent`` itself before
    anything durable refers to ``path`` (one fsync for many files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_path(path.parent)


SYNC_THREADS = 32  # folder fsyncs issued at once by sync_dirs
SPOOL_DIR = "spool"  # temporaries of streamed objects; not an object shard (``sha_of_path`` is None: gc removes them)


class Spool:
    """A source being copied into the store while it is hashed (see :meth:`ObjectStore.spool`).

    ``write`` chunks, then ``keep()`` (fsync + rename into place unless the
    object exists: returns the path holding exactly the hashed bytes) or
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

    def keep(self, *, sync_dir: bool = True) -> bool:
        """Move the bytes into the store as object ``sha``; True when this call created it.

        An object that already exists is not rewritten: the spool stays where it
        is (``path``) for the caller to read, until :meth:`discard`.
        """
        sha = self.close()
        target = self.store.path(sha)
        if target.exists():
            self.path = self.tmp
            return False
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, target)
        if sync_dir:
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

    def put(self, data: bytes, sha: str | None = None, *, sync_dir: bool = True) -> str:
        """Store ``data``; returns its sha256.  Idempotent.

        ``sync_dir=False`` leaves the fsync of the object's folder to the caller
        (:meth:`sync_dirs`, before a commit refers to the object).
        """
        sha = sha or sha256_bytes(data)
        path = self.path(sha)
        if not path.exists():
            write_atomic(path, data, sync_dir=sync_dir)
        return sha

    def spool(self) -> Spool:
        """A :class:`Spool`: stream bytes in and hash them in one pass, without holding them."""
        return Spool(self)

    def put_written(self, write: "Callable[[BinaryIO], None]", *, sync_dir: bool = True) -> tuple[str, int]:
        """Store what ``write(fh)`` writes to a seekable file, without a copy in memory.

        The file is hashed once written (read back in chunks), fsynced and renamed
        into place unless the object exists.  Returns (sha256, size in bytes).
        """
        with self.spool() as sp:
            assert sp._fh is not None
            write(sp._fh)
            sp._fh.close()
            sp._fh = None
            sha = sp.sha = sha256_file(sp.tmp)
            size = sp.tmp.stat().st_size
            sp.keep(sync_dir=sync_dir)
        return sha, size

    def sync_dirs(self, shas: Iterable[str]) -> int:
        """fsync the folder of each object in ``shas`` once; returns how many folders were synced.

        Makes the renames of objects written with ``sync_dir=False`` durable.  An
        object that is missing here has nothing to make durable and is skipped.
        """
        folders = sorted(f for f in {self.path(sha).parent for sha in shas if sha} if f.exists())
        if len(folders) <= 1:
            for folder in folders:
                fsync_path(folder)
            return len(folders)
        # Issued together (fsync releases the GIL): a journaling filesystem commits them as one
        # transaction instead of one journal commit per folder, one after the other.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(SYNC_THREADS, len(folders))) as pool:
            list(pool.map(fsync_path, folders))
        return len(folders)

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
