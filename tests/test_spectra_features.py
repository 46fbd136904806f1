"""Spectrum featurizers: the pure kinds against per-spectrum numpy, the platform featurizers,
PCA as a model version, similarity search inside DuckDB, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import nnls

from matlake.models.spectra.features import (
    FEATURE_KINDS,
    cubic_windows,
    feature_matrix,
    gaussian_basis,
)
from matlake.models.spectra.grids import BUILTIN_GRIDS

GRID = BUILTIN_GRIDS["xanes-ni-k"].array  # 8330-8370 eV, 100 points
EELS_GRID = BUILTIN_GRIDS["eels-o-k"].array  # 528.9-562.1 eV at 0.2 eV


def edge_spectra(rng: np.random.Generator, n: int, grid: np.ndarray = GRID) -> np.ndarray:
    """Positive XANES-like spectra: an arctan edge at a random E0 plus a white line and noise."""
    e0 = rng.uniform(grid[0] + 10, grid[-1] - 15, n)[:, None]
    height = rng.uniform(0.5, 2.0, n)[:, None]
    edge = 0.5 + np.arctan((grid - e0) / 1.5) / math.pi
    white = height * np.exp(-0.5 * ((grid - e0 - 3.0) / 2.0) ** 2)
    return 0.02 + edge + white + rng.normal(0, 0.01, (n, len(grid))).clip(-0.015, None)


# ----------------------------------------------------------------------------- pure kinds


@pytest.mark.parametrize("seed", [0, 1])
def test_intensity_derivative_cdf_match_per_spectrum_numpy(seed):
    rng = np.random.default_rng(seed)
    Y = edge_spectra(rng, 40)
    X, names, unit = feature_matrix("intensity", GRID, Y)
    assert names is None and np.array_equal(X, Y) and X is not Y
    D, _, dunit = feature_matrix("derivative", GRID, Y, intensity_unit="counts")
    assert dunit == "counts/eV"
    C, _, cunit = feature_matrix("cdf", GRID, Y, intensity_unit="counts")
    assert cunit == ""
    for i, y in enumerate(Y):
        np.testing.assert_allclose(D[i], np.gradient(y, GRID), rtol=1e-12, atol=1e-12)
        ref = np.cumsum(y) / np.sum(y)
        assert np.max(np.abs(C[i] - ref)) <= 1e-12
        assert abs(C[i, -1] - 1.0) <= 1e-12
    # the derivative of a line is its slope, on an uneven grid too
    uneven = np.cumsum(rng.uniform(0.1, 0.5, 60)) + 500.0
    lines = 3.0 + 0.7 * uneven[None, :] * np.ones((2, 1))
    np.testing.assert_allclose(feature_matrix("derivative", uneven, lines)[0], 0.7, rtol=1e-9)


def test_cdf_refuses_negative_and_zero_spectra_naming_the_index():
    Y = edge_spectra(np.random.default_rng(3), 5)
    Y[3, 10] = -0.2
    with pytest.raises(ValueError, match=r"spectrum 3: cdf expects non-negative"):
        feature_matrix("cdf", GRID, Y)
    clipped, _, _ = feature_matrix("cdf", GRID, Y, negative="clip")
    y = Y[3].clip(0, None)
    assert np.max(np.abs(clipped[3] - np.cumsum(y) / y.sum())) <= 1e-12
    Y[3] = 0.0
    with pytest.raises(ValueError, match=r"spectrum 3: cdf expects a positive intensity sum, found 0"):
        feature_matrix("cdf", GRID, Y)
    Y[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"spectrum 1: expected finite intensities"):
        feature_matrix("intensity", GRID, Y)
    with pytest.raises(ValueError, match=r"unknown feature kind 'fft'"):
        feature_matrix("fft", GRID, Y)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) width; accepted: window"):
        feature_matrix("cubic", GRID, Y, width=3)
    with pytest.raises(ValueError, match=r"expected shape \(n_spectra, 100\)"):
        feature_matrix("cdf", GRID, Y[:, :50])


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussians_are_the_nnls_solution(seed):
    rng = np.random.default_rng(seed)
    Y = edge_spectra(rng, 30)
    # a few spectra whose unconstrained fit goes negative, so both paths are exercised
    Y[:5] = rng.uniform(0, 1, (5, len(GRID)))
    W, names, unit = feature_matrix("gaussians", GRID, Y, intensity_unit="")
    basis, centres, fwhm = gaussian_basis(GRID)
    assert W.shape == (30, 20) and len(names) == 20 and names[0] == "g01@8330"
    np.testing.assert_allclose(centres, np.linspace(8330, 8370, 20))
    assert fwhm == pytest.approx(40 / 19)
    # the FWHM really is the full width at half maximum of each basis function
    fine = np.linspace(8330, 8370, 40001)
    g = gaussian_basis(fine)[0][:, 10]
    above = fine[g >= 0.5]
    assert above[-1] - above[0] == pytest.approx(fwhm, abs=2e-3)
    assert (W >= 0).all()
    for i, y in enumerate(Y):
        ref, _ = nnls(basis, y)
        np.testing.assert_allclose(W[i], ref, atol=1e-8)
        # KKT conditions of NNLS, independent of any solver
        grad = basis.T @ (basis @ W[i] - y)
        assert np.all(grad > -1e-8)
        assert np.all(np.abs(grad[W[i] > 1e-10]) < 1e-8)


def test_gaussians_recover_planted_weights():
    basis, _, _ = gaussian_basis(GRID)
    rng = np.random.default_rng(7)
    planted = rng.uniform(0, 2, (6, 20)) * (rng.random((6, 20)) < 0.5)
    W, _, _ = feature_matrix("gaussians", GRID, planted @ basis.T)
    np.testing.assert_allclose(W, planted, atol=1e-8)


@pytest.mark.parametrize("grid", [GRID, EELS_GRID], ids=["xanes-ni-k", "eels-o-k"])
def test_cubic_matches_polyfit_per_window(grid):
    rng = np.random.default_rng(11)
    Y = edge_spectra(rng, 12, grid)
    X, names, unit = feature_matrix("cubic", grid, Y)
    windows = cubic_windows(grid)
    assert sum(len(w) for w in windows) == len(grid)
    assert all(len(w) >= 4 for w in windows)
    # window k holds the points in [E_first + 5k, E_first + 5(k+1)); the last one also takes the
    # grid end (8370 eV = 8330 + 8 * 5 eV would otherwise be a one-point window)
    for k, idx in enumerate(windows):
        upper = np.inf if k == len(windows) - 1 else grid[0] + 5 * (k + 1) - 1e-9
        inside = np.flatnonzero((grid >= grid[0] + 5 * k - 1e-9) & (grid < upper))
        assert np.array_equal(idx, inside)
    assert X.shape == (12, 4 * len(windows)) and len(names) == X.shape[1]
    assert unit == "eV^-k for ck"
    for i, y in enumerate(Y):
        for w, idx in enumerate(windows):
            u = grid[idx] - grid[idx[0]]
            ref = np.polyfit(u, y[idx], 3)[::-1]  # highest power first -> c0..c3
            np.testing.assert_allclose(X[i, 4 * w:4 * w + 4], ref, rtol=1e-7, atol=1e-9)
    # a cubic is reproduced exactly
    u = grid - grid[0]
    exact = feature_matrix("cubic", grid, (1 + 0.5 * u - 0.01 * u**2 + 0.001 * u**3)[None, :])[0]
    first = exact[0, :4]
    np.testing.assert_allclose(first, [1, 0.5, -0.01, 0.001], atol=1e-9)


def _ricker_reference(points: int, a: float) -> np.ndarray:
    """The Ricker wavelet exactly as SciPy < 1.15 defined ``scipy.signal.ricker``."""
    A = 2 / (np.sqrt(3 * a) * (np.pi**0.25))
    vec = np.arange(0, points) - (points - 1.0) / 2
    xsq = vec**2
    wsq = a**2
    return A * (1 - xsq / wsq) * np.exp(-xsq / (2 * wsq))


def test_cwt_matches_per_spectrum_convolution():
    rng = np.random.default_rng(5)
    Y = edge_spectra(rng, 8)
    X, names, unit = feature_matrix("cwt", GRID, Y, intensity_unit="counts")
    assert X.shape == (8, 10 * 100) and unit == "counts" and names[0] == "a1@8330" and names[100] == "a2@8330"
    for i, y in enumerate(Y):
        ref = np.stack([np.convolve(y, _ricker_reference(min(10 * a, len(y)), a), mode="same")
                        for a in range(1, 11)])
        np.testing.assert_allclose(X[i], ref.ravel(), rtol=1e-10, atol=1e-12)
    # a Ricker wavelet integrates to ~0: the CWT of a constant is ~0 away from the zero-padded ends
    flat = feature_matrix("cwt", GRID, np.ones((1, 100)), widths=[2])[0][0]
    assert np.max(np.abs(flat[20:80])) < 1e-3


def test_every_kind_is_deterministic_and_row_independent():
    rng = np.random.default_rng(9)
    Y = edge_spectra(rng, 10)
    for kind in FEATURE_KINDS:
        full = feature_matrix(kind, GRID, Y)[0]
        part = feature_matrix(kind, GRID, Y[3:6])[0]
        np.testing.assert_allclose(full[3:6], part, rtol=1e-12, atol=1e-12, err_msg=kind)


# ----------------------------------------------------------------------------- through a lake

RAW_AXIS = np.round(np.arange(8320.0, 8380.0 + 1e-9, 0.25), 9)  # covers xanes-ni-k with margin


def commit_spectra(lake, Y_raw: np.ndarray, *, samples=None, axis=RAW_AXIS, processed: bool = True,
                   grid: str = "xanes-ni-k", start: int = 0) -> tuple[list[str], list[str]]:
    """Commit generated `spectra` rows (and, when ``processed``, `spectra_processed` rows on
    ``grid`` made by interpolation) through derivation.commit_derived, as a generator and a
    processing step would; returns (spectra ids, processed ids)."""
    from matlake.models.base import derived_record_id
    from matlake.models.spectra.processing import interpolate_to_grid
    from matlake.platform import derivation

    ids = [derived_record_id("test-generator", str(start + i)) for i in range(len(Y_raw))]
    rows = [{
        "record_id": rid, "technique": "xanes", "element": "Ni", "edge": "K", "axis": axis.tolist(),
        "axis_unit": "eV", "axis_quantity": "energy", "intensity": y.tolist(), "intensity_unit": "mu",
        "intensity_quantity": "mu", "n_points": len(axis), "axis_min": float(axis[0]), "axis_max": float(axis[-1]),
        "source_kind": "generated", "code": "test generator", "sample": (samples or {}).get(i, f"s{i % 3}"),
    } for i, (rid, y) in enumerate(zip(ids, Y_raw))]
    derivation.commit_derived(lake, kind="generate", name="test-generator", version="1",
                              parameters={"n": len(rows), "start": start}, used={}, rows={"spectra": rows})
    if not processed:
        return ids, []
    g = BUILTIN_GRIDS[grid]
    versions = derivation.record_versions(lake, [("spectra", r) for r in ids], lake.last_snapshot())
    prows, pids = [], []
    for rid, y in zip(ids, Y_raw):
        pid = derived_record_id("test-interpolate", rid, grid)
        pids.append(pid)
        prows.append({"record_id": pid, "subject_id": rid, "subject_version": versions[("spectra", rid)],
                      "pipeline": "interp", "steps_json": "[]", "grid_name": grid, "axis": list(g.points),
                      "axis_unit": "eV", "intensity": interpolate_to_grid(RAW_AXIS if axis is RAW_AXIS else axis,
                                                                         y, g).tolist(),
                      "intensity_quantity": "normalized mu", "n_points": len(g)})
    derivation.commit_derived(lake, kind="process", name="test-interpolate", version="1", parameters={"grid": grid},
                              used=versions, rows={"spectra_processed": prows})
    return ids, pids


def raw_spectra(rng: np.random.Generator, n: int) -> np.ndarray:
    return edge_spectra(rng, n, RAW_AXIS)


def _features(lake, featurizer: str, **where) -> "object":
    cond = " and ".join(f"{k} = '{v}'" for k, v in where.items())
    return lake.sql(f"select * from spectrum_features where featurizer = '{featurizer}'"
                    + (f" and {cond}" if cond else "") + " order by spectrum_id").df()


def test_featurize_processed_idempotent_and_new_version(lake, monkeypatch):
    from matlake.models.spectra import featurize as fz

    rng = np.random.default_rng(21)
    Y = raw_spectra(rng, 6)
    ids, pids = commit_spectra(lake, Y)
    rep = fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    assert rep.errors == {} and rep.n_subjects == 6 and rep.n_rows == {"spectrum_features": 6}
    df = _features(lake, "cdf")
    assert list(df["spectrum_id"]) == sorted(ids) and set(df["subject_id"]) == set(pids)
    assert set(df["subject_table"]) == {"spectra_processed"} and set(df["grid_name"]) == {"xanes-ni-k"}
    assert set(df["unit"]) == {""} and set(df["featurizer_version"]) == {fz.FEATURES_VERSION}
    assert json.loads(df["params_json"][0]) == {"negative": "raise"}
    processed = lake.sql("select subject_id, intensity from spectra_processed order by subject_id").df()
    for vec, y in zip(df["vector"], processed["intensity"]):
        y = np.asarray(y)
        assert np.max(np.abs(np.asarray(vec) - np.cumsum(y) / y.sum())) <= 1e-12
    # the activity used every processed spectrum at its version
    used = lake.sql("select entity_id, entity_version, table_name from links where activity_id = ? "
                    "and role = 'used'", params=[rep.activity_id]).fetchall()
    assert {(e, v, t) for e, v, t in used} == {(p, 1, "spectra_processed") for p in pids}

    again = fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    assert again.snapshot is None and again.skipped == 6
    assert lake.sql("select count(*) from spectrum_features_all").fetchone()[0] == 6

    monkeypatch.setattr(fz.SpectrumFeaturizer, "version", "1.1")
    bumped = fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    assert bumped.n_subjects == 6 and bumped.skipped == 0
    versions = lake.sql("select record_id, max(version), count(*) from spectrum_features_all "
                        "group by record_id").fetchall()
    assert len(versions) == 6 and all(v == 2 and c == 2 for _, v, c in versions)
    assert set(_features(lake, "cdf")["featurizer_version"]) == {"1.1"}


def test_featurize_raw_spectra_interpolates_and_reports_shortfall(sqlite_lake):
    from matlake.models.spectra import featurize as fz
    from matlake.models.spectra.processing import interpolate_to_grid
    from matlake.platform.provenance import lineage

    lake = sqlite_lake
    rng = np.random.default_rng(4)
    Y = raw_spectra(rng, 4)
    ids, _ = commit_spectra(lake, Y, processed=False)
    short_axis = np.round(np.arange(8332.0, 8380.0 + 1e-9, 0.25), 9)  # starts 2 eV above the grid
    [short_id], _ = commit_spectra(lake, edge_spectra(rng, 1, short_axis), axis=short_axis, processed=False,
                                   start=100)
    rep = fz.featurize_spectra(lake, "derivative", "xanes-ni-k", source="spectra")
    assert set(rep.errors) == {short_id} and rep.n_subjects == 4
    msg = rep.errors[short_id]
    assert f"spectra {short_id}" in msg and "starts 2 eV above the grid start 8330" in msg
    df = _features(lake, "derivative")
    assert list(df["spectrum_id"]) == sorted(ids) and set(df["subject_table"]) == {"spectra"}
    assert set(df["unit"]) == {"1/eV"}  # intensity unit 'mu' is dimensionless
    grid = BUILTIN_GRIDS["xanes-ni-k"]
    for vec, y in zip(df["vector"], Y[np.argsort(ids)]):
        np.testing.assert_allclose(vec, np.gradient(interpolate_to_grid(RAW_AXIS, y, grid), grid.array),
                                   rtol=1e-12, atol=1e-12)
    # the activity is partial and names the failure; the feature's lineage reaches its spectrum
    status, params = lake.sql("select status, parameters_json from activities where activity_id = ?",
                              params=[rep.activity_id]).fetchone()
    assert status == "partial" and short_id in json.loads(params)["errors"]
    g = lineage(lake, df["record_id"][0])
    assert ("record", ids[0]) in g.reaches("record")
    # a user grid from spectral_grids works like a built-in one, and is linked as used
    from matlake.models.spectra.processing import add_grid

    coarse = np.linspace(8335.0, 8365.0, 31)
    added = add_grid(lake, "ni-k-coarse", coarse)
    rep = fz.featurize_spectra(lake, "intensity", "ni-k-coarse", source="spectra",
                               where=f"subject_id <> '{short_id}'")
    assert rep.errors == {} and rep.n_subjects == 4
    grid_links = lake.sql("select entity_id, entity_version from links where activity_id = ? "
                          "and table_name = 'spectral_grids'", params=[rep.activity_id]).fetchall()
    assert grid_links == [(added["record_id"], 1)]
    got = _features(lake, "intensity", grid_name="ni-k-coarse")
    np.testing.assert_allclose(np.stack(got["vector"]), [np.interp(coarse, RAW_AXIS, y) for y in Y[np.argsort(ids)]],
                               rtol=1e-12)
    # a grid that does not exist is refused before any work, naming the known grids
    with pytest.raises(KeyError, match="unknown grid 'nope'.*xanes-ni-k"):
        fz.featurize_spectra(lake, "cdf", "nope", source="spectra")


def test_real_xdi_through_ingest_normalize_featurize_similar(sqlite_lake):
    """ni_metal_rt.xdi and cu_metal_rt.xdi ingested and normalised onto xanes-ni-k by the processing
    step (Ni; the Cu K edge at 8979 eV does not cover the grid and stays out); normalised and
    flattened outputs get their own vectors and are never compared with each other."""
    from matlake.models.spectra import featurize as fz
    from matlake.models.spectra.processing import normalize_pipeline, process
    from matlake.platform.lake import LakeError
    from tests.conftest import sample

    lake = sqlite_lake
    lake.ingest([sample("spectra", "ni_metal_rt.xdi"), sample("spectra", "cu_metal_rt.xdi")])
    ni = lake.sql("select record_id from spectra where element = 'Ni'").fetchone()[0]
    process(lake, normalize_pipeline(grid="xanes-ni-k"), where="element = 'Ni'")
    process(lake, normalize_pipeline(grid="xanes-ni-k", output="flat"), where="element = 'Ni'")
    rep = fz.featurize_spectra(lake, "cdf", "xanes-ni-k", negative="clip")
    assert rep.errors == {} and rep.n_subjects == 2
    rows = lake.sql("select f.vector, p.intensity, p.intensity_quantity from spectrum_features f "
                    "join spectra_processed p on p.record_id = f.subject_id order by p.intensity_quantity").df()
    assert list(rows["intensity_quantity"]) == ["flattened mu", "normalized mu"]
    for vec, y in zip(rows["vector"], rows["intensity"]):
        y = np.clip(np.asarray(y), 0, None)
        assert np.max(np.abs(np.asarray(vec) - np.cumsum(y) / y.sum())) <= 1e-12
    with pytest.raises(LakeError, match=r"2 cdf vectors match") as err:
        fz.similar(lake, ni)
    with pytest.raises(LakeError, match=r"2 cdf vectors match"):  # the file name names the same spectrum
        fz.similar(lake, "ni_metal_rt.xdi")
    assert "(normalize, flattened mu)" in str(err.value) and "(normalize, normalized mu)" in str(err.value)
    # the normalised output of the only Ni spectrum has no other normalised vector to compare with
    norm_id = lake.sql("select record_id from spectra_processed "
                       "where intensity_quantity = 'normalized mu'").fetchone()[0]
    assert fz.similar(lake, norm_id).empty


def test_featurizer_contract_without_the_batch(sqlite_lake):
    """SpectrumFeaturizer run directly by modeling.featurize (one row at a time) writes the same
    vectors, and the batched path then finds the work done."""
    from matlake.models.spectra import featurize as fz
    from matlake.platform.modeling import featurize

    lake = sqlite_lake
    commit_spectra(lake, raw_spectra(np.random.default_rng(12), 4))
    rep = featurize(lake, fz.SpectrumFeaturizer("gaussians", "xanes-ni-k"))
    assert rep.n_subjects == 4 and rep.errors == {}
    Yp = np.stack(lake.sql("select intensity from spectra_processed order by subject_id").df()["intensity"])
    stored = np.stack(_features(lake, "gaussians")["vector"])
    np.testing.assert_allclose(stored, feature_matrix("gaussians", GRID, Yp)[0], rtol=1e-9, atol=1e-12)
    assert fz.featurize_spectra(lake, "gaussians", "xanes-ni-k").skipped == 4


def test_bad_processed_rows_fail_alone(sqlite_lake):
    """A row off the grid and a row with a negative intensity fail with their reasons; the batch goes on."""
    from matlake.models.base import derived_record_id
    from matlake.models.spectra import featurize as fz
    from matlake.platform import derivation

    lake = sqlite_lake
    rng = np.random.default_rng(6)
    ids, pids = commit_spectra(lake, raw_spectra(rng, 5))
    g = BUILTIN_GRIDS["xanes-ni-k"]
    y = edge_spectra(rng, 2)
    y[1, 7] = -0.05
    bad = [{"record_id": derived_record_id("test-bad", ids[i]), "subject_id": ids[i], "subject_version": 1,
            "pipeline": "bad", "steps_json": "[]", "grid_name": "xanes-ni-k",
            "axis": (g.array + (0.1 if i == 0 else 0.0)).tolist(), "axis_unit": "eV", "intensity": y[i].tolist(),
            "intensity_quantity": "normalized mu", "n_points": len(g)} for i in range(2)]
    short = dict(bad[1], record_id=derived_record_id("test-bad", ids[2]), subject_id=ids[2],
                 axis=list(g.points[:50]), intensity=list(y[0][:50]), n_points=50)
    derivation.commit_derived(lake, kind="process", name="test-bad", version="1", parameters={},
                              used={("spectra", i): 1 for i in ids[:3]},
                              rows={"spectra_processed": bad + [short]})
    messages = {
        bad[0]["record_id"]: "axis: expected the points of grid xanes-ni-k (8330-8370 eV), found points 0.1 eV "
                             "(RMS) away",
        bad[1]["record_id"]: f"spectra_processed {bad[1]['record_id']}: cdf expects non-negative intensities, "
                             "found minimum -0.05",
        short["record_id"]: "axis: expected the 100 points of grid xanes-ni-k, found 50 axis points and 50 "
                            "intensities",
    }
    rep = fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    assert rep.n_subjects == 5 and set(rep.errors) == set(messages)
    for rid, msg in messages.items():
        assert msg in rep.errors[rid]
    assert set(_features(lake, "cdf")["subject_id"]) == set(pids)
    # the same failures one row at a time (modeling.featurize without the batch)
    from matlake.platform.modeling import featurize

    one = featurize(lake, fz.SpectrumFeaturizer("cdf", "xanes-ni-k", where="pipeline = 'bad'"), force=True)
    assert one.n_subjects == 0 and all(msg in one.errors[rid] for rid, msg in messages.items())
    # with negative='clip' the negative row is featurized too (the off-grid and short ones still fail)
    clipped = fz.featurize_spectra(lake, "cdf", "xanes-ni-k", negative="clip", where="pipeline = 'bad'")
    assert clipped.n_subjects == 1 and set(clipped.errors) == {bad[0]["record_id"], short["record_id"]}


def test_gaussian_and_cubic_featurizers_store_names_and_units(sqlite_lake):
    from matlake.models.spectra import featurize as fz

    lake = sqlite_lake
    rng = np.random.default_rng(8)
    commit_spectra(lake, raw_spectra(rng, 3))
    fz.featurize_spectra(lake, "gaussians", "xanes-ni-k")
    fz.featurize_spectra(lake, "cubic", "xanes-ni-k", window=10.0)
    g = _features(lake, "gaussians")
    assert set(g["n_features"]) == {20} and list(g["feature_names"][0])[:2] == ["g01@8330", "g02@8332.11"]
    c = _features(lake, "cubic")
    assert set(c["n_features"]) == {16} and json.loads(c["params_json"][0]) == {"window": 10.0}
    assert set(c["unit"]) == {"eV^-k for ck"}
    Yp = np.stack(lake.sql("select intensity from spectra_processed order by subject_id").df()["intensity"])
    X, _, _ = feature_matrix("cubic", GRID, Yp, window=10.0)
    np.testing.assert_allclose(np.stack(c["vector"]), X, rtol=1e-12, atol=1e-12)


def _numpy_rank(Q: np.ndarray, X: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        d = 1 - (X @ Q) / (np.linalg.norm(X, axis=1) * np.linalg.norm(Q))
    else:
        d = np.linalg.norm(X - Q, axis=1)
    return d


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_similar_ranks_planted_duplicate_first_and_matches_numpy(sqlite_lake, metric):
    from matlake.models.spectra import featurize as fz

    lake = sqlite_lake
    rng = np.random.default_rng(13)
    Y = raw_spectra(rng, 30)
    Y[17] = Y[4] * 1.0 + rng.normal(0, 1e-4, Y.shape[1])  # a near-duplicate of spectrum 4
    ids, _ = commit_spectra(lake, Y)
    fz.featurize_spectra(lake, "intensity", "xanes-ni-k")
    out = fz.similar(lake, ids[4], k=10, feature="intensity", metric=metric)
    assert list(out.columns) == ["rank", "spectrum_id", "distance", "technique", "element", "sample", "subject_id"]
    assert out["spectrum_id"][0] == ids[17] and ids[4] not in set(out["spectrum_id"])
    assert list(out["rank"]) == list(range(1, 11)) and set(out["element"]) == {"Ni"}
    # the same ranking by numpy brute force over the stored vectors
    df = _features(lake, "intensity")
    X = np.stack(df["vector"])
    q = list(df["spectrum_id"]).index(ids[4])
    d = _numpy_rank(X[q], X, metric)
    order = [i for i in np.argsort(d, kind="stable") if i != q][:10]
    assert list(out["spectrum_id"]) == [df["spectrum_id"][i] for i in order]
    np.testing.assert_allclose(out["distance"], d[order], rtol=1e-9, atol=1e-12)
    # --where restricts the candidates
    only = fz.similar(lake, ids[4], k=50, feature="intensity", metric=metric, where="sample = 's0'")
    assert set(only["sample"]) == {"s0"} and len(only) == sum(1 for i in range(30) if i % 3 == 0 and i != 4)


def test_similar_errors_name_the_problem(sqlite_lake):
    from matlake.models.spectra import featurize as fz
    from matlake.platform.lake import LakeError

    lake = sqlite_lake
    ids, _ = commit_spectra(lake, raw_spectra(np.random.default_rng(2), 3))
    fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    with pytest.raises(LakeError, match="no spectrum, processed spectrum or feature vector with id 'ffffffffffff'"):
        fz.similar(lake, "ffffffffffff")
    with pytest.raises(LakeError, match=r"no cubic vector at snapshot \d+ \(its features: cdf on xanes-ni-k\)"):
        fz.similar(lake, ids[0], feature="cubic")
    with pytest.raises(ValueError, match="metric: expected one of cosine, l2"):
        fz.similar(lake, ids[0], metric="manhattan")
    # a unique prefix of the spectrum id is enough
    assert len(fz.similar(lake, ids[0][:10], k=5)) == 2
    with pytest.raises(LakeError, match="prefix of at least 8 characters"):
        fz.similar(lake, ids[0][:5])
    # a second output per spectrum (another intensity quantity) is compared only with its own kind
    from matlake.models.base import derived_record_id
    from matlake.platform import derivation

    orig = lake.sql("select record_id, subject_id, axis, intensity from spectra_processed").df()
    flat = [{"record_id": derived_record_id("test-flat", r.subject_id), "subject_id": r.subject_id,
             "subject_version": 1, "pipeline": "interp", "steps_json": "[]", "grid_name": "xanes-ni-k",
             "axis": list(r.axis), "axis_unit": "eV", "intensity": list(np.asarray(r.intensity) * 0.5 + 0.1),
             "intensity_quantity": "flattened mu", "n_points": 100} for r in orig.itertuples()]
    derivation.commit_derived(lake, kind="process", name="test-flat", version="1", parameters={},
                              used={("spectra", i): 1 for i in ids}, rows={"spectra_processed": flat})
    fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    with pytest.raises(LakeError, match="2 cdf vectors match"):
        fz.similar(lake, ids[0])
    first = orig["record_id"][list(orig["subject_id"]).index(ids[0])]
    near = fz.similar(lake, first, k=5)
    assert len(near) == 2 and set(near["subject_id"]) <= set(orig["record_id"])
    near_flat = fz.similar(lake, flat[list(orig["subject_id"]).index(ids[0])]["record_id"], k=5)
    assert len(near_flat) == 2 and set(near_flat["subject_id"]) <= {r["record_id"] for r in flat}


def test_pca_model_version_scores_and_lineage(sqlite_lake):
    from matlake.models.spectra import featurize as fz
    from matlake.platform.modeling import model_info, predict
    from matlake.platform.provenance import lineage

    lake = sqlite_lake
    rng = np.random.default_rng(17)
    ids, _ = commit_spectra(lake, raw_spectra(rng, 25))
    fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    snap = lake.last_snapshot()
    info = fz.fit_pca(lake, "cdf", "xanes-ni-k", 4)
    assert info.name == "pca-cdf-xanes-ni-k" and info.version == 1 and info.snapshot_id == snap
    assert "spectrum_features" in info.view_sql and info.n_train == 25
    cdf = _features(lake, "cdf")
    X = np.stack(cdf["vector"])
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    ratios = s**2 / np.sum(s**2)
    for k in range(4):
        assert info.metrics[f"explained_variance_ratio_{k + 1}"] == pytest.approx(ratios[k], rel=1e-9)
    obj = lake.sql("select media_type from objects where sha256 = ?", params=[info.artifact_sha256]).fetchone()
    assert obj is not None
    from matlake.models.base import artifact_format

    assert artifact_format(lake.objects.get(info.artifact_sha256)) == "skops"

    rep = fz.featurize_pca(lake, info.model_id)
    assert rep.errors == {} and rep.n_subjects == 25
    pca = _features(lake, "pca")
    assert set(pca["n_features"]) == {4} and list(pca["feature_names"][0]) == ["pc1", "pc2", "pc3", "pc4"]
    assert json.loads(pca["params_json"][0])["model_id"] == info.model_id
    assert set(pca["subject_table"]) == {"spectrum_features"} and set(pca["subject_id"]) == set(cdf["record_id"])
    assert list(pca["spectrum_id"]) == list(cdf["spectrum_id"])
    scores = Xc @ Vt[:4].T
    P = np.stack(pca["vector"])
    for k in range(4):  # a component is defined up to its sign
        sign = np.sign(P[:, k] @ scores[:, k])
        np.testing.assert_allclose(P[:, k], sign * scores[:, k], rtol=1e-7, atol=1e-10)
    # the score vector's lineage reaches, through the cdf vector, the spectrum
    g = lineage(lake, pca["record_id"][0])
    assert ("record", pca["spectrum_id"][0]) in g.reaches("record")
    # re-running with the same model adds nothing; the model name picks its latest version
    assert fz.featurize_pca(lake, "pca-cdf-xanes-ni-k").snapshot is None
    # predict: reconstruction RMSE of every vector from 4 components
    res = predict(lake, info.model_id)
    assert res["n"] == 25
    pred = lake.sql("select subject_id, value from predictions order by subject_id").df()
    back = Xc @ Vt[:4].T @ Vt[:4]
    rmse = dict(zip(cdf["record_id"], np.sqrt(np.mean((Xc - back) ** 2, axis=1))))
    np.testing.assert_allclose(pred["value"], [rmse[s] for s in pred["subject_id"]], rtol=1e-7, atol=1e-12)
    assert model_info(lake, "pca-cdf-xanes-ni-k").model_id == info.model_id
    # similarity on PCA scores works like any other feature
    near = fz.similar(lake, ids[0], feature="pca", model=info.model_id, metric="l2", k=3)
    assert len(near) == 3 and ids[0] not in set(near["spectrum_id"])


def test_pca_scores_lineage_reaches_the_model(sqlite_lake):
    """Needs modeling.featurize to record a featurizer's ``used_entities`` (the model) as used."""
    from matlake.models.spectra import featurize as fz
    from matlake.platform.provenance import lineage

    lake = sqlite_lake
    commit_spectra(lake, raw_spectra(np.random.default_rng(3), 6))
    fz.featurize_spectra(lake, "cdf", "xanes-ni-k")
    info = fz.fit_pca(lake, "cdf", "xanes-ni-k", 2)
    rep = fz.featurize_pca(lake, info.model_id)
    used = lake.sql("select entity_kind, entity_id from links where activity_id = ? and role = 'used' "
                    "and entity_kind = 'model'", params=[rep.activity_id]).fetchall()
    assert used == [("model", info.model_id)]
    rid = lake.sql("select record_id from spectrum_features where featurizer = 'pca' limit 1").fetchone()[0]
    assert ("model", info.model_id) in lineage(lake, rid).reaches("model")
    down = lineage(lake, info.model_id, direction="down")
    assert ("record", rid) in down.reaches("record", direction="down")


def test_cli_featurize_pca_similar(sqlite_lake, capsys):
    from matlake.platform.cli import main

    lake = sqlite_lake
    ids, _ = commit_spectra(lake, raw_spectra(np.random.default_rng(31), 12))
    root = str(lake.root)
    assert main(["spectra", "featurize", "--lake", root, "--feature", "cdf", "--grid", "xanes-ni-k"]) == 0
    out = capsys.readouterr().out
    assert "12 spectra featurized" in out and "cdf" in out
    assert main(["spectra", "featurize", "--lake", root, "--feature", "cdf", "--grid", "xanes-ni-k"]) == 0
    assert "nothing new: 12" in capsys.readouterr().out
    assert main(["spectra", "pca", "fit", "--lake", root, "--feature", "cdf", "--grid", "xanes-ni-k",
                 "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "pca-cdf-xanes-ni-k v1" in out and "explained variance" in out
    assert main(["spectra", "featurize", "--lake", root, "--feature", "pca", "--model", "pca-cdf-xanes-ni-k"]) == 0
    assert "12 spectra featurized" in capsys.readouterr().out
    assert main(["spectra", "similar", ids[0], "--lake", root, "--k", "4", "--metric", "l2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 5 and "spectrum_id" in out and ids[0][:8] in out
    assert main(["spectra", "similar", "0" * 31 + "f", "--lake", root]) == 1
    assert "no spectrum" in capsys.readouterr().err
    assert main(["spectra", "featurize", "--lake", root, "--feature", "pca"]) == 1
    assert "--model" in capsys.readouterr().err



def test_plot_features_draws_the_stored_vectors_of_a_spectrum(sqlite_lake, tmp_path, capsys):
    from matlake.models.spectra.featurize import featurize_spectra
    from matlake.models.spectra.plots import plot_features
    from matlake.platform.cli import main

    lake = sqlite_lake
    ids, _ = commit_spectra(lake, raw_spectra(np.random.default_rng(5), 3))
    with pytest.raises(ValueError, match="expected stored feature vectors, found none"):
        plot_features(lake, ids[0], tmp_path / "none.png")
    for kind in ("cdf", "gaussians"):
        featurize_spectra(lake, kind, "xanes-ni-k")
    out = plot_features(lake, ids[0], tmp_path / "all.png")
    assert out["features"] == ["cdf", "gaussians"] and out["png"].read_bytes()[:4] == b"\x89PNG"
    assert main(["spectra", "plot-features", ids[0], "--lake", str(lake.root), "--feature", "cdf",
                 "--png", str(tmp_path / "cdf.png")]) == 0
    assert "cdf" in capsys.readouterr().out and (tmp_path / "cdf.png").stat().st_size > 1000
