"""Disk configurations and the speckle simulator (matlake.models.scattering.disks / simulate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import j1

from matlake.models.scattering import simulate as S
from matlake.models.scattering.disks import (DiskConfiguration, DiskParams, continue_metropolis, draw_radii,
                                             make_configuration, outside_box, overlap_pairs, pair_distances)


@pytest.mark.parametrize("method", ["rsa", "mc"])
@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("poly", [0.0, 0.2])
def test_configurations_are_overlap_free(method, periodic, poly):
    p = DiskParams(box=40.0, radius=1.5, polydispersity=poly, area_fraction=0.35, periodic=periodic,
                   method=method, mc_sweeps=5, seed=3)
    cfg = make_configuration(p)
    assert cfg.n == p.count() > 0
    assert overlap_pairs(cfg.centers, cfg.radii, cfg.box, cfg.periodic) == []
    if periodic:
        assert np.all((cfg.centers >= 0) & (cfg.centers < cfg.box))
    else:
        assert outside_box(cfg.centers, cfg.radii, cfg.box).size == 0
    assert cfg.parameters["seed"] == 3 and cfg.parameters["method"] == method
    assert cfg.parameters["polydispersity"] == poly and cfg.parameters["periodic"] == periodic


def test_overlap_check_finds_overlaps_and_minimum_image():
    c = np.array([[0.5, 5.0], [9.8, 5.0], [5.0, 5.0]])
    r = np.array([0.5, 0.5, 0.5])
    assert overlap_pairs(c, r, 10.0, periodic=True) == [(0, 1)]  # 0.7 apart across the boundary
    assert overlap_pairs(c, r, 10.0, periodic=False) == []
    assert list(outside_box(c, r, 10.0)) == [1]


def test_same_seed_same_configuration_and_declared_densities():
    p = DiskParams(box=50.0, radius=1.0, polydispersity=0.15, number_density=0.05, seed=11, method="mc", mc_sweeps=3)
    a, b = make_configuration(p), make_configuration(p)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.radii, b.radii)
    c = make_configuration(DiskParams(**{**p.__dict__, "seed": 12}))
    assert not np.array_equal(a.centers, c.centers)
    assert a.n == round(0.05 * 50 ** 2) and a.number_density == pytest.approx(0.05, abs=0.5 / 2500)
    m = make_configuration(DiskParams(box=60.0, radius=1.2, area_fraction=0.3, seed=1))
    assert m.area_fraction == pytest.approx(0.3, abs=math.pi * 1.2 ** 2 / 60 ** 2)


def test_lognormal_radii_mean_and_polydispersity():
    r = draw_radii(np.random.default_rng(0), 200_000, 2.0, 0.2)
    assert r.mean() == pytest.approx(2.0, rel=3e-3)
    assert r.std() / r.mean() == pytest.approx(0.2, rel=1e-2)
    assert np.all(draw_radii(np.random.default_rng(0), 5, 2.0, 0.0) == 2.0)


def test_rsa_beyond_jamming_fails_with_a_clear_message():
    with pytest.raises(ValueError, match="random sequential addition placed only"):
        make_configuration(DiskParams(box=20.0, radius=1.0, area_fraction=0.62, max_attempts=3000, seed=0))


def test_monte_carlo_moves_every_disk_without_overlap():
    rsa = make_configuration(DiskParams(box=30.0, radius=1.0, area_fraction=0.4, seed=5))
    mc = make_configuration(DiskParams(box=30.0, radius=1.0, area_fraction=0.4, seed=5, method="mc", mc_sweeps=10))
    assert 0.2 < mc.stats["mc_acceptance"] < 0.95
    moved = np.hypot(*(((mc.centers - rsa.centers + 15) % 30 - 15).T))
    assert np.median(moved) > 0.3
    assert overlap_pairs(mc.centers, mc.radii, 30.0, True) == []


# ------------------------------------------------------------------ physics of the far field
def _airy(n, box, R):
    k = (np.arange(n) - n // 2) * 2 * np.pi / box
    q = np.hypot(k[None, :], k[:, None])
    qR = q * R
    amp = np.where(qR > 0, 2 * j1(qR) / np.where(qR > 0, qR, 1.0), 1.0)
    box_tf = np.sinc(k / (2 * np.pi))  # pixel-area average: sin(k px/2)/(k px/2), px = 1
    return (np.pi * R ** 2) ** 2 * amp ** 2 * (box_tf[None, :] * box_tf[:, None]) ** 2, qR


@pytest.mark.parametrize("R,center", [(6.3, (128.2, 127.7)), (9.0, (40.5, 200.25))])
def test_single_disk_far_field_is_the_airy_pattern(R, center):
    n = 256
    cfg = DiskConfiguration(centers=np.array([center]), radii=np.array([R]), box=float(n), periodic=True)
    rho = S.rasterize(cfg, n, supersample=8)
    assert rho.sum() == pytest.approx(np.pi * R ** 2, rel=2e-3)
    intensity = S.far_field(rho)
    expected, qR = _airy(n, float(n), R)
    sel = qR < 12  # the first three rings
    err = np.abs(intensity - expected)[sel].max() / expected.max()
    assert err < 4e-3
    # the ring minima lie where J1 vanishes: qR = 3.8317
    k = np.arange(n // 2)
    profile = intensity[n // 2, n // 2:]
    first_min = k[np.argmin(profile[: int(6 * n / (2 * np.pi * R))])]
    assert first_min * 2 * np.pi / n * R == pytest.approx(3.8317, abs=2 * np.pi / n * R)


def test_babinet_complement_scatters_the_same_off_axis():
    cfg = make_configuration(DiskParams(box=64.0, radius=3.0, area_fraction=0.2, seed=2))
    rho = S.rasterize(cfg, 64)
    a, b = S.far_field(rho), S.far_field(1.0 - rho)
    a[32, 32] = b[32, 32] = 0.0
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-9 * a.max())


def test_gaussian_probe_far_field_width():
    # |FT of exp(-r^2 / 2 s^2)|^2 is proportional to exp(-q^2 s^2)
    n, box, s = 128, 128.0, 6.0
    inten = S.far_field(S.gaussian_probe(n, box, s))
    q = S.q_radius(n, box)
    np.testing.assert_allclose(inten / inten[n // 2, n // 2], np.exp(-(q * s) ** 2), atol=1e-9)


def test_counts_mask_and_exact_regeneration():
    spec = S.SpeckleSpec(n_per_class=12, number_densities=(0.01, 0.03), counts=5e4, seed=7)
    ds = S.build_dataset(spec)
    assert ds.patterns.shape == (24, 64, 64) and list(np.bincount(ds.labels)) == [12, 12]
    totals = ds.patterns.sum(axis=(1, 2))
    # each total is Poisson(5e4): the mean of 24 lies within 4 standard errors
    assert abs(totals.mean() - 5e4) < 4 * math.sqrt(5e4 / 24)
    assert np.all(ds.patterns[:, ds.mask == 0] == 0)
    assert np.all(ds.patterns >= 0) and np.all(ds.patterns == np.round(ds.patterns))
    assert ds.mask.sum() == 64 * 64 - np.count_nonzero(np.hypot(*np.meshgrid(np.arange(64) - 32, np.arange(64) - 32)) <= 2)
    # any pattern regenerates from its recorded parameters alone
    j = 17
    again = S.simulate_pattern(S.PatternParams.from_dict(ds.parameters[j]))
    np.testing.assert_array_equal(again.intensity.astype(np.float32), ds.patterns[j])
    assert ds.parameters[j]["disks"]["seed"] == spec.pattern_params(1, 5).disks.seed
    # pattern (k, i) does not depend on the size of the set
    small = S.build_dataset(spec.with_(n_per_class=6))
    np.testing.assert_array_equal(small.patterns[6 + 5], ds.patterns[j])
    # noiseless mode: the masked intensity
    p = S.simulate_pattern(S.PatternParams.from_dict({**ds.parameters[0], "counts": None}))
    assert p.intensity[32, 32] == 0 and p.intensity.max() > 0


def test_radial_profile_matches_a_direct_ring_mean():
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 32))
    mask = S.beam_stop_mask(32, 2.0)
    prof = S.radial_profile(x, mask)
    k = np.arange(32) - 16
    ring = np.rint(np.hypot(k[None, :], k[:, None]))
    for b in (3, 7, 15):
        sel = (ring == b) & (mask > 0)
        np.testing.assert_allclose(prof[:, b], x[:, sel].mean(axis=1))
    assert np.all(prof[:, :2] == 0)


def _contact_value(configs, n, box, r):
    """g(2R) of equal disks: the pair correlation in shells 2R..2.2R, extrapolated linearly to contact."""
    edges = np.linspace(2 * r, 2.2 * r, 5)
    hist = sum(np.histogram(pair_distances(c), edges)[0] for c in configs)
    shell = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    g = hist / (len(configs) * n / 2 * (n / box ** 2) * shell)
    slope, g0 = np.polyfit((edges[1:] + edges[:-1]) / 2 - 2 * r, g, 1)
    return g0


def test_monte_carlo_fluid_matches_the_hard_disk_contact_value():
    # Henderson (1975) equation of state for hard disks: g(contact) = (1 - 7 phi / 16) / (1 - phi)^2;
    # at phi = 0.4: 2.292.  MC equilibrates to it; RSA's structure is not the equilibrium one (lower).
    phi, n, r = 0.4, 120, 1.0
    box = math.sqrt(n * math.pi * r ** 2 / phi)
    henderson = (1 - 7 * phi / 16) / (1 - phi) ** 2
    cfg = make_configuration(DiskParams(box=box, radius=r, n_disks=n, method="mc", mc_sweeps=30, seed=0))
    mc = []
    for i in range(60):
        continue_metropolis(cfg, 4, 0.3, seed=100 + i)
        mc.append(DiskConfiguration(cfg.centers.copy(), cfg.radii, cfg.box, True))
    rsa = [make_configuration(DiskParams(box=box, radius=r, n_disks=n, seed=1 + i)) for i in range(60)]
    g_mc, g_rsa = _contact_value(mc, n, box, r), _contact_value(rsa, n, box, r)
    assert g_mc == pytest.approx(henderson, rel=0.1)
    assert g_rsa < 0.92 * henderson
