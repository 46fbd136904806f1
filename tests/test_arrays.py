"""The chunked array format (matlake.arrays) and lazy image/frame access through a lake."""

from __future__ import annotations

import io

import numpy as np
import pytest

from matlake.arrays import ChunkedArray, ChunkedFormatError, encode_chunked, write_chunked
from matlake.ingest.base import ParseContext

KEYS = [(slice(None),), (0,), (-1, slice(3, 20), slice(None, None, 3)), (Ellipsis, 2),
        (slice(None, None, -2),), (slice(4, 1, -1), 5), (slice(5, 5),), (1, -3, slice(2, 40, 7))]


@pytest.mark.parametrize("codec", ["raw", "zlib"])
@pytest.mark.parametrize("shape,chunks", [((5, 37, 41), (2, 16, 10)), ((100,), None), ((3, 70, 90), None),
                                          ((7, 9), (3, 4)), ((4, 6, 8, 3), (1, 4, 4, 3))])
def test_roundtrip_and_slicing_match_numpy(shape, chunks, codec):
    rng = np.random.default_rng(1)
    for dtype in (">i4", "<f8", "u1", "<i2"):
        a = (rng.normal(size=shape) * 100).astype(dtype)
        data, info = encode_chunked(a, chunks, codec)
        arr = ChunkedArray(data, info.index_sha256)
        assert arr.shape == a.shape and arr.dtype == a.dtype
        np.testing.assert_array_equal(np.asarray(arr), a)
        for key in KEYS:
            try:
                ref = a[key]
            except IndexError:
                continue
            got = arr[key]
            assert got.shape == ref.shape, key
            np.testing.assert_array_equal(got, ref)


def test_a_tile_reads_only_its_chunks():
    a = np.arange(3 * 2048 * 2048, dtype=np.uint16).reshape(3, 2048, 2048)
    data, info = encode_chunked(a, (1, 256, 256))
    arr = ChunkedArray(data, info.index_sha256)
    tile = arr[1, 300:400, 600:700]
    np.testing.assert_array_equal(tile, a[1, 300:400, 600:700])
    # one 256x256 chunk of uint16 plus the index, out of 24 MiB
    assert arr.bytes_read < 256 * 256 * 2 + 100_000
    assert arr.bytes_read < len(data) / 50


def test_corruption_is_detected_per_chunk_and_in_the_index():
    a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    data, info = encode_chunked(a, (32, 32))
    bad = bytearray(data)
    bad[20] ^= 0xFF  # inside the first chunk
    arr = ChunkedArray(bytes(bad), info.index_sha256)
    np.testing.assert_array_equal(arr[40:, 40:], a[40:, 40:])  # other chunks still verify
    with pytest.raises(ChunkedFormatError, match="chunk .* corrupted"):
        arr[0:2, 0:2]
    with pytest.raises(ChunkedFormatError, match="index sha256 mismatch"):
        ChunkedArray(data, "0" * 64)
    with pytest.raises(ChunkedFormatError, match="truncated|bad magic"):
        ChunkedArray(data[:-5])


def test_writer_reads_a_memory_map_chunk_by_chunk(tmp_path):
    path = tmp_path / "big.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=(2, 600, 500))
    mm[:] = np.arange(mm.size, dtype=np.int64).reshape(mm.shape) % 3000 - 1500
    mm.flush()
    src = np.load(path, mmap_mode="r")
    buf = io.BytesIO()
    info = write_chunked(buf, src)
    assert info.chunks == (1, 512, 500)
    np.testing.assert_array_equal(ChunkedArray(buf.getvalue(), info.index_sha256).read(), src)
    assert ChunkedArray(buf.getvalue()).to_dask()[1, 510:520].compute().shape == (10, 500)


def test_parse_context_without_a_platform_sink_keeps_bytes():
    ctx = ParseContext(source_sha256="0" * 64, filename="x", parser="p")
    a = np.ones((3, 4), np.uint8)
    sha, index_sha = ctx.put_chunked(a)
    arr = ChunkedArray(ctx.objects[sha], index_sha)
    np.testing.assert_array_equal(arr.read(), a)


def _commit_image(lake, pixels: np.ndarray, pixel_nm: float = 2.5):
    """Commit a hand-made micrographs row per frame (what a parser would return)."""
    from matlake.platform.derivation import ActivitySpec, ObjectSpec, commit_activities

    ref = lake.put_chunked(pixels, (1, 64, 64))
    rows = [dict(record_id=f"img{i:029d}", technique="TEM", height=pixels.shape[1], width=pixels.shape[2],
                 n_channels=1, dtype=str(pixels.dtype), frame_index=i, n_frames=pixels.shape[0],
                 stack_axis="time", pixel_size_x=pixel_nm, pixel_unit_x="nm", pixel_size_y=pixel_nm,
                 pixel_unit_y="nm", pixel_size_nm_x=pixel_nm, pixel_size_nm_y=pixel_nm,
                 calibration_source="test", array_sha256=ref.sha256, array_index_sha256=ref.index_sha256,
                 array_shape=list(pixels.shape), chunk_shape=[1, 64, 64], file_format="generated")
            for i in range(pixels.shape[0])]
    commit_activities(lake, kind="generate", message="test image",
                      activities=[ActivitySpec(name="test-images", version="1", parameters={},
                                               generated_entities=[("object", ref.sha256)],
                                               rows={"micrographs": rows})],
                      objects=[ObjectSpec.stored(ref, media_type=ref.media_type, name="stack")])
    return ref, rows


def test_lake_image_is_lazy_calibrated_and_checked(sqlite_lake):
    from matlake.platform.objects import ObjectCorrupted
    from matlake.platform.operations import doctor

    lake = sqlite_lake
    pixels = np.random.default_rng(0).integers(0, 4000, size=(3, 256, 192)).astype(np.uint16)
    ref, rows = _commit_image(lake, pixels)
    img = lake.image(rows[2]["record_id"])
    assert img.shape == (256, 192) and img.pixel_size == (2.5, 2.5) and img.pixel_unit == ("nm", "nm")
    np.testing.assert_array_equal(img[10:20, 100:150], pixels[2, 10:20, 100:150])
    assert img.array.bytes_read < 64 * 64 * 2 * 2 + 50_000
    np.testing.assert_array_equal(np.asarray(img), pixels[2])
    assert doctor(lake, deep=True).ok
    with pytest.raises(Exception, match="no micrographs record"):
        lake.image("nope")
    # a flipped byte in a chunk is caught when that chunk is read
    path = lake.objects.path(ref.sha256)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkedFormatError):
        lake.image(rows[0]["record_id"])[0:5, 0:5]


def test_lake_image_rejects_a_wrong_index_hash(sqlite_lake):
    from matlake.platform.objects import ObjectCorrupted

    lake = sqlite_lake
    ref = lake.put_chunked(np.zeros((4, 4), np.uint8))
    with pytest.raises(ObjectCorrupted):
        lake.chunked(ref.sha256, "f" * 64)
