"""Simulated real-space dynamics on a periodic lattice, and their coherent diffraction series.

Two model systems (numpy, fixed-step RK4 with every step recorded in the params):

* **Kuramoto** phase oscillators on an L x L lattice coupled through a 5 x 5
  neighbour kernel w (periodic boundaries):
  d theta_i / dt = omega_i + K sum_{j in kernel(i)} w_{j-i} sin(theta_j - theta_i),
  omega_i ~ Normal(omega_mean, omega_std) (rad/s), theta_i(0) ~ Uniform[0, 2 pi).
  Scattering density rho = cos(theta) (a real order-parameter field).
* **Gray-Scott** reaction-diffusion, periodic 5-point Laplacian (lattice spacing 1):
  du/dt = Du lap u - u v^2 + F (1 - u),  dv/dt = Dv lap v + u v^2 - (F + k) v,
  started from u = 1, v = 0 with seeded square patches (u = 0.5, v = 0.25) and
  uniform noise.  Scattering density rho = v (or u, ``observable``).

:func:`simulate` returns the trajectory (frames x state) and the frame times;
:func:`diffraction` turns densities into far-field intensities with the forward
model (Gaussian probe, oversampling, beam stop, optional seeded Poisson counts).
Everything random takes an explicit seed, and :meth:`as_dict` of each parameter
class records every number needed to regenerate the series exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["SYSTEMS_VERSION", "KuramotoParams", "GrayScottParams", "ScatterParams", "Trajectory",
           "kuramoto_kernel", "kuramoto_rhs", "gray_scott_rhs", "simulate", "density", "diffraction",
           "params_from_dict"]

SYSTEMS_VERSION = "1"


@dataclass(frozen=True)
class KuramotoParams:
    """Kuramoto lattice: ``size`` L (sites per side), coupling K (1/s), natural
    frequencies omega ~ N(omega_mean, omega_std) (rad/s), Gaussian 5 x 5 kernel of width
    ``kernel_sigma`` (sites; weights normalised to sum 1, centre 0), frames every
    ``dt_frame`` s, ``substeps`` RK4 steps per frame, ``seed`` for omega and theta(0)."""

    size: int = 12
    coupling: float = 1.5
    omega_mean: float = 2.0
    omega_std: float = 0.5
    kernel_sigma: float = 1.2
    n_frames: int = 60
    dt_frame: float = 0.1
    substeps: int = 8
    seed: int = 0
    system: str = field(default="kuramoto", init=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GrayScottParams:
    """Gray-Scott lattice: ``size`` L, diffusion Du, Dv (sites^2 per time unit), feed F
    and kill k (1/time unit), ``n_patches`` seeded square patches of side ``patch``,
    uniform noise of amplitude ``noise``; frames every ``dt_frame`` time units with
    ``substeps`` RK4 steps per frame; ``observable`` 'u' or 'v' is the scattering density."""

    size: int = 24
    du: float = 0.16
    dv: float = 0.08
    feed: float = 0.035
    kill: float = 0.060
    n_patches: int = 3
    patch: int = 4
    noise: float = 0.02
    n_frames: int = 40
    dt_frame: float = 10.0
    substeps: int = 10
    observable: str = "v"
    seed: int = 0
    system: str = field(default="gray_scott", init=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScatterParams:
    """Detector model: zero-padding ``oversample``, Gaussian probe amplitude width
    ``probe_sigma`` (lattice sites; None = plane wave), beam-stop radius (detector
    pixels), ``total_counts`` expected counts per frame (None = noise-free intensity)
    and the Poisson ``noise_seed``."""

    oversample: int = 2
    probe_sigma: float | None = None
    beamstop_radius: float = 1.0
    total_counts: float | None = 1.0e6
    noise_seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trajectory:
    """A simulated trajectory: ``times`` (n_frames,) in s (or the system's time unit),
    ``states`` (n_frames, *state_shape) real space, ``extras`` (e.g. the omega field)."""

    times: np.ndarray
    states: np.ndarray
    extras: dict[str, np.ndarray]


def params_from_dict(d: dict[str, Any]) -> KuramotoParams | GrayScottParams:
    """Parameters back from :meth:`as_dict` (the ``system`` key picks the class)."""
    d = dict(d)
    system = d.pop("system", None)
    cls = {"kuramoto": KuramotoParams, "gray_scott": GrayScottParams}.get(system)
    if cls is None:
        raise ValueError(f"system: expected 'kuramoto' or 'gray_scott', found {system!r}")
    return cls(**d)


# --------------------------------------------------------------------------- Kuramoto


def kuramoto_kernel(sigma: float) -> np.ndarray:
    """5 x 5 coupling weights exp(-d^2 / (2 sigma^2)) with the centre set to 0, summing to 1."""
    d = np.arange(-2, 3, dtype=float)
    w = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2.0 * sigma ** 2))
    w[2, 2] = 0.0
    return w / w.sum()


def _periodic_conv(field: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """sum_{dy,dx} kernel[dy, dx] field[i + dy - c, j + dx - c] with periodic wrap
    (a circular convolution, done by FFT: the kernel wrapped onto the lattice)."""
    c = kernel.shape[0] // 2
    h, w = field.shape[-2:]
    wrapped = np.zeros((h, w))
    for a in range(kernel.shape[0]):
        for b in range(kernel.shape[1]):
            # out[i] = sum_a k[a] f[i + a - c]: a circular correlation with g[a - c] = k[a]
            wrapped[(a - c) % h, (b - c) % w] += kernel[a, b]
    return np.fft.irfft2(np.fft.rfft2(field) * np.conj(np.fft.rfft2(wrapped)), s=(h, w))


def kuramoto_rhs(theta: np.ndarray, omega: np.ndarray, coupling: float, kernel: np.ndarray) -> np.ndarray:
    """d theta/dt (rad/s): omega + K sum_j w sin(theta_j - theta_i), using
    sin(a - b) = sin a cos b - cos a sin b so the neighbour sum is two convolutions."""
    s, c = np.sin(theta), np.cos(theta)
    return omega + coupling * (c * _periodic_conv(s, kernel) - s * _periodic_conv(c, kernel))


# --------------------------------------------------------------------------- Gray-Scott


def _laplacian(f: np.ndarray) -> np.ndarray:
    return (np.roll(f, 1, -1) + np.roll(f, -1, -1) + np.roll(f, 1, -2) + np.roll(f, -1, -2) - 4.0 * f)


def gray_scott_rhs(state: np.ndarray, p: GrayScottParams) -> np.ndarray:
    """(du/dt, dv/dt) of a (2, L, L) state."""
    u, v = state[0], state[1]
    uvv = u * v * v
    return np.stack([p.du * _laplacian(u) - uvv + p.feed * (1.0 - u),
                     p.dv * _laplacian(v) + uvv - (p.feed + p.kill) * v])


# --------------------------------------------------------------------------- integration


def _rk4(f: Callable[[np.ndarray], np.ndarray], y0: np.ndarray, n_frames: int, dt_frame: float,
         substeps: int) -> np.ndarray:
    """Fixed-step RK4 of an autonomous ODE; the state at every frame (frame 0 = y0)."""
    h = dt_frame / substeps
    out = np.empty((n_frames,) + y0.shape)
    y = y0.astype(float).copy()
    out[0] = y
    for n in range(1, n_frames):
        for _ in range(substeps):
            k1 = f(y)
            k2 = f(y + 0.5 * h * k1)
            k3 = f(y + 0.5 * h * k2)
            k4 = f(y + h * k3)
            y = y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out[n] = y
    return out


def simulate(p: KuramotoParams | GrayScottParams) -> Trajectory:
    """The real-space trajectory of system ``p`` (deterministic given ``p.seed``)."""
    rng = np.random.default_rng(p.seed)
    times = np.arange(p.n_frames, dtype=float) * p.dt_frame
    if isinstance(p, KuramotoParams):
        omega = rng.normal(p.omega_mean, p.omega_std, size=(p.size, p.size))
        theta0 = rng.uniform(0.0, 2.0 * math.pi, size=(p.size, p.size))
        kernel = kuramoto_kernel(p.kernel_sigma)
        states = _rk4(lambda th: kuramoto_rhs(th, omega, p.coupling, kernel), theta0, p.n_frames, p.dt_frame,
                      p.substeps)
        return Trajectory(times, states, {"omega": omega, "kernel": kernel})
    if isinstance(p, GrayScottParams):
        u = np.ones((p.size, p.size))
        v = np.zeros((p.size, p.size))
        for _ in range(p.n_patches):
            y0, x0 = rng.integers(0, p.size, size=2)
            ys = (np.arange(p.patch) + y0) % p.size
            xs = (np.arange(p.patch) + x0) % p.size
            u[np.ix_(ys, xs)] = 0.5
            v[np.ix_(ys, xs)] = 0.25
        u += p.noise * rng.uniform(-1, 1, size=u.shape)
        v = np.clip(v + p.noise * rng.uniform(-1, 1, size=v.shape), 0.0, None)
        states = _rk4(lambda s: gray_scott_rhs(s, p), np.stack([u, v]), p.n_frames, p.dt_frame, p.substeps)
        return Trajectory(times, states, {})
    raise TypeError(f"params: expected KuramotoParams or GrayScottParams, found {type(p).__name__}")


def density(p: KuramotoParams | GrayScottParams, states: np.ndarray) -> np.ndarray:
    """Scattering density of states (..., *state_shape) -> (..., L, L): cos(theta) for
    Kuramoto, the ``observable`` field for Gray-Scott."""
    if isinstance(p, KuramotoParams):
        return np.cos(states)
    return states[..., 0 if p.observable == "u" else 1, :, :]


def diffraction(rho: np.ndarray, s: ScatterParams) -> tuple[np.ndarray, np.ndarray]:
    """Far-field frames of densities ``rho`` (n, L, L) and the detector mask (1 = valid):
    |FFT(rho * probe)|^2 on the oversampled grid, beam stop applied, and with
    ``total_counts`` Poisson counts (seeded) of that expected total per frame."""
    from matlake.models.scattering import forward as fw
    from matlake.optional import require_torch

    torch = require_torch("diffraction of simulated systems")
    r = torch.as_tensor(np.asarray(rho, dtype=float))
    shape = r.shape[-2:]
    probe = None if s.probe_sigma is None else fw.gaussian_probe(shape, s.probe_sigma, dtype=r.dtype)
    out_shape = (shape[0] * s.oversample, shape[1] * s.oversample)
    mask = fw.beamstop_mask(out_shape, s.beamstop_radius, dtype=r.dtype)
    inten = fw.grid_intensity(r, probe, oversample=s.oversample, mask=mask)
    if s.total_counts is not None:
        inten = fw.poisson_counts(inten, total_counts=s.total_counts, seed=s.noise_seed) * mask
    return inten.numpy(), mask.numpy()
