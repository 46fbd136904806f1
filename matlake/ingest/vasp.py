"""VASP outputs: vasprun.xml → ``calculations`` + ``structures``; CHGCAR-like grids → ``volumetric``.

pymatgen does the parsing.  Its readers want a path: the platform's copy of an
uncompressed file, or else the bytes written once to a temporary file (in /dev/shm
when available, i.e. memory).  The extra work on top of pymatgen is kept small
because ``bench/`` compares this parser against the bare ``Vasprun(path,
parse_dos=False, parse_projected_eigen=False, parse_potcar_file=False)`` call; the
same call is made here, on the vasprun without the blocks those options leave
unread (see :func:`without_unread_blocks`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any
from xml.etree.ElementTree import ParseError as XMLParseError

import numpy as np

from matlake.ingest.base import LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult, describe_start
from matlake.ingest.structures import _head_lines, grid_after, head_cut_in_coordinates, poscar_header_end, structure_row

VASPRUN_VERSION = "1.0.0"
VOLUMETRIC_VERSION = "1.0.0"

_TMPDIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextlib.contextmanager
def _as_file(data: bytes, suffix: str, ctx: ParseContext | None = None) -> Iterator[str]:
    """Path of a file holding ``data`` (pymatgen's readers take paths): the
    platform's own copy when it has one (``ctx.content_path``), else a temporary file."""
    if ctx is not None and ctx.content_path:
        yield ctx.content_path
        return
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="matlake-", dir=_TMPDIR)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


# --- vasprun.xml -------------------------------------------------------------------------


def detect_vasprun(head: bytes, filename: str) -> bool:
    return b"<modeling>" in head and (b"<generator>" in head or b'"program"' in head)


_EFERMI = re.compile(rb'<i name="efermi">\s*([-+0-9.eEdD]+)\s*</i>')


def _efermi(data: bytes, last_dos: int = 0) -> float | None:
    """Fermi level (eV) of the last <dos> block (it starts at byte ``last_dos``, when known);
    pymatgen reads it only with parse_dos=True, which would parse the whole DOS."""
    pos = data.find(b'<i name="efermi">', last_dos) if last_dos else data.rfind(b'<i name="efermi">')
    if pos < 0:
        return None
    m = _EFERMI.match(data, pos)
    return float(m.group(1).replace(b"D", b"E").replace(b"d", b"e")) if m else None


# What the vasprun parser asks of pymatgen; ``without_unread_blocks`` cuts what these leave unread.
VASPRUN_OPTIONS = {"parse_dos": False, "parse_projected_eigen": False, "parse_potcar_file": False}
_UNREAD_TAGS = (b"dos", b"projected")
_SCAN_WINDOW = 1 << 16  # bytes searched for either tag at a time: neither search runs far past the other's find


def _next_unread(data: bytes, pos: int) -> tuple[int, bytes]:
    """Index and tag of the first ``<dos>`` or ``<projected>`` start tag (attributes allowed)
    at or after ``pos``; (-1, b"") when there is none."""
    n = len(data)
    while pos < n:
        stop = min(n, pos + _SCAN_WINDOW)
        best, best_tag = -1, b""
        for tag in _UNREAD_TAGS:
            opening = b"<" + tag
            i = data.find(opening, pos, stop + len(opening))
            while 0 <= i < stop and data[i + len(opening):i + len(opening) + 1] not in (b">", b" ", b"\t", b"\n", b"\r"):
                i = data.find(opening, i + 1, stop + len(opening))  # <dosfoo>, <projected_kpoints_opt>
            if 0 <= i < stop and (best < 0 or i < best):
                best, best_tag = i, tag
        if best >= 0:
            return best, best_tag
        pos = stop
    return -1, b""


def without_unread_blocks(data: bytes) -> tuple[bytes, int]:
    """``data`` without the vasprun.xml blocks that the parse's options leave unread, and
    the byte offset of the last ``<dos>`` block in ``data`` (0: none).

    With ``parse_dos=False, parse_projected_eigen=False`` pymatgen reads neither the
    ``<dos>`` blocks nor the projections of ``<projected>``, but its XML reader still
    builds every element of them: 76-98% of the bytes of the sample runs, most of their parse
    time.  Removed here: each ``<dos>`` element, and the content of each ``<projected>``
    element after its ``<eigenvalues>`` (pymatgen reads those: they are the last
    eigenvalues it sees).  A block that is not closed (a truncated file) and all after
    it are left as they are.  Each byte of a removed block is searched once (for its
    closing tag).  What is removed is not checked, and line numbers move: a parse of
    the result that fails is done again on ``data`` (see :func:`parse_vasprun`).
    """
    kept: list[bytes] = []
    pos = last_dos = 0
    while True:
        start, tag = _next_unread(data, pos)
        if start < 0:
            break
        closing = b"</" + tag + b">"
        close = data.find(closing, start)
        if close < 0:
            break
        if tag == b"dos":
            cut, end, last_dos = start, close + len(closing), start
        else:
            eig = data.find(b"</eigenvalues>", start, close)
            cut = eig + len(b"</eigenvalues>") if eig >= 0 else data.index(b">", start) + 1
            end = close
        kept.append(data[pos:cut])
        pos = end
    if not kept:
        return data, last_dos
    kept.append(data[pos:])
    return b"".join(kept), last_dos


def _functional_from_potcars(symbols: list[str]) -> str | None:
    """POTCAR family from symbols like 'PAW_PBE Si 05Jan2001' → 'PBE' (MP's 'functional')."""
    if not symbols:
        return None
    first = symbols[0].split()[0]
    return first.removeprefix("PAW_").removeprefix("PAW") or None


def _translate_vasprun_error(exc: Exception, data: bytes, path: str = "", filename: str = "") -> ParseError:
    msg = str(exc)
    if path:  # the temporary file's name means nothing to the user
        msg = msg.replace(path, filename).replace(os.path.basename(path), filename or "vasprun.xml")
    line = getattr(exc, "lineno", None) or (getattr(exc, "position", None) or (None,))[0]
    if isinstance(exc, XMLParseError) or type(exc).__name__ == "XMLSyntaxError":
        nlines = data.count(b"\n") + 1
        if "Premature end" in msg or "no element found" in msg or (line is not None and line >= nlines - 1):
            found = f"end of data at line {line} of {nlines} (file truncated?): {msg}"
        else:
            found = f"malformed XML at line {line}: {msg}"
        return ParseError("vasprun.xml", "a complete, well-formed <modeling> document", found)
    if isinstance(exc, (KeyError, IndexError)):
        return ParseError(
            "vasprun.xml content", "the <incar>, <atominfo>, <structure> and <calculation> sections",
            f"missing {type(exc).__name__}: {msg}",
        )
    return ParseError("vasprun.xml", "a VASP vasprun.xml pymatgen can read", f"{type(exc).__name__}: {msg}")


def _total_magnetization(vr: Any) -> float | None:
    """N_up - N_down (mu_B) of the final step from the k-weighted band occupations."""
    from pymatgen.electronic_structure.core import Spin

    eig = vr.eigenvalues
    if not eig or Spin.down not in eig:
        return None
    w = np.asarray(vr.actual_kpoints_weights, dtype=float)
    up = eig[Spin.up][..., 1].sum(axis=1)
    down = eig[Spin.down][..., 1].sum(axis=1)
    return float(np.dot(w, up - down))


def band_edges(eigenvalues: dict, occu_tol: float = 1e-8) -> tuple[float, float, float, bool]:
    """(band gap, cbm, vbm, is_direct) in eV from the band occupations, as pymatgen defines them.

    The same rule as ``Vasprun.eigenvalue_band_properties`` (occupation >
    ``occu_tol`` is occupied; the first maximum/minimum in spin, k-point,
    band order decides the k-point of each edge), vectorized: pymatgen's
    pure-Python loop costs more than the rest of our per-file work.
    """
    arrays = [np.asarray(v) for v in eigenvalues.values()]
    nk, nb = arrays[0].shape[:2]
    allv = np.concatenate([a.reshape(-1, 2) for a in arrays])
    eig, occ = allv[:, 0], allv[:, 1]
    occupied = occ > occu_tol
    vbm, cbm = -float("inf"), float("inf")
    vbm_k = cbm_k = None
    if occupied.any():
        masked = np.where(occupied, eig, -np.inf)
        i = int(np.argmax(masked))
        vbm, vbm_k = float(eig[i]), (i // nb) % nk
    if (~occupied).any():
        masked = np.where(occupied, np.inf, eig)
        i = int(np.argmin(masked))
        cbm, cbm_k = float(eig[i]), (i // nb) % nk
    return max(cbm - vbm, 0), cbm, vbm, vbm_k == cbm_k


def parse_vasprun(data: bytes, ctx: ParseContext) -> ParseResult:
    """vasprun.xml → one ``calculations`` row and one ``structures`` row (final structure).

    Energies in eV (``energy`` is pymatgen's ``final_energy``), ENCUT in eV,
    band edges and Fermi level in eV, magnetization in mu_B.
    """
    if not detect_vasprun(data[:8192], ctx.filename):
        raise ParseError("vasprun.xml root", "an XML document with <modeling> and <generator>", describe_start(data))
    read, last_dos = without_unread_blocks(data)
    vr = None
    if read is not data:
        try:
            vr, caught, path = pymatgen_vasprun(read, data, ctx.filename)
        except ParseError:
            pass  # parsed again as it is, below: the error then names the file's own lines
    del read
    if vr is None:
        last_dos = 0
        vr, caught, path = pymatgen_vasprun(data, data, ctx.filename, ctx)
    row, struct_row = _vasprun_rows(vr, data, ctx, last_dos)
    result = ParseResult()
    result.add_rows("structures", [struct_row])
    result.add_rows("calculations", [row])
    # pymatgen's warnings may name the file it read: a temporary copy's name means nothing
    result.warnings.extend(sorted({f"{w.category.__name__}: {str(w.message).replace(path, ctx.filename)}"
                                   for w in caught}))
    return result


def pymatgen_vasprun(content: bytes, data: bytes, filename: str,
                     ctx: ParseContext | None = None) -> tuple[Any, list[warnings.WarningMessage], str]:
    """pymatgen's ``Vasprun`` (with :data:`VASPRUN_OPTIONS`) of ``content``: the file's ``data``
    or its cut; also the warnings it gave and the path it read (``ctx.content_path`` when
    given, else a temporary file).  A :class:`ParseError` naming ``filename`` when it cannot."""
    from pymatgen.io.vasp import Vasprun

    with warnings.catch_warnings(record=True) as caught, _as_file(content, ".xml", ctx) as path:
        warnings.simplefilter("always")
        try:
            return Vasprun(path, **VASPRUN_OPTIONS), caught, path
        except LIBRARY_INPUT_ERRORS as exc:
            raise _translate_vasprun_error(exc, data, path, filename) from exc


def _vasprun_rows(vr: Any, data: bytes, ctx: ParseContext, last_dos: int = 0) -> tuple[dict, dict]:
    if not vr.ionic_steps:
        raise ParseError("vasprun.xml <calculation>", "at least one ionic step", "none")
    structure = vr.final_structure
    struct_row = structure_row(structure, ctx, "final_structure")
    params = vr.parameters
    nsites = len(structure)
    energy = float(vr.final_energy)
    if vr.eigenvalues is None:
        raise ParseError("vasprun.xml <eigenvalues>", "eigenvalues of the final step", "none")
    gap, cbm, vbm, is_direct = band_edges(vr.eigenvalues, vr.occu_tol)
    kp = vr.kpoints
    style = getattr(kp.style, "name", str(kp.style)) if kp is not None else None
    mesh = None
    if kp is not None and style in ("Gamma", "Monkhorst") and len(kp.kpts) == 1:
        mesh = [int(x) for x in kp.kpts[0]]
    ispin = _opt_int(params.get("ISPIN"))
    potcars = list(vr.potcar_symbols or [])
    hubbards = vr.hubbards if vr.is_hubbard else {}
    row = {
        "record_id": ctx.record_id("calculation"),
        "structure_id": struct_row["record_id"],
        "formula": struct_row["formula"],
        "reduced_formula": struct_row["reduced_formula"],
        "elements": struct_row["elements"],
        "nsites": nsites,
        "code": "VASP",
        "code_version": vr.vasp_version,
        "material_id": None,
        "run_type": vr.run_type,
        "functional": _functional_from_potcars(potcars),
        "is_hubbard": bool(vr.is_hubbard),
        "hubbards_json": json.dumps(hubbards, default=_json_default),
        "potcar_symbols": potcars,
        # vasprun's <parameters> call the cutoff ENMAX; the INCAR tag is ENCUT
        "encut": _opt_float(vr.incar.get("ENCUT", params.get("ENMAX"))),
        "kpoints_mesh": mesh,
        "kpoints_style": style,
        "nkpoints": len(vr.actual_kpoints) if vr.actual_kpoints is not None else None,
        "ispin": ispin,
        "nelect": _opt_float(params.get("NELECT")),
        "ediff": _opt_float(params.get("EDIFF")),
        "ediffg": _opt_float(params.get("EDIFFG")),
        "nionic_steps": len(vr.ionic_steps),
        "electronic_converged": bool(vr.converged_electronic),
        "ionic_converged": bool(vr.converged_ionic),
        "energy": energy,
        "energy_per_atom": energy / nsites,
        "energy_correction": None,
        "band_gap": float(gap),
        "cbm": float(cbm),
        "vbm": float(vbm),
        "efermi": _efermi(data, last_dos),
        "is_metal": bool(gap <= 0.0),
        "is_direct": bool(is_direct),
        "total_magnetization": _total_magnetization(vr) if ispin == 2 else None,
        "incar_json": json.dumps(dict(vr.incar), default=_json_default),
        "source_name": ctx.filename,
        "source_sha256": ctx.source_sha256,
        "source_locator": "calculation",
    }
    return row, struct_row


# --- volumetric files --------------------------------------------------------------------

# Longest first: 'CHG' is a prefix of 'CHGCAR'.
_VOL_KINDS = ("AECCAR0", "AECCAR1", "AECCAR2", "CHGCAR", "LOCPOT", "ELFCAR", "PARCHG", "CHG")
_CHARGE_KINDS = {"AECCAR0", "AECCAR1", "AECCAR2", "CHGCAR", "PARCHG", "CHG", "CHGCAR-like"}


def volumetric_kind_from_name(filename: str) -> str | None:
    """'Si_static_CHGCAR.gz' → 'CHGCAR'; None when the name does not say."""
    base = os.path.basename(filename).upper()
    for k in _VOL_KINDS:
        if k in base:
            return k
    return None


def detect_volumetric(head: bytes, filename: str) -> bool:
    lines = _head_lines(head)
    if lines is None:
        return False
    end = poscar_header_end(lines)
    if end is None:
        # a big cell whose coordinates run past the 8 KiB head: the name decides
        return volumetric_kind_from_name(filename) is not None and head_cut_in_coordinates(head, lines)
    return grid_after(lines, end) is not None


def _volumetric_kind(ctx: ParseContext) -> str:
    return volumetric_kind_from_name(ctx.filename) or str(ctx.options.get("volumetric_kind") or "CHGCAR-like")


def parse_volumetric(data: bytes, ctx: ParseContext) -> ParseResult:
    """CHGCAR / LOCPOT / AECCAR* / ELFCAR → one ``volumetric`` row + one ``structures`` row.

    The grids are stored exactly as pymatgen parses them.  Charge files hold
    rho*V_cell (VASP's convention), so sum/N_grid is the number of electrons;
    LOCPOT holds the potential in eV and its integral is mean*volume
    (eV*Angstrom^3).  ELF is dimensionless and has no integral.
    """
    from pymatgen.io.vasp import Chgcar, Elfcar, Locpot

    kind = _volumetric_kind(ctx)
    lines = _head_lines(data[:8192])
    end = poscar_header_end(lines) if lines is not None else None
    if end is None:
        raise ParseError(
            "volumetric header",
            "a POSCAR block (comment, scale, lattice, [symbols], counts, Direct/Cartesian, coordinates)",
            describe_start(data),
        )
    grid = grid_after(lines, end)
    if grid is None:
        raise ParseError("grid line", "three positive integers after a blank line following the coordinates",
                         repr("\n".join(lines[end:end + 2])[:120]))
    n_values = grid[0] * grid[1] * grid[2]
    if 2 * n_values > len(data):  # each value takes a digit and a separator at least
        raise ParseError("grid line", f"a grid that {len(data)} bytes can hold",
                         f"{grid[0]}x{grid[1]}x{grid[2]} = {n_values} values")
    cls = Locpot if kind == "LOCPOT" else Elfcar if kind == "ELFCAR" else Chgcar
    with warnings.catch_warnings(record=True) as caught, _as_file(data, f"_{kind}", ctx) as path:
        warnings.simplefilter("always")
        try:
            vol = cls.from_file(path)
        except LIBRARY_INPUT_ERRORS as exc:
            raise ParseError(
                f"{kind} grid data",
                f"{grid[0]}x{grid[1]}x{grid[2]} = {n_values} values per data block",
                f"{type(exc).__name__}: {exc}",
            ) from exc
    result = ParseResult()
    structure = vol.structure
    srow = structure_row(structure, ctx, "structure")
    channels = list(vol.data.keys())
    # pymatgen names a spin-polarized LOCPOT's blocks spin_up/spin_down (and keeps
    # total/diff as deprecated aliases); charge files have total (+ diff)
    if "spin_up" in channels:
        main_key, second_key = "spin_up", "spin_down"
    else:
        main_key = "total" if "total" in channels else channels[0]
        second_key = "diff" if "diff" in channels else None
    main = vol.data[main_key]
    if main.shape != grid:
        raise ParseError("grid shape", f"{grid} as declared in the header", str(main.shape))
    main_sha = ctx.put_array(main)
    second_sha = None
    if second_key:
        second = vol.data[second_key]
        # a non-magnetic spin-polarized LOCPOT has two identical blocks: encode once
        second_sha = main_sha if np.array_equal(second, main) else ctx.put_array(second)
    ngrid = main.size
    # np.mean is this sum divided by the count: one pass over the grid, the same float
    mean = float(main.sum()) / ngrid
    volume = float(structure.volume)
    if kind in _CHARGE_KINDS:
        unit, integral = "e (rho*V_cell, VASP convention)", mean
    elif kind == "LOCPOT":
        unit, integral = "eV", mean * volume
    else:
        unit, integral = "", None
    row = {
        "record_id": ctx.record_id("grid"),
        "kind": kind,
        "structure_id": srow["record_id"],
        "reduced_formula": srow["reduced_formula"],
        "grid_shape": list(main.shape),
        "channels": [main_key] + ([second_key] if second_key else []),
        "array_sha256": main_sha,
        "diff_sha256": second_sha,
        "data_unit": unit,
        "min": float(main.min()),
        "max": float(main.max()),
        "mean": mean,
        "integral": integral,
        "source_name": ctx.filename,
        "source_sha256": ctx.source_sha256,
        "source_locator": "grid",
    }
    result.add_rows("structures", [srow])
    result.add_rows("volumetric", [row])
    result.warnings.extend(sorted({f"{w.category.__name__}: {w.message}" for w in caught}))
    return result


PARSERS = [
    Parser(
        name="vasprun",
        version=VASPRUN_VERSION,
        kind="vasp",
        detect=detect_vasprun,
        parse=parse_vasprun,
        description="VASP vasprun.xml → calculations + final structure",
    ),
    Parser(
        name="volumetric",
        version=VOLUMETRIC_VERSION,
        kind="vasp",
        detect=detect_volumetric,
        parse=parse_volumetric,
        description="VASP CHGCAR/LOCPOT/AECCAR*/ELFCAR grids → volumetric (+ cell structure)",
        buffer_ok=True,  # parse_volumetric slices and measures data; pymatgen reads the path
    ),
]
