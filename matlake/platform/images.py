"""Lazy access to the lake's chunked array objects: micrographs, masks, scattering frames.

Reads go through :class:`matlake.arrays.ChunkedArray`: the chunk index is
checked against the ``*_index_sha256`` stored in the row and every chunk read
against the index, so a tile or a frame is verified without reading the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.arrays import ChunkedArray, ChunkedFormatError
from matlake.platform.errors import LakeError
from matlake.platform.objects import ObjectCorrupted

if TYPE_CHECKING:
    from matlake.platform.lake import Lake


@dataclass(frozen=True)
class ChunkedRef:
    """A chunked array object in the store: its sha256, size in bytes and index sha256."""

    sha256: str
    size: int
    index_sha256: str
    media_type: str = "application/vnd.matlake.chunked-array"


def put_chunked(lake: "Lake", array: Any, chunks: tuple[int, ...] | None = None, codec: str = "raw") -> ChunkedRef:
    """Write ``array`` into the object store as a chunked object (not yet registered:
    the commit that names it registers it, e.g. ``ObjectSpec.stored(ref)``)."""
    from matlake.platform.ingestion import _put_chunked

    sha, size, index_sha = _put_chunked(lake.objects, array, chunks, codec, sync=True)
    return ChunkedRef(sha, size, index_sha)


def open_chunked(lake: "Lake", sha256: str, index_sha256: str) -> ChunkedArray:
    """The lazy array of object ``sha256``; its index must hash to ``index_sha256``."""
    path = lake.objects.path(sha256)
    if not path.exists():
        raise LakeError(f"object {sha256} is missing from {lake.objects.root}")
    try:
        return ChunkedArray(path, index_sha256, name=f"object {sha256}")
    except ChunkedFormatError as exc:
        raise ObjectCorrupted(sha256, str(exc), path) from exc


class FrameView:
    """One frame (leading index) of a chunked array, sliced lazily like a 2D/3D array."""

    def __init__(self, array: ChunkedArray, frame: int) -> None:
        self.base, self.frame = array, frame
        self.shape = array.shape[1:]
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return self.base[(self.frame, *key)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.base[self.frame]
        return arr.astype(dtype) if dtype is not None else arr

    @property
    def bytes_read(self) -> int:
        return self.base.bytes_read


@dataclass
class LazyImage:
    """A micrograph (or mask) row with its pixels read lazily, tile by tile.

    ``array[y0:y1, x0:x1]`` reads only the chunks it touches; ``np.asarray(img)``
    reads the frame.  ``pixel_size`` is (y, x) in ``pixel_unit`` as the file gave
    it (None when uncalibrated); ``pixel_size_nm`` the same in nm.
    """

    record_id: str
    array: FrameView
    pixel_size: tuple[float | None, float | None]
    pixel_unit: tuple[str | None, str | None]
    pixel_size_nm: tuple[float | None, float | None]
    row: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.array[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.array.__array__(dtype)

    def to_dask(self):
        return self.array.base.to_dask()[self.array.frame]


def _row(lake: "Lake", table: str, record_id: str, as_of: int | str | None) -> dict[str, Any]:
    res = lake.sql(f"select * from {table} where record_id = ?", as_of, [record_id])
    rows = res.arrow().to_pylist()
    if not rows:
        raise LakeError(f"no {table} record with record_id {record_id!r}")
    return rows[0]


def image(lake: "Lake", record_id: str, as_of: int | str | None = None) -> LazyImage:
    """The micrograph (``micrographs`` row) or mask (``segmentations`` row) ``record_id``, lazily."""
    try:
        row = _row(lake, "micrographs", record_id, as_of)
        arr = open_chunked(lake, row["array_sha256"], row["array_index_sha256"])
        return LazyImage(record_id, FrameView(arr, int(row["frame_index"])),
                         (row["pixel_size_y"], row["pixel_size_x"]), (row["pixel_unit_y"], row["pixel_unit_x"]),
                         (row["pixel_size_nm_y"], row["pixel_size_nm_x"]), row)
    except LakeError as first:
        try:
            row = _row(lake, "segmentations", record_id, as_of)
        except LakeError:
            raise first from None
    arr = open_chunked(lake, row["array_sha256"], row["array_index_sha256"])
    img = _row(lake, "micrographs", row["image_id"], as_of)
    view = FrameView(arr, 0) if arr.ndim == 3 else _Whole(arr)
    return LazyImage(record_id, view, (img["pixel_size_y"], img["pixel_size_x"]),
                     (img["pixel_unit_y"], img["pixel_unit_x"]), (img["pixel_size_nm_y"], img["pixel_size_nm_x"]), row)


class _Whole(FrameView):
    """A 2D chunked array seen through the :class:`FrameView` surface."""

    def __init__(self, array: ChunkedArray) -> None:  # noqa: D107 - no frame axis
        self.base, self.frame = array, None
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.base[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.base.read()
        return arr.astype(dtype) if dtype is not None else arr


def series(lake: "Lake", series_id: str, as_of: int | str | None = None) -> dict[str, Any]:
    """The ``scattering_series`` row ``series_id`` as a dict."""
    return _row(lake, "scattering_series", series_id, as_of)


def frames(lake: "Lake", series_id: str, t0: int | None = None, t1: int | None = None,
           as_of: int | str | None = None) -> np.ndarray:
    """Frames ``t0:t1`` of a scattering series (only those frames' chunks are read)."""
    row = series(lake, series_id, as_of)
    with open_chunked(lake, row["frames_sha256"], row["frames_index_sha256"]) as arr:
        return arr[slice(t0, t1)]


def series_mask(lake: "Lake", series_id: str, as_of: int | str | None = None) -> np.ndarray | None:
    """The valid-pixel mask of a series (1 = valid), or None when it has none."""
    row = series(lake, series_id, as_of)
    if not row.get("mask_sha256"):
        return None
    with open_chunked(lake, row["mask_sha256"], row["mask_index_sha256"]) as arr:
        return arr.read()
