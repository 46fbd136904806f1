"""Tabular property datasets through a map file (kind ``table``, matlake.ingest.tables)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sample

from matlake.ingest import ParseContext, ParseError, detect
from matlake.ingest.tables import BadCells, parse_map, parse_site, parse_table
from matlake.platform.ingestion import OptionFileError, ingest_frame
from matlake.platform.provenance import lineage

DEFECTS = sample("defects", "DFT_impurities.csv")
DEFECTS_MAP = sample("defects", "DFT_impurities.map.toml")
HEADERLESS = sample("tables", "semiconductor_descriptors.csv")
HEADERLESS_MAP = sample("tables", "semiconductor_descriptors.map.toml")
PEROVSKITE = sample("tables", "perovskite_alloys.csv")
PEROVSKITE_MAP = sample("tables", "perovskite_alloys.map.toml")
LEVELS = ["(+3/+2)", "(+2/+1)", "(+1/0)", "(0/-1)", "(-1/-2)", "(-2/-3)"]
ENERGIES = ["Delta_H (A_rich)", "Delta_H (B_rich)"]


def load_map(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def parse(data: bytes, table_map: dict, **options) -> dict:
    ctx = ParseContext("0" * 64, "t.csv", "table-csv", {"map": table_map, **options})
    return parse_table(data, ctx).tables


def ledger(lake) -> pd.DataFrame:
    return lake.sql("select status, message, parser, attempt_key, n_records from ledger order by created_at").df()


def test_defect_table_ingests_through_the_shipped_map(lake, tmp_path):
    df = pd.read_csv(DEFECTS)
    report = lake.ingest([DEFECTS], kind="table", options={"map": str(DEFECTS_MAP)}, progress=False)
    assert (report.new, report.failed, report.errors) == (1, 0, 0), report.outcomes[0].message
    subjects = lake.sql("select * from material_subjects").df()
    assert len(subjects) == len(df) == 1440  # every data row is one subject
    keys = df["AB"] + "|" + df["Site"] + "|" + df["Impurity"]
    assert set(subjects["subject_key"]) == set(keys) and subjects["subject_key"].is_unique
    tags = subjects.set_index("subject_key")["tags_json"].map(json.loads)
    assert tags["ZnO|M_A|Hg"] == {"AB": "ZnO", "Site": "M_A", "Impurity": "Hg", "Type": "II-VI"}
    assert subjects["formula"].isna().all() and (subjects["dataset"] == "dft_impurities").all()
    props = lake.sql("select p.*, s.subject_key from material_properties p "
                     "join material_subjects s on s.record_id = p.subject_id").df()
    assert len(props) == int(df[LEVELS + ENERGIES].notna().sum().sum())
    counts = props.groupby("name").size()
    for col in LEVELS:
        assert counts[f"level{col}"] == df[col].notna().sum()
    assert counts["formation_energy(A_rich)"] == df["Delta_H (A_rich)"].notna().sum()
    assert set(props["unit"]) == {"eV"} and set(props["fidelity"]) == {"GGA"}
    # values equal pandas' reading of the same cells, row by row
    expected = df.assign(subject_key=keys).melt(id_vars="subject_key", value_vars=LEVELS, var_name="column_name")
    expected = expected.dropna()
    got = props.merge(expected, on=["subject_key", "column_name"])
    assert len(got) == len(expected)
    np.testing.assert_allclose(got["value_x"], got["value_y"], rtol=0, atol=1e-12)
    targets = lake.sql("select * from material_targets where name = 'level(0/-1)'").df()
    assert len(targets) == df["(0/-1)"].notna().sum() and list(targets.columns) == [
        "subject_id", "dataset", "name", "fidelity", "value", "unit"]
    # the same file with the same map is a no-op, also when the map is a copy elsewhere
    again = lake.ingest([DEFECTS], kind="table", options={"map": str(DEFECTS_MAP)}, progress=False)
    assert (again.new, again.unchanged) == (0, 1)
    copy = tmp_path / "copy.map.toml"
    copy.write_bytes(DEFECTS_MAP.read_bytes())
    assert lake.ingest([DEFECTS], kind="table", options={"map": str(copy)}, progress=False).unchanged == 1


def test_a_changed_map_is_a_new_attempt_and_adds_versions(sqlite_lake, tmp_path):
    lake = sqlite_lake
    assert lake.ingest([DEFECTS], kind="table", options={"map": str(DEFECTS_MAP)}, progress=False).new == 1
    changed = tmp_path / "map.toml"
    changed.write_text(DEFECTS_MAP.read_text().replace('method = "DFT supercell, charge-state transition level"',
                                                        'method = "GGA supercell level"', 1))
    report = lake.ingest([DEFECTS], kind="table", options={"map": str(changed)}, progress=False)
    assert report.new == 1, report.outcomes[0].message
    rows = lake.sql("select name, method, version from material_properties where name = 'level(+3/+2)'").df()
    assert set(rows["version"]) == {2} and set(rows["method"]) == {"GGA supercell level"}
    other = lake.sql("select distinct version from material_properties where name = 'level(0/-1)'").fetchall()
    assert other == [(2,)]  # a re-parse: new versions of the same records, not new records
    led = ledger(lake)
    assert list(led["status"]) == ["ok", "ok"] and led["attempt_key"].nunique() == 2
    # the map is an input: its bytes are an object the ingest activity used
    prop = lake.sql("select record_id from material_properties limit 1").fetchone()[0]
    objects = {n[1] for n in lineage(lake, prop, direction="up", max_fanout=50).reaches("object")}
    import hashlib

    assert hashlib.sha256(changed.read_bytes()).hexdigest() in objects
    assert hashlib.sha256(DEFECTS.read_bytes()).hexdigest() in objects


def test_headerless_file_with_descriptor_columns(sqlite_lake):
    lake = sqlite_lake
    report = lake.ingest([HEADERLESS], kind="table", options={"map": str(HEADERLESS_MAP)}, progress=False)
    assert report.new == 1, report.outcomes[0].message
    raw = pd.read_csv(HEADERLESS, sep=";", header=None)
    subjects = lake.sql("select * from material_subjects order by row_number").df()
    assert len(subjects) == len(raw) == 10
    assert list(subjects["formula"][:3]) == ["GaN", "GaAs", "InP"]
    assert json.loads(subjects["composition_json"][2]) == {"In": 1.0, "P": 1.0}
    props = lake.sql("select * from material_properties order by row_number").df()
    assert len(props) == 10 and set(props["unit"]) == {"eV"} and set(props["fidelity"]) == {"experiment"}
    np.testing.assert_allclose(props["value"], raw[2], atol=1e-12)
    assert set(props["column_name"]) == {"gap"}
    feats = lake.sql("select f.*, s.row_number from material_features f join material_subjects s "
                     "on s.record_id = f.subject_id order by s.row_number").df()
    assert len(feats) == 10 and set(feats["featurizer"]) == {"given:semiconductor_descriptors_example"}
    assert list(feats["names"][0]) == ["d_radius", "d_electronegativity", "mean_atomic_mass"]
    assert list(feats["units"][0]) == ["Angstrom", "", "amu"]
    np.testing.assert_allclose(np.stack(feats["values"]), raw[[3, 4, 5]].to_numpy(), atol=1e-12)
    assert set(feats["subject_table"]) == {"material_subjects"}


def test_site_pattern_with_mixing_and_molecules():
    m = load_map(PEROVSKITE_MAP)
    out = parse(PEROVSKITE.read_bytes(), m)
    subj = {r["subject_key"]: r for r in out["material_subjects"]}
    assert json.loads(subj["p3"]["sites_json"]) == {"A": {"Cs": 0.5, "MA": 0.5}, "B": {"Pb": 1.0}, "X": {"I": 1.0}}
    x = json.loads(subj["p5"]["sites_json"])["X"]  # "I2Br": amounts per formula unit summing to 3
    assert x == pytest.approx({"I": 2 / 3, "Br": 1 / 3})
    assert json.loads(subj["p6"]["sites_json"])["X"] == {"I": 0.5, "Br": 0.5}  # fractions
    # the composition: amounts x multiplicity, MA = CH3NH3 expanded
    comp = json.loads(subj["p3"]["composition_json"])
    assert comp == pytest.approx({"Cs": 0.5, "C": 0.5, "H": 3.0, "N": 0.5, "Pb": 1.0, "I": 3.0})
    assert subj["p1"]["formula"] == "CsPbI3" and subj["p5"]["formula"] == "CsPbI2Br"
    comp6 = json.loads(subj["p6"]["composition_json"])  # FA = CH(NH2)2 = CH5N2
    assert comp6 == pytest.approx({"Cs": 0.25, "C": 0.75, "H": 3.75, "N": 1.5, "Pb": 1.0, "I": 1.5, "Br": 1.5})
    props = out["material_properties"]
    df = pd.read_csv(PEROVSKITE, na_values=["NA"])
    assert len(props) == int(df[["band_gap_pbe", "band_gap_hse", "decomposition_energy_pbe"]].notna().sum().sum())
    fid = {(p["subject_id"], p["name"], p["fidelity"]) for p in props}
    assert len(fid) == len(props)  # one row per (subject, property, fidelity)
    assert {p["unit"] for p in props if p["name"] == "decomposition_energy"} == {"eV/atom"}
    assert parse_site("Cs0.5MA0.5", {"MA": "CH3NH3"}) == {"Cs": 0.5, "MA": 0.5}
    assert parse_site("Xx", {}) is None and parse_site("MA", {}) is None and parse_site("Pb-1", {}) is None


def _headerless_map(**changes) -> dict:
    m = load_map(HEADERLESS_MAP)
    m.update(changes)
    return m


def test_bad_cells_fail_the_file_naming_row_and_column(sqlite_lake, tmp_path):
    rows = HEADERLESS.read_text().splitlines()
    rows[2] = rows[2].replace(";2.085;", ";n/a;")          # text in a numeric column, data row 3
    rows[4] = rows[4].replace("ZnSe;", "ZnQq;")            # unknown element, row 5
    rows[6] = rows[6] + ";12"                              # one field too many, row 7
    rows[8] = rows[8].replace(";1.8018;", ";inf;")         # a descriptor that is no finite number, row 9
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(rows) + "\n")
    with pytest.raises(BadCells) as err:
        parse(bad.read_bytes(), _headerless_map())
    cells = [(c.row, c.column) for c in err.value.cells]
    assert cells == [(3, "gap"), (5, "formula"), (7, "(row)"), (9, "d_radius")]
    msg = str(err.value)
    assert "4 bad cells" in msg and "row 3 (line 3), column 'gap': expected a finite number" in msg
    assert "found 'n/a'" in msg and "found 'ZnQq'" in msg and "7 fields" in msg
    report = sqlite_lake.ingest([bad], kind="table", options={"map": str(HEADERLESS_MAP)}, progress=False)
    assert report.failed == 1
    led = ledger(sqlite_lake)
    assert list(led["status"]) == ["failed"] and "bad.csv" in led["message"][0]
    assert "row 5 (line 5), column 'formula'" in led["message"][0]
    assert "material_subjects" not in {r[0] for r in sqlite_lake.sql("show tables").fetchall()}  # nothing half-written

    # on_bad_cell=skip: the good rows go in, each bad cell is a table_rejects row
    report = sqlite_lake.ingest([bad], kind="table", options={"map": str(HEADERLESS_MAP), "on_bad_cell": "skip"},
                                progress=False)
    assert report.new == 1 and report.outcomes[0].warnings
    assert sqlite_lake.sql("select count(*) from material_subjects").fetchone()[0] == 6
    rej = sqlite_lake.sql("select row_number, column_name, expected, found from table_rejects "
                          "order by row_number").df()
    assert list(zip(rej["row_number"], rej["column_name"])) == cells
    assert rej["found"][1] == "ZnQq"


def test_bad_maps_fail_naming_the_key():
    data = HEADERLESS.read_bytes()
    m = _headerless_map()
    del m["property"][0]["unit"]
    with pytest.raises(ParseError, match="map property 'gap' unit: expected the property's unit"):
        parse(data, m)
    with pytest.raises(ParseError, match="map property 'nope'.*expected a column of the file"):
        parse(data, _headerless_map(property=[{"column": "nope", "unit": "eV", "fidelity": "PBE"}]))
    with pytest.raises(ParseError, match="map columns: expected the column names"):
        parse(data, {k: v for k, v in _headerless_map().items() if k != "columns"})
    with pytest.raises(ParseError, match="map keys: expected keys among"):
        parse(data, _headerless_map(colums=["x"]))
    with pytest.raises(ParseError, match="fidelity"):
        parse(data, _headerless_map(property=[{"column": "gap", "unit": "eV"}]))
    with pytest.raises(ParseError, match="property #1 column: expected a non-empty string"):
        parse(DEFECTS.read_bytes(), {"dataset": "d", "subject": "AB",
                                    "property": [{"column": "", "unit": "", "fidelity": "x"}]})
    with pytest.raises(ParseError, match="appears once in the header"):  # a repeated header name
        parse(b"a,b,b\nx,1,2\n", {"dataset": "d", "subject": "a",
                                   "property": [{"column": "b", "unit": "", "fidelity": "x"}]})
    with pytest.raises(ParseError, match="option map"):
        parse_table(data, ParseContext("0" * 64, "t.csv", "table-csv", {}))
    assert parse_map(load_map(DEFECTS_MAP)).subject == ["AB", "Site", "Impurity"]


def test_duplicate_subject_and_empty_subject_cells_are_bad(tmp_path):
    text = "id,x\na,1\nb,2\na,3\n,4\n"
    m = {"dataset": "d", "subject": "id", "property": [{"column": "x", "unit": "", "fidelity": "f"}]}
    with pytest.raises(BadCells) as err:
        parse(text.encode(), m)
    assert [(c.row, c.column) for c in err.value.cells] == [(3, "id"), (4, "id")]
    assert "also on row 1" in err.value.cells[0].found


def test_table_kind_is_explicit_only():
    head = PEROVSKITE.read_bytes()[:8192]
    assert detect(head, "perovskite_alloys.csv", "table").name == "table-csv"
    found = detect(head, "perovskite_alloys.csv", "auto")
    assert found is None or found.kind != "table"


def test_pandas_frame_ingests_through_the_same_parser(lake):
    df = pd.DataFrame({"formula": ["GaN", "ZnO", "Si"], "gap_pbe": [1.7, 0.73, math.nan],
                       "gap_hse": [3.2, 2.5, 1.17], "r": [1.1, 0.9, 1.2]})
    m = {"dataset": "frame_example", "subject": "formula", "composition": "formula",
         "property": [{"column": "gap_pbe", "name": "band_gap", "unit": "eV", "fidelity": "PBE"},
                      {"column": "gap_hse", "name": "band_gap", "unit": "eV", "fidelity": "HSE"}],
         "descriptor": [{"column": "r", "unit": "Angstrom"}]}
    report = ingest_frame(lake, df, m)
    assert report.new == 1, report.outcomes[0].message
    t = lake.sql("select s.subject_key, p.fidelity, p.value, s.file_format from material_properties p "
                 "join material_subjects s on s.record_id = p.subject_id order by 1, 2").fetchall()
    assert t == [("GaN", "HSE", 3.2, "frame"), ("GaN", "PBE", 1.7, "frame"), ("Si", "HSE", 1.17, "frame"),
                 ("ZnO", "HSE", 2.5, "frame"), ("ZnO", "PBE", 0.73, "frame")]
    # the raw bytes kept are the frame's CSV text
    sha = lake.sql("select source_sha256 from material_subjects limit 1").fetchone()[0]
    assert lake.objects.get(sha).decode() == df.to_csv(index=False, lineterminator="\n", na_rep="")
    assert ingest_frame(lake, df, m).unchanged == 1
    assert lake.ingest_frame(df.iloc[:2], m).new == 1  # another frame, new bytes
    with pytest.raises(OptionFileError, match="cannot read"):
        ingest_frame(lake, df, "no/such/map.toml")


def test_cli_ingest_kind_table_and_ingest_table(tmp_path, monkeypatch, capsys):
    from matlake.platform import cli

    root = tmp_path / "lake"
    assert cli.main(["init", str(root)]) == 0
    assert cli.main(["ingest", str(PEROVSKITE), "--lake", str(root), "--kind", "table", "--no-progress",
                     "--option", f"map={PEROVSKITE_MAP}"]) == 0
    assert "1 new" in capsys.readouterr().out
    assert cli.main(["ingest-table", str(HEADERLESS), "--lake", str(root), "--map", str(HEADERLESS_MAP)]) == 0
    assert "1 new" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADERLESS.read_text().replace("GaN;", "Qq;"))
    assert cli.main(["ingest-table", str(bad), "--lake", str(root), "--map", str(HEADERLESS_MAP), "--strict"]) == 1
    assert "row 1 (line 1), column 'formula'" in capsys.readouterr().err
    assert cli.main(["ingest-table", str(bad), "--lake", str(root), "--map", str(HEADERLESS_MAP),
                     "--on-bad-cell", "skip"]) == 0
    assert "WARNING" in capsys.readouterr().err
    assert cli.main(["ingest", str(PEROVSKITE), "--lake", str(root), "--kind", "table", "--no-progress",
                     "--option", "map=missing.toml"]) == 1
    assert "option map: cannot read" in capsys.readouterr().err


def test_a_job_ingests_tables_with_a_map_relative_to_the_job_file(sqlite_lake):
    import shutil

    from matlake.platform import jobs as J

    lake = sqlite_lake
    raw = lake.root.parent / "raw"
    raw.mkdir()
    shutil.copyfile(HEADERLESS, raw / HEADERLESS.name)
    shutil.copyfile(HEADERLESS_MAP, lake.root.parent / "descriptors.map.toml")
    job = J.parse_jobs({"job": [{"name": "tables", "sources": ["raw/*.csv"], "kind": "table", "settle_seconds": 0,
                                 "options": {"map": "descriptors.map.toml"}}]}, "jobs.toml", lake.root.parent)["tables"]
    assert [f.status for f in J.plan(lake, job)] == ["new"]
    assert J.run_job(lake, job).new == 1
    assert lake.sql("select count(*) from material_properties").fetchone()[0] == 10
    assert [f.status for f in J.plan(lake, job)] == ["unchanged"]  # the plan reads the map as a run does


def test_ingest_table_command_imports_nothing_heavy():
    from test_startup import HEAVY, _imported_after

    loaded = _imported_after("""
        import contextlib, io
        from matlake.platform import cli
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            cli.main(["ingest-table", "--help"])
        assert "--map" in out.getvalue()
    """)
    assert "matlake" in loaded and not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
