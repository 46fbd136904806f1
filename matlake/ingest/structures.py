"""Crystal structures: CIF, POSCAR/CONTCAR and pymatgen Structure JSON → ``structures`` rows.

:func:`structure_row` is the one place that turns a pymatgen ``Structure``
into a ``structures`` row; the vasp and mp parsers reuse it.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from typing import TYPE_CHECKING, Any

from matlake.ingest.base import LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult

if TYPE_CHECKING:
    from pymatgen.core import Structure

SYMPREC = 0.1  # Angstrom; the tolerance the schema documents for spacegroup_symbol
PARSER_VERSION = "1.0.0"
_AMU_PER_A3_IN_G_PER_CM3 = 1.66053906892  # 1 amu / 1 Angstrom^3 in g/cm^3 (CODATA 2022 amu, as pymatgen via scipy)

_VOLUMETRIC_NAMES = ("CHGCAR", "LOCPOT", "AECCAR", "ELFCAR", "PARCHG", "CHG")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays can appear in site properties
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return str(obj)


MIN_VOLUME = 1e-6  # Angstrom^3; a cell below this is degenerate (coplanar or zero lattice vectors)


def check_structure(structure: Structure, locator: str, composition: Any = None) -> None:
    """Raise ParseError unless ``structure`` has sites, a finite lattice and coordinates, and a volume.

    pymatgen builds a Structure from a zero or NaN lattice without complaint;
    every later step (density, spglib, which crashes the process on NaN) needs these.
    """
    import numpy as np

    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.isfinite(matrix).all():
        raise ParseError(f"{locator} lattice", "finite lattice vectors (Angstrom)", str(matrix.tolist()))
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > MIN_VOLUME:
        raise ParseError(f"{locator} lattice", f"a cell volume above {MIN_VOLUME} Angstrom^3",
                         f"{volume:g} (lattice {matrix.tolist()})")
    if len(structure) == 0:
        raise ParseError(f"{locator} sites", "at least one site", "none")
    coords = np.asarray(structure.frac_coords, dtype=float)
    if not np.isfinite(coords).all():
        raise ParseError(f"{locator} sites", "finite coordinates", "NaN or infinite values")
    from pymatgen.core import Element

    composition = structure.composition if composition is None else composition
    dummies = sorted({str(e) for e in composition.element_composition if not isinstance(e, Element)})
    if dummies:  # pymatgen turns an unknown symbol such as 'Xx' into a dummy species without a mass
        raise ParseError(f"{locator} species", "chemical elements", ", ".join(dummies))


@functools.lru_cache(maxsize=None)
def _atomic_mass(species: Any) -> float:
    return float(species.atomic_mass)  # amu; pymatgen builds a unit object on every access


def _weight(composition: Any) -> float:
    """``float(composition.weight)`` in amu: the same sum in the same order, without unit objects."""
    return sum(amount * _atomic_mass(species) for species, amount in composition.items())


def structure_row(
    structure: Structure,
    ctx: ParseContext,
    locator: str,
    material_id: str | None = None,
    *,
    symprec: float = SYMPREC,
) -> dict[str, Any]:
    """One ``structures`` row for ``structure`` found at ``locator`` in the source.

    Lengths in Angstrom, angles in degrees, volume in Angstrom^3, density in
    g/cm^3.  The space group comes from spglib with ``symprec`` (Angstrom); if
    spglib cannot assign one (e.g. a disordered cell it rejects) the three
    symmetry columns are null rather than failing the record.
    """
    comp = structure.composition  # built anew by each call: once here
    check_structure(structure, locator, comp)
    el_comp = comp.element_composition  # strips oxidation states from species
    elements = sorted(el.symbol for el in el_comp.elements)
    lat = structure.lattice
    (a, b, c), (alpha, beta, gamma) = lat.abc, lat.angles  # each of lat.a ... lat.gamma computes all six
    volume = float(lat.volume)
    sg_symbol = sg_number = crystal_system = None
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            sg_symbol = sga.get_space_group_symbol()
            sg_number = int(sga.get_space_group_number())
            crystal_system = sga.get_crystal_system()
    except Exception:  # spglib gives up on some cells; symmetry is optional metadata
        pass
    with warnings.catch_warnings():
        # pymatgen sorts formulas by electronegativity and warns for He, Ne, Ar (none defined)
        warnings.filterwarnings("ignore", message="No Pauling electronegativity", category=UserWarning)
        formula, reduced_formula = el_comp.formula, el_comp.reduced_formula
    return {
        "record_id": ctx.record_id(locator),
        "formula": formula,
        "reduced_formula": reduced_formula,
        "chemsys": "-".join(elements),
        "elements": elements,
        "nelements": len(elements),
        "nsites": len(structure),
        "a": float(a),
        "b": float(b),
        "c": float(c),
        "alpha": float(alpha),
        "beta": float(beta),
        "gamma": float(gamma),
        "lattice": [float(x) for x in lat.matrix.ravel()],
        "volume": volume,
        # amu/Angstrom^3 → g/cm^3; Structure.density goes through slower unit objects
        "density": _weight(comp) * _AMU_PER_A3_IN_G_PER_CM3 / volume,
        "spacegroup_symbol": sg_symbol,
        "spacegroup_number": sg_number,
        "crystal_system": crystal_system,
        "material_id": material_id,
        "structure_json": json.dumps(structure.as_dict(), default=_json_default),
        "source_name": ctx.filename,
        "source_sha256": ctx.source_sha256,
        "source_locator": locator,
    }


# --- POSCAR-like headers (shared with the volumetric detector in vasp.py) ---------------


def _floats(line: str, n: int) -> list[float] | None:
    parts = line.split()
    if len(parts) < n:
        return None
    try:
        return [float(p) for p in parts[:n]]
    except ValueError:
        return None


def poscar_header_end(lines: list[str], *, partial: bool = False) -> int | None:
    """Index of the first line after the coordinate block of a POSCAR-like text.

    Returns None when the lines do not look like a POSCAR (comment, scale,
    3 lattice vectors, optional symbols, counts, optional 'Selective', 'Direct'/
    'Cartesian', N coordinate lines), or when the text ends before the
    coordinates do — unless ``partial``, in which case a valid header whose
    coordinates run past the end of ``lines`` (a cut-off head) gives -1.
    """
    if len(lines) < 8:
        return None
    scale = _floats(lines[1], 1)
    if scale is None or len(lines[1].split()) not in (1, 3):
        return None
    for i in (2, 3, 4):
        if _floats(lines[i], 3) is None or len(lines[i].split()) != 3:
            return None
    i = 5
    tokens = lines[i].split()
    if tokens and not tokens[0].lstrip("-").isdigit():
        # element symbols line (VASP 5); symbols may carry a POTCAR suffix like 'Si_pv' or '/'
        if not all(re.match(r"^[A-Z][a-z]?", t) for t in tokens):
            return None
        i += 1
    try:
        counts = [int(t) for t in lines[i].split()]
    except (ValueError, IndexError):
        return None
    if not counts or any(c < 0 for c in counts) or sum(counts) == 0:
        return None
    i += 1
    if i < len(lines) and lines[i].strip()[:1] in ("S", "s"):
        i += 1
    if i >= len(lines) or lines[i].strip()[:1] not in ("D", "d", "C", "c", "K", "k"):
        return None
    i += 1
    natoms = sum(counts)
    for j in range(i, min(i + natoms, len(lines))):
        if _floats(lines[j], 3) is None:
            return None
    if i + natoms > len(lines):
        return -1 if partial else None
    return i + natoms


def grid_after(lines: list[str], start: int) -> tuple[int, int, int] | None:
    """The (nx, ny, nz) grid line of a volumetric file after the coordinates, if any.

    VASP writes a blank line after the coordinates, then three integers.
    (Anything else — velocities, predictor-corrector data — is not a grid.)
    """
    j = start
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j == start or j >= len(lines):
        return None
    parts = lines[j].split()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    nx, ny, nz = (int(p) for p in parts)
    return (nx, ny, nz) if nx > 0 and ny > 0 and nz > 0 else None


def _head_lines(head: bytes) -> list[str] | None:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text.splitlines()


# --- detection ---------------------------------------------------------------------------

_CIF_NAME = re.compile(r"\.(m?cif)$", re.I)
_CIF_BLOCK = re.compile(rb"^\s*data_\S*", re.M)
_POSCAR_NAME = re.compile(r"(POSCAR|CONTCAR)|\.vasp$", re.I)
_STRUCT_JSON = re.compile(rb'^\s*\{\s*"@module"\s*:\s*"pymatgen\.core\.structure"\s*,\s*"@class"\s*:\s*"I?Structure"')


def _name_says_volumetric(filename: str) -> bool:
    base = filename.rsplit("/", 1)[-1].upper()
    return any(k in base for k in _VOLUMETRIC_NAMES)


def _detect_cif(head: bytes, filename: str) -> bool:
    if _CIF_NAME.search(filename.removesuffix(".gz")):
        return True
    return bool(_CIF_BLOCK.search(head)) and (b"_cell_length_a" in head or b"_atom_site_" in head)


def head_cut_in_coordinates(head: bytes, lines: list[str]) -> bool:
    """True when a full 8 KiB head is a POSCAR header whose coordinates run past
    its end (the last line of a cut head may itself be cut, so it is left out)."""
    return len(head) >= 8192 and poscar_header_end(lines[:-1], partial=True) == -1


def _detect_poscar(head: bytes, filename: str) -> bool:
    if _name_says_volumetric(filename):
        return False
    lines = _head_lines(head)
    if lines is None:
        return False
    end = poscar_header_end(lines)
    if end is None:
        # A long POSCAR whose coordinates run past the 8 KiB head: trust the name.
        return bool(_POSCAR_NAME.search(filename)) and head_cut_in_coordinates(head, lines)
    return grid_after(lines, end) is None


def _detect_structure_json(head: bytes, filename: str) -> bool:
    if _STRUCT_JSON.match(head):
        return True
    if len(head) < 8192 and head.lstrip()[:1] == b"{":  # whole file in head: look at the top level
        try:
            doc = json.loads(head)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("@class") in ("Structure", "IStructure") and "sites" in doc
    return False


def detect(head: bytes, filename: str) -> bool:
    return _detect_structure_json(head, filename) or _detect_cif(head, filename) or _detect_poscar(head, filename)


# --- parsing -----------------------------------------------------------------------------


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        try:
            return data.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any bytes
            raise ParseError("encoding", f"{what} as UTF-8 or latin-1 text", str(exc)) from exc


def _cif_blocks(text: str) -> list[tuple[str, Any, Any]]:
    """(name, block, parser of that block) for each data block, the text parsed once.

    One ``CifParser`` over the whole text parses and sanitizes every block; the
    blocks are then read from it.  When that fails (a block pymatgen cannot even
    sanitize) each block gets its own parser, so a bad block is reported by
    number and does not hide the good ones.
    """
    from pymatgen.io.cif import CifFile, CifParser

    try:
        whole = CifParser.from_str(text)
        # pymatgen keeps the parsed file as ``_cif``; reading the blocks from it spares a second parse
        return [(name, block, whole) for name, block in whole._cif.data.items()]
    except LIBRARY_INPUT_ERRORS:
        pass
    try:
        cif = CifFile.from_str(text)
    except LIBRARY_INPUT_ERRORS as exc:
        raise ParseError("CIF", "CIF 1.1 data blocks", f"{type(exc).__name__}: {exc}") from exc
    out = []
    for name, block in cif.data.items():
        try:
            out.append((name, block, CifParser.from_str(str(block))))
        except LIBRARY_INPUT_ERRORS as exc:
            out.append((name, block, exc))
    return out


def _block_structures(parser: Any, block: Any) -> list[Structure]:
    """The structures of one sanitized block, failing as ``parse_structures(on_error="raise")`` does."""
    try:
        struct = parser._get_structure(block, False, False, check_occu=True)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"No structure parsed for section 1 in CIF.\n{exc}") from exc
    if not struct:
        raise ValueError("Invalid CIF file with no structures!")
    return [struct]


def _parse_cif(text: str, ctx: ParseContext, result: ParseResult) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blocks = _cif_blocks(text)
        rows = []
        failures = []
        for n, (name, block, parser) in enumerate(blocks):
            try:
                if isinstance(parser, BaseException):
                    raise parser
                # one block at a time, so a bad block is reported by number and does not hide the good ones
                structs = _block_structures(parser, block)
            except LIBRARY_INPUT_ERRORS as exc:
                failures.append(f"cif_block={n} (data_{name}): {type(exc).__name__}: {exc}")
                continue
            for s in structs:
                rows.append(structure_row(s, ctx, f"cif_block={n}"))
    msgs = sorted({str(w.message) for w in caught})
    if not rows:
        found = "; ".join(failures) or "no data_ block"
        if msgs:  # pymatgen warns once per suspicious line; the first says enough
            found += f" ({len(msgs)} pymatgen warnings, first: {msgs[0]})"
        raise ParseError("CIF data block", "a block with _cell_length_* and an _atom_site_ loop", found[:500])
    result.add_rows("structures", rows)
    result.warnings.extend(failures)
    result.warnings.extend(msgs)


def _parse_poscar(text: str, ctx: ParseContext, result: ParseResult) -> None:
    from pymatgen.io.vasp import Poscar

    lines = text.splitlines()
    if poscar_header_end(lines) is None:
        raise ParseError(
            "POSCAR header",
            "comment, scale, 3 lattice vectors, [symbols], counts, Direct/Cartesian, one line per atom",
            repr("\n".join(lines[:8])[:60]),
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            poscar = Poscar.from_str(text)
        except LIBRARY_INPUT_ERRORS as exc:
            raise ParseError("POSCAR", "a VASP POSCAR/CONTCAR", f"{type(exc).__name__}: {exc}") from exc
    result.add_rows("structures", [structure_row(poscar.structure, ctx, "poscar")])
    result.warnings.extend(sorted({str(w.message) for w in caught}))


def _parse_structure_json(text: str, ctx: ParseContext, result: ParseResult) -> None:
    from pymatgen.core import Structure

    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ParseError("JSON", "a JSON document", f"{type(exc).__name__}: {exc}") from exc
    docs = doc if isinstance(doc, list) else [doc]
    rows = []
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or d.get("@class") not in ("Structure", "IStructure"):
            found = d.get("@class") if isinstance(d, dict) else type(d).__name__
            raise ParseError(f"document [{i}] @class", "Structure", repr(found))
        try:
            s = Structure.from_dict(d)
        except LIBRARY_INPUT_ERRORS as exc:
            raise ParseError(f"document [{i}]", "a pymatgen Structure dict", f"{type(exc).__name__}: {exc}") from exc
        rows.append(structure_row(s, ctx, "json" if not isinstance(doc, list) else f"[{i}]"))
    result.add_rows("structures", rows)


def parse(data: bytes, ctx: ParseContext) -> ParseResult:
    """CIF (one row per block), POSCAR/CONTCAR or Structure JSON → ``structures`` rows."""
    result = ParseResult()
    head = data[:8192]
    text = _decode(data, "structure file")
    if _detect_structure_json(head, ctx.filename) or text.lstrip()[:1] in ("{", "["):
        _parse_structure_json(text, ctx, result)
    elif _detect_cif(head, ctx.filename) or _CIF_BLOCK.search(head):
        _parse_cif(text, ctx, result)
    else:
        _parse_poscar(text, ctx, result)
    return result


PARSERS = [
    Parser(
        name="structure",
        version=PARSER_VERSION,
        kind="structure",
        detect=detect,
        parse=parse,
        description="CIF (all blocks), POSCAR/CONTCAR, pymatgen Structure JSON → structures",
    )
]
