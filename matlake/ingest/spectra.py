"""Spectra readers: XDI, EMSA/MSA, pymatgen/Materials Project XAS JSON and text/CSV columns → ``spectra``.

Formats (parser name → ``file_format``):

- ``spectrum-xdi``   XDI 1.0 X-ray absorption files (``# XDI/1.0`` first line)
- ``spectrum-emsa``  EMSA/MAS 1.0 spectral data files (``#FORMAT : EMSA/MAS``), EELS and others
- ``spectrum-xas-json``  pymatgen ``XAS`` dicts and Materials Project XAS documents (``mp-xas-json``),
  with the structure they were computed for as a ``structures`` row
- ``spectrum-csv``   two- or multi-column text/CSV; chosen only by ``--kind spectrum``, never auto-detected
  (a table of numbers says nothing about being a spectrum)
- Gatan DM3/DM4 spectrum images are read by :mod:`matlake.ingest.spectra_dm` (rosettasciio, the gpl extra).

Every row follows :mod:`matlake.schemas.spectra`: the axis is strictly increasing (an axis scanned
downwards is reversed, and ``metadata_json`` says so), energies and energy losses are in eV (keV is
converted), wavelengths in nm.  Ingest options (``--option KEY=VALUE``) ``sample``, ``element`` and
``edge`` fill those columns when the file is silent (a file value wins; a different option value is
reported as a warning); the CSV reader takes more (see :func:`parse_csv`).

Bad input raises :class:`~matlake.ingest.base.ParseError` naming the field (a header keyword, a column,
a data row), what was expected and what was found: non-monotonic or repeated axis values, NaN or
infinite numbers, columns of different lengths, a missing element/edge where XDI requires them, an
unknown unit, a file cut short.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from matlake.ingest.base import (
    LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult,
    describe_start, json_default, load_json,
)
from matlake.schemas.spectra import TECHNIQUES

PARSER_VERSION = "1.0.0"

__all__ = ["PARSERS", "spectrum_row", "xas_documents", "parse_xdi", "parse_emsa", "parse_xas_json", "parse_csv"]


# --------------------------------------------------------------------------- shared helpers


def dumps(obj: Any) -> str:
    """JSON text of a metadata tree (numpy values and dates made plain)."""
    return json.dumps(obj, default=json_default, sort_keys=True)


def _text(data: bytes, what: str) -> str:
    """Decode a text format: UTF-8, else Latin-1 (old instrument PCs); NUL bytes mean binary content."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ParseError("encoding", f"{what} as text", f"NUL byte at offset {nul} ({describe_start(data)})")
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _finite(token: str, where: str) -> float:
    """A finite number from one text field."""
    try:
        if "_" in token:  # float() accepts "1_0"; no file means that
            raise ValueError
        value = float(token)
    except ValueError:
        raise ParseError(where, "a number", repr(token)) from None
    if not math.isfinite(value):
        raise ParseError(where, "a finite number", repr(token))
    return value


ENERGY_UNITS = {"ev": 1.0, "kev": 1e3}  # factor to eV
LENGTH_UNITS = {"nm": 1.0}  # wavelength axes are stored in nm


def axis_unit_factor(unit: str, where: str, *, allow_wavelength: bool = True) -> tuple[str, float]:
    """('eV' or 'nm', factor to it) for a unit spelling such as 'eV', 'keV', 'nm'; ParseError otherwise."""
    u = unit.strip().lower()
    if u in ENERGY_UNITS:
        return "eV", ENERGY_UNITS[u]
    if allow_wavelength and u in LENGTH_UNITS:
        return "nm", LENGTH_UNITS[u]
    known = "eV, keV" + (", nm" if allow_wavelength else "")
    raise ParseError(where, f"an axis unit ({known})", repr(unit))


def checked_axis(axis: np.ndarray, intensity: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(axis, intensity, reversed) with the axis strictly increasing; ParseError for anything else.

    A strictly decreasing axis (a scan run downwards) is reversed together with its intensity.
    """
    if axis.shape != intensity.shape:
        raise ParseError(f"{where} intensity", f"{axis.size} values, one per axis value", f"{intensity.size} values")
    if axis.size < 2:
        raise ParseError(f"{where} data", "at least 2 points", f"{axis.size}")
    for name, values in (("axis", axis), ("intensity", intensity)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ParseError(f"{where} {name} point {bad[0] + 1}", "a finite number", repr(float(values[bad[0]])))
    step = np.diff(axis)
    reversed_ = bool(np.all(step < 0))
    if reversed_:
        axis, intensity, step = axis[::-1], intensity[::-1], -step[::-1]
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        i = int(bad[0]) + 1  # 0-based index of the offending point in the (possibly reversed) axis
        how = "repeats" if step[bad[0]] == 0 else "goes back to"
        raise ParseError(f"{where} axis point {i + 1}", "strictly increasing (or strictly decreasing) axis values",
                         f"{how} {float(axis[i])!r} after {float(axis[i - 1])!r}")
    return axis, intensity, reversed_


def spectrum_row(
    ctx: ParseContext,
    locator: str,
    axis: Sequence[float] | np.ndarray,
    intensity: Sequence[float] | np.ndarray,
    *,
    technique: str,
    axis_unit: str,
    axis_quantity: str,
    source_kind: str,
    file_format: str,
    metadata: Mapping[str, Any] | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """One ``spectra`` row: checks the axis (strictly increasing, finite, same length as the intensity).

    ``axis`` in ``axis_unit`` ('eV' or 'nm'); other ``columns`` are ``spectra`` columns
    (element, edge, sample, beam_energy in eV, angles in mrad, ...).
    """
    if technique not in TECHNIQUES:
        raise ParseError("technique", f"one of {', '.join(TECHNIQUES)}", repr(technique))
    x, y, reversed_ = checked_axis(np.asarray(axis, dtype=float), np.asarray(intensity, dtype=float), locator)
    meta = dict(metadata or {})
    if reversed_:
        meta["axis_reversed"] = "the file lists the axis in decreasing order; stored increasing"
    return {
        "record_id": ctx.record_id(locator),
        "technique": technique,
        "axis": x.tolist(),
        "axis_unit": axis_unit,
        "axis_quantity": axis_quantity,
        "intensity": y.tolist(),
        "n_points": int(x.size),
        "axis_min": float(x[0]),
        "axis_max": float(x[-1]),
        "source_kind": source_kind,
        "metadata_json": dumps(meta),
        "file_format": file_format,
        "source_name": ctx.filename,  # also for a computed spectrum: the file (or MP blob) it was read from
        "source_sha256": ctx.source_sha256,
        "source_locator": locator,
        **columns,
    }


def _element_symbol(value: str, where: str) -> str:
    from pymatgen.core.periodic_table import Element

    symbol = value.strip()
    symbol = symbol[:1].upper() + symbol[1:].lower()
    if not Element.is_valid_symbol(symbol):
        raise ParseError(where, "a chemical element symbol, e.g. 'Ni'", repr(value))
    return symbol


_EDGE = re.compile(r"^(K|L[1-3]|L2,3|L23|M[1-5]|M4,5|M45|M2,3|M23|N[1-7]|N4,5|N6,7|O[1-5])$", re.I)


def _edge_name(value: str, where: str) -> str:
    edge = value.strip().upper()
    if not _EDGE.match(edge):
        raise ParseError(where, "an absorption edge name (K, L1, L2, L3, L2,3, M4,5, ...)", repr(value))
    return {"L23": "L2,3", "M45": "M4,5", "M23": "M2,3"}.get(edge, edge)


def _fill_from_options(row: dict[str, Any], ctx: ParseContext, warnings_: list[str],
                       keys: Sequence[str] = ("sample", "element", "edge")) -> None:
    """Options fill columns the file left empty; a file value wins over a different option."""
    for key in keys:
        value = ctx.options.get(key)
        if value is None or value == "":
            continue
        if key == "element":
            value = _element_symbol(str(value), "option element")
        elif key == "edge":
            value = _edge_name(str(value), "option edge")
        else:
            value = str(value)
        if row.get(key) in (None, ""):
            row[key] = value
        elif row[key] != value:
            warnings_.append(f"{row['source_locator']}: option {key}={value!r} ignored: the file says {row[key]!r}")


_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _iso_datetime(value: str) -> datetime | None:
    text = value.strip()
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        pass
    for fmt in _DATETIME_FORMATS:
        try:
            return datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- XDI 1.0

_XDI_FIRST = re.compile(rb"^\s*#\s*XDI/1\.\d+")
_XDI_FIELD = re.compile(r"^#\s*([A-Za-z][\w-]*)\.([\w-]+)\s*:\s*(.*?)\s*$")


def detect_xdi(head: bytes, filename: str) -> bool:
    """The first line of an XDI file is ``# XDI/1.0`` followed by optional application versions."""
    return bool(_XDI_FIRST.match(head))


# mu from the XDI dictionary's column names, in order of preference; (quantity, mode, columns)
_XDI_MU = (
    ("mu (mutrans)", "transmission", ("mutrans",)),
    ("mu (mufluor)", "fluorescence", ("mufluor",)),
    ("mu (ln(i0/itrans))", "transmission", ("i0", "itrans")),
    ("mu (ifluor/i0)", "fluorescence", ("ifluor", "i0")),
    ("normalized mu (normtrans)", "transmission", ("normtrans",)),
    ("normalized mu (normfluor)", "fluorescence", ("normfluor",)),
)


def _xdi_columns(fields: dict[str, dict[str, str]]) -> dict[int, tuple[str, str]]:
    """{column number (1-based): (name, unit)} from the Column.N fields."""
    out: dict[int, tuple[str, str]] = {}
    for key, value in fields.get("column", {}).items():
        if not key.isdigit() or int(key) < 1:
            raise ParseError(f"Column.{key}", "Column.N with N = 1, 2, ...", repr(key))
        parts = value.split()
        if not parts:
            raise ParseError(f"Column.{key}", "a column name and an optional unit", "an empty value")
        out[int(key)] = (parts[0].lower(), " ".join(parts[1:]))
    if not out:
        raise ParseError("Column.N", "Column.1, Column.2, ... naming the data columns", "no Column fields")
    return out


def parse_xdi(data: bytes, ctx: ParseContext) -> ParseResult:
    """An XDI 1.0 file → one ``spectra`` row (technique xas, energy in eV, mu as the XDI dictionary defines).

    mu is the first of: the mutrans column, mufluor, ln(i0/itrans), ifluor/i0 (then the normalised
    normtrans, normfluor) that the file's columns allow; the option ``mu_from`` (one of those
    names) picks another.  ``intensity_quantity`` says which, e.g. 'mu (ln(i0/itrans))'.
    """
    text = _text(data, "an XDI file")
    lines = text.splitlines()
    if not lines or not _XDI_FIRST.match(lines[0].encode("utf-8", "replace")):
        raise ParseError("line 1", "'# XDI/1.0' and optional application versions",
                         repr(lines[0][:60] if lines else ""))
    versions = lines[0].lstrip("# ").split()
    fields: dict[str, dict[str, str]] = {}
    comments: list[str] = []
    labels: list[str] | None = None
    rows: list[list[str]] = []
    state = "header"  # header -> comments (after '# ///') -> data (after '#----')
    for n, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if state == "data":
                if rows:
                    raise ParseError(f"line {n}", "only data rows once the data have begun", repr(line[:60]))
                labels = body.split()
                continue
            if body.startswith("---"):
                state = "data"
                continue
            if body.startswith("///"):
                state = "comments"
                continue
            m = _XDI_FIELD.match(stripped)
            if state == "header" and m:
                fields.setdefault(m.group(1).lower(), {})[m.group(2).lower()] = m.group(3)
            elif state == "header" and body:
                raise ParseError(f"line {n}", "a header field '# Namespace.tag: value'", repr(line[:80]))
            else:
                comments.append(body)
            continue
        if state == "header" and not fields:
            raise ParseError(f"line {n}", "header fields before the data", repr(line[:60]))
        state = "data"
        rows.append(stripped.split())
    if not rows:
        raise ParseError("data", "data rows after the header (file cut short?)", "no data rows")
    columns = _xdi_columns(fields)
    ncol = max(columns)
    for i, r in enumerate(rows):
        if len(r) != len(rows[0]):
            raise ParseError(f"data row {i + 1}",
                             f"{len(rows[0])} numbers like the first row (columns of equal length)",
                             f"{len(r)} numbers (file cut short?)")
    if len(rows[0]) < ncol:
        raise ParseError("data row 1", f"at least {ncol} numbers (Column.{ncol} is declared)", f"{len(rows[0])}")
    by_name = {name: (idx, unit) for idx, (name, unit) in sorted(columns.items(), reverse=True)}

    def column(name: str) -> np.ndarray:
        idx, _ = by_name[name]
        return np.array([_finite(r[idx - 1], f"data row {i + 1} column {name}") for i, r in enumerate(rows)])

    if "energy" not in by_name:
        names = [name for _, (name, _) in sorted(columns.items())]
        raise ParseError("Column.N", "an 'energy' column (eV or keV)", f"columns {names}")
    e_unit = by_name["energy"][1] or "eV"
    unit, factor = axis_unit_factor(e_unit, f"Column.{by_name['energy'][0]} (energy) unit", allow_wavelength=False)
    energy = column("energy") * factor

    sources = [c[0].split("(", 1)[1][:-1] for c in _XDI_MU]  # 'mutrans', 'ln(i0/itrans)', ...
    wanted = ctx.options.get("mu_from")
    if wanted is not None and wanted not in sources:
        raise ParseError("option mu_from", f"one of {', '.join(sources)}", repr(wanted))
    choice = next((c for c, src in zip(_XDI_MU, sources)
                   if all(k in by_name for k in c[2]) and wanted in (None, src)), None)
    if choice is None:
        names = [name for _, (name, _) in sorted(columns.items())]
        what = f"the columns for mu_from={wanted}" if wanted else "mutrans, mufluor, i0 + itrans or i0 + ifluor columns"
        raise ParseError("Column.N", f"{what} to give mu", f"columns {names}")
    quantity, mode, needed = choice
    if needed == ("i0", "itrans"):
        i0, it = column("i0"), column("itrans")
        if np.any(i0 <= 0) or np.any(it <= 0):
            k = int(np.flatnonzero((i0 <= 0) | (it <= 0))[0])
            raise ParseError(f"data row {k + 1} columns i0, itrans", "positive intensities for ln(i0/itrans)",
                             f"i0={float(i0[k])!r}, itrans={float(it[k])!r}")
        mu = np.log(i0 / it)
    elif needed == ("ifluor", "i0"):
        i0 = column("i0")
        if np.any(i0 == 0):
            k = int(np.flatnonzero(i0 == 0)[0])
            raise ParseError(f"data row {k + 1} column i0", "non-zero i0 for ifluor/i0", "0")
        mu = column("ifluor") / i0
    else:
        mu = column(needed[0])

    meta_fields = {ns: dict(tags) for ns, tags in fields.items()}
    metadata: dict[str, Any] = {"xdi": meta_fields, "xdi_versions": versions, "comments": comments,
                                "column_labels": labels, "mu_from": quantity.split("(", 1)[1].rstrip(")")}
    if factor != 1.0:
        metadata["energy_unit_in_file"] = e_unit
    element = fields.get("element", {}).get("symbol")
    edge = fields.get("element", {}).get("edge")
    # Some beamline files put them under Scan.* instead of Element.*: accepted, and said so.
    if not element and fields.get("scan", {}).get("element"):
        element = fields["scan"]["element"]
        metadata["element_from"] = "Scan.element (the file has no Element.symbol)"
    if not edge and fields.get("scan", {}).get("edge"):
        edge = fields["scan"]["edge"]
        metadata["edge_from"] = "Scan.edge (the file has no Element.edge)"
    if not element and ctx.options.get("element"):
        element, metadata["element_from"] = str(ctx.options["element"]), "ingest option element"
    if not edge and ctx.options.get("edge"):
        edge, metadata["edge_from"] = str(ctx.options["edge"]), "ingest option edge"
    if not element:
        raise ParseError("Element.symbol",
                         "the absorbing element (XDI requires Element.symbol; or --option element=Cu)",
                         "no Element.symbol or Scan.element field")
    if not edge:
        raise ParseError("Element.edge", "the absorption edge (XDI requires Element.edge; or --option edge=K)",
                         "no Element.edge or Scan.edge field")
    element = _element_symbol(element, "Element.symbol")
    edge = _edge_name(edge, "Element.edge")
    start = fields.get("scan", {}).get("start_time")
    measured_at = _iso_datetime(start) if start else None
    if start and measured_at is None:
        metadata["unparsed_start_time"] = start
    mono = fields.get("mono", {})
    beamline = fields.get("beamline", {})
    instrument = " / ".join(v for v in (beamline.get("name"), mono.get("name") and f"mono {mono['name']}") if v) or None
    row = spectrum_row(
        ctx, "xdi", energy, mu, technique="xas", axis_unit=unit, axis_quantity="energy", source_kind="measured",
        file_format="xdi", metadata=metadata, element=element, edge=edge, intensity_unit="mu",
        intensity_quantity=quantity, measurement_mode=mode,
        sample=fields.get("sample", {}).get("name") or None, instrument=instrument,
        facility=fields.get("facility", {}).get("name") or None, measured_at=measured_at,
    )
    result = ParseResult()
    _fill_from_options(row, ctx, result.warnings, ("sample",))
    result.add_rows("spectra", [row])
    return result


# --------------------------------------------------------------------------- EMSA/MSA 1.0

_EMSA_FIRST = re.compile(rb"^\s*#FORMAT\s*:\s*EMSA/MAS", re.I)
_EMSA_LINE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_]*)\s*(?:-\s*([^:]*?))?\s*:\s?(.*?)\s*$")
_EMSA_SIGNALS = {"ELS": "eels", "EELS": "eels", "CLS": "cl", "XAS": "xas"}
MAX_BEAM_KV = 3000.0  # no electron microscope runs above 3 MV: a larger BEAMKV is in volts


def detect_emsa(head: bytes, filename: str) -> bool:
    """EMSA/MAS files begin with ``#FORMAT : EMSA/MAS Spectral Data File``."""
    return bool(_EMSA_FIRST.match(head))


def _emsa_number(header: dict[str, str], key: str, *, required: bool = True) -> float | None:
    raw = header.get(key)
    if raw is None or raw.strip() == "":
        if required:
            raise ParseError(f"#{key}", "a number", "nothing (the keyword is missing or empty)")
        return None
    return _finite(raw.strip(), f"#{key}")


def _emsa_datetime(date: str | None, time: str | None) -> datetime | None:
    """EMSA DATE is DD-MMM-YYYY, TIME HH:MM[:SS]."""
    if not date or not date.strip():
        return None
    for fmt in ("%d-%b-%Y %H:%M:%S", "%d-%b-%Y %H:%M", "%d-%b-%Y"):
        try:
            return datetime.strptime(f"{date.strip()} {(time or '').strip()}".strip(), fmt)
        except ValueError:
            continue
    return None


def parse_emsa(data: bytes, ctx: ParseContext) -> ParseResult:
    """An EMSA/MAS 1.0 file → one ``spectra`` row (EELS when the signal type says so)."""
    text = _text(data, "an EMSA/MSA file")
    header: dict[str, str] = {}
    units: dict[str, str] = {}
    numbers: list[list[str]] = []
    in_data, ended = False, False
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if ended:
            raise ParseError(f"line {n}", "nothing after #ENDOFDATA", repr(stripped[:60]))
        if stripped.startswith("#"):
            m = _EMSA_LINE.match(stripped)
            if not m:
                raise ParseError(f"line {n}", "'#KEYWORD : value'", repr(stripped[:60]))
            key = m.group(1).upper()
            if key == "ENDOFDATA":
                ended = True
                continue
            if in_data:
                raise ParseError(f"line {n}", "data rows until #ENDOFDATA", repr(stripped[:60]))
            if key == "SPECTRUM":
                in_data = True
                continue
            header[key] = m.group(3)
            if m.group(2):
                units[key] = m.group(2)
            continue
        if not in_data:
            raise ParseError(f"line {n}", "'#KEYWORD : value' header lines before #SPECTRUM", repr(stripped[:60]))
        numbers.append([t for t in re.split(r"[,\s]+", stripped) if t])
    if "FORMAT" not in header or "EMSA/MAS" not in header["FORMAT"].upper():
        raise ParseError("#FORMAT", "EMSA/MAS Spectral Data File", repr(header.get("FORMAT")))
    if header.get("VERSION", "").strip() not in ("1.0", "1"):
        raise ParseError("#VERSION", "1.0", repr(header.get("VERSION")))
    if not in_data:
        raise ParseError("#SPECTRUM", "the line that starts the data (file cut short?)", "no #SPECTRUM line")
    if not ended:
        raise ParseError("#ENDOFDATA", "the line that ends the data (file cut short?)", "no #ENDOFDATA line")
    npoints = _emsa_number(header, "NPOINTS")
    ncolumns = _emsa_number(header, "NCOLUMNS", required=False) or 1.0
    if npoints is None or npoints != int(npoints) or npoints < 1:
        raise ParseError("#NPOINTS", "a positive whole number", repr(header.get("NPOINTS")))
    if ncolumns != int(ncolumns) or not 1 <= ncolumns <= 5:
        raise ParseError("#NCOLUMNS", "1 to 5", repr(header.get("NCOLUMNS")))
    npoints = int(npoints)
    datatype = header.get("DATATYPE", "").strip().upper()
    xunits = header.get("XUNITS", "").strip()
    if not xunits:
        raise ParseError("#XUNITS", "the axis unit (eV, keV or nm)", "nothing")
    unit, factor = axis_unit_factor(xunits, "#XUNITS")
    offset, xperchan = _emsa_number(header, "OFFSET", required=False), _emsa_number(header, "XPERCHAN", required=False)
    result = ParseResult()
    metadata: dict[str, Any] = {"emsa": header, "emsa_keyword_units": units}
    if datatype == "XY":
        if int(ncolumns) != 1:
            raise ParseError("#NCOLUMNS", "1 for XY data (one x and one y per row)", repr(header.get("NCOLUMNS")))
        for i, r in enumerate(numbers):
            if len(r) != 2:
                raise ParseError(f"data row {i + 1}", "an x and a y value (columns of equal length)",
                                 f"{len(r)} values {r[:4]}")
        if len(numbers) != npoints:
            raise ParseError("data", f"#NPOINTS = {npoints} rows (file cut short?)", f"{len(numbers)} rows")
        x = np.array([_finite(r[0], f"data row {i + 1} x") for i, r in enumerate(numbers)])
        y = np.array([_finite(r[1], f"data row {i + 1} y") for i, r in enumerate(numbers)])
        if offset is not None and xperchan:
            expected = offset + xperchan * np.arange(npoints)
            off = float(np.max(np.abs(x - expected)))
            if off > 0.01 * abs(xperchan):  # more than 1% of a channel: not rounding of the printed x
                result.warnings.append(f"x column differs from OFFSET + i*XPERCHAN by up to {off:g} {xunits}; "
                                       "the x column is used")
                metadata["x_column_vs_offset_xperchan"] = off
    elif datatype == "Y":
        values = [t for r in numbers for t in r]
        if any(len(r) > int(ncolumns) for r in numbers):
            k = next(i for i, r in enumerate(numbers) if len(r) > int(ncolumns))
            raise ParseError(f"data row {k + 1}", f"at most #NCOLUMNS = {int(ncolumns)} values", f"{len(numbers[k])}")
        if len(values) != npoints:
            raise ParseError("data", f"#NPOINTS = {npoints} values (file cut short?)", f"{len(values)} values")
        if offset is None or xperchan is None:
            raise ParseError("#OFFSET/#XPERCHAN", "both, to build the axis of Y data",
                             f"OFFSET={header.get('OFFSET')!r}, XPERCHAN={header.get('XPERCHAN')!r}")
        y = np.array([_finite(t, f"data value {i + 1}") for i, t in enumerate(values)])
        x = offset + xperchan * np.arange(npoints)
    else:
        raise ParseError("#DATATYPE", "XY or Y", repr(header.get("DATATYPE")))
    signal = header.get("SIGNALTYPE", "").strip().upper()
    technique = _EMSA_SIGNALS.get(signal, "other")
    if technique == "other":
        metadata["technique_from"] = f"SIGNALTYPE {signal or '(none)'} has no technique of its own"
    if unit == "nm":
        quantity = "wavelength"
    else:
        quantity = "energy_loss" if technique == "eels" else "energy"
    beam_kv = _emsa_number(header, "BEAMKV", required=False)
    beam_ev = None
    if beam_kv is not None and beam_kv > 0:
        unit_given = units.get("BEAMKV", "").strip().lower()
        if unit_given == "v" or (unit_given != "kv" and beam_kv > MAX_BEAM_KV):
            beam_ev = beam_kv
            metadata["beam_energy_note"] = (f"BEAMKV {header['BEAMKV'].strip()} read as volts (EMSA says kV, "
                                            f"but no microscope runs above {MAX_BEAM_KV:g} kV): {beam_kv:g} eV")
        else:
            beam_ev = beam_kv * 1e3
    yunits = header.get("YUNITS", "").strip()
    mode = {"eels": "EELS", "cl": "CL"}.get(technique)
    row = spectrum_row(
        ctx, "emsa", x * factor, y, technique=technique, axis_unit=unit, axis_quantity=quantity,
        source_kind="measured", file_format="emsa", metadata=metadata,
        intensity_unit=(yunits.lower() if yunits.lower() == "counts" else (yunits or "arb")),
        intensity_quantity="counts" if yunits.lower() == "counts" else "intensity",
        measurement_mode=mode, beam_energy=beam_ev,
        convergence_angle=_emsa_number(header, "CONVANGLE", required=False),
        collection_angle=_emsa_number(header, "COLLANGLE", required=False),
        measured_at=_emsa_datetime(header.get("DATE"), header.get("TIME")),
    )  # TITLE names the spectrum and OWNER the operator: both stay in metadata_json, neither is a sample
    _fill_from_options(row, ctx, result.warnings)
    result.add_rows("spectra", [row])
    return result


# --------------------------------------------------------------------------- pymatgen / MP XAS JSON

_XAS_MODULE = re.compile(rb'"@module"\s*:\s*"pymatgen\.analysis\.xas\.spectrum"')
_MATLAKE_BLOB = re.compile(rb'^\s*\{\s*"@matlake"\s*:')
_XAS_KEYS = (re.compile(rb'"x"\s*:\s*\['), re.compile(rb'"y"\s*:\s*\['),
             re.compile(rb'"(absorbing|absorption)_element"\s*:'))
_TYPE_TECHNIQUE = {"XANES": "xanes", "EXAFS": "exafs", "XAFS": "xas"}


def _looks_like_xas_dict(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    spectrum = doc.get("spectrum") if isinstance(doc.get("spectrum"), dict) else doc
    return ("x" in spectrum and "y" in spectrum and "edge" in spectrum
            and ("absorbing_element" in spectrum or "absorption_element" in spectrum))


def detect_xas_json(head: bytes, filename: str) -> bool:
    """A pymatgen XAS dict (or MP XAS document, or a list of them); never a matlake fetch blob."""
    start = head.lstrip()[:1]
    if start not in (b"{", b"[") or _MATLAKE_BLOB.match(head):
        return False
    if _XAS_MODULE.search(head) or all(k.search(head) for k in _XAS_KEYS):
        return True
    if len(head) < 8192:  # the whole file is in the head: look at its keys
        try:
            doc = json.loads(head)
        except (ValueError, UnicodeDecodeError):
            return False
        docs = doc if isinstance(doc, list) else [doc]
        return bool(docs) and all(_looks_like_xas_dict(d) for d in docs)
    return False


def xas_documents(docs: Sequence[Any], ctx: ParseContext, *, file_format: str = "mp-xas-json") -> ParseResult:
    """pymatgen XAS dicts or MP XAS documents (``spectrum`` + ``task_id``...) → ``spectra`` + ``structures``.

    x in eV, y the computed absorption (arbitrary units).  The structure the spectrum was
    computed for becomes a ``structures`` row named by ``structure_id``; ``absorbing_site``
    is the document's ``absorbing_index``, or the only site of the absorbing element when
    the structure has one (``metadata_json`` says which).
    """
    from pymatgen.analysis.xas.spectrum import XAS

    from matlake.ingest.structures import structure_row

    result = ParseResult()
    spectra, structures = [], []
    seen: set[str] = set()
    for i, doc in enumerate(docs):
        default = f"[{i}]" if len(docs) > 1 else "document"
        if not isinstance(doc, dict):
            raise ParseError(default, "a JSON object (pymatgen XAS dict or MP XAS document)", type(doc).__name__)
        wrapper = doc if isinstance(doc.get("spectrum"), dict) else {}
        spectrum = dict(doc["spectrum"]) if wrapper else dict(doc)
        ident = wrapper.get("spectrum_id") or wrapper.get("task_id") or wrapper.get("material_id")
        locator = str(ident) if ident else default  # for messages until the spectrum is known
        meta: dict[str, Any] = {k: v for k, v in wrapper.items()
                                if k not in ("spectrum", "structure", "builder_meta")}
        if "absorption_element" in spectrum and "absorbing_element" not in spectrum:
            # pymatgen before 2020.x wrote this key; XAS() now takes absorbing_element
            spectrum["absorbing_element"] = spectrum.pop("absorption_element")
            meta["legacy_key"] = "absorption_element read as absorbing_element"
        missing = [k for k in ("x", "y", "absorbing_element", "edge") if k not in spectrum]
        if missing:
            raise ParseError(f"{locator}", "a pymatgen XAS dict with x, y, absorbing_element, edge",
                             f"missing {missing} (keys {sorted(spectrum)[:12]})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xas = XAS.from_dict(spectrum)
        except LIBRARY_INPUT_ERRORS as exc:
            raise ParseError(locator, "a pymatgen XAS dict (x, y, structure, absorbing_element, edge)",
                             f"{type(exc).__name__}: {exc}") from exc
        structure = getattr(xas, "structure", None)
        element = str(getattr(xas.absorbing_element, "symbol", xas.absorbing_element))
        edge = _edge_name(str(xas.edge), f"{locator}.edge")
        spectrum_type = str(getattr(xas, "spectrum_type", "XANES") or "XANES").upper()
        technique = _TYPE_TECHNIQUE.get(spectrum_type)
        if technique is None:
            raise ParseError(f"{locator}.spectrum_type", "XANES, EXAFS or XAFS", repr(spectrum_type))
        if ident and not wrapper.get("spectrum_id"):
            # one task has several spectra (elements, edges, types): name it as MP's spectrum_id does
            locator = f"{ident}-{spectrum_type}-{element}-{edge}"
        if locator in seen:
            locator = f"{locator}#{i}"
        seen.add(locator)
        srow = None
        site = getattr(xas, "absorbing_index", None)
        if structure is not None:
            material_id = wrapper.get("material_id") or wrapper.get("task_id")
            srow = structure_row(structure, ctx, f"{locator}/structure",
                                 material_id=str(material_id) if material_id else None)
            structures.append(srow)
            if site is None:
                sites = [k for k, s in enumerate(structure) if element in {e.symbol for e in s.species.elements}]
                if len(sites) == 1:
                    site = sites[0]
                    meta["absorbing_site_from"] = f"the only {element} site of the structure"
                else:
                    meta["absorbing_site_from"] = (f"none: {len(sites)} {element} sites and no absorbing_index "
                                                   "(a site-averaged spectrum)")
            elif not 0 <= int(site) < len(structure):
                raise ParseError(f"{locator}.absorbing_index", f"a site index 0..{len(structure) - 1}", repr(site))
        parameters = {"spectrum_type": spectrum_type, "edge": edge, "absorbing_element": element,
                      "absorbing_index": getattr(xas, "absorbing_index", None),
                      "zero_negative_intensity": getattr(xas, "zero_negative_intensity", None)}
        for key in ("parameters", "input_parameters", "feff_input", "settings"):
            if key in spectrum or key in wrapper:
                parameters[key] = spectrum.get(key, wrapper.get(key))
        code = spectrum.get("code") or wrapper.get("code")
        row = spectrum_row(
            ctx, locator, np.asarray(xas.x, dtype=float), np.asarray(xas.y, dtype=float), technique=technique,
            axis_unit="eV", axis_quantity="energy", source_kind="computed", file_format=file_format,
            metadata=meta, element=element, edge=edge, intensity_unit="arb", intensity_quantity="mu",
            code=str(code) if code else None, code_version=spectrum.get("code_version") or wrapper.get("code_version"),
            code_parameters_json=dumps(parameters), structure_id=srow["record_id"] if srow else None,
            absorbing_site=int(site) if site is not None else None,
        )
        _fill_from_options(row, ctx, result.warnings, ("sample",))
        spectra.append(row)
    if not spectra:
        raise ParseError("documents", "at least one XAS document", "an empty list")
    if structures:
        result.add_rows("structures", structures)
    result.add_rows("spectra", spectra)
    return result


def parse_xas_json(data: bytes, ctx: ParseContext) -> ParseResult:
    """A pymatgen XAS JSON (one dict or a list; MP XAS documents too) → spectra (+ structures)."""
    doc = load_json(data)
    if isinstance(doc, dict):
        docs = [doc]
    elif isinstance(doc, list):
        docs = doc
    else:
        raise ParseError("JSON top level", "an XAS object or a list of them", type(doc).__name__)
    return xas_documents(docs, ctx)


# --------------------------------------------------------------------------- text / CSV columns

CSV_OPTIONS = ("x_column", "y_column", "axis_unit", "technique", "element", "edge", "sample", "delimiter",
               "intensity_unit", "intensity_quantity", "source_kind", "measurement_mode")
_UNIT_IN_NAME = re.compile(r"[\(\[/]\s*(k?eV|nm)\s*[\)\]]?\s*$", re.I)


def detect_csv(head: bytes, filename: str) -> bool:
    """Any text whose first data line has two or more numbers; only consulted under ``--kind spectrum``."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    if "\x00" in text:
        return False
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#%;":
            continue
        fields = [f for f in re.split(r"[,;\t ]+", s) if f]
        try:
            [float(f) for f in fields]
        except ValueError:
            continue  # a header line: keep looking
        return len(fields) >= 2
    return False


# The registry skips this detector under --kind auto (see matlake.ingest.detect): a bare table of
# numbers could be anything, so only a user who says "this is a spectrum" gets it read as one.
detect_csv.explicit_kind_only = True  # type: ignore[attr-defined]


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [f.strip().strip('"') for f in line.split(delimiter)]


def _guess_delimiter(lines: Sequence[str]) -> str | None:
    """Tab, comma or semicolon when the first non-comment line has one (in that order), else whitespace."""
    first = next((s for s in lines if s.strip() and s.strip()[0] not in "#%"), "")
    return next((d for d in ("\t", ",", ";") if d in first), None)


def _column_index(spec: Any, names: list[str] | None, ncol: int, what: str) -> int:
    """0-based column index from a header name or a 1-based number."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        k = int(spec)
        if not 1 <= k <= ncol:
            raise ParseError(f"option {what}", f"a column number 1..{ncol} or a header name", repr(spec))
        return k - 1
    if names:
        lowered = [n.lower() for n in names]
        if str(spec).lower() in lowered:
            return lowered.index(str(spec).lower())
    raise ParseError(f"option {what}", f"a column number 1..{ncol} or one of the header names {names or []}",
                     repr(spec))


def parse_csv(data: bytes, ctx: ParseContext) -> ParseResult:
    """Two- or multi-column text → one ``spectra`` row per intensity column.

    Options: ``technique`` (required: one of TECHNIQUES), ``axis_unit`` (eV, keV or nm; else taken
    from the x header, e.g. 'Energy (eV)' or 'wavelength/nm'), ``x_column`` (header name or
    1-based number, default 1), ``y_column`` (default: every other column), ``delimiter``
    (default: tab, comma or semicolon when every line has it, else whitespace), ``element``,
    ``edge``, ``sample``, ``intensity_unit`` (default 'arb'), ``intensity_quantity`` (default
    'intensity'), ``measurement_mode``, ``source_kind`` (default measured).  A nm axis is a
    wavelength (luminescence); eV is an energy, or an energy loss for EELS.
    """
    opts = ctx.options
    unknown = sorted(set(opts) - set(CSV_OPTIONS))
    if unknown:
        raise ParseError("options", f"options among {', '.join(CSV_OPTIONS)}", ", ".join(unknown))
    technique = str(opts.get("technique") or "")
    if technique not in TECHNIQUES:
        raise ParseError("option technique", f"--option technique=T with T one of {', '.join(TECHNIQUES)} "
                         "(a column file does not say what it measured)", repr(technique or None))
    source_kind = str(opts.get("source_kind") or "measured")
    if source_kind not in ("measured", "computed", "generated"):
        raise ParseError("option source_kind", "measured, computed or generated", repr(source_kind))
    lines = _text(data, "a text/CSV spectrum").splitlines()
    delimiter = opts.get("delimiter")
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": None,
                     "whitespace": None}.get(str(delimiter), str(delimiter))
    else:
        delimiter = _guess_delimiter(lines)
    names: list[str] | None = None
    comments: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        if s[0] in "#%":
            comments.append(s.lstrip("#% "))
            continue
        fields = _split(s, delimiter)
        if not rows and names is None:
            try:
                [float(f) for f in fields]
            except ValueError:
                names = fields  # the header line
                continue
        rows.append((n, fields))
    if not rows:
        raise ParseError("data", "rows of numbers", "no data rows")
    ncol = len(rows[0][1])
    if ncol < 2:
        raise ParseError(f"line {rows[0][0]}", "at least two columns (x and intensity)",
                         f"{ncol} column (delimiter {delimiter!r})")
    for n, fields in rows:
        if len(fields) != ncol:
            raise ParseError(f"line {n}", f"{ncol} values like the first data row (columns of equal length)",
                             f"{len(fields)} values (file cut short?)")
    if names is not None and len(names) != ncol:
        raise ParseError("header line", f"{ncol} column names, one per data column", f"{len(names)}: {names}")
    xi = _column_index(opts.get("x_column", 1), names, ncol, "x_column")
    if opts.get("y_column") is not None:
        yis = [_column_index(opts["y_column"], names, ncol, "y_column")]
    else:
        yis = [k for k in range(ncol) if k != xi]
    unit_text = opts.get("axis_unit")
    if unit_text is None and names:
        m = _UNIT_IN_NAME.search(names[xi])
        unit_text = m.group(1) if m else None
    if unit_text is None:
        raise ParseError("option axis_unit", "--option axis_unit=eV, keV or nm (the x header names no unit)",
                         repr(names[xi] if names else "no header"))
    unit, factor = axis_unit_factor(str(unit_text), "option axis_unit")

    def column(k: int) -> np.ndarray:
        label = names[k] if names else f"column {k + 1}"
        return np.array([_finite(f[k], f"line {n} {label}") for n, f in rows])

    x = column(xi) * factor
    quantity = "wavelength" if unit == "nm" else ("energy_loss" if technique == "eels" else "energy")
    result = ParseResult()
    out = []
    for k in yis:
        label = names[k] if names else f"column {k + 1}"
        locator = f"column={label}" if len(yis) > 1 or opts.get("y_column") is not None else "csv"
        meta = {"columns": names, "x_column": names[xi] if names else xi + 1, "y_column": label,
                "comments": comments, "axis_unit_in_file": str(unit_text)}
        row = spectrum_row(
            ctx, locator, x, column(k), technique=technique, axis_unit=unit, axis_quantity=quantity,
            source_kind=source_kind, file_format="csv", metadata=meta,
            intensity_unit=str(opts.get("intensity_unit") or "arb"),
            intensity_quantity=str(opts.get("intensity_quantity") or "intensity"),
            measurement_mode=str(opts["measurement_mode"]) if opts.get("measurement_mode") else None,
        )
        _fill_from_options(row, ctx, result.warnings)
        out.append(row)
    result.add_rows("spectra", out)
    return result


# --------------------------------------------------------------------------- registry

PARSERS = [
    Parser(name="spectrum-xdi", version=PARSER_VERSION, kind="spectrum", detect=detect_xdi, parse=parse_xdi,
           description="XDI 1.0 X-ray absorption → spectra"),
    Parser(name="spectrum-emsa", version=PARSER_VERSION, kind="spectrum", detect=detect_emsa, parse=parse_emsa,
           description="EMSA/MSA 1.0 spectra (EELS, ...) → spectra"),
    Parser(name="spectrum-xas-json", version=PARSER_VERSION, kind="spectrum", detect=detect_xas_json,
           parse=parse_xas_json,
           description="pymatgen / Materials Project XAS JSON → spectra + structures"),
    Parser(name="spectrum-csv", version=PARSER_VERSION, kind="spectrum", detect=detect_csv, parse=parse_csv,
           description="text/CSV columns with --kind spectrum --option technique=... → spectra"),
]
