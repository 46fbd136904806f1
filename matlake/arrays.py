"""A single-file chunked array format for content-addressed objects.

Micrographs, movies and scattering series are too large to decode whole
whenever one tile or frame is needed, and the lake's objects are single
files named by their sha256.  This format keeps an n-dimensional array as
independently stored chunks in one file::

    b"MLCHUNK1"  chunk bytes ...  index (JSON)  index length (uint64 LE)  b"MLCHUNK1"

The index lists the shape, dtype, chunk shape, codec and, per chunk (in C
order of the chunk grid), its offset, stored length and sha256.  The sha256
of the index bytes is recorded next to the object's id (e.g. in the
``array_index_sha256`` column), so a reader verifies the index against the
catalog and each chunk against the index: a tile is read and verified
without reading the rest of the object (a Merkle tree of depth two).  The
object's own sha256 still covers every byte; ``ObjectStore.get`` and
``matlake doctor --deep`` check that.

Codecs: ``raw`` (default: micrograph noise compresses poorly and raw chunks
cost nothing to decode) and ``zlib`` (standard library, for masks and
label maps, which compress well).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC = b"MLCHUNK1"
FORMAT = "matlake-chunked/1"
MEDIA_TYPE = "application/vnd.matlake.chunked-array"
CODECS = ("raw", "zlib")
DEFAULT_TILE = 512  # pixels per side of a default chunk of the last two axes
_FOOTER = 16


class ChunkedFormatError(ValueError):
    """The bytes are not a valid chunked array, or do not match the hashes that name them."""


@dataclass(frozen=True)
class ChunkedInfo:
    """What :func:`write_chunked` wrote: the index's sha256 and the array's layout."""

    index_sha256: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    codec: str
    n_chunks: int


def default_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One chunk per leading index (frame, slice) and tiles of the last two axes."""
    if len(shape) == 0:
        return ()
    if len(shape) == 1:
        return (max(1, min(shape[0], 1 << 20)),)
    lead = (1,) * (len(shape) - 2)
    return lead + tuple(max(1, min(n, DEFAULT_TILE)) for n in shape[-2:])


def _check_chunks(shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> tuple[int, ...]:
    if chunks is None:
        return default_chunks(shape)
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != len(shape) or any(c < 1 for c in chunks):
        raise ValueError(f"chunks {chunks} must give a positive size for each of the {len(shape)} axes of shape {shape}")
    return tuple(max(1, min(c, n)) if n else 1 for c, n in zip(chunks, shape))


def _grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(n / c)) if n else 0 for n, c in zip(shape, chunks))


def _encode(block: bytes, codec: str) -> bytes:
    return zlib.compress(block, 1) if codec == "zlib" else block


def write_chunked(fh: BinaryIO, array: Any, chunks: tuple[int, ...] | None = None, codec: str = "raw") -> ChunkedInfo:
    """Write ``array`` (anything numpy can slice: an ndarray, a memory map) to ``fh``.

    Chunks are read from ``array`` one at a time, so a memory-mapped source is
    never loaded whole.  Byte order is kept as the dtype says (``dtype.str``).
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
    dtype = np.dtype(array.dtype)
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"only plain numeric arrays can be chunked; found dtype {dtype}")
    shape = tuple(int(n) for n in array.shape)
    chunks = _check_chunks(shape, chunks)
    grid = _grid(shape, chunks)
    fh.write(MAGIC)
    offset = len(MAGIC)
    entries: list[list[Any]] = []
    for idx in itertools.product(*(range(g) for g in grid)):
        sl = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape))
        block = np.ascontiguousarray(array[sl] if sl else array).tobytes()
        stored = _encode(block, codec)
        fh.write(stored)
        entries.append([offset, len(stored), hashlib.sha256(stored).hexdigest()])
        offset += len(stored)
    index = json.dumps({"format": FORMAT, "shape": list(shape), "dtype": dtype.str, "chunks": list(chunks),
                        "codec": codec, "order": "C", "entries": entries},
                       separators=(",", ":")).encode()
    fh.write(index)
    fh.write(len(index).to_bytes(8, "little") + MAGIC)
    return ChunkedInfo(hashlib.sha256(index).hexdigest(), shape, dtype.str, chunks, codec, len(entries))


def encode_chunked(array: Any, chunks: tuple[int, ...] | None = None, codec: str = "raw") -> tuple[bytes, ChunkedInfo]:
    """The chunked bytes of ``array`` in memory (for small arrays and parsers without a sink)."""
    buf = io.BytesIO()
    info = write_chunked(buf, array, chunks, codec)
    return buf.getvalue(), info


def is_chunked(head: bytes) -> bool:
    return head[:8] == MAGIC


class _Source:
    """Positional reads from a path, a file object or bytes, counting the bytes read."""

    def __init__(self, source: str | os.PathLike | bytes | memoryview | BinaryIO) -> None:
        self._fd: int | None = None
        self._buf: memoryview | None = None
        self._fh: BinaryIO | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buf = memoryview(source)
            self.size = len(self._buf)
        elif isinstance(source, (str, os.PathLike)):
            self._fd = os.open(os.fspath(source), os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size
        else:
            self._fh = source
            self.size = source.seek(0, os.SEEK_END)
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ChunkedFormatError(f"chunk at offset {offset} of {length} bytes lies outside the {self.size}-byte object")
        self.bytes_read += length
        if self._buf is not None:
            return bytes(self._buf[offset:offset + length])
        if self._fd is not None:
            data = os.pread(self._fd, length, offset)
        else:
            assert self._fh is not None
            self._fh.seek(offset)
            data = self._fh.read(length)
        if len(data) != length:
            raise ChunkedFormatError(f"short read: expected {length} bytes at offset {offset}, found {len(data)}")
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _normalize_key(key: Any, shape: tuple[int, ...]) -> tuple[list[slice], list[bool]]:
    """Basic numpy indexing (ints, slices, Ellipsis) → one slice per axis and which axes to drop."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an array of {len(shape)} dimensions")
    key = key + (slice(None),) * (len(shape) - len(key))
    slices: list[slice] = []
    drop: list[bool] = []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
            slices.append(slice(i, i + 1, 1))
            drop.append(True)
        elif isinstance(k, slice):
            slices.append(slice(*k.indices(n)))
            drop.append(False)
        else:
            raise TypeError(f"chunked arrays take ints, slices and Ellipsis; found {type(k).__name__}")
    return slices, drop


class ChunkedArray:
    """A lazy, read-only view of a chunked array object.

    ``index_sha256`` (from the catalog row) is checked against the index when
    the array is opened; every chunk read is checked against the sha256 the
    index lists, so nothing is decoded unverified.  ``bytes_read`` counts the
    bytes read from the object so far (index included).
    """

    def __init__(self, source: str | os.PathLike | bytes | memoryview | BinaryIO,
                 index_sha256: str | None = None, *, name: str = "") -> None:
        self.name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "chunked array")
        self._src = _Source(source)
        try:
            self._open(index_sha256)
        except BaseException:
            self._src.close()
            raise

    def _open(self, index_sha256: str | None) -> None:
        src = self._src
        if src.size < len(MAGIC) + _FOOTER or src.read(0, len(MAGIC)) != MAGIC:
            raise ChunkedFormatError(f"{self.name}: not a matlake chunked array (bad magic or too short)")
        footer = src.read(src.size - _FOOTER, _FOOTER)
        if footer[8:] != MAGIC:
            raise ChunkedFormatError(f"{self.name}: truncated chunked array (footer missing)")
        n = int.from_bytes(footer[:8], "little")
        index = src.read(src.size - _FOOTER - n, n)
        found = hashlib.sha256(index).hexdigest()
        if index_sha256 is not None and found != index_sha256:
            raise ChunkedFormatError(f"{self.name}: index sha256 mismatch: expected {index_sha256}, found {found}")
        self.index_sha256 = found
        meta = json.loads(index)
        if meta.get("format") != FORMAT:
            raise ChunkedFormatError(f"{self.name}: expected format {FORMAT}, found {meta.get('format')!r}")
        self.shape: tuple[int, ...] = tuple(meta["shape"])
        self.dtype = np.dtype(meta["dtype"])
        self.chunks: tuple[int, ...] = tuple(meta["chunks"])
        self.codec: str = meta["codec"]
        self._grid = _grid(self.shape, self.chunks)
        self._entries: list[list[Any]] = meta["entries"]
        if len(self._entries) != math.prod(self._grid):
            raise ChunkedFormatError(f"{self.name}: index lists {len(self._entries)} chunks, the grid needs {math.prod(self._grid)}")

    # --- numpy-like surface
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def bytes_read(self) -> int:
        return self._src.bytes_read

    @property
    def object_size(self) -> int:
        return self._src.size

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ChunkedArray(shape={self.shape}, dtype={self.dtype}, chunks={self.chunks}, codec={self.codec})"

    def _chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        flat = int(np.ravel_multi_index(idx, self._grid)) if idx else 0
        offset, length, sha = self._entries[flat]
        stored = self._src.read(offset, length)
        found = hashlib.sha256(stored).hexdigest()
        if found != sha:
            raise ChunkedFormatError(f"{self.name}: chunk {idx} is corrupted: expected sha256 {sha}, found {found}")
        raw = zlib.decompress(stored) if self.codec == "zlib" else stored
        cshape = tuple(min(c, n - i * c) for i, c, n in zip(idx, self.chunks, self.shape))
        return np.frombuffer(raw, dtype=self.dtype).reshape(cshape)

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, drop = _normalize_key(key, self.shape)
        # the contiguous span each slice covers (a stepped slice reads its span, then steps)
        spans = []
        for s in slices:
            if s.step > 0:
                lo, hi = s.start, max(s.start, s.stop)
            else:
                lo, hi = (s.stop + 1, s.start + 1) if s.stop < s.start else (s.start, s.start)
            spans.append((lo, hi))
        out = np.empty(tuple(hi - lo for lo, hi in spans), dtype=self.dtype)
        if out.size:
            ranges = [range(lo // c, (hi - 1) // c + 1) for (lo, hi), c in zip(spans, self.chunks)]
            for idx in itertools.product(*ranges):
                block = self._chunk(idx)
                src, dst = [], []
                for (lo, hi), i, c in zip(spans, idx, self.chunks):
                    c0 = i * c
                    a, b = max(lo, c0), min(hi, c0 + c)
                    src.append(slice(a - c0, b - c0))
                    dst.append(slice(a - lo, b - lo))
                out[tuple(dst)] = block[tuple(src)]
        if any(s.step != 1 for s in slices):
            # the span read holds every element; a negative step starts from its last one
            out = out[tuple(slice(None, None, s.step) for s in slices)]
        return out[tuple(0 if d else slice(None) for d in drop)] if any(drop) else out

    def read(self) -> np.ndarray:
        """The whole array (every chunk read and verified)."""
        return self[...] if self.ndim else np.frombuffer(self._chunk(()), self.dtype).reshape(())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.read()
        return arr.astype(dtype) if dtype is not None else arr

    def to_dask(self):
        """A dask array over the same chunks (reads stay lazy and verified)."""
        import dask.array as da

        return da.from_array(self, chunks=self.chunks, asarray=True, fancy=False, lock=False)

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> "ChunkedArray":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._src.close()
        except Exception:  # noqa: BLE001
            pass


def open_chunked(path: str | Path, index_sha256: str | None = None, name: str = "") -> ChunkedArray:
    return ChunkedArray(path, index_sha256, name=name)
