"""8 ingest + 4 query + 1 train/predict processes on one lake, SQLite and PostgreSQL catalogs.

The ingesters get overlapping, shuffled subsets of a folder of synthetic EIS
files (with byte-identical copies under other names), so they race to commit
the same contents; the ledger's unique key decides and the loser drops them.
Query processes check at every snapshot they see that the impedance rows equal
the records the ok ledger lists (snapshot isolation); the trainer trains and
predicts with the composition regressor while all this runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sample

import matlake
from matlake.platform.operations import doctor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import file_shas, reconcile, write_eis_files, write_ingest_lists  # noqa: E402

pytestmark = pytest.mark.slow
WORKERS = Path(__file__).resolve().parent / "workers.py"
N_INGEST, N_QUERY = 8, 4


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKERS), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrent_ingest_query_train_loses_and_duplicates_nothing(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    root = tmp_path / "lake"
    lake = matlake.init(root, catalog=url)
    seeded = lake.ingest([sample("dft", "MP_stable_entries_Mg_Ga_N.json"),
                          sample("dft", "MAPbI3_mp-977013_symmetrized.cif")], progress=False)
    assert seeded.new == 2  # calculations to train on, a structure to predict for
    files = write_eis_files(tmp_path / "src", 0, 240, duplicates=24)
    lists = write_ingest_lists(files, tmp_path, N_INGEST, 90, seed=7)
    stop = tmp_path / "stop"
    t0 = time.time()
    readers = [_spawn("query", str(root), str(stop)) for _ in range(N_QUERY)]
    trainer = _spawn("train", str(root), str(stop))
    ingesters = [_spawn("ingest", str(root), str(lf), str(b)) for lf, b in zip(lists, [1, 2, 3, 4, 5, 8, 13, 21])]
    results = {}
    try:
        for name, procs in (("ingest", ingesters), ("query", readers), ("train", [trainer])):
            if name != "ingest":
                stop.touch()
            for k, p in enumerate(procs):
                out, err = p.communicate(timeout=400)
                assert p.returncode == 0, f"{name} process {k} exited {p.returncode}: {err[-3000:]}"
                assert "locked" not in err.lower() and "deadlock" not in err.lower(), err[-3000:]
                results.setdefault(name, []).append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in ingesters + readers + [trainer]:
            if p.poll() is None:
                p.kill()
    elapsed = time.time() - t0
    lake.close()
    lake = matlake.open(str(root))
    figures = reconcile(lake)
    distinct = file_shas(tmp_path / "src")
    ledger_shas = {r[0] for r in lake.sql("select sha256 from ledger where parser like 'eis-%'").fetchall()}
    assert ledger_shas == distinct  # every distinct content once, nothing else
    assert figures["records"] == len(distinct) and figures["failed"] == 0
    new_total = sum(r["new"] for r in results["ingest"])
    assert new_total == len(distinct)  # the ingesters' own reports agree with the ledger
    assert sum(r["unchanged"] for r in results["ingest"]) == sum(len(lf.read_text().splitlines()) for lf in lists) - new_total
    assert all(r["queries"] > 0 for r in results["query"])
    assert results["train"][0]["models"] >= 1 and results["train"][0]["predictions"] >= 1
    n_models = lake.sql("select count(*) from model_versions").fetchone()[0]
    assert n_models == results["train"][0]["models"]
    rep = doctor(lake)
    assert rep.ok, rep.problems
    snapshots = lake.last_snapshot()
    lake.close()
    print(f"\nconcurrency ({backend}): {N_INGEST} ingest + {N_QUERY} query + 1 train processes, "
          f"{len(files)} files ({len(distinct)} distinct), {snapshots} snapshots, {figures['records']} records, "
          f"{sum(r['commits'] for r in results['ingest'])} ingest commits, "
          f"{sum(r['queries'] for r in results['query'])} queries, {results['train'][0]['models']} models, "
          f"{elapsed:.1f} s")
