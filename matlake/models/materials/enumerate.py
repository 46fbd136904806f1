"""Candidate compositions of a site-mixing space, streamed as Arrow record batches.

A :class:`Space` declares sites (e.g. A, B, X of ABX3), the species allowed on
each, the site multiplicity (formula units: X has 3), a fraction grid (steps of
``1/grid``), the most species one site may mix and the most sites mixed at once.
Constraints (charge neutrality, excluded species pairs, a Goldschmidt tolerance
factor window) are optional filters applied to each batch.

Enumeration is vectorised and streaming: per site the list of occupations
(species fractions) is built once (small), and a candidate is a mixed-radix
index into the per-site lists, decoded with numpy for one batch at a time, so
10^6+ candidates never sit in memory together.  :func:`count` is the closed
form (stars and bars per site, an elementary symmetric sum over sites) of the
unconstrained space and must equal the number enumerated.

Pure module: no catalog, no Parquet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

NAME = "site-mixing-enumerator"
VERSION = "1"

# Formal charges of common perovskite ions (e).  MA = CH3NH3+, FA = CH(NH2)2+.
DEFAULT_CHARGES: dict[str, float] = {
    "Li": 1, "Na": 1, "K": 1, "Rb": 1, "Cs": 1, "Ag": 1, "MA": 1, "FA": 1,
    "Mg": 2, "Ca": 2, "Sr": 2, "Ba": 2, "Ge": 2, "Sn": 2, "Pb": 2, "Cd": 2, "Zn": 2, "Mn": 2,
    "F": -1, "Cl": -1, "Br": -1, "I": -1, "O": -2, "S": -2, "Se": -2,
}
# Ionic radii (Angstrom) for the tolerance factor: Shannon (1976) radii, A site 12-fold
# (Cs+ 1.88, Rb+ 1.72, K+ 1.64), B site 6-fold (Pb2+ 1.19, Sn2+ 1.10 as commonly used, Ge2+ 0.73),
# halides 6-fold; MA and FA effective radii from Kieslich, Sun & Cheetham, Chem. Sci. 5, 4712 (2014).
DEFAULT_RADII: dict[str, float] = {
    "K": 1.64, "Rb": 1.72, "Cs": 1.88, "MA": 2.17, "FA": 2.53, "Na": 1.39,
    "Pb": 1.19, "Sn": 1.10, "Ge": 0.73, "Ca": 1.00, "Sr": 1.18, "Ba": 1.35,
    "F": 1.33, "Cl": 1.81, "Br": 1.96, "I": 2.20, "O": 1.40,
}


class SpaceError(ValueError):
    """A space declaration that cannot be enumerated (names the field, expected and found)."""

    def __init__(self, field_: str, expected: str, found: Any) -> None:
        super().__init__(f"campaign space: {field_}: expected {expected}, found {found!r}")
        self.field, self.expected, self.found = field_, expected, found


@dataclass(frozen=True)
class Site:
    """One crystallographic site: its species, multiplicity per formula unit and mixing limits."""

    name: str
    species: tuple[str, ...]
    multiplicity: int = 1
    max_species: int | None = None  # None: every declared species may mix
    grid: int | None = None  # None: the space's grid

    def limit(self) -> int:
        return len(self.species) if self.max_species is None else min(self.max_species, len(self.species))


@dataclass(frozen=True)
class Space:
    """A site-mixing composition space and its optional constraints."""

    sites: tuple[Site, ...]
    grid: int = 4  # fractions k/grid
    max_mixed_sites: int = 1
    charge_neutral: bool = False
    exclude_pairs: tuple[tuple[str, str], ...] = ()
    tolerance_window: tuple[float, float] | None = None  # (t_min, t_max) over sites A, B, X
    tolerance_sites: tuple[str, str, str] = ("A", "B", "X")
    charges: Mapping[str, float] = field(default_factory=dict)
    radii: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sites:
            raise SpaceError("sites", "at least one site", [])
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise SpaceError("sites", "distinct site names", names)
        for s in self.sites:
            if not s.species or len(set(s.species)) != len(s.species):
                raise SpaceError(f"sites.{s.name}.species", "a non-empty list of distinct species", list(s.species))
            if s.multiplicity < 1:
                raise SpaceError(f"sites.{s.name}.multiplicity", "an integer >= 1", s.multiplicity)
            if s.limit() < 1:
                raise SpaceError(f"sites.{s.name}.max_species", "an integer >= 1", s.max_species)
            if self.site_grid(s) < 1:
                raise SpaceError(f"sites.{s.name}.grid", "an integer >= 1", s.grid)
        if self.max_mixed_sites < 0:
            raise SpaceError("max_mixed_sites", "an integer >= 0", self.max_mixed_sites)
        if self.tolerance_window is not None:
            missing = [n for n in self.tolerance_sites if n not in names]
            if missing:
                raise SpaceError("tolerance_factor", f"sites named {list(self.tolerance_sites)}", names)
            need = {sp for s in self.sites if s.name in self.tolerance_sites for sp in s.species}
            unknown = sorted(sp for sp in need if sp not in self.radius_table())
            if unknown:
                raise SpaceError("radii", f"an ionic radius for every species of {list(self.tolerance_sites)}", unknown)
        if self.charge_neutral:
            unknown = sorted({sp for s in self.sites for sp in s.species} - set(self.charge_table()))
            if unknown:
                raise SpaceError("charges", "a formal charge for every species", unknown)

    def site_grid(self, site: Site) -> int:
        return site.grid if site.grid is not None else self.grid

    def charge_table(self) -> dict[str, float]:
        return {**DEFAULT_CHARGES, **{k: float(v) for k, v in self.charges.items()}}

    def radius_table(self) -> dict[str, float]:
        return {**DEFAULT_RADII, **{k: float(v) for k, v in self.radii.items()}}

    @property
    def columns(self) -> list[str]:
        """Names of the fraction columns: ``<site>_<species>``, in declared order."""
        return [f"{s.name}_{sp}" for s in self.sites for sp in s.species]

    def canonical(self) -> dict[str, Any]:
        """The space as plain JSON-able data (sorted), for digests and records."""
        return {
            "sites": [{"name": s.name, "species": list(s.species), "multiplicity": s.multiplicity,
                       "max_species": s.limit(), "grid": self.site_grid(s)} for s in self.sites],
            "grid": self.grid, "max_mixed_sites": self.max_mixed_sites, "charge_neutral": self.charge_neutral,
            "exclude_pairs": sorted(sorted(p) for p in self.exclude_pairs),
            "tolerance_window": list(self.tolerance_window) if self.tolerance_window else None,
            "tolerance_sites": list(self.tolerance_sites),
            "charges": dict(sorted(self.charges.items())), "radii": dict(sorted(self.radii.items())),
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Space":
        """From the ``[space]`` table of a campaign spec (see :mod:`matlake.models.materials.campaign`)."""
        sites_doc = doc.get("sites")
        if not isinstance(sites_doc, list) or not sites_doc:
            raise SpaceError("sites", "a list of [[space.sites]] tables", sites_doc)
        sites = []
        for i, s in enumerate(sites_doc):
            if not isinstance(s, Mapping) or "name" not in s or "species" not in s:
                raise SpaceError(f"sites[{i}]", "a table with name and species", s)
            sites.append(Site(name=str(s["name"]), species=tuple(str(x) for x in s["species"]),
                              multiplicity=int(s.get("multiplicity", 1)),
                              max_species=None if s.get("max_species") is None else int(s["max_species"]),
                              grid=None if s.get("grid") is None else int(s["grid"])))
        cons = doc.get("constraints", {}) or {}
        known = {"charge_neutral", "exclude_pairs", "tolerance_factor", "tolerance_sites", "charges", "radii"}
        extra = sorted(set(cons) - known)
        if extra:
            raise SpaceError("constraints", f"keys among {sorted(known)}", extra)
        window = cons.get("tolerance_factor")
        if window is not None and (not isinstance(window, list) or len(window) != 2 or window[0] > window[1]):
            raise SpaceError("constraints.tolerance_factor", "[t_min, t_max] with t_min <= t_max", window)
        pairs = cons.get("exclude_pairs", [])
        if any(not isinstance(p, list) or len(p) != 2 for p in pairs):
            raise SpaceError("constraints.exclude_pairs", "a list of [species, species] pairs", pairs)
        return cls(sites=tuple(sites), grid=int(doc.get("grid", 4)),
                   max_mixed_sites=int(doc.get("max_mixed_sites", 1)),
                   charge_neutral=bool(cons.get("charge_neutral", False)),
                   exclude_pairs=tuple((str(a), str(b)) for a, b in pairs),
                   tolerance_window=None if window is None else (float(window[0]), float(window[1])),
                   tolerance_sites=tuple(cons.get("tolerance_sites", ("A", "B", "X"))),
                   charges=dict(cons.get("charges", {})), radii=dict(cons.get("radii", {})))


# --------------------------------------------------------------------------- closed-form count

def site_options_count(n_species: int, grid: int, max_species: int) -> tuple[int, int]:
    """(pure, mixed) occupations of one site: ``n_species`` pure ones, and the mixtures of
    ``j = 2..max_species`` species whose fractions are positive multiples of ``1/grid``:
    choose the species, C(s, j), times the compositions of ``grid`` into ``j`` positive
    parts, C(grid-1, j-1) (stars and bars)."""
    mixed = sum(math.comb(n_species, j) * math.comb(grid - 1, j - 1) for j in range(2, max_species + 1))
    return n_species, mixed


def count(space: Space) -> int:
    """Closed-form number of candidates of the unconstrained space: the sum over sets S of
    at most ``max_mixed_sites`` sites of prod_{i in S} mixed_i * prod_{i not in S} pure_i,
    computed as elementary symmetric sums (a product of polynomials (pure_i + mixed_i z),
    truncated at degree ``max_mixed_sites``)."""
    poly = [1]  # coefficients in z: number of ways with k sites mixed
    for s in space.sites:
        pure, mixed = site_options_count(len(s.species), space.site_grid(s), s.limit())
        nxt = [0] * (len(poly) + 1)
        for k, c in enumerate(poly):
            nxt[k] += c * pure
            nxt[k + 1] += c * mixed
        poly = nxt
    return sum(poly[: space.max_mixed_sites + 1])


# --------------------------------------------------------------------------- enumeration

def _compositions(n: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Compositions of ``n`` into ``parts`` positive integers, in lexicographic order."""
    for cuts in itertools.combinations(range(1, n), parts - 1):
        bounds = (0, *cuts, n)
        yield tuple(bounds[i + 1] - bounds[i] for i in range(parts))


@dataclass(frozen=True)
class _SiteOptions:
    """Occupations of one site: fraction matrix (options x species) and canonical text."""

    fractions: np.ndarray
    texts: list[str]  # canonical site text, e.g. "Cs3/4 FA1/4" (species sorted by name)
    formula: list[str]  # the site's part of the formula, e.g. "Cs0.75FA0.25" (X multiplied: "Br1.5I1.5")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _site_options(site: Site, grid: int, mixed: bool) -> _SiteOptions:
    """The pure occupations of ``site`` (``mixed=False``) or its mixtures."""
    species = site.species
    order = sorted(range(len(species)), key=lambda i: species[i])  # canonical: species by name
    rows: list[np.ndarray] = []
    texts: list[str] = []
    formula: list[str] = []
    sizes = [1] if not mixed else range(2, site.limit() + 1)
    for j in sizes:
        for chosen in itertools.combinations(order, j):
            for parts in _compositions(grid, j) if j > 1 else [(grid,)]:
                frac = np.zeros(len(species))
                for idx, k in zip(chosen, parts):
                    frac[idx] = k / grid
                rows.append(frac)
                texts.append(" ".join(species[i] if k == grid else f"{species[i]}{Fraction(k, grid)}"
                                      for i, k in zip(chosen, parts)))
                formula.append("".join(
                    species[i] + ("" if k * site.multiplicity == grid else _fmt(k * site.multiplicity / grid))
                    for i, k in zip(chosen, parts)))
    fr = np.array(rows, dtype=np.float64).reshape(len(rows), len(species))
    return _SiteOptions(fr, texts, formula)


def candidate_id(key: str) -> str:
    """Stable id of a candidate from its canonical key (first 32 hex of sha256)."""
    return hashlib.sha256(f"candidate\x00{key}".encode()).hexdigest()[:32]


def tolerance_factor(space: Space, fractions: np.ndarray) -> np.ndarray:
    """Goldschmidt factor t = (r_A + r_X) / (sqrt(2) (r_B + r_X)) from fraction-weighted
    site radii (Angstrom), for a fraction matrix with :attr:`Space.columns`."""
    radii = space.radius_table()
    cols = space.columns
    r = {}
    for name in space.tolerance_sites:
        site = next(s for s in space.sites if s.name == name)
        idx = [cols.index(f"{name}_{sp}") for sp in site.species]
        r[name] = fractions[:, idx] @ np.array([radii[sp] for sp in site.species])
    a, b, x = (r[n] for n in space.tolerance_sites)
    return (a + x) / (math.sqrt(2.0) * (b + x))


def constraint_mask(space: Space, fractions: np.ndarray) -> np.ndarray:
    """Which rows of a fraction matrix (columns :attr:`Space.columns`) satisfy every constraint."""
    ok = np.ones(len(fractions), bool)
    cols = space.columns
    if space.charge_neutral:
        charges = space.charge_table()
        mult = np.array([s.multiplicity * charges[sp] for s in space.sites for sp in s.species])
        ok &= np.abs(fractions @ mult) < 1e-9
    for a, b in space.exclude_pairs:
        ia = [i for i, c in enumerate(cols) if c.split("_", 1)[1] == a]
        ib = [i for i, c in enumerate(cols) if c.split("_", 1)[1] == b]
        if ia and ib:
            ok &= ~((fractions[:, ia].sum(1) > 0) & (fractions[:, ib].sum(1) > 0))
    if space.tolerance_window is not None:
        t = tolerance_factor(space, fractions)
        ok &= (t >= space.tolerance_window[0]) & (t <= space.tolerance_window[1])
    return ok


def candidate_schema(space: Space) -> pa.Schema:
    return pa.schema([
        pa.field("candidate_id", pa.string()), pa.field("candidate_key", pa.string()),
        pa.field("formula", pa.string()), pa.field("n_mixed_sites", pa.int8()),
        *[pa.field(c, pa.float64()) for c in space.columns],
    ])


def partitions(space: Space, rows: int = 1_000_000) -> list[tuple[tuple[int, ...], int, int]]:
    """The space split into independent pieces ``(mixed sites, start, stop)`` of at most
    ``rows`` candidates each (before constraints), in enumeration order: units of work for
    parallel scoring (Dask) that :func:`enumerate_partition` expands."""
    n_sites = len(space.sites)
    out = []
    for k in range(0, min(space.max_mixed_sites, n_sites) + 1):
        for subset in itertools.combinations(range(n_sites), k):
            total = math.prod(
                site_options_count(len(s.species), space.site_grid(s), s.limit())[1 if i in subset else 0]
                for i, s in enumerate(space.sites))
            out += [(subset, a, min(a + rows, total)) for a in range(0, total, rows)]
    return out


def enumerate_partition(space: Space, part: tuple[tuple[int, ...], int, int], batch_size: int = 65536,
                        exclude_keys: Iterable[str] | None = None,
                        apply_constraints: bool = True) -> Iterator[pa.RecordBatch]:
    """The candidates of one piece of :func:`partitions` (see :func:`enumerate_candidates`)."""
    import pyarrow.compute as pc

    subset, first, last = part
    exclude = exclude_keys if isinstance(exclude_keys, pa.Array) else pa.array(sorted(set(exclude_keys or ())),
                                                                               pa.string())
    opts = [_site_options(s, space.site_grid(s), i in subset) for i, s in enumerate(space.sites)]
    sizes = [len(o.texts) for o in opts]
    schema = candidate_schema(space)
    offsets = np.cumsum([0, *[len(s.species) for s in space.sites]])
    texts = [pa.array([f"{space.sites[i].name}:{t}" for t in o.texts], pa.string()) for i, o in enumerate(opts)]
    forms = [pa.array(o.formula, pa.string()) for o in opts]
    k = len(subset)
    for start in range(first, last, batch_size):
        idx = np.arange(start, min(start + batch_size, last), dtype=np.int64)
        per_site = np.unravel_index(idx, sizes)  # C order: the last site varies fastest
        frac = np.empty((len(idx), offsets[-1]), np.float64)
        for i, o in enumerate(opts):
            frac[:, offsets[i]:offsets[i + 1]] = o.fractions[per_site[i]]
        keep = constraint_mask(space, frac) if apply_constraints else np.ones(len(idx), bool)
        if not keep.any():
            continue
        take = [pa.array(p[keep]) for p in per_site]
        key = pc.binary_join_element_wise(*[t.take(j) for t, j in zip(texts, take)], "|")
        formula = pc.binary_join_element_wise(*[f.take(j) for f, j in zip(forms, take)], "")
        frac_kept = frac[keep]
        if len(exclude):
            fresh = pc.invert(pc.is_in(key, value_set=exclude)).to_numpy(zero_copy_only=False)
            if not fresh.any():
                continue
            key, formula = key.filter(pa.array(fresh)), formula.filter(pa.array(fresh))
            frac_kept = frac_kept[fresh]
        ids = pa.array([candidate_id(s) for s in key.to_pylist()], pa.string())
        cols = [ids, key, formula, pa.array(np.full(len(key), k, np.int8))]
        cols += [pa.array(frac_kept[:, j]) for j in range(frac_kept.shape[1])]
        yield pa.RecordBatch.from_arrays(cols, schema=schema)


def enumerate_candidates(space: Space, batch_size: int = 65536, exclude_keys: Iterable[str] | None = None,
                         apply_constraints: bool = True) -> Iterator[pa.RecordBatch]:
    """Record batches of candidates (:func:`candidate_schema`), in a deterministic order:
    by number of mixed sites, then the set of mixed sites in declared order, then per
    site the occupation order (species by name, fractions lexicographic).

    ``exclude_keys`` are canonical keys already known (e.g. computed in the lake), left out;
    constraints (charge, excluded pairs, tolerance window) drop rows unless
    ``apply_constraints`` is false.  Keys: ``A:Cs3/4 FA1/4|B:Pb|X:I`` (sites in declared
    order).
    """
    exclude = pa.array(sorted(set(exclude_keys or ())), pa.string())
    for part in partitions(space, rows=2**62):
        yield from enumerate_partition(space, part, batch_size, exclude, apply_constraints)


def site_key(sites: Mapping[str, Mapping[str, float]], space: Space) -> str:
    """The canonical key of an occupation given as ``{site: {species: fraction}}`` (fractions
    snapped to the site's grid), so compositions already in the lake can be excluded."""
    parts = []
    for s in space.sites:
        occ = sites.get(s.name)
        if not occ:
            raise SpaceError(f"sites.{s.name}", "an occupation {species: fraction}", occ)
        g = space.site_grid(s)
        total = sum(float(v) for v in occ.values())
        items = sorted((sp, round(float(v) / total * g)) for sp, v in occ.items() if float(v) > 0)
        if sum(k for _, k in items) != g:
            raise SpaceError(f"sites.{s.name}", f"fractions on a 1/{g} grid", dict(occ))
        parts.append(f"{s.name}:" + " ".join(sp if k == g else f"{sp}{Fraction(k, g)}" for sp, k in items))
    return "|".join(parts)


def parse_key(key: str) -> dict[str, dict[str, float]]:
    """``{site: {species: fraction}}`` of a canonical key (inverse of the key format)."""
    out: dict[str, dict[str, float]] = {}
    for part in key.split("|"):
        name, _, occ = part.partition(":")
        site: dict[str, float] = {}
        for tok in occ.split(" "):
            i = next((j for j, ch in enumerate(tok) if ch.isdigit()), len(tok))
            site[tok[:i]] = float(Fraction(tok[i:])) if i < len(tok) else 1.0
        out[name] = site
    return out


def fraction_matrix(keys: Sequence[str], space: Space) -> np.ndarray:
    """Fraction matrix (rows: keys; columns :attr:`Space.columns`) of canonical keys."""
    cols = {c: j for j, c in enumerate(space.columns)}
    out = np.zeros((len(keys), len(cols)))
    for i, key in enumerate(keys):
        for site, occ in parse_key(key).items():
            for sp, f in occ.items():
                out[i, cols[f"{site}_{sp}"]] = f
    return out
