"""Spectra processing: larch-equivalent normalisation, broadening, alignment, pipelines through a lake, CLI, plots.

xraylarch is the reference for the pre-edge normalisation (both shared XDI
files); scipy's Voigt profile for Lorentzian broadening; planted shifts and
widths on generated spectra for the rest.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from matlake.models.spectra.grids import BUILTIN_GRIDS
from matlake.models.spectra.normalization import find_e0, pre_edge
from matlake.models.spectra.processing import (
    GridCoverageError, Pipeline, SpectrumProcessor, Step, add_grid, align_to_reference, broaden, builtin_pipeline,
    grid_points, list_grids, max_normalize, normalize_pipeline, process, run_pipeline, xanes_study_pipeline,
)
from tests.conftest import sample

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def read_xdi(name: str) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(energy in eV, mutrans, header fields) of a shared XDI file, read with numpy."""
    path = sample("spectra", name)
    header: dict[str, str] = {}
    labels: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        key, sep, value = text.partition(":")
        if sep and "." in key:
            header[key.strip()] = value.strip()
        elif text and not text.startswith(("-", "/")):
            labels = text.split()
    data = np.loadtxt(path, comments="#")
    return data[:, 0], data[:, labels.index("mutrans")], header


def gaussian(x: np.ndarray, center: float, fwhm: float, area: float = 1.0) -> np.ndarray:
    sigma = fwhm / FWHM_PER_SIGMA
    return area * np.exp(-0.5 * ((x - center) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def measured_fwhm(x: np.ndarray, y: np.ndarray) -> float:
    """FWHM of a single peak, from the half-maximum crossings (linear interpolation)."""
    top = int(np.argmax(y))
    half = y[top] / 2.0
    left = np.flatnonzero(y[:top] < half)[-1]
    right = top + np.flatnonzero(y[top:] < half)[0]
    xl = np.interp(half, [y[left], y[left + 1]], [x[left], x[left + 1]])
    xr = np.interp(half, [y[right], y[right - 1]], [x[right], x[right - 1]])
    return float(xr - xl)


# --------------------------------------------------------------------------- normalisation vs xraylarch


@pytest.fixture(scope="module")
def larch_pre_edge():
    from larch import Group
    from larch.xafs import pre_edge as larch_pe

    def run(energy: np.ndarray, mu: np.ndarray, **kws):
        g = Group(energy=np.array(energy), mu=np.array(mu))
        larch_pe(g, **kws)
        return g

    return run


@pytest.mark.parametrize("name", ["cu_metal_rt.xdi", "ni_metal_rt.xdi"])
def test_pre_edge_matches_larch_on_shared_xdi(name, larch_pre_edge):
    energy, mu, _ = read_xdi(name)
    ref = larch_pre_edge(energy, mu)
    ours = pre_edge(energy, mu)
    assert abs(ours.e0 - ref.e0) <= 0.5
    assert ours.edge_step == pytest.approx(ref.edge_step, rel=0.01)
    # the same rules give the same numbers: normalised and flattened spectra agree to 1e-9
    assert np.max(np.abs(ours.norm - ref.norm)) < 1e-9
    assert np.max(np.abs(ours.flat - ref.flat)) < 1e-9
    assert np.max(np.abs(ours.post_edge - ref.post_edge)) < 1e-9
    d = ref.pre_edge_details
    assert (ours.pre1, ours.pre2, ours.norm1, ours.norm2, ours.nnorm) == (d.pre1, d.pre2, d.norm1, d.norm2, d.nnorm)
    assert ours.pre_slope == pytest.approx(d.pre_slope, rel=1e-9)
    # physical sanity: a K edge of a metal foil, normalised step of 1 just above E0
    assert {"cu_metal_rt.xdi": 8979.0, "ni_metal_rt.xdi": 8333.0}[name] == pytest.approx(ours.e0, abs=3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # larch's energy step of a 100-point spectrum is NaN
def test_pre_edge_matches_larch_with_explicit_ranges_noise_and_a_computed_spectrum(larch_pre_edge):
    energy, mu, _ = read_xdi("ni_metal_rt.xdi")
    kws = dict(pre1=-150.0, pre2=-40.0, norm1=50.0, norm2=600.0, nnorm=1)
    ref = larch_pre_edge(energy, mu, **kws)
    ours = pre_edge(energy, mu, **kws)
    assert ours.e0 == pytest.approx(ref.e0, abs=1e-9) and ours.edge_step == pytest.approx(ref.edge_step, rel=1e-9)
    rng = np.random.default_rng(7)
    for _ in range(3):
        noisy = mu + rng.normal(0, 0.003, mu.size)
        ref, ours = larch_pre_edge(energy, noisy), pre_edge(energy, noisy)
        assert abs(ours.e0 - ref.e0) <= 0.5 and ours.edge_step == pytest.approx(ref.edge_step, rel=0.01)
    # a computed XANES (100 points, irregular steps, little pre-edge): the smoothing pass and short ranges
    data = json.loads(sample("spectra", "LiCoO2_k_xanes.json").read_text())
    x, y = np.asarray(data["x"], float), np.asarray(data["y"], float)
    ref, ours = larch_pre_edge(x, y), pre_edge(x, y)
    assert abs(ours.e0 - ref.e0) <= 0.5 and ours.edge_step == pytest.approx(ref.edge_step, rel=0.01)
    assert np.max(np.abs(ours.norm - ref.norm)) < 1e-6
    assert find_e0(x, y) == pytest.approx(ref.e0, abs=0.5)


def test_pre_edge_rejects_bad_input_naming_the_field():
    with pytest.raises(ValueError, match="field mu expected the length of energy"):
        pre_edge(np.arange(10.0), np.arange(9.0))
    with pytest.raises(ValueError, match="nnorm: expected a polynomial degree 0-5, found 7"):
        pre_edge(np.arange(50.0), np.arange(50.0), nnorm=7)


# --------------------------------------------------------------------------- broadening


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_broadening_adds_widths_in_quadrature_and_keeps_area(seed):
    rng = np.random.default_rng(seed)
    # non-uniform axis: steps grow along the spectrum, with jitter
    u = np.sort(rng.uniform(0, 1, 3000))
    x = 8300.0 + 100.0 * u**1.3
    w0, w = rng.uniform(1.0, 2.5), rng.uniform(1.5, 4.0)
    y = gaussian(x, 8350.0, w0, area=2.5)
    out = broaden(x, y, w, "gaussian")
    expected = math.hypot(w0, w)
    assert measured_fwhm(x, out) == pytest.approx(expected, rel=2e-3)
    assert np.trapezoid(out, x) == pytest.approx(np.trapezoid(y, x), rel=1e-3)
    assert np.max(np.abs(out - gaussian(x, 8350.0, expected, 2.5))) < 2e-3 * out.max()


def test_lorentzian_broadening_gives_scipy_voigt_and_its_fwhm():
    from scipy.special import voigt_profile

    x = 8300.0 + 100.0 * np.linspace(0, 1, 4001) ** 1.4
    sigma_ev = 0.3 / FWHM_PER_SIGMA
    y = gaussian(x, 8350.0, 0.3)
    out = broaden(x, y, 2.0, "lorentzian")
    ref = voigt_profile(x - 8350.0, sigma_ev, 1.0)  # Lorentzian half width 1 eV = FWHM 2 eV
    assert np.max(np.abs(out - ref)) < 1e-3 * ref.max()
    # area inside the range equals the Voigt's (the Lorentzian's tails leave the range)
    assert np.trapezoid(out, x) == pytest.approx(np.trapezoid(ref, x), rel=1e-4)
    narrow = broaden(x, gaussian(x, 8350.0, 0.02), 2.0, "lorentzian")
    assert measured_fwhm(x, narrow) == pytest.approx(2.0, abs=0.01)


def test_broadening_edges_stay_flat_and_zero_width_is_identity():
    x = np.concatenate([np.arange(8200.0, 8320.0, 5.0), np.arange(8320.0, 8400.0, 0.3)])
    for shape in ("gaussian", "lorentzian"):
        assert np.max(np.abs(broaden(x, np.full(x.size, 1.7), 3.0, shape) - 1.7)) < 1e-12
    step = np.where(x > 8350.0, 1.0, 0.0)
    out = broaden(x, step, 3.0, "lorentzian")
    # constant extension: far from the edge the ends keep their values (only the Lorentzian tail reaches them)
    assert out[0] == pytest.approx(0.0, abs=0.01) and out[-1] == pytest.approx(1.0, abs=0.04)
    assert np.array_equal(broaden(x, step, 0.0), step)
    with pytest.raises(ValueError, match="broadening shape: expected one of"):
        broaden(x, step, 1.0, "voigt")


# --------------------------------------------------------------------------- shift, alignment, max-normalisation


def _xanes(x: np.ndarray, e0: float) -> np.ndarray:
    return (np.arctan((x - e0) / 1.5) / np.pi + 0.5 + 0.6 * np.exp(-0.5 * ((x - e0 - 8) / 3) ** 2)
            + 0.2 * np.exp(-0.5 * ((x - e0 - 25) / 5) ** 2))


@pytest.mark.parametrize("seed,planted", [(0, 3.37), (1, -5.81), (2, 0.42), (3, 12.06)])
def test_alignment_recovers_a_planted_shift(seed, planted):
    rng = np.random.default_rng(seed)
    ref_x = np.arange(8250.0, 8500.0, 0.5)
    ref_y = _xanes(ref_x, 8333.0)
    # the spectrum to align: its edge sits `planted` eV too low, sampled on another, irregular axis
    x = np.sort(rng.uniform(8240.0, 8510.0, 700))
    y = 3.0 * _xanes(x, 8333.0 - planted) + 0.4  # scale and offset must not matter
    found = align_to_reference(x, y, ref_x, ref_y)
    assert found.shift_ev == pytest.approx(planted, abs=0.05)
    assert found.score > 0.99 and found.method == "derivative"


def test_alignment_of_the_measured_ni_spectrum_and_by_e0():
    energy, mu, _ = read_xdi("ni_metal_rt.xdi")
    moved = energy + 2.73  # the same measurement with a miscalibrated monochromator
    assert align_to_reference(moved, mu, energy, mu).shift_ev == pytest.approx(-2.73, abs=0.05)
    by_e0 = align_to_reference(moved, mu, energy, mu, method="e0")
    assert by_e0.shift_ev == pytest.approx(-2.73, abs=0.5) and by_e0.reference_e0 == pytest.approx(8331.5)
    with pytest.raises(ValueError, match="alignment method: expected"):
        align_to_reference(moved, mu, energy, mu, method="fourier")


def test_max_normalize_and_bad_input():
    assert np.array_equal(max_normalize(np.array([1.0, 4.0, 2.0])), [0.25, 1.0, 0.5])
    with pytest.raises(ValueError, match="positive finite maximum"):
        max_normalize(np.array([-1.0, -2.0]))


# --------------------------------------------------------------------------- pipelines (pure)


def test_xanes_study_pipeline_shifts_broadens_normalises_onto_the_ni_grid():
    # a "computed" Ni K spectrum 120 eV too low: one sharp white line at 8230 eV (FWHM 1 eV) over an edge
    x = np.arange(8180.0, 8290.0, 0.1)
    y = 0.2 * gaussian(x, 8230.0, 1.0) + 0.5 * (np.arctan((x - 8225.0) / 0.5) / np.pi + 0.5)
    pipeline = xanes_study_pipeline(shift_ev=120.0)
    assert [s.kind for s in pipeline.steps] == ["shift", "broaden", "max_normalize", "grid"]
    out = run_pipeline(pipeline, x, y)
    grid = BUILTIN_GRIDS["xanes-ni-k"]
    assert out.grid_name == "xanes-ni-k" and np.array_equal(out.axis, grid.array)
    assert out.intensity_quantity == "max-normalized" and out.intensity.max() == pytest.approx(1.0, abs=0.01)
    # the white line now sits at 8350 eV (grid step 0.4 eV)
    assert out.axis[int(np.argmax(out.intensity))] == pytest.approx(8350.0, abs=0.45)
    # the same steps by hand agree
    from matlake.models.spectra.processing import interpolate_to_grid

    by_hand = interpolate_to_grid(x + 120.0, max_normalize(broaden(x + 120.0, y, 3.0)), grid)
    assert np.allclose(out.intensity, by_hand, atol=1e-12)
    assert [s["step"] for s in out.steps] == ["shift", "broaden", "max_normalize", "grid"]


def test_pipeline_json_round_trip_and_validation():
    p = xanes_study_pipeline(120.0)
    assert Pipeline.from_json("xanes-study", p.to_json()) == p
    assert json.loads(p.to_json())[0] == {"step": "shift", "delta_ev": 120.0}
    assert builtin_pipeline("normalize", grid="xanes-ni-k").grid_name == "xanes-ni-k"
    with pytest.raises(ValueError, match="step: expected one of"):
        Step("smooth", {})
    with pytest.raises(ValueError, match="step broaden: missing parameter 'fwhm_ev'"):
        Step("broaden", {"shape": "gaussian"})
    with pytest.raises(ValueError, match="parameter delta_ev expected int/float, found 'a lot'"):
        Step("shift", {"delta_ev": "a lot"})
    with pytest.raises(ValueError, match="the grid step must be the last"):
        Pipeline("p", (Step("grid", {"grid": "xanes-ni-k"}), Step("max_normalize")))
    with pytest.raises(ValueError, match="pipeline: expected one of"):
        builtin_pipeline("nope")
    with pytest.raises(ValueError, match="field axis_unit expected 'eV' for the shift step, found 'nm'"):
        run_pipeline(p, np.arange(400.0, 500.0), np.ones(100), axis_unit="nm")
    with pytest.raises(ValueError, match="field axis expected strictly increasing values"):
        run_pipeline(p, np.array([1.0, 3.0, 2.0]), np.ones(3))
    with pytest.raises(KeyError, match="unknown grid 'nowhere'"):
        SpectrumProcessor(normalize_pipeline(grid="nowhere"))


def test_normalize_pipeline_records_the_larch_quantities():
    energy, mu, _ = read_xdi("ni_metal_rt.xdi")
    out = run_pipeline(normalize_pipeline(), energy, mu)
    ref = pre_edge(energy, mu)
    assert out.e0 == ref.e0 and out.edge_step == ref.edge_step and out.intensity_quantity == "normalized mu"
    slope, intercept = out.pre_edge_line
    e = energy
    post = slope * e + intercept + np.polynomial.polynomial.polyval(e - out.e0, out.post_edge_poly)
    assert np.allclose(post, ref.post_edge, atol=1e-9)
    assert out.steps[0]["resolved"]["pre1"] == -190.0
    flat = run_pipeline(normalize_pipeline(output="flat", grid="xanes-ni-k"), energy, mu)
    assert flat.intensity_quantity == "flattened mu" and flat.axis.size == 100


# --------------------------------------------------------------------------- through a lake


def _spectrum_row(name: str) -> dict:
    energy, mu, header = read_xdi(name)
    element = header.get("Element.symbol") or header.get("Scan.element")
    return {"record_id": f"xdi-{name}", "technique": "xas", "element": element, "edge": "K",
            "axis": energy.tolist(), "axis_unit": "eV", "axis_quantity": "energy", "intensity": mu.tolist(),
            "intensity_unit": "mu", "intensity_quantity": "mu", "n_points": int(energy.size),
            "axis_min": float(energy[0]), "axis_max": float(energy[-1]), "measurement_mode": "transmission",
            "source_kind": "measured", "sample": header.get("Sample.name"), "file_format": "xdi",
            "source_name": name}


def _commit_spectra(lake, rows: list[dict]) -> None:
    from matlake.platform.lake import ChangeSet

    cs = ChangeSet("ingest", "test spectra")
    cs.add_rows("spectra", rows, cs.activity("ingest", "test-xdi", "1"))
    lake.commit(cs)


def test_pipeline_through_a_lake_provenance_failures_and_reruns(lake):
    _commit_spectra(lake, [_spectrum_row("ni_metal_rt.xdi"), _spectrum_row("cu_metal_rt.xdi")])
    pipeline = xanes_study_pipeline(shift_ev=120.0)
    rep = process(lake, pipeline)
    # Ni (8133-9550 eV, +120) covers xanes-ni-k; Cu (8779 eV and up) does not: it fails, Ni commits
    assert rep.n_subjects == 1 and list(rep.errors) == ["xdi-cu_metal_rt.xdi"]
    msg = rep.errors["xdi-cu_metal_rt.xdi"]
    assert "grid xanes-ni-k" in msg and "starts 569 eV above the grid start 8330" in msg
    row = lake.sql("select * from spectra_processed").df().iloc[0]
    assert (row.subject_id, row.subject_version, row.pipeline, row.grid_name, row.n_points) == (
        "xdi-ni_metal_rt.xdi", 1, "xanes-study", "xanes-ni-k", 100)
    assert [s["step"] for s in json.loads(row.steps_json)] == ["shift", "broaden", "max_normalize", "grid"]
    energy, mu, _ = read_xdi("ni_metal_rt.xdi")
    assert np.allclose(row.intensity, run_pipeline(pipeline, energy, mu).intensity, atol=1e-12)
    status, params, name = lake.sql("select status, parameters_json, name from activities where activity_id = ?",
                                    params=[rep.activity_id]).fetchone()
    assert status == "partial" and name == "spectra-xanes-study"
    assert "xdi-cu_metal_rt.xdi" in json.loads(params)["errors"]
    used = lake.sql("select entity_id, entity_version from links where activity_id = ? and role = 'used'",
                    params=[rep.activity_id]).fetchall()
    assert used == [("xdi-ni_metal_rt.xdi", 1)]
    from matlake.platform.provenance import lineage

    assert ("record", "xdi-ni_metal_rt.xdi") in lineage(lake, row.record_id).reaches("record")

    # the same pipeline and parameters again: Ni is skipped, only the failed Cu is tried (and fails again)
    again = process(lake, pipeline)
    assert again.n_subjects == 0 and again.skipped == 1 and list(again.errors) == ["xdi-cu_metal_rt.xdi"]
    assert lake.sql("select count(*) from spectra_processed_all").fetchone()[0] == 1
    only_ni = process(lake, pipeline, where="element = 'Ni'")
    assert only_ni.snapshot is None and only_ni.skipped == 1
    # forced: a new version of the same record
    forced = process(lake, pipeline, where="element = 'Ni'", force=True)
    assert forced.n_subjects == 1
    assert lake.sql("select max(version), count(*) from spectra_processed_all").fetchone() == (2, 2)


def test_new_processing_version_and_new_spectrum_version_add_versions(sqlite_lake, monkeypatch):
    lake = sqlite_lake
    _commit_spectra(lake, [_spectrum_row("ni_metal_rt.xdi")])
    first = process(lake, normalize_pipeline())
    assert first.n_subjects == 1
    e0, step, line, poly = lake.sql("select e0, edge_step, pre_edge_line, post_edge_poly "
                                    "from spectra_processed").fetchone()
    assert e0 == 8331.5 and step == pytest.approx(2.526140722435687, rel=1e-9) and len(line) == 2 and len(poly) == 3
    monkeypatch.setattr(SpectrumProcessor, "version", "999")
    assert process(lake, normalize_pipeline()).n_subjects == 1
    monkeypatch.undo()
    assert process(lake, normalize_pipeline()).snapshot is None
    # a corrected spectrum (version 2) is new work
    row = _spectrum_row("ni_metal_rt.xdi")
    row["intensity"] = [2.0 * v for v in row["intensity"]]
    _commit_spectra(lake, [row])
    rep = process(lake, normalize_pipeline())
    assert rep.n_subjects == 1
    versions = lake.sql("select version, subject_version, edge_step from spectra_processed_all "
                        "order by version").fetchall()
    assert [(v, s) for v, s, _ in versions] == [(1, 1), (2, 1), (3, 2)]
    assert versions[2][2] == pytest.approx(2 * versions[0][2], rel=1e-9)
    # the flattened output is another record beside the normalised one, not a version of it
    assert process(lake, normalize_pipeline(output="flat")).n_subjects == 1
    assert lake.sql("select intensity_quantity, version from spectra_processed order by 1").fetchall() == [
        ("flattened mu", 1), ("normalized mu", 3)]


def test_user_grids_are_committed_listed_and_resolved_at_the_snapshot(sqlite_lake):
    lake = sqlite_lake
    _commit_spectra(lake, [_spectrum_row("ni_metal_rt.xdi")])
    points = grid_points(8300.0, 8400.0, step=0.5)
    assert points.size == 201 and points[-1] == 8400.0
    added = add_grid(lake, "ni-k-fine", points, element="Ni", edge="K", description="test grid")
    assert added["status"] == "added" and added["snapshot"] is not None
    assert add_grid(lake, "ni-k-fine", points, element="Ni", edge="K", description="test grid")["status"] == "unchanged"
    with pytest.raises(ValueError, match="exists with other points"):
        add_grid(lake, "ni-k-fine", grid_points(8300.0, 8400.0, n=11))
    with pytest.raises(ValueError, match="a built-in grid has this name"):
        add_grid(lake, "xanes-ni-k", points)
    grids = list_grids(lake)
    assert set(BUILTIN_GRIDS) | {"ni-k-fine"} == set(grids["name"])
    user = grids[grids["name"] == "ni-k-fine"].iloc[0]
    assert (user.points, user.step, user.source) == (201, 0.5, "user v1")

    rep = process(lake, normalize_pipeline(grid="ni-k-fine"))
    assert rep.n_subjects == 1
    grid_links = lake.sql("select entity_version from links where activity_id = ? and role = 'used' "
                          "and table_name = 'spectral_grids'", params=[rep.activity_id]).fetchall()
    assert grid_links == [(1,)]  # the user grid the pipeline read is linked as a used record
    axis = lake.sql("select axis from spectra_processed where grid_name = 'ni-k-fine'").fetchone()[0]
    assert np.array_equal(axis, points)
    # redefining the grid is new work (its digest is in the parameters); older snapshots keep the old grid
    before = lake.last_snapshot()
    assert add_grid(lake, "ni-k-fine", grid_points(8310.0, 8390.0, n=81), replace=True)["status"] == "replaced"
    assert process(lake, normalize_pipeline(grid="ni-k-fine")).n_subjects == 1
    assert len(lake.sql("select axis from spectra_processed where grid_name = 'ni-k-fine'").fetchone()[0]) == 81
    old = list_grids(lake, as_of=before)
    assert old[old["name"] == "ni-k-fine"].iloc[0].points == 201
    # a grid the spectrum does not reach fails that spectrum, naming the grid and the shortfall
    add_grid(lake, "far", grid_points(9000.0, 9700.0, n=50))
    bad = process(lake, normalize_pipeline(grid="far"))
    assert bad.snapshot is not None and bad.n_subjects == 0
    assert "grid far" in bad.errors["xdi-ni_metal_rt.xdi"] and "below the grid end 9700" in bad.errors[
        "xdi-ni_metal_rt.xdi"]


def test_align_step_uses_a_reference_spectrum_from_the_lake(sqlite_lake):
    lake = sqlite_lake
    reference = _spectrum_row("ni_metal_rt.xdi")
    moved = dict(reference, record_id="ni-miscalibrated", source_name="ni_moved.xdi",
                 axis=[e + 2.73 for e in reference["axis"]])
    _commit_spectra(lake, [reference, moved])
    steps = [{"step": "align", "reference": reference["record_id"]}, {"step": "normalize"}]
    rep = process(lake, Pipeline.from_json("aligned", json.dumps(steps)))
    assert rep.n_subjects == 2 and not rep.errors
    rows = {r: (e0, json.loads(st)) for r, e0, st in lake.sql(
        "select subject_id, e0, steps_json from spectra_processed").fetchall()}
    e0_ref, steps_ref = rows[reference["record_id"]]
    e0_moved, steps_moved = rows["ni-miscalibrated"]
    assert steps_moved[0]["resolved"]["shift_ev"] == pytest.approx(-2.73, abs=0.05)
    assert steps_ref[0]["resolved"]["shift_ev"] == pytest.approx(0.0, abs=0.05)
    assert e0_moved == pytest.approx(e0_ref, abs=0.5)
    params = json.loads(lake.sql("select parameters_json from activities where activity_id = ?",
                                 params=[rep.activity_id]).fetchone()[0])
    assert params["params"]["references"] == {reference["record_id"]: 1}
    # the reference is an input of every aligned spectrum: a used link, not only a parameter
    used = lake.sql("select entity_id, entity_version from links where activity_id = ? and role = 'used' "
                    "and table_name = 'spectra'", params=[rep.activity_id]).fetchall()
    assert (reference["record_id"], 1) in used and ("ni-miscalibrated", 1) in used
    bad = [{"step": "align", "reference": "no-such-spectrum"}]
    with pytest.raises(ValueError, match="found no spectrum 'no-such-spectrum'"):
        process(lake, Pipeline.from_json("bad", json.dumps(bad)))


# --------------------------------------------------------------------------- CLI and plots


def _run(capsys, *args: str) -> tuple[int, str, str]:
    from matlake.platform.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_normalize_process_grid_and_plot(sqlite_lake, tmp_path, capsys):
    lake = sqlite_lake
    _commit_spectra(lake, [_spectrum_row("ni_metal_rt.xdi"), _spectrum_row("cu_metal_rt.xdi")])
    where = str(lake.root)
    code, out, err = _run(capsys, "spectra", "normalize", "--lake", where)
    assert code == 0, err
    assert "8331.50" in out and "8980.50" in out and "2 spectra processed by normalize, 0 failed" in out
    code, out, _ = _run(capsys, "spectra", "normalize", "--lake", where)
    assert code == 0 and "nothing new: 2 spectra already processed" in out

    code, out, err = _run(capsys, "spectra", "process", "--pipeline", "xanes-study", "--shift", "120",
                          "--lake", where, "--strict")
    assert code == 1 and "FAILED xdi-cu_metal_rt.xdi: GridCoverageError: grid xanes-ni-k" in out
    assert "1 spectra processed by xanes-study, 1 failed" in out
    code, _, err = _run(capsys, "spectra", "process", "--pipeline", "xanes-study", "--lake", where)
    assert code == 1 and "expected --shift" in err
    steps = json.dumps([{"step": "broaden", "fwhm_ev": 1.0, "shape": "lorentzian"}, {"step": "max_normalize"}])
    code, out, err = _run(capsys, "spectra", "process", "--pipeline", "lor1", "--steps", steps, "--lake", where)
    assert code == 0 and "2 spectra processed by lor1" in out, err

    code, out, err = _run(capsys, "spectra", "grid", "add", "ni-edge", "--start", "8320", "--stop", "8360",
                          "--step", "0.25", "--element", "Ni", "--edge", "K", "--lake", where)
    assert code == 0 and "grid ni-edge added: 161 points 8320-8360 eV" in out, err
    code, out, _ = _run(capsys, "spectra", "grid", "list", "--lake", where)
    assert code == 0 and "ni-edge" in out and "eels-o-k" in out and "user v1" in out
    code, _, err = _run(capsys, "spectra", "grid", "add", "xanes-ni-k", "--start", "1", "--stop", "2", "--n", "5",
                        "--lake", where)
    assert code == 1 and "built-in grid" in err

    png = tmp_path / "ni.png"
    code, out, err = _run(capsys, "spectra", "plot", "ni_metal_rt.xdi", "--png", str(png), "--lake", where)
    assert code == 0 and "with normalisation" in out, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    rid = lake.sql("select record_id from spectra_processed where pipeline = 'xanes-study'").fetchone()[0]
    png2 = tmp_path / "proc.png"
    code, out, err = _run(capsys, "spectra", "plot", rid[:10], "--png", str(png2), "--lake", where)
    assert code == 0 and out.startswith("spectra_processed " + rid), err
    assert png2.stat().st_size > 20_000
    code, _, err = _run(capsys, "spectra", "plot", "nothing-like-this", "--png", str(png2), "--lake", where)
    assert code == 1 and "spectrum: expected" in err


def test_plot_figure_draws_raw_normalisation_and_processed_panels():
    from matlake.models.spectra.plots import spectrum_figure

    energy, mu, _ = read_xdi("ni_metal_rt.xdi")
    res = pre_edge(energy, mu)
    norm = {"e0": res.e0, "edge_step": res.edge_step, "pre_edge_line": [res.pre_slope, res.pre_intercept],
            "post_edge_poly": list(res.post_coefs), "shift": 0.0}
    fig = spectrum_figure(energy, mu, normalization=norm, processed=(energy, res.norm, "normalized"))
    top, bottom = fig.axes
    labels = [line.get_label() for line in top.get_lines()]
    assert labels[:3] == ["raw", "pre-edge line", "post-edge curve"] and labels[3].startswith("E0 = 8331.50")
    post = top.get_lines()[2].get_ydata()
    assert np.allclose(post, res.post_edge, atol=1e-9)
    assert np.allclose(bottom.get_lines()[0].get_ydata(), res.norm)
