"""Coherent far-field speckle patterns of disk configurations (pure, seeded).

Physics (kinematic / first Born approximation, far field):

- **object**: the projected density ``rho`` of a :class:`~.disks.DiskConfiguration`
  on an ``n_grid x n_grid`` grid covering the box (pixel ``box / n_grid``); each
  pixel holds the fraction of its area covered by disks (anti-aliased by
  ``supersample^2`` sub-pixel samples), so ``sum(rho) * pixel^2`` is the disks'
  area.  A periodic box wraps disks across the edges.
- **illumination**: a Gaussian probe amplitude ``exp(-|r - c|^2 / (2 sigma^2))``
  centred in the box (``probe_sigma`` in box units), a given complex array, or a
  flat beam (``probe_sigma=None``).
- **far field**: ``I(q) = |FFT2(rho * probe)|^2``, fftshifted so that q = 0 is pixel
  ``(n_grid // 2, n_grid // 2)``; one detector pixel is ``dq = 2 pi / box``
  (rad per box unit).  For one disk of radius R under a flat beam this is the Airy
  pattern ``(pi R^2)^2 [2 J1(qR) / (qR)]^2`` (times the pixel's own transfer
  function), which the tests check.
- **beam stop**: a central disk of ``beam_stop_radius`` detector pixels is not
  measured (``mask`` = 0 there, 1 elsewhere; its pixels read 0).
- **counts**: the intensity on the valid pixels is scaled so that its expected
  sum is ``counts`` and each pixel is drawn from a Poisson law with its own
  stream ``default_rng(noise_seed)``; ``counts=None`` returns the noiseless
  intensity (unscaled, beam stop zeroed).

Every number needed to regenerate a pattern exactly is in its ``parameters``
dict (:func:`simulate_pattern` of :class:`PatternParams` built from it).  A data
set (:func:`build_dataset`) has K classes of disk number density with ``n_per_class``
patterns each; pattern ``i`` of class ``k`` draws its configuration and noise seeds
from ``numpy.random.SeedSequence([seed, k, i])``, so it does not depend on how
many patterns are made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

import numpy as np

from matlake.models.scattering.disks import DiskConfiguration, DiskParams, make_configuration

NAME = "matlake-speckle"
VERSION = "1"


# --------------------------------------------------------------------------- object and far field
def rasterize(cfg: DiskConfiguration, n_grid: int, supersample: int = 4) -> np.ndarray:
    """Area coverage of each pixel by the disks, shape ``(n_grid, n_grid)`` (dimensionless, 0..1 where disks
    do not overlap).  Row index = y, column = x; pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)`` pixels."""
    rho = np.zeros((n_grid, n_grid))
    if cfg.n == 0:
        return rho
    px = cfg.box / n_grid
    s = int(supersample)
    m = int(math.ceil(2 * float(cfg.radii.max()) / px)) + 2  # pixels spanned by the largest disk, + margin
    start = np.floor((cfg.centers - cfg.radii[:, None]) / px).astype(int)  # (n, 2) first pixel (x, y)
    sub = (np.arange(m * s) + 0.5) / s  # sub-pixel sample offsets, in pixels from the first pixel
    # sample coordinates relative to each disk's centre, in box units
    dx = (start[:, 0, None] + sub[None, :]) * px - cfg.centers[:, 0, None]  # (n, m*s)
    dy = (start[:, 1, None] + sub[None, :]) * px - cfg.centers[:, 1, None]
    inside = (dy[:, :, None] ** 2 + dx[:, None, :] ** 2) <= cfg.radii[:, None, None] ** 2  # (n, y, x)
    cover = inside.reshape(cfg.n, m, s, m, s).mean(axis=(2, 4))  # (n, m, m)
    iy = start[:, 1, None] + np.arange(m)[None, :]  # (n, m)
    ix = start[:, 0, None] + np.arange(m)[None, :]
    if cfg.periodic:
        iy %= n_grid
        ix %= n_grid
        np.add.at(rho, (iy[:, :, None], ix[:, None, :]), cover)
    else:
        ok = (iy[:, :, None] >= 0) & (iy[:, :, None] < n_grid) & (ix[:, None, :] >= 0) & (ix[:, None, :] < n_grid)
        yy = np.broadcast_to(iy[:, :, None], ok.shape)[ok]
        xx = np.broadcast_to(ix[:, None, :], ok.shape)[ok]
        np.add.at(rho, (yy, xx), cover[ok])
    return rho


def gaussian_probe(n_grid: int, box: float, sigma: float | None) -> np.ndarray:
    """Gaussian probe amplitude (peak 1) of standard deviation ``sigma`` (box units) centred in the box,
    sampled at pixel centres; all ones when ``sigma`` is None (a flat beam)."""
    if sigma is None:
        return np.ones((n_grid, n_grid))
    px = box / n_grid
    x = (np.arange(n_grid) + 0.5) * px - box / 2
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    return np.exp(-r2 / (2 * sigma ** 2))


def far_field(exit_wave: np.ndarray) -> np.ndarray:
    """``|FFT2(exit_wave)|^2`` with q = 0 moved to pixel ``(n // 2, n // 2)``."""
    f = np.fft.fftshift(np.fft.fft2(exit_wave))
    return f.real ** 2 + f.imag ** 2


def q_radius(n_grid: int, box: float) -> np.ndarray:
    """|q| of each detector pixel (rad per box unit) for the fftshifted pattern."""
    k = (np.arange(n_grid) - n_grid // 2) * (2 * math.pi / box)
    return np.hypot(k[None, :], k[:, None])


def beam_stop_mask(n_grid: int, radius_px: float) -> np.ndarray:
    """uint8 mask, 1 = measured, 0 = behind a central beam stop of ``radius_px`` detector pixels."""
    k = np.arange(n_grid) - n_grid // 2
    return (np.hypot(k[None, :], k[:, None]) > radius_px).astype(np.uint8)


def apply_counts(intensity: np.ndarray, mask: np.ndarray, counts: float | None,
                 rng: np.random.Generator | None) -> np.ndarray:
    """Scale ``intensity`` on the valid pixels to an expected total of ``counts`` and draw Poisson
    counts (float64 of integers); masked pixels read 0.  ``counts=None``: the masked intensity unscaled."""
    valid = intensity * mask
    if counts is None:
        return valid
    total = valid.sum()
    if not total > 0:
        raise ValueError("the pattern has no intensity on the measured pixels")
    lam = valid * (float(counts) / total)
    return rng.poisson(lam).astype(np.float64)


# --------------------------------------------------------------------------- one pattern
@dataclass(frozen=True)
class PatternParams:
    """Everything one speckle pattern is made from (lengths in box units)."""

    disks: DiskParams
    n_grid: int = 64
    supersample: int = 4
    probe_sigma: float | None = 12.0
    beam_stop_radius: float = 2.0  # detector pixels
    counts: float | None = 1e5  # expected total counts on the measured pixels
    noise_seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["disks"] = self.disks.as_dict()
        return {"generator": NAME, "generator_version": VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PatternParams":
        """Inverse of :meth:`as_dict`; other keys (generator name, achieved values, indices) are ignored."""
        own = {f.name for f in fields(cls)} - {"disks"}
        disk_fields = {f.name for f in fields(DiskParams)}
        disks = {k: v for k, v in d["disks"].items() if k in disk_fields}
        return cls(disks=DiskParams(**disks), **{k: v for k, v in d.items() if k in own})


@dataclass
class SpecklePattern:
    intensity: np.ndarray  # (n_grid, n_grid) counts (or noiseless intensity)
    mask: np.ndarray  # uint8, 1 = measured
    configuration: DiskConfiguration
    parameters: dict[str, Any]


def simulate_pattern(params: PatternParams, probe: np.ndarray | None = None) -> SpecklePattern:
    """The speckle pattern of ``params``; a given complex ``probe`` replaces the Gaussian one (then it is
    not in ``parameters`` and the caller keeps it)."""
    cfg = make_configuration(params.disks)
    rho = rasterize(cfg, params.n_grid, params.supersample)
    if probe is None:
        probe = gaussian_probe(params.n_grid, params.disks.box, params.probe_sigma)
    elif probe.shape != rho.shape:
        raise ValueError(f"probe shape {probe.shape} does not match the grid {rho.shape}")
    intensity = far_field(rho * probe)
    mask = beam_stop_mask(params.n_grid, params.beam_stop_radius)
    rng = np.random.default_rng(params.noise_seed)
    out = apply_counts(intensity, mask, params.counts, rng)
    parameters = params.as_dict()
    parameters["achieved"] = {"n_disks": cfg.n, "number_density": cfg.number_density,
                              "area_fraction": cfg.area_fraction, **cfg.stats}
    return SpecklePattern(intensity=out, mask=mask, configuration=cfg, parameters=parameters)


# --------------------------------------------------------------------------- data sets
@dataclass(frozen=True)
class SpeckleSpec:
    """A classification data set: K classes of disk number density (disks per box unit^2)."""

    number_densities: tuple[float, ...] = (0.008, 0.016, 0.024, 0.032)
    n_per_class: int = 50
    n_grid: int = 64
    box: float = 64.0
    radius: float = 2.0
    polydispersity: float = 0.0
    counts: float | None = 1e5
    probe_sigma: float | None = 12.0
    beam_stop_radius: float = 2.0
    supersample: int = 4
    periodic: bool = True
    method: str = "rsa"
    mc_sweeps: int = 20
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["number_densities"] = list(self.number_densities)
        return {"generator": NAME, "generator_version": VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeckleSpec":
        own = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in own}
        if "number_densities" in d:
            d["number_densities"] = tuple(float(x) for x in d["number_densities"])
        return cls(**d)

    def with_(self, **changes: Any) -> "SpeckleSpec":
        return replace(self, **changes)

    def pattern_params(self, k: int, i: int) -> PatternParams:
        """The parameters of pattern ``i`` of class ``k`` (its seeds from ``SeedSequence([seed, k, i])``)."""
        disk_seed, noise_seed = (int(x) for x in
                                 np.random.SeedSequence([self.seed, k, i]).generate_state(2, dtype=np.uint32))
        disks = DiskParams(box=self.box, radius=self.radius, polydispersity=self.polydispersity,
                           number_density=float(self.number_densities[k]), periodic=self.periodic,
                           method=self.method, mc_sweeps=self.mc_sweeps, seed=disk_seed)
        return PatternParams(disks=disks, n_grid=self.n_grid, supersample=self.supersample,
                             probe_sigma=self.probe_sigma, beam_stop_radius=self.beam_stop_radius,
                             counts=self.counts, noise_seed=noise_seed)


@dataclass
class SpeckleDataset:
    patterns: np.ndarray  # (n, n_grid, n_grid) float32 counts
    labels: np.ndarray  # (n,) int64 class index
    mask: np.ndarray  # (n_grid, n_grid) uint8
    class_values: list[float]  # number density of each class
    parameters: list[dict[str, Any]]  # one per pattern, regenerates it
    spec: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.labels))


def build_dataset(spec: SpeckleSpec, classes: Sequence[int] | None = None) -> SpeckleDataset:
    """``spec.n_per_class`` patterns for each density class (all, or the indices in ``classes``)."""
    ks = list(range(len(spec.number_densities))) if classes is None else list(classes)
    patterns, labels, params = [], [], []
    mask = beam_stop_mask(spec.n_grid, spec.beam_stop_radius)
    for k in ks:
        for i in range(spec.n_per_class):
            p = simulate_pattern(spec.pattern_params(k, i))
            patterns.append(p.intensity.astype(np.float32))
            labels.append(k)
            params.append({**p.parameters, "class_index": k, "pattern_index": i})
    n = spec.n_grid
    return SpeckleDataset(patterns=np.stack(patterns) if patterns else np.zeros((0, n, n), np.float32),
                          labels=np.asarray(labels, dtype=np.int64), mask=mask,
                          class_values=[float(x) for x in spec.number_densities], parameters=params,
                          spec=spec.as_dict())


def radial_profile(patterns: np.ndarray, mask: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Azimuthal mean of each pattern over the measured pixels in integer-radius rings (detector pixels),
    shape ``(n, n_bins)``; rings with no measured pixel read 0."""
    n = patterns.shape[-1]
    k = np.arange(n) - n // 2
    ring = np.rint(np.hypot(k[None, :], k[:, None])).astype(int)
    n_bins = n_bins or n // 2
    ring = np.where((ring < n_bins) & (mask > 0), ring, n_bins)  # masked/outer pixels go to a dropped bin
    flat = ring.ravel()
    counts = np.bincount(flat, minlength=n_bins + 1)[:n_bins]
    x = patterns.reshape(len(patterns), -1)
    sums = np.zeros((len(patterns), n_bins + 1))
    for b in range(n_bins):  # n_bins small; vectorised over patterns
        sums[:, b] = x[:, flat == b].sum(axis=1)
    return np.where(counts > 0, sums[:, :n_bins] / np.maximum(counts, 1), 0.0)
