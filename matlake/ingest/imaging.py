"""Micrographs and their masks: TIFF, MRC/CCP4, PNG/JPEG, DM3/DM4, FEI SER, EMD → ``micrographs`` / ``segmentations``.

Parsers (name → ``file_format``):

- ``image-tiff``  TIFF and BigTIFF through tifffile.  The pixel size comes from, in this order: FEI/Thermo
  (``fei_metadata`` Scan.PixelWidth/PixelHeight, metres), Zeiss SEM (``sem_metadata`` ap_pixel_size, else
  ap_image_pixel_size, with its unit), Olympus SIS (``sis_metadata`` pixelsizex/y, metres), OME-XML
  (PhysicalSizeX/Y/Z with their units, µm when absent as the OME schema says), ImageJ (1/XResolution,
  1/YResolution in the ``unit`` of its description, ``spacing`` for z, ``finterval`` for movies) and,
  last, the TIFF resolution tags (XResolution/YResolution per ResolutionUnit inch or cm; unit NONE is
  no calibration).  Non-square pixels are kept per axis.
- ``image-mrc``   MRC/CCP4 maps, image stacks and volumes through mrcfile (``permissive=True``, so old
  headers open; the outcome of ``validate()`` is kept in ``metadata_json``).  Voxel size in Å per axis
  (cella / mx, my, mz).
- ``image-png`` / ``image-jpeg``  through Pillow.  These files hold no microscope calibration: the pHYs
  chunk or JFIF density is a print resolution (dots per inch), not a pixel size on the specimen, and is
  ignored (kept in ``metadata_json``).  The pixel size comes from the options ``pixel_size`` and
  ``pixel_unit`` (default nm), or ``pixel_size=none`` accepts an uncalibrated image; without either the
  file fails.
- ``image-dm`` (Gatan DM3/DM4 2D images and image stacks), ``image-ser`` (FEI TIA SER) and ``image-emd``
  (Velox and Berkeley/NCEM EMD) through rosettasciio, the optional ``gpl`` extra; without it a failed
  row names the extra.  Pixel sizes and units are the signal axes' scale and units.  DM files are claimed
  first by the spectra reader (``spectrum-dm``, which wants an energy axis); a DM *image* is read with
  ``--kind image`` (this detector answers only to an explicit kind, and the spectra reader's failure for
  a DM file without an energy axis says so).

Every image becomes ONE chunked array object holding the whole stack ``(n_frames, height, width[,
channels])`` (a single image is a stack of one; the frames of a movie, the slices of a volume and any
other leading axes, flattened in C order, are the frames; ``metadata_json`` keeps the original axes)
and one ``micrographs`` row per frame, whose ``frame_index`` selects it.  Pixel values are stored
exactly as the file holds them (dtype, signedness, bits; big-endian data in native byte order).

Options common to every image parser: ``pixel_size`` / ``pixel_unit`` (used only when the file has no
calibration of its own; a file's calibration always wins, the option value is then only reported),
``pixel_size=none`` (accept an image without calibration), ``allow_nan=true`` (keep a float image with
NaN pixels; their count is in ``metadata_json``; without it such an image fails: NaN is not a
measurement), ``technique`` (``tem``, ``sem``, ``stem``, ``cryo-em``, ``optical``...), ``tile`` (chunk edge in
pixels, default 512).

Masks (``--kind mask``, parser ``mask-image``): any PNG/TIFF/MRC image whose pixel values are class labels,
for one micrograph (option ``for=IMAGE_ID``; the platform adds ``image_shape`` and ``image_version`` by
looking the image up, see :mod:`matlake.platform.ingestion`'s option resolvers; or ``pair=stem``: the
micrograph whose source file has the same stem, after dropping a trailing ``_mask``, ``_label(s)``,
``_gt``, ``_seg`` or ``_annotation`` from the mask's stem).  ``classes=membrane:0,cell:255`` names the
values (default: the sorted unique values, named ``class_0``...); ``mask_kind`` is ``annotation``
(default) or ``ground_truth``.  A mask whose shape differs from its image's fails naming both shapes.

Bad input (a failed row naming the field, what was expected and what was found; nothing is kept):
truncated TIFF strips/tiles or MRC data blocks, a compression tifffile cannot decode without imagecodecs,
a missing or zero pixel size, NaN pixels (see ``allow_nan``), a mask shape that differs from its image's,
mask values not among the named classes.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from matlake.ingest.base import LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult, json_default

PARSER_VERSION = "1.0.0"
GPL_HINT = 'pip install "matlake[gpl]" (rosettasciio, GPL-3.0)'
DEFAULT_TILE = 512

__all__ = ["PARSERS", "Calibration", "length_unit_nm", "tiff_calibration", "mrc_calibration", "axes_calibration",
           "read_tiff", "read_mrc", "read_pillow", "mask_pair_stem", "parse_classes"]


# --------------------------------------------------------------------------- units and calibration

# Length units to nanometres, by the spellings files use (ImageJ writes 'micron' or a literal '\u00B5m').
_NM_PER_UNIT = {
    "m": 1e9, "meter": 1e9, "metre": 1e9, "cm": 1e7, "mm": 1e6,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "a": 0.1, "å": 0.1, "Å": 0.1, "angstrom": 0.1, "ang": 0.1,
    "pm": 1e-3, "in": 2.54e7, "inch": 2.54e7,
}


def clean_unit(unit: Any) -> str:
    """A unit as text, with ImageJ's escaped micro sign (``\\u00B5m``) decoded."""
    text = str(unit if unit is not None else "").strip()
    return text.replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("\\u03BC", "μ")


def length_unit_nm(unit: Any) -> float | None:
    """Nanometres per ``unit`` (a length unit), or None when ``unit`` is not a length (pixel, 1/nm, '')."""
    text = clean_unit(unit)
    return _NM_PER_UNIT.get(text) or _NM_PER_UNIT.get(text.lower())


@dataclass
class Calibration:
    """Pixel size per axis as the file gives it (``sizes[axis] = (value, unit)``, axes 'x', 'y', 'z')."""

    sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    source: str = ""
    frame_time: float | None = None  # seconds between frames of a movie
    problem: str | None = None  # why a calibration the file tried to give was refused (zero, unknown unit)

    def __bool__(self) -> bool:
        return bool(self.sizes)

    def nm(self, axis: str) -> float | None:
        """Pixel size along ``axis`` in nanometres (None: no size, or a unit that is not a length)."""
        if axis not in self.sizes:
            return None
        value, unit = self.sizes[axis]
        factor = length_unit_nm(unit)
        return value * factor if factor is not None else None


def _checked(source: str, sizes: Mapping[str, tuple[Any, Any]], frame_time: float | None = None) -> Calibration:
    """A calibration whose values are finite and positive; otherwise an empty one saying what was wrong."""
    out: dict[str, tuple[float, str]] = {}
    for axis, (value, unit) in sizes.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            return Calibration(source=source, problem=f"{source} pixel size {axis} = {value!r}")
        if not math.isfinite(v) or v <= 0:
            return Calibration(source=source, problem=f"{source} pixel size {axis} = {value!r} {clean_unit(unit)}")
        out[axis] = (v, clean_unit(unit))
    return Calibration(out, source, frame_time)


def _section(tree: Mapping[str, Any] | None, *names: str) -> dict[str, Any]:
    for n in names:
        value = (tree or {}).get(n)
        if isinstance(value, dict):
            return value
    return {}


def fei_calibration(meta: Mapping[str, Any]) -> Calibration:
    """FEI/Thermo SEM/FIB header: [Scan] PixelWidth/PixelHeight in metres (EScan/IScan as fallbacks)."""
    for name in ("Scan", "EScan", "IScan"):
        scan = _section(meta, name)
        if "PixelWidth" in scan:
            return _checked(f"fei:{name}", {"x": (scan["PixelWidth"], "m"),
                                              "y": (scan.get("PixelHeight", scan["PixelWidth"]), "m")})
    return Calibration()


def zeiss_calibration(meta: Mapping[str, Any]) -> Calibration:
    """Zeiss SEM (CZ_SEM tag): ``ap_pixel_size`` (else ``ap_image_pixel_size``) = (label, value, unit); square."""
    for key in ("ap_pixel_size", "ap_image_pixel_size"):
        entry = meta.get(key)
        if isinstance(entry, tuple) and len(entry) >= 2:
            unit = entry[2] if len(entry) > 2 else "nm"
            return _checked(f"zeiss:{key}", {"x": (entry[1], unit), "y": (entry[1], unit)})
    return Calibration()


def sis_calibration(meta: Mapping[str, Any]) -> Calibration:
    """Olympus SIS: ``pixelsizex`` / ``pixelsizey`` in metres (tifffile scales them by the stored exponent)."""
    if "pixelsizex" in meta:
        return _checked("olympus-sis", {"x": (meta["pixelsizex"], "m"),
                                        "y": (meta.get("pixelsizey", meta["pixelsizex"]), "m")})
    return Calibration()


def ome_calibration(xml: str) -> Calibration:
    """OME-XML of the first image: PhysicalSizeX/Y/Z with their units (µm by default, per the OME schema)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ParseError("OME-XML", "well-formed OME-XML in the ImageDescription", f"{exc}") from exc
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return Calibration()
    sizes = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is not None:
            sizes[axis.lower()] = (value, pixels.get(f"PhysicalSize{axis}Unit", "µm"))
    increment = pixels.get("TimeIncrement")
    frame_time = None
    if increment is not None:
        t_unit = pixels.get("TimeIncrementUnit", "s")
        scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}.get(t_unit)
        with _quiet_value():
            frame_time = float(increment) * scale if scale else None
    return _checked("ome", sizes, frame_time) if sizes else Calibration(frame_time=frame_time)


class _quiet_value:
    """Context manager: a malformed optional number (ValueError) leaves the value as it was set before."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, (ValueError, TypeError))


def imagej_calibration(meta: Mapping[str, Any], resolution: tuple[float, float]) -> Calibration:
    """ImageJ: pixel width/height = 1/XResolution, 1/YResolution in ``unit``; ``spacing`` is z; ``finterval`` s."""
    unit = clean_unit(meta.get("unit", ""))
    frame_time = None
    with _quiet_value():
        frame_time = float(meta["finterval"]) if "finterval" in meta else None
    if not unit or unit.lower() in ("pixel", "pixels", "none"):
        return Calibration(frame_time=frame_time)
    xres, yres = resolution
    if not xres or not yres:
        return Calibration(source="imagej", problem=f"imagej resolution {resolution}", frame_time=frame_time)
    sizes: dict[str, tuple[Any, Any]] = {"x": (1.0 / xres, unit), "y": (1.0 / yres, unit)}
    if "spacing" in meta:
        sizes["z"] = (meta["spacing"], unit)
    return _checked("imagej", sizes, frame_time)


def resolution_calibration(resolution: tuple[float, float], resolution_unit: int) -> Calibration:
    """TIFF XResolution/YResolution (pixels per unit) with ResolutionUnit 2 = inch, 3 = cm; 1 = no unit."""
    unit = {2: "inch", 3: "cm"}.get(int(resolution_unit))
    if unit is None:
        return Calibration()
    xres, yres = resolution
    if not xres or not yres:
        return Calibration(source="tiff-resolution", problem=f"XResolution/YResolution {resolution}")
    return _checked("tiff-resolution", {"x": (1.0 / xres, unit), "y": (1.0 / yres, unit)})


def mrc_calibration(voxel_size: Any) -> Calibration:
    """MRC voxel size (mrcfile's ``voxel_size`` record x, y, z) in Å; zero means the header has none."""
    x, y, z = (float(voxel_size.x), float(voxel_size.y), float(voxel_size.z))
    if x == 0 and y == 0:
        return Calibration(source="mrc", problem=f"mrc voxel size (x, y, z) = ({x}, {y}, {z}) Å")
    sizes = {"x": (x, "Å"), "y": (y, "Å")}
    if z != 0:
        sizes["z"] = (z, "Å")
    return _checked("mrc", sizes)


def axes_calibration(axes: Sequence[Mapping[str, Any]], source: str) -> Calibration:
    """rosettasciio axes (ordered as the array's dimensions): the last two are y and x; scale and units.

    A unit that is not a length (1/nm of a diffraction pattern, say) is kept as given and
    ``pixel_size_nm_*`` stays empty.  An axis without a unit (rosettasciio's ``<undefined>``) is no
    calibration.
    """
    if len(axes) < 2:
        return Calibration()
    got = {}
    for axis, ax in zip(("y", "x"), axes[-2:]):
        unit = clean_unit(ax.get("units"))
        if not unit or unit.startswith("<") or unit.lower() in ("undefined", "pixel", "px"):
            return Calibration()
        got[axis] = (ax.get("scale", 1.0), unit)
    return _checked(source, got)


def tiff_calibration(tif: Any) -> Calibration:
    """The calibration of an open ``tifffile.TiffFile``, vendor metadata first (order in the module doc)."""
    page = tif.pages.first
    refused: list[str] = []
    frame_time = None
    candidates = []
    if tif.is_fei:
        candidates.append(lambda: fei_calibration(tif.fei_metadata or {}))
    if tif.is_sem:
        candidates.append(lambda: zeiss_calibration(tif.sem_metadata or {}))
    if tif.is_sis or page.is_sis:
        candidates.append(lambda: sis_calibration(tif.sis_metadata or {}))
    if tif.is_ome:
        candidates.append(lambda: ome_calibration(tif.ome_metadata or ""))
    if tif.is_imagej:
        candidates.append(lambda: imagej_calibration(tif.imagej_metadata or {}, page.resolution))
    candidates.append(lambda: resolution_calibration(page.resolution, page.resolutionunit))
    for make in candidates:
        cal = make()
        frame_time = frame_time if frame_time is not None else cal.frame_time
        if cal:
            cal.frame_time = cal.frame_time if cal.frame_time is not None else frame_time
            return cal
        if cal.problem:
            refused.append(cal.problem)
    return Calibration(frame_time=frame_time, problem="; ".join(refused) or None)


# --------------------------------------------------------------------------- reading


@dataclass
class ImageRead:
    """What a reader found: the stack (n_frames, height, width[, channels]), calibration and metadata."""

    stack: np.ndarray
    calibration: Calibration
    file_format: str
    axes: str = ""  # the file's axes, e.g. 'TYX', 'ZYX', 'YXS'
    metadata: dict[str, Any] = field(default_factory=dict)
    technique: str | None = None
    voltage: float | None = None  # accelerating voltage, V
    magnification: float | None = None
    detector: str | None = None
    instrument: str | None = None
    acquired_at: datetime | None = None
    exposure_time: float | None = None  # s
    warnings: list[str] = field(default_factory=list)


def _native(arr: np.ndarray) -> np.ndarray:
    """Same values in native byte order (a big-endian file's numbers are kept, not its byte order)."""
    if arr.dtype.byteorder not in ("=", "|") and arr.dtype.byteorder != ("<" if np.little_endian else ">"):
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _as_stack(arr: np.ndarray, axes: str, where: str) -> tuple[np.ndarray, str]:
    """``arr`` as (n_frames, height, width[, channels]): leading axes flattened into frames.

    ``axes`` uses tifffile's letters; a trailing S (samples: RGB) or a final C of size 3/4 stays channels.
    """
    arr = _native(np.asarray(arr))
    axes = axes or ("YX" if arr.ndim == 2 else "")
    channels = axes.endswith("S") or (axes.endswith("C") and arr.shape[-1] in (3, 4) and arr.ndim >= 3)
    spatial = 3 if channels else 2
    if arr.ndim < spatial:
        raise ParseError(f"{where} shape", "an image of at least 2 dimensions (height, width)", str(list(arr.shape)))
    lead = arr.shape[:-spatial]
    n = int(np.prod(lead)) if lead else 1
    stack = arr.reshape((n, *arr.shape[-spatial:]))
    if stack.shape[1] == 0 or stack.shape[2] == 0 or n == 0:
        raise ParseError(f"{where} shape", "a non-empty image", str(list(arr.shape)))
    if stack.dtype.kind not in "biuf" or stack.dtype.itemsize > 8:
        raise ParseError(f"{where} data type", "integer, boolean or real pixel values", str(stack.dtype))
    if stack.dtype == np.bool_:
        stack = stack.astype(np.uint8)
    return np.ascontiguousarray(stack), axes


_DECODABLE = {1}  # compressions tifffile decodes without imagecodecs; the rest found at run time below


def _tiff_decodable(compression: int) -> str | None:
    """None if tifffile can decode ``compression`` here, else why not (the codec needs imagecodecs)."""
    from tifffile import TIFF

    if compression in _DECODABLE:
        return None
    try:
        TIFF.DECOMPRESSORS[compression]
    except (KeyError, ImportError) as exc:
        return str(exc).strip("\"'")
    # Some codecs resolve to a function that imports its module only when called (zstd): try it once.
    if compression == 50000:
        try:
            import compression.zstd  # noqa: F401  (Python 3.14+)
        except ImportError:
            try:
                import imagecodecs  # noqa: F401
            except ImportError as exc:
                return f"ZSTD requires the 'imagecodecs' package ({exc})"
    _DECODABLE.add(compression)
    return None


def read_tiff(data: bytes) -> ImageRead:
    """A TIFF's first series as a stack, with calibration and vendor metadata (pure: bytes in)."""
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tif = tifffile.TiffFile(io.BytesIO(data))
    except (*LIBRARY_INPUT_ERRORS, struct.error) as exc:
        raise ParseError("TIFF header", "a readable TIFF (IFD structure)", f"{type(exc).__name__}: {exc}") from exc
    with tif:
        try:
            series = tif.series[0] if tif.series else None
        except (*LIBRARY_INPUT_ERRORS, struct.error) as exc:
            raise ParseError("TIFF series", "a readable image series", f"{type(exc).__name__}: {exc}") from exc
        if series is None:
            raise ParseError("TIFF series", "at least one image", "no image series")
        pages = [p for p in series.pages if p is not None]
        for k, page in enumerate(pages):
            comp = int(getattr(page, "compression", 1))
            why = _tiff_decodable(comp)
            if why is not None:
                name = getattr(page.compression, "name", str(comp))
                raise ParseError(f"page {k} compression", "a compression tifffile decodes here (none, deflate, "
                                 "LZMA; others need the imagecodecs package)", f"{name} ({comp}): {why}")
            ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts) if c]
            if ends and max(ends) > len(data):
                raise ParseError(f"page {k} strip/tile data", f"within the file's {len(data)} bytes",
                                 f"data ending at byte {max(ends)} (file truncated?)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = series.asarray()
        except (*LIBRARY_INPUT_ERRORS, struct.error) as exc:
            raise ParseError("TIFF pixel data", "decodable strips/tiles", f"{type(exc).__name__}: {exc}") from exc
        axes = str(series.axes)
        stack, axes = _as_stack(arr, axes, "TIFF series 0")
        cal = tiff_calibration(tif)
        fmt = "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff"
        page = tif.pages.first
        meta: dict[str, Any] = {"axes": axes, "series_shape": list(series.shape), "n_series": len(tif.series),
                                "compression": getattr(page.compression, "name", str(page.compression)),
                                "photometric": getattr(page.photometric, "name", str(page.photometric)),
                                "resolution": list(page.resolution),
                                "resolution_unit": int(page.resolutionunit)}
        out = ImageRead(stack, cal, fmt, axes, meta)
        if len(tif.series) > 1:
            out.warnings.append(f"{len(tif.series)} image series; only series 0 is ingested")
        for label, attr in (("fei", "fei_metadata"), ("zeiss_sem", "sem_metadata"), ("olympus_sis", "sis_metadata"),
                            ("imagej", "imagej_metadata")):
            value = getattr(tif, attr, None)
            if value:
                meta[label] = value
        if tif.is_ome:
            meta["ome_xml"] = tif.ome_metadata
        if "ImageDescription" in page.tags and not tif.is_ome:
            meta["description"] = str(page.tags["ImageDescription"].value)[:20000]
        for tag in ("Make", "Model", "Software", "DateTime", "Artist"):
            if tag in page.tags:
                meta[tag] = str(page.tags[tag].value)
        _vendor_fields(out, tif)
        return out


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _vendor_fields(out: ImageRead, tif: Any) -> None:
    """Voltage, magnification, detector, instrument, time from FEI, Zeiss and SIS metadata."""
    page = tif.pages.first
    if tif.is_fei:
        fei = tif.fei_metadata or {}
        out.technique = "sem"
        beam = _section(fei, "Beam", "EBeam")
        out.voltage = _num(beam.get("HV"))
        out.detector = _section(fei, "Detectors").get("Name") or _section(fei, "Detector").get("Name")
        system = _section(fei, "System")
        out.instrument = system.get("SystemType") or system.get("Type")
        for sec in fei.values():
            if isinstance(sec, dict) and "Magnification" in sec:
                out.magnification = _num(sec["Magnification"])
        user = _section(fei, "User")
        if user.get("Date"):
            out.acquired_at = _datetime(f"{user.get('Date')} {user.get('Time', '')}".strip())
        out.exposure_time = _num(_section(fei, "Scan").get("Dwelltime"))  # per pixel (s)
    elif tif.is_sem:
        sem = tif.sem_metadata or {}
        out.technique = "sem"
        kv = sem.get("ap_actualkv") or sem.get("ap_manualkv")
        if isinstance(kv, tuple) and len(kv) >= 2 and _num(kv[1]) is not None:
            out.voltage = _num(kv[1]) * (1e3 if (len(kv) < 3 or str(kv[2]).lower() == "kv") else 1.0)
        mag = sem.get("ap_mag")
        if isinstance(mag, tuple) and len(mag) >= 2:
            out.magnification = _magnification(mag[1], mag[2] if len(mag) > 2 else "")
        det = sem.get("dp_detector_channel") or sem.get("dp_detector_type")
        if isinstance(det, tuple) and len(det) >= 2:
            out.detector = str(det[1])
        sv = sem.get("sv_serial_number") or sem.get("dp_column_type")
        if isinstance(sv, tuple) and len(sv) >= 2:
            out.instrument = str(sv[1])
    elif tif.is_sis or page.is_sis:
        sis = tif.sis_metadata or {}
        out.magnification = _num(sis.get("magnification"))
        out.detector = sis.get("cameraname") or None
        if isinstance(sis.get("datetime"), datetime):
            out.acquired_at = sis["datetime"]
    if out.acquired_at is None and "DateTime" in page.tags:
        out.acquired_at = _datetime(str(page.tags["DateTime"].value))
    if out.instrument is None and "Model" in page.tags:
        out.instrument = str(page.tags["Model"].value)


def _magnification(value: Any, unit: str) -> float | None:
    """Zeiss writes '10.00 K X' style magnifications."""
    v = _num(value)
    if v is not None:
        return v * (1e3 if str(unit).upper().startswith("K") else 1.0)
    m = re.match(r"\s*([0-9.]+)\s*([KkMm]?)", str(value))
    if not m:
        return None
    return float(m.group(1)) * {"": 1.0, "k": 1e3, "m": 1e6}[m.group(2).lower()]


def _datetime(text: str) -> datetime | None:
    for fmt in ("%Y:%m:%d %H:%M:%S", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d %b %Y %H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None


MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".ccp4", ".st", ".ali", ".rec")


def read_mrc(data: bytes) -> ImageRead:
    """An MRC/CCP4 file: a single image, an image stack (ispg 0) or a volume (slices are frames)."""
    import mrcfile
    from mrcfile.mrcinterpreter import MrcInterpreter

    if len(data) < 1024:
        raise ParseError("MRC header", "a 1024-byte header", f"{len(data)} bytes")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mrc = MrcInterpreter(io.BytesIO(data), permissive=True)
    except (*LIBRARY_INPUT_ERRORS, struct.error) as exc:
        raise ParseError("MRC header", "a readable MRC/CCP4 header", f"{type(exc).__name__}: {exc}") from exc
    h = mrc.header
    nx, ny, nz, mode = int(h.nx), int(h.ny), int(h.nz), int(h.mode)
    try:
        dtype = mrcfile.utils.data_dtype_from_header(h)
    except (*LIBRARY_INPUT_ERRORS,) as exc:
        raise ParseError("MRC mode", "a known MRC mode (0, 1, 2, 4, 6, 12, 101)", f"mode {mode}") from exc
    expected = 1024 + int(h.nsymbt) + nx * ny * nz * (dtype.itemsize if mode != 101 else 0.5)
    if min(nx, ny, nz) <= 0:
        raise ParseError("MRC dimensions", "nx, ny, nz > 0", f"({nx}, {ny}, {nz})")
    if len(data) < expected:
        raise ParseError("MRC data block", f"{int(expected)} bytes (header, extended header and "
                         f"{nx}x{ny}x{nz} mode-{mode} values)", f"{len(data)} bytes (file truncated?)")
    if mrc.data is None:
        msgs = "; ".join(str(w.message) for w in caught) or "no data block"
        raise ParseError("MRC data block", "data the header describes", msgs)
    valid_log = io.StringIO()
    try:
        valid = bool(mrc.validate(print_file=valid_log))
    except LIBRARY_INPUT_ERRORS as exc:  # validation is informative only
        valid, valid_log = False, io.StringIO(f"validate() raised {type(exc).__name__}: {exc}")
    ispg = int(h.ispg)
    arr = np.asarray(mrc.data)
    kind = ("volume_stack" if mrc.is_volume_stack() else "volume" if mrc.is_volume()
            else "image_stack" if mrc.is_image_stack() else "image")
    axes = {"image": "YX", "image_stack": "IYX", "volume": "ZYX", "volume_stack": "VZYX"}[kind]
    stack, _ = _as_stack(arr, axes if arr.ndim == len(axes) else "", "MRC data")
    cal = mrc_calibration(mrc.voxel_size)
    header = {name: _plain(h[name]) for name in h.dtype.names if name != "label"}
    labels = [bytes(lab).rstrip(b"\x00 ").decode("latin-1") for lab in h.label[: int(h.nlabl)]]
    meta = {"axes": axes, "mrc_kind": kind, "ispg": ispg, "mode": mode, "header": header, "labels": labels,
            "validate": {"valid": valid, "report": valid_log.getvalue()[-4000:]},
            "warnings": [str(w.message) for w in caught]}
    out = ImageRead(stack, cal, "mrc", axes, meta, technique="cryo-em")
    if not valid:
        out.warnings.append("mrcfile validate() failed (header kept in metadata_json; opened permissively)")
    return out


def _plain(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind == "S":
        return arr.tobytes().decode("latin-1").rstrip("\x00")
    if arr.dtype.names:
        return {n: _plain(arr[n]) for n in arr.dtype.names}
    return arr.tolist()


def read_pillow(data: bytes, fmt: str) -> ImageRead:
    """PNG/JPEG through Pillow: mode L/I;16/I/F/RGB(A)/P (palette indices)/1 (stored as 0/1 uint8)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            img.load()
            mode = img.mode
            info = {k: v for k, v in img.info.items() if isinstance(v, (str, int, float, tuple))}
            arr = np.array(img)
            n_frames = int(getattr(img, "n_frames", 1))
    except (*LIBRARY_INPUT_ERRORS, OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        if isinstance(exc, OSError) and isinstance(exc.errno, int):
            raise
        raise ParseError(f"{fmt.upper()} data", f"a decodable {fmt.upper()} image", f"{type(exc).__name__}: {exc}") \
            from exc
    axes = "YXS" if arr.ndim == 3 else "YX"
    stack, axes = _as_stack(arr, axes, fmt.upper())
    meta = {"axes": axes, "pil_mode": mode, "info": info,
            "note": "PNG pHYs / JPEG density is a print resolution, not a microscope calibration: ignored"}
    out = ImageRead(stack, Calibration(), fmt, axes, meta)
    if n_frames > 1:
        out.warnings.append(f"{n_frames} frames; only the first is ingested")
    return out


def _rsciio_reader(fmt: str) -> Any:
    try:
        if fmt == "dm":
            from rsciio.digitalmicrograph import file_reader
        elif fmt == "ser":
            from rsciio.tia import file_reader
        else:
            from rsciio.emd import file_reader
    except ImportError as exc:
        raise ParseError("reader", f"rosettasciio to read {fmt.upper()} files: {GPL_HINT}",
                         f"rsciio is not installed ({exc})") from exc
    return file_reader


_SUFFIX = {"dm": ".dm3", "ser": ".ser", "emd": ".emd"}


def read_rsciio(data: bytes, fmt: str, content_path: str | None) -> ImageRead:
    """DM3/DM4, SER, EMD through rosettasciio: the first signal with two spatial (signal) axes."""
    file_reader = _rsciio_reader(fmt)
    path, tmp = content_path, None
    if path is None:  # rsciio reads paths only
        suffix = ".dm4" if (fmt == "dm" and data[:4] == b"\x00\x00\x00\x04") else _SUFFIX[fmt]
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        path = tmp
    try:
        from rsciio import exceptions as rx

        lib_errors: tuple[type[BaseException], ...] = tuple(
            getattr(rx, n) for n in dir(rx) if isinstance(getattr(rx, n), type)
            and issubclass(getattr(rx, n), Exception))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signals = file_reader(path)
    except (*LIBRARY_INPUT_ERRORS, struct.error, UnboundLocalError) as exc:
        raise ParseError(f"{fmt.upper()} content", f"a readable {fmt.upper()} file", f"{type(exc).__name__}: {exc}") \
            from exc
    except OSError as exc:
        if isinstance(exc.errno, int):  # a real I/O failure, not the file's fault
            raise
        # h5py (EMD) and rsciio report unreadable content as OSError without an errno
        raise ParseError(f"{fmt.upper()} content", f"a readable {fmt.upper()} file", f"{exc}") from exc
    except lib_errors as exc:  # type: ignore[misc]
        raise ParseError(f"{fmt.upper()} content", f"a readable {fmt.upper()} file", f"{type(exc).__name__}: {exc}") \
            from exc
    finally:
        if tmp:
            os.unlink(tmp)
    return image_from_signals(signals, fmt)


def image_from_signals(signals: Sequence[Mapping[str, Any]], fmt: str) -> ImageRead:
    """The first rosettasciio signal whose two last axes are spatial (not eV) → an image stack."""
    from matlake.ingest.spectra_dm import _plain as plain_tree

    seen = []
    for k, sig in enumerate(signals):
        arr = np.asarray(sig.get("data"))
        axes = list(sig.get("axes") or [])
        units = [clean_unit(a.get("units")) for a in axes]
        seen.append(f"signal {k}: shape {list(arr.shape)}, units {units}")
        if arr.ndim < 2 or len(axes) != arr.ndim or any(u.lower() in ("ev", "kev") for u in units):
            continue
        if arr.dtype.kind == "c" or arr.dtype.names:
            continue
        # rsciio lists axes in array order; the image is the last two (signal) axes
        stack, order = _as_stack(arr, "I" * (arr.ndim - 2) + "YX", f"signal {k}")
        cal = axes_calibration(axes, f"rsciio-{fmt}")
        meta_tree = plain_tree(sig.get("metadata") or {})
        original = plain_tree(sig.get("original_metadata") or {})
        tem = meta_tree.get("Acquisition_instrument", {}).get("TEM", {}) if isinstance(meta_tree, dict) else {}
        out = ImageRead(stack, cal, fmt, order, {"signal": k, "axes_rsciio": [_plain_axis(a) for a in axes],
                                                 "metadata": meta_tree, "original_metadata": original})
        beam = _num(tem.get("beam_energy"))
        out.voltage = beam * 1e3 if beam else None  # rsciio: keV
        out.magnification = _num(tem.get("magnification"))
        out.instrument = tem.get("microscope")
        out.exposure_time = _num(tem.get("Camera", {}).get("exposure") if isinstance(tem.get("Camera"), dict)
                                 else None) or _num(tem.get("exposure"))
        out.technique = "stem" if "STEM" in str(tem.get("acquisition_mode", "")).upper() else "tem"
        general = meta_tree.get("General", {}) if isinstance(meta_tree, dict) else {}
        if general.get("date"):
            out.acquired_at = _datetime(f"{general['date']} {general.get('time', '00:00:00')}".replace("T", " ")
                                        .split(".")[0]) or _datetime(f"{general['date']}T{general.get('time', '')}")
        if len(axes) > 2:
            nav = axes[0]
            if clean_unit(nav.get("units")) in ("s", "sec"):
                out.calibration.frame_time = _num(nav.get("scale"))
        if len(signals) > 1:
            out.warnings.append(f"{len(signals)} signals; signal {k} (the first image) is ingested")
        return out
    raise ParseError("signals", "an image (two spatial axes, no energy axis)", "; ".join(seen) or "no signals")


def _plain_axis(ax: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): (v.item() if isinstance(v, np.generic) else v if isinstance(v, (int, float, str, bool))
                     else str(v)) for k, v in ax.items()}


# --------------------------------------------------------------------------- detection


def detect_tiff(head: bytes, filename: str) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def detect_png(head: bytes, filename: str) -> bool:
    return head[:8] == b"\x89PNG\r\n\x1a\n"


def detect_jpeg(head: bytes, filename: str) -> bool:
    return head[:3] == b"\xff\xd8\xff"


def detect_mrc(head: bytes, filename: str) -> bool:
    """'MAP ' at byte 208 (MRC2000/CCP4), or an MRC suffix with a plausible old-style header."""
    if len(head) < 224:
        return False
    if head[208:212] == b"MAP ":
        return True
    if not filename.lower().endswith(MRC_SUFFIXES):
        return False
    for order in "<>":
        nx, ny, nz, mode = struct.unpack(order + "4i", head[:16])
        if 0 < nx < 1 << 20 and 0 < ny < 1 << 20 and 0 < nz < 1 << 20 and mode in (0, 1, 2, 3, 4, 6, 12, 101):
            return True
    return False


def detect_dm_image(head: bytes, filename: str) -> bool:
    from matlake.ingest.spectra_dm import detect_dm

    return detect_dm(head, filename)


detect_dm_image.explicit_kind_only = True  # type: ignore[attr-defined]  # spectrum-dm answers under auto


def detect_ser(head: bytes, filename: str) -> bool:
    """TIA SER: byte order 0x4949, series id 0x0197, version 0x0210 or 0x0220."""
    return len(head) >= 6 and head[:4] == b"II\x97\x01" and head[4:6] in (b"\x10\x02", b"\x20\x02")


def detect_emd(head: bytes, filename: str) -> bool:
    """HDF5 named .emd (Velox or Berkeley EMD); other HDF5 files belong to other kinds."""
    return head[:8] == b"\x89HDF\r\n\x1a\n" and filename.lower().endswith(".emd")


def detect_mask(head: bytes, filename: str) -> bool:
    return detect_png(head, filename) or detect_tiff(head, filename) or detect_mrc(head, filename)


detect_mask.explicit_kind_only = True  # type: ignore[attr-defined]  # a mask looks like any image: --kind mask


# --------------------------------------------------------------------------- rows


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def _option_calibration(ctx: ParseContext, read: ImageRead) -> Calibration:
    """The file's calibration, else the ``pixel_size`` option, else a ParseError (unless pixel_size=none)."""
    cal = read.calibration
    opt = ctx.options.get("pixel_size")
    if cal:
        if opt is not None and str(opt).lower() != "none":
            read.warnings.append(f"option pixel_size={opt} ignored: the file gives {cal.sizes} ({cal.source})")
        return cal
    if opt is not None and str(opt).strip().lower() in ("none", "null"):
        return Calibration(frame_time=cal.frame_time, source="none (pixel_size=none)")
    if opt is not None:
        unit = clean_unit(ctx.options.get("pixel_unit", "nm"))
        parts = str(opt).split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ParseError("option pixel_size", "a number, 'x,y' numbers or none", repr(opt)) from None
        if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
            raise ParseError("option pixel_size", "positive pixel size(s) (x or x,y)", repr(opt))
        if length_unit_nm(unit) is None:
            raise ParseError("option pixel_unit", "a length unit (m, mm, µm, nm, Å, pm)", repr(unit))
        x, y = values[0], values[-1]
        got = Calibration({"x": (x, unit), "y": (y, unit)}, "option", cal.frame_time)
        if cal.problem:
            read.metadata["refused_file_calibration"] = cal.problem
        return got
    found = cal.problem or "none"
    raise ParseError("pixel_size", "a pixel size in the file or the option pixel_size=VALUE [pixel_unit=nm] "
                     "(pixel_size=none accepts an uncalibrated image)", found)


def _frame_stats(stack: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame min, max, mean, std (float64) over the finite pixels, and NaN counts.

    One frame at a time, so a long movie never needs a float64 copy of itself.
    """
    n = stack.shape[0]
    out = {k: np.full(n, np.nan) for k in ("min", "max", "mean", "std")}
    out["nan"] = np.zeros(n, dtype=np.int64)
    for i in range(n):
        frame = stack[i].astype(np.float64).ravel()
        if stack.dtype.kind == "f":
            finite = np.isfinite(frame)
            out["nan"][i] = int(np.isnan(frame).sum())
            if not finite.all():
                frame = frame[finite]
        if frame.size:
            out["min"][i], out["max"][i] = frame.min(), frame.max()
            out["mean"][i], out["std"][i] = frame.mean(), frame.std()
    return out


def _tile(ctx: ParseContext) -> int:
    value = ctx.options.get("tile", DEFAULT_TILE)
    try:
        tile = int(value)
    except (TypeError, ValueError):
        raise ParseError("option tile", "a positive integer (pixels)", repr(value)) from None
    if tile <= 0:
        raise ParseError("option tile", "a positive integer (pixels)", repr(value))
    return tile


def _chunks(stack: np.ndarray, tile: int) -> tuple[int, ...]:
    return (1, min(tile, stack.shape[1]), min(tile, stack.shape[2]), *stack.shape[3:])


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default, sort_keys=True)


def _stack_axis(read: ImageRead) -> str:
    """What the frames are: 'time' (a movie), 'z' (slices of a volume), 'stack' (anything else), 'none'."""
    if read.stack.shape[0] == 1:
        return "none"
    lead = read.axes[: -3 if read.stack.ndim == 4 else -2] if read.axes else ""
    if lead == "T" or (read.calibration.frame_time and "Z" not in lead):
        return "time"
    if lead == "Z":
        return "z"
    return "stack"


def _technique(ctx: ParseContext, read: ImageRead) -> str:
    from matlake.schemas.imaging import TECHNIQUES

    value = ctx.options.get("technique") or read.technique or "other"
    for t in TECHNIQUES:
        if str(value).strip().lower() == t.lower():
            return t
    raise ParseError("option technique", "one of " + ", ".join(TECHNIQUES), repr(value))


def micrograph_rows(ctx: ParseContext, read: ImageRead) -> ParseResult:
    """One chunked object for the whole stack and one ``micrographs`` row per frame."""
    stack = read.stack
    cal = _option_calibration(ctx, read)
    technique = _technique(ctx, read)
    stats = _frame_stats(stack)
    nan_total = int(stats["nan"].sum())
    if nan_total and not _truthy(ctx.options.get("allow_nan", False)):
        first = int(np.argmax(stats["nan"] > 0))
        raise ParseError("pixel values", "finite numbers (or the option allow_nan=true)",
                         f"{nan_total} NaN pixels (first in frame {first})")
    if nan_total:
        read.metadata["nan_pixels"] = nan_total
        read.metadata["nan_pixels_per_frame"] = [int(v) for v in stats["nan"]]
    chunks = _chunks(stack, _tile(ctx))
    sha, index_sha = ctx.put_chunked(stack, chunks=chunks)
    n = stack.shape[0]
    interval = cal.frame_time if cal.frame_time is not None else read.calibration.frame_time
    stack_axis = _stack_axis(read)
    if stack_axis != "time":
        interval = None
    sample = ctx.options.get("sample")

    def size(axis: str) -> tuple[float | None, str | None]:
        return cal.sizes.get(axis, (None, None))

    common = {
        "technique": technique, "height": int(stack.shape[1]), "width": int(stack.shape[2]),
        "n_channels": int(stack.shape[3]) if stack.ndim == 4 else 1, "dtype": str(stack.dtype),
        "n_frames": n, "stack_axis": stack_axis,
        "pixel_size_x": size("x")[0], "pixel_unit_x": size("x")[1],
        "pixel_size_y": size("y")[0], "pixel_unit_y": size("y")[1],
        "pixel_size_z": size("z")[0], "pixel_unit_z": size("z")[1],
        "pixel_size_nm_x": cal.nm("x"), "pixel_size_nm_y": cal.nm("y"),
        "calibration_source": cal.source or "none",
        "frame_interval": interval, "voltage": read.voltage, "magnification": read.magnification,
        "exposure_time": read.exposure_time, "detector": _text_or_none(read.detector),
        "instrument": _text_or_none(read.instrument), "acquired_at": read.acquired_at,
        "sample": str(sample) if sample is not None else None,
        "array_sha256": sha, "array_index_sha256": index_sha,
        "array_shape": [int(s) for s in stack.shape], "chunk_shape": [int(c) for c in chunks],
        "metadata_json": _dumps(read.metadata), "file_format": read.file_format,
        "source_name": ctx.filename, "source_sha256": ctx.source_sha256,
    }
    rows = []
    for i in range(n):
        locator = f"frame={i}"
        rows.append({"record_id": ctx.record_id(locator), **common, "frame_index": i,
                     "frame_time": (i * interval) if interval is not None else None,
                     "intensity_min": float(stats["min"][i]), "intensity_max": float(stats["max"][i]),
                     "intensity_mean": float(stats["mean"][i]), "intensity_std": float(stats["std"][i]),
                     "source_locator": locator})
    result = ParseResult()
    result.add_rows("micrographs", rows)
    result.warnings.extend(read.warnings)
    return result


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _read_any(data: bytes, ctx: ParseContext) -> ImageRead:
    fmt = ctx.parser.split("-", 1)[1]
    if fmt == "tiff":
        return read_tiff(data)
    if fmt == "mrc":
        return read_mrc(data)
    if fmt in ("png", "jpeg"):
        return read_pillow(data, fmt)
    return read_rsciio(data, fmt, ctx.content_path)


def parse_image(data: bytes, ctx: ParseContext) -> ParseResult:
    """A micrograph file (any image parser) → one chunked stack + one ``micrographs`` row per frame."""
    return micrograph_rows(ctx, _read_any(bytes(data), ctx))


# --------------------------------------------------------------------------- masks

MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_segmentation", "_annotation")


def mask_pair_stem(name: str) -> str:
    """The stem a mask file pairs with under ``pair=stem``: its stem without a trailing mask suffix."""
    stem = Path(name).name
    while Path(stem).suffix and len(Path(stem).suffix) <= 5:
        stem = Path(stem).stem
    low = stem.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def parse_classes(spec: Any) -> list[tuple[str, int]]:
    """``membrane:0,cell:255`` → [('membrane', 0), ('cell', 255)]."""
    out = []
    for part in str(spec).split(","):
        name, sep, value = part.strip().rpartition(":")
        if not sep or not name.strip():
            raise ParseError("option classes", "NAME:VALUE pairs separated by commas (membrane:0,cell:255)",
                             repr(spec))
        try:
            out.append((name.strip(), int(value)))
        except ValueError:
            raise ParseError("option classes", "integer class values", repr(spec)) from None
    if len({n for n, _ in out}) != len(out) or len({v for _, v in out}) != len(out):
        raise ParseError("option classes", "distinct class names and values", repr(spec))
    return out


def parse_mask(data: bytes, ctx: ParseContext) -> ParseResult:
    """A label image for one micrograph → one ``segmentations`` row (the mask as a chunked object)."""
    image_id = ctx.options.get("for")
    if image_id in (None, ""):
        why = ctx.options.get("_resolve_error")
        raise ParseError("option for", "the record id of the micrograph this mask labels (for=IMAGE_ID, or "
                         "pair=stem)", why or "none")
    image_id = str(image_id)
    if ctx.options.get("_resolve_error"):
        raise ParseError("option for", "a micrograph record id in this lake", str(ctx.options["_resolve_error"]))
    data = bytes(data)
    if detect_png(data[:8], ctx.filename):
        read = read_pillow(data, "png")
    elif detect_tiff(data[:8], ctx.filename):
        read = read_tiff(data)
    elif detect_mrc(data[:1024], ctx.filename):
        read = read_mrc(data)
    else:
        raise ParseError("content", "a PNG, TIFF or MRC label image", "another format")
    stack = read.stack
    if stack.ndim == 4:
        channels = stack[..., :3] if stack.shape[-1] >= 3 else stack
        if stack.shape[-1] >= 3 and not (np.array_equal(channels[..., 0], channels[..., 1])
                                         and np.array_equal(channels[..., 0], channels[..., 2])):
            raise ParseError("mask channels", "one label per pixel (grey levels, or RGB with equal channels)",
                             f"{stack.shape[-1]} different channels")
        stack = np.ascontiguousarray(stack[..., 0])
    if stack.dtype.kind == "f":
        if not np.all(np.isfinite(stack)) or not np.all(stack == np.round(stack)):
            raise ParseError("mask values", "integer class labels", f"float values ({stack.dtype}) that are not")
    if stack.shape[0] != 1:
        raise ParseError("mask frames", "one 2D label image", f"{stack.shape[0]} frames")
    mask = stack[0]
    shape = [int(s) for s in mask.shape]
    image_shape = ctx.options.get("image_shape")
    if image_shape is not None:
        want = [int(s) for s in (json.loads(image_shape) if isinstance(image_shape, str) else image_shape)][:2]
        if want != shape:
            raise ParseError("mask shape", f"the shape (height, width) of image {image_id}: {want}", f"{shape}")
    values, counts = np.unique(mask, return_counts=True)
    if values.size and (values.min() < 0 or values.max() > np.iinfo(np.uint16).max):
        raise ParseError("mask values", "class labels between 0 and 65535",
                         f"values from {values.min()} to {values.max()}")
    spec = ctx.options.get("classes")
    if spec:
        classes = parse_classes(spec)
        known = {v for _, v in classes}
        extra = [int(v) for v in values if int(v) not in known]
        if extra:
            raise ParseError("mask values", f"only the named class values {sorted(known)}",
                             f"values {extra[:10]} not named in classes")
    else:
        classes = [(f"class_{int(v)}", int(v)) for v in values]
    by_value = dict(zip((int(v) for v in values), (int(c) for c in counts)))
    fractions = [by_value.get(v, 0) / float(mask.size) for _, v in classes]
    mask_kind = str(ctx.options.get("mask_kind", "annotation"))
    if mask_kind not in ("annotation", "ground_truth"):
        raise ParseError("option mask_kind", "annotation or ground_truth", repr(mask_kind))
    # Labels are stored as the smallest unsigned type that holds them (the schema's uint8/uint16).
    small = np.uint8 if (not values.size or values.max() <= 255) else np.uint16
    store = np.ascontiguousarray(mask.astype(small, copy=False))
    tile = _tile(ctx)
    sha, index_sha = ctx.put_chunked(store, chunks=(min(tile, shape[0]), min(tile, shape[1])))
    locator = f"mask/for={image_id}"
    version = ctx.options.get("image_version")
    annotator = ctx.options.get("annotator")
    row = {"record_id": ctx.record_id(locator), "image_id": image_id,
           "image_version": int(version) if version is not None else None, "mask_kind": mask_kind,
           "height": shape[0], "width": shape[1],
           "class_names": [n for n, _ in classes], "class_values": [v for _, v in classes],
           "class_fractions": fractions, "array_sha256": sha, "array_index_sha256": index_sha,
           "annotator": str(annotator) if annotator is not None else None,
           "metadata_json": _dumps({"reader": read.metadata, "pair": ctx.options.get("pair"),
                                    "dtype_in_file": str(mask.dtype)}),
           "file_format": read.file_format, "source_name": ctx.filename, "source_sha256": ctx.source_sha256,
           "source_locator": locator}
    result = ParseResult()
    result.add_rows("segmentations", [row])
    result.warnings.extend(read.warnings)
    return result


def _p(name: str, detect: Any, desc: str, kind: str = "image", parse: Any = parse_image) -> Parser:
    return Parser(name=name, version=PARSER_VERSION, kind=kind, detect=detect, parse=parse, description=desc)


PARSERS = [
    _p("image-tiff", detect_tiff, "TIFF/BigTIFF micrographs (FEI, Zeiss, Olympus SIS, ImageJ, OME) → micrographs"),
    _p("image-mrc", detect_mrc, "MRC/CCP4 maps, image stacks and volumes → micrographs"),
    _p("image-png", detect_png, "PNG micrographs (pixel size from options) → micrographs"),
    _p("image-jpeg", detect_jpeg, "JPEG micrographs (pixel size from options) → micrographs"),
    _p("image-dm", detect_dm_image, "Gatan DM3/DM4 images (gpl extra; --kind image) → micrographs"),
    _p("image-ser", detect_ser, "FEI TIA SER images (gpl extra) → micrographs"),
    _p("image-emd", detect_emd, "Velox / Berkeley EMD images (gpl extra) → micrographs"),
    _p("mask-image", detect_mask, "PNG/TIFF/MRC label images for a micrograph (--kind mask) → segmentations",
       kind="mask", parse=parse_mask),
]
