"""Insertion sites of one cell: the pure finder and the lake workflow around it.

:class:`InsertionFinder` is pure: grids (numpy arrays with their pymatgen
structures) in, rows for `insertion_sites`, `insertion_candidates` and
`structures` out.  It

1. builds the fields: the all-electron density AECCAR0 + AECCAR2 (preferred,
   as the method's authors recommend) or a CHGCAR, and a LOCPOT, checking that
   grids summed or compared are of the same cell and shape;
2. finds the candidate sites of each field (:func:`~matlake.models.insertion.sites.find_sites`):
   density minima, and potential maxima for a cation (minima for an anion);
3. gives every site its electrostatic energies: ``potential_energy`` = -q x
   the LOCPOT average around it, and ``ewald_energy`` = Ewald energy of host + the
   ion there minus the host's, with oxidation-state-guess charges;
4. reports where the two fields agree (a site of the other field within
   ``agreement_tol``);
5. for each requested N, places N ions at once
   (:func:`~matlake.models.insertion.simultaneous.insert_simultaneously`) on the
   sites of the density field (else the potential's) and keeps the ``top``
   distinct placements by energy, each as a new `structures` row.

:func:`find` reads the grids of a lake at one snapshot, runs the finder and
hands the rows to :func:`matlake.platform.derivation.commit_derived`: one
activity (kind ``analyze``, name ``insertion-sites``) used every grid, the host
structure and the host calculation, so the lineage of a candidate structure
reaches the raw CHGCAR/AECCAR/LOCPOT bytes.  Bad input (unknown ion, grids of
different cells or shapes, a grid without its structure, N above the number of
candidate sites) raises before anything is written.

Record ids are :func:`~matlake.models.base.derived_record_id` of (finder name,
the sorted grid ids + a digest of the options, key) with keys ``site:<field>:<i>``
(options: ion and the site-finding ones), ``candidate:<n>:<rank>`` and
``structure:<n>:<rank>`` (all options): a re-run with the same options adds
versions of the same records, other options give their own records.  A re-run
with the same finder version, options and input versions is skipped unless
``force``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.base import derived_record_id
from matlake.models.insertion.electrostatics import EwaldTable, check_ion, ion_charge, potential_site_energy
from matlake.models.insertion.simultaneous import MAX_CANDIDATES, Configuration, insert_simultaneously
from matlake.models.insertion.sites import (
    DENSITY_KINDS,
    POTENTIAL_KINDS,
    Field,
    SiteSet,
    _same_cell,
    combine_grids,
    find_sites,
    local_average,
    pbc_distances,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matlake.platform.lake import Lake

__all__ = ["GridInput", "InsertionFinder", "FinderResult", "FindReport", "find", "FINDER_NAME", "FINDER_VERSION"]

FINDER_NAME = "insertion-sites"
FINDER_VERSION = "1"


_SITE_OPTIONS = ("ion", "charge", "min_dist", "cluster_tol", "avg_radius", "group_tol", "symprec", "agreement_tol")


def _digest(options: dict[str, Any]) -> str:
    """Short stable digest of options (JSON, sorted keys)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class GridInput:
    """One stored grid: its `volumetric` record id, VASP kind, values and cell (None if unknown)."""

    record_id: str
    kind: str
    data: np.ndarray
    structure: "Structure | None"
    source_name: str = ""


@dataclass
class FinderResult:
    fields: dict[str, Field]  # 'density' / 'potential'
    grid_ids: dict[str, list[str]]  # field kind -> volumetric record ids used
    sites: dict[str, SiteSet]
    ewald: dict[str, np.ndarray]  # field kind -> per-site Ewald insertion energy (eV)
    potential_energy: dict[str, np.ndarray | None]
    other_distance: dict[str, np.ndarray | None]
    energy_method: str
    simultaneous_field: str
    configurations: dict[int, list[Configuration]] = field(default_factory=dict)
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def used_ids(self) -> list[str]:
        return sorted({r for ids in self.grid_ids.values() for r in ids})


def select_fields(grids: Sequence[GridInput]) -> tuple[dict[str, Field], dict[str, list[str]]]:
    """The density and potential fields the grids give (see the module docstring)."""
    by_kind: dict[str, list[GridInput]] = {}
    for g in grids:
        if g.structure is None:
            raise ValueError(f"{g.kind} {g.source_name or g.record_id}: expected a grid with its structure "
                             "(the host cell), found none")
        by_kind.setdefault(g.kind, []).append(g)
    for kind, gs in by_kind.items():
        if len(gs) > 1:
            raise ValueError(f"{kind}: expected one grid of each kind, found {len(gs)} "
                             f"({', '.join(g.source_name or g.record_id for g in gs)}); name the ones to use")
    fields: dict[str, Field] = {}
    ids: dict[str, list[str]] = {}
    if "AECCAR0" in by_kind or "AECCAR2" in by_kind:
        if not ("AECCAR0" in by_kind and "AECCAR2" in by_kind):
            have, miss = ("AECCAR0", "AECCAR2") if "AECCAR0" in by_kind else ("AECCAR2", "AECCAR0")
            raise ValueError(f"{have}: the all-electron density is AECCAR0 + AECCAR2; expected {miss} of the same "
                             "cell too, found none")
        use = [by_kind["AECCAR0"][0], by_kind["AECCAR2"][0]]
    else:
        use = next(([by_kind[k][0]] for k in DENSITY_KINDS if k in by_kind), [])
    if use:
        fields["density"] = combine_grids("density", [(g.kind, g.data, g.structure) for g in use])
        ids["density"] = [g.record_id for g in use]
    pot = [by_kind[k][0] for k in POTENTIAL_KINDS if k in by_kind]
    if pot:
        fields["potential"] = combine_grids("potential", [(g.kind, g.data, g.structure) for g in pot])
        ids["potential"] = [g.record_id for g in pot]
    if not fields:
        raise ValueError(f"grids: expected a charge density (AECCAR0 + AECCAR2, CHGCAR) or a LOCPOT, found "
                         f"{sorted(by_kind) or 'none'}")
    if len(fields) == 2:
        d, p = fields["density"], fields["potential"]
        why = _same_cell(d.structure, p.structure)
        if why:
            raise ValueError(f"{d.label} and {p.label}: expected grids of the same cell, {why}")
    return fields, ids


class InsertionFinder:
    """Candidate insertion sites and simultaneous insertion for one cell (pure).

    Parameters (distances in Angstrom)
    ----------
    ion: inserted element; charge: its charge in e (default: common positive oxidation state).
    n: numbers of ions to insert at once (e.g. ``(2, 3, 4)``); empty: sites only.
    min_dist, cluster_tol, avg_radius, group_tol, symprec: site finding (see
        :func:`~matlake.models.insertion.sites.find_sites`; defaults as pymatgen-analysis-defects).
    agreement_tol: sites of the two fields closer than this agree.
    min_ion_distance, max_candidates, top, ranker, rerank_pool: simultaneous insertion (see
        :func:`~matlake.models.insertion.simultaneous.insert_simultaneously`; ranker ``"chgnet"``
        re-ranks with CHGNet when it is installed).
    """

    name = FINDER_NAME
    version = FINDER_VERSION

    def __init__(self, ion: str = "Li", n: Sequence[int] | int = (), *, charge: float | None = None,
                 min_dist: float = 0.9, cluster_tol: float = 0.5, avg_radius: float = 0.4, group_tol: float = 0.5,
                 symprec: float = 0.1, agreement_tol: float = 0.5, min_ion_distance: float = 2.0,
                 max_candidates: int = MAX_CANDIDATES, top: int = 5, ranker: str = "ewald",
                 rerank_pool: int = 20) -> None:
        from matlake.models.insertion.potentials import RANKERS

        ion = check_ion(ion)
        q = ion_charge(ion, charge)
        ns = [n] if isinstance(n, (int, np.integer)) else list(n)
        for k in ns:
            if int(k) != k or k < 1:
                raise ValueError(f"n: expected positive whole numbers of ions, found {k!r}")
        for name, v in (("min_dist", min_dist), ("cluster_tol", cluster_tol), ("avg_radius", avg_radius),
                        ("group_tol", group_tol), ("symprec", symprec), ("agreement_tol", agreement_tol),
                        ("min_ion_distance", min_ion_distance)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: expected a non-negative distance in Angstrom, found {v}")
        if ranker not in RANKERS:
            raise ValueError(f"ranker: expected one of {RANKERS}, found {ranker!r}")
        if int(max_candidates) < 1 or int(top) < 1:
            raise ValueError(f"max_candidates, top: expected at least 1, found {max_candidates}, {top}")
        self.params: dict[str, Any] = dict(
            ion=ion, charge=q, n=sorted({int(k) for k in ns}), min_dist=min_dist, cluster_tol=cluster_tol,
            avg_radius=avg_radius, group_tol=group_tol, symprec=symprec, agreement_tol=agreement_tol,
            min_ion_distance=min_ion_distance, max_candidates=int(max_candidates), top=int(top), ranker=ranker,
            rerank_pool=int(rerank_pool))

    # ------------------------------------------------------------------ science
    def run(self, grids: Sequence[GridInput]) -> FinderResult:
        p = self.params
        fields, ids = select_fields(grids)
        q = p["charge"]
        sites: dict[str, SiteSet] = {}
        for kind, fld in fields.items():
            extremum = "min" if kind == "density" else ("max" if q > 0 else "min")
            sites[kind] = find_sites(fld, extremum, min_dist=p["min_dist"], cluster_tol=p["cluster_tol"],
                                     avg_radius=p["avg_radius"], group_tol=p["group_tol"], symprec=p["symprec"])
        host = next(iter(fields.values())).structure
        ewald: dict[str, np.ndarray] = {}
        tables: dict[str, EwaldTable] = {}
        method = ""
        for kind, s in sites.items():
            if len(s):
                tables[kind] = EwaldTable.build(host, s.frac_coords, p["ion"], q)
                ewald[kind] = tables[kind].insertion_energy(np.arange(len(s))[:, None])
                method = tables[kind].method
            else:
                ewald[kind] = np.zeros(0)
        pot_e: dict[str, np.ndarray | None] = {}
        for kind, s in sites.items():
            if "potential" in fields and len(s):
                v = local_average(fields["potential"].data, host.lattice, s.frac_coords, p["avg_radius"])
                pot_e[kind] = potential_site_energy(v, q)
            else:
                pot_e[kind] = None
        other: dict[str, np.ndarray | None] = {k: None for k in sites}
        if len(sites) == 2:
            a, b = sites["density"], sites["potential"]
            if len(a) and len(b):
                d = pbc_distances(host.lattice, a.frac_coords, b.frac_coords)
                other = {"density": d.min(1), "potential": d.min(0)}
        sim = "density" if "density" in sites else "potential"
        result = FinderResult(fields=fields, grid_ids=ids, sites=sites, ewald=ewald, potential_energy=pot_e,
                              other_distance=other, energy_method=method, simultaneous_field=sim)
        for n in p["n"]:
            if not len(sites[sim]):
                raise ValueError(f"n: expected at most 0 ions (no candidate sites in {fields[sim].label}), found {n}")
            confs, summary = insert_simultaneously(
                host, sites[sim], p["ion"], n, min_ion_distance=p["min_ion_distance"],
                max_candidates=p["max_candidates"], top=p["top"], charge=q, symprec=p["symprec"],
                table=tables.get(sim), ranker=p["ranker"], rerank_pool=p["rerank_pool"])
            result.configurations[n] = confs
            result.summaries[n] = summary
        return result

    # ------------------------------------------------------------------ rows
    def rows(self, result: FinderResult, structure_id: str | None = None,
             calculation_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Rows for `insertion_sites`, `insertion_candidates` and `structures`."""
        from matlake.ingest.structures import structure_row

        p = self.params
        # one family of records per grid set and options: a re-run with the same options adds
        # versions of the same records; other options give other records (no stale leftovers)
        site_opts = {k: p[k] for k in _SITE_OPTIONS}
        site_key = "+".join(result.used_ids) + ":" + _digest(site_opts)
        run_key = "+".join(result.used_ids) + ":" + _digest(p)
        sid_of = lambda key: derived_record_id(self.name, site_key, key)  # noqa: E731
        rid = lambda key: derived_record_id(self.name, run_key, key)  # noqa: E731
        host = next(iter(result.fields.values())).structure
        formula = host.composition.reduced_formula
        common = {"volumetric_ids": result.used_ids, "structure_id": structure_id, "calculation_id": calculation_id,
                  "reduced_formula": formula, "ion": p["ion"], "ion_charge": p["charge"]}
        stamp = {"finder": self.name, "finder_version": self.version}
        site_rows: list[dict[str, Any]] = []
        site_ids: dict[str, list[str]] = {}
        for kind, s in result.sites.items():
            fld = result.fields[kind]
            ids = [sid_of(f"site:{kind}:{i}") for i in range(len(s))]
            site_ids[kind] = ids
            pe, od = result.potential_energy[kind], result.other_distance[kind]
            for i in range(len(s)):
                f, c = s.frac_coords[i], s.cart_coords[i]
                site_rows.append({
                    "record_id": ids[i], "volumetric_id": result.grid_ids[kind][0], "field_kind": kind,
                    "field_label": fld.label, "extremum": s.extremum, **common, "site_index": i,
                    "frac_a": float(f[0]), "frac_b": float(f[1]), "frac_c": float(f[2]),
                    "x": float(c[0]), "y": float(c[1]), "z": float(c[2]), "value_unit": s.unit,
                    "grid_value": float(s.grid_value[i]), "local_average": float(s.local_average[i]),
                    "group_rank": int(s.group[i]) + 1, "multiplicity": int(s.multiplicity[i]),
                    "group_average": float(s.group_average[i]), "host_distance": float(s.host_distance[i]),
                    "nearest_host_species": s.host_species[i],
                    "potential_energy": float(pe[i]) if pe is not None else None,
                    "ewald_energy": float(result.ewald[kind][i]), "energy_method": result.energy_method,
                    "other_field_distance": float(od[i]) if od is not None else None,
                    "fields_agree": bool(od[i] <= p["agreement_tol"]) if od is not None else None,
                    "n_extrema": s.n_extrema, "min_dist": p["min_dist"], "cluster_tol": p["cluster_tol"],
                    "avg_radius": p["avg_radius"], "group_tol": p["group_tol"], "symprec": p["symprec"],
                    "agreement_tol": p["agreement_tol"], **stamp,
                })
        cand_rows: list[dict[str, Any]] = []
        struct_rows: list[dict[str, Any]] = []
        sim = result.simultaneous_field
        for n, confs in result.configurations.items():
            summary = result.summaries[n]
            for conf in confs:
                skey = f"structure:{n}:{conf.rank}"
                ctx = _DerivedContext(
                    record_id=rid(skey), source_sha256=None,
                    filename=f"{p['ion']}{n} rank {conf.rank} in {formula} ({result.fields[sim].label})")
                srow = structure_row(conf.structure, ctx, skey)
                struct_rows.append(srow)
                cand_rows.append({
                    "record_id": rid(f"candidate:{n}:{conf.rank}"),
                    "candidate_structure_id": srow["record_id"], "field_label": result.fields[sim].label, **common,
                    "n_ions": n, "rank": conf.rank, "energy": conf.energy, "energy_per_ion": conf.energy / n,
                    "energy_method": summary["method"], "ranker": summary["ranker"],
                    "ewald_energy": conf.ewald_energy, "multiplicity": conf.multiplicity,
                    "site_ids": [site_ids[sim][i] for i in conf.sites],
                    "frac_coords": [float(v) for v in np.asarray(conf.frac_coords).ravel()],
                    "min_ion_distance": conf.min_ion_distance if math.isfinite(conf.min_ion_distance) else None,
                    "min_ion_distance_cutoff": p["min_ion_distance"], "n_candidates": summary["n_candidates"],
                    "n_allowed": summary["n_allowed"], "n_distinct": summary["n_distinct"], **stamp,
                })
        out = {"insertion_sites": site_rows}
        if cand_rows:
            out["insertion_candidates"] = cand_rows
            out["structures"] = struct_rows
        return out


class _DerivedContext:
    """What :func:`matlake.ingest.structures.structure_row` needs to name a derived structure."""

    def __init__(self, record_id: str, source_sha256: str | None, filename: str) -> None:
        self._record_id = record_id
        self.source_sha256 = source_sha256
        self.filename = filename

    def record_id(self, locator: str) -> str:  # noqa: ARG002 - the id is fixed by the finder's key
        return self._record_id


# ---------------------------------------------------------------------- the lake workflow


@dataclass
class FindReport:
    snapshot: int | None  # new snapshot (None when nothing was committed)
    activity_id: str | None
    skipped: bool  # the same run (finder version, options, input versions) was already committed
    volumetric_ids: list[str]
    structure_id: str | None
    calculation_id: str | None
    n_rows: dict[str, int]
    result: FinderResult | None = None
    finder: InsertionFinder | None = None


def _resolve(lake: "Lake", ident: str, sid: int) -> dict[str, Any]:
    rows = lake.sql("select record_id, kind, source_name, structure_id, reduced_formula from volumetric "
                    "where record_id = ? or starts_with(record_id, ?) or source_name = ? order by record_id",
                    as_of=sid, params=[ident, ident, ident]).fetchall()
    from matlake.platform.lake import LakeError

    if not rows:
        raise LakeError(f"no volumetric record with id, id prefix or source name {ident!r} at snapshot {sid}")
    exact = [r for r in rows if r[0] == ident]
    if len(rows) > 1 and not exact:
        raise LakeError(f"{ident!r} matches {len(rows)} volumetric records ({', '.join(r[0][:12] for r in rows[:5])}"
                        "...); give more of the id")
    r = exact[0] if exact else rows[0]
    return dict(zip(("record_id", "kind", "source_name", "structure_id", "reduced_formula"), r))


def _siblings(lake: "Lake", first: dict[str, Any], host: "Structure", sid: int) -> list[dict[str, Any]]:
    """Other usable grids of the same cell (density or potential kinds), one of each kind: the grids
    with the named grid's shape first, then the newest."""
    shape = lake.sql("select grid_shape from volumetric where record_id = ?", as_of=sid,
                     params=[first["record_id"]]).fetchone()[0]
    rows = lake.sql("select record_id, kind, source_name, structure_id, reduced_formula from volumetric "
                    "where reduced_formula = ? and record_id <> ? and kind in (select unnest(?)) "
                    "order by (grid_shape <> ?::integer[]), created_at desc, record_id", as_of=sid,
                    params=[first["reduced_formula"], first["record_id"],
                            list(DENSITY_KINDS + POTENTIAL_KINDS), list(shape)]).fetchall()
    out, kinds = [], {first["kind"]}
    for r in rows:
        d = dict(zip(("record_id", "kind", "source_name", "structure_id", "reduced_formula"), r))
        if d["kind"] in kinds or not d["structure_id"]:
            continue
        if _same_cell(host, lake.structure(d["structure_id"], sid)) is None:
            out.append(d)
            kinds.add(d["kind"])
    return out


def _completing(named: Sequence[dict[str, Any]], candidates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sibling grids that complete the named ones, never replace them: the AECCAR partner of a
    named AECCAR0/AECCAR2; when no density is named, AECCAR0 + AECCAR2 (both present) or else a
    CHGCAR/CHG (a PARCHG, a partial density, only when named); when no LOCPOT is named, a LOCPOT."""
    kinds = {r["kind"] for r in named}
    by_kind: dict[str, dict[str, Any]] = {}
    for r in candidates:
        by_kind.setdefault(r["kind"], r)
    out: list[dict[str, Any]] = []
    aeccars = ("AECCAR0", "AECCAR2")
    named_density = kinds & set(DENSITY_KINDS)
    if named_density & set(aeccars):
        out += [by_kind[k] for k in aeccars if k not in kinds and k in by_kind]
    elif not named_density:
        if all(k in by_kind for k in aeccars):
            out += [by_kind[k] for k in aeccars]
        else:
            out += [by_kind[k] for k in ("CHGCAR", "CHG", "CHGCAR-like") if k in by_kind][:1]
    if not kinds & set(POTENTIAL_KINDS):
        out += [by_kind[k] for k in POTENTIAL_KINDS if k in by_kind][:1]
    return out


def _host_calculation(lake: "Lake", host: "Structure", formula: str | None, sid: int) -> str | None:
    import json

    from pymatgen.core import Structure

    rows = lake.sql("select c.record_id, s.structure_json from calculations c join structures s "
                    "on s.record_id = c.structure_id where c.reduced_formula = ? order by c.record_id",
                    as_of=sid, params=[formula]).fetchall()
    for rid, sj in rows:
        if sj and _same_cell(host, Structure.from_dict(json.loads(sj))) is None:
            return rid
    return None


def find(lake: "Lake", ids: Sequence[str] | str, ion: str = "Li", n: Sequence[int] | int = (), *,
         siblings: bool = True, as_of: int | str | None = None, force: bool = False,
         **options: Any) -> FindReport:
    """Find insertion sites in the grids ``ids`` (volumetric record ids, unique prefixes or source
    names) and commit them with provenance.

    With ``siblings`` (default) grids of the same cell (same formula, lattice and positions
    to 1e-3 Angstrom; one of each kind, preferring the named grid's shape, then the newest)
    complete the named ones, never replacing a named grid: the AECCAR partner of a named
    AECCAR, a density when none is named (AECCAR0 + AECCAR2 if both are there, else a
    CHGCAR) and a LOCPOT when none is named.  ``options`` go to :class:`InsertionFinder`.
    Raises before committing anything on bad input.
    """
    from matlake.platform import catalog as cat
    from matlake.platform.derivation import commit_derived, find_same_run, record_versions
    from matlake.platform.lake import LakeError

    started = cat.utcnow()
    finder = InsertionFinder(ion, n, **options)  # validates ion, n and options first
    sid = lake.resolve_snapshot(as_of)
    names = [ids] if isinstance(ids, str) else list(ids)
    if not names:
        raise LakeError("ids: expected at least one volumetric record, found none")
    records = [_resolve(lake, i, sid) for i in names]
    first = records[0]
    if not first["structure_id"]:
        raise LakeError(f"{first['kind']} {first['source_name'] or first['record_id']}: expected a grid with its "
                        "structure (the host cell), found none")
    host = lake.structure(first["structure_id"], sid)
    if siblings:
        have = {r["record_id"] for r in records}
        records += _completing(records, [r for r in _siblings(lake, first, host, sid) if r["record_id"] not in have])
    grids = []
    for r in records:
        g = lake.volumetric(r["record_id"], sid)
        grids.append(GridInput(r["record_id"], g.kind, g.data, g.structure, r["source_name"] or ""))
    try:
        result = finder.run(grids)
    except ValueError as exc:
        raise LakeError(str(exc)) from exc
    calc = _host_calculation(lake, host, first["reduced_formula"], sid)
    rows = finder.rows(result, first["structure_id"], calc)
    used_keys = [("volumetric", r) for r in result.used_ids] + [("structures", first["structure_id"])]
    if calc:
        used_keys.append(("calculations", calc))
    used = record_versions(lake, used_keys, sid)
    params = {**finder.params, "volumetric_ids": result.used_ids, "snapshot_id": sid}
    counts = {t: len(v) for t, v in rows.items()}
    if not force:
        done = find_same_run(lake, "analyze", finder.name, finder.version, params, used)
        if done:
            return FindReport(None, done, True, result.used_ids, first["structure_id"], calc, counts, result, finder)
    new_sid, act = commit_derived(
        lake, kind="analyze", name=finder.name, version=finder.version, parameters=params, used=used, rows=rows,
        started_at=started, message=f"{finder.name} {finder.version}: {finder.params['ion']} in "
                                    f"{first['reduced_formula']} ({'+'.join(result.fields[k].label for k in result.fields)})")
    return FindReport(new_sid, act, False, result.used_ids, first["structure_id"], calc, counts, result, finder)
