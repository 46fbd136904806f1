"""Insertion-site finding on the real VASP grids: agreement with pymatgen-analysis-defects,
the expected interstitials of Si, periodic edge cases and bad input."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import sample

from matlake.models.insertion.analysis import GridInput, InsertionFinder, select_fields
from matlake.models.insertion.sites import (
    combine_grids,
    find_sites,
    local_extrema,
    pbc_distances,
)

warnings.filterwarnings("ignore", module="pymatgen")

SAMPLES = sample("dft")


def dft_sample(name: str) -> Path:
    return sample("dft", name)


def _read(name: str, tmp_path_factory):
    import gzip

    from pymatgen.io.vasp import Chgcar, Locpot

    tmp = tmp_path_factory.mktemp("grids") / name.removesuffix(".gz")
    tmp.write_bytes(gzip.decompress(dft_sample(name).read_bytes()))
    return (Locpot if "LOCPOT" in name else Chgcar).from_file(str(tmp))


@pytest.fixture(scope="module")
def ypo4(tmp_path_factory):
    return _read("YPO4_static_AECCAR0.gz", tmp_path_factory), _read("YPO4_static_AECCAR2.gz", tmp_path_factory)


@pytest.fixture(scope="module")
def si(tmp_path_factory):
    return _read("Si_static_CHGCAR.gz", tmp_path_factory), _read("Si_static_LOCPOT.gz", tmp_path_factory)


def ypo4_field(ypo4):
    a0, a2 = ypo4
    return combine_grids("density", [("AECCAR0", a0.data["total"], a0.structure),
                                     ("AECCAR2", a2.data["total"], a2.structure)])


def test_ypo4_sites_and_groups_agree_with_pymatgen_analysis_defects(ypo4):
    from pymatgen.analysis.defects.utils import ChargeInsertionAnalyzer

    a0, a2 = ypo4
    t0 = time.perf_counter()
    ours = find_sites(ypo4_field(ypo4))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = ChargeInsertionAnalyzer(a0 + a2, working_ion="Mg")
    labeled = ref.labeled_sites
    ref_groups = ref.filter_and_group(max_avg_charge=np.inf)
    t_ref = time.perf_counter() - t0
    print(f"\nYPO4 48^3: matlake {t_ours:.3f} s, pymatgen-analysis-defects {t_ref:.3f} s "
          f"(ratio {t_ref / t_ours:.1f})")

    ref_frac = np.array([f for f, _ in labeled])
    ref_label = np.array([lab for _, lab in labeled])
    lattice = a0.structure.lattice
    assert len(ours) == len(ref_frac) == 16
    d = pbc_distances(lattice, ours.frac_coords, ref_frac)
    match = d.argmin(1)
    assert d.min(1).max() < 0.1  # every site of ours has a reference site within 0.1 Angstrom
    assert d.min(0).max() < 0.1  # and the other way round
    assert sorted(match.tolist()) == list(range(len(ref_frac)))  # one to one
    # same groups: the same partition of the sites
    assert ours.n_groups == len(set(ref_label.tolist())) == len(ref_groups) == 2
    for g in range(ours.n_groups):
        assert len(set(ref_label[match[ours.group == g]].tolist())) == 1
    # same ranking and the same local averages (e/Angstrom^3)
    for g, (avg, members) in enumerate(ref_groups):
        mine = ours.group_average[ours.group == g]
        assert mine[0] == pytest.approx(avg, rel=1e-5)
        dd = pbc_distances(lattice, ours.frac_coords[ours.group == g], np.array(members))
        assert dd.min(1).max() < 0.1


def _si_interstitials(structure):
    """Fractional positions of the tetrahedral (T) and hexagonal (H) interstitials of diamond Si."""
    s0, s1 = structure.frac_coords
    lattice = structure.lattice
    # the bond vector from atom 0 to its nearest image of atom 1
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    cands = s1 + shifts - s0
    bond = cands[np.argmin(np.linalg.norm(cands @ lattice.matrix, axis=1))]
    t1, t2 = (s1 + bond) % 1, (s0 - bond) % 1
    # H: halfway between T1 and the nearest image of T2
    cands = t2 + shifts - t1
    half = cands[np.argmin(np.linalg.norm(cands @ lattice.matrix, axis=1))] / 2
    h = (t1 + half) % 1
    return np.array([t1, t2]), h


def test_si_locpot_maxima_sit_on_tetrahedral_and_hexagonal_interstitials(si):
    _chg, loc = si
    fld = combine_grids("potential", [("LOCPOT", loc.data["total"], loc.structure)])
    sites = find_sites(fld)
    assert sites.extremum == "max"
    lattice = loc.structure.lattice
    tetra, hexa = _si_interstitials(loc.structure)
    spacing = fld.grid_spacing
    # the tetrahedral sites are 1 bond length from 4 Si; the hexagonal site sqrt(11)/8 a from 6 Si
    assert pbc_distances(lattice, tetra, loc.structure.frac_coords).min() == pytest.approx(2.368, abs=0.01)
    best = sites.frac_coords[sites.group == 0]
    second = sites.frac_coords[sites.group == 1]
    assert sites.n_groups == 2 and len(best) == 2 and len(second) == 4
    # group 1 (highest potential): both tetrahedral sites, each within one grid spacing
    d = pbc_distances(lattice, best, tetra)
    assert d.min(1).max() <= spacing and sorted(d.argmin(1).tolist()) == [0, 1]
    # group 2: hexagonal sites, each within one grid spacing of a symmetry image of H
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    ops = SpacegroupAnalyzer(loc.structure, symprec=0.1).get_symmetry_operations(cartesian=False)
    h_images = np.unique(np.round(np.array([op.operate(hexa) % 1 for op in ops]), 6) % 1, axis=0)
    assert pbc_distances(lattice, second, h_images).min(1).max() <= spacing
    assert sites.group_average[0] > sites.group_average[-1]  # T above H in the electron's potential energy


def test_si_density_minima_agree_with_potential_maxima_on_the_tetrahedral_sites(si):
    chg, loc = si
    finder = InsertionFinder("Li")
    res = finder.run([GridInput("c", "CHGCAR", chg.data["total"], chg.structure),
                      GridInput("l", "LOCPOT", loc.data["total"], loc.structure)])
    dens = res.sites["density"]
    assert len(dens) == 2 and dens.n_groups == 1
    assert np.all(res.other_distance["density"] < 0.1)  # both fields put the Li on the T sites
    # a cation is lowest in energy where the electron's potential energy is highest
    pot = res.sites["potential"]
    assert res.potential_energy["potential"][pot.group == 0].max() < res.potential_energy["potential"][pot.group == 1].min()


def test_local_extrema_wrap_around_the_cell_edges():
    x = np.arange(10)
    d = np.minimum(x, 10 - x).astype(float)  # periodic distance to index 0
    grid = d[:, None, None] ** 2 + d[None, :, None] ** 2 + d[None, None, :] ** 2
    assert local_extrema(grid, "min").tolist() == [[0, 0, 0]]  # the minimum at the corner, found once
    assert local_extrema(-grid, "max").tolist() == [[0, 0, 0]]
    assert len(local_extrema(np.ones((4, 4, 4)), "min")) == 0  # a flat grid has no extrema


def test_sites_split_by_the_cell_boundary_merge_into_one():
    from pymatgen.core import Lattice, Structure

    host = Structure(Lattice.cubic(6.0), ["Na"], [[0.5, 0.5, 0.5]])
    # equal minima at grid points 0 and 29 of 30 along a: they straddle the face a = 0
    x = (np.arange(30) + 0.5) / 30
    dx = np.minimum(x, 1 - x)
    y = np.arange(30) / 30
    dy = np.minimum(y, 1 - y)
    grid = 1.0 + dx[:, None, None] ** 2 + dy[None, :, None] ** 2 + dy[None, None, :] ** 2
    fld = combine_grids("density", [("CHGCAR", grid, host)])
    sites = find_sites(fld, cluster_tol=0.5)
    assert len(sites) == 1
    f = sites.frac_coords[0]
    # their mean across the face, not the mean of fractional coordinates 0 and 29/30 (which is mid-cell)
    assert pbc_distances(host.lattice, [f], [[-1 / 60, 0.0, 0.0]])[0, 0] < 1e-9
    assert sites.multiplicity[0] == 1


def test_grids_of_different_shapes_or_cells_are_not_combined(ypo4, si):
    a0, a2 = ypo4
    with pytest.raises(ValueError, match=r"AECCAR0 \+ AECCAR2: grids must have the same shape.*\(48, 48, 48\) and \(24, 24, 24\)"):
        combine_grids("density", [("AECCAR0", a0.data["total"], a0.structure),
                                  ("AECCAR2", a2.data["total"][::2, ::2, ::2], a2.structure)])
    strained = a2.structure.copy()
    strained.scale_lattice(a2.structure.volume * 1.01)
    with pytest.raises(ValueError, match="same cell.*lattices differ"):
        combine_grids("density", [("AECCAR0", a0.data["total"], a0.structure),
                                  ("AECCAR2", a2.data["total"], strained)])
    chg, loc = si
    with pytest.raises(ValueError, match="expected grids of the same cell"):
        select_fields([GridInput("a0", "AECCAR0", a0.data["total"], a0.structure),
                       GridInput("a2", "AECCAR2", a2.data["total"], a2.structure),
                       GridInput("l", "LOCPOT", loc.data["total"], loc.structure)])


def test_a_locpot_without_structure_is_refused(si):
    _chg, loc = si
    with pytest.raises(ValueError, match="LOCPOT.*expected a grid with its structure"):
        select_fields([GridInput("l", "LOCPOT", loc.data["total"], None, "Si_LOCPOT")])
    with pytest.raises(ValueError, match="expected AECCAR2 of the same cell too"):
        select_fields([GridInput("a0", "AECCAR0", loc.data["total"], loc.structure)])


@pytest.mark.parametrize("ion", ["Xx", "li", "", "Li2"])
def test_an_unknown_ion_is_refused(ion):
    with pytest.raises(ValueError, match="ion: expected an element symbol"):
        InsertionFinder(ion)


def test_more_ions_than_candidate_sites_is_refused(si):
    chg, _loc = si
    finder = InsertionFinder("Li", n=3)
    with pytest.raises(ValueError, match=r"n: expected at most 2 ions .*found 3"):
        finder.run([GridInput("c", "CHGCAR", chg.data["total"], chg.structure)])


def test_a_stray_site_without_symmetry_partners_does_not_split_the_groups(ypo4):
    from matlake.models.insertion.sites import _groups, _symmetry_images

    sites = find_sites(ypo4_field(ypo4))
    host = ypo4[0].structure
    frac = np.vstack([sites.frac_coords, [[0.31, 0.17, 0.43]]])  # no operation maps it onto a site
    labels = _groups(*_symmetry_images(host, frac, 0.1), 0.5)
    assert len(set(labels[:-1].tolist())) == 2  # the 16 real sites keep their two groups
    assert labels[-1] not in set(labels[:-1].tolist())
    for g in range(2):
        assert len(set(labels[:-1][sites.group == g].tolist())) == 1


def _orbit_size(structure, frac, merge: float) -> tuple[int, np.ndarray]:
    """Number of distinct symmetry images of ``frac`` (images closer than ``merge`` Angstrom count once)
    and the images, from the space-group operations of ``structure``."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    ops = SpacegroupAnalyzer(structure, symprec=0.1).get_symmetry_operations(cartesian=False)
    imgs = np.array([op.operate(frac) % 1 for op in ops])
    d = pbc_distances(structure.lattice, imgs, imgs)
    kept: list[int] = []
    for i in range(len(imgs)):
        if all(d[i, j] >= merge for j in kept):
            kept.append(i)
    return len(kept), imgs


def test_multiplicities_are_the_orbit_sizes_of_the_sites(ypo4, si):
    # each group holds one site per symmetry image of its first site (images closer than the 0.5
    # Angstrom clustering distance being one site); YPO4's first group sits one grid step off a
    # special position, so its 16 images pair up into 8 sites
    _chg, loc = si
    fields = [ypo4_field(ypo4), combine_grids("potential", [("LOCPOT", loc.data["total"], loc.structure)])]
    expected = [[8, 8], [2, 4]]
    for fld, mults in zip(fields, expected):
        sites = find_sites(fld)
        assert [int(sites.multiplicity[sites.group == g][0]) for g in range(sites.n_groups)] == mults
        for g in range(sites.n_groups):
            members = sites.frac_coords[sites.group == g]
            size, imgs = _orbit_size(fld.structure, members[0], merge=0.5)
            assert size == len(members) == sites.multiplicity[sites.group == g][0]
            # every member is an image of the first, within the grouping tolerance
            assert pbc_distances(fld.structure.lattice, members, imgs).min(1).max() <= 0.5
