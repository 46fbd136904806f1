"""FEFF10 itself: one small, fast case through the compute module (kill -9 and resume, idempotence,
lineage), a FEFF failure recorded with its input kept, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("feff10", reason="FEFF10 is the optional extra 'feff'")
warnings.filterwarnings("ignore", module="pymatgen")

ROOT = Path(__file__).resolve().parents[1]
# A small, fast setting: first shell plus the Ni neighbours (FMS 3 A), coarse energy grid.
FAST = {"cluster_radius": 5.0, "overrides": {"FMS": [3.0, 0], "XANES": [3.0, 0.1, 0.5]}, "removed": ["SCF", "LDOS"]}


def fast_params():
    from matlake.models.feff.inputs import FeffParameters

    return FeffParameters.from_dict(FAST)


def nio_files(folder: Path, lattice: tuple[float, ...]) -> list[str]:
    from pymatgen.core import Lattice, Structure

    paths = []
    for a in lattice:
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        p = folder / f"NiO_a{a:.3f}.json"
        p.write_text(json.dumps(s.as_dict()))
        paths.append(str(p))
    return paths


def n_spectra(lake) -> int:
    try:
        return int(lake.sql("select count(*) from spectra", as_of=lake.last_snapshot()).fetchone()[0])
    except Exception:  # noqa: BLE001 - no spectra table before the first commit
        return 0


CHILD = """
import sys, json, matlake
from matlake.models.feff.compute import compute
from matlake.models.feff.inputs import FeffParameters
compute(matlake.open(sys.argv[1]), "Ni", FeffParameters.from_dict(json.loads(sys.argv[2])))
"""


@pytest.mark.slow
def test_kill_9_mid_run_resumes_without_recomputing_and_a_rerun_computes_nothing(tmp_path):
    import matlake
    from matlake.models.feff.compute import compute
    from matlake.platform.operations import doctor
    from matlake.platform.provenance import lineage

    lake = matlake.init(tmp_path / "lake")
    lake.ingest(nio_files(tmp_path, (4.177, 4.30)), progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "lake"), json.dumps(FAST)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while n_spectra(lake) < 1:
            assert child.poll() is None, "the FEFF job ended before its first site was committed"
            assert time.monotonic() < deadline, "no site committed within 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the job and FEFF's stage workers, mid-run
        child.wait()
    at_kill = n_spectra(lake)
    assert at_kill in (1, 2)
    rep = compute(lake, "Ni", fast_params())
    assert rep.skipped == at_kill and len(rep.computed) == 2 - at_kill and not rep.failed
    assert n_spectra(lake) == 2
    before = lake.last_snapshot()
    again = compute(lake, "Ni", fast_params())
    assert again.computed == [] and again.skipped == 2 and lake.last_snapshot() == before
    rows = lake.sql("select s.record_id, s.version, s.structure_id, s.axis, s.intensity, s.metadata_json, "
                    "l.value as ni_o from spectra s join spectrum_labels l on l.subject_id = s.record_id "
                    "and l.label = 'mean_ni_o_distance' order by ni_o").df()
    assert list(rows.version) == [1, 1]
    assert np.allclose(rows.ni_o, [4.177 / 2, 4.30 / 2])
    # Natoli's rule, from FEFF's own multiple scattering: the first resonance above the edge moves
    # to lower energy when the Ni-O distance grows, (E_peak - E_edge) R^2 roughly constant.  The peak
    # is where dmu/dE first changes sign after the edge (interpolated: FEFF's grid is in k steps).
    peaks = []
    for axis, mu in zip(rows.axis, rows.intensity):
        axis, mu = np.asarray(axis), np.asarray(mu)
        d = np.gradient(mu, axis)
        edge = int(np.argmax(d))
        i = next(j for j in range(edge, len(d) - 1) if d[j] > 0 >= d[j + 1])
        peaks.append(axis[i] + (axis[i + 1] - axis[i]) * d[i] / (d[i] - d[i + 1]) - axis[edge])
    assert peaks[1] < peaks[0]
    for rec in rows.itertuples():
        g = lineage(lake, rec.record_id, direction="up", max_fanout=100)
        assert any(rec.structure_id in n[1] for n in g.reaches("record"))
        assert json.loads(rec.metadata_json)["input_sha256"] in {n[1] for n in g.reaches("object")}
    assert lake.objects.get(json.loads(rows.metadata_json[0])["input_sha256"]).startswith(b"* This FEFF.inp")
    assert doctor(lake).ok
    lake.close()


def test_a_feff_failure_is_recorded_with_its_log_and_input_and_not_retried_unless_asked(sqlite_lake, tmp_path):
    from matlake.models.feff.compute import compute

    sqlite_lake.ingest(nio_files(tmp_path, (4.177,)), progress=False)
    rep = compute(sqlite_lake, "Ni", fast_params(), stage_timeout=0.001)  # FEFF's first stage cannot finish
    assert rep.computed == [] and len(rep.failed) == 1
    assert "FEFF failed" in next(iter(rep.failed.values())) and "timed out" in next(iter(rep.failed.values()))
    acts = sqlite_lake.sql("select name, status, error, parameters_json, activity_id from activities "
                           "where kind = 'compute'").df()
    run = acts[acts.name == "feff"].iloc[0]
    assert run.status == "failed" and "NiO_a4.177.json" in run.error and "site 0" in run.error
    links = sqlite_lake.sql("select role, entity_kind, entity_id from catalog_links where activity_id = ?",
                            params=[run.activity_id]).df()
    used_objects = links[(links.role == "used") & (links.entity_kind == "object")].entity_id
    assert len(used_objects) == 1 and sqlite_lake.objects.get(used_objects.iloc[0]).startswith(b"* This FEFF.inp")
    assert n_spectra(sqlite_lake) == 0
    skipped = compute(sqlite_lake, "Ni", fast_params(), stage_timeout=0.001)
    assert skipped.skipped == 1 and not skipped.failed
    retried = compute(sqlite_lake, "Ni", fast_params(), stage_timeout=0.001, retry_failed=True)
    assert len(retried.failed) == 1


def test_cli_load_list_and_compute_skip(tmp_path, monkeypatch, capsys):
    from matlake.platform import cli

    assert "matlake.models.feff.cli" in cli.EXTENSIONS  # `matlake feff` is a registered command
    root = tmp_path / "lake"
    assert cli.main(["init", str(root)]) == 0
    assert cli.main(["feff", "load", "--lake", str(root)]) == 0
    out = capsys.readouterr().out
    assert "spectra loaded, 0 already there" in out
    assert cli.main(["feff", "list", "--lake", str(root)]) == 0
    assert "Ni" in capsys.readouterr().out
    assert cli.main(["feff", "compute", "--lake", str(root), "--quiet"]) == 0
    assert "0 spectra computed, 0 failed" in capsys.readouterr().out
    assert cli.main(["feff", "compute", "--lake", str(root), "--edge", "Z9"]) != 0
    assert "edge: expected one of" in capsys.readouterr().err
