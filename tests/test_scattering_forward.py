"""The differentiable scattering forward model against explicit numpy sums, and its gradients."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from matlake.models.scattering import forward as fw  # noqa: E402


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("complex_rho", [False, True])
def test_grid_fft_matches_direct_numpy_sum(seed, complex_rho):
    rng = np.random.default_rng(seed)
    rho = rng.normal(size=(5, 6))
    if complex_rho:
        rho = rho * np.exp(1j * rng.uniform(0, 2 * np.pi, size=rho.shape))
    probe = fw.gaussian_probe((5, 6), sigma=2.0, dtype=torch.float64).numpy()
    ref = fw.grid_intensity_numpy(rho, probe, oversample=2)
    got = fw.grid_intensity(torch.as_tensor(rho), torch.as_tensor(probe), oversample=2).numpy()
    assert got.shape == (10, 12)
    assert _rel(got, ref) < 1e-6
    # the q = 0 pixel is the squared sum of the illuminated density
    assert got[5, 6] == pytest.approx(abs(np.sum(rho * probe)) ** 2, rel=1e-10)


def test_direct_intensity_matches_numpy_at_arbitrary_q():
    rng = np.random.default_rng(3)
    pos = rng.uniform(-4, 4, size=(7, 2))
    amp = rng.normal(size=7) + 1j * rng.normal(size=7)
    q = rng.normal(size=(9, 2))
    ref = fw.direct_intensity_numpy(amp, pos, q)
    got = fw.direct_intensity(torch.as_tensor(amp), torch.as_tensor(pos), torch.as_tensor(q)).numpy()
    assert _rel(got, ref) < 1e-6
    got_real = fw.direct_intensity(torch.as_tensor(amp.real), torch.as_tensor(pos), torch.as_tensor(q)).numpy()
    assert _rel(got_real, fw.direct_intensity_numpy(amp.real, pos, q)) < 1e-6


@pytest.mark.parametrize("kind,d", [("sphere", 3), ("disk", 2)])
def test_pointcloud_matches_numpy(kind, d):
    rng = np.random.default_rng(5)
    pos = rng.uniform(-20, 20, size=(6, d))
    radii = rng.uniform(1.0, 3.0, size=6)
    contrast = rng.uniform(0.5, 1.5, size=6)
    # include q = 0 and tiny |q| (series branch) and large |q| (oscillating tail)
    q = np.concatenate([np.zeros((1, d)), 1e-4 * np.ones((1, d)), rng.normal(scale=1.0, size=(10, d))])
    ref = fw.pointcloud_intensity_numpy(pos, radii, q, kind=kind, contrast=contrast, probe_sigma=15.0)
    got = fw.pointcloud_intensity(torch.as_tensor(pos), torch.as_tensor(radii), torch.as_tensor(q), kind=kind,
                                  contrast=torch.as_tensor(contrast), probe_sigma=15.0).numpy()
    assert np.all(np.abs(got - ref) <= 1e-6 * np.abs(ref) + 1e-12 * ref.max())


def test_form_factors_against_scipy_and_limits():
    from scipy.special import j1

    x = np.concatenate([np.linspace(1e-3, 0.2, 50), np.linspace(0.2, 30, 200)])
    sphere = fw.sphere_form_factor(torch.as_tensor(x)).numpy()
    disk = fw.disk_form_factor(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(disk, 2 * j1(x) / x, rtol=1e-9, atol=1e-14)
    ref = 3 * (np.sin(x) - x * np.cos(x)) / x ** 3
    big = x > 0.05
    np.testing.assert_allclose(sphere[big], ref[big], rtol=1e-9, atol=1e-12)
    # first zero of the sphere form factor: tan x = x at x = 4.4934
    assert fw.sphere_form_factor(torch.tensor(4.493409457909064, dtype=torch.float64)).abs() < 1e-12
    # first zero of J1: 3.8317
    assert fw.disk_form_factor(torch.tensor(3.8317059702075125, dtype=torch.float64)).abs() < 1e-12
    assert float(fw.sphere_form_factor(torch.zeros(1, dtype=torch.float64))) == 1.0


def test_gradcheck_grid_variant():
    rng = np.random.default_rng(0)
    rho = torch.tensor(rng.normal(size=(4, 5)), dtype=torch.float64, requires_grad=True)
    probe = torch.tensor(rng.normal(size=(4, 5)) + 1j * rng.normal(size=(4, 5)), dtype=torch.complex128,
                         requires_grad=True)
    mask = fw.beamstop_mask((8, 10), 1.0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r, p: fw.grid_intensity(r, p, oversample=2, mask=mask), (rho, probe))
    pos = torch.tensor(rng.uniform(0, 3, size=(5, 2)), dtype=torch.float64, requires_grad=True)
    q = torch.tensor(rng.normal(size=(4, 2)), dtype=torch.float64, requires_grad=True)
    amp = torch.tensor(rng.normal(size=5), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fw.direct_intensity, (amp, pos, q))


@pytest.mark.parametrize("kind,d", [("sphere", 3), ("disk", 2)])
def test_gradcheck_pointcloud_variant(kind, d):
    rng = np.random.default_rng(1)
    pos = torch.tensor(rng.uniform(-3, 3, size=(4, d)), dtype=torch.float64, requires_grad=True)
    radii = torch.tensor(rng.uniform(0.5, 1.5, size=4), dtype=torch.float64, requires_grad=True)
    # one q tiny enough that the Taylor branch of the form factor is differentiated too
    q = torch.tensor(np.concatenate([np.full((1, d), 1e-3), rng.normal(size=(5, d))]), dtype=torch.float64,
                     requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda p, r, qq: fw.pointcloud_intensity(p, r, qq, kind=kind, probe_sigma=4.0), (pos, radii, q))


def test_probe_mask_and_poisson_noise():
    probe = fw.gaussian_probe((9, 9), sigma=2.0, dtype=torch.float64)
    assert float(probe[4, 4]) == 1.0
    assert float(probe[4, 6]) == pytest.approx(np.exp(-4 / 8))
    mask = fw.beamstop_mask((8, 8), 1.5)
    assert float(mask[4, 4]) == 0.0 and float(mask[4, 5]) == 0.0 and float(mask[0, 0]) == 1.0
    assert int((mask == 0).sum()) == 9
    inten = fw.grid_intensity(torch.rand(3, 16, 16, dtype=torch.float64), oversample=2)
    a = fw.poisson_counts(inten, total_counts=1e4, seed=7)
    b = fw.poisson_counts(inten, total_counts=1e4, seed=7)
    c = fw.poisson_counts(inten, total_counts=1e4, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # each frame's counts sum to about the declared total (Poisson: sd = 100)
    assert np.allclose(a.sum(dim=(-2, -1)).numpy(), 1e4, atol=500)
    assert bool((a == a.round()).all())
    with pytest.raises(ValueError, match="negative or NaN"):
        fw.poisson_counts(-inten, seed=0)


def test_grid_q_units():
    qy, qx = fw.grid_q((4, 5), pixel_size=2.0, oversample=2)
    assert qy.size == 8 and qx.size == 10
    assert qy[4] == 0.0 and qx[5] == 0.0
    assert qy[5] == pytest.approx(2 * np.pi / (8 * 2.0))
