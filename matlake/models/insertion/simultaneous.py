"""Simultaneous insertion: N ions placed at once on the candidate sites (pure).

Instead of inserting one ion at a time, every selection of N candidate sites
whose ions are at least ``min_ion_distance`` apart is considered, selections
that a space-group operation of the host maps onto each other are counted once
(with their multiplicity), and the distinct ones are ranked by the Ewald energy
of host + N ions (:class:`~matlake.models.insertion.electrostatics.EwaldTable`), a
cheap surrogate for a DFT or interatomic-potential energy; with ``ranker="chgnet"``
the lowest Ewald placements are re-ranked by CHGNet's static energy
(:mod:`matlake.models.insertion.potentials`, when chgnet is installed).

Bounds (so that a run takes seconds): the candidates are the best-ranked
symmetry groups of sites up to ``max_candidates`` sites in all (default
:data:`MAX_CANDIDATES` = 32; whole groups are kept, except that the first group
is truncated when it alone is larger), and at most :data:`MAX_COMBINATIONS`
(500 000) selections are enumerated; a larger request fails with a message
saying which knob to turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from matlake.models.insertion.electrostatics import EwaldTable, check_ion
from matlake.models.insertion.sites import SiteSet, pbc_distances, symmetry_permutations

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["Configuration", "candidate_indices", "insert_simultaneously", "MAX_CANDIDATES", "MAX_COMBINATIONS"]

MAX_CANDIDATES = 32
MAX_COMBINATIONS = 500_000


@dataclass
class Configuration:
    """One symmetry-distinct placement of N ions.

    ``sites``: indices into the :class:`SiteSet`; ``energy``: Ewald energy of host +
    ions minus the host's (eV); ``multiplicity``: number of allowed selections
    equivalent to this one under the host's symmetry; ``rank``: 1 = lowest energy.
    """

    rank: int
    sites: tuple[int, ...]
    frac_coords: np.ndarray
    energy: float  # the ranking energy: Ewald, or the potential's when one re-ranked
    multiplicity: int
    min_ion_distance: float  # shortest ion-ion distance in this configuration (Angstrom)
    structure: "Structure"
    ewald_energy: float = float("nan")  # Ewald energy of host + ions minus the host's (eV)


def candidate_indices(sites: SiteSet, max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Indices of the sites used for simultaneous insertion: best groups first, whole groups,
    at most ``max_candidates`` sites (the first group is truncated if it alone is larger)."""
    if max_candidates < 1:
        raise ValueError(f"max_candidates: expected at least 1, found {max_candidates}")
    chosen: list[int] = []
    for g in range(sites.n_groups):
        members = np.flatnonzero(sites.group == g).tolist()
        if len(chosen) + len(members) > max_candidates:
            if not chosen:
                chosen = members[:max_candidates]
            break
        chosen += members
    return np.array(chosen, int)


def _keys(combos: np.ndarray, base: int) -> np.ndarray:
    """Integer key of each row as a set of site indices in ``range(base)``: the bitmask of the
    sites when ``base`` <= 62, else base-``base`` digits of the sorted row.  ``ValueError`` when
    the key would not fit in 63 bits (it would wrap around and merge distinct selections)."""
    combos = np.asarray(combos, dtype=np.int64)
    if base <= 62:
        return np.left_shift(np.int64(1), combos).sum(-1)
    n = combos.shape[-1]
    if n * math.log2(base) >= 63:
        raise ValueError(f"n={n} on {base} candidate sites: expected selections that fit a 63-bit key, "
                         "found too many sites; lower max_candidates or n")
    powers = base ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return (np.sort(combos, axis=-1) * powers).sum(-1)


def insert_simultaneously(host: "Structure", sites: SiteSet, ion: str, n: int, *,
                          min_ion_distance: float = 2.0, max_candidates: int = MAX_CANDIDATES, top: int = 5,
                          charge: float | None = None, symprec: float = 0.1, table: EwaldTable | None = None,
                          ranker: str = "ewald", rerank_pool: int = 20) -> tuple[list[Configuration], dict[str, object]]:
    """The ``top`` lowest-energy symmetry-distinct placements of ``n`` ``ion`` ions.

    ``table``: an :class:`EwaldTable` over all of ``sites`` with this ion (built when None).
    ``ranker``: ``"ewald"``, or ``"chgnet"`` to re-rank the ``rerank_pool`` lowest Ewald
    placements by CHGNet's static energy (host + ions minus host, eV).
    Returns (configurations by rank, summary: candidates used, selections allowed,
    distinct classes, method text).  ``ValueError`` when ``n`` exceeds the candidates,
    when no selection keeps the ions ``min_ion_distance`` (Angstrom) apart, or when
    the enumeration would pass :data:`MAX_COMBINATIONS`.
    """
    from pymatgen.core import Structure

    from matlake.models.insertion.potentials import RANKERS, get_ranker

    ion = check_ion(ion)
    if ranker not in RANKERS:
        raise ValueError(f"ranker: expected one of {RANKERS}, found {ranker!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"n: expected a positive whole number of ions, found {n!r}")
    n = int(n)
    if top < 1:
        raise ValueError(f"top: expected at least 1, found {top}")
    cand = candidate_indices(sites, max_candidates)
    m = len(cand)
    if n > m:
        raise ValueError(f"n: expected at most {m} ions (the candidate sites: {len(sites)} found, "
                         f"max_candidates={max_candidates}), found {n}")
    total = math.comb(m, n)
    if total > MAX_COMBINATIONS:
        raise ValueError(f"n={n} on {m} candidate sites gives {total} selections; expected at most "
                         f"{MAX_COMBINATIONS}: lower max_candidates or n")
    frac = sites.frac_coords[cand]
    dist = pbc_distances(host.lattice, frac, frac)
    combos = np.array(list(combinations(range(m), n)), dtype=np.int64).reshape(-1, n)
    ok = np.ones(len(combos), bool)
    closest = np.full(len(combos), np.inf)
    for i, j in combinations(range(n), 2):
        d = dist[combos[:, i], combos[:, j]]
        closest = np.minimum(closest, d)
        ok &= d >= min_ion_distance
    combos, closest = combos[ok], closest[ok]
    if not len(combos):
        raise ValueError(f"n={n}: no selection of the {m} candidate sites keeps the ions at least "
                         f"{min_ion_distance} Angstrom apart (closest candidate pair "
                         f"{dist[np.triu_indices(m, 1)].min() if m > 1 else float('nan'):.3f} Angstrom); "
                         "lower min_ion_distance or n")
    perms = symmetry_permutations(host, frac, tol=sites.params.get("group_tol", 0.5), symprec=symprec)
    # canonical key of each selection: the smallest key over its symmetry images (a running
    # minimum, so memory stays at one key per selection whatever the number of operations)
    canon = _keys(perms[0][combos], m)
    for p in perms[1:]:
        np.minimum(canon, _keys(p[combos], m), out=canon)
    classes, first, counts = np.unique(canon, return_index=True, return_counts=True)
    reps = np.sort(combos[first], axis=1)
    if table is None:
        table = EwaldTable.build(host, frac, ion, charge)
    else:  # a table over all of ``sites``
        if len(table.host_site) != len(sites):
            raise ValueError(f"table: expected an EwaldTable over the {len(sites)} sites, found "
                             f"{len(table.host_site)} sites")
        table = table.subset(cand)
    energy = table.insertion_energy(reps)
    # lowest energy first; ties (within 1 meV) broken by the representative's site indices
    # (lexicographic), so ranks are reproducible
    order = np.lexsort(tuple(reps[:, j] for j in range(n - 1, -1, -1)) + (np.round(energy, 3),))
    bare = host.copy()
    bare.remove_oxidation_states()

    def build(k: int) -> tuple[tuple[int, ...], np.ndarray, "Structure"]:
        idx = tuple(int(cand[i]) for i in reps[k])
        pos = sites.frac_coords[list(idx)]
        s = Structure.from_sites(list(bare))
        for p in pos:
            s.append(ion, p)
        return idx, pos, s

    method = table.method
    rank_energy = {int(k): float(energy[k]) for k in order}
    potential = get_ranker(ranker)
    if potential is not None:
        ranker_fn, ranker_text = potential
        pool = [int(k) for k in order[:max(rerank_pool, top)]]
        e = ranker_fn([bare] + [build(k)[2] for k in pool])
        rank_energy = {k: float(v - e[0]) for k, v in zip(pool, e[1:])}
        order = np.array(sorted(pool, key=lambda k: (round(rank_energy[k], 3), tuple(reps[k].tolist()))))
        method = f"{ranker_text}, on the {len(pool)} lowest Ewald placements ({table.method})"
    out = []
    for rank, k in enumerate(order[:top], start=1):
        idx, pos, s = build(int(k))
        out.append(Configuration(rank=rank, sites=idx, frac_coords=pos, energy=rank_energy[int(k)],
                                 multiplicity=int(counts[k]), min_ion_distance=float(closest[first[k]]),
                                 structure=s, ewald_energy=float(energy[k])))
    summary = {"n_candidates": m, "n_selections": int(total), "n_allowed": int(len(combos)),
               "n_distinct": int(len(classes)), "n_symmetry_operations": int(len(perms)),
               "method": method, "ranker": ranker}
    return out, summary
