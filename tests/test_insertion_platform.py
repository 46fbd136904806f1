"""`matlake insertion` against real lakes: rows, provenance to the raw grids, re-runs, bad input, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from test_insertion_sites import SAMPLES, dft_sample

from matlake.models.insertion.analysis import find
from matlake.platform.lake import LakeError
from matlake.platform.provenance import lineage, render_tree

warnings.filterwarnings("ignore", module="pymatgen")

YPO4 = ["YPO4_static_AECCAR0.gz", "YPO4_static_AECCAR2.gz", "YPO4_static_vasprun.xml.gz"]
SI = ["Si_static_CHGCAR.gz", "Si_static_LOCPOT.gz", "Si_static_vasprun.xml.gz"]


def raw_files(lake, record_id: str) -> set[str]:
    g = lineage(lake, record_id, direction="up", max_fanout=100)
    return {g.labels[n].split()[2] for n in g.reaches("object")}


@pytest.fixture(scope="module")
def full_lake(tmp_path_factory):
    import matlake

    lk = matlake.init(tmp_path_factory.mktemp("ins") / "lake")
    lk.ingest([dft_sample(n) for n in YPO4 + SI], progress=False)
    yield lk
    lk.close()


def test_find_commits_sites_candidates_and_structures_with_provenance(lake):
    lake.ingest([dft_sample(n) for n in YPO4], progress=False)
    before = lake.last_snapshot()
    report = find(lake, "YPO4_static_AECCAR0.gz", ion="Mg", n=[2])
    assert report.snapshot == before + 1 and not report.skipped
    sites = lake.sql("select * from insertion_sites order by site_index").df()
    assert len(sites) == 16 and set(sites.field_label) == {"AECCAR0+AECCAR2"}
    assert set(sites.group_rank) == {1, 2} and set(sites.multiplicity) == {8}
    assert sites.value_unit.iloc[0] == "e/Angstrom^3"
    assert sites.local_average.between(0.02, 0.03).all()
    assert sites.calculation_id.notna().all() and sites.structure_id.notna().all()
    assert (sites.host_distance >= 0.9).all()
    groups = lake.sql("select * from insertion_groups order by group_rank").df()
    assert len(groups) == 2 and groups.group_average.is_monotonic_increasing
    cands = lake.sql("select c.*, s.formula from insertion_candidates c join structures s "
                     "on s.record_id = c.candidate_structure_id order by rank").df()
    assert list(cands["rank"]) == [1, 2, 3, 4, 5] and cands.energy.is_monotonic_increasing
    assert (cands.n_ions == 2).all() and all("Mg2" in f for f in cands.formula)
    assert all(len(ids) == 2 and set(ids) <= set(sites.record_id) for ids in cands.site_ids)
    # lineage of a candidate structure reaches the raw AECCAR0 and AECCAR2 bytes and the vasprun
    raw = raw_files(lake, cands.candidate_structure_id.iloc[0])
    assert {"YPO4_static_AECCAR0.gz", "YPO4_static_AECCAR2.gz", "YPO4_static_vasprun.xml.gz"} <= raw
    assert "insertion-sites" in render_tree(lineage(lake, cands.candidate_structure_id.iloc[0]))


def test_lineage_of_a_si_candidate_reaches_the_raw_chgcar_and_locpot(full_lake):
    report = find(full_lake, "Si_static_LOCPOT.gz", ion="Li", n=2)
    assert set(report.result.fields) == {"density", "potential"}
    sid = full_lake.sql("select candidate_structure_id from insertion_candidates where activity_id = ?",
                        params=[report.activity_id]).fetchone()[0]
    assert {"Si_static_CHGCAR.gz", "Si_static_LOCPOT.gz"} <= raw_files(full_lake, sid)
    agree = full_lake.sql("select field_kind, group_rank, fields_agree, potential_energy from insertion_sites "
                          "where activity_id = ? order by field_kind, site_index", params=[report.activity_id]).df()
    assert agree[agree.field_kind == "density"].fields_agree.all()  # the T sites, in both fields
    assert not agree[(agree.field_kind == "potential") & (agree.group_rank == 2)].fields_agree.any()  # H sites
    assert agree.potential_energy.notna().all()


def test_rerun_is_skipped_and_a_forced_rerun_reproduces_the_rows(full_lake):
    first = find(full_lake, "YPO4_static_AECCAR2.gz", ion="Li", n=[3])
    again = find(full_lake, "YPO4_static_AECCAR2.gz", ion="Li", n=[3])
    assert again.skipped and again.snapshot is None and again.activity_id == first.activity_id
    forced = find(full_lake, "YPO4_static_AECCAR2.gz", ion="Li", n=[3], force=True)
    cols = ["record_id", "frac_a", "frac_b", "frac_c", "group_rank", "local_average", "ewald_energy"]
    a = full_lake.sql(f"select {', '.join(cols)}, version from insertion_sites_all where activity_id = ? "
                      "order by record_id", params=[first.activity_id]).df()
    b = full_lake.sql(f"select {', '.join(cols)}, version from insertion_sites_all where activity_id = ? "
                      "order by record_id", params=[forced.activity_id]).df()
    assert list(a.record_id) == list(b.record_id)  # same records, next version
    assert (b.version == a.version + 1).all()
    assert np.allclose(a[cols[1:]].to_numpy(float), b[cols[1:]].to_numpy(float), rtol=0, atol=1e-12)
    ca = full_lake.sql("select rank, energy, site_ids from insertion_candidates_all where activity_id = ? "
                       "order by rank", params=[first.activity_id]).df()
    cb = full_lake.sql("select rank, energy, site_ids from insertion_candidates_all where activity_id = ? "
                       "order by rank", params=[forced.activity_id]).df()
    assert ca.energy.tolist() == cb.energy.tolist() and [list(x) for x in ca.site_ids] == [list(x) for x in cb.site_ids]


def _coarse_aeccar2(tmp_path):
    import gzip

    from pymatgen.io.vasp import Chgcar, Poscar

    raw = tmp_path / "YPO4_static_AECCAR2"
    raw.write_bytes(gzip.decompress(dft_sample("YPO4_static_AECCAR2.gz").read_bytes()))
    ch = Chgcar.from_file(str(raw))
    out = tmp_path / "YPO4_coarse_AECCAR2"
    Chgcar(Poscar(ch.structure), {"total": ch.data["total"][::2, ::2, ::2]}).write_file(str(out))
    return out


def _grid_without_structure(lake):
    from matlake.ingest.base import encode_array
    from matlake.platform.lake import ChangeSet

    blob = encode_array(np.ones((4, 4, 4)))
    sha = lake.put_object(blob)
    cs = ChangeSet("test", "a LOCPOT whose cell was lost")
    act = cs.activity("test", "handmade")
    cs.add_object(sha, len(blob))
    cs.add_rows("volumetric", [{"record_id": "nostructure0000", "kind": "LOCPOT", "structure_id": None,
                                "reduced_formula": "Si", "grid_shape": [4, 4, 4], "channels": ["total"],
                                "array_sha256": sha, "data_unit": "eV", "source_name": "orphan_LOCPOT"}], act)
    lake.commit(cs)


def test_bad_input_is_one_clear_error_and_commits_nothing(full_lake, tmp_path):
    full_lake.ingest([_coarse_aeccar2(tmp_path)], progress=False)
    _grid_without_structure(full_lake)
    before = full_lake.last_snapshot()
    cases = [
        (dict(ids="YPO4_static_AECCAR0.gz", ion="Xx"), r"ion: expected an element symbol .*found 'Xx'"),
        (dict(ids="YPO4_static_AECCAR0.gz", ion="Mg", n=[17]), r"n: expected at most 16 ions"),
        (dict(ids=["YPO4_static_AECCAR0.gz", "YPO4_coarse_AECCAR2"], siblings=False),
         r"grids must have the same shape to be combined; found \(48, 48, 48\) and \(24, 24, 24\)"),
        (dict(ids=["YPO4_static_AECCAR0.gz", "YPO4_static_AECCAR2.gz", "Si_static_LOCPOT.gz"], siblings=False),
         "expected grids of the same cell"),
        (dict(ids="orphan_LOCPOT"), "LOCPOT orphan_LOCPOT: expected a grid with its structure"),
        (dict(ids="no_such_file"), "no volumetric record with id, id prefix or source name 'no_such_file'"),
    ]
    for kwargs, msg in cases:
        ids = kwargs.pop("ids")
        with pytest.raises((LakeError, ValueError), match=msg) as info:
            find(full_lake, ids, **kwargs)
        assert "\n" not in str(info.value)
    assert full_lake.last_snapshot() == before


def matlake_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MATLAKE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_cli_find_prints_sites_and_placements_writes_a_png_and_fails_in_one_line(tmp_path):
    root = tmp_path / "lake"
    assert matlake_cli("init", str(root)).returncode == 0
    assert matlake_cli("ingest", *[str(SAMPLES / n) for n in YPO4], "--lake", str(root),
                       "--no-progress").returncode == 0
    png = tmp_path / "ypo4.png"
    out = matlake_cli("insertion", "find", "YPO4_static_AECCAR0.gz", "--ion", "Li", "--n", "2", "--png", str(png),
                      "--lake", str(root))
    assert out.returncode == 0, out.stderr
    assert "AECCAR0+AECCAR2 (density, minima): 16 grid extrema" in out.stdout
    assert "Li x2 at once on 16 candidate sites" in out.stdout and "snapshot 2" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot = matlake_cli("insertion", "plot", "YPO4_static_AECCAR2.gz", "--out", str(tmp_path / "plots"),
                       "--lake", str(root))
    assert plot.returncode == 0, plot.stderr
    assert list((tmp_path / "plots").glob("insertion_YPO4_*.png"))
    bad = matlake_cli("insertion", "find", "YPO4_static_AECCAR0.gz", "--ion", "Xx", "--lake", str(root))
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert "ion: expected an element symbol" in bad.stderr
    again = matlake_cli("insertion", "find", "YPO4_static_AECCAR0.gz", "--ion", "Li", "--n", "2", "--lake", str(root))
    assert "nothing new" in again.stdout


@pytest.mark.parametrize("spec", ["4-2", "x", "2-", ""])
def test_cli_n_refuses_backward_ranges_and_non_numbers(spec):
    from matlake.models.insertion.cli import _ns

    assert _ns("2-4,6") == [2, 3, 4, 6]
    with pytest.raises(ValueError, match=r"--n: expected a number, a range like 2-4"):
        _ns(spec)


def _si_aeccars(tmp_path):
    """AECCAR0/AECCAR2 files of the Si cell (the CHGCAR's grid, coarsened), to sit beside its CHGCAR."""
    import gzip

    from pymatgen.io.vasp import Chgcar, Poscar

    raw = tmp_path / "Si_static_CHGCAR"
    raw.write_bytes(gzip.decompress(dft_sample("Si_static_CHGCAR.gz").read_bytes()))
    ch = Chgcar.from_file(str(raw))
    out = []
    for kind, scale in (("AECCAR0", 0.5), ("AECCAR2", 1.0)):
        path = tmp_path / f"Si_extra_{kind}"
        Chgcar(Poscar(ch.structure), {"total": ch.data["total"][::2, ::2, ::2] * scale}).write_file(str(path))
        out.append(path)
    return out


def test_a_named_grid_is_used_and_siblings_only_fill_the_missing_fields(tmp_path):
    import matlake

    lk = matlake.init(tmp_path / "lake")
    try:
        lk.ingest([dft_sample(n) for n in SI] + _si_aeccars(tmp_path), progress=False)
        names = dict(lk.sql("select record_id, source_name from volumetric").fetchall())
        # the CHGCAR is named: it is the density, the LOCPOT joins as the potential, the AECCARs stay out
        named = find(lk, "Si_static_CHGCAR.gz", ion="Li")
        assert sorted(names[i] for i in named.volumetric_ids) == ["Si_static_CHGCAR.gz", "Si_static_LOCPOT.gz"]
        assert named.result.fields["density"].label == "CHGCAR"
        # the LOCPOT is named: the density is the all-electron one (AECCAR0 + AECCAR2), preferred to the CHGCAR
        pot = find(lk, "Si_static_LOCPOT.gz", ion="Li")
        assert sorted(names[i] for i in pot.volumetric_ids) == ["Si_extra_AECCAR0", "Si_extra_AECCAR2",
                                                                "Si_static_LOCPOT.gz"]
        # a named AECCAR0 gets its partner and the LOCPOT
        a0 = find(lk, "Si_extra_AECCAR0", ion="Li")
        assert set(a0.volumetric_ids) == set(pot.volumetric_ids)
    finally:
        lk.close()
