"""Content-addressed object store: ``objects/ab/cdef...`` named by sha256.

Objects are written to a temporary file, fsynced, and renamed into place, so a
reader never sees a partial object and a crash leaves at worst a temporary or
an unregistered file that ``matlake gc`` removes.  An object is never modified.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

HASH_ALGO = "sha256:v1"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    def get(self, sha: str) -> bytes:
        path = self.path(sha)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"object {sha} not found in {self.root}") from None
        return data

    def verify(self, sha: str) -> bool:
        return sha256_bytes(self.get(sha)) == sha

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
