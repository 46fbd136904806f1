"""Scattering-series readers (matlake.ingest.scattering): npz/npy key maps, HDF5/NeXus paths and TIFF stacks
into ``scattering_series``; frames read back bit for bit and lazily by frame; bad input as failed ledger rows."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile

from matlake.ingest import detect
from matlake.ingest.scattering import HC_EV_M
from tests.conftest import sample

SUBSET = ("imaging", "siemens_star_ptycho_subset.npz")  # shipped by the lead; see samples/SOURCES.md
CAL = {"pixel_size": "75e-6", "distance": "2.5", "energy": "8000"}


def _ingest(lake, path, **options):
    report = lake.ingest([path], kind="scattering", options=options, progress=False)
    assert len(report.outcomes) == 1
    return report.outcomes[0]


def _failed(lake, path, *words, **options):
    out = _ingest(lake, path, **options)
    assert out.status == "failed", (out.status, out.message)
    assert str(path) in out.message
    for w in words:
        assert w in out.message, (w, out.message)
    return out.message


def _row(lake, name):
    rows = lake.sql("select * from scattering_series where source_name = ?", None, [name]).arrow().to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_npz_subset_frames_bit_for_bit_lazy_by_frame_with_positions_and_probe(lake):
    path = sample(*SUBSET)
    out = _ingest(lake, path, positions="scan", positions_select="source_frames", probe="probe",
                  calibration="none", system="siemens star")
    assert out.status == "ok", out.message
    row = _row(lake, path.name)
    with np.load(path) as npz:
        data, scan, probe, rows = npz["data"], npz["scan"], npz["probe"], npz["source_frames"]
    assert (row["n_frames"], row["height"], row["width"], row["dtype"]) == (64, 128, 128, "uint16")
    assert row["pixel_size"] is None and row["q_per_pixel"] is None
    assert row["total_counts_mean"] == pytest.approx(data.reshape(64, -1).sum(axis=1).mean(), rel=1e-12)
    got = lake.frames(row["record_id"], 5, 9)
    assert got.dtype == data.dtype and np.array_equal(got, data[5:9])
    assert np.array_equal(lake.frames(row["record_id"]), data)
    # one frame touches one chunk: its bytes (plus the index), not the 2 MiB stack
    arr = lake.chunked(row["frames_sha256"], row["frames_index_sha256"])
    before = arr.bytes_read
    assert np.array_equal(arr[17], data[17])
    frame_bytes = 128 * 128 * 2
    assert frame_bytes <= arr.bytes_read - before < 1.5 * frame_bytes
    meta = json.loads(row["metadata_json"])
    assert "calibration=none" in meta["uncalibrated"]
    pos = meta["positions"]
    assert pos["unit"] == "px" and pos["shape"] == [64, 2]
    assert np.array_equal(lake.chunked(pos["sha256"], pos["index_sha256"]).read(), scan[rows])
    pr = meta["probe"]
    assert np.array_equal(lake.chunked(pr["sha256"], pr["index_sha256"]).read(), probe)


def test_missing_calibration_fails_naming_the_field(sqlite_lake):
    path = sample(*SUBSET)
    _failed(sqlite_lake, path, "field pixel_size", "expected a pixel size", "calibration=none", "found none")
    _failed(sqlite_lake, path, "field distance", "found none", pixel_size="75e-6")
    _failed(sqlite_lake, path, "field energy", "wavelength=METRES", "found none", pixel_size="75e-6", distance="2")
    _failed(sqlite_lake, path, "field positions", "one position per frame (64)", "516 positions",
            positions="scan", **CAL)
    _failed(sqlite_lake, path, "field positions (key nope)", "expected an existing key", "found no such key",
            positions="nope", **CAL)


def _nexus(path, frames, *, mask=None, energy_kev=8.0):
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames)
        det = f.create_group("/entry/instrument/detector")
        det.create_dataset("x_pixel_size", data=75.0).attrs["units"] = "um"
        det.create_dataset("distance", data=2500.0).attrs["units"] = "mm"
        det.create_dataset("beam_center_x", data=3.5).attrs["units"] = "pixel"
        det.create_dataset("beam_center_y", data=4.25)
        if mask is not None:
            det.create_dataset("pixel_mask", data=mask)
        f.create_dataset("/entry/instrument/beam/incident_energy", data=energy_kev).attrs["units"] = "keV"
        f.create_dataset("/entry/data/time", data=np.array([0.0, 0.5, 1.0]))
        f.create_dataset("/entry/data/bad_time", data=np.array([0.0, 0.5, 0.5]))


def test_nexus_defaults_calibration_units_mask_and_times(lake, tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.poisson(20.0, size=(3, 8, 10)).astype(np.uint32)
    bad = np.zeros((8, 10), dtype=np.int32)
    bad[2:4, 5:7] = 1  # NeXus pixel_mask: non-zero = bad pixel
    path = tmp_path / "run.nxs"
    _nexus(path, frames, mask=bad)
    out = _ingest(lake, path, times="/entry/data/time")
    assert out.status == "ok", out.message
    row = _row(lake, "run.nxs")
    assert row["file_format"] == "nexus" and row["source_locator"] == "/entry/data/data"
    assert row["pixel_size"] == pytest.approx(75e-6, rel=1e-12)
    assert row["distance"] == pytest.approx(2.5, rel=1e-12)
    assert row["energy"] == pytest.approx(8000.0, rel=1e-12)
    lam = HC_EV_M / 8000.0
    assert row["wavelength"] == pytest.approx(lam, rel=1e-12)
    assert lam == pytest.approx(1.5498e-10, rel=1e-4)  # 8 keV is 1.5498 Å
    assert row["q_per_pixel"] == pytest.approx(2 * np.pi * 75e-6 / (2.5 * lam), rel=1e-12)
    assert (row["beam_center_x"], row["beam_center_y"]) == (3.5, 4.25)
    assert row["times"] == [0.0, 0.5, 1.0]
    assert np.array_equal(lake.frames(row["record_id"], 1, 3), frames[1:3])
    mask = lake.chunked(row["mask_sha256"], row["mask_index_sha256"]).read()
    assert np.array_equal(mask, (bad == 0).astype(np.uint8))


def test_hdf5_bad_input_missing_path_time_axis_energy_conflict(sqlite_lake, tmp_path):
    frames = np.ones((3, 8, 10), dtype=np.uint16)
    path = tmp_path / "run.h5"
    _nexus(path, frames)
    _failed(sqlite_lake, path, "field frames (HDF5 path /entry/nope)", "expected an existing HDF5 path",
            "no such HDF5 path", "/entry/data/data", frames="/entry/nope")
    _failed(sqlite_lake, path, "field times", "strictly increasing", "t[1] = 0.5 then t[2] = 0.5",
            times="/entry/data/bad_time")
    _failed(sqlite_lake, path, "field times", "one time per frame (3)", "2 times", times="0,1")
    _failed(sqlite_lake, path, "field wavelength", "hc/E", wavelength="1e-10")
    # a group of 2D frames of different shapes
    grouped = tmp_path / "group.h5"
    with h5py.File(grouped, "w") as f:
        f.create_dataset("/frames/f0", data=np.ones((8, 10)))
        f.create_dataset("/frames/f1", data=np.ones((8, 9)))
    _failed(sqlite_lake, grouped, "field frames", "frames of one shape [8, 10]", "/frames/f1 of shape [8, 9]",
            frames="/frames", **CAL)


def test_counts_must_be_finite_and_non_negative(sqlite_lake, tmp_path):
    good = np.full((4, 6, 6), 3.0)
    neg = good.copy()
    neg[2, 1, 4] = -1.5
    nan = good.copy()
    nan[1, 0, 0] = np.nan
    np.savez(tmp_path / "neg.npz", data=neg)
    np.savez(tmp_path / "nan.npz", data=nan)
    _failed(sqlite_lake, tmp_path / "neg.npz", "field frames", "non-negative counts",
            "1 negative values in frame 2", "pixel (1, 4)", **CAL)
    _failed(sqlite_lake, tmp_path / "nan.npz", "field frames", "finite counts", "1 NaN/inf values in frame 1", **CAL)
    # frames listed key by key must share one shape
    np.savez(tmp_path / "keys.npz", a=np.ones((6, 6)), b=np.ones((6, 7)))
    _failed(sqlite_lake, tmp_path / "keys.npz", "field frames", "frames of one shape [6, 6]", "b of shape [6, 7]",
            frames="a,b", **CAL)
    np.savez(tmp_path / "times.npz", data=good, t=np.array([0.0, 2.0, 1.0, 3.0]))
    _failed(sqlite_lake, tmp_path / "times.npz", "field times", "strictly increasing", "t[1] = 2.0 then t[2] = 1.0",
            times="t", **CAL)
    out = _ingest(sqlite_lake, tmp_path / "times.npz", times="0,1,2,3", **CAL)
    assert out.status == "ok", out.message


def test_tiff_stack_and_npy_with_calibration_options(sqlite_lake, tmp_path):
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 500, size=(5, 12, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack")
    out = _ingest(sqlite_lake, tmp_path / "stack.tif", times="0,0.1,0.2,0.3,0.4", beam_center="8,6",
                  wavelength="1e-10", pixel_size="5.5e-05", distance="1.2")
    assert out.status == "ok", out.message
    row = _row(sqlite_lake, "stack.tif")
    assert row["file_format"] == "tiff" and row["n_frames"] == 5
    assert row["energy"] == pytest.approx(HC_EV_M / 1e-10, rel=1e-12)
    assert (row["beam_center_x"], row["beam_center_y"]) == (8.0, 6.0)
    assert np.array_equal(sqlite_lake.frames(row["record_id"]), frames)
    ragged = tmp_path / "ragged.tif"
    with tifffile.TiffWriter(ragged) as tw:
        tw.write(frames[0])
        tw.write(frames[1, :10])
    _failed(sqlite_lake, ragged, "field frames", "frames of one shape [12, 16]", "page 1 of shape [10, 16]", **CAL)
    np.save(tmp_path / "frames.npy", frames.astype(np.float32))
    out = _ingest(sqlite_lake, tmp_path / "frames.npy", **CAL)
    assert out.status == "ok", out.message
    assert np.array_equal(sqlite_lake.frames(_row(sqlite_lake, "frames.npy")["record_id"], 2, 3),
                          frames[2:3].astype(np.float32))


def test_detection_only_with_kind_scattering(tmp_path):
    npz = sample(*SUBSET).read_bytes()[:8192]
    h5 = b"\x89HDF\r\n\x1a\n" + b"\x00" * 100
    for head, name in ((npz, "x.npz"), (h5, "x.h5"), (b"\x93NUMPY\x01\x00", "x.npy")):
        found = detect(head, name)
        assert found is None or found.kind != "scattering"
        assert detect(head, name, kind="scattering").kind == "scattering"
    tif = b"II*\x00" + b"\x00" * 100
    assert detect(tif, "x.tif").kind == "image"
    assert detect(tif, "x.tif", kind="scattering").name == "scattering-tiff"


def test_truncated_or_corrupt_files_fail_cleanly(sqlite_lake, tmp_path):
    """Cut copies of an npz, an HDF5 file, a TIFF and an npy: each a failed row (or parsed), never an error."""
    frames = np.arange(3 * 8 * 10, dtype=np.uint16).reshape(3, 8, 10)
    np.savez(tmp_path / "a.npz", data=frames)
    _nexus(tmp_path / "a.h5", frames)
    tifffile.imwrite(tmp_path / "a.tif", frames, photometric="minisblack")
    np.save(tmp_path / "a.npy", frames)
    rng = np.random.default_rng(0)
    cuts = tmp_path / "cuts"
    cuts.mkdir()
    for name in ("a.npz", "a.h5", "a.tif", "a.npy"):
        raw = (tmp_path / name).read_bytes()
        for k, at in enumerate(sorted({8, len(raw) // 3, len(raw) // 2, len(raw) - 7})):
            (cuts / f"cut{k}_{name}").write_bytes(raw[:at])
        flipped = bytearray(raw)
        for i in rng.integers(8, len(raw), size=20):
            flipped[i] ^= 0xFF
        (cuts / f"flip_{name}").write_bytes(bytes(flipped))
    report = sqlite_lake.ingest([cuts], kind="scattering", options=CAL, progress=False)
    assert report.errors == 0, [o.message for o in report.outcomes if o.status == "error"]
    assert report.failed >= 12
    for o in report.outcomes:
        assert o.status in ("ok", "failed") and (o.status == "ok" or o.path in o.message)
