"""Elemental property tables and composition / site / defect descriptors (pure, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matlake.models.materials.descriptors import (
    DEFECT_SITES,
    composition_features,
    defect_features,
    parse_sites,
    site_features,
    split_host,
)
from matlake.models.materials.elements import (
    MISSING_PROPERTIES,
    PROPERTY_NAMES,
    ElementTable,
    element_table,
    molecular_ions,
    shannon_radius,
)


def prop(table: ElementTable, species: str, name: str) -> float:
    return float(table.lookup([species])[0, table.properties.index(name)])


def test_element_table_matches_published_values() -> None:
    t = element_table()
    # Shannon (1976) ionic radii at coordination VI (Angstrom): Pb2+ 1.19, I- 2.20, Zn2+ 0.74, Cd2+ 0.95
    for sym, r in {"Pb": 1.19, "I": 2.20, "Zn": 0.74, "Cd": 0.95, "Br": 1.96}.items():
        assert prop(t, sym, "ionic_radius") == pytest.approx(r, abs=1e-9)
    assert shannon_radius("Pb")[1] == "Shannon +2 VI"
    assert prop(t, "Pb", "density") == pytest.approx(11340.0)  # kg/m^3
    assert prop(t, "Si", "ionization_energy") == pytest.approx(8.1517, abs=1e-3)  # eV, NIST
    assert prop(t, "Cl", "electronegativity") == pytest.approx(3.16)  # Pauling
    assert prop(t, "Fe", "melting_point") == pytest.approx(1811.0)  # K
    assert (prop(t, "Ga", "period"), prop(t, "Ga", "group"), prop(t, "Ga", "atomic_number")) == (4.0, 13.0, 31.0)
    assert math.isnan(prop(t, "O", "density"))  # a gas: pymatgen has no solid density
    assert set(MISSING_PROPERTIES).isdisjoint(PROPERTY_NAMES)
    assert t.units[t.properties.index("ionic_radius")] == "Angstrom"


def test_molecular_ions_from_data_file() -> None:
    ions = molecular_ions()
    assert set(ions) == {"MA", "FA", "Cs", "Rb", "K"}
    t, a = element_table(), element_table(a_site=True)
    # Kieslich, Sun & Cheetham 2014 effective radii (pm -> Angstrom)
    assert prop(t, "MA", "ionic_radius") == pytest.approx(2.17)
    assert prop(t, "FA", "ionic_radius") == pytest.approx(2.53)
    # atomic mass is summed over the ion's atoms: CH3NH3 = C + N + 6 H
    h, c, n = (prop(t, s, "atomic_mass") for s in ("H", "C", "N"))
    assert prop(t, "MA", "atomic_mass") == pytest.approx(c + n + 6 * h)
    assert prop(t, "FA", "atomic_mass") == pytest.approx(c + 2 * n + 5 * h)
    # other properties: atom-fraction mean (1/8 C + 1/8 N + 6/8 H)
    x = [prop(t, s, "electronegativity") for s in ("C", "N", "H")]
    assert prop(t, "MA", "electronegativity") == pytest.approx((x[0] + x[1] + 6 * x[2]) / 8)
    # the A-site table gives Cs its 12-coordinate Shannon radius; the generic one keeps VI
    assert prop(a, "Cs", "ionic_radius") == pytest.approx(1.88)
    assert prop(t, "Cs", "ionic_radius") == pytest.approx(1.67)
    assert a.name != t.name and a.digest() != t.digest()


def test_table_digest_and_rows() -> None:
    t = element_table()
    assert t.digest() == element_table().digest()
    changed = t.values.copy()
    changed[0, 0] = 1.0
    other = ElementTable(t.name, t.version, t.species, t.properties, t.units, changed, t.sources)
    assert other.digest() != t.digest()
    rows = t.rows()
    assert len(rows) == len(t.species) * len(t.properties)
    pb = [r for r in rows if r["species"] == "Pb" and r["property"] == "ionic_radius"][0]
    assert pb["value"] == pytest.approx(1.19) and pb["unit"] == "Angstrom" and pb["table_sha256"] == t.digest()
    gas = [r for r in rows if r["species"] == "O" and r["property"] == "density"][0]
    assert gas["value"] is None
    with pytest.raises(KeyError, match="Xx"):
        t.lookup(["Pb", "Xx"])


def test_parse_sites() -> None:
    s = parse_sites("MA0.5FA0.5 Pb I2.5Br0.5")
    assert s["A"] == {"MA": 0.5, "FA": 0.5}
    assert s["B"] == {"Pb": 1.0}
    assert s["X"] == pytest.approx({"I": 2.5 / 3, "Br": 0.5 / 3})
    assert parse_sites('{"A": {"Cs": 1}, "B": {"Sn": 1, "Pb": 1}, "X": {"Cl": 3}}')["B"] == {"Sn": 0.5, "Pb": 0.5}
    assert parse_sites("Cs Co Cl3")["B"] == {"Co": 1.0}  # Co, not C + o
    with pytest.raises(ValueError, match="3 space-separated"):
        parse_sites("CsPbI3")
    with pytest.raises(ValueError, match="position"):
        parse_sites("Cs Pb Qq3")


def test_composition_statistics_known_answers() -> None:
    t = element_table()
    x, names, units = composition_features([{"Cd": 1, "Te": 1}, {"Zn": 3, "O": 1}], t)
    col = {n: i for i, n in enumerate(names)}
    ecd, ete = prop(t, "Cd", "electronegativity"), prop(t, "Te", "electronegativity")
    assert x[0, col["comp_mean_electronegativity"]] == pytest.approx((ecd + ete) / 2)
    assert x[0, col["comp_std_electronegativity"]] == pytest.approx(abs(ecd - ete) / 2)
    assert x[0, col["comp_range_electronegativity"]] == pytest.approx(abs(ecd - ete))
    mzn, mo = prop(t, "Zn", "atomic_mass"), prop(t, "O", "atomic_mass")
    assert x[1, col["comp_mean_atomic_mass"]] == pytest.approx(0.75 * mzn + 0.25 * mo)
    assert math.isnan(x[1, col["comp_mean_density"]])  # O has no solid density: not silently dropped
    assert units[col["comp_mean_ionic_radius"]] == "Angstrom" and len(names) == 3 * len(PROPERTY_NAMES)


def test_site_features_vectorised_equals_by_hand() -> None:
    rng = np.random.default_rng(3)
    a_ions, b_ions, x_ions = ["MA", "FA", "Cs", "Rb", "K"], ["Pb", "Sn", "Ge"], ["I", "Br", "Cl"]
    sites = []
    for _ in range(200):
        fa = rng.uniform(0.1, 0.9)
        a = rng.choice(a_ions, 2, replace=False)
        sites.append({"A": {a[0]: fa, a[1]: 1 - fa}, "B": {str(rng.choice(b_ions)): 1.0},
                      "X": {"I": 3 * rng.uniform(), "Br": 1.0}})
    x, names, _ = site_features(sites, stats=("mean", "std", "range"))
    asite, generic = element_table(a_site=True), element_table()
    col = {n: i for i, n in enumerate(names)}
    for i in (0, 57, 199):
        s = parse_sites(sites[i])
        for p in ("ionic_radius", "electronegativity", "ionization_energy"):
            want = sum(w * prop(asite, sp, p) for sp, w in s["A"].items())
            assert x[i, col[f"A_mean_{p}"]] == pytest.approx(want)
            vals = [prop(generic, sp, p) for sp in s["X"]]
            assert x[i, col[f"X_range_{p}"]] == pytest.approx(max(vals) - min(vals))
            wx = np.array(list(s["X"].values()))
            vx = np.array(vals)
            assert x[i, col[f"X_std_{p}"]] == pytest.approx(np.sqrt(wx @ (vx - wx @ vx) ** 2))
    # chunking does not change results
    from matlake.models.materials.descriptors import _weights, weighted_stats

    w, used = _weights([s["X"] for s in map(parse_sites, sites)], generic)
    assert np.allclose(weighted_stats(w, generic.values[used], chunk=7), weighted_stats(w, generic.values[used]),
                       equal_nan=True)


def test_defect_features() -> None:
    t = element_table()
    hosts = ["CdTe", "CdTe", "CdTe", "Si", "GaN"]
    sites = ["M_A", "M_B", "M_i_neut", "M_A", "M_i_B"]
    imps = ["Cu", "Cl", "Cu", "P", "Mg"]
    types = ["II-VI", "II-VI", "II-VI", "IV-IV", "III-V"]
    x, names, units = defect_features(hosts, sites, imps, types, t)
    col = {n: i for i, n in enumerate(names)}
    e = {s: prop(t, s, "electronegativity") for s in ("Cd", "Te", "Cu", "Cl", "Si", "P", "Mg", "N")}
    assert x[0, col["diff_electronegativity"]] == pytest.approx(e["Cu"] - e["Cd"])
    assert x[1, col["diff_electronegativity"]] == pytest.approx(e["Cl"] - e["Te"])
    assert x[2, col["diff_electronegativity"]] == pytest.approx(e["Cu"] - (e["Cd"] + e["Te"]) / 2)
    assert x[3, col["hostA_electronegativity"]] == x[3, col["hostB_electronegativity"]] == pytest.approx(e["Si"])
    assert x[4, col["diff_electronegativity"]] == pytest.approx(e["Mg"] - e["N"])
    assert x[0, col["imp_electronegativity"]] == pytest.approx(e["Cu"])
    onehot = x[:, [col[f"site_{s}"] for s in DEFECT_SITES]]
    assert (onehot.sum(axis=1) == 1).all() and onehot[4, DEFECT_SITES.index("M_i_B")] == 1
    assert x[4, col["type_III-V"]] == 1 and x[4, col["type_II-VI"]] == 0
    assert units[col["hostA_ionic_radius"]] == "Angstrom" and units[col["site_M_A"]] == ""
    assert split_host("SiGe") == ("Si", "Ge")
    with pytest.raises(ValueError, match="site"):
        defect_features(["CdTe"], ["M_X"], ["Cu"], ["II-VI"])
    with pytest.raises(ValueError, match="host"):
        defect_features(["Cd2Te"], ["M_A"], ["Cu"], ["II-VI"])


def test_site_and_composition_features_through_the_lake(sqlite_lake) -> None:
    from matlake.models.materials.models_lake import featurize_materials
    from tests.conftest import sample

    lk = sqlite_lake
    rep = lk.ingest([str(sample("tables", "perovskite_alloys.csv"))], kind="table",
                    options={"map": str(sample("tables", "perovskite_alloys.map.toml"))})
    assert rep.summary().startswith("1 new")
    out = featurize_materials(lk, "perovskite_alloys_example", "sites", stats=["mean", "std"])
    assert out.n_subjects == 6 and not out.errors
    assert featurize_materials(lk, "perovskite_alloys_example", "composition").n_subjects == 6
    rows = lk.sql("select s.subject_key, f.featurizer, f.names, f.\"values\" from material_features f "
                  "join material_subjects s on s.record_id = f.subject_id where f.featurizer like 'materials-%'").df()
    sites = {k: dict(zip(n, v)) for k, f, n, v in rows.itertuples(index=False) if f == "materials-sites"}
    assert sites["p3"]["A_mean_ionic_radius"] == pytest.approx(0.5 * 1.88 + 0.5 * 2.17)  # Cs0.5MA0.5
    assert sites["p3"]["A_std_ionic_radius"] == pytest.approx(0.5 * (2.17 - 1.88))
    t = element_table()
    chi = dict(zip(t.species, t.column("electronegativity")))
    assert sites["p5"]["X_mean_electronegativity"] == pytest.approx((2 * chi["I"] + chi["Br"]) / 3)  # I2Br
    assert sites["p4"]["B_mean_atomic_mass"] == pytest.approx(
        0.25 * prop(t, "Sn", "atomic_mass") + 0.75 * prop(t, "Pb", "atomic_mass"))
    comp = {k: dict(zip(n, v)) for k, f, n, v in rows.itertuples(index=False) if f == "materials-composition"}
    # CsPbI3: 1 Cs, 1 Pb, 3 I of 5 atoms
    want = (chi["Cs"] + chi["Pb"] + 3 * chi["I"]) / 5
    assert comp["p1"]["comp_mean_electronegativity"] == pytest.approx(want)
