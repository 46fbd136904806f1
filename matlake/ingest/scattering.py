"""Coherent scattering series: NumPy ``.npz``/``.npy``, HDF5/NeXus and TIFF stacks → ``scattering_series``.

Parsers (kind ``scattering``; each answers only to ``--kind scattering``, since an npz, an HDF5 file or a
TIFF may hold anything):

- ``scattering-npz``   a NumPy archive with a declared key map (options below name the arrays);
- ``scattering-npy``   one NumPy array, the frames; everything else comes from options;
- ``scattering-hdf5``  HDF5 through h5py with a map of dataset paths; without options the NeXus layout:
  frames ``/entry/data/data``, calibration under ``/entry/instrument/detector`` (``x_pixel_size``,
  ``distance``, ``beam_center_x``/``_y``, ``pixel_mask`` where 0 = good pixel) and the photon energy or
  wavelength under ``/entry/instrument/beam`` (``incident_energy``, ``incident_wavelength``) or
  ``/entry/instrument/monochromator`` (``energy``, ``wavelength``), converted from their ``units``
  attribute (m, mm, µm, nm, Å; eV, keV);
- ``scattering-tiff``  a multi-page TIFF (one frame per page) through tifffile; calibration from options.

Options (``--option KEY=VALUE``).  Array options name an npz key or an HDF5 path:
``frames`` (one 3D/2D array, or comma-separated 2D arrays / an HDF5 group of 2D datasets, stacked in
order), ``positions`` (scan positions, (n, 2), unit ``positions_unit``, default px), ``positions_select``
(integer indices picking the frames' rows of ``positions``), ``probe`` (complex probe, frame-shaped),
``times`` (s; also a comma-separated list of numbers), ``mask`` (valid pixels, non-zero = valid).
Calibration options are a number (SI: ``pixel_size`` m, ``distance`` m, ``wavelength`` m, ``energy`` eV,
``beam_center`` "x,y" px) or the key/path holding it; ``calibration=none`` accepts a series without
calibration (kept as null, said in ``metadata_json``).  Also ``sample``, ``system``, ``facility``,
``source_kind`` (measured | simulated).

Bad input, each a ParseError naming field, expected, found: frames of inconsistent shape, negative or
NaN counts, a time axis that is not strictly increasing (or of the wrong length), missing calibration, a
key or HDF5 path that does not exist, positions/probe/mask that do not fit the frames.

Frames are ONE chunked object (n_frames, height, width), one chunk per frame, stored exactly as the
file holds them; positions and probe are chunked objects named in ``metadata_json``
(``{"positions": {"sha256", "index_sha256", "shape", "dtype", "unit", "from"}, "probe": {...}}``).
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from matlake.ingest.base import LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult, json_default

PARSER_VERSION = "1"

# hc/e in eV·m from the SI defining constants (λ [m] = HC_EV_M / E [eV]).
HC_EV_M = 6.62607015e-34 * 299792458.0 / 1.602176634e-19

# What numpy's zip reader raises on a truncated or corrupt archive, besides the usual library errors.
NPZ_ERRORS = (*LIBRARY_INPUT_ERRORS, OSError, zipfile.BadZipFile, zlib.error)

ARRAY_OPTIONS = ("frames", "positions", "positions_select", "probe", "times", "mask")
CALIBRATION_OPTIONS = ("pixel_size", "distance", "energy", "wavelength", "beam_center")
OTHER_OPTIONS = ("calibration", "positions_unit", "sample", "system", "facility", "source_kind")
OPTIONS = ARRAY_OPTIONS + CALIBRATION_OPTIONS + OTHER_OPTIONS

NEXUS = {
    "frames": "/entry/data/data",
    "pixel_size": "/entry/instrument/detector/x_pixel_size",
    "distance": "/entry/instrument/detector/distance",
    "beam_center_x": "/entry/instrument/detector/beam_center_x",
    "beam_center_y": "/entry/instrument/detector/beam_center_y",
    "pixel_mask": "/entry/instrument/detector/pixel_mask",
    "energy": ("/entry/instrument/beam/incident_energy", "/entry/instrument/monochromator/energy"),
    "wavelength": ("/entry/instrument/beam/incident_wavelength", "/entry/instrument/monochromator/wavelength"),
}

LENGTH_M = {"m": 1.0, "meter": 1.0, "metre": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6,
            "nm": 1e-9, "a": 1e-10, "å": 1e-10, "angstrom": 1e-10, "ang": 1e-10, "pm": 1e-12}
ENERGY_EV = {"ev": 1.0, "kev": 1e3, "mev": 1e6}

__all__ = ["PARSERS", "HC_EV_M", "series_row", "parse_npz", "parse_npy", "parse_hdf5", "parse_tiff"]


# --------------------------------------------------------------------------- sources


class _Arrays:
    """Named arrays of one file: ``get(name)`` returns the array or raises ParseError naming the key/path."""

    what = "key"

    def names(self) -> list[str]:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def get(self, name: str, field: str) -> np.ndarray:
        raise NotImplementedError

    def units(self, name: str) -> str | None:
        return None

    def missing(self, name: str, field: str) -> ParseError:
        listed = ", ".join(self.names()[:20]) or "none"
        return ParseError(f"{field} ({self.what} {name})", f"an existing {self.what}", f"no such {self.what}; "
                          f"the file has: {listed}")


class _Npz(_Arrays):
    def __init__(self, data: bytes) -> None:
        try:
            self.npz = np.load(io.BytesIO(data), allow_pickle=False)
            self.keys = list(self.npz.files)
        except NPZ_ERRORS as exc:
            raise ParseError("npz archive", "a readable NumPy .npz (zip of .npy members)",
                             f"{type(exc).__name__}: {exc}") from exc

    def names(self) -> list[str]:
        return self.keys

    def has(self, name: str) -> bool:
        return name in self.keys

    def get(self, name: str, field: str) -> np.ndarray:
        if name not in self.keys:
            raise self.missing(name, field)
        try:
            return np.asarray(self.npz[name])
        except NPZ_ERRORS as exc:
            raise ParseError(f"{field} (key {name})", "a readable array without pickled objects",
                             f"{type(exc).__name__}: {exc}") from exc


class _Hdf5(_Arrays):
    what = "HDF5 path"

    def __init__(self, data: bytes, content_path: str | None) -> None:
        import h5py

        try:
            self.file = h5py.File(content_path if content_path else io.BytesIO(bytes(data)), "r")
        except (*LIBRARY_INPUT_ERRORS, OSError) as exc:
            raise ParseError("HDF5 file", "a readable HDF5 file", f"{type(exc).__name__}: {exc}") from exc

    def names(self) -> list[str]:
        out: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if len(out) < 40 and hasattr(obj, "shape"):
                out.append("/" + name)

        try:
            self.file.visititems(visit)
        except (*LIBRARY_INPUT_ERRORS, OSError):
            pass
        return out

    def has(self, name: str) -> bool:
        try:
            return name in self.file
        except (*LIBRARY_INPUT_ERRORS, OSError):
            return False

    def node(self, name: str, field: str) -> Any:
        if not self.has(name):
            raise self.missing(name, field)
        return self.file[name]

    def get(self, name: str, field: str) -> np.ndarray:
        node = self.node(name, field)
        if not hasattr(node, "shape"):
            raise ParseError(f"{field} (HDF5 path {name})", "a dataset", "a group")
        try:
            return np.asarray(node[()])
        except (*LIBRARY_INPUT_ERRORS, OSError) as exc:
            raise ParseError(f"{field} (HDF5 path {name})", "a readable dataset",
                             f"{type(exc).__name__}: {exc}") from exc

    def units(self, name: str) -> str | None:
        try:
            value = self.file[name].attrs.get("units")
        except (*LIBRARY_INPUT_ERRORS, OSError):
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, np.ndarray):
            value = value.item() if value.size == 1 else None
        return None if value is None else str(value).strip()

    def close(self) -> None:
        self.file.close()


class _Nothing(_Arrays):
    """No named arrays (a single .npy or a TIFF): every array option must be a literal."""

    what = "key"

    def names(self) -> list[str]:
        return []

    def has(self, name: str) -> bool:
        return False

    def get(self, name: str, field: str) -> np.ndarray:
        raise ParseError(f"option {field}", "a number or list of numbers (this format holds one array only)",
                         repr(name))


# --------------------------------------------------------------------------- checks


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _numbers(text: Any) -> list[float] | None:
    if isinstance(text, (list, tuple, np.ndarray)):
        vals = [_number(v) for v in text]
    else:
        vals = [_number(p) for p in str(text).split(",")]
    return None if any(v is None for v in vals) else [float(v) for v in vals]  # type: ignore[arg-type]


def _check_counts(frames: np.ndarray) -> None:
    """Counts must be real, finite and non-negative; checked frame by frame (bounded memory)."""
    if frames.dtype.kind not in "uif":
        raise ParseError("frames dtype", "real numeric counts (integer or float)", str(frames.dtype))
    if frames.dtype.kind == "u":
        return
    for i in range(frames.shape[0]):
        f = frames[i]
        if f.dtype.kind == "f":
            bad = ~np.isfinite(f)
            if bad.any():
                raise ParseError("frames", "finite counts", f"{int(bad.sum())} NaN/inf values in frame {i}"
                                 f" (first at pixel {tuple(int(v) for v in np.argwhere(bad)[0])})")
        neg = f < 0
        if neg.any():
            raise ParseError("frames", "non-negative counts", f"{int(neg.sum())} negative values in frame {i} "
                             f"(min {f.min().item()!r} at pixel {tuple(int(v) for v in np.argwhere(neg)[0])})")


def _stack(arrays: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """2D frames of one shape stacked into (n, H, W); a different shape is a ParseError naming it."""
    first_name, first = arrays[0]
    for name, arr in arrays:
        if arr.ndim != 2:
            raise ParseError(f"frames ({name})", "a 2D frame", f"shape {list(arr.shape)}")
        if arr.shape != first.shape:
            raise ParseError("frames", f"frames of one shape {list(first.shape)} (as {first_name})",
                             f"{name} of shape {list(arr.shape)}")
    return np.stack([a for _, a in arrays])


def _as_frames(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise ParseError(f"frames ({where})", "a (n_frames, height, width) or (height, width) array",
                         f"shape {list(arr.shape)}")
    return arr


# --------------------------------------------------------------------------- calibration


def _scaled(value: float, unit: str | None, table: dict[str, float], default: str, field: str) -> float:
    if unit in (None, ""):
        return value * table[default]
    factor = table.get(str(unit).strip().lower())
    if factor is None:
        raise ParseError(f"{field} units", f"one of {', '.join(sorted(table))}", repr(unit))
    return value * factor


def _scalar(src: _Arrays, name: str, field: str) -> float:
    arr = src.get(name, field)
    if arr.size != 1 or arr.dtype.kind not in "uif":
        raise ParseError(f"{field} ({src.what} {name})", "one number", f"{arr.dtype} array of shape {list(arr.shape)}")
    return float(arr.reshape(-1)[0])


def _calibration(src: _Arrays, opts: dict[str, Any], nexus: bool, meta: dict[str, Any]) -> dict[str, Any]:
    """pixel_size (m), distance (m), wavelength (m), energy (eV), beam centre (px) from options or the file."""
    found: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(field: str, table: dict[str, float] | None, default_unit: str) -> None:
        opt = opts.get(field)
        if opt is not None and str(opt).strip() != "":
            value = _number(opt)
            if value is not None:
                found[field], sources[field] = value, "option"
                return
            path = str(opt)
            raw = _scalar(src, path, field)
            found[field] = raw if table is None else _scaled(raw, src.units(path), table, default_unit, field)
            sources[field] = f"{src.what} {path}"
            return
        if nexus:
            paths = NEXUS[field]
            for path in (paths,) if isinstance(paths, str) else paths:
                if src.has(path):
                    raw = _scalar(src, path, field)
                    found[field] = _scaled(raw, src.units(path), table or {}, default_unit, field) if table else raw
                    sources[field] = f"NeXus {path}"
                    return

    take("pixel_size", LENGTH_M, "m")
    take("distance", LENGTH_M, "m")
    take("energy", ENERGY_EV, "ev")
    take("wavelength", LENGTH_M, "m")
    for field in ("pixel_size", "distance", "energy", "wavelength"):
        if field in found and not (math.isfinite(found[field]) and found[field] > 0):
            raise ParseError(field, "a positive finite number", f"{found[field]!r} ({sources[field]})")
    if "energy" in found and "wavelength" in found:
        implied = HC_EV_M / found["energy"]
        if abs(implied - found["wavelength"]) > 1e-3 * implied:
            raise ParseError("wavelength", f"hc/E = {implied:.6g} m for energy {found['energy']:.6g} eV",
                             f"{found['wavelength']:.6g} m")
    elif "energy" in found:
        found["wavelength"], sources["wavelength"] = HC_EV_M / found["energy"], "hc/energy"
    elif "wavelength" in found:
        found["energy"], sources["energy"] = HC_EV_M / found["wavelength"], "hc/wavelength"

    center = opts.get("beam_center")
    if center is not None:
        vals = _numbers(center)
        if vals is None:
            arr = src.get(str(center), "beam_center").astype(np.float64).reshape(-1)
            vals, sources["beam_center"] = [float(v) for v in arr], f"{src.what} {center}"
        else:
            sources["beam_center"] = "option"
        if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
            raise ParseError("beam_center", "two finite numbers x,y (px)", repr(center))
        found["beam_center_x"], found["beam_center_y"] = vals
    elif nexus and src.has(NEXUS["beam_center_x"]) and src.has(NEXUS["beam_center_y"]):
        for axis in ("x", "y"):
            path = NEXUS[f"beam_center_{axis}"]
            raw, unit = _scalar(src, path, f"beam_center_{axis}"), src.units(path)
            if unit and unit.lower() not in ("pixel", "pixels", "px"):
                if "pixel_size" not in found:
                    raise ParseError(f"beam_center_{axis}", "pixels, or a length with a pixel size", f"{raw} {unit}")
                raw = _scaled(raw, unit, LENGTH_M, "m", f"beam_center_{axis}") / found["pixel_size"]
            found[f"beam_center_{axis}"] = raw
        sources["beam_center"] = f"NeXus {NEXUS['beam_center_x']}"

    uncalibrated = str(opts.get("calibration", "")).strip().lower() in ("none", "null")
    for field, hint in (("pixel_size", "pixel_size=METRES"), ("distance", "distance=METRES"),
                        ("energy", "energy=EV or wavelength=METRES")):
        if field not in found and not uncalibrated:
            where = "the NeXus detector/beam groups or " if nexus else ""
            raise ParseError(field, f"a {field.replace('_', ' ')} in {where}the options ({hint}; "
                             "calibration=none accepts an uncalibrated series)", "none")
    absent = [f for f in ("pixel_size", "distance", "energy") if f not in found]
    if uncalibrated and absent:
        meta["uncalibrated"] = "accepted by calibration=none; absent: " + ", ".join(absent)
    meta["calibration_sources"] = sources
    return found


# --------------------------------------------------------------------------- rows


def _chunked_ref(ctx: ParseContext, arr: np.ndarray, **extra: Any) -> dict[str, Any]:
    arr = np.ascontiguousarray(arr)
    sha, index_sha = ctx.put_chunked(arr)
    return {"sha256": sha, "index_sha256": index_sha, "shape": [int(s) for s in arr.shape], "dtype": str(arr.dtype),
            **extra}


def _times(src: _Arrays, opts: dict[str, Any], n: int) -> list[float] | None:
    spec = opts.get("times")
    if spec is None or str(spec).strip() == "":
        return None
    vals = _numbers(spec)
    arr = np.asarray(vals, dtype=np.float64) if vals is not None else \
        src.get(str(spec), "times").astype(np.float64).reshape(-1)
    if arr.size != n:
        raise ParseError("times", f"one time per frame ({n})", f"{arr.size} times")
    if not np.all(np.isfinite(arr)):
        raise ParseError("times", "finite times (s)", f"{int((~np.isfinite(arr)).sum())} NaN/inf")
    steps = np.diff(arr)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise ParseError("times", "strictly increasing times (s)",
                         f"t[{i}] = {float(arr[i])!r} then t[{i + 1}] = {float(arr[i + 1])!r}")
    return [float(t) for t in arr]


def series_row(ctx: ParseContext, frames: np.ndarray, src: _Arrays, *, file_format: str, locator: str,
               nexus: bool = False, meta: dict[str, Any] | None = None,
               default_mask: Callable[[], np.ndarray | None] | None = None) -> ParseResult:
    """Validate ``frames`` (n, H, W) and the options, store the objects, and return one ``scattering_series`` row."""
    from matlake.schemas.scattering import SOURCE_KINDS

    opts = {str(k): v for k, v in ctx.options.items() if not str(k).startswith("_")}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ParseError("options", f"options among {', '.join(OPTIONS)}", ", ".join(unknown))
    meta = dict(meta or {})
    result = ParseResult()
    _check_counts(frames)
    n, height, width = (int(s) for s in frames.shape)
    cal = _calibration(src, opts, nexus, meta)
    times = _times(src, opts, n)

    mask = None
    if opts.get("mask") not in (None, ""):
        raw = src.get(str(opts["mask"]), "mask")
        mask = (raw != 0).astype(np.uint8)
        meta["mask_from"] = f"{src.what} {opts['mask']} (non-zero = valid)"
    elif default_mask is not None:
        mask = default_mask()
    if mask is not None and mask.shape != (height, width):
        raise ParseError("mask", f"a frame-shaped mask {[height, width]}", f"shape {list(mask.shape)}")

    if opts.get("positions") not in (None, ""):
        pos = src.get(str(opts["positions"]), "positions")
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.dtype.kind not in "uif":
            raise ParseError("positions", "an (n, 2) numeric array", f"{pos.dtype} shape {list(pos.shape)}")
        if opts.get("positions_select") not in (None, ""):
            sel = src.get(str(opts["positions_select"]), "positions_select").reshape(-1)
            if sel.dtype.kind not in "iu" or sel.size != n or (sel.size and (sel.min() < 0 or sel.max() >= len(pos))):
                raise ParseError("positions_select", f"{n} integer row indices of positions (0..{len(pos) - 1})",
                                 f"{sel.dtype} of {sel.size} values")
            meta["positions_rows"] = [int(i) for i in sel]
            pos = pos[sel]
        if pos.shape[0] != n:
            raise ParseError("positions", f"one position per frame ({n}) or positions_select=KEY",
                             f"{pos.shape[0]} positions")
        if not np.all(np.isfinite(pos)):
            raise ParseError("positions", "finite positions", "NaN/inf")
        meta["positions"] = _chunked_ref(ctx, pos, unit=str(opts.get("positions_unit", "px")),
                                         axes="row, column", **{"from": str(opts["positions"])})
    if opts.get("probe") not in (None, ""):
        probe = src.get(str(opts["probe"]), "probe")
        if probe.shape != (height, width) or probe.dtype.kind not in "iufc":
            raise ParseError("probe", f"a numeric frame-shaped probe {[height, width]}",
                             f"{probe.dtype} shape {list(probe.shape)}")
        meta["probe"] = _chunked_ref(ctx, probe, **{"from": str(opts["probe"])})

    source_kind = str(opts.get("source_kind", "measured"))
    if source_kind not in SOURCE_KINDS:
        raise ParseError("option source_kind", " or ".join(SOURCE_KINDS), repr(source_kind))
    sha, index_sha = ctx.put_chunked(frames, chunks=(1, height, width))
    mask_sha = mask_index = None
    if mask is not None:
        mask_sha, mask_index = ctx.put_chunked(mask, chunks=(height, width))
    sums = np.array([float(frames[i].sum(dtype=np.float64)) for i in range(n)])
    pixel, dist, lam = cal.get("pixel_size"), cal.get("distance"), cal.get("wavelength")
    q_per_pixel = 2 * math.pi * pixel / (dist * lam) if pixel and dist and lam else None

    def text(key: str) -> str | None:
        value = opts.get(key)
        return None if value in (None, "") else str(value)

    row = {
        "record_id": ctx.record_id(locator), "source_kind": source_kind, "system": text("system"),
        "n_frames": n, "height": height, "width": width, "dtype": str(frames.dtype),
        "pixel_size": pixel, "distance": dist, "wavelength": lam, "energy": cal.get("energy"),
        "beam_center_x": cal.get("beam_center_x"), "beam_center_y": cal.get("beam_center_y"),
        "q_per_pixel": q_per_pixel, "times": times,
        "frames_sha256": sha, "frames_index_sha256": index_sha,
        "mask_sha256": mask_sha, "mask_index_sha256": mask_index,
        "total_counts_mean": float(sums.mean()), "generator_json": None, "label_json": None,
        "sample": text("sample"), "facility": text("facility"),
        "metadata_json": json.dumps(meta, default=json_default, sort_keys=True),
        "file_format": file_format, "source_name": ctx.filename, "source_sha256": ctx.source_sha256,
        "source_locator": locator,
    }
    result.add_rows("scattering_series", [row])
    return result


# --------------------------------------------------------------------------- parsers


def parse_npz(data: bytes, ctx: ParseContext) -> ParseResult:
    """A NumPy archive with a declared key map → one ``scattering_series`` row."""
    src = _Npz(bytes(data))
    spec = ctx.options.get("frames")
    if spec in (None, ""):
        if src.has("data"):
            spec = "data"
        else:
            cubes = [k for k in src.names() if src.get(k, "frames").ndim == 3]
            if len(cubes) != 1:
                raise ParseError("option frames", "frames=KEY naming the frames array (no key 'data', and not "
                                 "exactly one 3D array)", f"keys {', '.join(src.names()) or 'none'}")
            spec = cubes[0]
    keys = [k.strip() for k in str(spec).split(",")]
    if len(keys) == 1:
        frames = _as_frames(src.get(keys[0], "frames"), f"key {keys[0]}")
    else:
        frames = _stack([(k, src.get(k, "frames")) for k in keys])
    used = {*keys, *(str(ctx.options[o]) for o in ARRAY_OPTIONS + CALIBRATION_OPTIONS if ctx.options.get(o))}
    meta = {"frames_from": keys, "unused_keys": [k for k in src.names() if k not in used]}
    return series_row(ctx, frames, src, file_format="npz", locator="series", meta=meta)


def parse_npy(data: bytes, ctx: ParseContext) -> ParseResult:
    """One NumPy array of frames; calibration and times from options → one ``scattering_series`` row."""
    for key in ("frames", "positions", "positions_select", "probe", "mask"):
        if ctx.options.get(key) not in (None, ""):
            raise ParseError(f"option {key}", "no array options for a single .npy (use an .npz)",
                             repr(ctx.options[key]))
    try:
        arr = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except NPZ_ERRORS as exc:
        raise ParseError("npy array", "a readable NumPy .npy without pickled objects",
                         f"{type(exc).__name__}: {exc}") from exc
    return series_row(ctx, _as_frames(np.asarray(arr), "npy"), _Nothing(), file_format="npy", locator="series")


def parse_hdf5(data: bytes, ctx: ParseContext) -> ParseResult:
    """HDF5/NeXus frames and calibration by dataset paths (NeXus defaults) → one ``scattering_series`` row."""
    src = _Hdf5(data, ctx.content_path)
    try:
        nexus = ctx.options.get("frames") in (None, "")
        path = NEXUS["frames"] if nexus else str(ctx.options["frames"])
        paths = [p.strip() for p in path.split(",")]
        if len(paths) == 1:
            node = src.node(paths[0], "frames")
            if hasattr(node, "shape"):
                frames = _as_frames(src.get(paths[0], "frames"), f"HDF5 path {paths[0]}")
            else:  # a group of 2D frames, in name order
                names = sorted(k for k in node.keys() if hasattr(node[k], "shape"))
                if not names:
                    raise ParseError(f"frames (HDF5 path {paths[0]})", "a dataset or a group of 2D datasets",
                                     "an empty group")
                frames = _stack([(f"{paths[0]}/{k}", src.get(f"{paths[0].rstrip('/')}/{k}", "frames"))
                                 for k in names])
        else:
            frames = _stack([(p, src.get(p, "frames")) for p in paths])
        fmt = "nexus" if src.has("/entry") else "hdf5"

        def nexus_mask() -> np.ndarray | None:
            if not src.has(NEXUS["pixel_mask"]):
                return None
            return (src.get(NEXUS["pixel_mask"], "pixel_mask") == 0).astype(np.uint8)  # NeXus: 0 = good pixel

        return series_row(ctx, frames, src, file_format=fmt, locator=",".join(paths), nexus=True,
                          meta={"frames_from": paths}, default_mask=nexus_mask)
    finally:
        src.close()


def parse_tiff(data: bytes, ctx: ParseContext) -> ParseResult:
    """A multi-page TIFF, one frame per page (every page of one shape) → one ``scattering_series`` row."""
    import tifffile

    for key in ("frames", "positions", "positions_select", "probe", "mask"):
        if ctx.options.get(key) not in (None, ""):
            raise ParseError(f"option {key}", "no array options for a TIFF stack (use an .npz or HDF5)",
                             repr(ctx.options[key]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
                pages = [(f"page {i}", np.asarray(p.asarray())) for i, p in enumerate(tif.pages)]
    except (*LIBRARY_INPUT_ERRORS, struct.error, OSError) as exc:
        raise ParseError("TIFF", "a readable TIFF stack", f"{type(exc).__name__}: {exc}") from exc
    if not pages:
        raise ParseError("TIFF pages", "at least one page", "none")
    for name, arr in pages:
        if arr.ndim != 2:
            raise ParseError(f"frames ({name})", "one grey-level 2D frame per page", f"shape {list(arr.shape)}")
    frames = _stack(pages)
    return series_row(ctx, frames, _Nothing(), file_format="tiff", locator="series")


def detect_npz(head: bytes, filename: str) -> bool:
    return head[:4] == b"PK\x03\x04" and filename.lower().endswith(".npz")


def detect_npy(head: bytes, filename: str) -> bool:
    return head[:6] == b"\x93NUMPY"


def detect_hdf5(head: bytes, filename: str) -> bool:
    return head[:8] == b"\x89HDF\r\n\x1a\n"


def detect_tiff(head: bytes, filename: str) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# An npz, an HDF5 file or a TIFF may hold anything: these readers answer only to --kind scattering.
for _d in (detect_npz, detect_npy, detect_hdf5, detect_tiff):
    _d.explicit_kind_only = True  # type: ignore[attr-defined]


def _p(name: str, detect: Any, parse: Any, desc: str) -> Parser:
    return Parser(name=name, version=PARSER_VERSION, kind="scattering", detect=detect, parse=parse, description=desc)


PARSERS = [
    _p("scattering-npz", detect_npz, parse_npz, "NumPy .npz with a key map (--kind scattering) → scattering_series"),
    _p("scattering-npy", detect_npy, parse_npy, "NumPy .npy frames (--kind scattering) → scattering_series"),
    _p("scattering-hdf5", detect_hdf5, parse_hdf5,
       "HDF5/NeXus by dataset paths (--kind scattering) → scattering_series"),
    _p("scattering-tiff", detect_tiff, parse_tiff, "multi-page TIFF stacks (--kind scattering) → scattering_series"),
]
