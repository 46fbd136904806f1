"""Tabular property datasets (CSV of compositions, defects, structures + properties) read through a map.

Kind ``table``, explicit only (any text file would match)::

    matlake ingest FILE.csv --kind table --option map=MAP.toml
    matlake ingest-table FILE.csv --map MAP.toml          # the same
    matlake.platform.ingestion.ingest_frame(lake, df, map) # a pandas DataFrame, from Python

The parser is pure: it never reads the map file.  The platform reads the TOML
file named by ``--option map=PATH`` before any work (see
:func:`matlake.platform.ingestion.resolve_file_options`), keeps its bytes as an
object that every ingest activity *used*, and hands the parsed map to the parser
as the ``map`` option; so the ledger and the activity parameters hold the whole
map, and a changed map is a new attempt (a success is keyed by the options too:
``Parser.keyed_by_options``).  Re-ingesting a file with a corrected map adds new
versions of the same records (record ids come from the file, the dataset name and
the subject key, not from the map's other contents); a property the new map drops
keeps its old row.

The map (TOML)::

    dataset = "dft_impurities"        # required: names the dataset (and every record id)
    header = true                     # default true: the first non-empty line names the columns
    delimiter = ","                   # default ","; also "tab", "semicolon", "whitespace"
    comment = "#"                     # optional: lines starting with it are skipped
    columns = ["formula", "skip", "gap_pbe", "d1", "d2"]   # header = false: names in order;
                                      # "skip" marks unused columns (header = true: not allowed)
    missing = ["", "NA", "nan"]       # default ["", "NA", "N/A", "nan", "NaN"]: empty cells
    subject = ["AB", "Site", "Impurity"]   # required: column(s) whose values form the subject key
    tags = ["Type"]                   # other identifying columns, kept in tags_json
    composition = "formula"           # optional: a formula column (pymatgen syntax, real elements only)
    structure = "structure_id"        # optional: a column of structures record ids
    molecules = {MA = "CH3NH3", FA = "CH(NH2)2"}   # species names allowed in site strings

    [sites]                           # optional site pattern: site = column, or a table
    A = "A"                           # "Cs0.5MA0.5": species and amounts on that site
    B = "B"
    X = {column = "X", multiplicity = 3}   # "I2.5Br0.5" (sums to 3) or "I0.5Br0.5" (fractions)

    [[property]]                      # one per property column
    column = "(+1/0)"
    name = "level(+1/0)"              # default: the column name
    unit = "eV"                       # required ("" for dimensionless)
    fidelity = "GGA"                  # required: 'PBE', 'HSE', 'GGA', 'experiment', ...
    method = "DFT supercell"          # optional
    source = "doi:..."                # optional

    [[descriptor]]                    # descriptor columns kept as given
    glob = "d*"                       # or column = "d1" (and optional name = "...")
    unit = ""                         # required

Every subject column must be filled; the subject key is their values joined by
``|`` and must be unique in the file.  Site strings are species (element symbols or
names declared in ``molecules``) each followed by an optional amount; a site's
amounts sum to 1 (fractions) or to its multiplicity (amounts per formula unit).
``sites_json`` keeps the fractions; without a composition column, the composition
is built from the sites (amount x multiplicity, molecules expanded).

Output tables (:mod:`matlake.schemas.materials`): ``material_subjects`` (one per
data row), ``material_properties`` (one per non-missing property cell),
``material_features`` (one vector of the given descriptors per subject, featurizer
``given:<dataset>``; a missing descriptor cell is NaN) and ``table_rejects``.

Bad cells: text in a numeric column, a non-finite number, an unknown element or
species, a site whose amounts sum to neither 1 nor its multiplicity, an empty subject
cell, a repeated subject key, a row with the wrong number of fields.  Each is named by
data row (1-based, header not counted), text line and column.  By default
(``on_bad_cell = fail``) the file is ``failed``: the ledger row's message lists the
first bad cells (row, column, expected, found) and how many there are, and nothing of
the file is committed.  With ``--option on_bad_cell=skip`` the rows without bad cells
are ingested, every bad cell becomes a ``table_rejects`` row and the rows holding them
are left out whole (a subject is never half there); the result's warnings say how
many (a file whose every row is rejected is failed).  A bad map (no unit for a property, a column the file does not have, ...) always
fails the file, naming the map key.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matlake.ingest.base import ParseContext, ParseError, Parser, ParseResult, printable

PARSER_VERSION = "1"
OPTIONS = ("map", "on_bad_cell", "option_files", "file_format")
DEFAULT_MISSING = ("", "NA", "N/A", "nan", "NaN")
DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "whitespace": None, "space": None}
MAP_KEYS = ("dataset", "header", "delimiter", "comment", "columns", "missing", "subject", "tags", "composition",
            "structure", "molecules", "sites", "property", "descriptor")
SKIP = "skip"
SHOWN_BAD_CELLS = 10  # bad cells listed in a failure message


@dataclass(frozen=True)
class BadCell:
    """One cell the map cannot accept: 1-based data row and text line, column, expected, found."""

    row: int
    line: int
    column: str
    expected: str
    found: str

    def text(self) -> str:
        return f"row {self.row} (line {self.line}), column {self.column!r}: expected {self.expected}, " \
               f"found {printable(self.found, 80)!r}"


class BadCells(ParseError):
    """A table with bad cells: the message lists the first :data:`SHOWN_BAD_CELLS` and the count."""

    def __init__(self, cells: Sequence[BadCell], *, file: str | None = None) -> None:
        self.cells = list(cells)
        first = self.cells[0]
        super().__init__(f"row {first.row} (line {first.line}), column {first.column!r}", first.expected,
                         first.found, file=file)

    def _message(self) -> str:
        where = f"{self.file}: " if self.file else ""
        shown = "; ".join(c.text() for c in self.cells[:SHOWN_BAD_CELLS])
        more = len(self.cells) - SHOWN_BAD_CELLS
        tail = f"; and {more} more" if more > 0 else ""
        return (f"{where}{len(self.cells)} bad cell{'s' if len(self.cells) != 1 else ''} "
                f"(--option on_bad_cell=skip ingests the other rows): {shown}{tail}")

    def with_file(self, file: str) -> "BadCells":
        return BadCells(self.cells, file=file)


# --------------------------------------------------------------------------- the map


@dataclass(frozen=True)
class PropertySpec:
    column: str
    name: str
    unit: str
    fidelity: str
    method: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class SiteSpec:
    name: str
    column: str
    multiplicity: float = 1.0


@dataclass
class TableMap:
    """A validated map (see the module docstring for the TOML format)."""

    dataset: str
    header: bool = True
    delimiter: str | None = ","
    comment: str | None = None
    columns: list[str] | None = None
    missing: frozenset[str] = frozenset(DEFAULT_MISSING)
    subject: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    composition: str | None = None
    structure: str | None = None
    molecules: dict[str, str] = field(default_factory=dict)
    sites: list[SiteSpec] = field(default_factory=list)
    properties: list[PropertySpec] = field(default_factory=list)
    descriptors: list[dict[str, Any]] = field(default_factory=list)


def _map_error(key: str, expected: str, found: Any) -> ParseError:
    return ParseError(f"map {key}", expected, repr(found))


def _str(value: Any, key: str, *, required: bool = True, empty_ok: bool = False) -> str | None:
    if value is None:
        if required:
            raise _map_error(key, "a string", "nothing (the key is missing)")
        return None
    if not isinstance(value, str) or (not value and not empty_ok):
        raise _map_error(key, "a non-empty string" if not empty_ok else "a string", value)
    return value


def _str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _map_error(key, "a column name or a list of them", value)
    return list(value)


def parse_map(doc: Any) -> TableMap:
    """Validate a parsed TOML map; a wrong key or value is a :class:`ParseError` naming the key."""
    if not isinstance(doc, Mapping):
        raise ParseError("option map", "the parsed map (a table; the platform reads --option map=FILE.toml)",
                         type(doc).__name__)
    unknown = sorted(set(doc) - set(MAP_KEYS))
    if unknown:
        raise _map_error("keys", f"keys among {', '.join(MAP_KEYS)}", ", ".join(unknown))
    m = TableMap(dataset=_str(doc.get("dataset"), "dataset") or "")
    header = doc.get("header", True)
    if not isinstance(header, bool):
        raise _map_error("header", "true or false", header)
    m.header = header
    delim = doc.get("delimiter", ",")
    if not isinstance(delim, str) or not delim or (delim not in DELIMITERS and len(delim) != 1):
        raise _map_error("delimiter", f"one character or one of {', '.join(DELIMITERS)}", delim)
    m.delimiter = DELIMITERS.get(delim, delim)
    m.comment = _str(doc.get("comment"), "comment", required=False)
    if "columns" in doc:
        if header:
            raise _map_error("columns", "no columns list when header = true (the header names the columns)",
                             doc["columns"])
        m.columns = _str_list(doc["columns"], "columns")
        named = [c for c in m.columns if c != SKIP]
        dup = sorted({c for c in named if named.count(c) > 1})
        if dup:
            raise _map_error("columns", "distinct column names (use \"skip\" for unused columns)", dup)
    elif not header:
        raise _map_error("columns", "the column names in order (header = false: the file names none)",
                         "nothing (the key is missing)")
    missing = doc.get("missing", list(DEFAULT_MISSING))
    if not isinstance(missing, list) or not all(isinstance(v, str) for v in missing):
        raise _map_error("missing", "a list of strings", missing)
    m.missing = frozenset(v.strip() for v in missing)
    if "subject" not in doc:
        raise _map_error("subject", "the column(s) identifying a subject", "nothing (the key is missing)")
    m.subject = _str_list(doc["subject"], "subject")
    m.tags = _str_list(doc.get("tags", []), "tags") if doc.get("tags") else []
    m.composition = _str(doc.get("composition"), "composition", required=False)
    m.structure = _str(doc.get("structure"), "structure", required=False)
    molecules = doc.get("molecules", {})
    if not isinstance(molecules, Mapping) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                     for k, v in molecules.items()):
        raise _map_error("molecules", "a table of name = \"formula\"", molecules)
    for name, formula in molecules.items():
        if _composition(formula) is None:
            raise _map_error(f"molecules.{name}", "a formula of real elements, e.g. \"CH3NH3\"", formula)
    m.molecules = dict(molecules)
    sites = doc.get("sites", {})
    if not isinstance(sites, Mapping):
        raise _map_error("sites", "a table of site = \"column\" or site = {column = ..., multiplicity = n}", sites)
    for name, spec in sites.items():
        if isinstance(spec, str) and spec:
            m.sites.append(SiteSpec(name, spec))
        elif isinstance(spec, Mapping) and isinstance(spec.get("column"), str) and set(spec) <= {"column",
                                                                                                "multiplicity"}:
            mult = spec.get("multiplicity", 1)
            if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
                raise _map_error(f"sites.{name}.multiplicity", "a positive number", mult)
            m.sites.append(SiteSpec(name, spec["column"], float(mult)))
        else:
            raise _map_error(f"sites.{name}", "a column name or {column = \"...\", multiplicity = n}", spec)
    props = doc.get("property", [])
    if not isinstance(props, list):
        raise _map_error("property", "[[property]] entries", props)
    seen: dict[tuple[str, str], str] = {}
    for k, p in enumerate(props, start=1):
        key = f"property #{k}"
        if not isinstance(p, Mapping):
            raise _map_error(key, "a table", p)
        extra = sorted(set(p) - {"column", "name", "unit", "fidelity", "method", "source"})
        if extra:
            raise _map_error(key, "keys among column, name, unit, fidelity, method, source", ", ".join(extra))
        column = _str(p.get("column"), f"{key} column") or ""
        key = f"property {column!r}"
        if "unit" not in p:
            raise _map_error(f"{key} unit", "the property's unit (\"\" when dimensionless)",
                             "nothing (the key is missing)")
        spec = PropertySpec(column=column, name=_str(p.get("name", column), f"{key} name") or column,
                            unit=_str(p["unit"], f"{key} unit", empty_ok=True) or "",
                            fidelity=_str(p.get("fidelity"), f"{key} fidelity") or "",
                            method=_str(p.get("method"), f"{key} method", required=False),
                            source=_str(p.get("source"), f"{key} source", required=False))
        if (spec.name, spec.fidelity) in seen:
            raise _map_error(f"{key} name", f"one column per (name, fidelity); ({spec.name!r}, {spec.fidelity!r}) "
                             f"is also column {seen[(spec.name, spec.fidelity)]!r}", spec.name)
        seen[(spec.name, spec.fidelity)] = column
        m.properties.append(spec)
    descs = doc.get("descriptor", [])
    if not isinstance(descs, list):
        raise _map_error("descriptor", "[[descriptor]] entries", descs)
    for k, d in enumerate(descs, start=1):
        key = f"descriptor #{k}"
        if not isinstance(d, Mapping) or not (("column" in d) ^ ("glob" in d)):
            raise _map_error(key, "a table with column = \"...\" or glob = \"...\" (one of them)", d)
        extra = sorted(set(d) - {"column", "glob", "name", "unit"})
        if extra or ("name" in d and "glob" in d):
            raise _map_error(key, "keys column (+ name) or glob, and unit", ", ".join(extra) or "name with glob")
        if "unit" not in d:
            raise _map_error(f"{key} unit", "the descriptor's unit (\"\" when dimensionless)",
                             "nothing (the key is missing)")
        _str(d["unit"], f"{key} unit", empty_ok=True)
        _str(d.get("column") or d.get("glob"), f"{key} column")
        m.descriptors.append(dict(d))
    if not m.properties and not m.descriptors:
        raise _map_error("property", "at least one [[property]] or [[descriptor]] entry", "none")
    return m


# --------------------------------------------------------------------------- cells


def _composition(text: str) -> Any:
    """pymatgen Composition of ``text`` when every species is a real element, else None."""
    from pymatgen.core import Composition, Element

    try:
        comp = Composition(text)
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError):
        return None
    if not len(comp) or not all(isinstance(el, Element) for el in comp.elements):
        return None  # pymatgen takes unknown symbols (Xx, 'MA') as dummy species
    return comp


def _number(text: str) -> float | None:
    """A finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_AMOUNT = r"(\d+(?:\.\d*)?|\.\d+)?"


def _site_regex(molecules: Mapping[str, str]) -> re.Pattern[str]:
    names = sorted(molecules, key=len, reverse=True)
    species = "|".join([re.escape(n) for n in names] + ["[A-Z][a-z]?"])
    return re.compile(rf"\s*({species}){_AMOUNT}\s*")


def parse_site(text: str, molecules: Mapping[str, str], regex: re.Pattern[str] | None = None) -> dict[str, float] | None:
    """Species -> amount of a site string such as 'Cs0.5MA0.5' (None when it is not one)."""
    from pymatgen.core import Element

    regex = regex or _site_regex(molecules)
    out: dict[str, float] = {}
    pos, text = 0, text.strip()
    while pos < len(text):
        m = regex.match(text, pos)
        if not m or m.end() == pos:
            return None
        sp, amount = m.group(1), float(m.group(2)) if m.group(2) else 1.0
        if sp not in molecules and not Element.is_valid_symbol(sp):
            return None
        if amount <= 0:
            return None
        out[sp] = out.get(sp, 0.0) + amount
        pos = m.end()
    return out or None


# --------------------------------------------------------------------------- parsing


def _text(data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError("encoding", "UTF-8 text", f"byte {exc.start}: not UTF-8") from exc


def _rows(text: str, m: TableMap) -> tuple[list[str], list[tuple[int, int, list[str]]]]:
    """Column names and the data rows as (row number, line number, fields)."""
    lines = text.splitlines()
    rows: list[tuple[int, int, list[str]]] = []
    names: list[str] | None = None if m.header else list(m.columns or [])
    if m.delimiter is None:
        split = ((n, line.split()) for n, line in enumerate(lines, start=1))
    else:
        reader = csv.reader(io.StringIO(text), delimiter=m.delimiter)
        split = ((reader.line_num, fields) for fields in reader)
    try:
        for line_no, fields in split:
            line = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
            if not "".join(fields).strip() and not line.strip():
                continue
            if m.comment and line.lstrip().startswith(m.comment):
                continue
            fields = [f.strip() for f in fields]
            if names is None:
                names = fields
                continue
            rows.append((len(rows) + 1, line_no, fields))
    except csv.Error as exc:
        raise ParseError("CSV", "well-formed delimited text", str(exc)) from exc
    if names is None:
        raise ParseError("header", "a header line naming the columns (header = true)", "no lines")
    if not rows:
        raise ParseError("data", "at least one data row", "none")
    return names, rows


def _index(names: list[str], column: str, key: str) -> int:
    hits = [k for k, n in enumerate(names) if n == column and n != SKIP]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        shown = [n for n in names if n and n != SKIP]
        raise _map_error(key, f"a column of the file ({', '.join(map(repr, shown))})", column)
    raise _map_error(key, "a column name that appears once in the header", f"{column!r} ({len(hits)} columns)")


def parse_table(data: bytes, ctx: ParseContext) -> ParseResult:
    """A CSV (or other delimited text) → material_subjects, material_properties, material_features rows."""
    opts = ctx.options
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ParseError("options", f"options among {', '.join(OPTIONS)}", ", ".join(unknown))
    if "map" not in opts:
        raise ParseError("option map", "--option map=MAP.toml (a table file says nothing without its map)",
                         "no map")
    on_bad = str(opts.get("on_bad_cell", "fail"))
    if on_bad not in ("fail", "skip"):
        raise ParseError("option on_bad_cell", "fail or skip", repr(on_bad))
    fmt = str(opts.get("file_format") or "csv")
    m = parse_map(opts["map"])
    names, rows = _rows(_text(data), m)
    ncol = len(names)

    subj_idx = [_index(names, c, "subject") for c in m.subject]
    tag_idx = [_index(names, c, "tags") for c in m.tags if c not in m.subject]
    comp_idx = _index(names, m.composition, "composition") if m.composition else None
    struct_idx = _index(names, m.structure, "structure") if m.structure else None
    site_idx = [(s, _index(names, s.column, f"sites.{s.name}")) for s in m.sites]
    prop_idx = [(p, _index(names, p.column, f"property {p.column!r}")) for p in m.properties]
    desc_cols: list[tuple[int, str, str]] = []  # (index, name, unit)
    for k, d in enumerate(m.descriptors, start=1):
        if "glob" in d:
            hits = [i for i, n in enumerate(names) if n and n != SKIP and fnmatch.fnmatchcase(n, d["glob"])]
            if not hits:
                raise _map_error(f"descriptor #{k} glob", "a pattern matching columns of the file", d["glob"])
            desc_cols.extend((i, names[i], d["unit"]) for i in hits)
        else:
            desc_cols.append((_index(names, d["column"], f"descriptor #{k} column"), d.get("name", d["column"]),
                              d["unit"]))
    if len({n for _i, n, _u in desc_cols}) != len(desc_cols):
        raise _map_error("descriptor", "each descriptor column once", [n for _i, n, _u in desc_cols])
    site_re = _site_regex(m.molecules)
    molecule_comp = {k: _composition(v) for k, v in m.molecules.items()}
    # (reduced formula, composition JSON) per formula text / per amounts: tables repeat compositions,
    # and pymatgen's formula reduction is most of the parse time
    formula_cache: dict[Any, tuple[str, str] | None] = {}

    def described(comp: Any) -> tuple[str, str]:
        return comp.reduced_formula, json.dumps(comp.get_el_amt_dict(), sort_keys=True)

    bad: list[BadCell] = []
    subjects, props, feats = [], [], []
    first_row_of: dict[str, int] = {}
    for row_no, line_no, fields in rows:
        cells: list[BadCell] = []

        def bad_cell(i: int, expected: str, found: str) -> None:
            cells.append(BadCell(row_no, line_no, names[i] or f"column {i + 1}", expected, found))

        if len(fields) != ncol:
            bad.append(BadCell(row_no, line_no, "(row)", f"{ncol} fields like the header/columns list",
                               f"{len(fields)} fields"))
            continue

        def is_missing(i: int) -> bool:
            return fields[i] in m.missing

        key_parts = []
        for i in subj_idx:
            if is_missing(i):
                bad_cell(i, "a value (subject columns identify the row)", fields[i])
            key_parts.append(fields[i])
        key = "|".join(key_parts)
        if not cells and key in first_row_of:
            bad_cell(subj_idx[0], f"a subject key not seen before ({'|'.join(m.subject)})",
                     f"{key!r}, also on row {first_row_of[key]}")
        tags = {names[i]: fields[i] for i in subj_idx + tag_idx if not is_missing(i)}
        comp: tuple[str, str] | None = None
        if comp_idx is not None and not is_missing(comp_idx):
            text = fields[comp_idx]
            if text not in formula_cache:
                parsed = _composition(text)
                formula_cache[text] = described(parsed) if parsed is not None else None
            comp = formula_cache[text]
            if comp is None:
                bad_cell(comp_idx, "a formula of real elements", text)
        sites: dict[str, dict[str, float]] = {}
        amounts: dict[str, float] = {}
        for s, i in site_idx:
            if is_missing(i):
                continue
            species = parse_site(fields[i], m.molecules, site_re)
            if species is None:
                known = ", ".join(m.molecules) or "none declared"
                bad_cell(i, f"species (element symbols or molecules: {known}) with optional amounts", fields[i])
                continue
            total = sum(species.values())
            if math.isclose(total, s.multiplicity, rel_tol=1e-6, abs_tol=1e-9):
                scale = 1.0
            elif math.isclose(total, 1.0, rel_tol=1e-6, abs_tol=1e-9):
                scale = s.multiplicity
            else:
                bad_cell(i, f"amounts summing to 1 or to the site multiplicity {s.multiplicity:g}",
                         f"{fields[i]} (sum {total:g})")
                continue
            sites[s.name] = {sp: a * scale / s.multiplicity for sp, a in species.items()}
            for sp, a in species.items():
                parts = molecule_comp[sp].get_el_amt_dict() if sp in molecule_comp else {sp: 1.0}
                for el, n in parts.items():
                    amounts[el] = amounts.get(el, 0.0) + n * a * scale
        values = []
        for p, i in prop_idx:
            if is_missing(i):
                continue
            v = _number(fields[i])
            if v is None:
                bad_cell(i, f"a finite number ({p.name}, {p.unit or 'dimensionless'})", fields[i])
            else:
                values.append((p, i, v))
        vector = []
        for i, _name, _unit in desc_cols:
            v = math.nan if is_missing(i) else _number(fields[i])
            if v is None:
                bad_cell(i, "a finite number (descriptor)", fields[i])
            vector.append(v)
        if cells:
            bad.extend(cells)
            continue
        first_row_of[key] = row_no
        if comp is None and amounts:
            from pymatgen.core import Composition

            akey = tuple(sorted(amounts.items()))
            if akey not in formula_cache:
                formula_cache[akey] = described(Composition(amounts))
            comp = formula_cache[akey]
        locator = f"row={row_no} line={line_no}"
        sid = ctx.record_id(f"subject:{m.dataset}:{key}")
        subjects.append({
            "record_id": sid, "dataset": m.dataset, "subject_key": key,
            "formula": comp[0] if comp is not None else None,
            "composition_json": comp[1] if comp is not None else None,
            "sites_json": json.dumps(sites, sort_keys=True) if site_idx else None,
            "structure_id": fields[struct_idx] if struct_idx is not None and not is_missing(struct_idx) else None,
            "row_number": row_no, "tags_json": json.dumps(tags, sort_keys=True),
            "file_format": fmt, "source_name": ctx.filename, "source_sha256": ctx.source_sha256,
            "source_locator": locator,
        })
        for p, i, v in values:
            props.append({
                "record_id": ctx.record_id(f"property:{m.dataset}:{key}:{p.name}:{p.fidelity}"),
                "subject_id": sid, "dataset": m.dataset, "name": p.name, "value": v, "unit": p.unit,
                "fidelity": p.fidelity, "method": p.method, "source": p.source, "row_number": row_no,
                "column_name": names[i],
            })
        if desc_cols:
            feats.append({
                "record_id": ctx.record_id(f"given:{m.dataset}:{key}"), "subject_id": sid,
                "subject_table": "material_subjects", "featurizer": f"given:{m.dataset}",
                "featurizer_version": PARSER_VERSION,
                "parameters_json": json.dumps({"dataset": m.dataset, "columns": [names[i] for i, _n, _u in desc_cols]}),
                "names": [n for _i, n, _u in desc_cols], "values": vector, "units": [u for _i, _n, u in desc_cols],
            })
    result = ParseResult()
    if bad and on_bad == "fail":
        raise BadCells(bad)
    if bad:
        rejected = sorted({c.row for c in bad})
        result.warnings.append(f"{len(bad)} bad cells: {len(rejected)} rows left out (table_rejects): "
                               + "; ".join(c.text() for c in bad[:SHOWN_BAD_CELLS]))
        result.add_rows("table_rejects", [{
            "record_id": ctx.record_id(f"reject:{m.dataset}:row={c.row}:{c.column}"), "dataset": m.dataset,
            "row_number": c.row, "line_number": c.line, "column_name": c.column, "expected": c.expected,
            "found": printable(c.found), "file_format": fmt, "source_name": ctx.filename,
            "source_sha256": ctx.source_sha256, "source_locator": f"row={c.row} line={c.line}",
        } for c in bad])
    if not subjects:
        raise ParseError("data", "at least one row without bad cells", f"{len(rows)} rows, all rejected")
    result.add_rows("material_subjects", subjects)
    result.add_rows("material_properties", props)
    result.add_rows("material_features", feats)
    return result


def detect_table(head: bytes, filename: str) -> bool:
    """Any text; only consulted under ``--kind table`` (the map says what the columns are)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the 8 KiB head
    return True


# The registry skips this detector under --kind auto: without a map no file is a table.
detect_table.explicit_kind_only = True  # type: ignore[attr-defined]

PARSERS = [
    Parser(name="table-csv", version=PARSER_VERSION, kind="table", detect=detect_table, parse=parse_table,
           description="delimited text with --kind table --option map=MAP.toml → material_subjects, "
                       "material_properties, material_features", file_options=("map",), keyed_by_options=True),
]
