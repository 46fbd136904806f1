"""Materials Project documents → ``calculations`` (+ ``structures``), and the MP API client.

Reads JSON holding one document or a list of them:

* pymatgen ``ComputedEntry`` / ``ComputedStructureEntry`` (monty JSON, ``@class``);
* MP API thermo documents (``material_id`` + ``entries`` keyed by run type);
* MP API summary documents (``material_id``, ``structure``, energies, band gap...);
* the blob written by :func:`fetch`: the exact API responses plus the query
  that produced them, so a stored raw object carries its own provenance.

Energies are in eV.  ``energy`` is the uncorrected total energy of the
calculated cell, ``energy_correction`` the MP compatibility correction (eV).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
import warnings
from typing import Any

from matlake.ingest.base import (
    LIBRARY_INPUT_ERRORS, ParseContext, ParseError, Parser, ParseResult,
    json_default, load_json,
)
from matlake.ingest.structures import structure_row

PARSER_VERSION = "1.0.0"
BLOB_FORMAT = "matlake.mp-api/1"  # value of the "@matlake" key of a fetch() blob

THERMO_FIELDS = [
    "material_id", "thermo_type", "formula_pretty", "composition", "chemsys",
    "energy_per_atom", "uncorrected_energy_per_atom", "formation_energy_per_atom",
    "energy_above_hull", "is_stable", "entries",
]
XAS_ROUTE = "materials/xas"
SUMMARY_FIELDS = [
    "material_id", "formula_pretty", "band_gap", "cbm", "vbm", "efermi", "is_gap_direct", "is_metal",
    "total_magnetization",
]

_ENTRY_CLASSES = {"ComputedEntry", "ComputedStructureEntry", "GibbsComputedStructureEntry"}

# --- detection ---------------------------------------------------------------------------

_ENTRY_CLASS_RE = re.compile(rb'"@class"\s*:\s*"(Computed(Structure)?Entry|GibbsComputedStructureEntry)"')
_BLOB_RE = re.compile(rb'^\s*\{\s*"@matlake"\s*:\s*"matlake\.mp-api/')
_MPID_RE = re.compile(rb'"material_id"\s*:\s*"(mp|mvc|mol)-\d+')


_XAS_RE = re.compile(rb'"@module"\s*:\s*"pymatgen\.analysis\.xas\.spectrum"')


def detect(head: bytes, filename: str) -> bool:
    s = head.lstrip()
    if s[:1] not in (b"{", b"["):
        return False
    if _BLOB_RE.match(head):
        return True
    if _XAS_RE.search(head):  # an XAS spectrum (MP XAS documents carry ids too): the spectrum-xas-json parser's
        return False
    return bool(_ENTRY_CLASS_RE.search(head) or _MPID_RE.search(head))


# --- documents → rows --------------------------------------------------------------------


def _mapping(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise ParseError(field, "a JSON object", type(value).__name__)
    return value


def _number(value: Any, field: str) -> float:
    """A finite number from a JSON number or numeric string (not a bool, list, NaN or inf)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ParseError(field, "a finite number", repr(value)[:60])
    return number


def _composition_fields(comp: Any, locator: str = "document") -> dict[str, Any]:
    el = comp.element_composition
    if not el.num_atoms > 0:
        raise ParseError(f"{locator}.composition", "at least one atom", repr(el.formula or "nothing"))
    return {
        "formula": el.formula,
        "reduced_formula": el.reduced_formula,
        "elements": sorted(e.symbol for e in el.elements),
        "nsites": int(round(el.num_atoms)),
    }


def _entry_rows(
    d: dict, locator: str, ctx: ParseContext, extra: dict[str, Any] | None = None
) -> tuple[dict, dict | None]:
    """One ComputedEntry-like dict → (calculations row, structures row or None)."""
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    cls = d.get("@class", "ComputedStructureEntry" if "structure" in d else "ComputedEntry")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry = (ComputedStructureEntry if "structure" in d else ComputedEntry).from_dict(d)
    except LIBRARY_INPUT_ERRORS as exc:
        raise ParseError(f"{locator}", f"a pymatgen {cls} dict (energy, composition, parameters)",
                         f"{type(exc).__name__}: {exc}") from exc
    params = _mapping(entry.parameters or {}, f"{locator}.parameters")
    material_id = (extra or {}).get("material_id") or (str(entry.entry_id) if entry.entry_id is not None else None)
    srow = None
    if isinstance(entry, ComputedStructureEntry):
        srow = structure_row(entry.structure, ctx, f"{locator}/structure", material_id=material_id)
    comp = _composition_fields(entry.composition, locator)
    energy = _number(entry.uncorrected_energy, f"{locator}.energy")
    try:
        correction = float(entry.correction)  # pymatgen sums energy_adjustments here
    except LIBRARY_INPUT_ERRORS as exc:
        raise ParseError(f"{locator}.energy_adjustments", "pymatgen EnergyAdjustment dicts",
                         f"{type(exc).__name__}: {exc}") from exc
    pseudo = _mapping(params.get("pseudo_potential") or {}, f"{locator}.parameters.pseudo_potential")
    hubbards = _mapping(params.get("hubbards") or {}, f"{locator}.parameters.hubbards")
    potcars = params.get("potcar_symbols")
    if potcars and (not isinstance(potcars, list) or not all(isinstance(x, str) for x in potcars)):
        raise ParseError(f"{locator}.parameters.potcar_symbols", "a list of POTCAR symbols", type(potcars).__name__)
    row = {
        "record_id": ctx.record_id(locator),
        "structure_id": srow["record_id"] if srow else None,
        **comp,
        "code": "VASP",
        "material_id": material_id,
        "run_type": params.get("run_type"),
        "functional": pseudo.get("functional"),
        "is_hubbard": bool(params["is_hubbard"]) if "is_hubbard" in params else bool(hubbards),
        "hubbards_json": json.dumps(hubbards, default=json_default),
        "potcar_symbols": list(potcars) if potcars else None,
        "energy": energy,
        "energy_per_atom": energy / comp["nsites"],
        "energy_correction": correction,
        "incar_json": json.dumps(params["incar"], default=json_default) if params.get("incar") else None,
        "source_name": ctx.filename,
        "source_sha256": ctx.source_sha256,
        "source_locator": locator,
    }
    row.update(_electronic(entry.data or {}))
    if extra:
        row.update({k: v for k, v in _electronic(extra).items() if v is not None})
    return row, srow


def _electronic(doc: dict, locator: str = "document") -> dict[str, Any]:
    """Band-structure fields of an MP summary doc (eV) mapped to our columns."""
    out: dict[str, Any] = {}
    for src, dst in (("band_gap", "band_gap"), ("cbm", "cbm"), ("vbm", "vbm"), ("efermi", "efermi"),
                     ("total_magnetization", "total_magnetization")):
        if doc.get(src) is not None:
            out[dst] = _number(doc[src], f"{locator}.{src}")
    if doc.get("is_metal") is not None:
        out["is_metal"] = bool(doc["is_metal"])
    if doc.get("is_gap_direct") is not None:
        out["is_direct"] = bool(doc["is_gap_direct"])
    return out


def _summary_rows(d: dict, locator: str, ctx: ParseContext) -> tuple[dict, dict | None]:
    """An MP summary doc (no entry inside) → calculations row (+ structure)."""
    from pymatgen.core import Composition, Structure

    mid = str(d["material_id"])
    srow = None
    comp_src: Any = None
    if d.get("structure"):
        try:
            s = Structure.from_dict(d["structure"])
        except LIBRARY_INPUT_ERRORS as exc:
            found = f"{type(exc).__name__}: {exc}"
            raise ParseError(f"{locator}.structure", "a pymatgen Structure dict", found) from exc
        srow = structure_row(s, ctx, f"{locator}/structure", material_id=mid)
        comp_src = s.composition
    elif d.get("composition"):
        try:
            comp_src = Composition(d["composition"])
        except LIBRARY_INPUT_ERRORS as exc:
            raise ParseError(f"{locator}.composition", "a formula or an element -> amount object",
                             f"{type(exc).__name__}: {exc}") from exc
    if comp_src is None:
        raise ParseError(f"{locator}", "a 'structure' or 'composition' in the MP document", f"keys {sorted(d)[:12]}")
    comp = _composition_fields(comp_src, locator)
    n = comp["nsites"]
    unc, corr_epa = d.get("uncorrected_energy_per_atom"), d.get("energy_per_atom")
    if unc is not None:
        unc = _number(unc, f"{locator}.uncorrected_energy_per_atom")
    if corr_epa is not None:
        corr_epa = _number(corr_epa, f"{locator}.energy_per_atom")
    energy = unc * n if unc is not None else None
    correction = (corr_epa - unc) * n if unc is not None and corr_epa is not None else None
    row = {
        "record_id": ctx.record_id(locator),
        "structure_id": srow["record_id"] if srow else None,
        **comp,
        "code": "VASP",
        "material_id": mid,
        "energy": energy,
        "energy_per_atom": unc,
        "energy_correction": correction,
        **_electronic(d),
        "source_name": ctx.filename,
        "source_sha256": ctx.source_sha256,
        "source_locator": locator,
    }
    return row, srow


def _doc_rows(doc: Any, locator: str, ctx: ParseContext, extra: dict | None) -> list[tuple[dict, dict | None]]:
    if not isinstance(doc, dict):
        raise ParseError(locator, "a JSON object (MP document or ComputedEntry)", type(doc).__name__)
    cls = doc.get("@class")
    if cls is not None and not isinstance(cls, str):
        raise ParseError(f"{locator} @class", "a class name", type(cls).__name__)
    if cls in _ENTRY_CLASSES or (cls is None and "energy" in doc and "composition" in doc and "parameters" in doc):
        return [_entry_rows(doc, locator, ctx, extra)]
    if isinstance(doc.get("entries"), dict) and doc["entries"]:
        # thermo document: one entry per run type (GGA, GGA+U, R2SCAN...)
        mid = doc.get("material_id")
        ttype = doc.get("thermo_type")
        base = f"{mid}:{ttype}" if ttype else str(mid)
        info = {**(extra or {}), "material_id": str(mid) if mid else None}
        return [_entry_rows(e, f"{base}:{key}", ctx, info) for key, e in doc["entries"].items()]
    if "material_id" in doc:
        rows = [_summary_rows(doc, locator, ctx)]
        if extra:
            rows[0][0].update({k: v for k, v in _electronic(extra).items() if v is not None})
        return rows
    raise ParseError(locator, "@class ComputedEntry/ComputedStructureEntry, or an MP document with material_id",
                     f"@class={cls!r}, keys {sorted(doc)[:12]}")


def _locator(doc: Any, i: int | None) -> str:
    if isinstance(doc, dict):
        for key in ("entry_id", "thermo_id", "material_id"):
            if doc.get(key):
                return str(doc[key])
    return f"[{i}]" if i is not None else "document"


def _unique(locs: list[str]) -> list[str]:
    """Suffix repeated locators with '#k': two documents with one entry_id must not share a record_id."""
    counts = Counter(locs)
    seen: Counter[str] = Counter()
    out = []
    for loc in locs:
        if counts[loc] > 1:
            out.append(f"{loc}#{seen[loc]}")
            seen[loc] += 1
        else:
            out.append(loc)
    return out


def parse(data: bytes, ctx: ParseContext) -> ParseResult:
    """JSON of MP documents / ComputedEntries / a :func:`fetch` blob → calculations (+ structures)."""
    doc = load_json(data)
    extras: dict[str, dict] = {}
    if isinstance(doc, dict) and str(doc.get("@matlake", "")).startswith("matlake.mp-api/"):
        xas = _xas_documents(doc)
        if xas is not None:
            from matlake.ingest.spectra import xas_documents

            return xas_documents(xas, ctx, file_format="mp-xas-json")
        docs, extras = _from_blob(doc)
    elif isinstance(doc, list):
        docs = doc
    elif isinstance(doc, dict):
        docs = [doc]
    else:
        raise ParseError("JSON top level", "an object or a list of objects", type(doc).__name__)
    locs = _unique([_locator(d, i if isinstance(doc, list) or len(docs) > 1 else None) for i, d in enumerate(docs)])
    result = ParseResult()
    calcs, structs = [], []
    for loc, d in zip(locs, docs):
        mid = d.get("material_id") if isinstance(d, dict) else None
        for row, srow in _doc_rows(d, loc, ctx, extras.get(str(mid)) if mid else None):
            calcs.append(row)
            if srow is not None:
                structs.append(srow)
    if not calcs:
        raise ParseError("documents", "at least one MP document or ComputedEntry", "an empty list")
    if structs:
        result.add_rows("structures", structs)
    result.add_rows("calculations", calcs)
    return result


def _xas_documents(blob: dict) -> list | None:
    """The XAS documents of a fetch() blob of the materials/xas route, or None for other routes."""
    responses = blob.get("responses")
    if not isinstance(responses, list):
        return None
    xas = [r for r in responses if isinstance(r, dict) and r.get("route") == XAS_ROUTE]
    if not xas:
        return None
    docs = [d for r in xas for d in (r.get("documents") or [])]
    if not docs:
        raise ParseError(f"responses[{XAS_ROUTE}]", "at least one XAS document", "none (the query matched nothing)")
    return docs


def _from_blob(blob: dict) -> tuple[list, dict[str, dict]]:
    """Documents to turn into rows, and per-material electronic data to merge in."""
    responses = blob.get("responses")
    if not isinstance(responses, list) or not responses:
        raise ParseError("responses", "a non-empty list of {route, documents}", repr(responses)[:100])
    by_route = {r.get("route"): r.get("documents") or [] for r in responses}
    if "materials/thermo" in by_route:
        docs = by_route["materials/thermo"]
        extras = {str(d["material_id"]): d for d in by_route.get("materials/summary", []) if d.get("material_id")}
        return docs, extras
    first = responses[0].get("documents") or []
    return first, {}


# --- the Materials Project client --------------------------------------------------------


class MissingApiKey(ValueError):
    """No Materials Project API key is configured; raised before any network use."""


def resolve_api_key(explicit: str | None = None) -> str:
    """The Materials Project API key that mp-api will use, or :class:`MissingApiKey`.

    mp-api looks, in order, at the key passed in, the ``MP_API_KEY`` environment
    variable, and pymatgen's ``PMG_MAPI_KEY`` setting (the environment variable of
    that name, or ``PMG_MAPI_KEY: <key>`` in ``~/.config/.pmgrc.yaml``, or the file
    named by ``PMG_CONFIG_FILE``).  Without any of them it would send unauthenticated
    requests and wait on the server's refusals; this fails at once instead.
    """
    import os

    key = explicit or os.environ.get("MP_API_KEY")
    if not key:
        try:
            from pymatgen.core import SETTINGS

            key = SETTINGS.get("PMG_MAPI_KEY")
        except Exception:  # noqa: BLE001 - an unreadable settings file is the same as no key here
            key = None
    if not key or not str(key).strip():
        raise MissingApiKey(
            "no Materials Project API key: get one at https://materialsproject.org/api, then "
            "export MP_API_KEY=<key> (or pass --api-key KEY, or put 'PMG_MAPI_KEY: <key>' "
            "in ~/.config/.pmgrc.yaml, pymatgen's settings file)")
    return str(key).strip()


def fetch(
    criteria: dict[str, Any],
    *,
    api_key: str | None = None,
    endpoint: str | None = None,
    electronic: bool = True,
) -> bytes:
    """Query the Materials Project and return the responses as one JSON blob (bytes).

    ``criteria`` are keyword arguments of mp-api's ``materials.thermo.search``
    (e.g. ``{"chemsys": "Ga-N"}`` or ``{"material_ids": ["mp-804"]}``); with
    ``"route": "xas"`` among them the rest go to ``materials.xas.search`` instead
    (e.g. ``{"route": "xas", "formula": "LiCoO2", "absorbing_element": "Co",
    "edge": "K"}``) and the blob holds computed XAS documents, read into
    ``spectra`` + ``structures`` rows by :func:`matlake.ingest.spectra.xas_documents`.  The
    thermo documents carry the ComputedStructureEntries (structure, uncorrected
    energy, correction, run type, POTCARs).  With ``electronic`` a second query
    to ``materials.summary`` adds band gap, band edges and Fermi level (eV) of
    the same materials.  The blob keeps the documents exactly as the API
    returned them, with the query, endpoint, client version and database
    version, and is read back by the ``mp-json`` parser.

    Without an API key (see :func:`resolve_api_key`) it raises :class:`MissingApiKey`
    before any network use.
    """
    import os

    api_key = resolve_api_key(api_key)
    os.environ.setdefault("MPRESTER_MUTE_PROGRESS_BARS", "true")
    from importlib.metadata import version

    from mp_api.client import MPRester

    search = dict(criteria)
    route = str(search.pop("route", "thermo"))
    if route not in ("thermo", "xas"):
        raise ValueError(f"criteria route: expected 'thermo' (default) or 'xas', found {route!r}")
    with MPRester(api_key=api_key, endpoint=endpoint, use_document_model=False, mute_progress_bars=True) as mpr:
        if route == "xas":
            # every field: the spectrum (x, y, structure, absorbing_index, type) is the point
            docs = mpr.materials.xas.search(**search)
            responses = [{"route": XAS_ROUTE, "criteria": criteria, "fields": None, "documents": docs}]
            ids = []
        else:
            thermo = mpr.materials.thermo.search(**search, fields=THERMO_FIELDS, all_fields=False)
            responses = [{"route": "materials/thermo", "criteria": criteria, "fields": THERMO_FIELDS,
                          "documents": thermo}]
            ids = sorted({str(d["material_id"]) for d in thermo if d.get("material_id")})
        if electronic and ids:
            summary = mpr.materials.summary.search(material_ids=ids, fields=SUMMARY_FIELDS, all_fields=False)
            responses.append({"route": "materials/summary", "criteria": {"material_ids": ids},
                              "fields": SUMMARY_FIELDS, "documents": summary})
        blob = {
            "@matlake": BLOB_FORMAT,
            "endpoint": mpr.endpoint,
            "db_version": getattr(mpr, "db_version", None),
            "client": f"mp-api {version('mp-api')}",
            "responses": responses,
        }
    return json.dumps(blob, default=json_default, sort_keys=False).encode()


PARSERS = [
    Parser(
        name="mp-json",
        version=PARSER_VERSION,
        kind="mp-json",
        detect=detect,
        parse=parse,
        description="Materials Project documents / ComputedEntry JSON / fetch() blobs → calculations (+ structures)",
    )
]
