"""Two-dimensional hard-disk configurations in a square box (pure, seeded).

A configuration is ``n`` disks with centres ``(x, y)`` and radii ``r`` in a square
box of side ``box`` (any length unit; the speckle simulator uses detector-grid
pixels).  The box is **periodic** (distances by the minimum image) or **open**
(every disk lies wholly inside ``[0, box]^2``).  No two disks overlap:
``|c_i - c_j| >= r_i + r_j`` for every pair, checked by :func:`overlap_pairs`.

Two ways to place them:

- **random sequential addition** (``method="rsa"``): disks are placed one after
  the other at uniformly random positions, a position that overlaps a placed disk
  being rejected and drawn again.  Monodisperse RSA jams at an area fraction of
  about 0.547 (Feder 1980; Hinrichsen, Feder and Jossang 1986), so higher
  densities fail with a ``ValueError``.  Polydisperse disks are placed largest
  first (small disks fill the gaps the large ones leave).
- **hard-disk Metropolis Monte Carlo** (``method="mc"``): start from an RSA
  configuration and run ``mc_sweeps`` sweeps of single-disk moves, each a uniform
  displacement in ``[-mc_step, mc_step]^2``, accepted when it creates no overlap
  (the Boltzmann factor of hard disks is 0 or 1).  This equilibrates the RSA
  configuration towards the hard-disk fluid, whose pair structure differs from
  RSA's.

Radii are fixed (``polydispersity = 0``) or lognormal with mean ``radius`` and
standard deviation ``polydispersity * radius`` (so ``polydispersity`` = std/mean).
The number of disks follows from a declared number density ``n / box^2`` or area
fraction ``phi = sum(pi r^2) / box^2`` (using ``E[r^2] = radius^2 (1 + p^2)`` for
lognormal radii); the achieved values are in the result.  Every parameter and
the seed go into :attr:`DiskConfiguration.parameters`; the same parameters give
the same configuration, bit for bit (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NAME = "matlake-disks"
VERSION = "1"
RSA_JAMMING_MONO = 0.547  # monodisperse RSA jamming area fraction (Feder 1980)


@dataclass(frozen=True)
class DiskParams:
    """What a disk configuration is drawn from (lengths in the box's unit).

    Exactly one of ``n_disks``, ``number_density`` (disks per unit area) and
    ``area_fraction`` is given.
    """

    box: float = 64.0
    radius: float = 2.0
    polydispersity: float = 0.0
    n_disks: int | None = None
    number_density: float | None = None
    area_fraction: float | None = None
    periodic: bool = True
    method: str = "rsa"
    mc_sweeps: int = 20
    mc_step: float | None = None  # default: half the mean radius
    max_attempts: int = 200_000  # RSA trials per disk before giving up
    seed: int = 0

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.n_disks, self.number_density, self.area_fraction)]
        if sum(given) != 1:
            raise ValueError("give exactly one of n_disks, number_density, area_fraction")
        if self.box <= 0 or self.radius <= 0:
            raise ValueError(f"box and radius must be positive, found box={self.box}, radius={self.radius}")
        if not 0 <= self.polydispersity < 1:
            raise ValueError(f"polydispersity (std/mean) must be in [0, 1), found {self.polydispersity}")
        if self.method not in ("rsa", "mc"):
            raise ValueError(f"method must be 'rsa' or 'mc', found {self.method!r}")

    def count(self) -> int:
        """The number of disks these parameters ask for."""
        if self.n_disks is not None:
            return int(self.n_disks)
        area = self.box ** 2
        if self.number_density is not None:
            return int(round(self.number_density * area))
        mean_r2 = self.radius ** 2 * (1.0 + self.polydispersity ** 2)
        return int(round(self.area_fraction * area / (math.pi * mean_r2)))

    def as_dict(self) -> dict[str, Any]:
        return {"generator": NAME, "generator_version": VERSION, **asdict(self)}


@dataclass
class DiskConfiguration:
    """Disk centres (n, 2), radii (n,) in a square box of side ``box``."""

    centers: np.ndarray
    radii: np.ndarray
    box: float
    periodic: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.radii))

    @property
    def number_density(self) -> float:
        """Disks per unit area (box unit^-2)."""
        return self.n / self.box ** 2

    @property
    def area_fraction(self) -> float:
        """Fraction of the box covered by disks."""
        return float(np.sum(math.pi * self.radii ** 2) / self.box ** 2)


def draw_radii(rng: np.random.Generator, n: int, radius: float, polydispersity: float) -> np.ndarray:
    """``n`` radii: all ``radius``, or lognormal with mean ``radius`` and std ``polydispersity * radius``."""
    if polydispersity == 0:
        return np.full(n, float(radius))
    # lognormal(mu, s): mean exp(mu + s^2/2), var (exp(s^2) - 1) mean^2
    s2 = math.log1p(polydispersity ** 2)
    mu = math.log(radius) - s2 / 2
    return rng.lognormal(mu, math.sqrt(s2), size=n)


def _separation(a: np.ndarray, b: np.ndarray, box: float, periodic: bool) -> np.ndarray:
    """Displacements b - a (broadcast), by the minimum image when periodic."""
    d = b - a
    if periodic:
        d = d - box * np.round(d / box)
    return d


def overlap_pairs(centers: np.ndarray, radii: np.ndarray, box: float, periodic: bool,
                  tol: float = 1e-9) -> list[tuple[int, int]]:
    """Pairs (i < j) of disks closer than ``r_i + r_j - tol`` (an empty list for a valid configuration)."""
    d = _separation(centers[:, None, :], centers[None, :, :], box, periodic)
    dist = np.hypot(d[..., 0], d[..., 1])
    contact = radii[:, None] + radii[None, :]
    i, j = np.nonzero(np.triu(dist < contact - tol, k=1))
    return list(zip(i.tolist(), j.tolist()))


def outside_box(centers: np.ndarray, radii: np.ndarray, box: float) -> np.ndarray:
    """Indices of disks of an open box that cross a wall."""
    lo = centers - radii[:, None]
    hi = centers + radii[:, None]
    return np.nonzero(np.any((lo < 0) | (hi > box), axis=1))[0]


def _rsa(rng: np.random.Generator, radii: np.ndarray, box: float, periodic: bool,
         max_attempts: int) -> tuple[np.ndarray, int]:
    """Random sequential addition; returns centres and the number of trial positions drawn."""
    n = len(radii)
    centers = np.empty((n, 2))
    trials = 0
    batch = 64  # candidates tested per numpy call
    for k in range(n):
        r = radii[k]
        lo, hi = (0.0, box) if periodic else (r, box - r)
        if hi <= lo:
            raise ValueError(f"a disk of radius {r:.4g} does not fit in an open box of side {box}")
        placed = centers[:k]
        tried = 0
        while True:
            cand = rng.uniform(lo, hi, size=(batch, 2))
            trials += batch
            tried += batch
            if k == 0:
                centers[0] = cand[0]
                break
            d = _separation(placed[None, :, :], cand[:, None, :], box, periodic)
            ok = np.all(np.hypot(d[..., 0], d[..., 1]) >= radii[None, :k] + r, axis=1)
            hit = np.flatnonzero(ok)
            if hit.size:
                centers[k] = cand[hit[0]]
                break
            if tried >= max_attempts:
                phi = float(np.sum(math.pi * radii[:k] ** 2) / box ** 2)
                raise ValueError(
                    f"random sequential addition placed only {k} of {n} disks (area fraction {phi:.3f}) in "
                    f"{max_attempts} trials; RSA jams near {RSA_JAMMING_MONO} for equal disks: "
                    f"ask for a lower density")
    return centers, trials


def _metropolis(rng: np.random.Generator, centers: np.ndarray, radii: np.ndarray, box: float,
                periodic: bool, sweeps: int, step: float) -> float:
    """Hard-disk Metropolis sweeps in place; returns the acceptance rate."""
    n = len(radii)
    accepted = 0
    moves = 0
    for _ in range(sweeps):
        order = rng.permutation(n)
        steps = rng.uniform(-step, step, size=(n, 2))
        for i, dxy in zip(order, steps):
            new = centers[i] + dxy
            moves += 1
            if periodic:
                new = new % box
            elif np.any(new - radii[i] < 0) or np.any(new + radii[i] > box):
                continue
            d = _separation(new[None, :], centers, box, periodic)
            dist = np.hypot(d[:, 0], d[:, 1])
            dist[i] = np.inf
            if np.all(dist >= radii + radii[i]):
                centers[i] = new
                accepted += 1
    return accepted / moves if moves else 0.0


def make_configuration(params: DiskParams) -> DiskConfiguration:
    """Draw the configuration that ``params`` (including its seed) describe."""
    rng = np.random.default_rng(params.seed)
    n = params.count()
    if n < 0:
        raise ValueError(f"negative number of disks: {n}")
    radii = draw_radii(rng, n, params.radius, params.polydispersity)
    # largest first: RSA of a polydisperse set fills far better that way
    radii = np.sort(radii)[::-1].copy()
    centers, trials = _rsa(rng, radii, params.box, params.periodic, params.max_attempts)
    stats: dict[str, float] = {"rsa_trials": float(trials)}
    if params.method == "mc" and n > 0:
        step = params.mc_step if params.mc_step is not None else 0.5 * params.radius
        stats["mc_acceptance"] = _metropolis(rng, centers, radii, params.box, params.periodic,
                                             params.mc_sweeps, step)
        stats["mc_step"] = float(step)
    if params.periodic:
        centers %= params.box
    cfg = DiskConfiguration(centers=centers, radii=radii, box=float(params.box), periodic=params.periodic,
                            parameters=params.as_dict(), stats=stats)
    stats["number_density"] = cfg.number_density
    stats["area_fraction"] = cfg.area_fraction
    return cfg


def continue_metropolis(cfg: DiskConfiguration, sweeps: int, step: float, seed: int) -> float:
    """Run ``sweeps`` more hard-disk Metropolis sweeps on ``cfg`` in place (maximum displacement ``step``,
    random stream ``default_rng(seed)``), e.g. to sample an equilibrated fluid; returns the acceptance rate."""
    rng = np.random.default_rng(seed)
    rate = _metropolis(rng, cfg.centers, cfg.radii, cfg.box, cfg.periodic, sweeps, step)
    if cfg.periodic:
        cfg.centers %= cfg.box
    return rate


def pair_distances(cfg: DiskConfiguration) -> np.ndarray:
    """Centre-to-centre distances of all pairs i < j (minimum image when periodic)."""
    d = _separation(cfg.centers[:, None, :], cfg.centers[None, :, :], cfg.box, cfg.periodic)
    return np.hypot(d[..., 0], d[..., 1])[np.triu_indices(cfg.n, 1)]
