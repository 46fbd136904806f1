"""FEFF10 computed XANES: inputs, labels, recipe, the shipped dataset and its loader (no FEFF run here).

The tests that run FEFF itself are in tests/test_feff_run.py.
"""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pytest

from tests.conftest import sample

warnings.filterwarnings("ignore", module="pymatgen")


def rocksalt(a: float = 4.177):
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# --------------------------------------------------------------------------- inputs


def test_absorbing_sites_are_the_symmetry_classes_of_the_element():
    from matlake.models.feff.inputs import absorbing_sites
    from matlake.models.feff.recipe import _tm_variant

    assert absorbing_sites(rocksalt(), "Ni") == [(0, 4)]
    nmc = _tm_variant("NMCNMCNMC")
    sites = absorbing_sites(nmc, "Ni")
    # every Ni is counted once, in some class; each representative is a Ni
    assert sum(m for _, m in sites) == sum(1 for s in nmc if s.specie.symbol == "Ni")
    assert all(nmc[i].specie.symbol == "Ni" for i, _ in sites)


def test_a_structure_without_the_element_or_a_bad_edge_is_a_one_line_error():
    from matlake.models.feff.inputs import FeffInputError, FeffParameters, absorbing_sites, check_edge, feff_input

    with pytest.raises(FeffInputError, match=r"NiO-rs: element: expected a structure holding Co, found only Ni O"):
        absorbing_sites(rocksalt(), "Co", where="NiO-rs")
    with pytest.raises(FeffInputError, match="expected a chemical symbol, found 'Xx'"):
        absorbing_sites(rocksalt(), "Xx")
    with pytest.raises(FeffInputError, match=r"edge: expected one of K, L1.*found 'K9'"):
        check_edge("K9")
    with pytest.raises(FeffInputError, match="found 'Q'"):
        feff_input(rocksalt(), 0, FeffParameters(edge="Q"))
    assert check_edge("l3") == "L3"


def test_feff_input_is_mpxanesset_with_the_recorded_overrides():
    from matlake.models.feff.inputs import FeffParameters, feff_input

    p = FeffParameters()
    text = feff_input(rocksalt(), 0, p)
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("*")]
    cards = {ln[0]: ln[1:] for ln in lines}
    assert cards["EDGE"] == ["K"] and cards["FMS"] == ["4.0", "0"] and cards["XANES"] == ["4.0", "0.07", "0.3"]
    assert "SCF" not in cards and "LDOS" not in cards
    assert cards["COREHOLE"] == ["FSR"]  # MPXANESSet default kept
    # the absorber is at the origin, its six O neighbours at a/2
    atoms = text.split("ATOMS")[1].splitlines()
    rows = [r.split() for r in atoms if r.strip() and r.split()[0][0] in "-0123456789"]
    dist = sorted(float(r[5]) for r in rows)
    assert dist[0] == 0 and np.allclose(dist[1:7], 4.177 / 2, atol=1e-4)
    assert max(dist) <= p.cluster_radius + 1e-6
    rec = p.record()
    assert rec["overrides"]["FMS"] == [4.0, 0] and rec["removed"] == ["SCF", "LDOS"]
    assert rec["set_defaults"]["FMS"] and rec["pymatgen_version"]


def test_parameter_digest_names_the_setting():
    from matlake.models.feff.inputs import FeffParameters

    a, b = FeffParameters(), FeffParameters()
    assert a.digest() == b.digest()
    c = FeffParameters(overrides=(("FMS", (5.0, 0)), ("XANES", (4.0, 0.07, 0.3))))
    assert c.digest() != a.digest()
    assert FeffParameters.from_dict(c.as_dict()).digest() == c.digest()


def test_parse_xmu_refuses_a_file_without_rows():
    from matlake.models.feff.runner import parse_xmu

    with pytest.raises(ValueError, match="xmu.dat: expected rows of 6 numbers"):
        parse_xmu("# only a header\n#  omega e k mu mu0 chi\n")
    cols = parse_xmu("# h\n 8330.0 -3.0 0.5 0.01 0.02 0.0\n 8331.0 -2.0 0.7 0.03 0.02 0.01\n")
    assert cols["omega"] == [8330.0, 8331.0] and cols["mu"] == [0.01, 0.03]


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("build,state,dist", [
    ("rocksalt", 2.0, 4.177 / 2),
    ("layered", 3.0, None),
    ("delithiated", 4.0, None),
])
def test_site_labels_oxidation_state_and_first_shell(build, state, dist):
    from matlake.models.feff.labels import site_labels
    from matlake.models.feff.recipe import _layered

    if build == "rocksalt":
        s = rocksalt()
    elif build == "layered":
        s = _layered(2.878, 14.19, 0.2584)
    else:  # the recipe's NiO2: the layered cell with its own (smaller) lattice, Li removed
        s = _layered(2.81, 13.36, 0.2584)
        s.remove_species(["Li"])
    ni = next(i for i, x in enumerate(s) if x.specie.symbol == "Ni")
    labels, errors = site_labels(s, ni)
    by = {lab.name: lab for lab in labels}
    assert errors == []
    assert by["oxidation_state"].value == pytest.approx(state)
    assert "charge balance" in by["oxidation_state"].method
    assert by["oxidation_state_bva"].value == pytest.approx(state)  # relaxed-like prototypes: BVA agrees
    assert by["first_shell_coordination"].value == 6
    # reference: the six shortest Ni-O distances over periodic images, by explicit lattice arithmetic
    lat = s.lattice.matrix
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)])
    o = np.array([x.frac_coords for x in s if x.specie.symbol == "O"])
    images = (o[:, None, :] + shifts[None, :, :]).reshape(-1, 3) @ lat
    d = np.sort(np.linalg.norm(images - s[ni].frac_coords @ lat, axis=1))[:6]
    assert by["mean_ni_o_distance"].value == pytest.approx(dist or float(np.mean(d)), abs=1e-6)
    assert by["mean_ni_o_distance"].unit == "Angstrom"


def test_labels_of_a_metal_and_of_a_large_cell_say_why_they_are_missing():
    from pymatgen.core import Lattice, Structure

    from matlake.models.feff.labels import BVA_MAX_SITES, charge_balance_state, site_labels
    from matlake.models.feff.recipe import _tm_variant

    metal = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.524), ["Ni"], [[0, 0, 0]])
    labels, errors = site_labels(metal, 0, where="Ni foil")
    assert [lab.name for lab in labels if lab.name == "oxidation_state"] == ["oxidation_state"]
    assert labels[0].value == 0 and labels[0].text == "Ni0"
    assert any("first shell: expected an anion within" in e for e in errors)
    nmc = _tm_variant("NMCNMCNMC")
    assert len(nmc) > BVA_MAX_SITES
    labels, errors = site_labels(nmc, next(i for i, x in enumerate(nmc) if x.specie.symbol == "Ni"))
    assert {lab.name for lab in labels} == {"oxidation_state", "mean_ni_o_distance", "first_shell_coordination"}
    assert any("oxidation_state_bva: expected at most" in e for e in errors)
    # NMC111: Li+ Mn4+ Co3+ O2- leave Ni2+
    assert charge_balance_state(nmc, "Ni")[0] == pytest.approx(2.0)


# --------------------------------------------------------------------------- recipe


def test_recipe_covers_three_oxidation_states_and_50_sites_deterministically(tmp_path):
    from matlake.models.feff.inputs import absorbing_sites
    from matlake.models.feff.labels import charge_balance_state
    from matlake.models.feff.recipe import recipe_structures, write_structures

    n_sites, states = 0, set()
    for _stem, s, _how in recipe_structures():
        n_sites += len(absorbing_sites(s, "Ni"))
        states.add(round(charge_balance_state(s, "Ni")[0], 6))
    assert n_sites >= 50 and states == {2.0, 3.0, 4.0}
    a = write_structures(tmp_path / "a")
    b = write_structures(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    # the shipped structure files are what the recipe writes (to the last few digits of
    # a float, which newer numpy/pymatgen releases may round differently, and up to a
    # lattice translation of a site on the cell's edge)
    import json

    import numpy as np
    from pymatgen.core import Structure

    shipped = sample("computed", "ni_k_feff", "structures")
    assert sorted(p.name for p in shipped.glob("*.json")) == sorted(p.name for p in a)
    for p in a:
        want = Structure.from_dict(json.loads((shipped / p.name).read_text()))
        got = Structure.from_dict(json.loads(p.read_text()))
        assert [str(x.species) for x in want] == [str(x.species) for x in got], p.name
        np.testing.assert_allclose(got.lattice.matrix, want.lattice.matrix, rtol=1e-12, atol=1e-12, err_msg=p.name)
        # the same site: a coordinate may come out as 1.0 here and 0.0 there (one ulp across the cell edge)
        wrapped = (got.frac_coords - want.frac_coords + 0.5) % 1.0 - 0.5
        np.testing.assert_allclose(wrapped, 0.0, rtol=0, atol=1e-12, err_msg=p.name)


# --------------------------------------------------------------------------- shipped dataset


def test_shipped_dataset_loads_with_lineage_and_a_rerun_computes_nothing(sqlite_lake):
    from matlake.models.feff.compute import prepare
    from matlake.models.feff.dataset import load, read
    from matlake.models.feff.inputs import FeffParameters
    from matlake.platform.operations import doctor
    from matlake.platform.provenance import lineage

    path = sample("computed", "ni_k_feff", "ni_k_feff.json.gz")
    rep = load(sqlite_lake, path)
    assert rep.loaded >= 50 and rep.skipped == 0
    spectra = sqlite_lake.sql("select record_id, structure_id, axis, intensity, code, code_version, "
                              "code_parameters_json, metadata_json from spectra").df()
    assert len(spectra) == rep.loaded
    assert set(spectra.code) == {"FEFF 10.0"} and spectra.code_version.str.startswith("feff10-rs").all()
    for axis, mu in zip(spectra.axis, spectra.intensity):
        axis, mu = np.asarray(axis), np.asarray(mu)
        assert np.all(np.diff(axis) > 0) and 8300 < axis[0] < 8345  # Ni K edge: 8333 eV
        assert mu[-1] > 5 * abs(mu[0])  # an edge jump, normalised at E0 + 50 eV
    labels = sqlite_lake.sql("select label, value from spectrum_labels").df()
    states = labels[labels.label == "oxidation_state"].value
    assert set(states.round(6)) == {2.0, 3.0, 4.0}
    dist = labels[labels.label == "mean_ni_o_distance"].value
    assert len(dist) == len(spectra) and dist.between(1.8, 2.2).all()
    # lineage of a spectrum reaches its structure record and the FEFF input bytes
    sp = spectra.iloc[0]
    g = lineage(sqlite_lake, sp.record_id, direction="up", max_fanout=100)
    assert any(sp.structure_id in n[1] for n in g.reaches("record"))
    assert json.loads(sp.metadata_json)["input_sha256"] in {n[1] for n in g.reaches("object")}
    assert doctor(sqlite_lake).ok
    # a second load adds nothing; compute on the loaded lake finds every site done (no FEFF needed)
    again = load(sqlite_lake, path)
    assert again.loaded == 0 and again.snapshot is None
    params = FeffParameters.from_dict({k: v for k, v in json.loads(sp.code_parameters_json).items()
                                       if k in ("edge", "cluster_radius", "overrides", "removed", "input_set",
                                                "extra")})
    jobs, report = prepare(sqlite_lake, "Ni", params)
    assert jobs == [] and report.skipped == len(spectra)
    assert read(path)["recipe"]["structures"]


def test_a_corrupt_dataset_file_is_refused_with_nothing_committed(sqlite_lake, tmp_path):
    from matlake.models.feff.dataset import DatasetError, load

    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(json.dumps({"format": "something-else"}).encode()))
    before = sqlite_lake.last_snapshot()
    with pytest.raises(DatasetError, match=r"bad.json.gz: format: expected 'matlake-computed-spectra/1', found"):
        load(sqlite_lake, bad)
    (tmp_path / "trunc.json.gz").write_bytes(sample("computed", "ni_k_feff", "ni_k_feff.json.gz").read_bytes()[:500])
    with pytest.raises(DatasetError, match="trunc.json.gz: content: expected gzipped JSON"):
        load(sqlite_lake, tmp_path / "trunc.json.gz")
    assert sqlite_lake.last_snapshot() == before


def test_compute_refuses_an_empty_selection_and_reports_structures_without_the_element(sqlite_lake, tmp_path):
    from matlake.models.feff.compute import prepare
    from matlake.models.feff.inputs import FeffInputError, FeffParameters

    p = tmp_path / "NiO.json"
    p.write_text(json.dumps(rocksalt().as_dict()))
    sqlite_lake.ingest([str(p)], progress=False)
    before = sqlite_lake.last_snapshot()
    with pytest.raises(FeffInputError, match="expected at least one structure record"):
        prepare(sqlite_lake, "Ni", FeffParameters(), where="reduced_formula = 'CoO'")
    jobs, report = prepare(sqlite_lake, "Co", FeffParameters())
    assert jobs == [] and len(report.errors) == 1
    assert "element: expected a structure holding Co, found only Ni O (NiO)" in report.errors[0]
    with pytest.raises(FeffInputError, match="edge"):
        prepare(sqlite_lake, "Ni", FeffParameters(edge="K7"))
    jobs, report = prepare(sqlite_lake, "Ni", FeffParameters())
    assert len(jobs) == 1 and jobs[0].multiplicity == 4 and "FMS 4.0 0" in jobs[0].input_text
    assert sqlite_lake.last_snapshot() == before


# --------------------------------------------------------------------------- transfer experiment


@pytest.mark.slow
def test_transfer_on_the_shipped_set_records_cv_curves_and_measured_predictions(sqlite_lake, tmp_path):
    from matlake.models.feff.dataset import load
    from matlake.models.feff.transfer import TASKS, run_transfer, write_curves_png
    from matlake.platform.provenance import lineage

    load(sqlite_lake, sample("computed", "ni_k_feff", "ni_k_feff.json.gz"))
    foil = sample("spectra", "ni_metal_rt.xdi")
    rep = run_transfer(sqlite_lake, [foil], featurizers=("cdf",), n_estimators=40)
    assert rep.notes == []
    models = rep.models.set_index(["model", "label"])
    assert len(models) == len(TASKS)
    # the Ni-O distance is planted by strain across the set; FEFF's spectra carry it (Natoli's rule),
    # so a forest on CDF features recovers it out of fold
    dist = models.loc[("spectra-rf-regressor", "mean_ni_o_distance")]
    assert dist.cv_r2 > 0.6 and dist.cv_mae < 0.05
    assert models.loc[("spectra-rf-classifier", "oxidation_state")].cv_accuracy > 0.4  # 3 classes
    stored = sqlite_lake.sql("select model_id, metrics_json from model_versions").df()
    assert set(rep.models.model_id) <= set(stored.model_id)
    curves = sqlite_lake.sql("select target, metric, perturbations, values from spectrum_model_evaluations "
                             "where metric = 'mae' and target = 'mean_ni_o_distance'").df()
    assert len(curves) == 1
    shifts, values = np.asarray(curves.perturbations[0]), np.asarray(curves["values"][0])
    assert list(shifts) == [-3, -2, -1, 0, 1, 2, 3]
    # moving the spectra by 3 eV costs accuracy: the error at 0 eV is the smallest
    assert values[shifts == 0][0] == values.min() and values[shifts == 3][0] > values[shifts == 0][0]
    # one prediction per model for the measured foil, inside the training range (see the notebook)
    pred = rep.predictions.set_index("label")
    assert set(pred.spectrum) == {"ni_metal_rt.xdi"} and len(pred) == len(TASKS)
    assert 2.0 <= pred.loc["oxidation_state"].value.min() <= pred.loc["oxidation_state"].value.max() <= 4.0
    # the prediction's lineage reaches the measured file's raw bytes and, through the model, the FEFF inputs
    pid = sqlite_lake.sql("select record_id from predictions limit 1").fetchone()[0]
    g = lineage(sqlite_lake, pid, direction="up", max_fanout=200, depth=20)
    assert g.reaches("object")
    png = write_curves_png(rep.curves, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
