"""matlake.ingest.mp.fetch through the real mp-api MPRester, against a local replay of the MP API."""

from __future__ import annotations

import hashlib
import json
import os

import pyarrow as pa
import pytest
from conftest import sample
from mp_replay import MPReplay, docs_from_entries

import matlake.schemas
from matlake.ingest import mp
from matlake.ingest.base import ParseContext, ParseError

os.environ.setdefault("MPRESTER_MUTE_PROGRESS_BARS", "true")
os.environ.setdefault("NO_PROXY", "127.0.0.1")
API_KEY = "x" * 32


@pytest.fixture(scope="module")
def entries_path():
    return sample("dft", "MP_stable_entries_Mg_Ga_N.json")


@pytest.fixture(scope="module")
def replay(entries_path):
    with MPReplay(docs_from_entries(entries_path)) as server:
        yield server


def parse_blob(blob: bytes) -> dict[str, pa.Table]:
    ctx = ParseContext(source_sha256=hashlib.sha256(blob).hexdigest(), filename="mp-fetch.json", parser="mp-json")
    result = mp.parse(blob, ctx)
    return {t: matlake.schemas.get(t).conform(pa.Table.from_pylist(rows)) for t, rows in result.tables.items()}


def test_fetch_returns_the_ten_documents_and_they_parse_to_ten_calculations(replay, entries_path):
    source = json.loads(entries_path.read_text())
    ids = [e["entry_id"] for e in source]
    blob = mp.fetch({"material_ids": ids}, api_key=API_KEY, endpoint=replay.endpoint)

    doc = json.loads(blob)
    thermo = next(r for r in doc["responses"] if r["route"] == "materials/thermo")
    assert sorted(d["material_id"] for d in thermo["documents"]) == sorted(ids)
    assert doc["endpoint"] == replay.endpoint and doc["db_version"] == "2025.09.25"
    # the client really asked the API: heartbeat, then the thermo route with our ids and fields
    paths = [p for _, p, _ in replay.requests]
    assert "/heartbeat" in paths and "/materials/thermo/" in paths and not replay.unknown
    thermo_query = next(q for _, p, q in replay.requests if p == "/materials/thermo/")
    assert set(",".join(thermo_query["material_ids"]).split(",")) == set(ids)
    assert "entries" in thermo_query["_fields"][0].split(",")

    assert mp.detect(blob[:8192], "mp-fetch.json")
    calcs = parse_blob(blob)["calculations"].to_pylist()
    assert len(calcs) == 10
    by_id = {c["material_id"]: c for c in calcs}
    for e in source:
        row = by_id[e["entry_id"]]
        assert row["energy"] == e["energy"]
        assert row["energy_correction"] == e["correction"]
        assert row["potcar_symbols"] == e["parameters"]["potcar_symbols"]
        assert row["run_type"] == "GGA"


def test_fetch_passes_criteria_to_the_api(replay):
    blob = mp.fetch({"chemsys": "Ga-N"}, api_key=API_KEY, endpoint=replay.endpoint, electronic=False)
    calcs = parse_blob(blob)["calculations"].to_pylist()
    # MP matches a chemical system exactly: only GaN (mp-804), not Ga or N2
    assert [(c["material_id"], c["reduced_formula"]) for c in calcs] == [("mp-804", "GaN")]
    assert [r["route"] for r in json.loads(blob)["responses"]] == ["materials/thermo"]


def test_cli_ingest_mp_query_keeps_the_api_response_as_the_raw_object(replay, entries_path, tmp_path):
    import subprocess
    import sys

    import matlake

    ids = [e["entry_id"] for e in json.loads(entries_path.read_text())]
    root = tmp_path / "lake"
    matlake.init(root).close()
    query = json.dumps({"material_ids": ids})
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "ingest", "mp", "--query", query,
                           "--api-key", API_KEY, "--endpoint", replay.endpoint, "--lake", str(root)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "1 new" in proc.stdout
    lake = matlake.open(root)
    assert lake.sql("select count(*) from calculations where material_id is not null").fetchone() == (10,)
    sha = lake.sql("select sha256 from ledger").fetchone()[0]
    raw = json.loads(lake.objects.get(sha))
    assert raw["endpoint"] == replay.endpoint  # the exact API response, byte for byte, is the provenance
    bad = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "ingest", "mp", "--query", "{not json",
                          "--lake", str(root)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "--query: expected JSON criteria" in bad.stderr


def _env_without_key(home) -> dict[str, str]:
    """The environment with no Materials Project key anywhere mp-api or pymatgen look."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MP_API_KEY", "PMG_MAPI_KEY", "MAPI_KEY", "PMG_CONFIG_FILE")}
    env["HOME"] = str(home)  # no ~/.config/.pmgrc.yaml or ~/.pmgrc.yaml there
    return env


def test_cli_ingest_mp_without_a_key_fails_before_any_request_and_says_how_to_set_it(replay, tmp_path):
    import subprocess
    import sys

    import matlake

    root = tmp_path / "lake"
    matlake.init(root).close()
    before = len(replay.requests)
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "ingest", "mp", "--query",
                           '{"chemsys": "Ga-N"}', "--endpoint", replay.endpoint, "--lake", str(root)],
                          capture_output=True, text=True, timeout=300, env=_env_without_key(tmp_path))
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matlake: error: no Materials Project API key")
    assert "export MP_API_KEY=" in lines[0] and "PMG_MAPI_KEY" in lines[0] and ".pmgrc.yaml" in lines[0]
    assert len(replay.requests) == before  # nothing reached the (local) API
    lake = matlake.open(root)
    assert lake.sql("select count(*) from ledger").fetchone() == (0,) and lake.last_snapshot() == 0


def test_the_key_in_pymatgen_settings_file_is_used_as_mp_api_does(replay, tmp_path):
    import subprocess
    import sys

    (tmp_path / ".config").mkdir()
    (tmp_path / ".config" / ".pmgrc.yaml").write_text(f"PMG_MAPI_KEY: {'k' * 32}\n")
    code = ("import sys; from matlake.ingest import mp; "
            "print(mp.resolve_api_key()); "
            f"blob = mp.fetch({{'chemsys': 'Ga-N'}}, endpoint={replay.endpoint!r}, electronic=False); "
            "print(len(blob) > 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_env_without_key(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["k" * 32, "True"]



# --- XAS through the materials/xas route ---------------------------------------------------

XAS_TASK = "mp-22526"  # the id the replay gives the shared LiCoO2 spectrum (the pymatgen file names none)


@pytest.fixture(scope="module")
def xas_replay():
    from mp_replay import xas_docs_from_spectrum

    with MPReplay(xas_docs_from_spectrum(sample("spectra", "LiCoO2_k_xanes.json"), XAS_TASK)) as server:
        yield server


def test_fetch_xas_asks_the_xas_route_and_parses_to_the_spectrum_and_its_structure(xas_replay):
    import warnings

    import numpy as np
    from pymatgen.analysis.xas.spectrum import XAS

    criteria = {"route": "xas", "formula": "LiCoO2", "absorbing_element": "Co", "edge": "K"}
    blob = mp.fetch(criteria, api_key=API_KEY, endpoint=xas_replay.endpoint)
    query = next(q for _, p, q in xas_replay.requests if p == "/materials/xas/")
    assert (query["formula"], query["absorbing_element"], query["edge"]) == (["LiCoO2"], ["Co"], ["K"])
    assert not xas_replay.unknown
    doc = json.loads(blob)
    assert [r["route"] for r in doc["responses"]] == ["materials/xas"] and doc["responses"][0]["criteria"] == criteria
    assert mp.detect(blob[:8192], "mp-fetch.json")  # the blob is the mp parser's, like every fetch blob
    tables = parse_blob(blob)
    assert set(tables) == {"spectra", "structures"}
    (row,) = tables["spectra"].to_pylist()
    raw = json.loads(sample("spectra", "LiCoO2_k_xanes.json").read_text())
    raw["absorbing_element"] = raw.pop("absorption_element")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = XAS.from_dict(raw)
    np.testing.assert_allclose(row["axis"], ref.x, rtol=1e-12, atol=0)
    np.testing.assert_allclose(row["intensity"], ref.y, rtol=1e-12, atol=0)
    assert (row["technique"], row["element"], row["edge"], row["source_kind"]) == ("xanes", "Co", "K", "computed")
    served = doc["responses"][0]["documents"][0]["task_id"]  # emmet writes the id in its current form
    assert row["source_locator"] == f"{served}-XANES-Co-K" and row["absorbing_site"] == 1
    (srow,) = tables["structures"].to_pylist()
    assert row["structure_id"] == srow["record_id"] and srow["material_id"] == served
    assert srow["reduced_formula"] == "LiCoO2"
    nothing = mp.fetch({"route": "xas", "formula": "NaCl"}, api_key=API_KEY, endpoint=xas_replay.endpoint)
    with pytest.raises(ParseError, match="the query matched nothing"):
        parse_blob(nothing)


def test_cli_ingest_mp_xas_commits_spectrum_and_structure(xas_replay, tmp_path):
    import subprocess
    import sys

    import matlake

    root = tmp_path / "lake"
    matlake.init(root).close()
    query = json.dumps({"route": "xas", "formula": "LiCoO2"})
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "ingest", "mp", "--query", query,
                           "--api-key", API_KEY, "--endpoint", xas_replay.endpoint, "--lake", str(root)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "1 new" in proc.stdout
    lake = matlake.open(root)
    assert lake.sql("select technique, element, edge, file_format from spectra").fetchall() == \
        [("xanes", "Co", "K", "mp-xas-json")]
    assert lake.sql("select count(*) from structures s join spectra x on x.structure_id = s.record_id").fetchone() \
        == (1,)
    lake.close()
