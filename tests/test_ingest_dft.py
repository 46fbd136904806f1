"""DFT and structure parsers on the real sample files: rows equal pymatgen's own parse and fit the schemas."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import warnings

import numpy as np
import pyarrow as pa
import pytest
from conftest import sample

import matlake.schemas
from matlake.ingest import mp, structures, vasp
from matlake.ingest.base import ParseContext, ParseError, ParseResult, decode_array

warnings.filterwarnings("ignore", module="pymatgen")

MY_PARSERS = [*vasp.PARSERS, *mp.PARSERS, *structures.PARSERS]  # registry order: vasp, mp, structures
BY_NAME = {p.name: p for p in MY_PARSERS}

VASPRUNS = ["Si_static_vasprun.xml.gz", "YPO4_static_vasprun.xml.gz", "GaN_vN_bulk_vasprun.xml.gz",
            "GaN_vN_q+1_vasprun.xml.gz"]
GRIDS = ["Si_static_CHGCAR.gz", "Si_static_LOCPOT.gz", "YPO4_static_AECCAR0.gz", "YPO4_static_AECCAR2.gz"]
EXPECTED_PARSER = {
    **{f: "vasprun" for f in VASPRUNS},
    **{f: "volumetric" for f in GRIDS},
    "MP_stable_entries_Mg_Ga_N.json": "mp-json",
    "MAPbI3_mp-977013_symmetrized.cif": "structure",
}


def read(*parts: str) -> bytes:
    path = sample(*parts)
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def run(parser_name: str, data: bytes, filename: str, **options) -> tuple[ParseResult, ParseContext]:
    ctx = ParseContext(source_sha256=hashlib.sha256(data).hexdigest(), filename=filename, parser=parser_name,
                       options=options)
    return BY_NAME[parser_name].parse(data, ctx), ctx


def conformed(result: ParseResult) -> dict[str, pa.Table]:
    """Every table of a result cast to its schema (raises if a row does not fit)."""
    out = {}
    for table, rows in result.tables.items():
        t = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
        out[table] = matlake.schemas.get(table).conform(t)
    return out


def detect_mine(data: bytes, filename: str) -> str | None:
    head = data[:8192]
    for p in MY_PARSERS:
        if p.detect(head, filename):
            return p.name
    return None


def pmg_path(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name.removesuffix(".gz")
    path.write_bytes(data)
    return str(path)


# --- vasprun -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VASPRUNS)
def test_vasprun_rows_equal_pymatgen_parse(name, tmp_path):
    from pymatgen.io.vasp import Vasprun

    data = read("dft", name)
    result, ctx = run("vasprun", data, name)
    tables = conformed(result)
    calc = tables["calculations"].to_pylist()
    struct = tables["structures"].to_pylist()
    assert len(calc) == 1 and len(struct) == 1
    calc, struct = calc[0], struct[0]
    vr = Vasprun(pmg_path(tmp_path, name, data), parse_dos=False, parse_projected_eigen=False,
                 parse_potcar_file=False)
    gap, cbm, vbm, direct = vr.eigenvalue_band_properties
    assert calc["energy"] == float(vr.final_energy)
    assert calc["energy_per_atom"] == pytest.approx(float(vr.final_energy) / len(vr.final_structure), rel=1e-15)
    assert (calc["band_gap"], calc["cbm"], calc["vbm"], calc["is_direct"]) == (gap, cbm, vbm, direct)
    assert calc["is_metal"] is bool(gap == 0)
    assert calc["run_type"] == vr.run_type
    assert calc["potcar_symbols"] == vr.potcar_symbols
    assert calc["code_version"] == vr.vasp_version
    assert calc["encut"] == vr.incar["ENCUT"]
    assert calc["nelect"] == vr.parameters["NELECT"]
    assert calc["nionic_steps"] == len(vr.ionic_steps)
    assert calc["electronic_converged"] is vr.converged_electronic
    assert calc["nkpoints"] == len(vr.actual_kpoints)
    assert json.loads(calc["incar_json"])["ISPIN"] == vr.incar["ISPIN"]
    assert calc["structure_id"] == struct["record_id"] == ctx.record_id("final_structure")
    np.testing.assert_array_equal(np.reshape(struct["lattice"], (3, 3)), vr.final_structure.lattice.matrix)
    assert struct["nsites"] == len(vr.final_structure)
    assert struct["density"] == pytest.approx(float(vr.final_structure.density), rel=1e-12)
    assert struct["source_locator"] == "final_structure"


def _full_and_trimmed(data: bytes, tmp_path) -> tuple:
    """pymatgen's parse of ``data`` as it is and of ``data`` without the blocks it leaves unread."""
    from pymatgen.io.vasp import Vasprun

    trimmed, last_dos = vasp.without_unread_blocks(data)
    full_path, trimmed_path = tmp_path / "full.xml", tmp_path / "trimmed.xml"
    full_path.write_bytes(data)
    trimmed_path.write_bytes(trimmed)
    opts = vasp.VASPRUN_OPTIONS
    return Vasprun(str(full_path), **opts), Vasprun(str(trimmed_path), **opts), trimmed, last_dos


def _assert_same_vasprun(a, b) -> None:
    assert a.final_structure == b.final_structure and a.initial_structure == b.initial_structure
    assert len(a.ionic_steps) == len(b.ionic_steps)
    for step_a, step_b in zip(a.ionic_steps, b.ionic_steps):
        assert step_a.keys() == step_b.keys()
        for key, value in step_a.items():
            if key in ("structure", "electronic_steps"):
                assert value == step_b[key]
            else:
                np.testing.assert_array_equal(np.asarray(value), np.asarray(step_b[key]), err_msg=key)
    assert a.eigenvalues.keys() == b.eigenvalues.keys()
    for spin, values in a.eigenvalues.items():
        np.testing.assert_array_equal(values, b.eigenvalues[spin])
    assert a.incar == b.incar and a.parameters == b.parameters and a.generator == b.generator
    np.testing.assert_array_equal(a.actual_kpoints, b.actual_kpoints)
    assert a.actual_kpoints_weights == b.actual_kpoints_weights
    assert a.potcar_symbols == b.potcar_symbols and a.efermi is b.efermi is None


@pytest.mark.parametrize("name", VASPRUNS)
def test_vasprun_without_unread_blocks_parses_to_the_same_run(name, tmp_path):
    """The DOS and projections pymatgen skips are cut before it parses: same run, same rows."""
    data = read("dft", name)
    full, trimmed, cut, last_dos = _full_and_trimmed(data, tmp_path)
    assert len(cut) < len(data) / 3  # these static runs are mostly DOS and projections
    assert b"<dos>" not in cut and b"<projected>" in cut and cut.count(b"<eigenvalues>") == 2
    assert data[last_dos:last_dos + 5] == b"<dos>" and data.rfind(b"<dos>") == last_dos
    _assert_same_vasprun(full, trimmed)
    ctx = ParseContext(source_sha256="0" * 64, filename=name, parser="vasprun")
    assert vasp._vasprun_rows(full, data, ctx) == vasp._vasprun_rows(trimmed, data, ctx, last_dos)


def test_vasprun_cut_leaves_other_tags_and_takes_the_fermi_level_of_the_last_dos(tmp_path):
    data = read("dft", "Si_static_vasprun.xml.gz")
    start, end = data.index(b"<dos>"), data.index(b"</dos>") + len(b"</dos>")
    opt = data[start:end].replace(b"<dos>", b'<dos comment="kpoints_opt">', 1)
    efermi = re.search(rb'<i name="efermi">\s*([-0-9.]+)', opt).group(1)
    opt = opt.replace(efermi, b"7.25000000", 1)
    # a kpoints_opt DOS after the DOS, and tags that only start like the cut ones
    data = data[:end] + b"\n" + opt + b'\n<dosage name="x"/><projected_like/>' + data[end:]
    full, trimmed, cut, last_dos = _full_and_trimmed(data, tmp_path)
    assert b"<dos" not in cut.replace(b"<dosage", b"") and b"<projected_like/>" in cut
    _assert_same_vasprun(full, trimmed)
    result, _ctx = run("vasprun", data, "vasprun.xml")
    assert result.tables["calculations"][0]["efermi"] == 7.25  # the last <dos>, as pymatgen's would be


def _line_of(err: ParseError) -> int:
    return int(re.search(r"line (\d+)", err.found).group(1))


def test_vasprun_error_after_the_cut_blocks_names_the_line_of_the_file():
    data = read("dft", "GaN_vN_bulk_vasprun.xml.gz")
    final = data.index(b'<structure name="finalpos"')
    line = data.count(b"\n", 0, final) + 1
    broken = data[:final] + b"<structure name='finalpos' <<broken\n" + data[final:]
    with pytest.raises(ParseError) as info:
        run("vasprun", broken, "vasprun.xml")
    assert "malformed XML" in info.value.found and _line_of(info.value) == line


def test_vasprun_truncated_inside_the_projections_names_the_end_of_the_file():
    data = read("dft", "GaN_vN_bulk_vasprun.xml.gz")
    projected = data.index(b"<projected>")
    cut = data[: projected + (len(data) - projected) // 2]
    with pytest.raises(ParseError) as info:
        run("vasprun", cut, "vasprun.xml")
    assert "truncated" in info.value.found and _line_of(info.value) >= cut.count(b"\n")


def test_vasprun_warnings_name_the_file_not_a_temporary_copy():
    data = read("dft", "GaN_vN_q+1_vasprun.xml.gz")
    # NSW = the number of ionic steps made: pymatgen warns that the relaxation did not converge
    data = data.replace(b'<i type="int" name="NSW">    99</i>', b'<i type="int" name="NSW">     5</i>')
    result, _ctx = run("vasprun", data, "GaN_relax_vasprun.xml")
    unconverged = [w for w in result.warnings if "unconverged" in w]
    assert unconverged and all("GaN_relax_vasprun.xml is an unconverged" in w for w in unconverged)
    assert not any("matlake-" in w or "/tmp" in w or "/dev/shm" in w for w in result.warnings)


def test_vasprun_reproduces_si_and_ypo4_reference_values():
    si = conformed(run("vasprun", read("dft", "Si_static_vasprun.xml.gz"), "Si_static_vasprun.xml.gz")[0])
    ypo4 = conformed(run("vasprun", read("dft", "YPO4_static_vasprun.xml.gz"), "YPO4_static_vasprun.xml.gz")[0])
    si_c, y_c = si["calculations"].to_pylist()[0], ypo4["calculations"].to_pylist()[0]
    assert si_c["energy"] == pytest.approx(-10.847, abs=1e-3)
    assert si_c["band_gap"] == pytest.approx(0.65, abs=0.01)
    assert y_c["energy"] == pytest.approx(-99.661, abs=1e-3)
    assert y_c["band_gap"] == pytest.approx(5.80, abs=0.01)
    assert si_c["kpoints_mesh"] == [8, 8, 8] and si_c["kpoints_style"] == "Gamma"
    assert si_c["functional"] == "PBE" and si_c["run_type"] == "GGA"
    assert si_c["total_magnetization"] == pytest.approx(0.0, abs=1e-6)  # ISPIN=2, non-magnetic Si
    assert si_c["efermi"] == pytest.approx(5.6335, abs=1e-3)  # between VBM 5.61 and CBM 6.26
    assert si["structures"].column("spacegroup_number").to_pylist() == [227]
    assert ypo4["structures"].column("spacegroup_symbol").to_pylist() == ["I4_1/amd"]
    assert ypo4["structures"].column("reduced_formula").to_pylist() == ["YPO4"]


def test_band_edges_agrees_with_pymatgen_loop_on_metal_and_empty_cases():
    from pymatgen.electronic_structure.core import Spin

    rng = np.random.default_rng(3)
    eig = np.sort(rng.normal(size=(4, 6)), axis=1)
    occ = (eig < 0.1).astype(float)
    ev = {Spin.up: np.stack([eig, occ], axis=-1), Spin.down: np.stack([eig + 0.05, occ], axis=-1)}
    gap, cbm, vbm, _ = vasp.band_edges(ev)
    assert vbm == eig[occ > 0].max() + 0.05 and cbm == eig[occ == 0].min()
    assert gap == max(cbm - vbm, 0)
    all_occupied = {Spin.up: np.stack([eig, np.ones_like(eig)], axis=-1)}
    assert vasp.band_edges(all_occupied)[1] == float("inf")


# --- volumetric ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRIDS)
def test_volumetric_grid_is_stored_exactly(name, tmp_path):
    from pymatgen.io.vasp import Chgcar, Locpot

    data = read("dft", name)
    result, ctx = run("volumetric", data, name)
    tables = conformed(result)
    row = tables["volumetric"].to_pylist()[0]
    struct = tables["structures"].to_pylist()[0]
    path = pmg_path(tmp_path, name, data)
    pmg = Locpot.from_file(path) if "LOCPOT" in name else Chgcar.from_file(path)
    key = pmg.data_key if hasattr(pmg, "data_key") else "total"
    main = decode_array(ctx.objects[row["array_sha256"]])
    assert np.array_equal(main, pmg.data[key]) and main.dtype == pmg.data[key].dtype
    assert row["channels"][0] == key
    expected_shape = [60, 60, 60] if name.startswith("Si") else [48, 48, 48]
    assert row["grid_shape"] == expected_shape and list(pmg.dim) == expected_shape
    assert row["kind"] == name.split("_")[-1].removesuffix(".gz")
    assert row["structure_id"] == struct["record_id"]
    np.testing.assert_array_equal(np.reshape(struct["lattice"], (3, 3)), pmg.structure.lattice.matrix)
    assert row["min"] == main.min() and row["max"] == main.max()
    if "LOCPOT" in name:
        assert row["integral"] == pytest.approx(main.mean() * pmg.structure.volume, rel=1e-12)
        assert row["data_unit"] == "eV"
    else:
        assert row["integral"] == main.sum() / main.size
    if row["diff_sha256"]:
        second = decode_array(ctx.objects[row["diff_sha256"]])
        assert np.array_equal(second, pmg.data[row["channels"][1]])


def test_si_chgcar_integrates_to_the_eight_valence_electrons():
    result, _ = run("volumetric", read("dft", "Si_static_CHGCAR.gz"), "Si_static_CHGCAR.gz")
    row = result.tables["volumetric"][0]
    assert row["integral"] == pytest.approx(8.0, abs=1e-6)  # NELECT of the Si vasprun
    assert row["channels"] == ["total", "diff"]


def test_volumetric_kind_comes_from_name_then_option_then_default():
    data = read("dft", "YPO4_static_AECCAR0.gz")
    assert run("volumetric", data, "upload-17.dat", volumetric_kind="AECCAR0")[0].tables["volumetric"][0]["kind"] \
        == "AECCAR0"
    assert run("volumetric", data, "upload-17.dat")[0].tables["volumetric"][0]["kind"] == "CHGCAR-like"
    assert vasp.volumetric_kind_from_name("x/YPO4_static_AECCAR2.gz") == "AECCAR2"
    assert vasp.volumetric_kind_from_name("Si_static_CHGCAR") == "CHGCAR"


# --- structures ----------------------------------------------------------------------------


def test_mapbi3_cif_with_organic_cation_parses_like_pymatgen():
    from pymatgen.io.cif import CifParser

    data = read("dft", "MAPbI3_mp-977013_symmetrized.cif")
    result, ctx = run("structure", data, "MAPbI3_mp-977013_symmetrized.cif")
    rows = conformed(result)["structures"].to_pylist()
    ref = CifParser.from_str(data.decode()).parse_structures(primitive=False)[0]
    assert len(rows) == 1
    row = rows[0]
    assert row["elements"] == ["C", "H", "I", "N", "Pb"] and row["nsites"] == 12
    assert row["reduced_formula"] == ref.composition.reduced_formula
    assert (row["spacegroup_symbol"], row["spacegroup_number"]) == ("Pm", 6)
    np.testing.assert_array_equal(np.reshape(row["lattice"], (3, 3)), ref.lattice.matrix)
    assert row["volume"] == pytest.approx(269.038, abs=1e-3)
    assert row["source_locator"] == "cif_block=0" and row["record_id"] == ctx.record_id("cif_block=0")


def _si_structure():
    from pymatgen.io.vasp import Poscar

    return Poscar.from_str("\n".join(read("dft", "Si_static_CHGCAR.gz")[:600].decode().splitlines()[:10])).structure


def test_multi_block_cif_gives_one_row_per_block():
    from pymatgen.io.cif import CifWriter

    mapbi3 = read("dft", "MAPbI3_mp-977013_symmetrized.cif").decode()
    si = str(CifWriter(_si_structure()))
    rows = run("structure", (mapbi3 + "\n" + si).encode(), "two.cif")[0].tables["structures"]
    assert [r["source_locator"] for r in rows] == ["cif_block=0", "cif_block=1"]
    assert [r["reduced_formula"] for r in rows] == ["H6PbCI3N", "Si"]


def test_partial_occupancy_cif_keeps_disorder():
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    s = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    rows = conformed(run("structure", str(CifWriter(s)).encode(), "alloy.cif")[0])["structures"].to_pylist()
    assert rows[0]["elements"] == ["Co", "Fe"] and rows[0]["formula"] == "Fe0.5 Co0.5"
    assert json.loads(rows[0]["structure_json"])["sites"][0]["species"][0]["occu"] == 0.5


def test_poscar_and_structure_json_round_trip_the_lattice():
    from pymatgen.io.vasp import Poscar

    s = _si_structure()
    poscar = Poscar(s).get_str().encode()
    assert detect_mine(poscar, "POSCAR") == "structure"
    row = conformed(run("structure", poscar, "POSCAR")[0])["structures"].to_pylist()[0]
    np.testing.assert_allclose(np.reshape(row["lattice"], (3, 3)), s.lattice.matrix, atol=1e-8)
    js = s.to_json().encode()
    assert detect_mine(js, "si.json") == "structure"
    row = conformed(run("structure", js, "si.json")[0])["structures"].to_pylist()[0]
    np.testing.assert_array_equal(np.reshape(row["lattice"], (3, 3)), s.lattice.matrix)
    assert row["spacegroup_number"] == 227


def test_noble_gas_structure_parses_without_pymatgen_electronegativity_warning():
    from pymatgen.core import Element, Lattice, Structure
    from pymatgen.io.vasp import Poscar

    s = Structure(Lattice.cubic(4.43), ["Ne"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        poscar = Poscar(s).get_str().encode()
    Element.Ne.__dict__.pop("X", None)  # pymatgen caches X and warns once per process: start fresh
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No Pauling electronegativity for Ne" used to reach the user
        row = conformed(run("structure", poscar, "POSCAR")[0])["structures"].to_pylist()[0]
    assert (row["formula"], row["reduced_formula"]) == ("Ne4", "Ne")


# --- Materials Project JSON ---------------------------------------------------------------


def test_mp_computed_entries_become_calculations_with_uncorrected_energies():
    from pymatgen.entries.computed_entries import ComputedEntry

    data = read("dft", "MP_stable_entries_Mg_Ga_N.json")
    result, ctx = run("mp-json", data, "MP_stable_entries_Mg_Ga_N.json")
    rows = conformed(result)["calculations"].to_pylist()
    entries = [ComputedEntry.from_dict(d) for d in json.loads(data)]
    assert len(rows) == 10
    for row, e in zip(rows, entries):
        assert row["material_id"] == e.entry_id == row["source_locator"]
        assert row["energy"] == e.uncorrected_energy
        assert row["energy_per_atom"] == pytest.approx(e.uncorrected_energy / e.composition.num_atoms, rel=1e-15)
        assert row["energy_correction"] == e.correction
        assert row["reduced_formula"] == e.composition.reduced_formula
        assert row["run_type"] == e.parameters["run_type"] and row["functional"] == "PBE"
        assert row["potcar_symbols"] == e.parameters["potcar_symbols"]
    gan = next(r for r in rows if r["material_id"] == "mp-804")
    assert gan["energy"] == -24.63444937 and gan["nsites"] == 4


def test_computed_structure_entry_links_its_structure(tmp_path):
    from pymatgen.io.vasp import Vasprun

    data = read("dft", "Si_static_vasprun.xml.gz")
    vr = Vasprun(pmg_path(tmp_path, "vasprun.xml", data), parse_dos=False, parse_projected_eigen=False,
                 parse_potcar_file=False)
    cse = vr.get_computed_entry(inc_structure=True, entry_id="mp-149")
    blob = json.dumps([cse.as_dict()]).encode()
    assert detect_mine(blob, "entries.json") == "mp-json"
    tables = conformed(run("mp-json", blob, "entries.json")[0])
    calc, struct = tables["calculations"].to_pylist()[0], tables["structures"].to_pylist()[0]
    assert calc["structure_id"] == struct["record_id"] and struct["material_id"] == "mp-149"
    assert calc["energy"] == float(vr.final_energy) and struct["spacegroup_number"] == 227


def test_mp_summary_document_with_structure_gives_both_rows():
    s = _si_structure()
    doc = {"material_id": "mp-149", "structure": s.as_dict(), "energy_per_atom": -5.4, "band_gap": 0.61,
           "uncorrected_energy_per_atom": -5.42, "is_metal": False}
    tables = conformed(run("mp-json", json.dumps(doc).encode(), "summary.json")[0])
    calc = tables["calculations"].to_pylist()[0]
    assert calc["energy"] == pytest.approx(-10.84) and calc["energy_correction"] == pytest.approx(0.04)
    assert calc["band_gap"] == 0.61 and calc["structure_id"] == tables["structures"].column("record_id")[0].as_py()


# --- detection -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_PARSER))
def test_detect_picks_the_right_parser(name):
    data = read("dft", name)
    assert detect_mine(data, name) == EXPECTED_PARSER[name]
    # the platform's registry, if every module it lists exists already
    try:
        from matlake.ingest import detect

        assert detect(data[:8192], name).name == EXPECTED_PARSER[name]
    except ModuleNotFoundError:
        pass


def test_detect_leaves_eis_and_spectra_files_alone(samples_dir):
    files = sorted((samples_dir / "eis").iterdir()) + sorted((samples_dir / "spectra").iterdir())
    assert len(files) >= 12
    for path in files:
        assert detect_mine(path.read_bytes(), path.name) is None, path.name


def test_detect_does_not_take_a_chgcar_for_a_poscar_even_without_a_name():
    data = read("dft", "Si_static_CHGCAR.gz")
    assert detect_mine(data, "upload.bin") == "volumetric"


# --- bad input -----------------------------------------------------------------------------


def assert_names(err: ParseError, field_part: str) -> None:
    assert field_part in err.field and err.expected and err.found
    assert f"field {err.field}: expected {err.expected}, found {err.found}" in str(err)


def test_truncated_vasprun_is_a_parse_error_naming_the_end_of_data():
    data = read("dft", "Si_static_vasprun.xml.gz")
    with pytest.raises(ParseError) as info:
        run("vasprun", data[: int(len(data) * 0.6)], "vasprun.xml")
    assert_names(info.value, "vasprun.xml")
    assert "truncated" in info.value.found or "line" in info.value.found


def test_garbled_cif_is_a_parse_error():
    data = read("dft", "MAPbI3_mp-977013_symmetrized.cif").decode()
    garbled = data.replace("_cell_length_a   6.43672416", "_cell_length_a   six").replace("loop_", "lop_")
    with pytest.raises(ParseError) as info:
        run("structure", garbled.encode(), "bad.cif")
    assert_names(info.value, "CIF")


def test_chgcar_with_truncated_grid_names_the_expected_count():
    data = read("dft", "YPO4_static_AECCAR0.gz")
    with pytest.raises(ParseError) as info:
        run("volumetric", data[: len(data) // 2], "YPO4_static_AECCAR0")
    assert_names(info.value, "grid data")
    assert "110592" in info.value.expected  # 48^3


@pytest.mark.parametrize("parser", sorted(BY_NAME))
def test_random_bytes_raise_parse_error_in_every_parser(parser):
    data = os.urandom(4096)
    assert detect_mine(data, "blob.bin") is None
    with pytest.raises(ParseError) as info:
        run(parser, data, "blob.bin")
    assert info.value.field and info.value.expected and info.value.found


def test_big_cell_whose_coordinates_pass_the_head_is_detected_by_name():
    from pymatgen.io.vasp import Poscar

    text = Poscar(_si_structure() * (6, 6, 6)).get_str().encode()  # 432 atoms, ~30 kB
    assert len(text) > 8192
    assert detect_mine(text, "POSCAR") == "structure"
    assert detect_mine(text, "supercell_CHGCAR") == "volumetric"
    assert detect_mine(text, "upload.bin") is None  # neither name nor grid decides
