"""Campaign building blocks: enumerator (count vs closed form vs brute force), Pareto ranks, acquisition."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from matlake.models.materials import enumerate as en
from matlake.models.materials.acquisition import expected_improvement, pessimistic, upper_confidence_bound
from matlake.models.materials.pareto import pareto_front, pareto_ranks

ABX3 = (en.Site("A", ("Cs", "MA", "FA")), en.Site("B", ("Pb", "Sn", "Ge")), en.Site("X", ("I", "Br", "Cl"), 3))


def _keys(space: en.Space, **kw) -> list[str]:
    return [k for b in en.enumerate_candidates(space, **kw) for k in b.column("candidate_key").to_pylist()]


def _brute(space: en.Space) -> set[str]:
    """Every occupation vector on each site's grid (zeros allowed), filtered by the mixing rules:
    an independent enumeration to compare the streaming one with."""
    per_site = []
    for s in space.sites:
        g = space.site_grid(s)
        occ = [v for v in itertools.product(range(g + 1), repeat=len(s.species))
               if sum(v) == g and sum(1 for x in v if x) <= s.limit()]
        per_site.append(occ)
    out = set()
    for combo in itertools.product(*per_site):
        if sum(1 for v in combo if sum(1 for x in v if x) > 1) > space.max_mixed_sites:
            continue
        sites = {s.name: {sp: k / space.site_grid(s) for sp, k in zip(s.species, v) if k}
                 for s, v in zip(space.sites, combo)}
        out.add(en.site_key(sites, space))
    return out


@pytest.mark.parametrize("grid,max_mixed,max_species,site_grid", [
    (4, 1, None, None), (8, 1, 2, None), (4, 2, None, None), (2, 3, None, None), (8, 3, None, None),
    (3, 2, 2, 6),
])
def test_count_equals_closed_form_and_brute_force(grid, max_mixed, max_species, site_grid):
    sites = tuple(en.Site(s.name, s.species, s.multiplicity, max_species, site_grid if s.name == "X" else None)
                  for s in ABX3)
    space = en.Space(sites=sites, grid=grid, max_mixed_sites=max_mixed)
    keys = _keys(space, batch_size=997)
    assert len(keys) == en.count(space)
    assert len(set(keys)) == len(keys)
    if en.count(space) < 20000:
        assert set(keys) == _brute(space)


def test_hand_counts():
    # 3 species, grid 4, one mixed site at most: per site 3 pure + C(3,2)*3 + C(3,3)*3 = 12 mixtures.
    space = en.Space(sites=ABX3, grid=4, max_mixed_sites=1)
    assert en.site_options_count(3, 4, 3) == (3, 12)
    assert en.count(space) == 27 + 3 * 12 * 9
    # binary mixing only, grid 8, on a 5-species site: C(5,2) * 7 = 70 mixtures
    assert en.site_options_count(5, 8, 2) == (5, 70)


def test_stream_batches_dedup_and_order():
    space = en.Space(sites=ABX3, grid=8, max_mixed_sites=3)
    sizes = [b.num_rows for b in en.enumerate_candidates(space, batch_size=4096)]
    assert max(sizes) <= 4096 and sum(sizes) == en.count(space) == 91125
    first = _keys(space, batch_size=4096)
    assert first == _keys(space, batch_size=1000)  # order does not depend on batching
    known = first[::7]
    left = _keys(space, exclude_keys=known)
    assert len(left) == len(first) - len(known) and not set(left) & set(known)
    b = next(en.enumerate_candidates(space))
    row = b.slice(0, 1).to_pylist()[0]
    assert row["candidate_key"] == "A:Cs|B:Ge|X:Br" and row["formula"] == "CsGeBr3" and row["n_mixed_sites"] == 0
    fr = en.fraction_matrix(b.column("candidate_key").to_pylist(), space)
    assert np.allclose(fr, np.column_stack([b.column(c).to_numpy() for c in space.columns]))


def test_constraints_match_brute_force():
    sites = (en.Site("A", ("Cs", "MA", "FA")), en.Site("B", ("Pb", "Sn", "Ge", "Na")), en.Site("X", ("I", "Br", "Cl"), 3))
    space = en.Space(sites=sites, grid=4, max_mixed_sites=2, charge_neutral=True, exclude_pairs=(("Ge", "I"),),
                     tolerance_window=(0.8, 1.0))
    keys = _keys(space)
    ref = []
    for key in _brute(en.Space(sites=sites, grid=4, max_mixed_sites=2)):
        occ = en.parse_key(key)
        charge = sum(s.multiplicity * sum(f * en.DEFAULT_CHARGES[sp]
                     for sp, f in occ[s.name].items()) for s in sites)
        r = {n: sum(f * en.DEFAULT_RADII[sp] for sp, f in occ[n].items()) for n in "ABX"}
        t = (r["A"] + r["X"]) / (math.sqrt(2) * (r["B"] + r["X"]))
        species = {sp for o in occ.values() for sp in o}
        if abs(charge) < 1e-9 and not {"Ge", "I"} <= species and 0.8 <= t <= 1.0:
            ref.append(key)
    assert sorted(keys) == sorted(ref)
    assert 0 < len(keys) < en.count(space)
    assert not any("Na" in k for k in keys)  # Na+ on B is never neutral with halides


def test_tolerance_factor_cspbi3():
    space = en.Space(sites=ABX3, grid=1, max_mixed_sites=0, tolerance_window=(0, 2))
    fr = en.fraction_matrix(["A:Cs|B:Pb|X:I", "A:FA|B:Pb|X:I"], space)
    t = en.tolerance_factor(space, fr)
    # Shannon radii Cs+ 1.88, Pb2+ 1.19, I- 2.20; FA+ 2.53 (Kieslich et al. 2014): t(CsPbI3)=0.851, t(FAPbI3)=0.987
    assert t == pytest.approx([0.851, 0.987], abs=1e-3)


def test_space_errors():
    with pytest.raises(en.SpaceError, match="radii"):
        en.Space(sites=(en.Site("A", ("Xx",)), en.Site("B", ("Pb",)), en.Site("X", ("I",))), tolerance_window=(0.8, 1))
    with pytest.raises(en.SpaceError, match="distinct"):
        en.Space(sites=(en.Site("A", ("Cs", "Cs")),))


def _brute_ranks(v: np.ndarray, senses) -> np.ndarray:
    o = v * np.array([1 if s == "max" else -1 for s in senses])
    ranks = np.zeros(len(o), int)
    left = list(range(len(o)))
    r = 1
    while left:
        front = [i for i in left if not any((o[j] >= o[i]).all() and (o[j] > o[i]).any() for j in left)]
        for i in front:
            ranks[i] = r
        left = [i for i in left if i not in front]
        r += 1
    return ranks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pareto_ranks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 8, size=(300, 2)).astype(float)  # many ties and duplicates
    for senses in (("max", "max"), ("max", "min"), ("min", "min")):
        assert (pareto_ranks(v, senses) == _brute_ranks(v, senses)).all()
    v3 = rng.normal(size=(200, 3))
    assert (pareto_ranks(v3, ("max", "min", "max")) == _brute_ranks(v3, ("max", "min", "max"))).all()
    front = pareto_front(v, ("max", "max"))
    assert front.sum() == (_brute_ranks(v, ("max", "max")) == 1).sum()


def test_acquisition_against_monte_carlo():
    rng = np.random.default_rng(3)
    mean, std = np.array([0.0, 1.0, 2.0, 1.5]), np.array([1.0, 0.5, 0.0, 2.0])
    ei = expected_improvement(mean, std, best=1.2)
    draws = rng.normal(size=(400_000, 1)) * std + mean
    mc = np.maximum(draws - 1.2, 0).mean(0)
    assert ei == pytest.approx(mc, abs=5e-3)
    assert ei[2] == pytest.approx(0.8)
    ei_min = expected_improvement(mean, std, best=1.2, maximize=False)
    assert ei_min == pytest.approx(np.maximum(1.2 - draws, 0).mean(0), abs=5e-3)
    assert upper_confidence_bound(mean, std, 2.0) == pytest.approx(mean + 2 * std)
    assert pessimistic(mean, std, 1.0, larger_is_better=False) == pytest.approx(mean + std)


def test_partitions_cover_the_space_in_order():
    space = en.Space(sites=ABX3, grid=4, max_mixed_sites=2)
    parts = en.partitions(space, rows=500)
    assert max(b - a for _, a, b in parts) <= 500
    keys = [k for p in parts for b in en.enumerate_partition(space, p, batch_size=128)
            for k in b.column("candidate_key").to_pylist()]
    assert keys == _keys(space)


def test_elemental_site_mean_matches_descriptors_site_features():
    """The campaign featurizer (one matrix product per site) equals descriptors.site_features row by row."""
    import pyarrow as pa

    from matlake.models.materials import campaign as cp
    from matlake.models.materials.descriptors import site_features

    space = en.Space(sites=(en.Site("A", ("Cs", "MA", "FA")), en.Site("B", ("Pb", "Sn")), en.Site("X", ("I", "Br"), 3)),
                     grid=4, max_mixed_sites=2)
    batch = pa.Table.from_batches(list(en.enumerate_candidates(space))).combine_chunks().to_batches()[0]
    x, names = cp.elemental_site_mean(batch, space, {})
    keys = batch.column("candidate_key").to_pylist()
    ref, ref_names, _ = site_features([en.parse_key(k) for k in keys], ["A", "B", "X"], stats=("mean",))
    assert names == ref_names and x.shape == (267, len(names))
    assert np.array_equal(np.isnan(x), np.isnan(ref))
    assert np.nanmax(np.abs(x - ref)) < 1e-12
