"""Probe-trajectory demo (matlake.models.scattering.ptycho): the forward model against numpy, the sanity check
on the measured siemens-star patterns (recorded positions fit better than perturbed ones), position recovery
on the measured frames, and the lake side (ingest → run → ptycho_runs/ptycho_positions linked to the series)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matlake.models.scattering import ptycho as pt
from tests.conftest import sample


SUBSET = ("imaging", "siemens_star_ptycho_subset.npz")


def _subset():
    with np.load(sample(*SUBSET)) as npz:
        return npz["data"], npz["scan"][npz["source_frames"]].astype(np.float64), npz["probe"]


def _smooth_object(shape, seed, cutoff=0.08):
    """A band-limited complex object (so a Fourier shift of it is exact)."""
    rng = np.random.default_rng(seed)
    k0 = np.fft.fftfreq(shape[0])[:, None]
    k1 = np.fft.fftfreq(shape[1])[None, :]
    low = np.exp(-(k0 ** 2 + k1 ** 2) / (2 * cutoff ** 2))
    phase = np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * low).real
    amp = np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * low).real
    return (1 + 0.3 * amp / amp.std()) * np.exp(1j * phase / phase.std())


def _gaussian_probe(n, sigma):
    y, x = np.mgrid[:n, :n] - n / 2 + 0.5
    return (np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) * np.exp(1j * 0.01 * (x ** 2 + y ** 2))).astype(np.complex64)


def test_forward_model_matches_numpy_at_integer_and_fractional_positions():
    n = 32
    probe = _gaussian_probe(n, 5.0)
    obj = _smooth_object((80, 90), seed=1)
    integer = np.array([[0.0, 0.0], [10.0, 7.0], [40.0, 50.0]])
    got = pt.simulate_patterns(obj, probe, integer)
    for (a, b), g in zip(integer.astype(int), got):
        want = np.abs(np.fft.fft2(probe * obj[a:a + n, b:b + n], norm="ortho")) ** 2
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6 * want.max())
    # fractional: the object shifted by f (exact for a band-limited object), then the patch at floor(r)
    frac = np.array([[10.3, 7.6], [20.75, 30.2]])
    got = pt.simulate_patterns(obj, probe, frac)
    k0 = np.fft.fftfreq(obj.shape[0])[:, None]
    k1 = np.fft.fftfreq(obj.shape[1])[None, :]
    for r, g in zip(frac, got):
        a, b = np.floor(r).astype(int)
        f = r - np.floor(r)
        shifted = np.fft.ifft2(np.fft.fft2(obj) * np.exp(2j * np.pi * (k0 * f[0] + k1 * f[1])))
        want = np.abs(np.fft.fft2(probe * shifted[a:a + n, b:b + n], norm="ortho")) ** 2
        # same up to the band-limit of the product (chirped Gaussian probe, smooth object): 3e-3 of the peak
        assert np.abs(g - want).max() < 3e-3 * want.max()
        # and the sign of the shift matters: the opposite shift is far off
        wrong = np.fft.ifft2(np.fft.fft2(obj) * np.exp(-2j * np.pi * (k0 * f[0] + k1 * f[1])))
        far_off = np.abs(np.fft.fft2(probe * wrong[a:a + n, b:b + n], norm="ortho")) ** 2
        assert np.abs(g - far_off).max() > 10 * np.abs(g - want).max()


def _star(shape, spokes=24):
    """A Siemens-star phase/absorption object (sharp spokes, ~1 px edges), like the measured sample."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    y, x = y - shape[0] / 2, x - shape[1] / 2
    s = (np.sin(spokes * np.arctan2(y, x)) > 0) * (np.hypot(x, y) < min(shape) / 2 - 2)
    k2 = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.fftfreq(shape[1])[None, :] ** 2
    s = np.fft.ifft2(np.fft.fft2(s.astype(float)) * np.exp(-2 * np.pi ** 2 * 0.8 ** 2 * k2)).real
    return np.exp(1j * s) * (1 - 0.3 * s)


@pytest.mark.slow
def test_positions_recovered_on_simulated_star_with_the_measured_probe():
    """Known truth: 25 patterns of a star object with the measured probe (central 64 px), jittered raster
    (8 px steps), start perturbed by 2 px per axis: the recovered positions are within 0.5 px."""
    _, _, probe = _subset()
    probe = probe[32:96, 32:96].copy()
    grid = np.arange(5) * 8.0
    true = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    true = true + np.random.default_rng(1).uniform(-1, 1, true.shape)
    true -= true.min(axis=0) - 2
    obj = _star((int(true.max()) + 64 + 4,) * 2)
    data = pt.simulate_patterns(obj, probe, true) * 100
    start = pt.perturb_positions(true, 2.0, seed=0)
    before = pt.position_rmse(start, true)
    res = pt.recover_positions(data, probe, start, pt.PtychoConfig(iterations=40, warmup=10, search_every=5,
                                                                    margin=4))
    after = pt.position_rmse(res.positions, true)
    assert before == pytest.approx(2.51, abs=0.01)
    assert after < 0.5, (before, after)  # measured 0.15 px
    assert res.loss_history[-1] < 0.05 * res.loss_history[0]
    assert np.allclose(res.positions.mean(axis=0), start.mean(axis=0))  # the translation gauge


@pytest.mark.slow
def test_recorded_positions_fit_the_measured_patterns_better_than_perturbed_ones():
    data, scan, probe = _subset()
    start = pt.perturb_positions(scan, 3.0, seed=0)
    assert pt.position_rmse(start, scan) == pytest.approx(4.02, abs=0.01)  # the seeded start
    recorded = pt.reconstruct_object(data, probe, scan, iterations=25).loss_history
    perturbed = pt.reconstruct_object(data, probe, start, iterations=25).loss_history
    assert recorded[0] == pytest.approx(perturbed[0], rel=1e-3)  # same flat start
    assert recorded[-1] < 0.97 * perturbed[-1], (recorded[-1], perturbed[-1])  # measured: 2.33 vs 2.48


def test_rmse_removes_only_the_mean_difference():
    ref = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    assert pt.position_rmse(ref + [3.0, -2.0], ref) == pytest.approx(0.0, abs=1e-12)
    moved = ref.copy()
    moved[0] += [3.0, 0.0]
    # the mean difference (1, 0) is removed: errors (2, 0), (-1, 0), (-1, 0)
    assert pt.position_rmse(moved, ref) == pytest.approx(np.sqrt((4 + 1 + 1) / 3), rel=1e-12)
    assert pt.position_rmse(moved, ref, align_mean=False) == pytest.approx(np.sqrt(3.0), rel=1e-12)
    a = pt.perturb_positions(ref, 2.0, seed=5)
    assert np.allclose(a, pt.perturb_positions(ref, 2.0, seed=5)) and np.allclose((a - ref).mean(axis=0), 0)


@pytest.mark.slow
def test_lake_run_commits_positions_and_summary_linked_to_the_series(sqlite_lake):
    from matlake.models.scattering.ptycho_lake import recover_series

    lake = sqlite_lake
    path = sample(*SUBSET)
    report = lake.ingest([path], kind="scattering", progress=False,
                         options={"positions": "scan", "positions_select": "source_frames", "probe": "probe",
                                  "calibration": "none"})
    assert report.outcomes[0].status == "ok", report.outcomes[0].message
    sid = lake.sql("select record_id from scattering_series").fetchone()[0]
    cfg = pt.PtychoConfig(iterations=5, warmup=2, search_every=0, position_lr=0.1)  # small: the full run is in bench/
    rep = recover_series(lake, sid, sigma_px=3.0, seed=0, config=cfg, sanity_iterations=0)
    assert rep.snapshot is not None and rep.rmse_before_px == pytest.approx(4.02, abs=0.01)
    run = lake.sql("select * from ptycho_runs").arrow().to_pylist()
    assert len(run) == 1 and run[0]["record_id"] == rep.run_id and run[0]["series_id"] == sid
    assert run[0]["iterations"] == 5 and json.loads(run[0]["assumptions_json"])["probe"].startswith("known")
    rows = lake.sql("select * from ptycho_positions order by frame_index").arrow().to_pylist()
    _, scan, _ = _subset()
    assert [r["frame_index"] for r in rows] == list(range(64))
    assert np.allclose([[r["recorded_y"], r["recorded_x"]] for r in rows], scan)
    # per-frame errors and the summary RMSE agree
    errors = np.array([r["error_px"] for r in rows])
    assert np.sqrt((errors ** 2).mean()) == pytest.approx(run[0]["rmse_after_px"], rel=1e-9)
    starts = np.array([r["start_error_px"] for r in rows])
    assert np.sqrt((starts ** 2).mean()) == pytest.approx(run[0]["rmse_before_px"], rel=1e-9)
    used = lake.sql("select entity_id, entity_version, table_name from links where activity_id = ? and role = 'used'",
                    params=[rep.activity_id]).fetchall()
    assert {(e, v, t) for e, v, t in used} == {(sid, 1, "scattering_series")}
    again = recover_series(lake, sid, sigma_px=3.0, seed=0, config=cfg, sanity_iterations=0)
    assert again.already and again.run_id == rep.run_id


def test_cli_registers_ptycho_under_scattering():
    import argparse

    from matlake.models.scattering import cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    cli.register(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["scattering", "ptycho", "abc123", "--sigma", "2", "--iterations", "50"])
    assert (args.series_id, args.sigma, args.iterations, args.func.__name__) == ("abc123", 2.0, 50, "cmd_ptycho")
