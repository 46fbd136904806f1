"""The EIS module inside the lake: ingest, analyze -> eis_* tables, SQL read-back, lineage, CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import sample

from matlake.models.eis.analysis import ANALYZER_NAME, ANALYZER_VERSION, EisAnalyzer, analyze
from matlake.platform.provenance import lineage

CIRCUIT = "R0-p(R1,C1)-p(R2-Wo1,C2)"
TUTORIAL_GUESS = [0.01, 0.01, 100, 0.01, 0.05, 100, 1]
# impedance.py getting-started tutorial (exampleData.csv, inductive points dropped)
PUBLISHED = {"R0": 1.65e-2, "R1": 8.68e-3, "C1": 3.32, "R2": 5.39e-3, "Wo1_Z0": 6.31e-2, "Wo1_tau": 233, "C2": 0.220}
POINTS = {
    "impedancepy_exampleData.csv": 66,
    "impedancepy_exampleDataParstat.txt": 31,
    "impedancepy_exampleDataAutolab.txt": 41,
    "impedancepy_exampleDataBioLogic.mpt": 43,
    "impedancepy_exampleDataGamry.DTA": 72,
    "impedancepy_Circuit3_EIS_1.z": 53,
}


def _ingest(lake, *names: str) -> None:
    report = lake.ingest([sample("eis", n) for n in names], progress=False)
    assert not report.failed, report.summary()


def _where(name: str) -> str:
    return f"source_name = '{name}'"


def test_six_sample_files_ingest_with_published_point_counts_and_capacitive_sign(lake):
    _ingest(lake, *POINTS)
    rows = lake.sql("select source_name, n_points, len(frequency), len(z_real), len(z_imag), "
                    "list_aggregate(z_imag, 'median') from impedance").fetchall()
    assert {r[0]: r[1] for r in rows} == POINTS
    for name, n, nf, nr, ni, median_imag in rows:
        assert nf == nr == ni == n, name
        assert median_imag < 0, f"{name}: capacitive spectra must store Z'' < 0"
    # exampleData's high-frequency tail is inductive: Im Z > 0 stored as positive
    n_pos = lake.sql("select len(list_filter(z_imag, lambda x: x > 0)) from impedance "
                     "where source_name = 'impedancepy_exampleData.csv'").fetchone()[0]
    assert n_pos == 9


def test_analyze_stores_kk_features_and_fit_that_sql_reads_back(lake):
    _ingest(lake, "impedancepy_exampleData.csv", "impedancepy_Circuit3_EIS_1.z", "impedancepy_exampleDataGamry.DTA")
    # exampleData: automatic initial guess from the features (no user values)
    rep = analyze(lake, where=_where("impedancepy_exampleData.csv"), circuit=CIRCUIT)
    assert rep.errors == {} and rep.n_subjects == 1
    assert rep.n_rows["eis_fits"] == rep.n_rows["eis_predicted"] == 1
    # Circuit3 with impedance.py's lin-KK settings (real fit, no series C), c = 0.69
    analyze(lake, where=_where("impedancepy_Circuit3_EIS_1.z"), c=0.69, fit_type="real", add_cap=False, drt=False)
    analyze(lake, where=_where("impedancepy_exampleDataGamry.DTA"), drt=False)

    m, mu = lake.sql("select v.m, v.mu from eis_validity v join impedance i on i.record_id = v.subject_id "
                     "where i.source_name = 'impedancepy_Circuit3_EIS_1.z'").fetchone()
    assert (m, round(mu, 6)) == (10, 0.684382)

    s = lake.sql("select * from eis_summary order by source_name").df().set_index("source_name")
    assert s.loc["impedancepy_exampleData.csv", "n_inductive_points"] == 9
    assert bool(s.loc["impedancepy_exampleData.csv", "inductive"])
    assert bool(s.loc["impedancepy_exampleData.csv", "kk_valid"])  # RMS KK residual < 1 %
    assert not bool(s.loc["impedancepy_exampleDataGamry.DTA", "inductive"])
    assert math.isnan(s.loc["impedancepy_exampleDataGamry.DTA", "series_inductance"])
    assert s.loc["impedancepy_exampleData.csv", "circuit"] == CIRCUIT

    idx = lake.sql("select inductive_indices, drt_peaks, len(drt_tau) = len(drt_gamma) from eis_features f "
                   "join impedance i on i.record_id = f.subject_id "
                   "where i.source_name = 'impedancepy_exampleData.csv'").fetchone()
    assert len(idx[0]) == 9 and idx[1] >= 1 and idx[2]

    values = dict(lake.sql("select name, value from eis_fit_parameters").fetchall())
    stderr = dict(lake.sql("select name, stderr from eis_fit_parameters").fetchall())
    for name in ("R0", "R1", "C1", "R2", "C2"):
        assert f"{values[name]:.3g}" == f"{PUBLISHED[name]:.3g}", name
    # Wo1: the tutorial's (6.31e-2, 233) is where curve_fit's default tolerances stop; the
    # converged minimum (6.37e-2, 238) is within one standard error of it.
    for name in ("Wo1_Z0", "Wo1_tau"):
        assert abs(values[name] - PUBLISHED[name]) < stderr[name], name
    fit = lake.sql("select n_points, n_excluded, success, n_identifiable, n_params, unidentifiable, "
                   "initial_guess_source, weighting, len(correlation), family_circuits from eis_fits").fetchone()
    assert fit[:5] == (57, 9, True, 7, 7) and fit[5] == []
    assert fit[6:9] == ("auto", "unit", 49) and fit[9] is None  # Wo: not an R/C family

    fr, zr, zi, fit_id = lake.sql("select p.frequency, p.z_real, p.z_imag, p.fit_id from eis_predicted p").fetchone()
    assert fit_id == lake.sql("select record_id from eis_fits").fetchone()[0]
    f_min, f_max = lake.sql("select f_min, f_max from impedance "
                            "where source_name = 'impedancepy_exampleData.csv'").fetchone()
    assert len(fr) == len(zr) == len(zi) > 100  # 20 per decade over the measured range
    assert (min(fr), max(fr)) == (pytest.approx(f_min, rel=1e-12), pytest.approx(f_max, rel=1e-12))
    # long form for cross-domain ML
    feats = dict(lake.sql("select feature, value from features f join impedance i on i.record_id = f.subject_id "
                          "where i.source_name = 'impedancepy_exampleData.csv' and f.subject_table = 'impedance' "
                          f"and f.featurizer = '{ANALYZER_NAME}'").fetchall())
    assert feats["n_inductive_points"] == 9 and feats["r_inf"] > 0 and "kk_mu" in feats


def test_rc_fit_stores_its_family_and_fitted_spectrum_matches_data(sqlite_lake):
    lake = sqlite_lake
    _ingest(lake, "impedancepy_exampleDataAutolab.txt")
    analyze(lake, circuit="R0-p(R1,C1)-p(R2,C2)", weighting="modulus", drt=False)
    fam, rel = lake.sql("select family_circuits, sqrt(chi_square / (2 * n_points)) from eis_fits").fetchone()
    assert len(fam) == 10 and "p(R0,R1-C1,R2-C2)" in fam and fam[0] == "R0-p(R1,C1)-p(R2,C2)"
    assert rel < 0.05  # RMS relative misfit under 5 %


def test_fit_lineage_reaches_raw_csv_and_rerun_adds_version_2(lake):
    path = sample("eis", "impedancepy_exampleData.csv")
    _ingest(lake, "impedancepy_exampleData.csv")
    rep = analyze(lake, circuit=CIRCUIT, initial=TUTORIAL_GUESS, drt=False)
    fit_id, subject, name, version, act = lake.sql(
        "select record_id, subject_id, featurizer, featurizer_version, activity_id from eis_fits").fetchone()
    assert (name, version, act) == (ANALYZER_NAME, ANALYZER_VERSION, rep.activity_id)
    g = lineage(lake, fit_id)
    import hashlib

    raw = hashlib.sha256(path.read_bytes()).hexdigest()
    assert ("object", raw) in g.reaches("object")
    assert ("record", subject) in g.reaches("record")
    params = lake.sql("select parameters_json from activities where activity_id = ?", params=[act]).fetchone()[0]
    assert '"initial": [0.01, 0.01, 100.0' in params and CIRCUIT in params

    # same analyzer version again: the same records get version 2; the views show the latest
    rep2 = analyze(lake, circuit=CIRCUIT, drt=False)
    rows = lake.sql("select version, initial_guess_source, activity_id from eis_fits_all where record_id = ? "
                    "order by version", params=[fit_id]).fetchall()
    assert [(v, s) for v, s, _ in rows] == [(1, "given"), (2, "auto")]
    assert rows[1][2] == rep2.activity_id
    assert lake.sql("select count(*), max(version) from eis_validity").fetchone() == (1, 2)
    assert lake.sql("select initial_guess_source from eis_fits").fetchone()[0] == "auto"


def test_analyzer_rejects_bad_input_naming_the_field():
    with pytest.raises(ValueError, match="weighting: expected one of"):
        EisAnalyzer(weighting="sqrt")
    with pytest.raises(ValueError, match="circuit|element|expected"):
        EisAnalyzer(circuit="R0-p(R1")
    row = {"subject_id": "x", "frequency": [1.0, 10.0, 100.0], "z_real": [1.0, 1.0], "z_imag": [-1.0, -1.0, -1.0]}
    with pytest.raises(ValueError, match="frequency, z_real, z_imag of equal length, found 3, 2, 3"):
        EisAnalyzer().featurize_one(row)


def test_failing_spectrum_is_reported_and_others_commit(sqlite_lake):
    lake = sqlite_lake
    _ingest(lake, "impedancepy_exampleDataAutolab.txt", "impedancepy_exampleData.csv")
    # a fit that cannot start (wrong number of initial values) fails per spectrum, not the run
    rep = analyze(lake, circuit="R0-p(R1,C1)", initial=[1.0, 2.0], drt=False)
    assert rep.n_subjects == 0 and len(rep.errors) == 2
    assert all("initial_guess" in m for m in rep.errors.values())
    status, error = lake.sql("select status, error from activities where activity_id = ?",
                             params=[rep.activity_id]).fetchone()
    assert status == "failed" and "initial_guess" in error


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("MATLAKE_LAKE", None)
    return subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_analyze_and_plot_write_summary_and_pngs(sqlite_lake, tmp_path):
    # SQLite only: the commands are catalog-agnostic and the PostgreSQL path is covered in-process above
    lake = sqlite_lake
    _ingest(lake, "impedancepy_exampleData.csv")
    where = str(lake.root)
    out = _cli("eis", "analyze", "--lake", where, "--circuit", CIRCUIT, "--no-drt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "impedancepy_exampleData.csv" in out.stdout and "True (9)" in out.stdout
    assert "snapshot 2" in out.stdout and "eis_fits 1" in out.stdout
    out = _cli("eis", "plot", "impedancepy_exampleData.csv", "--lake", where, "--out", str(tmp_path / "png"),
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name.split("_")[-1] for p in pngs] == ["bode.png", "nyquist.png"]
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000
    assert "with fit " + CIRCUIT in out.stdout
    bad = _cli("eis", "plot", "nope", "--lake", where, cwd=tmp_path)
    assert bad.returncode == 1 and "spectrum: expected" in bad.stderr


def test_cli_circuit_prints_identifiability_and_family(tmp_path):
    out = _cli("eis", "circuit", "R0-p(R1,R2)-C1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 of 4 parameters identifiable" in out.stdout and "unidentifiable: R0, R1, R2" in out.stdout
    out = _cli("eis", "circuit", "R0-p(R1,C1)-p(R2,C2)", cwd=tmp_path)
    assert "10 circuits with the same spectra" in out.stdout and "deg N = 2, deg D = 2" in out.stdout


def test_plot_figures_show_data_fit_and_residual_panel():
    from matlake.models.eis.plots import spectrum_figures

    f = np.logspace(-1, 4, 30)
    z = 10 + 100 / (1 + 2j * np.pi * f * 1e-3)
    nyq, bode = spectrum_figures(f, z, fit=(f, z), kk=(np.zeros(30), np.zeros(30)), kk_threshold=0.01)
    assert len(nyq.axes) == 2 and len(bode.axes) == 3
    assert len(nyq.axes[0].lines) >= 2  # data and fit
    np.testing.assert_allclose(nyq.axes[0].lines[0].get_ydata(), -z.imag)  # -Z'' upwards
    with pytest.raises(ValueError, match="z: expected the shape"):
        spectrum_figures(f, z[:-1])



def test_rerun_with_same_version_and_options_skips_analysed_spectra_unless_forced(sqlite_lake):
    lake = sqlite_lake
    _ingest(lake, "impedancepy_Circuit3_EIS_1.z")
    first = analyze(lake, drt=False)
    assert first.n_subjects == 1 and first.skipped == 0
    last = lake.last_snapshot()
    again = analyze(lake, drt=False)
    assert (again.snapshot, again.n_subjects, again.skipped) == (None, 0, 1)
    assert lake.last_snapshot() == last  # nothing committed
    other = analyze(lake, drt=True)  # other options: new work
    assert other.n_subjects == 1
    forced = analyze(lake, drt=False, force=True)
    assert forced.n_subjects == 1 and forced.skipped == 0
    assert lake.sql("select max(version) from eis_validity_all").fetchone()[0] == 3
    # a new version of the spectrum (e.g. a re-parse) is new work again
    from matlake.platform.lake import ChangeSet

    row = lake.sql("select * exclude (version, activity_id, schema_version, created_at) from impedance").arrow()
    cs = ChangeSet("correct")
    cs.add_rows("impedance", row, cs.activity("correct", "test"))
    lake.commit(cs)
    assert analyze(lake, drt=False).n_subjects == 1
