"""Simulated lattice dynamics and the neural ODE trained through the scattering forward model."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

from matlake.models.scattering import neural_ode as N  # noqa: E402
from matlake.models.scattering import systems as S  # noqa: E402


@pytest.fixture
def one_thread():
    """One torch thread: the small lattices here gain nothing from more, and CI machines are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_kuramoto_rhs_matches_explicit_pair_sum():
    rng = np.random.default_rng(0)
    L = 7
    theta = rng.uniform(0, 2 * np.pi, size=(L, L))
    omega = rng.normal(size=(L, L))
    w = S.kuramoto_kernel(1.3)
    assert w.shape == (5, 5) and w[2, 2] == 0.0 and w.sum() == pytest.approx(1.0)
    ref = np.empty((L, L))
    for i in range(L):
        for j in range(L):
            s = 0.0
            for a in range(5):
                for b in range(5):
                    s += w[a, b] * math.sin(theta[(i + a - 2) % L, (j + b - 2) % L] - theta[i, j])
            ref[i, j] = omega[i, j] + 0.8 * s
    np.testing.assert_allclose(S.kuramoto_rhs(theta, omega, 0.8, w), ref, atol=1e-12)


def test_kuramoto_identical_oscillators_synchronise_at_their_frequency():
    # Identical oscillators (omega_std = 0) with attractive coupling phase-lock; the locked
    # state rotates at omega_mean, so the late phase velocity equals it.
    p = S.KuramotoParams(size=8, coupling=2.0, omega_mean=1.3, omega_std=0.0, n_frames=200, dt_frame=0.2, seed=4)
    tr = S.simulate(p)
    r = np.abs(np.exp(1j * tr.states).mean(axis=(1, 2)))
    assert r[0] < 0.4 and r[-1] > 0.99
    vel = np.angle(np.exp(1j * (tr.states[-1] - tr.states[-2]))) / p.dt_frame
    np.testing.assert_allclose(vel, 1.3, atol=1e-3)


def test_rk4_converges_and_seeds_reproduce():
    p = S.KuramotoParams(size=6, n_frames=20, substeps=4, seed=2)
    a = S.simulate(p).states
    b = S.simulate(S.KuramotoParams(size=6, n_frames=20, substeps=16, seed=2)).states
    # RK4 is 4th order: the step-4x-refined answer differs by ~ (1 - 1/256) of the coarse error
    assert np.max(np.abs(a - b)) < 1e-5
    assert np.array_equal(a, S.simulate(p).states)
    assert not np.array_equal(a, S.simulate(S.KuramotoParams(size=6, n_frames=20, substeps=4, seed=3)).states)
    assert S.params_from_dict(p.as_dict()) == p


def test_gray_scott_rhs_and_fixed_point():
    p = S.GrayScottParams(size=6)
    rng = np.random.default_rng(1)
    st = rng.uniform(0, 1, size=(2, 6, 6))
    got = S.gray_scott_rhs(st, p)
    u, v = st
    for i, j in [(0, 0), (3, 5), (5, 2)]:
        lap_u = u[(i + 1) % 6, j] + u[i - 1, j] + u[i, (j + 1) % 6] + u[i, j - 1] - 4 * u[i, j]
        lap_v = v[(i + 1) % 6, j] + v[i - 1, j] + v[i, (j + 1) % 6] + v[i, j - 1] - 4 * v[i, j]
        assert got[0, i, j] == pytest.approx(p.du * lap_u - u[i, j] * v[i, j] ** 2 + p.feed * (1 - u[i, j]))
        assert got[1, i, j] == pytest.approx(p.dv * lap_v + u[i, j] * v[i, j] ** 2 - (p.feed + p.kill) * v[i, j])
    # u = 1, v = 0 is the trivial steady state
    assert np.abs(S.gray_scott_rhs(np.stack([np.ones((6, 6)), np.zeros((6, 6))]), p)).max() == 0.0
    tr = S.simulate(S.GrayScottParams(size=16, n_frames=6, seed=0))
    assert tr.states.shape == (6, 2, 16, 16)
    assert np.all(np.isfinite(tr.states)) and tr.states.min() >= -1e-9 and tr.states.max() <= 1.1


def test_diffraction_counts_and_mask():
    p = S.KuramotoParams(size=8, n_frames=3)
    tr = S.simulate(p)
    sc = S.ScatterParams(oversample=2, beamstop_radius=1.0, total_counts=1e5, noise_seed=3)
    frames, mask = S.diffraction(S.density(p, tr.states), sc)
    assert frames.shape == (3, 16, 16) and mask.shape == (16, 16)
    assert np.all(frames[:, mask == 0] == 0)
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), 1e5, rtol=0.02)
    again, _ = S.diffraction(S.density(p, tr.states), sc)
    assert np.array_equal(frames, again)
    clean, _ = S.diffraction(S.density(p, tr.states), S.ScatterParams(total_counts=None))
    # counts follow the noise-free pattern: correlation of sqrt-intensities close to 1
    c = np.corrcoef(np.sqrt(clean[0][mask > 0]), np.sqrt(frames[0][mask > 0]))[0, 1]
    assert c > 0.9


@pytest.mark.slow
def test_kuramoto_node_extrapolates_better_than_baselines(one_thread):
    p = S.KuramotoParams(size=10, n_frames=50, seed=1)
    tr = S.simulate(p)
    sc = S.ScatterParams(total_counts=1e6, noise_seed=1)
    frames, mask = S.diffraction(S.density(p, tr.states), sc)
    params = N.NodeParams(n_train=32, iters=120, seed=0)
    net, hist = N.train_node(p, frames, mask, tr.states, sc, params)
    assert np.mean(hist["loss"][-10:]) < 0.05 * np.mean(hist["loss"][:5])
    ev = N.evaluate(net, p, frames, mask, tr.states, sc, params)
    assert ev["horizon"].tolist() == list(range(1, 19))
    s = ev["summary"]
    # reciprocal space (what the model was trained on): well below both baselines
    assert s["heldout_recip_mean"] < 0.5 * s["constant_recip_mean"]
    assert s["heldout_recip_mean"] < 0.5 * s["linear_recip_mean"]
    assert ev["node_recip"][-1] < min(ev["constant_recip"][-1], ev["linear_recip"][-1])
    # real space, never seen in training: also better than holding or extrapolating the true state
    assert s["node_real_mean"] < s["linear_real_mean"] < s["constant_real_mean"]
    assert ev["extrapolated"].shape == (18, 10, 10) and ev["fitted"].shape == (32, 10, 10)


def test_gray_scott_node_trains_through_the_forward_model(one_thread):
    p = S.GrayScottParams(size=12, n_frames=9, n_patches=2, seed=0)
    tr = S.simulate(p)
    sc = S.ScatterParams(total_counts=None)
    frames, mask = S.diffraction(S.density(p, tr.states), sc)
    # short sub-trajectories and a small step: enough to show learning, cheap on CPU
    params = N.NodeParams(n_train=6, iters=30, sub_len=4, batch=4, lr=0.005, seed=0)
    net, hist = N.train_node(p, frames, mask, tr.states, sc, params)
    assert np.mean(hist["loss"][-5:]) < 0.5 * hist["loss"][0]
    ev = N.evaluate(net, p, frames, mask, tr.states, sc, params)
    assert ev["extrapolated"].shape == (3, 2, 12, 12)
    assert all(np.all(np.isfinite(ev[k])) for k in ("node_recip", "node_real", "constant_real"))


def test_training_is_seeded(one_thread):
    p = S.KuramotoParams(size=6, n_frames=12, seed=0)
    tr = S.simulate(p)
    sc = S.ScatterParams(total_counts=None)
    frames, mask = S.diffraction(S.density(p, tr.states), sc)
    params = N.NodeParams(n_train=8, iters=4, sub_len=3, batch=2, seed=5)
    _, h1 = N.train_node(p, frames, mask, tr.states, sc, params)
    _, h2 = N.train_node(p, frames, mask, tr.states, sc, params)
    _, h3 = N.train_node(p, frames, mask, tr.states, sc, N.NodeParams(n_train=8, iters=4, sub_len=3, batch=2, seed=6))
    assert h1["loss"] == h2["loss"] and h1["loss"] != h3["loss"]
    with pytest.raises(ValueError, match="sub_len"):
        N.train_node(p, frames, mask, tr.states, sc, N.NodeParams(n_train=8, sub_len=9))
