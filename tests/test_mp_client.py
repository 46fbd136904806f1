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
from matlake.ingest.base import ParseContext

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

