"""Spectra readers through a real lake: values equal the reference readers (xraylarch, pymatgen,
rosettasciio) to 1e-12 relative; detection; bad input as failed ledger rows; re-ingest a no-op."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, sample

import matlake
from matlake.ingest import detect
from matlake.ingest import spectra as sp
from matlake.ingest.base import ParseContext, ParseError

RTOL = 1e-12
SPECTRA_FILES = ("cu_metal_rt.xdi", "ni_metal_rt.xdi", "LiCoO2_k_xanes.json", "NMC_Ni_edge.msa",
                 "NMC_oxygen_edge.msa", "NMC_TM+O_EELS_Spectrum_Image.dm3")
EXPECTED_PARSER = {"cu_metal_rt.xdi": "spectrum-xdi", "ni_metal_rt.xdi": "spectrum-xdi",
                   "LiCoO2_k_xanes.json": "spectrum-xas-json", "NMC_Ni_edge.msa": "spectrum-emsa",
                   "NMC_oxygen_edge.msa": "spectrum-emsa", "NMC_TM+O_EELS_Spectrum_Image.dm3": "spectrum-dm"}


@pytest.fixture(scope="module")
def spectra_lake(tmp_path_factory):
    """One SQLite lake holding every shared spectra file (ingested once for the comparisons)."""
    root = tmp_path_factory.mktemp("spectra") / "lake"
    lake = matlake.init(root)
    report = lake.ingest([sample("spectra")], progress=False)
    assert (report.new, report.failed, report.errors) == (6, 0, 0), [o.message for o in report.outcomes]
    yield lake
    lake.close()


def one(lake, where: str) -> dict:
    rows = lake.sql(f"select * from spectra where {where}").arrow().to_pylist()
    assert len(rows) == 1, (where, len(rows))
    return rows[0]


def close(found, expected) -> None:
    np.testing.assert_allclose(np.asarray(found, float), np.asarray(expected, float), rtol=RTOL, atol=0)


# --------------------------------------------------------------------------- XDI vs xraylarch


@pytest.mark.parametrize("name", ["ni_metal_rt.xdi", "cu_metal_rt.xdi"])
def test_xdi_energy_and_mu_equal_larch(spectra_lake, name):
    from larch.io import read_xdi

    ref = read_xdi(str(sample("spectra", name)))
    row = one(spectra_lake, f"source_name = '{name}'")
    close(row["axis"], ref.energy)
    close(row["intensity"], ref.mutrans)  # both files carry a mutrans column: mu as XDI defines it
    assert row["intensity_quantity"] == "mu (mutrans)" and row["measurement_mode"] == "transmission"
    assert (row["technique"], row["axis_unit"], row["axis_quantity"], row["source_kind"]) == \
        ("xas", "eV", "energy", "measured")
    assert row["n_points"] == len(ref.energy) and row["axis_min"] == ref.energy[0]
    assert row["element"] == ref.element and row["edge"] == "K"
    meta = json.loads(row["metadata_json"])
    assert meta["xdi"]["mono"]["d_spacing"] == ref.attrs["mono"]["d_spacing"]
    if name == "cu_metal_rt.xdi":  # no Element.* fields: taken from Scan.*, and said so
        assert meta["edge_from"].startswith("Scan.edge") and row["facility"] is None
        assert str(row["measured_at"]) == "2001-06-26 22:27:31"
    else:
        assert (row["sample"], row["facility"]) == ("Ni metal foil", "APS")
        assert row["instrument"].startswith("13-ID-C")


CU_K = "# Element.symbol: Cu\n# Element.edge: K\n"


def test_xdi_mu_from_option_gives_ln_i0_over_itrans_equal_to_larch(tmp_path):
    from larch.io import read_xdi

    path = sample("spectra", "cu_metal_rt.xdi")
    ref = read_xdi(str(path))
    data = path.read_bytes()
    row = sp.parse_xdi(data, _ctx(data, path.name, "spectrum-xdi", mu_from="ln(i0/itrans)")).tables["spectra"][0]
    close(row["intensity"], np.log(ref.i0 / ref.itrans))
    assert row["intensity_quantity"] == "mu (ln(i0/itrans))"
    ni = sample("spectra", "ni_metal_rt.xdi").read_bytes()
    result = sp.parse_xdi(ni, _ctx(ni, "ni.xdi", "spectrum-xdi", sample="my foil"))
    assert result.tables["spectra"][0]["sample"] == "Ni metal foil"  # the file's value wins, and we are told
    assert result.warnings == ["xdi: option sample='my foil' ignored: the file says 'Ni metal foil'"]
    with pytest.raises(ParseError) as err:  # the Cu file has no fluorescence channel
        sp.parse_xdi(data, _ctx(data, path.name, "spectrum-xdi", mu_from="ifluor/i0"))
    assert err.value.field == "Column.N" and "itrans" in err.value.found


def _xdi(columns: list[str], rows: list[list[float]], header: str = CU_K) -> bytes:
    head = "# XDI/1.0 test/1\n" + "".join(f"# Column.{i + 1}: {c}\n" for i, c in enumerate(columns)) + header
    return (head + "#----\n# " + " ".join(c.split()[0] for c in columns) + "\n"
            + "".join(" ".join(repr(v) for v in r) + "\n" for r in rows)).encode()


def _ctx(data: bytes, name: str, parser: str, **options) -> ParseContext:
    import hashlib

    return ParseContext(source_sha256=hashlib.sha256(data).hexdigest(), filename=name, parser=parser,
                        options=options)


def test_xdi_mu_from_intensities_and_kev_energies():
    rng = np.random.default_rng(7)
    e_kev = np.linspace(8.9, 9.1, 40)
    i0 = rng.uniform(1e5, 2e5, 40)
    it = i0 * np.exp(-rng.uniform(0.5, 2.0, 40))
    data = _xdi(["energy keV", "i0", "itrans"], np.column_stack([e_kev, i0, it]).tolist())
    row = sp.parse_xdi(data, _ctx(data, "t.xdi", "spectrum-xdi")).tables["spectra"][0]
    close(row["axis"], e_kev * 1000.0)
    close(row["intensity"], np.log(i0 / it))
    assert row["intensity_quantity"] == "mu (ln(i0/itrans))"
    fl = rng.uniform(10, 100, 40)
    data = _xdi(["energy eV", "i0", "ifluor"], np.column_stack([e_kev * 1e3, i0, fl]).tolist())
    row = sp.parse_xdi(data, _ctx(data, "f.xdi", "spectrum-xdi")).tables["spectra"][0]
    close(row["intensity"], fl / i0)
    assert (row["intensity_quantity"], row["measurement_mode"]) == ("mu (ifluor/i0)", "fluorescence")


# --------------------------------------------------------------------------- EMSA vs rosettasciio


@pytest.mark.parametrize("name", ["NMC_Ni_edge.msa", "NMC_oxygen_edge.msa"])
def test_emsa_axis_and_counts_equal_rsciio(spectra_lake, name):
    from rsciio.msa import file_reader

    ref = file_reader(str(sample("spectra", name)))[0]
    ax = ref["axes"][0]
    row = one(spectra_lake, f"source_name = '{name}'")
    close(row["axis"], ax["offset"] + ax["scale"] * np.arange(ax["size"]))
    close(row["intensity"], ref["data"])
    assert (row["technique"], row["axis_quantity"], row["measurement_mode"]) == ("eels", "energy_loss", "EELS")
    # the file says BEAMKV 300000: volts, i.e. a 300 kV microscope; stored in eV, and the reading is explained
    assert row["beam_energy"] == pytest.approx(300e3, rel=RTOL)
    assert ref["metadata"]["Acquisition_instrument"]["TEM"]["beam_energy"] == 300000.0
    assert "read as volts" in json.loads(row["metadata_json"])["beam_energy_note"]
    assert row["intensity_unit"] == "counts"


def test_emsa_y_data_kv_beam_angles_and_date_equal_rsciio(tmp_path):
    text = ("#FORMAT      : EMSA/MAS Spectral Data File\n#VERSION     : 1.0\n#TITLE       : t\n"
            "#DATE        : 05-MAR-2021\n#TIME        : 14:07\n#NPOINTS     : 5\n#NCOLUMNS    : 2\n"
            "#XUNITS      : keV\n#YUNITS      : counts\n#DATATYPE    : Y\n#XPERCHAN    : 0.01\n#OFFSET      : 0.5\n"
            "#SIGNALTYPE  : ELS\n#BEAMKV      : 200\n#CONVANGLE   : 21.5\n#COLLANGLE   : 45\n"
            "#SPECTRUM    : data\n1, 2\n3, 4\n5\n#ENDOFDATA   :\n")
    data = text.encode()
    row = sp.parse_emsa(data, _ctx(data, "y.msa", "spectrum-emsa", element="O", edge="K")).tables["spectra"][0]
    from rsciio.msa import file_reader

    (tmp_path / "y.msa").write_bytes(data)
    ref = file_reader(str(tmp_path / "y.msa"))[0]
    ax, tem = ref["axes"][0], ref["metadata"]["Acquisition_instrument"]["TEM"]
    close(row["axis"], (ax["offset"] + ax["scale"] * np.arange(ax["size"])) * 1000.0)  # keV -> eV
    close(row["intensity"], ref["data"])
    assert row["beam_energy"] == pytest.approx(tem["beam_energy"] * 1e3, rel=RTOL)  # 200 kV, a plausible kV value
    assert (row["convergence_angle"], row["collection_angle"]) == \
        (tem["convergence_angle"], tem["Detector"]["EELS"]["collection_angle"])
    assert str(row["measured_at"]) == f"{ref['metadata']['General']['date']} {ref['metadata']['General']['time']}"
    assert (row["element"], row["edge"]) == ("O", "K")


def test_emsa_xy_keeps_the_x_column_and_warns_when_offset_disagrees():
    data = sample("spectra", "NMC_Ni_edge.msa").read_bytes().replace(b"4.508000e+002\r\n#", b"4.518000e+002\r\n#", 1)
    assert b"#OFFSET      : 4.518000e+002" in data
    result = sp.parse_emsa(data, _ctx(data, "ni.msa", "spectrum-emsa"))
    assert result.tables["spectra"][0]["axis_min"] == 450.8
    assert result.warnings == ["x column differs from OFFSET + i*XPERCHAN by up to 1 eV; the x column is used"]


# --------------------------------------------------------------------------- XAS JSON vs pymatgen


def _pymatgen_xas(doc: dict):
    import warnings

    from pymatgen.analysis.xas.spectrum import XAS

    doc = dict(doc)
    doc["absorbing_element"] = doc.pop("absorption_element")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return XAS.from_dict(doc)


def test_xas_json_equals_pymatgen_and_keeps_the_structure(spectra_lake):
    from pymatgen.core import Structure

    doc = json.loads(sample("spectra", "LiCoO2_k_xanes.json").read_text())
    ref = _pymatgen_xas(doc)
    row = one(spectra_lake, "file_format = 'mp-xas-json'")
    close(row["axis"], ref.x)
    close(row["intensity"], ref.y)
    assert (row["technique"], row["element"], row["edge"], row["source_kind"]) == ("xanes", "Co", "K", "computed")
    params = json.loads(row["code_parameters_json"])
    assert params["spectrum_type"] == "XANES" and params["absorbing_element"] == "Co"
    srow = spectra_lake.sql(f"select * from structures where record_id = '{row['structure_id']}'").arrow().to_pylist()
    assert len(srow) == 1 and srow[0]["reduced_formula"] == "LiCoO2" and srow[0]["spacegroup_symbol"] == "R-3m"
    stored = Structure.from_dict(json.loads(srow[0]["structure_json"]))
    assert stored.matches(ref.structure)
    # one Co site in LiCoO2: that is the absorbing site
    assert row["absorbing_site"] == 1 and stored[row["absorbing_site"]].specie.symbol == "Co"


def test_xas_json_list_with_absorbing_index_and_bad_index():
    doc = json.loads(sample("spectra", "LiCoO2_k_xanes.json").read_text())
    ref = _pymatgen_xas(doc).as_dict()
    a, b = dict(ref), dict(ref)
    a["absorbing_index"], b["spectrum_type"] = 1, "EXAFS"
    data = json.dumps([a, b], default=lambda o: o.tolist()).encode()
    assert detect(data[:8192], "two.json").name == "spectrum-xas-json"
    rows = sp.parse_xas_json(data, _ctx(data, "two.json", "spectrum-xas-json")).tables["spectra"]
    assert [r["technique"] for r in rows] == ["xanes", "exafs"] and rows[0]["absorbing_site"] == 1
    a["absorbing_index"] = 9
    data = json.dumps([a], default=lambda o: o.tolist()).encode()
    with pytest.raises(ParseError) as err:
        sp.parse_xas_json(data, _ctx(data, "bad.json", "spectrum-xas-json"))
    assert "absorbing_index" in err.value.field and "0..3" in err.value.expected


# --------------------------------------------------------------------------- DM3 vs rosettasciio


def test_dm3_spectrum_image_parent_and_42_children_equal_rsciio(spectra_lake):
    from rsciio.digitalmicrograph import file_reader

    from matlake.ingest.base import decode_array

    ref = file_reader(str(sample("spectra", "NMC_TM+O_EELS_Spectrum_Image.dm3")))[0]
    energy, y_ax, x_ax = ref["axes"]  # the file stores the energy axis first
    parent = spectra_lake.sql("select * from spectrum_images").arrow().to_pylist()
    assert len(parent) == 1
    parent = parent[0]
    assert parent["shape"] == [2, 21, 2048] and parent["n_spectra"] == 42 and parent["dtype"] == "float32"
    assert parent["axis_names"] == ["y", "x", "Energy loss"] and parent["axis_units"] == ["µm", "µm", "eV"]
    close(parent["axis_scales"], [y_ax["scale"], x_ax["scale"], energy["scale"]])
    close(parent["axis_offsets"], [y_ax["offset"], x_ax["offset"], energy["offset"]])
    cube = decode_array(spectra_lake.objects.get(parent["array_sha256"]))
    assert cube.dtype == ref["data"].dtype
    np.testing.assert_array_equal(cube, np.moveaxis(ref["data"], 0, -1))
    kids = spectra_lake.sql(f"select * from spectra where parent_id = '{parent['record_id']}' "
                            "order by pixel_index").arrow().to_pylist()
    assert len(kids) == 42
    assert sorted(tuple(k["pixel_index"]) for k in kids) == [(j, i) for j in range(2) for i in range(21)]
    axis = energy["offset"] + energy["scale"] * np.arange(energy["size"])
    for k in kids:
        j, i = k["pixel_index"]
        close(k["axis"], axis)
        close(k["intensity"], ref["data"][:, j, i])
        close(k["position"], [y_ax["offset"] + j * y_ax["scale"], x_ax["offset"] + i * x_ax["scale"]])
        assert k["position_unit"] == "µm" and k["technique"] == "eels" and k["axis_quantity"] == "energy_loss"


def test_dm3_without_rosettasciio_fails_saying_to_install_the_gpl_extra(sqlite_lake, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", None)  # import now raises ImportError
    src = tmp_path / "si.dm3"
    src.write_bytes(sample("spectra", "NMC_TM+O_EELS_Spectrum_Image.dm3").read_bytes())
    report = sqlite_lake.ingest([src], progress=False)
    assert (report.new, report.failed, report.errors) == (0, 1, 0)
    status, message = sqlite_lake.sql("select status, message from ledger").fetchone()
    assert status == "failed" and str(src) in message
    assert 'pip install "matlake[gpl]"' in message and "GPL-3.0" in message and "rsciio is not installed" in message
    monkeypatch.delitem(sys.modules, "rsciio.digitalmicrograph")
    # the failure is keyed by how it was tried: once the extra is there, another --kind reads it
    fixed = sqlite_lake.ingest([src], kind="spectrum", progress=False)
    assert fixed.new == 1
    assert sqlite_lake.sql("select count(*) from spectra").fetchone() == (42,)


# --------------------------------------------------------------------------- text / CSV


def _pl_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    wl = np.linspace(800.0, 400.0, 81)  # scanned downwards, as monochromators often are
    counts = 1e4 * np.exp(-0.5 * ((wl - 532.0) / 12.0) ** 2) + 50.0
    path.write_text("# PL of a test film\nwavelength (nm),counts\n"
                    + "".join(f"{w!r},{c!r}\n" for w, c in zip(wl.tolist(), counts.tolist())))
    return wl, counts


def test_csv_only_with_kind_spectrum_and_options(sqlite_lake, tmp_path):
    src = tmp_path / "pl.csv"
    wl, counts = _pl_file(src)
    auto = sqlite_lake.ingest([src], progress=False)  # never auto-detected
    assert auto.failed == 1 and "unsupported format" in auto.outcomes[0].message
    report = sqlite_lake.ingest([src], kind="spectrum", options={"technique": "pl", "sample": "film A"},
                                progress=False)
    assert (report.new, report.failed) == (1, 0), [o.message for o in report.outcomes]
    row = one(sqlite_lake, "file_format = 'csv'")
    close(row["axis"], wl[::-1])
    close(row["intensity"], counts[::-1])
    assert (row["axis_unit"], row["axis_quantity"], row["technique"], row["sample"]) == \
        ("nm", "wavelength", "pl", "film A")
    assert "decreasing" in json.loads(row["metadata_json"])["axis_reversed"]
    # an EIS CSV keeps going to the EIS reader under --kind auto
    eis = sqlite_lake.ingest([sample("eis", "impedancepy_exampleData.csv")], progress=False)
    assert eis.new == 1 and eis.outcomes[0].parser == "eis-csv"


def test_csv_multi_column_and_named_columns_through_the_cli(tmp_path):
    root = tmp_path / "lake"
    matlake.init(root).close()
    src = tmp_path / "eels.txt"
    e = np.arange(500.0, 520.0, 0.5)
    a, b = np.sin(e / 7.0) + 2.0, np.cos(e / 5.0) + 3.0
    src.write_text("E\tA\tB\n"
                   + "".join(f"{x!r}\t{p!r}\t{q!r}\n" for x, p, q in zip(e.tolist(), a.tolist(), b.tolist())))
    cmd = [sys.executable, "-m", "matlake.platform.cli", "ingest", str(src), "--kind", "spectrum",
           "--option", "technique=eels", "--option", "axis_unit=eV", "--option", "element=O",
           "--option", "edge=K", "--lake", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 new" in proc.stdout, proc.stderr
    lake = matlake.open(root)
    rows = {r["source_locator"]: r for r in lake.sql("select * from spectra").arrow().to_pylist()}
    assert set(rows) == {"column=A", "column=B"}
    close(rows["column=A"]["intensity"], a)
    close(rows["column=B"]["intensity"], b)
    assert rows["column=B"]["axis_quantity"] == "energy_loss" and rows["column=A"]["element"] == "O"
    lake.close()


# --------------------------------------------------------------------------- detection


def test_detection_claims_each_spectra_file_and_nothing_else():
    for path in sorted(SAMPLES.rglob("*")):
        if not path.is_file() or path.name == "SOURCES.md":
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        head, parser = data[:8192], detect(data[:8192], path.name)
        if path.parent.name == "spectra":
            assert parser is not None and parser.name == EXPECTED_PARSER[path.name], path.name
        else:  # dft, eis, imaging, defects files keep their own parser (or none)
            assert parser is None or parser.kind != "spectrum", (path.name, parser.name)
        from matlake.ingest.spectra_dm import detect_dm
        for d in (sp.detect_xdi, sp.detect_emsa, sp.detect_xas_json, detect_dm):
            assert d(head, path.name) == (path.parent.name == "spectra" and
                                          EXPECTED_PARSER[path.name].endswith(d.__name__.split("_", 1)[1]
                                                                              .replace("_", "-"))), (d, path.name)


def test_mp_parser_leaves_xas_documents_and_xas_parser_leaves_mp_entries():
    from matlake.ingest import mp

    xas = sample("spectra", "LiCoO2_k_xanes.json").read_bytes()
    entries = sample("dft", "MP_stable_entries_Mg_Ga_N.json").read_bytes()
    assert not mp.detect(xas[:8192], "x.json") and mp.detect(entries[:8192], "e.json")
    assert sp.detect_xas_json(xas[:8192], "x.json") and not sp.detect_xas_json(entries[:8192], "e.json")


# --------------------------------------------------------------------------- bad input through a lake

def _cut_after(data: bytes, marker: bytes) -> bytes:
    return data[: data.index(marker) + 40]


_GOOD_XDI_ROWS = [[8970.0 + i, 0.1 * i] for i in range(6)]


def _bad_files(folder: Path) -> dict[str, tuple[str, str, str]]:
    """Bad files written into ``folder``: name -> (field, expected, found) parts the ledger must show."""
    msa = sample("spectra", "NMC_Ni_edge.msa").read_bytes().decode()
    lines = msa.splitlines(keepends=True)
    data_start = next(i for i, s in enumerate(lines) if s.startswith("#SPECTRUM")) + 1
    files = {
        "nonmonotonic.xdi": (_xdi(["energy eV", "mutrans"], [[8970.0, 0.1], [8972.0, 0.2], [8971.0, 0.3]]),
                             ("axis point 3", "strictly increasing", "goes back to 8971.0 after 8972.0")),
        "duplicate.xdi": (_xdi(["energy eV", "mutrans"], [[8970.0, 0.1], [8971.0, 0.2], [8971.0, 0.3]]),
                          ("axis point 3", "strictly increasing", "repeats 8971.0")),
        "nan.msa": ("".join(lines[:data_start + 5]) + "4.523000e+002, nan\r\n" + "".join(lines[data_start + 6:]),
                    ("data row 6 y", "a finite number", "'nan'")),
        "inf.xdi": (_xdi(["energy eV", "mutrans"], _GOOD_XDI_ROWS).replace(b" 0.5\n", b" inf\n"),
                    ("column mutrans", "a finite number", "'inf'")),
        "ragged.xdi": (_xdi(["energy eV", "mutrans", "i0"], [[8970.0, 0.1, 5.0], [8971.0, 0.2, 5.0]])
                       + b"8972.0 0.3\n", ("data row 3", "columns of equal length", "2 numbers")),
        "noelement.xdi": (_xdi(["energy eV", "mutrans"], _GOOD_XDI_ROWS, header="# Element.edge: K\n"),
                          ("Element.symbol", "XDI requires Element.symbol", "no Element.symbol")),
        "noedge.xdi": (_xdi(["energy eV", "mutrans"], _GOOD_XDI_ROWS, header="# Element.symbol: Cu\n"),
                       ("Element.edge", "XDI requires Element.edge", "no Element.edge")),
        "unit.msa": (msa.replace("#XUNITS      : eV", "#XUNITS      : furlongs"),
                     ("#XUNITS", "an axis unit (eV, keV, nm)", "'furlongs'")),
        "unit.xdi": (_xdi(["energy meV", "mutrans"], _GOOD_XDI_ROWS),
                     ("unit", "an axis unit (eV, keV)", "'meV'")),
        "truncated.msa": (msa[: len(msa) // 2], ("#ENDOFDATA", "file cut short", "no #ENDOFDATA")),
        "truncated.xdi": (sample("spectra", "ni_metal_rt.xdi").read_bytes()[:600],
                          ("data", "file cut short", "no data rows")),
        "truncated.json": (_cut_after(sample("spectra", "LiCoO2_k_xanes.json").read_bytes(), b'"structure"'),
                           ("JSON", "a JSON document", "JSONDecodeError")),
    }
    out = {}
    for name, (content, parts) in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        out[name] = parts
    return out


def test_bad_inputs_fail_with_file_field_expected_found_and_the_batch_goes_on(lake, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    bad = _bad_files(folder)
    good = folder / "zz_good.xdi"
    good.write_bytes(_xdi(["energy eV", "mutrans"], _GOOD_XDI_ROWS))
    csv_bad = folder / "ragged.csv"  # a CSV needs --kind spectrum: a second batch below
    csv_bad.write_text("energy (eV),y\n1,2\n2,3\n3\n")
    report = lake.ingest([folder], progress=False)
    assert report.new == 1 and report.errors == 0
    ledger = {os.path.basename(p): (s, m) for p, s, m in lake.sql("select source_path, status, message from ledger")
              .fetchall()}
    for name, (field, expected, found) in bad.items():
        status, message = ledger[name]
        assert status == "failed", (name, message)
        assert str(folder / name) in message, message
        assert field in message and expected in message and found in message, (name, message)
    assert ledger["zz_good.xdi"][0] == "ok"
    assert lake.sql("select count(*) from spectra").fetchone() == (1,)
    again = lake.ingest([csv_bad], kind="spectrum", options={"technique": "xas"}, progress=False)
    statuses = lake.sql(f"select status from ledger where source_path = '{csv_bad}'").fetchall()
    assert again.failed == 1 and statuses == [("failed",), ("failed",)]  # unsupported (auto), then the real reason
    message = again.outcomes[0].message
    assert str(csv_bad) in message
    assert "line 4" in message and "columns of equal length" in message and "1 values" in message
    missing = lake.ingest([good.with_name("zz_good.xdi")], kind="spectrum", progress=False)
    assert missing.unchanged == 1


def test_csv_needs_a_technique_and_a_unit():
    data = b"1 2\n2 3\n3 4\n"
    with pytest.raises(ParseError) as err:
        sp.parse_csv(data, _ctx(data, "a.txt", "spectrum-csv"))
    assert err.value.field == "option technique" and "pl" in err.value.expected
    with pytest.raises(ParseError) as err:
        sp.parse_csv(data, _ctx(data, "a.txt", "spectrum-csv", technique="pl"))
    assert err.value.field == "option axis_unit" and "nm" in err.value.expected
    with pytest.raises(ParseError) as err:
        sp.parse_csv(data, _ctx(data, "a.txt", "spectrum-csv", technique="pl", axis_unit="cm-1"))
    assert "'cm-1'" in err.value.found


def test_unsupported_message_lists_the_spectra_formats(sqlite_lake, tmp_path):
    src = tmp_path / "what.bin"
    src.write_bytes(b"\x01\x02 nothing anyone reads " * 10)
    report = sqlite_lake.ingest([src], progress=False)
    message = report.outcomes[0].message
    spectra = message.split("spectrum (", 1)[1]
    for fmt in ("Gatan DM3/DM4", "XDI 1.0 X-ray absorption", "EMSA/MSA 1.0", "Materials Project XAS JSON",
                "text/CSV columns with --kind spectrum"):
        assert fmt in spectra, message


# --------------------------------------------------------------------------- re-ingest


def test_reingest_is_a_no_op(spectra_lake):
    before = spectra_lake.last_snapshot()
    report = spectra_lake.ingest([sample("spectra")], progress=False)
    assert (report.new, report.unchanged) == (0, 6)
    assert spectra_lake.last_snapshot() == before
    assert spectra_lake.sql("select count(*) from spectra").fetchone() == (2 + 1 + 2 + 42,)
    assert spectra_lake.sql("select count(*) from spectrum_images").fetchone() == (1,)
