"""Gatan DigitalMicrograph DM3/DM4 EELS spectra and spectrum images → ``spectrum_images`` + ``spectra``.

Read through rosettasciio (``rsciio.digitalmicrograph``), an optional dependency under GPL-3.0,
installed by matlake's ``gpl`` extra (``pip install "matlake[gpl]"``).  Without it a DM file
still gets its ledger row: ``failed``, saying which extra to install.  The ledger keys a
failure by the parser version, kind and options it was tried with, so once the extra is
installed the file is read by ingesting it with another kind (``--kind spectrum`` after an
automatic attempt) or by a newer parser version.

A spectrum image (an EELS line scan or map) becomes one ``spectrum_images`` row whose data
cube is kept exactly as an array object, navigation axes first and the energy axis last
(rosettasciio's axis list is reordered the same way), and one ``spectra`` child row per
pixel with ``parent_id``, ``pixel_index`` (in the parent's navigation-axis order) and
``position`` (offset + index * scale, in the navigation axes' unit).  A single spectrum
becomes one ``spectra`` row.  The signal axis is the one whose unit is an energy (eV or keV):
rosettasciio's ``navigate`` flags are not trusted, since some files (the shared line scan
among them) store the energy axis first and come back with it flagged as navigation.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import warnings
from datetime import datetime
from typing import Any

import numpy as np

from matlake.ingest.base import LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult
from matlake.ingest.spectra import PARSER_VERSION, axis_unit_factor, dumps, spectrum_row

GPL_HINT = 'pip install "matlake[gpl]" (rosettasciio, GPL-3.0)'
MAX_PIXELS = 4_000_000  # children per file: beyond this the rows would not fit a commit


def detect_dm(head: bytes, filename: str) -> bool:
    """DM3: version 3, a 4-byte root length, byte order 0/1; DM4: version 4, an 8-byte length.
    Then the root tag group's 'sorted' and 'open' flags, each 0 or 1."""
    if len(head) < 18:
        return False
    version = struct.unpack(">I", head[:4])[0]
    if version == 3:
        order, flags = struct.unpack(">I", head[8:12])[0], head[12:14]
    elif version == 4:
        order, flags = struct.unpack(">I", head[12:16])[0], head[16:18]
    else:
        return False
    return order in (0, 1) and all(b in (0, 1) for b in flags)


def _reader() -> tuple[Any, tuple[type[BaseException], ...]]:
    """rsciio's DM reader and the exceptions it raises on malformed files."""
    try:
        from rsciio import exceptions as rx
        from rsciio.digitalmicrograph import file_reader
    except ImportError as exc:
        raise ParseError("reader", f"rosettasciio to read Gatan DM3/DM4 files: {GPL_HINT}",
                         f"rsciio is not installed ({exc})") from exc
    # UnboundLocalError: rsciio 0.15 reaches an unset variable on some corrupt tag trees (found by fuzzing);
    # caught only around its own call, so it cannot hide one of ours.
    errors = (rx.ByteOrderError, rx.DM3FileVersionError, rx.DM3TagError, rx.DM3DataTypeError, rx.DM3TagTypeError,
              rx.DM3TagIDError, UnboundLocalError)
    return file_reader, errors


def _read(data: bytes, ctx: ParseContext) -> list[dict[str, Any]]:
    file_reader, reader_errors = _reader()
    suffix = ".dm4" if data[:4] == b"\x00\x00\x00\x04" else ".dm3"
    path, tmp = ctx.content_path, None
    if path is None:  # rsciio reads paths only
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        path = tmp
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return file_reader(path)
    except (*LIBRARY_INPUT_ERRORS, *reader_errors, struct.error) as exc:
        raise ParseError("DM tags", "a readable DigitalMicrograph file", f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        if isinstance(exc.errno, int):  # a real I/O failure (disk, permissions): not the file's fault
            raise
        # rsciio reports a corrupt tag as IOError(message, value), which leaves errno a string
        raise ParseError("DM tags", "a readable DigitalMicrograph file", f"{exc.errno} {exc.strerror}") from exc
    finally:
        if tmp:
            os.unlink(tmp)


def _plain(obj: Any) -> Any:
    """A metadata tree with numpy values as plain numbers (json-ready)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 4096 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    return obj


def _path(tree: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def _acquired(meta: dict) -> datetime | None:
    date, time = _path(meta, "General", "date"), _path(meta, "General", "time")
    if not date:
        return None
    try:
        return datetime.fromisoformat(f"{date}T{time}" if time else str(date)).replace(tzinfo=None)
    except ValueError:
        return None


def parse_dm(data: bytes, ctx: ParseContext) -> ParseResult:
    """A DM3/DM4 file → a spectrum image (parent + one child spectrum per pixel) or one spectrum."""
    signals = _read(data, ctx)
    result = ParseResult()
    kept = 0
    for k, signal in enumerate(signals):
        where = f"signal {k}" if len(signals) > 1 else "signal"
        arr = np.asarray(signal.get("data"))
        axes = list(signal.get("axes") or [])
        if arr.ndim == 0 or len(axes) != arr.ndim:
            raise ParseError(f"{where} axes", f"one axis per array dimension ({arr.ndim})", f"{len(axes)} axes")
        units = [str(a.get("units") or "") for a in axes]
        energy = [i for i, u in enumerate(units) if u.strip().lower() in ("ev", "kev")]
        if not energy:
            result.warnings.append(f"{where}: no energy axis (units {units}); not a spectrum, skipped")
            continue
        if len(energy) > 1:
            raise ParseError(f"{where} axes", "one energy axis (eV)", f"units {units}")
        sig = energy[0]
        order = [i for i in range(arr.ndim) if i != sig] + [sig]
        cube = np.moveaxis(arr, sig, -1)
        if not np.issubdtype(cube.dtype, np.number) or np.iscomplexobj(cube):
            raise ParseError(f"{where} data", "real numbers", str(cube.dtype))
        scales = [float(axes[i].get("scale", 1.0)) for i in order]
        offsets = [float(axes[i].get("offset", 0.0)) for i in order]
        names = [str(axes[i].get("name") or f"axis {i}") for i in order]
        axis_units = [units[i] for i in order]
        unit, factor = axis_unit_factor(axis_units[-1], f"{where} energy axis unit", allow_wavelength=False)
        n = cube.shape[-1]
        axis = (offsets[-1] + scales[-1] * np.arange(n)) * factor
        meta = _plain(signal.get("metadata") or {})
        original = _plain(signal.get("original_metadata") or {})
        signal_type = str(_path(meta, "Signal", "signal_type") or "")
        technique = "eels" if signal_type.upper() in ("EELS", "") else "other"
        beam = _path(meta, "Acquisition_instrument", "TEM", "beam_energy")  # keV in rsciio's tree
        beam_ev = float(beam) * 1e3 if isinstance(beam, (int, float)) and beam > 0 else None
        conv = _path(meta, "Acquisition_instrument", "TEM", "convergence_angle")
        coll = _path(meta, "Acquisition_instrument", "TEM", "Detector", "EELS", "collection_angle")
        instrument = _path(meta, "Acquisition_instrument", "TEM", "microscope")
        title = _path(meta, "General", "title")
        measured_at = _acquired(meta)
        common = {"technique": technique, "sample": None, "instrument": instrument, "beam_energy": beam_ev,
                  "measured_at": measured_at, "file_format": "dm4" if data[:4] == b"\x00\x00\x00\x04" else "dm3",
                  "source_name": ctx.filename, "source_sha256": ctx.source_sha256}
        spectrum_cols = {"element": None, "edge": None, "intensity_unit": "counts",
                         "intensity_quantity": "counts", "measurement_mode": "EELS" if technique == "eels" else None,
                         "convergence_angle": float(conv) if isinstance(conv, (int, float)) else None,
                         "collection_angle": float(coll) if isinstance(coll, (int, float)) else None,
                         "instrument": instrument, "beam_energy": beam_ev, "measured_at": measured_at}
        quantity = "energy_loss" if technique == "eels" else "energy"
        nav_shape = cube.shape[:-1]
        npix = int(np.prod(nav_shape)) if nav_shape else 1
        if npix > MAX_PIXELS:
            raise ParseError(f"{where} shape", f"at most {MAX_PIXELS} pixels", f"{list(cube.shape)}")
        sig_locator = f"signal={k}"
        if not nav_shape:
            row = spectrum_row(ctx, sig_locator, axis, cube.astype(float), technique=technique, axis_unit=unit,
                               axis_quantity=quantity, source_kind="measured", file_format=common["file_format"],
                               metadata={"title": title, "metadata": meta, "original_metadata": original},
                               **spectrum_cols)
            result.add_rows("spectra", [row])
            kept += 1
            continue
        parent_id = ctx.record_id(sig_locator)
        parent = {
            "record_id": parent_id, **common,
            "shape": [int(s) for s in cube.shape], "axis_names": names, "axis_scales": scales,
            "axis_offsets": offsets, "axis_units": axis_units, "array_sha256": ctx.put_array(cube),
            "dtype": str(cube.dtype), "n_spectra": npix,
            "metadata_json": dumps({"title": title, "metadata": meta, "original_metadata": original,
                                    "axis_order_in_file": [str(axes[i].get("name")) for i in range(arr.ndim)],
                                    "stored_axis_order": "navigation axes first, energy axis last"}),
            "source_locator": sig_locator,
        }
        if not all(math.isfinite(v) for v in scales + offsets):
            raise ParseError(f"{where} axes", "finite scales and offsets", f"scales {scales}, offsets {offsets}")
        children = []
        nav_units = axis_units[:-1]
        position_unit = nav_units[0] if len(set(nav_units)) == 1 else ",".join(nav_units)
        for index in np.ndindex(*nav_shape):
            label = ",".join(str(i) for i in index)
            locator = f"{sig_locator}/pixel={label}"
            position = [offsets[d] + scales[d] * index[d] for d in range(len(index))]
            row = spectrum_row(ctx, locator, axis, cube[index].astype(float), technique=technique, axis_unit=unit,
                               axis_quantity=quantity, source_kind="measured", file_format=common["file_format"],
                               metadata={"title": title}, **spectrum_cols)
            row.update(parent_id=parent_id, pixel_index=[int(i) for i in index], position=position,
                       position_unit=position_unit)
            children.append(row)
        result.add_rows("spectrum_images", [parent])
        result.add_rows("spectra", children)
        kept += 1
    if not kept:
        raise ParseError("signals", "an EELS spectrum or spectrum image (an axis in eV)",
                         f"{len(signals)} signal(s) without an energy axis (a DM image: ingest it with --kind image)")
    return result


PARSERS = [
    Parser(name="spectrum-dm", version=PARSER_VERSION, kind="spectrum", detect=detect_dm, parse=parse_dm,
           description="Gatan DM3/DM4 EELS spectra and spectrum images (gpl extra) → spectrum_images + spectra"),
]
