"""Content-addressed object store: ``objects/ab/cdef...`` named by sha256.

Objects are written to a temporary file, fsynced, and renamed into place, so a
reader never sees a partial object and a crash leaves at worst a temporary or
an unregistered file that ``matlake gc`` removes.  An object is never modified.

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
from pathlib import Path

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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temp file + fsync + rename + dir fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise ValueError(f"object id: expected 64 lowercase hex characters, found {sha!r}")
        return self.root / sha[:2] / sha[2:]

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()

    def put(self, data: bytes, sha: str | None = None) -> str:
        """Store ``data``; returns its sha256.  Idempotent."""
        sha = sha or sha256_bytes(data)
        path = self.path(sha)
        if not path.exists():
            write_atomic(path, data)
        return sha

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
