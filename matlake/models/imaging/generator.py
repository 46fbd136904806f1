"""Generated two-phase movies with a moving interface: in-situ melting of ice (ice vs water).

These movies are **generated, not measured**.  They stand in for in-situ cryo-TEM
movies of a thin ice film melting (the seed study segments such movies at
400 frames/s and low dose); they have an exact ground truth per frame, so
ensembles can be compared on accuracy, calibration and uncertainty.

Everything is pure and seeded: :func:`generate_movie` with the same
:class:`MovieParameters` (the seed is one of them) returns bit-identical
arrays.  Each random ingredient draws from its own stream
``numpy.random.default_rng([seed, stream, ...])`` (per frame where it changes
with time), so e.g. a new dose level changes only the counting noise.

Model (lengths in pixels, intensities as a fraction of the incident beam)
-----------------------------------------------------------------------
- **Phase field.** A Gaussian random field ``phi`` (white noise smoothed by a
  Gaussian of ``correlation_length`` px, periodic, standardised to zero mean and
  unit variance) plus an optional ramp ``front_gradient * (x / W - 1/2)`` (the
  film melts from one side) and a slow deformation
  ``field_evolution * (cos(a_t) psi_1 + sin(a_t) psi_2)`` with two more such
  fields and ``a_t`` going from 0 to pi/2 over the movie (the interface changes
  shape as well as moving).  Pixel (y, x) of frame t is **ice** when
  ``phi_t > tau_t``; ``tau_t`` is the quantile of ``phi_t`` in the field of view
  that gives the target ice fraction ``f_t``, which falls from
  ``ice_fraction_start`` to ``ice_fraction_end`` linearly in time
  (``melt_profile='linear'``) or as a logistic curve centred on the middle of the
  movie (``'sigmoid'``, steepness ``melt_steepness``).  Ice therefore survives
  longest where ``phi`` is highest and the interface moves into the ice: melting.
  The true fraction of each frame is the mean of its mask (within a pixel's worth
  of ``f_t``).
- **Ice texture: diffraction contrast.** Crystalline ice scatters electrons into
  Bragg beams that the objective aperture removes, so it is darker than liquid
  (mean transmission ``ice_intensity`` < ``water_intensity``), and each grain
  (a Voronoi cell of random seeds, about ``grain_size`` px across) has its own
  orientation, hence its own intensity offset ~ N(0, ``grain_contrast``).  The
  grains are fixed to the film and move with it.
- **Water texture.** Liquid water is amorphous (no diffraction contrast); its
  thickness fluctuates from frame to frame: a fresh correlated field
  (``water_correlation`` px, standard deviation ``water_texture``) per frame.
- **Optics.** The clean image is blurred by a Gaussian point-spread function
  (``psf_sigma`` px) and clipped at 0.
- **Drift.** The film (phase field and grains) moves by ``(drift_y, drift_x)``
  px per frame, applied in whole pixels (``round(v t)``) so masks stay exact.
- **Detector.** An electron-counting camera: electrons ~ Poisson(dose_t x
  intensity) with ``dose`` electrons per pixel per frame (400 frames/s leaves a
  few electrons per pixel), times ``gain`` counts per electron, plus Gaussian
  read noise (``read_noise`` counts).  A fraction ``bad_frame_fraction`` of the
  frames (drawn at random) gets ``bad_frame_dose_factor`` times the dose —
  frames the quality flag should catch; ``frame_dose`` records every frame's
  dose.  Frames are float32 counts, or uint16 (rounded, clipped to 0..65535).

Outputs: frames (T, H, W), masks (T, H, W) uint8 (1 = ice, 0 = water), times
(s, ``t / frame_rate``), true and target ice fractions, and ``parameters``: every
parameter including the seed, the generator's name and version.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GENERATOR_NAME", "GENERATOR_VERSION", "CLASS_NAMES", "MovieParameters", "GeneratedMovie",
           "generate_movie", "generate_dose_series", "parameters_from", "write_imagej_tiff", "write_mask_tiffs"]

GENERATOR_NAME = "matlake-ice-movie"
GENERATOR_VERSION = "1"
CLASS_NAMES = ("water", "ice")  # mask value 0, 1

_PHASE, _GRAINS, _WATER, _BAD, _NOISE = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class MovieParameters:
    """Every parameter of a generated movie (pixels, seconds, fractions of the incident beam)."""

    seed: int = 0
    n_frames: int = 40
    height: int = 128
    width: int = 128
    frame_rate: float = 400.0  # frames per second
    pixel_size_nm: float = 1.0
    ice_fraction_start: float = 0.7
    ice_fraction_end: float = 0.2
    melt_profile: str = "linear"  # 'linear' or 'sigmoid'
    melt_steepness: float = 8.0  # logistic steepness (per movie length) of 'sigmoid'
    correlation_length: float = 10.0  # px
    front_gradient: float = 0.0  # field std per image width
    field_evolution: float = 0.2
    ice_intensity: float = 0.55
    water_intensity: float = 0.75
    grain_size: float = 24.0  # px
    grain_contrast: float = 0.06
    water_texture: float = 0.03
    water_correlation: float = 2.0  # px
    psf_sigma: float = 1.0  # px
    drift_y: float = 0.0  # px per frame
    drift_x: float = 0.0  # px per frame
    dose: float = 20.0  # electrons per pixel per frame
    gain: float = 1.0  # counts per electron
    read_noise: float = 0.0  # counts (standard deviation)
    bad_frame_fraction: float = 0.0
    bad_frame_dose_factor: float = 0.2
    dtype: str = "float32"  # 'float32' or 'uint16'

    def __post_init__(self) -> None:
        problems = []
        if self.n_frames < 1 or self.height < 8 or self.width < 8:
            problems.append(f"n_frames >= 1 and height, width >= 8 (found {self.n_frames}, {self.height}, "
                            f"{self.width})")
        for name in ("ice_fraction_start", "ice_fraction_end", "bad_frame_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                problems.append(f"{name} in [0, 1] (found {v})")
        for name in ("frame_rate", "pixel_size_nm", "dose", "gain", "correlation_length", "grain_size"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} > 0 (found {getattr(self, name)})")
        for name in ("read_noise", "psf_sigma", "water_texture", "grain_contrast", "water_correlation",
                     "bad_frame_dose_factor"):
            if getattr(self, name) < 0:
                problems.append(f"{name} >= 0 (found {getattr(self, name)})")
        if self.melt_profile not in ("linear", "sigmoid"):
            problems.append(f"melt_profile 'linear' or 'sigmoid' (found {self.melt_profile!r})")
        if self.dtype not in ("float32", "uint16"):
            problems.append(f"dtype 'float32' or 'uint16' (found {self.dtype!r})")
        if problems:
            raise ValueError("movie parameters: expected " + "; ".join(problems))


def parameters_from(overrides: dict[str, Any] | None = None, base: MovieParameters | None = None) -> MovieParameters:
    """``base`` (default parameters) with ``overrides``; unknown names are an error listing the known ones."""
    overrides = dict(overrides or {})
    known = {f.name: f for f in fields(MovieParameters)}
    bad = sorted(set(overrides) - set(known))
    if bad:
        raise ValueError(f"movie parameters: unknown name(s) {bad}; known: {sorted(known)}")
    cast = {}
    for k, v in overrides.items():
        t = known[k].type
        cast[k] = int(v) if t in ("int", int) else float(v) if t in ("float", float) else str(v)
    return replace(base or MovieParameters(), **cast)


@dataclass
class GeneratedMovie:
    """A generated movie, its ground truth and every parameter that made it.

    ``frames`` (T, H, W) counts (float32 or uint16); ``masks`` (T, H, W) uint8,
    1 = ice; ``times`` (T,) s; ``ice_fraction`` (T,) the true fraction (mean of
    each mask); ``target_ice_fraction`` (T,) the melting curve the threshold
    followed; ``frame_dose`` (T,) electrons per pixel; ``clean`` (T, H, W)
    float32 noise-free intensity (fraction of the beam).
    """

    frames: np.ndarray
    masks: np.ndarray
    times: np.ndarray
    ice_fraction: np.ndarray
    target_ice_fraction: np.ndarray
    frame_dose: np.ndarray
    clean: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """Short sha256 of the parameters (the same parameters make the same movie)."""
        return parameters_digest(self.parameters)


def parameters_digest(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]


def _gaussian_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A periodic Gaussian random field smoothed at ``sigma`` px, standardised (mean 0, std 1)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    s = f.std()
    return (f - f.mean()) / (s if s > 0 else 1.0)


def _target_fractions(p: MovieParameters) -> np.ndarray:
    s = np.linspace(0.0, 1.0, p.n_frames) if p.n_frames > 1 else np.zeros(1)
    if p.melt_profile == "sigmoid":
        g = 1.0 / (1.0 + np.exp(-p.melt_steepness * (s - 0.5)))
        g0, g1 = 1.0 / (1.0 + math.exp(p.melt_steepness / 2)), 1.0 / (1.0 + math.exp(-p.melt_steepness / 2))
        s = (g - g0) / (g1 - g0)
    return p.ice_fraction_start + (p.ice_fraction_end - p.ice_fraction_start) * s


def _clean(p: MovieParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free intensity (T, H, W) float32, masks (T, H, W) uint8 and the target fractions."""
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    T, H, W = p.n_frames, p.height, p.width
    offs = [(int(round(p.drift_y * t)), int(round(p.drift_x * t))) for t in range(T)]
    oy = [o[0] for o in offs]
    ox = [o[1] for o in offs]
    # The film lives on a canvas large enough for the drift; frame t sees the window moved by -drift.
    pad_y0, pad_x0 = max(oy), max(ox)
    CH, CW = H + pad_y0 - min(oy), W + pad_x0 - min(ox)
    rng = np.random.default_rng([p.seed, _PHASE])
    phi0 = _gaussian_field(rng, (CH, CW), p.correlation_length)
    psi1 = _gaussian_field(rng, (CH, CW), p.correlation_length)
    psi2 = _gaussian_field(rng, (CH, CW), p.correlation_length)
    if p.front_gradient:
        phi0 = phi0 + p.front_gradient * (np.arange(CW)[None, :] / W - 0.5 * CW / W)
    g = np.random.default_rng([p.seed, _GRAINS])
    n_grains = max(1, int(round(CH * CW / p.grain_size ** 2)))
    seeds = g.random((n_grains, 2)) * (CH, CW)
    offsets = g.normal(0.0, p.grain_contrast, n_grains)
    yy, xx = np.mgrid[0:CH, 0:CW]
    _, owner = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel()]))
    ice_tex = (p.ice_intensity + offsets[owner]).reshape(CH, CW)
    target = _target_fractions(p)
    masks = np.empty((T, H, W), np.uint8)
    clean = np.empty((T, H, W), np.float32)
    for t in range(T):
        a = 0.5 * math.pi * (t / (T - 1) if T > 1 else 0.0)
        y0, x0 = pad_y0 - oy[t], pad_x0 - ox[t]
        win = (slice(y0, y0 + H), slice(x0, x0 + W))
        phi = phi0[win] + p.field_evolution * (math.cos(a) * psi1[win] + math.sin(a) * psi2[win])
        f = float(target[t])
        if f <= 0.0:
            ice = np.zeros((H, W), bool)
        elif f >= 1.0:
            ice = np.ones((H, W), bool)
        else:
            ice = phi > np.quantile(phi, 1.0 - f)
        masks[t] = ice
        w = np.random.default_rng([p.seed, _WATER, t])
        water = p.water_intensity + p.water_texture * _gaussian_field(w, (H, W), max(p.water_correlation, 1e-6))
        img = np.where(ice, ice_tex[win], water)
        if p.psf_sigma > 0:
            img = gaussian_filter(img, p.psf_sigma, mode="reflect")
        clean[t] = np.clip(img, 0.0, None)
    return clean, masks, target


def _frame_doses(p: MovieParameters) -> np.ndarray:
    dose = np.full(p.n_frames, float(p.dose))
    n_bad = int(round(p.bad_frame_fraction * p.n_frames))
    if n_bad:
        bad = np.random.default_rng([p.seed, _BAD]).choice(p.n_frames, n_bad, replace=False)
        dose[bad] *= p.bad_frame_dose_factor
    return dose


def _noisy(p: MovieParameters, clean: np.ndarray, dose: np.ndarray) -> np.ndarray:
    out = np.empty(clean.shape, np.float32 if p.dtype == "float32" else np.uint16)
    for t in range(clean.shape[0]):
        r = np.random.default_rng([p.seed, _NOISE, t])
        counts = p.gain * r.poisson(dose[t] * clean[t].astype(np.float64)).astype(np.float64)
        if p.read_noise > 0:
            counts = counts + r.normal(0.0, p.read_noise, counts.shape)
        out[t] = counts if p.dtype == "float32" else np.clip(np.rint(counts), 0, 65535)
    return out


def _record(p: MovieParameters) -> dict[str, Any]:
    return {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, **asdict(p)}


def generate_movie(params: MovieParameters | None = None, **overrides: Any) -> GeneratedMovie:
    """A two-phase melting movie with its ground truth (see the module docstring).

    ``generate_movie(seed=3, n_frames=20)`` is ``generate_movie(MovieParameters(seed=3, n_frames=20))``.
    """
    p = parameters_from(overrides, params)
    clean, masks, target = _clean(p)
    dose = _frame_doses(p)
    frames = _noisy(p, clean, dose)
    times = np.arange(p.n_frames, dtype=np.float64) / p.frame_rate
    return GeneratedMovie(frames=frames, masks=masks, times=times,
                          ice_fraction=masks.reshape(p.n_frames, -1).mean(axis=1), target_ice_fraction=target,
                          frame_dose=dose, clean=clean, parameters=_record(p))


def generate_dose_series(params: MovieParameters, doses: list[float] | tuple[float, ...]) -> list[GeneratedMovie]:
    """The same film and ground truth imaged at several ``doses`` (electrons per pixel per frame).

    The clean movie is computed once; each dose is :func:`generate_movie` with that
    ``dose`` (bit-identical to calling it on its own)."""
    if not doses:
        raise ValueError("generate_dose_series: expected at least one dose, found none")
    clean, masks, target = _clean(params)
    out = []
    for d in doses:
        p = replace(params, dose=float(d))
        dose = _frame_doses(p)
        out.append(GeneratedMovie(frames=_noisy(p, clean, dose), masks=masks, times=np.arange(p.n_frames) / p.frame_rate,
                                  ice_fraction=masks.reshape(p.n_frames, -1).mean(axis=1), target_ice_fraction=target,
                                  frame_dose=dose, clean=clean, parameters=_record(p)))
    return out


def write_imagej_tiff(movie: GeneratedMovie, path: str | Path) -> Path:
    """Write ``movie.frames`` as a multi-page ImageJ hyperstack TIFF (axes TYX) with its
    calibration: pixel size in nm (``resolution`` = pixels per nm, ``unit`` 'nm') and the
    frame interval (``finterval``, s); the generator parameters go into ImageJ's ``Info``."""
    import tifffile

    p = movie.parameters
    px = float(p["pixel_size_nm"])
    path = Path(path)
    tifffile.imwrite(path, movie.frames, imagej=True, resolution=(1.0 / px, 1.0 / px),
                     metadata={"axes": "TYX", "unit": "nm", "finterval": 1.0 / float(p["frame_rate"]),
                               "Info": json.dumps(p, sort_keys=True)})
    return path


def write_mask_tiffs(movie: GeneratedMovie, folder: str | Path, stem: str = "mask") -> list[Path]:
    """Write each frame's ground-truth mask as a single-page uint8 TIFF ``<stem>_<t:05d>.tif``
    (0 = water, 1 = ice), to be ingested with ``--kind mask --option for=IMAGE_ID
    --option classes=water:0,ice:1 --option mask_kind=ground_truth``."""
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, mask in enumerate(movie.masks):
        path = folder / f"{stem}_{t:05d}.tif"
        tifffile.imwrite(path, np.ascontiguousarray(mask, dtype=np.uint8))
        paths.append(path)
    return paths
