"""Impedance-spectroscopy (EIS) readers: one spectrum per frequency sweep.

Formats (parser name -> ``file_format``):

- ``eis-biologic-mpr``  BioLogic EC-Lab binary .mpr ("BIO-LOGIC MODULAR FILE")
- ``eis-gamry-dta``     Gamry Framework .DTA (the ZCURVE table)
- ``eis-biologic-mpt``  BioLogic EC-Lab ASCII .mpt (Latin-1)
- ``eis-zplot-z``       Scribner ZPlot .z
- ``eis-autolab-txt``   Autolab/NOVA text export (Z60W layout, or NOVA column export)
- ``eis-parstat-txt``   Parstat/VersaStudio text export (time series, then EIS rows)
- ``eis-csv``           generic CSV/TSV: frequency, Z', Z'' (header optional)

Sign convention, the same everywhere in matlake: Z = Z' + jZ'' where Z'' is
the imaginary part itself, so a capacitive response has Z'' < 0 and an
inductive one Z'' > 0.  Vendor columns that hold -Im(Z) (BioLogic
"-Im(Z)/Ohm", "-Z''" headers) are negated on the way in.  Gamry "Zimag",
Parstat "Zim", ZPlot/Z60W "Z''(b)" already hold +Im(Z) and are kept.

Generic CSV sign rule (documented because it is a guess when the header is
silent): the imaginary column is negated when its header starts with a minus
sign ("-Z''", "-Im(Z)/Ohm", "-Zimag"); otherwise, when strictly more than half
of its values are positive, the column is taken to be -Im(Z) (a passive
electrochemical cell is capacitive over most of its spectrum) and negated.
The decision is recorded in the metadata (``imag_sign_rule``) and can be
forced with the ingest option ``imag_sign`` = ``"im"`` (keep) or
``"minus-im"`` (negate).

Units found in headers (mHz/Hz/kHz/MHz, mOhm/Ohm/kOhm/MOhm, Ω, mV/V, K/°C) are
converted to Hz, ohm, V and K.  Ingest options ``sample``, ``temperature`` (K)
and ``state_of_charge`` (0..1) fill those columns when the file is silent.

Every reader validates as it goes and raises
:class:`~matlake.ingest.base.ParseError` naming the field (e.g. "ZCURVE row 17
column Zimag"), what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from matlake.ingest.base import ParseContext, ParseError, Parser, ParseResult, describe_start

__all__ = ["PARSERS", "Spectrum", "detect_format", "read_bytes", "read_spectra"]


@dataclass(frozen=True)
class Spectrum:
    """One impedance spectrum.

    ``frequency`` in Hz (file order), ``z`` complex impedance in ohm with the
    capacitive imaginary part negative.  ``metadata`` holds ``file_format``,
    ``instrument``, ``locator``, ``sweep``, ``cycle``, ``sample``,
    ``temperature`` (K), ``state_of_charge`` (0..1), ``dc_potential`` (V),
    ``measured_at`` (naive datetime, instrument local time) - each None when
    unknown - and ``header`` (every other header entry of the file).
    """

    frequency: np.ndarray
    z: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- text helpers

_CTRL = re.compile(r"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f]")


def _text(data: bytes, encoding: str) -> str:
    """Decode a text export; binary content or UTF-16 without BOM is an encoding error."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError("encoding", "UTF-16 text after the UTF-16 byte-order mark",
                             f"undecodable bytes at offset {exc.start}") from None
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ParseError("encoding", f"{encoding} text", f"NUL byte at offset {nul} (binary, or UTF-16 without BOM)")
    if encoding == "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # Windows instruments write cp1252 ("°", "µ") even where UTF-8 is usual
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError as exc:
                raise ParseError("encoding", "UTF-8 or Windows-1252 text",
                                 f"byte 0x{data[exc.start]:02x} at offset {exc.start}") from None
    else:
        text = data.decode(encoding)
    bad = _CTRL.search(text)
    if bad:
        raise ParseError("encoding", f"{encoding} text",
                         f"control character 0x{ord(bad.group()):02x} at character {bad.start()} (binary content?)")
    return text.rstrip("\x1a")  # DOS end-of-file marker


def _lines(data: bytes, encoding: str) -> list[str]:
    return _text(data, encoding).splitlines()


def _float(tok: str, where: str, *, comma: bool = False) -> float:
    """A finite number from one field; ``comma`` allows a decimal comma."""
    t = tok.strip().strip('"')
    if comma:
        t = t.replace(",", ".")
    try:
        if "_" in t:  # float() accepts "1_0"; files never mean that
            raise ValueError
        v = float(t)
    except ValueError:
        raise ParseError(where, "a number", repr(tok)) from None
    if not math.isfinite(v):
        raise ParseError(where, "a finite number", repr(tok))
    return v


def _is_number(tok: str) -> bool:
    try:
        float(tok.strip().strip('"').replace(",", "."))
        return True
    except ValueError:
        return False


_DATE = re.compile(r"^\s*(\d{1,4})[/.\-](\d{1,2})[/.\-](\d{1,4})\s*$")
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?\s*([AaPp][Mm])?\s*$")


def _datetime(date: str | None, time: str | None) -> datetime | None:
    """Instrument date + time; month first unless that is impossible (US instrument locale)."""
    if not date:
        return None
    m = _DATE.match(date)
    if not m:
        return None
    a, b, c = (int(x) for x in m.groups())
    if len(m.group(1)) == 4:
        y, mo, d = a, b, c
    else:
        mo, d, y = (a, b, c) if a <= 12 else (b, a, c)
        if y < 100:
            y += 2000
    hh = mm = ss = us = 0
    if time:
        t = _TIME.match(time)
        if not t:
            return None
        hh, mm = int(t.group(1)), int(t.group(2))
        ss = int(t.group(3) or 0)
        us = int((t.group(4) or "0")[:6].ljust(6, "0"))
        if t.group(5):
            hh = hh % 12 + (12 if t.group(5).lower() == "pm" else 0)
    try:
        return datetime(y, mo, d, hh, mm, ss, us)
    except ValueError:
        return None


# --------------------------------------------------------------------------- units and column names

_FREQ_SCALE = {"hz": 1.0, "khz": 1e3, "ghz": 1e9}
_OHM_PREFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "µ": 1e-6, "μ": 1e-6, "u": 1e-6}


def _freq_scale(unit: str, where: str) -> float:
    u = unit.strip()
    if u in ("", "Hz", "hz", "HZ"):
        return 1.0
    if u == "mHz":
        return 1e-3
    if u == "MHz":
        return 1e6
    if u.lower() in _FREQ_SCALE and u.lower() != "mhz":
        return _FREQ_SCALE[u.lower()]
    raise ParseError(where, "a frequency unit (mHz, Hz, kHz, MHz, GHz)", repr(unit))


def _ohm_scale(unit: str, where: str) -> float:
    u = unit.strip().replace("Ω", "ohm").replace("Ω", "ohm")
    m = re.fullmatch(r"(.?)(?:ohms?|Ohms?|OHMS?)", u)
    if u == "" :
        return 1.0
    if m and m.group(1) in _OHM_PREFIX:
        return _OHM_PREFIX[m.group(1)]
    raise ParseError(where, "an impedance unit (mOhm, Ohm, kOhm, MOhm or Ω; area-normalised units are not ohm)",
                     repr(unit))


def _split_unit(name: str) -> tuple[str, str]:
    """'freq/Hz' -> ('freq', 'Hz'); "Z' (Ohm)" -> ("Z'", 'Ohm'); 'Re(Z)' -> ('Re(Z)', '')."""
    n = name.strip().strip('"').strip()
    m = re.fullmatch(r"(.*?)\s*[\(\[]([^\(\)\[\]]*)[\)\]]\s*", n)
    if m and m.group(1) and re.search(r"(hz|ohm|Ω|Ω|ω|^v$|^mv$|^k$|°c|degc|^c$|deg)", m.group(2).strip(), re.I):
        return m.group(1), m.group(2)
    if "/" in n:
        base, unit = n.rsplit("/", 1)
        return base, unit
    return n, ""


def _norm(base: str) -> str:
    b = base.strip().lower().replace("″", "''").replace('"', "''").replace("’", "'").replace("′", "'")
    b = b.replace("−", "-").replace(" ", "").replace("_", "").replace(".", "")
    b = re.sub(r"\((a|b)\)$", "", b)
    return b


_REAL_NAMES = {"z'", "zre", "zreal", "rez", "re(z)", "real(z)", "real", "zr", "zrealpart"}
_IMAG_NAMES = {"z''", "zim", "zimag", "imz", "im(z)", "imag(z)", "imag", "imaginary", "zi", "zimaginary"}
_FREQ_NAMES = {"f", "freq", "frequency", "fre", "frequenz", "fréquence"}


def _classify(name: str) -> tuple[str, str, bool] | None:
    """(kind, unit, negated) of a column header; kind in freq/real/imag/potential/temperature."""
    base, unit = _split_unit(name)
    b = _norm(base)
    neg = False
    if b.startswith("-"):
        neg, b = True, b[1:]
    if b in _FREQ_NAMES or (b.startswith("freq") and not neg):
        return ("freq", unit, False)
    if b in _REAL_NAMES:
        return ("real", unit, neg)
    if b in _IMAG_NAMES:
        return ("imag", unit, neg)
    if b in {"ewe", "<ewe>", "e", "potential", "vdc", "bias", "edc", "ewe(v)"} and not neg:
        return ("potential", unit, False)
    if b in {"t", "temp", "temperature"} and not neg:
        return ("temperature", unit, False)
    return None


def _potential_scale(unit: str, where: str) -> float:
    u = unit.strip()
    if u in ("", "V", "v"):
        return 1.0
    if u in ("mV", "mv"):
        return 1e-3
    raise ParseError(where, "a potential unit (V or mV)", repr(unit))


def _temperature_to_k(values: np.ndarray, unit: str, where: str) -> np.ndarray:
    u = unit.strip().replace("deg", "°").replace("º", "°")
    if u in ("K", "k"):
        return values
    if u in ("°C", "C", "°c", "c", "° C"):
        return values + 273.15
    raise ParseError(where, "a temperature unit (K or °C)", repr(unit))


# --------------------------------------------------------------------------- spectrum assembly

def _sorted_median(values: np.ndarray) -> float:
    """``np.median`` of a 1-d float array (the middle value, or the mean of the two middle ones;
    NaN if any is NaN), by one sort: np.median's general machinery cost more than the whole rest of
    the CSV detector, which runs on every file a re-ingest has to decide."""
    s = np.sort(values)
    n = s.size
    if n == 0 or np.isnan(s[-1]):  # NaN sorts last
        return float("nan")
    mid = n // 2
    return float(s[mid]) if n % 2 else float((s[mid - 1] + s[mid]) / 2)


def _sweep_starts(f: np.ndarray) -> list[int]:
    """Indices where a new frequency sweep starts.

    A sweep is monotone in log-frequency; a new one starts where a step goes
    against the sweep direction by more than 1.5 typical steps (so jitter
    in the recorded frequency never splits a sweep).
    """
    if len(f) < 3:
        return [0]
    steps = np.diff(np.log10(f))
    nonzero = steps[steps != 0]
    if nonzero.size == 0:
        return [0]
    direction = np.sign(_sorted_median(nonzero))
    if direction == 0:
        direction = np.sign(nonzero[0])
    typical = _sorted_median(np.abs(nonzero))
    jumps = np.flatnonzero((np.sign(steps) == -direction) & (np.abs(steps) > 1.5 * typical))
    return [0] + [int(j) + 1 for j in jumps]


def _spectrum(freq: np.ndarray, zr: np.ndarray, zi: np.ndarray, rows: list[str], where: str,
              meta: dict[str, Any]) -> Spectrum:
    """Validate one sweep and wrap it; ``rows`` names each point for error messages."""
    if len(freq) < 3:
        raise ParseError(f"{where} points", "at least 3 frequencies per spectrum", str(len(freq)))
    nonpos = np.flatnonzero(freq <= 0)
    if nonpos.size:
        i = int(nonpos[0])
        raise ParseError(f"{rows[i]} frequency", "a positive frequency in Hz", repr(float(freq[i])))
    _, first, counts = np.unique(freq, return_index=True, return_counts=True)
    if (counts > 1).any():
        value = float(np.unique(freq)[counts > 1][0])
        dup = np.flatnonzero(freq == value)
        raise ParseError(f"{rows[int(dup[1])]} frequency", "each frequency once per sweep",
                         f"{value!r} Hz again (first at {rows[int(dup[0])]})")
    z = np.asarray(zr, dtype=float) + 1j * np.asarray(zi, dtype=float)
    full = {k: None for k in ("sample", "cycle", "temperature", "state_of_charge", "dc_potential",
                              "measured_at", "instrument")}
    full.update(meta)
    return Spectrum(np.asarray(freq, dtype=float), z, full)


def _split(freq: np.ndarray, zr: np.ndarray, zi: np.ndarray, rows: list[str], where: str,
           meta: dict[str, Any], sweep0: int = 0, locator: Callable[[int, int], str] | None = None,
           extra: Callable[[slice], dict[str, Any]] | None = None) -> list[Spectrum]:
    """Split a block of points into sweeps at frequency resets."""
    for arr, label in ((freq, "frequency"), (zr, "Z'"), (zi, "Z''")):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:  # e.g. 1e308 kHz overflows when converted to Hz
            i = int(bad[0])
            raise ParseError(f"{rows[i]} {label}", "a finite value after unit conversion", repr(float(arr[i])))
    nonpos = np.flatnonzero(~(freq > 0))
    if nonpos.size:  # before taking logarithms
        i = int(nonpos[0])
        raise ParseError(f"{rows[i]} frequency", "a positive frequency in Hz", repr(float(freq[i])))
    starts = _sweep_starts(freq) + [len(freq)]
    out = []
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        sl = slice(a, b)
        m = dict(meta)
        m["sweep"] = sweep0 + k
        m["locator"] = locator(sweep0 + k, k) if locator else f"sweep={sweep0 + k}"
        if extra:
            m.update(extra(sl))
        out.append(_spectrum(freq[sl], zr[sl], zi[sl], rows[a:b], where, m))
    return out


def _median(values: list[float] | np.ndarray) -> float | None:
    arr = np.asarray(values, dtype=float)
    return float(np.median(arr)) if arr.size else None


# --------------------------------------------------------------------------- generic column tables

def _delimiter(lines: list[str]) -> str | None:
    """Field delimiter of a table: tab, ';', ',' or whitespace (None)."""
    sample = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")][-30:]
    for cand in ("\t", ";", ","):
        # a sample line (never blank) without the candidate is one field: no need to split it
        counts = [_field_count(ln, cand) if cand in ln else 1 for ln in sample]
        mode = max(set(counts), key=counts.count) if counts else 0
        # most lines agree (a ragged or cut line must not change the delimiter)
        if mode >= 3 and counts.count(mode) >= 0.8 * len(counts):
            return cand
    return None


def _field_count(line: str, delim: str | None) -> int:
    """``len(_fields(line, delim))`` without stripping every field (the delimiter guess splits
    30 lines three ways for every file a re-ingest decides)."""
    parts = line.split(delim) if delim else line.split()
    n = len(parts)
    while n and not parts[n - 1].strip():  # trailing delimiter
        n -= 1
    return n


def _fields(line: str, delim: str | None) -> list[str]:
    parts = line.split(delim) if delim else line.split()
    while parts and not parts[-1].strip():  # trailing delimiter
        parts.pop()
    return [p.strip() for p in parts]


@dataclass
class _Table:
    header: list[str] | None
    preamble: list[str]
    delim: str | None
    comma: bool
    rows: list[tuple[int, list[str]]]  # (1-based line number, fields)


def _table(lines: list[str], first_line: int = 1) -> _Table:
    """Split a delimited text table into preamble, header line and data rows."""
    delim = _delimiter(lines)
    body = [(i + first_line, ln) for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
    start = None
    for k, (_, ln) in enumerate(body):
        f = _fields(ln, delim)
        if len(f) >= 3 and all(_is_number(x) for x in f):
            start = k
            break
    if start is None:
        raise ParseError("data rows", "rows of at least 3 numbers (frequency, Z', Z'')",
                         f"no such row in {len(body)} non-empty lines")
    pre = [ln for _, ln in body[:start]]
    header = _fields(pre[-1], delim) if pre else None
    rows = [(n, _fields(ln, delim)) for n, ln in body[start:]]
    first = rows[0][1]
    comma = delim != "," and any("," in x for x in first) and not any("." in x for x in first)
    return _Table(header, pre[:-1] if pre else [], delim, comma, rows)


def _columns(t: _Table, where: str) -> dict[str, tuple[int, str, bool]]:
    """Map kind -> (column index, unit, negated) from a header; positional without one."""
    n = len(t.rows[0][1])
    if t.header is None:
        return {"freq": (0, "", False), "real": (1, "", False), "imag": (2, "", False)}
    if len(t.header) != n:
        raise ParseError(f"{where} header", f"{n} column names (as many as data fields)",
                         f"{len(t.header)}: {t.header}")
    found: dict[str, list[tuple[int, str, bool]]] = {}
    for i, name in enumerate(t.header):
        c = _classify(name)
        if c:
            found.setdefault(c[0], []).append((i, c[1], c[2]))
    for kind, label in (("freq", "frequency"), ("real", "Z' (real part)"), ("imag", "Z'' (imaginary part)")):
        if kind not in found:
            raise ParseError(f"{where} header", f"a {label} column (e.g. 'freq/Hz', \"Z' (Ohm)\", \"-Z'' (Ohm)\")",
                             f"columns {t.header}")
        if len(found[kind]) > 1:
            names = [t.header[i] for i, _, _ in found[kind]]
            raise ParseError(f"{where} header", f"exactly one {label} column", f"{len(names)}: {names}")
    return {k: v[0] for k, v in found.items()}


def _column_values(t: _Table, idx: int, name: str, where: str) -> np.ndarray:
    n = len(t.rows[0][1])
    out = np.empty(len(t.rows))
    for k, (line, f) in enumerate(t.rows):
        if len(f) != n:
            raise ParseError(f"{where} line {line}", f"{n} fields like the first data row", f"{len(f)} fields")
        out[k] = _float(f[idx], f"{where} line {line} column {name}", comma=t.comma)
    return out


def _read_columns(lines: list[str], *, file_format: str, instrument: str | None, where: str,
                  options: Mapping[str, Any]) -> list[Spectrum]:
    """Generic column table -> spectra (CSV and NOVA column exports)."""
    t = _table(lines)
    cols = _columns(t, where)
    names = t.header or ["frequency", "Z'", "Z''"]
    ncols = len(t.rows[0][1])
    for line, f in t.rows:  # ragged rows before anything else
        if len(f) != ncols:
            raise ParseError(f"{where} line {line}", f"{ncols} fields like the first data row", f"{len(f)} fields")
    fi, fu, _ = cols["freq"]
    ri, ru, rneg = cols["real"]
    ii, iu, ineg = cols["imag"]
    with np.errstate(over="ignore"):  # an overflow (1e307 kHz) becomes inf, which _split reports
        freq = _column_values(t, fi, names[fi], where) * _freq_scale(fu, f"{where} header column {names[fi]!r} unit")
        zr = _column_values(t, ri, names[ri], where) * _ohm_scale(ru, f"{where} header column {names[ri]!r} unit")
        zi = _column_values(t, ii, names[ii], where) * _ohm_scale(iu, f"{where} header column {names[ii]!r} unit")
    if rneg:
        zr = -zr
    mode = str(options.get("imag_sign", "auto"))
    if mode not in ("auto", "im", "minus-im"):
        raise ParseError("option imag_sign", "'auto', 'im' or 'minus-im'", repr(mode))
    if mode == "minus-im":
        zi, rule = -zi, "negated: option imag_sign='minus-im'"
    elif mode == "im":
        rule = "kept: option imag_sign='im'"
    elif ineg:
        zi, rule = -zi, f"negated: header {names[ii]!r} is -Im(Z)"
    elif np.count_nonzero(zi > 0) * 2 > len(zi):
        zi, rule = -zi, "negated: most values positive, so the column is taken as -Im(Z) of a capacitive cell"
    else:
        rule = "kept: most values negative (capacitive), so the column is Im(Z)"
    header: dict[str, Any] = {"columns": names, "imag_sign_rule": rule}
    if t.preamble:
        header["preamble"] = t.preamble
    if ncols > 3 and t.header is None:
        header["ignored_columns"] = list(range(3, ncols))
    meta: dict[str, Any] = {"file_format": file_format, "instrument": instrument, "header": header}
    rows = [f"{where} line {line}" for line, _ in t.rows]
    extra_cols = {}
    if "potential" in cols:
        pi, pu, _ = cols["potential"]
        extra_cols["dc_potential"] = _column_values(t, pi, names[pi], where) * _potential_scale(
            pu, f"{where} header column {names[pi]!r} unit")
    if "temperature" in cols:
        ti, tu, _ = cols["temperature"]
        extra_cols["temperature"] = _temperature_to_k(_column_values(t, ti, names[ti], where), tu,
                                                      f"{where} header column {names[ti]!r} unit")

    def extra(sl: slice) -> dict[str, Any]:
        return {k: _median(v[sl]) for k, v in extra_cols.items()}

    return _split(freq, zr, zi, rows, where, meta, extra=extra)


# --------------------------------------------------------------------------- generic CSV

def _first_line(head: bytes) -> bytes:
    if head[:3] == b"\xef\xbb\xbf":
        head = head[3:]
    return head.split(b"\n", 1)[0].strip()


def _detect_csv(head: bytes, filename: str) -> bool:
    if any(d(head, filename) for d in (_detect_gamry, _detect_mpt, _detect_mpr, _detect_zplot, _detect_autolab,
                                       _detect_parstat)):
        return False
    try:
        text = _text(head, "utf-8")
    except ParseError:
        return False
    lines = text.splitlines()
    if len(head) >= 8192 and len(lines) > 1:
        lines = lines[:-1]  # the last line of the head may be cut
    try:
        t = _table(lines)
        cols = _columns(t, "csv")
    except ParseError:
        return False
    if len(t.rows) < 3:
        return False
    if t.header is not None:
        return True
    # Header-less: three numeric columns are anything; a sweep is monotone and log-spaced over > 1 decade.
    try:
        freq = [_float(r[cols["freq"][0]], "f", comma=t.comma) for _, r in t.rows if r]
    except ParseError:
        return False
    if any(x <= 0 for x in freq):
        return False
    # One strictly monotone sweep (the usual file) is decided on the Python floats (the same
    # doubles; small numpy calls cost more than this detector's other work): _sweep_starts would
    # find no other start, since log10 keeps the order and only a step against the sweep starts one.
    pairs = list(zip(freq, freq[1:]))
    if len(freq) >= 3 and (all(b > a for a, b in pairs) or all(b < a for a, b in pairs)):
        return max(freq) / min(freq) >= 10
    f = np.array(freq)
    starts = _sweep_starts(f) + [len(f)]
    for a, b in zip(starts[:-1], starts[1:]):
        d = np.diff(f[a:b])
        if b - a < 3 or not ((d < 0).all() or (d > 0).all()):
            return False
    return bool(f.max() / f.min() >= 10)


def _read_csv(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    return _read_columns(_lines(data, "utf-8"), file_format="csv", instrument=None, where="csv", options=options)


# --------------------------------------------------------------------------- Gamry .DTA

def _detect_gamry(head: bytes, filename: str) -> bool:
    if not _first_line(head).startswith(b"EXPLAIN"):
        return False
    m = re.search(rb"\nTAG\t([^\t\r\n]*)", head)
    return b"ZCURVE\tTABLE" in head or bool(m and m.group(1).startswith(b"EIS"))


def _read_gamry(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    lines = _lines(data, "latin-1")
    if not lines or lines[0].strip() != "EXPLAIN":
        raise ParseError("line 1", "'EXPLAIN' (Gamry DTA)", repr(lines[0][:40] if lines else ""))
    header: dict[str, Any] = {}
    tables: list[tuple[str, int, list[str], list[str], list[tuple[int, list[str]]]]] = []
    aborted = False
    i = 1
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        parts = line.split("\t")
        key = parts[0].strip()
        kind = parts[1].strip() if len(parts) > 1 else ""
        if kind == "TABLE":
            if i + 2 >= len(lines):
                raise ParseError(f"{key} table (line {i + 1})", "a column-name line and a unit line",
                                 "end of file (truncated)")
            names = [x.strip() for x in lines[i + 1].split("\t")[1:]]
            units = [x.strip() for x in lines[i + 2].split("\t")[1:]]
            while names and not names[-1]:
                names.pop()
            units = units[: len(names)]
            rows = []
            j = i + 3
            while j < len(lines) and lines[j].startswith("\t"):
                rows.append((j + 1, [x.strip() for x in lines[j].split("\t")[1:]]))
                j += 1
            declared = parts[2].strip() if len(parts) > 2 else ""
            if declared:
                if not declared.isdigit():
                    raise ParseError(f"{key} TABLE line {i + 1} row count", "an integer", repr(declared))
                if len(rows) != int(declared):
                    raise ParseError(f"{key} table rows", f"{declared} rows as declared",
                                     f"{len(rows)} (truncated?)")
            tables.append((key, i + 1, names, units, rows))
            i = j
        elif kind == "NOTES":
            count = parts[2].strip() if len(parts) > 2 else "0"
            if not count.isdigit():
                raise ParseError(f"NOTES line {i + 1} line count", "an integer", repr(count))
            header[key] = "\n".join(x.strip("\t") for x in lines[i + 1:i + 1 + int(count)])
            i += 1 + int(count)
        else:
            if key == "EXPERIMENTABORTED":
                aborted = True
            if key:
                # KEY<tab>TYPE<tab>VALUE<tab>LABEL keeps the value; other shapes keep every field
                header[key] = (parts[2].strip() if len(parts) == 4 else parts[1].strip() if len(parts) == 2
                               else [x.strip() for x in parts[1:]])
            i += 1
    zcurves = [t for t in tables if t[0] == "ZCURVE"]
    if not zcurves:
        raise ParseError("ZCURVE", "a ZCURVE TABLE with the impedance data", f"tables {[t[0] for t in tables]}")
    header["tables"] = {t[0]: {"columns": t[2], "units": t[3], "rows": len(t[4])} for t in tables}
    header["experiment_aborted"] = aborted
    instrument = "Gamry" + (f" {header['PSTAT']}" if isinstance(header.get("PSTAT"), str) else "")
    measured_at = _datetime(header.get("DATE") if isinstance(header.get("DATE"), str) else None,
                            header.get("TIME") if isinstance(header.get("TIME"), str) else None)
    out: list[Spectrum] = []
    for name, line_no, names, units, rows in zcurves:
        where = name if len(zcurves) == 1 else f"{name} (line {line_no})"
        missing = [c for c in ("Freq", "Zreal", "Zimag") if c not in names]
        if missing:
            raise ParseError(f"{where} columns", "Freq, Zreal and Zimag", f"columns {names}")
        if not rows:
            raise ParseError(f"{where} rows", "at least 3 rows", "none (truncated?)")
        comma = any("," in x for x in rows[0][1]) and not any("." in x for x in rows[0][1])
        idx = {c: names.index(c) for c in ("Freq", "Zreal", "Zimag")}
        scale = {"Freq": _freq_scale(units[idx["Freq"]] if idx["Freq"] < len(units) else "",
                                     f"{where} unit of Freq"),
                 "Zreal": _ohm_scale(units[idx["Zreal"]] if idx["Zreal"] < len(units) else "",
                                     f"{where} unit of Zreal"),
                 "Zimag": _ohm_scale(units[idx["Zimag"]] if idx["Zimag"] < len(units) else "",
                                     f"{where} unit of Zimag")}
        vals: dict[str, list[float]] = {c: [] for c in ("Freq", "Zreal", "Zimag", "Vdc")}
        labels = []
        for k, (ln, f) in enumerate(rows, start=1):
            if len(f) != len(names):
                raise ParseError(f"{where} row {k} (line {ln})", f"{len(names)} fields ({', '.join(names)})",
                                 f"{len(f)} fields")
            for c in vals:
                if c in names:
                    vals[c].append(_float(f[names.index(c)], f"{where} row {k} column {c}", comma=comma) *
                                   scale.get(c, 1.0))
            labels.append(f"{where} row {k}")
        vdc = np.asarray(vals["Vdc"])
        meta = {"file_format": "gamry-dta", "instrument": instrument, "measured_at": measured_at,
                "header": header}
        setpoint = header.get("VDC")
        if not vdc.size and isinstance(setpoint, list) and len(setpoint) > 1 and _is_number(setpoint[1]):
            meta["dc_potential"] = float(setpoint[1].replace(",", "."))
        out += _split(np.asarray(vals["Freq"]), np.asarray(vals["Zreal"]), np.asarray(vals["Zimag"]), labels,
                      where, meta, sweep0=len(out),
                      extra=(lambda sl, v=vdc: {"dc_potential": _median(v[sl])}) if vdc.size else None)
    return out


# --------------------------------------------------------------------------- BioLogic .mpt

def _detect_mpt(head: bytes, filename: str) -> bool:
    if not _first_line(head).startswith(b"EC-Lab ASCII FILE"):
        return False
    return b"freq/Hz" in head or b"Impedance" in head


_KV = re.compile(r"^\s*([^:]+?)\s*:\s*(.*?)\s*$")
_SETTING = re.compile(r"^(\S.*?)\s{2,}(.*?)\s*$")


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if key in d:  # several techniques repeat keys
        prev = d[key]
        d[key] = (prev if isinstance(prev, list) else [prev]) + [value]
    else:
        d[key] = value


def _read_mpt(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    lines = _lines(data, "latin-1")
    if not lines or not lines[0].startswith("EC-Lab ASCII FILE"):
        raise ParseError("line 1", "'EC-Lab ASCII FILE'", repr(lines[0][:40] if lines else ""))
    m = re.match(r"\s*Nb header lines\s*:\s*(\d+)\s*$", lines[1]) if len(lines) > 1 else None
    if not m:
        raise ParseError("line 2", "'Nb header lines : N'", repr(lines[1][:60] if len(lines) > 1 else "end of file"))
    nh = int(m.group(1))
    if nh < 3 or nh > len(lines):
        raise ParseError("Nb header lines", f"a line count between 3 and the {len(lines)} lines of the file",
                         f"{nh} (truncated?)")
    header: dict[str, Any] = {}
    free: list[str] = []
    for ln in lines[2:nh - 1]:
        if not ln.strip():
            continue
        kv = _KV.match(ln)
        st = _SETTING.match(ln)
        # "Key : value" lines, then the technique's "name    value" table (names may hold ':', e.g. "tE (h:m:s)")
        if kv and (" : " in ln or ln.rstrip().endswith(" :")):
            _put(header, kv.group(1).strip(), kv.group(2))
        elif st:
            _put(header, st.group(1).strip(), st.group(2))
        elif kv:
            _put(header, kv.group(1).strip(), kv.group(2))
        else:
            free.append(ln.strip())
    if free:
        header["text"] = free
    names = _fields(lines[nh - 1], "\t")
    where_h = f"column header (line {nh})"
    col: dict[str, int] = {}
    for want in ("freq/Hz", "Re(Z)/Ohm", "-Im(Z)/Ohm"):
        hits = [i for i, n in enumerate(names) if n == want]
        if len(hits) != 1:
            raise ParseError(where_h, f"exactly one {want!r} column", f"{len(hits)} in {names}")
        col[want] = hits[0]
    optional = {"cycle number": None, "<Ewe>/V": None, "Ewe/V": None, "Temperature/°C": None}
    for n in optional:
        if n in names:
            col[n] = names.index(n)
    rows = [(k + 1, _fields(ln, "\t")) for k, ln in enumerate(lines[nh:], start=nh) if ln.strip()]
    if not rows:
        raise ParseError("data rows", "at least 3 rows after the header", "none (truncated?)")
    comma = any("," in x for x in rows[0][1]) and not any("." in x for x in rows[0][1])
    wanted = {k: [] for k in col}
    line_nos = []
    for ln, f in rows:
        if len(f) != len(names):
            raise ParseError(f"data line {ln}", f"{len(names)} tab-separated fields", f"{len(f)} fields")
        fr = _float(f[col["freq/Hz"]], f"data line {ln} column freq/Hz", comma=comma)
        if fr == 0:  # rows of a non-impedance technique in the same sequence
            continue
        for k, i in col.items():
            wanted[k].append(fr if k == "freq/Hz" else _float(f[i], f"data line {ln} column {k}", comma=comma))
        line_nos.append(ln)
    freq = np.asarray(wanted["freq/Hz"])
    zr = np.asarray(wanted["Re(Z)/Ohm"])
    zi = -np.asarray(wanted["-Im(Z)/Ohm"])  # the file stores -Im(Z)
    ewe = np.asarray(wanted.get("<Ewe>/V") or wanted.get("Ewe/V") or [])
    temp = np.asarray(wanted.get("Temperature/°C", [])) + 273.15
    device = header.get("Device")
    instrument = "BioLogic" + (f" {device.split(' (')[0]}" if isinstance(device, str) and device else "")
    started = header.get("Acquisition started on")
    measured_at = None
    if isinstance(started, str) and " " in started:
        measured_at = _datetime(*started.split(" ", 1))
    meta = {"file_format": "biologic-mpt", "instrument": instrument, "measured_at": measured_at, "header": header}
    labels = [f"data line {ln}" for ln in line_nos]

    def extra(sl: slice, off: int = 0) -> dict[str, Any]:
        s = slice(sl.start + off, sl.stop + off)
        return {"dc_potential": _median(ewe[s]) if ewe.size else None,
                "temperature": _median(temp[s]) if temp.size else None}

    if "cycle number" not in col:
        return _split(freq, zr, zi, labels, "mpt", meta, extra=extra)
    cyc = np.asarray(wanted["cycle number"])
    out: list[Spectrum] = []
    order = list(dict.fromkeys(cyc.tolist()))
    for c in order:
        idx = np.flatnonzero(cyc == c)
        if not (np.diff(idx) == 1).all():
            raise ParseError("column cycle number", "each cycle's rows together",
                             f"cycle {c:g} interrupted at {labels[int(idx[np.argmax(np.diff(idx) != 1)])]}")
        a, b = int(idx[0]), int(idx[-1]) + 1
        if c != int(c):
            raise ParseError(f"{labels[a]} column cycle number", "an integer", repr(c))
        ci = int(c)
        m2 = dict(meta, cycle=ci)
        parts = _split(freq[a:b], zr[a:b], zi[a:b], labels[a:b], f"mpt cycle {ci}", m2, sweep0=len(out),
                       locator=lambda s, k, ci=ci: f"cycle={ci}" if k == 0 else f"cycle={ci},part={k}",
                       extra=lambda sl, a=a: extra(sl, a))
        if len(parts) > 1:  # keep 'cycle=N' unique even when a cycle holds several sweeps
            parts[0].metadata["locator"] = f"cycle={ci},part=0"
        out += parts
    return out


# --------------------------------------------------------------------------- BioLogic .mpr (binary)

MPR_MAGIC = b"BIO-LOGIC MODULAR FILE\x1a"
MPR_HEADER_SIZE = 0x34  # magic, space padding, 4 zero bytes
# Column id -> (name, struct code) of the "VMP data" module; flags (ids 1, 2, 3, 21, 31, 65) share one byte.
MPR_FLAG_IDS = frozenset({1, 2, 3, 21, 31, 65})
MPR_COLUMNS: dict[int, tuple[str, str]] = {
    4: ("time/s", "d"), 5: ("control/V/mA", "f"), 6: ("Ewe/V", "f"), 7: ("dQ/mA.h", "d"), 8: ("I/mA", "f"),
    9: ("Ece/V", "f"), 11: ("I/mA", "d"), 13: ("(Q-Qo)/mA.h", "d"), 16: ("Analog IN 1/V", "f"),
    19: ("control/V", "f"), 20: ("control/mA", "f"), 23: ("dQ/mA.h", "d"), 24: ("cycle number", "d"),
    26: ("Rapp/Ohm", "f"), 32: ("freq/Hz", "f"), 33: ("|Ewe|/V", "f"), 34: ("|I|/A", "f"),
    35: ("Phase(Z)/deg", "f"), 36: ("|Z|/Ohm", "f"), 37: ("Re(Z)/Ohm", "f"), 38: ("-Im(Z)/Ohm", "f"),
    39: ("I Range", "H"), 69: ("R/Ohm", "f"), 70: ("P/W", "f"), 76: ("<I>/mA", "f"), 77: ("<Ewe>/V", "f"),
    123: ("Energy charge/W.h", "d"), 124: ("Energy discharge/W.h", "d"), 125: ("Capacitance charge/µF", "d"),
    126: ("Capacitance discharge/µF", "d"), 131: ("Ns", "H"), 169: ("Cs/µF", "f"), 172: ("Cp/µF", "f"),
}
MPR_DATA_OFFSET = {2: 0x195, 3: 0x196}  # start of the rows inside the "VMP data" module, by module version


def _detect_mpr(head: bytes, filename: str) -> bool:
    return head.startswith(MPR_MAGIC)


def _mpr_modules(data: bytes) -> list[dict[str, Any]]:
    """Modules of an .mpr: 'MODULE', short name (10 B), long name (25 B), length, version, date (8 B)."""
    if not data.startswith(MPR_MAGIC):
        raise ParseError("magic", repr(MPR_MAGIC), describe_start(data, 24))
    pos = MPR_HEADER_SIZE
    mods = []
    while pos < len(data):
        if data[pos:pos + 6] != b"MODULE":
            raise ParseError(f"module at byte {pos}", "'MODULE'", repr(data[pos:pos + 6]))
        h = pos + 6
        if h + 51 > len(data):
            raise ParseError(f"module header at byte {pos}", "51 header bytes", f"{len(data) - h} (truncated)")
        short = data[h:h + 10].decode("latin-1").strip()
        long = data[h + 10:h + 35].decode("latin-1").strip()
        length, version = struct.unpack_from("<II", data, h + 35)
        date = data[h + 43:h + 51]
        body = h + 51
        if not re.fullmatch(rb"\d\d/\d\d/\d\d", date):
            # newer EC-Lab: a 'max length' word before the length and an extra word before the date
            if h + 59 > len(data):
                raise ParseError(f"module header at byte {pos}", "a module header", "truncated")
            _max, length, version, _unk = struct.unpack_from("<IIII", data, h + 35)
            date = data[h + 51:h + 59]
            body = h + 59
            if not re.fullmatch(rb"\d\d/\d\d/\d\d", date):
                raise ParseError(f"module {short!r} date", "'mm/dd/yy'", repr(date))
        if body + length > len(data):
            raise ParseError(f"module {short!r} length", f"{length} bytes", f"{len(data) - body} (truncated)")
        mods.append({"name": short, "long_name": long, "version": version, "date": date.decode(),
                     "data": data[body:body + length]})
        pos = body + length
    return mods


def _read_mpr(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    mods = _mpr_modules(data)
    dmods = [m for m in mods if m["name"] == "VMP data"]
    if len(dmods) != 1:
        raise ParseError("modules", "exactly one 'VMP data' module", f"{[m['name'] for m in mods]}")
    d = dmods[0]
    body, version = d["data"], d["version"]
    if version not in MPR_DATA_OFFSET:
        raise ParseError("VMP data module version", f"one of {sorted(MPR_DATA_OFFSET)}", str(version))
    if len(body) < 6:
        raise ParseError("VMP data module", "a point count and a column count", f"{len(body)} bytes")
    npts, ncol = struct.unpack_from("<IH", body, 0)
    if 6 + 2 * ncol > MPR_DATA_OFFSET[version]:
        raise ParseError("VMP data column count", f"at most {(MPR_DATA_OFFSET[version] - 6) // 2}", str(ncol))
    ids = list(struct.unpack_from(f"<{ncol}H", body, 6))
    fmt = "<"
    names: list[str] = []
    if any(i in MPR_FLAG_IDS for i in ids):
        fmt += "B"
        names.append("flags")
    for i in ids:
        if i in MPR_FLAG_IDS:
            continue
        if i not in MPR_COLUMNS:
            raise ParseError("VMP data column id", f"a known column id ({sorted(MPR_COLUMNS)})", str(i))
        names.append(MPR_COLUMNS[i][0])
        fmt += MPR_COLUMNS[i][1]
    size = struct.calcsize(fmt)
    rows = body[MPR_DATA_OFFSET[version]:]
    if len(rows) != npts * size:
        raise ParseError("VMP data rows", f"{npts} rows of {size} bytes = {npts * size} bytes",
                         f"{len(rows)} bytes (truncated?)")
    for want in ("freq/Hz", "Re(Z)/Ohm", "-Im(Z)/Ohm"):
        if want not in names:
            raise ParseError("VMP data columns", "freq/Hz, Re(Z)/Ohm and -Im(Z)/Ohm", f"{names}")
    table = np.array(list(struct.iter_unpack(fmt, rows)), dtype=float).reshape(npts, len(names))
    for j, n in enumerate(names):
        bad = np.flatnonzero(~np.isfinite(table[:, j]))
        if bad.size:
            raise ParseError(f"VMP data row {int(bad[0]) + 1} column {n}", "a finite number",
                             repr(float(table[bad[0], j])))
    col = {n: table[:, names.index(n)] for n in names}
    keep = col["freq/Hz"] != 0  # rows of a non-impedance technique
    freq, zr, zi = col["freq/Hz"][keep], col["Re(Z)/Ohm"][keep], -col["-Im(Z)/Ohm"][keep]
    labels = [f"VMP data row {i + 1}" for i in np.flatnonzero(keep)]
    ewe = col.get("<Ewe>/V", col.get("Ewe/V"))
    ewe = ewe[keep] if ewe is not None else None
    header = {"modules": [{k: v for k, v in m.items() if k != "data"} | {"length": len(m["data"])} for m in mods],
              "columns": names}
    meta = {"file_format": "biologic-mpr", "instrument": "BioLogic", "header": header}

    def extra(sl: slice, off: int = 0) -> dict[str, Any]:
        s = slice(sl.start + off, sl.stop + off)
        return {"dc_potential": _median(ewe[s]) if ewe is not None else None}

    if "cycle number" not in col:
        return _split(freq, zr, zi, labels, "mpr", meta, extra=extra)
    cyc = col["cycle number"][keep]
    out: list[Spectrum] = []
    for c in dict.fromkeys(cyc.tolist()):
        idx = np.flatnonzero(cyc == c)
        a, b = int(idx[0]), int(idx[-1]) + 1
        if b - a != idx.size or c != int(c):
            raise ParseError(f"{labels[a]} column cycle number", "integer cycles, each cycle's rows together",
                             repr(c))
        ci = int(c)
        parts = _split(freq[a:b], zr[a:b], zi[a:b], labels[a:b], f"mpr cycle {ci}", dict(meta, cycle=ci),
                       sweep0=len(out), locator=lambda s, k, ci=ci: f"cycle={ci}" if k == 0 else f"cycle={ci},part={k}",
                       extra=lambda sl, a=a: extra(sl, a))
        if len(parts) > 1:
            parts[0].metadata["locator"] = f"cycle={ci},part=0"
        out += parts
    return out


# --------------------------------------------------------------------------- Scribner ZPlot .z

def _detect_zplot(head: bytes, filename: str) -> bool:
    first = _first_line(head)
    return first.startswith(b"ZPLOT") or (b"Freq(Hz)" in first and b"Z'(a)" in first)


def _column_indices(names: list[str], wanted: dict[str, str], col_line: int) -> dict[str, int]:
    """Index of each wanted column header (ZPlot / ZView-style exports)."""
    idx = {}
    for kind, want in wanted.items():
        if want not in names:
            raise ParseError(f"column line (line {col_line + 1})", f"a {want!r} column", f"columns {names}")
        idx[kind] = names.index(want)
    return idx


def _read_zplot(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    lines = _lines(data, "utf-8")
    end = next((i for i, ln in enumerate(lines) if ln.strip() == "End Comments"), None)
    col_line = next((i for i, ln in enumerate(lines[: (end if end is not None else len(lines))])
                     if "Freq(Hz)" in ln), None)
    if col_line is None:
        raise ParseError("column line", "a line naming the columns, starting 'Freq(Hz)'",
                         "none (truncated header?)" if end is None else f"none before 'End Comments' (line {end + 1})")
    if end is None and not lines[0].lstrip().startswith("Freq(Hz)"):
        raise ParseError("header", "'End Comments' closing the ZPlot header", "end of file (truncated?)")
    names = [x.strip() for x in lines[col_line].split("\t") if x.strip()]
    header: dict[str, Any] = {}
    stack = [header]
    for ln in lines[1:col_line]:
        s = ln.strip()
        if not s:
            continue
        key, _, value = s.partition(":")
        key, value = key.strip(), value.strip()
        if key.startswith("Begin ") and len(stack) < 8:
            sub: dict[str, Any] = {"_": value} if value else {}
            stack[-1][key[6:]] = sub
            stack.append(sub)
        elif key.startswith("End ") and len(stack) > 1:
            stack.pop()
        else:
            stack[-1][key] = value
    header["columns"] = names
    first_data = (end if end is not None else col_line) + 1
    t_lines = lines[first_data:]
    rows = [(first_data + k + 1, [x.strip() for x in re.split(r"\t|, ", ln) if x.strip()])
            for k, ln in enumerate(t_lines) if ln.strip()]
    declared = header.get("Data Points")
    if declared is not None:
        if not str(declared).isdigit():
            raise ParseError("Data Points", "an integer", repr(declared))
        if int(declared) != len(rows):
            raise ParseError("data rows", f"{declared} rows as declared by 'Data Points'", f"{len(rows)} (truncated?)")
    idx = _column_indices(names, {"freq": "Freq(Hz)", "real": "Z'(a)", "imag": "Z''(b)"}, col_line)
    bias = names.index("Bias") if "Bias" in names else None
    vals: dict[str, list[float]] = {"freq": [], "real": [], "imag": [], "bias": []}
    for ln, f in rows:
        if len(f) != len(names):
            raise ParseError(f"data line {ln}", f"{len(names)} fields ({', '.join(names)})", f"{len(f)} fields")
        for kind in ("freq", "real", "imag"):
            vals[kind].append(_float(f[idx[kind]], f"data line {ln} column {names[idx[kind]]}"))
        if bias is not None:
            vals["bias"].append(_float(f[bias], f"data line {ln} column Bias"))
    software = header.get("Measured Data, ZPlot")
    meta = {"file_format": "zplot-z", "instrument": "Scribner ZPlot" + (f" {software}" if software else ""),
            "measured_at": _datetime(header.get("Date"), header.get("Time")), "header": header}
    b = np.asarray(vals["bias"])
    return _split(np.asarray(vals["freq"]), np.asarray(vals["real"]), np.asarray(vals["imag"]),
                  [f"data line {ln}" for ln, _ in rows], "zplot", meta,
                  extra=(lambda sl: {"dc_potential": _median(b[sl])}) if b.size else None)


# --------------------------------------------------------------------------- Autolab / NOVA text

def _detect_autolab(head: bytes, filename: str) -> bool:
    first = _first_line(head)
    if b"Z60W Data File" in first:
        return True
    # NOVA column export: "Index;Frequency (Hz);Z' (Ω);-Z'' (Ω);..."
    return b"Frequency (Hz)" in first and ("Z' (Ω)".encode() in first or b"Z' (\xea)" in first)


def _read_autolab(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    lines = _lines(data, "utf-8")
    if not lines or "Z60W Data File" not in lines[0]:
        return _read_columns(lines, file_format="autolab-txt", instrument="Metrohm Autolab (NOVA)",
                             where="autolab", options=options)
    col_line = next((i for i, ln in enumerate(lines) if "Freq" in ln), None)
    if col_line is None:
        raise ParseError("column line", "a quoted line naming the columns ('Freq (Hz) ... Z'(a) Z''(b)')",
                         "none (truncated?)")
    names = [x for x in re.split(r"\s{2,}", lines[col_line].strip().strip('"').strip()) if x]
    comments = [ln.strip().strip('"') for ln in lines[1:col_line] if ln.strip().strip('"')]
    header: dict[str, Any] = {"format": lines[0].strip().strip('"'), "columns": names}
    declared = None
    if col_line >= 1 and lines[col_line - 1].strip().isdigit():
        declared = int(lines[col_line - 1].strip())
        comments = comments[:-1]
    if comments:
        header["settings"] = comments
    rows = [(k + 1, [x.strip() for x in ln.split(",")]) for k, ln in enumerate(lines[col_line + 1:], start=col_line + 1)
            if ln.strip()]
    if declared is not None and declared != len(rows):
        raise ParseError("data rows", f"{declared} rows as declared on line {col_line}", f"{len(rows)} (truncated?)")
    idx = _column_indices(names, {"freq": "Freq (Hz)", "real": "Z'(a)", "imag": "Z''(b)"}, col_line)
    vals: dict[str, list[float]] = {k: [] for k in idx}
    for ln, f in rows:
        if len(f) != len(names):
            raise ParseError(f"data line {ln}", f"{len(names)} comma-separated fields", f"{len(f)} fields")
        for kind, i in idx.items():
            vals[kind].append(_float(f[i], f"data line {ln} column {names[i]}"))
    meta = {"file_format": "autolab-txt", "instrument": "Metrohm Autolab (NOVA, Z60W text export)",
            "header": header}
    # Z''(b) of this layout already holds +Im(Z): capacitive points are negative
    return _split(np.asarray(vals["freq"]), np.asarray(vals["real"]), np.asarray(vals["imag"]),
                  [f"data line {ln}" for ln, _ in rows], "autolab", meta)


# --------------------------------------------------------------------------- Parstat text

def _detect_parstat(head: bytes, filename: str) -> bool:
    first = _first_line(head)
    return b"Frequency (Hz)" in first and b"Zre (ohms)" in first and b"Zim (ohms)" in first


def _read_parstat(data: bytes, filename: str, options: Mapping[str, Any]) -> list[Spectrum]:
    lines = _lines(data, "utf-8")
    names = _fields(lines[0], "\t") if lines else []
    need = {"freq": "Frequency (Hz)", "real": "Zre (ohms)", "imag": "Zim (ohms)"}
    idx = {}
    for kind, want in need.items():
        hits = [i for i, n in enumerate(names) if n == want]
        if len(hits) != 1:
            raise ParseError("header (line 1)", f"exactly one {want!r} column", f"{len(hits)} in {names}")
        idx[kind] = hits[0]
    pot = names.index("Potential (V)") if "Potential (V)" in names else None
    blocks: list[list[tuple[int, float, float, float, float | None]]] = [[]]
    n_time = 0
    for k, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            continue
        f = _fields(ln, "\t")
        if len(f) != len(names):
            raise ParseError(f"line {k}", f"{len(names)} tab-separated fields ({', '.join(names)})", f"{len(f)} fields")
        fr = _float(f[idx["freq"]], f"line {k} column {need['freq']}")
        if fr == 0:  # a time-series row between impedance sweeps
            n_time += 1
            if blocks[-1]:
                blocks.append([])
            continue
        blocks[-1].append((k, fr, _float(f[idx["real"]], f"line {k} column {need['real']}"),
                           _float(f[idx["imag"]], f"line {k} column {need['imag']}"),
                           _float(f[pot], f"line {k} column Potential (V)") if pot is not None else None))
    blocks = [b for b in blocks if b]
    if not blocks:
        raise ParseError("Frequency (Hz)", "impedance rows (non-zero frequency)",
                         f"only {n_time} time-series rows (truncated?)")
    header = {"columns": names, "time_series_rows": n_time}
    meta = {"file_format": "parstat-txt", "instrument": "Princeton Applied Research Parstat", "header": header}
    out: list[Spectrum] = []
    for b in blocks:
        arr = np.array([r[1:4] for r in b])
        e = np.array([r[4] for r in b], dtype=float) if pot is not None else None
        out += _split(arr[:, 0], arr[:, 1], arr[:, 2], [f"line {r[0]}" for r in b], "parstat", meta,
                      sweep0=len(out),
                      extra=(lambda sl, e=e: {"dc_potential": _median(e[sl])}) if e is not None else None)
    return out


# --------------------------------------------------------------------------- registry, rows, convenience

Reader = Callable[[bytes, str, Mapping[str, Any]], list[Spectrum]]

_FORMATS: list[tuple[str, str, Callable[[bytes, str], bool], Reader, str]] = [
    ("eis-biologic-mpr", "biologic-mpr", _detect_mpr, _read_mpr, "BioLogic EC-Lab binary .mpr (VMP data module)"),
    ("eis-gamry-dta", "gamry-dta", _detect_gamry, _read_gamry, "Gamry Framework .DTA, ZCURVE table"),
    ("eis-biologic-mpt", "biologic-mpt", _detect_mpt, _read_mpt, "BioLogic EC-Lab ASCII .mpt"),
    ("eis-zplot-z", "zplot-z", _detect_zplot, _read_zplot, "Scribner ZPlot .z"),
    ("eis-autolab-txt", "autolab-txt", _detect_autolab, _read_autolab, "Autolab/NOVA text export"),
    ("eis-parstat-txt", "parstat-txt", _detect_parstat, _read_parstat, "Parstat text export (EIS rows only)"),
    ("eis-csv", "csv", _detect_csv, _read_csv, "generic CSV/TSV of frequency, Z', Z''"),
]


def _apply_options(spectra: list[Spectrum], options: Mapping[str, Any]) -> list[Spectrum]:
    """Fill sample / temperature / state_of_charge from ingest options where the file is silent."""
    for key in ("sample", "temperature", "state_of_charge"):
        if key not in options or options[key] is None:
            continue
        value = options[key]
        if key == "sample":
            value = str(value)
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ParseError(f"option {key}", "a number", repr(value)) from None
            if key == "state_of_charge" and not 0 <= value <= 1:
                raise ParseError("option state_of_charge", "a fraction between 0 and 1", repr(value))
            if key == "temperature" and not value > 0:
                raise ParseError("option temperature", "a temperature in K above 0", repr(value))
        for s in spectra:
            if s.metadata.get(key) is None:
                s.metadata[key] = value
    return spectra


def _to_result(spectra: list[Spectrum], ctx: ParseContext) -> ParseResult:
    result = ParseResult()
    rows = []
    for s in spectra:
        m = s.metadata
        extra = {k: v for k, v in m.items() if k not in _ROW_KEYS}
        rows.append({
            "record_id": ctx.record_id(m["locator"]),
            "frequency": s.frequency.tolist(),
            "z_real": s.z.real.tolist(),
            "z_imag": s.z.imag.tolist(),
            "n_points": len(s.frequency),
            "f_min": float(s.frequency.min()),
            "f_max": float(s.frequency.max()),
            "sample": m.get("sample"),
            "cycle": m.get("cycle"),
            "sweep": m.get("sweep"),
            "temperature": m.get("temperature"),
            "state_of_charge": m.get("state_of_charge"),
            "dc_potential": m.get("dc_potential"),
            "instrument": m.get("instrument"),
            "file_format": m["file_format"],
            "measured_at": m.get("measured_at"),
            "metadata_json": json.dumps({**extra.pop("header", {}), **extra}, default=str, ensure_ascii=False),
            "source_name": ctx.filename,
            "source_sha256": ctx.source_sha256,
            "source_locator": m["locator"],
        })
    result.add_rows("impedance", rows)
    return result


_ROW_KEYS = frozenset({"sample", "cycle", "sweep", "temperature", "state_of_charge", "dc_potential", "instrument",
                       "file_format", "measured_at", "locator"})


def _make_parser(name: str, detect: Callable[[bytes, str], bool], read: Reader, description: str) -> Parser:
    def parse(data: bytes, ctx: ParseContext) -> ParseResult:
        return _to_result(_apply_options(read(data, ctx.filename, ctx.options), ctx.options), ctx)

    parse.__name__ = f"parse_{name.replace('-', '_')}"
    return Parser(name=name, version="1", kind="eis", detect=detect, parse=parse, description=description)


PARSERS: list[Parser] = [_make_parser(n, d, r, desc) for n, _, d, r, desc in _FORMATS]


def detect_format(head: bytes, filename: str = "") -> str | None:
    """The ``file_format`` of an impedance file from its first bytes, or None."""
    for _, fmt, det, _, _ in _FORMATS:
        if det(head[:8192], filename):
            return fmt
    return None


def read_bytes(data: bytes, filename: str = "", *, options: Mapping[str, Any] | None = None) -> list[Spectrum]:
    """Every spectrum in ``data`` (format detected from content); ParseError when unreadable."""
    for _, fmt, det, read, _ in _FORMATS:
        if det(data[:8192], filename):
            return _apply_options(read(data, filename, options or {}), options or {})
    raise ParseError("format", "an impedance file (" + ", ".join(f[1] for f in _FORMATS) + ")",
                     f"unrecognised content starting {data[:32]!r}", file=filename or None)


def read_spectra(path: str | Path, *, options: Mapping[str, Any] | None = None) -> list[Spectrum]:
    """Read every impedance spectrum in the file at ``path``.

    Frequencies in Hz, impedance in ohm with capacitive Im(z) < 0 (see the
    module docstring for the per-format sign rules).  Raises ParseError
    (with the file name) for unreadable files.
    """
    p = Path(path)
    try:
        return read_bytes(p.read_bytes(), p.name, options=options)
    except ParseError as exc:
        raise exc if exc.file else exc.with_file(p.name) from None
