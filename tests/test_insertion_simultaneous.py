"""Simultaneous insertion of N ions on the YPO4 sites: Ewald energies, symmetry reduction, ranking."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_insertion_sites import _read, ypo4_field

from matlake.models.insertion.electrostatics import EwaldTable, ion_charge
from matlake.models.insertion.simultaneous import candidate_indices, insert_simultaneously
from matlake.models.insertion.sites import find_sites

warnings.filterwarnings("ignore", module="pymatgen")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    a0 = _read("YPO4_static_AECCAR0.gz", tmp_path_factory)
    a2 = _read("YPO4_static_AECCAR2.gz", tmp_path_factory)
    sites = find_sites(ypo4_field((a0, a2)))
    table = EwaldTable.build(a0.structure, sites.frac_coords, "Mg")
    return a0.structure, sites, table


def test_ewald_table_gives_the_ewald_summation_of_the_inserted_structure(setup):
    from pymatgen.core.ewald import EwaldSummation

    host, sites, table = setup
    for combo in ([3], [0, 9], [0, 3, 8, 12]):
        s = host.copy()
        s.add_oxidation_state_by_guess()
        for i in combo:
            s.append("Mg2+", sites.frac_coords[i])
        assert table.energy(np.array([combo]))[0] == pytest.approx(EwaldSummation(s).total_energy, abs=1e-4)
    assert "Y+3" in table.method and "Mg+2" in table.method


def test_ion_charges_are_common_positive_oxidation_states():
    assert ion_charge("Li") == 1 and ion_charge("Na") == 1 and ion_charge("Mg") == 2 and ion_charge("Al") == 3
    assert ion_charge("Li", 0.5) == 0.5


@pytest.mark.parametrize("n", [2, 3, 4])
def test_n_ions_at_once_give_distinct_symmetry_reduced_energy_ranked_structures(setup, n):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    host, sites, table = setup
    confs, summary = insert_simultaneously(host, sites, "Mg", n, table=table, top=5)
    assert len(confs) == 5
    assert [c.rank for c in confs] == [1, 2, 3, 4, 5]
    energies = [c.energy for c in confs]
    assert energies == sorted(energies)
    # symmetry-reduced: fewer classes than allowed placements, and the classes cover them all
    assert summary["n_distinct"] < summary["n_allowed"] <= summary["n_selections"]
    assert summary["n_symmetry_operations"] == 16  # I4_1/amd in the primitive cell
    _all, full = insert_simultaneously(host, sites, "Mg", n, table=table, top=10_000)
    assert sum(c.multiplicity for c in _all) == full["n_allowed"]
    # distinct: no two structures match (pymatgen's StructureMatcher, default tolerances)
    sm = StructureMatcher()
    for i in range(len(confs)):
        assert int(confs[i].structure.composition["Mg"]) == n
        assert confs[i].min_ion_distance >= 2.0
        for j in range(i + 1, len(confs)):
            assert not sm.fit(confs[i].structure, confs[j].structure)
    # an equivalent placement (a symmetry image) has the same energy
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    op = SpacegroupAnalyzer(host).get_symmetry_operations(cartesian=False)[5]
    img = op.operate_multi(confs[0].frac_coords) % 1
    cand = sites.frac_coords
    d = np.linalg.norm(((img[:, None, :] - cand[None]) + 0.5) % 1 - 0.5, axis=-1)
    mapped = d.argmin(1)
    assert table.insertion_energy(np.array([mapped]))[0] == pytest.approx(confs[0].energy, abs=1e-6)


def test_rerunning_simultaneous_insertion_is_reproducible(setup):
    host, sites, table = setup
    a, sa = insert_simultaneously(host, sites, "Mg", 3, table=table)
    b, sb = insert_simultaneously(host, sites, "Mg", 3)  # fresh Ewald table too
    assert sa == sb
    assert [c.sites for c in a] == [c.sites for c in b]
    assert np.allclose([c.energy for c in a], [c.energy for c in b], atol=1e-9)


def test_candidate_cap_keeps_whole_groups(setup):
    _host, sites, _table = setup
    assert len(candidate_indices(sites, 32)) == 16
    assert candidate_indices(sites, 10).tolist() == np.flatnonzero(sites.group == 0).tolist()  # 8 of group 1
    assert len(candidate_indices(sites, 5)) == 5  # the first group alone is larger: truncated


def test_bad_requests_are_refused_with_the_knob_to_turn(setup):
    host, sites, table = setup
    with pytest.raises(ValueError, match=r"n: expected at most 16 ions"):
        insert_simultaneously(host, sites, "Mg", 17, table=table)
    with pytest.raises(ValueError, match="no selection of the 16 candidate sites keeps the ions at least 9.0"):
        insert_simultaneously(host, sites, "Mg", 2, min_ion_distance=9.0, table=table)
    with pytest.raises(ValueError, match="ion: expected an element symbol"):
        insert_simultaneously(host, sites, "Qq", 2)


@pytest.mark.slow
def test_chgnet_reranks_the_lowest_ewald_placements(setup):
    host, sites, table = setup
    confs, summary = insert_simultaneously(host, sites, "Mg", 2, table=table, top=3, ranker="chgnet", rerank_pool=6)
    ewald, _ = insert_simultaneously(host, sites, "Mg", 2, table=table, top=6)
    assert summary["ranker"] == "chgnet" and "CHGNet" in summary["method"]
    assert [c.energy for c in confs] == sorted(c.energy for c in confs)
    # the re-ranked placements come from the 6 lowest Ewald ones, with their Ewald energies kept
    by_sites = {c.sites: c.energy for c in ewald}
    for c in confs:
        assert c.sites in by_sites and c.ewald_energy == pytest.approx(by_sites[c.sites], abs=1e-9)
        assert np.isfinite(c.energy) and c.energy != pytest.approx(c.ewald_energy, abs=1e-3)
    with pytest.raises(ValueError, match="ranker: expected one of"):
        insert_simultaneously(host, sites, "Mg", 2, table=table, ranker="lj")


def _scattered_sites(m: int, seed: int = 0):
    """A one-atom cubic host and ``m`` scattered sites, each its own group (no symmetry maps them)."""
    from pymatgen.core import Lattice, Structure

    from matlake.models.insertion.sites import SiteSet

    host = Structure(Lattice.cubic(30.0), ["Na"], [[0.0, 0.0, 0.0]])
    frac = np.random.default_rng(seed).uniform(0.1, 0.9, size=(m, 3))
    z = np.zeros(m)
    sites = SiteSet(field_kind="density", field_label="synthetic", extremum="min", frac_coords=frac,
                    cart_coords=frac @ host.lattice.matrix, grid_value=z, local_average=z,
                    group=np.arange(m), multiplicity=np.ones(m, int), group_average=z,
                    host_distance=np.full(m, 5.0), host_species=["Na"] * m, n_extrema=m, n_after_collisions=m,
                    unit="e/Angstrom^3", params={"group_tol": 0.5})
    return host, sites


def test_nearly_all_of_32_candidates_filled_keeps_every_placement_distinct():
    # 30 Li on 32 sites without symmetry: 496 placements, none equivalent to another (an integer key
    # of 30 base-32 digits would overflow and merge them)
    host, sites = _scattered_sites(32)
    confs, summary = insert_simultaneously(host, sites, "Li", 30, min_ion_distance=0.0, top=3)
    assert summary["n_allowed"] == summary["n_distinct"] == 496
    assert all(c.multiplicity == 1 for c in confs)
    assert [c.energy for c in confs] == sorted(c.energy for c in confs)
