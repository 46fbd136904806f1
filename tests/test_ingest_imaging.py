"""Micrograph readers (matlake.ingest.imaging): calibration and pixels equal to tifffile, mrcfile, Pillow and
rosettasciio on real and written files; masks linked to their image; bad input as failed ledger rows."""

from __future__ import annotations

import io
import json
import struct
import sys

import numpy as np
import pytest
import tifffile

from matlake.ingest import detect
from matlake.ingest import imaging as im
from matlake.ingest.base import ParseContext, ParseError
from tests.conftest import sample


def _ingest(lake, path, **kw):
    report = lake.ingest([path], progress=False, **kw)
    assert len(report.outcomes) == 1
    return report.outcomes[0]


def _rows(lake, name):
    return lake.sql("select * from micrographs where source_name = ? order by frame_index", None, [name]).arrow() \
        .to_pylist()


def _failed(lake, path, *words, **kw):
    out = _ingest(lake, path, **kw)
    assert out.status == "failed", (out.status, out.message)
    assert str(path) in out.message
    for w in words:
        assert w in out.message, (w, out.message)
    return out.message


def _ctx(name="x.tif", **options):
    return ParseContext(source_sha256="0" * 64, filename=name, parser="image-tiff", options=options)


# --------------------------------------------------------------------------- TIFF calibration


def test_imagej_tiff_pixel_sizes_frame_interval_and_pixels_match_tifffile(sqlite_lake, tmp_path):
    movie = np.random.default_rng(1).integers(0, 65535, size=(4, 30, 40), dtype=np.uint16)
    path = tmp_path / "movie.tif"
    # non-square pixels: 0.25 x 0.5 µm, written as ImageJ writes 'micron'
    tifffile.imwrite(path, movie, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 1.5, "unit": "micron", "finterval": 0.0025, "axes": "TYX"})
    with tifffile.TiffFile(path) as tif:
        xres, yres = tif.pages.first.resolution
        ij = tif.imagej_metadata
    assert _ingest(sqlite_lake, path).status == "ok"
    rows = _rows(sqlite_lake, "movie.tif")
    assert [r["frame_index"] for r in rows] == [0, 1, 2, 3]
    r = rows[2]
    assert r["pixel_size_x"] == pytest.approx(1 / xres, rel=1e-12) and r["pixel_size_y"] == pytest.approx(1 / yres)
    assert r["pixel_unit_x"] == r["pixel_unit_y"] == ij["unit"] == "micron"
    assert r["pixel_size_nm_x"] == pytest.approx(250.0) and r["pixel_size_nm_y"] == pytest.approx(500.0)
    assert r["pixel_size_z"] == pytest.approx(ij["spacing"])
    assert r["frame_interval"] == pytest.approx(ij["finterval"]) and r["frame_time"] == pytest.approx(2 * 0.0025)
    assert (r["stack_axis"], r["calibration_source"], r["file_format"], r["n_frames"]) == ("time", "imagej",
                                                                                           "imagej-tiff", 4)
    assert r["intensity_max"] == float(movie[2].max()) and r["intensity_mean"] == pytest.approx(movie[2].mean())
    img = sqlite_lake.image(r["record_id"])
    assert img.pixel_size == (pytest.approx(0.5), pytest.approx(0.25)) and img.pixel_unit == ("micron", "micron")
    ref = tifffile.imread(path)
    got = np.asarray(img)
    assert got.dtype == ref.dtype and np.array_equal(got, ref[2])


def test_imagej_escaped_micro_sign_is_micrometres():
    cal = im.imagej_calibration({"unit": "\\u00B5m", "spacing": 2.0}, (10.0, 5.0))
    assert cal.sizes == {"x": (0.1, "µm"), "y": (0.2, "µm"), "z": (2.0, "µm")}
    assert cal.nm("x") == pytest.approx(100.0) and cal.nm("y") == pytest.approx(200.0)
    assert not im.imagej_calibration({"unit": "pixel"}, (1.0, 1.0))  # ImageJ's 'pixel' unit: uncalibrated


def test_ome_tiff_physical_sizes_and_units_per_axis(sqlite_lake, tmp_path):
    vol = np.random.default_rng(2).normal(size=(3, 16, 12)).astype(np.float32)
    path = tmp_path / "vol.ome.tif"
    tifffile.imwrite(path, vol, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.75,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 2.0, "PhysicalSizeZUnit": "µm"})
    with tifffile.TiffFile(path) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert _ingest(sqlite_lake, path).status == "ok"
    r = _rows(sqlite_lake, "vol.ome.tif")[1]
    assert (r["pixel_size_x"], r["pixel_unit_x"]) == (pixels["PhysicalSizeX"], pixels["PhysicalSizeXUnit"])
    assert (r["pixel_size_y"], r["pixel_unit_y"]) == (pixels["PhysicalSizeY"], pixels["PhysicalSizeYUnit"])
    assert (r["pixel_size_z"], r["pixel_unit_z"]) == (pixels["PhysicalSizeZ"], pixels["PhysicalSizeZUnit"])
    assert r["pixel_size_nm_y"] == pytest.approx(0.75)
    assert (r["stack_axis"], r["file_format"], r["dtype"]) == ("z", "ome-tiff", "float32")
    assert np.array_equal(np.asarray(sqlite_lake.image(r["record_id"])), vol[1])


def _fei_text(width_m: float, height_m: float) -> str:
    return ("[User]\r\nDate=03/14/2024\r\nTime=10:11:12 AM\r\n[System]\r\nSystemType=Helios G4\r\n"
            f"[Beam]\r\nHV=5000\r\n[Scan]\r\nPixelWidth={width_m}\r\nPixelHeight={height_m}\r\nDwelltime=3e-06\r\n"
            "[Detectors]\r\nName=TLD\r\nMode=SE\r\n")


def test_fei_and_zeiss_tiffs_read_vendor_pixel_size_voltage_and_detector(sqlite_lake, tmp_path):
    img = np.arange(20 * 24, dtype=np.uint8).reshape(20, 24)
    fei = tmp_path / "fei.tif"
    tifffile.imwrite(fei, img, extratags=[(34682, "s", 0, _fei_text(1.5e-9, 1.6e-9), True)])
    zeiss = tmp_path / "zeiss.tif"
    sem = "AP_PIXEL_SIZE\r\nPixel Size = 2.34 nm\r\nAP_ACTUALKV\r\nEHT = 3.00 kV\r\nDP_DETECTOR_CHANNEL\r\nSignal A = InLens\r\n"
    tifffile.imwrite(zeiss, img, extratags=[(34118, "s", 0, sem, True)])
    with tifffile.TiffFile(fei) as tif:
        scan = tif.fei_metadata["Scan"]
    with tifffile.TiffFile(zeiss) as tif:
        zpix = tif.sem_metadata["ap_pixel_size"]
    assert _ingest(sqlite_lake, fei).status == "ok" and _ingest(sqlite_lake, zeiss).status == "ok"
    f = _rows(sqlite_lake, "fei.tif")[0]
    assert (f["pixel_size_x"], f["pixel_size_y"], f["pixel_unit_x"]) == (scan["PixelWidth"], scan["PixelHeight"], "m")
    assert f["pixel_size_nm_x"] == pytest.approx(1.5) and f["pixel_size_nm_y"] == pytest.approx(1.6)
    assert (f["voltage"], f["detector"], f["instrument"], f["technique"]) == (5000.0, "TLD", "Helios G4", "SEM")
    assert f["calibration_source"] == "fei:Scan" and str(f["acquired_at"]).startswith("2024-03-14 10:11:12")
    z = _rows(sqlite_lake, "zeiss.tif")[0]
    assert (z["pixel_size_x"], z["pixel_unit_x"]) == (zpix[1], zpix[2]) == (2.34, "nm")
    assert (z["voltage"], z["detector"]) == (3000.0, "InLens")


def test_sis_and_resolution_tag_calibrations():
    cal = im.sis_calibration({"pixelsizex": 2.5e-9, "pixelsizey": 3e-9, "magnification": 1e5})
    assert cal.nm("x") == pytest.approx(2.5) and cal.nm("y") == pytest.approx(3.0) and cal.source == "olympus-sis"
    cm = im.resolution_calibration((1e5, 2e5), 3)  # pixels per cm
    assert cm.nm("x") == pytest.approx(100.0) and cm.nm("y") == pytest.approx(50.0)
    assert not im.resolution_calibration((1.0, 1.0), 1)  # ResolutionUnit NONE: no calibration


def test_resolution_tags_are_the_last_resort(sqlite_lake, tmp_path):
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), resolution=(2e4, 4e4), resolutionunit="CENTIMETER")
    assert _ingest(sqlite_lake, path).status == "ok"
    r = _rows(sqlite_lake, "res.tif")[0]
    assert (r["pixel_size_x"], r["pixel_unit_x"], r["calibration_source"]) == (5e-5, "cm", "tiff-resolution")
    assert r["pixel_size_nm_x"] == pytest.approx(500.0) and r["pixel_size_nm_y"] == pytest.approx(250.0)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "uint32", "float32", "float64", "rgb"])
def test_bit_depths_signed_float_and_rgb_are_read_exactly(sqlite_lake, tmp_path, dtype):
    rng = np.random.default_rng(3)
    if dtype == "rgb":
        arr = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    elif dtype.startswith("float"):
        arr = rng.normal(scale=1e3, size=(10, 12)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=(10, 12), dtype=dtype, endpoint=True)
    path = tmp_path / f"{dtype}.tif"
    tifffile.imwrite(path, arr, photometric="rgb" if dtype == "rgb" else "minisblack")
    out = _ingest(sqlite_lake, path, options={"pixel_size": 0.5, "pixel_unit": "nm"})
    assert out.status == "ok", out.message
    r = _rows(sqlite_lake, path.name)[0]
    got = np.asarray(sqlite_lake.image(r["record_id"]))
    ref = tifffile.imread(path)
    assert got.dtype == ref.dtype and got.shape == ref.shape and got.tobytes() == ref.tobytes()
    assert r["n_channels"] == (3 if dtype == "rgb" else 1) and r["calibration_source"] == "option"
    assert r["intensity_min"] == float(ref.min())


# --------------------------------------------------------------------------- MRC, PNG, rosettasciio


def test_mrc_volume_voxel_size_and_slices_equal_mrcfile(lake, tmp_path):
    import mrcfile

    path = sample("imaging", "EMD-3197.map")
    with mrcfile.open(path, permissive=True) as m:
        ref, voxel = m.data.copy(), m.voxel_size
    assert not mrcfile.validate(str(path), print_file=io.StringIO())  # old header, opened permissively
    out = _ingest(lake, path)
    assert out.status == "ok", out.message
    rows = _rows(lake, path.name)
    assert len(rows) == 20 and {r["n_frames"] for r in rows} == {20}
    r = rows[7]
    assert (r["pixel_size_x"], r["pixel_size_y"], r["pixel_size_z"]) == (
        pytest.approx(float(voxel.x)), pytest.approx(float(voxel.y)), pytest.approx(float(voxel.z)))
    assert r["pixel_size_x"] == pytest.approx(11.4) and r["pixel_unit_x"] == "Å" and r["pixel_size_nm_x"] == pytest.approx(1.14)
    assert (r["stack_axis"], r["technique"], r["file_format"], r["dtype"]) == ("z", "cryo-EM", "mrc", "float32")
    meta = json.loads(r["metadata_json"])
    assert meta["validate"]["valid"] is False and meta["header"]["nx"] == 20 and meta["ispg"] == 1
    img = lake.image(r["record_id"])
    assert np.array_equal(np.asarray(img), ref[7]) and img.pixel_size == (pytest.approx(11.4), pytest.approx(11.4))


def test_png_needs_a_pixel_size_option_and_reads_isbi_at_4_nm(sqlite_lake, tmp_path):
    from PIL import Image

    path = sample("imaging", "isbi2012_train_image_0.png")
    msg = _failed(sqlite_lake, path, "field pixel_size", "expected a pixel size", "found none")
    assert "pixel_size=none" in msg
    out = _ingest(sqlite_lake, path, options={"pixel_size": 4, "pixel_unit": "nm"})
    assert out.status == "ok", out.message
    r = _rows(sqlite_lake, path.name)[0]
    assert (r["pixel_size_x"], r["pixel_size_y"], r["pixel_unit_x"], r["pixel_size_nm_x"]) == (4.0, 4.0, "nm", 4.0)
    assert (r["height"], r["width"], r["dtype"], r["file_format"]) == (512, 512, "uint8", "png")
    img = sqlite_lake.image(r["record_id"])
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(path))) and img.pixel_size_nm == (4.0, 4.0)


def test_png_pixel_size_none_accepts_an_uncalibrated_image(sqlite_lake, tmp_path):
    from PIL import Image

    path = tmp_path / "u16.png"
    arr = np.random.default_rng(4).integers(0, 65535, size=(9, 7), dtype=np.uint16)
    Image.fromarray(arr).save(path)
    assert _ingest(sqlite_lake, path, options={"pixel_size": "none"}).status == "ok"
    r = _rows(sqlite_lake, "u16.png")[0]
    assert r["pixel_size_x"] is None and r["pixel_size_nm_x"] is None and r["calibration_source"].startswith("none")
    assert np.array_equal(np.asarray(sqlite_lake.image(r["record_id"])), np.asarray(Image.open(path)))


def test_emd_written_by_rosettasciio_keeps_axis_calibration(sqlite_lake, tmp_path):
    from rsciio.emd import file_reader, file_writer

    data = np.random.default_rng(5).integers(-500, 500, size=(3, 6, 8), dtype=np.int16)
    axes = [{"name": "time", "size": 3, "scale": 0.5, "offset": 0.0, "units": "s", "navigate": True},
            {"name": "y", "size": 6, "scale": 0.25, "offset": 0.0, "units": "nm", "navigate": False},
            {"name": "x", "size": 8, "scale": 0.2, "offset": 0.0, "units": "nm", "navigate": False}]
    path = tmp_path / "movie.emd"
    file_writer(str(path), {"data": data, "axes": axes, "metadata": {"General": {"title": "t"}, "Signal": {}},
                            "original_metadata": {}})
    ref = file_reader(str(path))[0]
    assert _ingest(sqlite_lake, path).status == "ok"
    rows = _rows(sqlite_lake, "movie.emd")
    r = rows[1]
    assert (r["pixel_size_y"], r["pixel_unit_y"]) == (ref["axes"][1]["scale"], ref["axes"][1]["units"])
    assert (r["pixel_size_x"], r["pixel_unit_x"]) == (ref["axes"][2]["scale"], ref["axes"][2]["units"])
    assert (r["stack_axis"], r["frame_interval"], r["file_format"]) == ("time", 0.5, "emd")
    assert np.array_equal(np.asarray(sqlite_lake.image(r["record_id"])), ref["data"][1])


def test_rosettasciio_axes_map_to_calibration():
    axes = [{"name": "y", "scale": 0.12, "units": "µm"}, {"name": "x", "scale": 0.1, "units": "µm"}]
    cal = im.axes_calibration(axes, "rsciio-dm")
    assert cal.sizes == {"y": (0.12, "µm"), "x": (0.1, "µm")} and cal.nm("y") == pytest.approx(120.0)
    diffraction = im.axes_calibration([{"scale": 0.01, "units": "1/nm"}] * 2, "rsciio-dm")
    assert diffraction.sizes["x"] == (0.01, "1/nm") and diffraction.nm("x") is None  # kept, not a length
    assert not im.axes_calibration([{"scale": 1.0, "units": "<undefined>"}] * 2, "rsciio-dm")
    read = im.image_from_signals([{"data": np.zeros((4, 5), np.float32), "axes": axes,
                                   "metadata": {"Acquisition_instrument": {"TEM": {"beam_energy": 300.0}}}}], "dm")
    assert read.stack.shape == (1, 4, 5) and read.voltage == 300e3


def test_dm_spectrum_image_stays_a_spectrum_and_is_not_an_image(sqlite_lake, tmp_path):
    path = sample("spectra", "NMC_TM+O_EELS_Spectrum_Image.dm3")
    head = path.read_bytes()[:8192]
    assert detect(head, path.name).name == "spectrum-dm"  # auto: the spectra reader's
    assert detect(head, path.name, "image").name == "image-dm"
    _failed(sqlite_lake, path, "field signals", "expected an image (two spatial axes, no energy axis)", "eV",
            kind="image")


def test_rosettasciio_missing_names_the_gpl_extra(sqlite_lake, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rsciio.emd", None)
    path = tmp_path / "x.emd"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))
    _failed(sqlite_lake, path, 'pip install "matlake[gpl]"', "rsciio is not installed")


def test_detection_claims_images_only():
    for name in ("isbi2012_train_image_0.png", "isbi2012_train_label_0.png", "EMD-3197.map"):
        p = detect(sample("imaging", name).read_bytes()[:8192], name)
        assert p is not None and p.kind == "image", name
    for folder in ("spectra", "eis", "dft"):
        for f in sample(folder).iterdir():
            if f.is_file():
                p = detect(f.read_bytes()[:8192], f.name)
                assert p is None or p.kind not in ("image", "mask"), f


# --------------------------------------------------------------------------- masks


def test_mask_for_image_is_linked_and_checked_against_its_shape(lake, tmp_path):
    from PIL import Image

    image = sample("imaging", "isbi2012_train_image_0.png")
    label = sample("imaging", "isbi2012_train_label_0.png")
    assert _ingest(lake, image, options={"pixel_size": 4}).status == "ok"
    rid, version = lake.sql("select record_id, version from micrographs").fetchone()
    out = _ingest(lake, label, kind="mask", options={"for": rid, "classes": "membrane:0,cell:255",
                                                      "mask_kind": "ground_truth"})
    assert out.status == "ok", out.message
    s = lake.sql("select * from segmentations").arrow().to_pylist()[0]
    ref = np.asarray(Image.open(label))
    assert (s["image_id"], s["image_version"], s["mask_kind"]) == (rid, version, "ground_truth")
    assert s["class_names"] == ["membrane", "cell"] and s["class_values"] == [0, 255]
    assert s["class_fractions"] == [pytest.approx((ref == 0).mean()), pytest.approx((ref == 255).mean())]
    mask = lake.image(s["record_id"])
    assert np.array_equal(np.asarray(mask), ref) and mask.pixel_size == (4.0, 4.0)
    # the ingest of the mask used the image version (its lineage reaches the micrograph's bytes)
    from matlake.platform.provenance import lineage

    g = lineage(lake, s["record_id"], direction="up")
    assert any(rid in n[1] for n in g.reaches("record"))
    image_bytes = lake.sql("select source_sha256 from micrographs").fetchone()[0]
    assert image_bytes in {n[1] for n in g.reaches("object")}
    # a mask of another shape fails naming both shapes
    small = tmp_path / "small_mask.png"
    Image.fromarray(ref[:256, :300]).save(small)
    _failed(lake, small, "field mask shape", "[512, 512]", "[256, 300]", kind="mask", options={"for": rid})
    # values the classes do not name, and an unknown image
    other = tmp_path / "other.png"
    Image.fromarray(np.where(ref > 0, 7, 0).astype(np.uint8)).save(other)
    _failed(lake, other, "field mask values", "[0, 255]", "[7]", kind="mask",
            options={"for": rid, "classes": "membrane:0,cell:255"})
    _failed(lake, other, "field option for", "no micrographs record 'nope'", kind="mask", options={"for": "nope"})


def test_mask_folder_pairs_by_stem(sqlite_lake, tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(6)
    for k in range(2):
        tifffile.imwrite(tmp_path / "imgs" / f"cell_{k}.tif", rng.integers(0, 255, (12, 10), dtype=np.uint8))
        Image.fromarray((rng.random((12, 10)) > 0.5).astype(np.uint8)).save(tmp_path / "masks" / f"cell_{k}_mask.png")
    report = sqlite_lake.ingest([tmp_path / "imgs"], options={"pixel_size": 1.0}, progress=False)
    assert report.new == 2
    report = sqlite_lake.ingest([tmp_path / "masks"], kind="mask", options={"pair": "stem"}, progress=False)
    assert (report.new, report.failed) == (2, 0), [o.message for o in report.outcomes]
    pairs = sqlite_lake.sql("select m.source_name, s.source_name, s.class_names from segmentations s "
                            "join micrographs m on m.record_id = s.image_id order by 1").fetchall()
    assert [(a, b) for a, b, _ in pairs] == [("cell_0.tif", "cell_0_mask.png"), ("cell_1.tif", "cell_1_mask.png")]
    assert list(pairs[0][2]) == ["class_0", "class_1"]
    assert im.mask_pair_stem("a.b_labels.ome.tif") == "a.b" and im.mask_pair_stem("x_GT.png") == "x"
    lonely = tmp_path / "nobody_mask.png"
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(lonely)
    _failed(sqlite_lake, lonely, "field option for", "0 micrographs whose source stem is 'nobody'", kind="mask",
            options={"pair": "stem"})


# --------------------------------------------------------------------------- bad input


def test_truncated_tiff_and_mrc_fail_and_commit_nothing(sqlite_lake, tmp_path):
    good = tmp_path / "g.tif"
    tifffile.imwrite(good, np.ones((64, 64), np.uint16), resolution=(1e7, 1e7), resolutionunit="CENTIMETER")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:-3000])
    _failed(sqlite_lake, cut, "strip/tile data", "within the file's", "file truncated")
    mrc = tmp_path / "cut.map"
    mrc.write_bytes(sample("imaging", "EMD-3197.map").read_bytes()[:20000])
    _failed(sqlite_lake, mrc, "field MRC data block", "expected 33024 bytes", "found 20000 bytes")
    tiny = tmp_path / "tiny.tif"
    tiny.write_bytes(good.read_bytes()[:100])
    _failed(sqlite_lake, tiny, "TIFF")
    assert sqlite_lake.sql("select count(*) from ledger where status = 'ok'").fetchone() == (0,)
    assert not sqlite_lake.files_at(sqlite_lake.last_snapshot(), "micrographs")


def _set_tag(data: bytes, tag: int, value: int) -> bytes:
    """A little-endian classic TIFF with the SHORT value of ``tag`` in the first IFD replaced."""
    ifd = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[ifd:ifd + 2])[0]
    for k in range(n):
        at = ifd + 2 + 12 * k
        if struct.unpack("<H", data[at:at + 2])[0] == tag:
            return data[:at + 8] + struct.pack("<HH", value, 0) + data[at + 12:]
    raise AssertionError(f"tag {tag} not found")


@pytest.mark.parametrize("codec,name", [(34712, "JPEG2000"), (50000, "ZSTD")])
def test_unsupported_compression_fails_naming_the_codec(sqlite_lake, tmp_path, codec, name):
    plain = io.BytesIO()
    tifffile.imwrite(plain, np.ones((16, 16), np.uint16), resolution=(1e7, 1e7), resolutionunit="CENTIMETER")
    path = tmp_path / f"{name}.tif"
    path.write_bytes(_set_tag(plain.getvalue(), 259, codec))
    with pytest.raises(Exception):  # noqa: B017 - the reference library cannot decode it either
        tifffile.imread(path)
    _failed(sqlite_lake, path, "compression", name, "imagecodecs")


def test_zero_pixel_size_fails_unless_an_option_gives_one(sqlite_lake, tmp_path):
    path = tmp_path / "zero.map"
    with __import__("mrcfile").new(str(path)) as m:
        m.set_data(np.zeros((2, 6, 5), np.float32))
        m.voxel_size = 0.0
    _failed(sqlite_lake, path, "field pixel_size", "mrc voxel size (x, y, z) = (0.0, 0.0, 0.0)")
    out = _ingest(sqlite_lake, path, options={"pixel_size": "2,3", "pixel_unit": "Å"})
    assert out.status == "ok", out.message
    r = _rows(sqlite_lake, "zero.map")[0]
    assert (r["pixel_size_x"], r["pixel_size_y"], r["pixel_unit_x"], r["pixel_size_nm_y"]) == (2.0, 3.0, "Å",
                                                                                               pytest.approx(0.3))
    with pytest.raises(ParseError, match="option pixel_size"):
        im.micrograph_rows(_ctx(pixel_size=0), im.ImageRead(np.zeros((1, 2, 2), np.uint8), im.Calibration(), "tiff"))


def test_nan_pixels_fail_unless_allowed_and_are_then_counted(sqlite_lake, tmp_path):
    arr = np.arange(30, dtype=np.float32).reshape(5, 6)
    arr[1, 2] = arr[3, 4] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, arr, resolution=(1e7, 1e7), resolutionunit="CENTIMETER")
    _failed(sqlite_lake, path, "field pixel values", "finite numbers", "2 NaN pixels")
    assert _ingest(sqlite_lake, path, options={"allow_nan": True}).status == "ok"
    r = _rows(sqlite_lake, "nan.tif")[0]
    assert json.loads(r["metadata_json"])["nan_pixels"] == 2 and r["intensity_max"] == 29.0
    got = np.asarray(sqlite_lake.image(r["record_id"]))
    assert got.tobytes() == arr.tobytes()


def test_a_tile_of_a_large_image_is_read_without_the_rest(sqlite_lake, tmp_path):
    big = np.random.default_rng(7).integers(0, 65535, size=(4096, 4096), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, big, resolution=(1e7, 1e7), resolutionunit="CENTIMETER")
    assert _ingest(sqlite_lake, path).status == "ok"
    r = _rows(sqlite_lake, "big.tif")[0]
    assert r["chunk_shape"] == [1, 512, 512]
    img = sqlite_lake.image(r["record_id"])
    tile = img.array[1000:1100, 2000:2300]
    assert np.array_equal(tile, big[1000:1100, 2000:2300])
    total = img.array.base.object_size
    chunk = 512 * 512 * 2
    # rows 1000:1100 and columns 2000:2300 touch 2 x 2 of the 64 chunks; the rest is the chunk index
    assert 4 * chunk <= img.array.bytes_read < 4 * chunk + 64 * 1024 < total / 15, (img.array.bytes_read, total)


def test_dm_2d_image_pixel_size_from_its_axes_under_kind_image(sqlite_lake, tmp_path, monkeypatch):
    """The DM route: rosettasciio's reader stands in with a 2D image signal (no DM image file ships here),
    so the mapping of its axes (y, x: 0.12 x 0.1 nm) to the row and the spectra reader's hand-over are checked."""
    import rsciio.digitalmicrograph as dm

    pixels = np.random.default_rng(8).integers(-2000, 2000, size=(6, 9), dtype=np.int32)
    signal = {"data": pixels, "axes": [{"name": "y", "size": 6, "scale": 0.12, "offset": 0.0, "units": "nm"},
                                       {"name": "x", "size": 9, "scale": 0.1, "offset": 0.0, "units": "nm"}],
              "metadata": {"Acquisition_instrument": {"TEM": {"beam_energy": 200.0, "microscope": "ARM200F",
                                                              "magnification": 5e5}}},
              "original_metadata": {}}
    monkeypatch.setattr(dm, "file_reader", lambda path, *a, **k: [signal])
    path = tmp_path / "image.dm3"
    path.write_bytes(sample("spectra", "NMC_TM+O_EELS_Spectrum_Image.dm3").read_bytes())
    _failed(sqlite_lake, path, "without an energy axis", "--kind image")  # auto: the spectra reader's turn
    out = _ingest(sqlite_lake, path, kind="image")
    assert out.status == "ok", out.message
    r = _rows(sqlite_lake, "image.dm3")[0]
    assert (r["pixel_size_y"], r["pixel_size_x"], r["pixel_unit_x"]) == (0.12, 0.1, "nm")
    assert (r["voltage"], r["instrument"], r["magnification"], r["technique"]) == (200e3, "ARM200F", 5e5, "TEM")
    assert np.array_equal(np.asarray(sqlite_lake.image(r["record_id"])), pixels)


def test_jpeg_pixels_equal_pillow(sqlite_lake, tmp_path):
    from PIL import Image

    path = tmp_path / "sem.jpg"
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (20, 30), dtype=np.uint8)).save(path, quality=90)
    assert _ingest(sqlite_lake, path, options={"pixel_size": 2.5, "pixel_unit": "µm"}).status == "ok"
    r = _rows(sqlite_lake, "sem.jpg")[0]
    assert (r["file_format"], r["pixel_size_nm_x"]) == ("jpeg", pytest.approx(2500.0))
    assert np.array_equal(np.asarray(sqlite_lake.image(r["record_id"])), np.asarray(Image.open(path)))
