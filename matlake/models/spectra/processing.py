"""Processing of spectra: pure steps, pipelines of them, and the featurizer that records them.

Pure steps (numpy arrays; energies in eV; nothing here touches the lake except
the functions in the last section, which go through the platform):

- :func:`shift_energy` moves the axis by a given dE (eV);
  :func:`align_to_reference` finds the dE that lines a spectrum up with a
  reference, by maximising the correlation of their derivatives (or by matching
  E0), and reports it;
- :func:`broaden` convolves with a Gaussian or Lorentzian of a given FWHM (eV)
  on any (non-uniform) axis, preserving area;
- :func:`max_normalize` divides by the maximum; larch-like pre-edge
  normalisation is :func:`matlake.models.spectra.normalization.pre_edge`;
- :func:`interpolate_to_grid` puts a spectrum on a named grid (and says by how
  much a spectrum falls short of it).

A :class:`Pipeline` is an ordered list of :class:`Step` s with their parameters
(JSON in ``spectra_processed.steps_json``, each step with what it resolved: the
alignment shift found, E0 and the fit ranges used, the grid's extent);
:func:`run_pipeline` applies one to arrays.  Built-in pipelines (:func:`builtin_pipeline`): ``xanes-study`` (shift,
3 eV FWHM Gaussian, max-normalise, ``xanes-ni-k``: the XANES featurization
study's treatment of computed spectra) and ``normalize`` (pre-edge
normalisation, optionally onto a grid).

:class:`SpectrumProcessor` is the :class:`~matlake.models.base.Featurizer` that
runs a pipeline over ``spectra`` rows; :func:`process` hands it to
:func:`matlake.platform.modeling.featurize` (one activity per run, a
per-spectrum failure recorded while the others commit, unchanged spectra
skipped).  :func:`add_grid` / :func:`list_grids` manage user grids
(``spectral_grids`` rows).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matlake.models.base import Featurizer, derived_record_id
from matlake.models.spectra.grids import BUILTIN_GRIDS, Grid, grid_from_row, resolve_grid

if TYPE_CHECKING:
    import pandas as pd

    from matlake.platform.lake import Lake
    from matlake.platform.modeling import FeaturizeReport

__all__ = [
    "GridCoverageError", "interpolate_to_grid", "shift_energy", "Alignment", "align_to_reference", "broaden",
    "max_normalize", "Step", "Pipeline", "STEP_KINDS", "ProcessedSpectrum", "run_pipeline", "builtin_pipeline",
    "BUILTIN_PIPELINES", "SpectrumProcessor", "process", "add_grid", "list_grids", "user_grid_rows",
    "PROCESSING_VERSION",
]

# Bump when a step's science changes, so re-runs add versions of the processed records.
PROCESSING_VERSION = "1"


class GridCoverageError(ValueError):
    """The spectrum does not cover the grid's range; the message says by how much."""


def interpolate_to_grid(x: np.ndarray, y: np.ndarray, grid: Grid, tolerance: float = 1e-6) -> np.ndarray:
    """Linear interpolation of (x, y) onto ``grid`` (same unit as ``x``).

    Raises :class:`GridCoverageError` when the grid reaches beyond the data by
    more than ``tolerance`` (in the axis unit), naming the grid, the data range
    and the shortfall at each end: extrapolating would invent intensity.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    g = grid.array
    short_low = x[0] - g[0]
    short_high = g[-1] - x[-1]
    if short_low > tolerance or short_high > tolerance:
        parts = []
        if short_low > tolerance:
            parts.append(f"starts {short_low:.4g} {grid.unit} above the grid start {g[0]:.6g}")
        if short_high > tolerance:
            parts.append(f"ends {short_high:.4g} {grid.unit} below the grid end {g[-1]:.6g}")
        raise GridCoverageError(
            f"grid {grid.name}: expected data covering {g[0]:.6g}-{g[-1]:.6g} {grid.unit}, "
            f"found {x[0]:.6g}-{x[-1]:.6g} ({'; '.join(parts)})")
    return np.interp(np.clip(g, x[0], x[-1]), x, y)


# --------------------------------------------------------------------------- shift and alignment


def shift_energy(x: np.ndarray, delta_ev: float) -> np.ndarray:
    """The axis moved by ``delta_ev`` (eV): E' = E + dE (the intensities stay as they are)."""
    if not math.isfinite(delta_ev):
        raise ValueError(f"shift: expected a finite dE in eV, found {delta_ev}")
    return np.asarray(x, dtype=float) + float(delta_ev)


@dataclass(frozen=True)
class Alignment:
    """The shift (eV) to add to a spectrum's axis so it lines up with the reference.

    ``score`` is the Pearson correlation of the derivatives over the window at that
    shift (``method='derivative'``; NaN for ``'e0'``); ``window`` the energies compared
    (eV, absolute, on the reference's axis); ``reference_e0``/``e0`` the edge energies.
    """

    shift_ev: float
    method: str
    score: float
    window: tuple[float, float]
    reference_e0: float
    e0: float | None = None


def _derivative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.gradient(y, x)


def align_to_reference(x: np.ndarray, y: np.ndarray, reference_x: np.ndarray, reference_y: np.ndarray, *,
                       method: str = "derivative", window: tuple[float, float] = (-20.0, 40.0),
                       max_shift: float = 20.0, reference_e0: float | None = None) -> Alignment:
    """The energy shift dE (eV) that aligns (x, y) with the reference: x + dE matches reference_x.

    ``method='derivative'`` (default): maximise the Pearson correlation of dy/dE of
    the shifted spectrum and of the reference over ``window`` (eV relative to the
    reference's E0, which is found with larch's rule unless given), for |dE| <=
    ``max_shift`` eV.  Both axes increase (eV).  The derivatives are compared on a uniform
    axis 4x finer than the reference's median step in the window (0.005-0.05 eV); the derivative of
    the shifted spectrum is read off by linear interpolation (zero outside its
    data).  A scan in 0.1 eV steps finds the best shift, a bounded scalar search
    refines it to 1e-4 eV.  Scale and offset do not matter (correlation).
    ``method='e0'``: dE = E0(reference) - E0(spectrum).
    """
    from matlake.models.spectra.normalization import find_e0

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    rx = np.asarray(reference_x, dtype=float)
    ry = np.asarray(reference_y, dtype=float)
    e0_ref = float(reference_e0) if reference_e0 is not None else find_e0(rx, ry)
    if method == "e0":
        e0 = find_e0(x, y)
        return Alignment(e0_ref - e0, "e0", math.nan, (e0_ref, e0_ref), e0_ref, e0)
    if method != "derivative":
        raise ValueError(f"alignment method: expected 'derivative' or 'e0', found {method!r}")
    if not (math.isfinite(max_shift) and max_shift > 0):
        raise ValueError(f"alignment max_shift: expected a positive number of eV, found {max_shift}")
    lo, hi = max(e0_ref + window[0], rx[0]), min(e0_ref + window[1], rx[-1])
    inside = (rx >= lo) & (rx <= hi)
    if hi <= lo or inside.sum() < 4:
        raise ValueError(f"alignment window: expected at least 4 reference points in {e0_ref + window[0]:.6g}-"
                         f"{e0_ref + window[1]:.6g} eV, found {int(inside.sum())}")
    step = min(0.05, max(0.005, float(np.median(np.diff(rx[inside]))) / 4.0))
    grid = np.arange(lo, hi + 0.5 * step, step)
    d_ref = np.interp(grid, rx, _derivative(rx, ry))
    d_ref = d_ref - d_ref.mean()
    d_dat = _derivative(x, y)
    ref_norm = float(np.sqrt(np.sum(d_ref**2)))
    if ref_norm == 0:
        raise ValueError("reference: expected a spectrum whose derivative varies in the alignment window, "
                         "found a constant")

    def correlation(shift: float) -> float:
        d = np.interp(grid - shift, x, d_dat, left=0.0, right=0.0)
        d = d - d.mean()
        n = float(np.sqrt(np.sum(d**2)))
        return float(np.dot(d, d_ref) / (n * ref_norm)) if n > 0 else -1.0

    coarse = np.arange(-max_shift, max_shift + 1e-9, 0.1)
    scores = np.array([correlation(s) for s in coarse])
    best = float(coarse[int(np.argmax(scores))])
    from scipy.optimize import minimize_scalar

    lo_s, hi_s = max(-max_shift, best - 0.15), min(max_shift, best + 0.15)
    res = minimize_scalar(lambda s: -correlation(s), bounds=(lo_s, hi_s), method="bounded",
                          options={"xatol": 1e-4})
    shift, score = (float(res.x), -float(res.fun)) if -res.fun >= scores.max() else (best, float(scores.max()))
    return Alignment(shift, "derivative", score, (float(lo), float(hi)), e0_ref)


# --------------------------------------------------------------------------- broadening

BROADENING_SHAPES = ("gaussian", "lorentzian")
_MAX_FINE_POINTS = 400_000
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # Gaussian FWHM = 2.3548 sigma


def _kernel_cdf(t: np.ndarray, fwhm: float, shape: str) -> np.ndarray:
    """Cumulative distribution of a unit-area Gaussian or Lorentzian of the given FWHM at offsets t."""
    if shape == "gaussian":
        from scipy.special import ndtr

        return ndtr(t / (fwhm / _FWHM_PER_SIGMA))
    return 0.5 + np.arctan(2.0 * t / fwhm) / np.pi


def broaden(x: np.ndarray, y: np.ndarray, fwhm_ev: float, shape: str = "gaussian", *,
            points_per_fwhm: int = 20) -> np.ndarray:
    """``y`` convolved with a unit-area Gaussian or Lorentzian of full width at half maximum ``fwhm_ev``.

    ``x`` in eV (increasing, possibly non-uniform); returns the broadened intensity on ``x``.

    How: ``y`` is resampled linearly onto a uniform axis with a step of
    FWHM/``points_per_fwhm``, or the smallest step of ``x`` when that is smaller (but
    not below FWHM/200), convolved, and interpolated back onto ``x``.  Each kernel
    weight is the kernel's exact area over its bin (CDF differences), so the
    weights plus the tails sum to 1 and area is preserved.

    Edges: outside the data the spectrum is taken to continue at its end values
    (constant extension), so a flat pre-edge or post-edge stays flat instead of
    drooping toward zero.  The kernel reaches over the whole data range (a
    Gaussian stops at 8 sigma, where nothing is left); the part of a Lorentzian's
    tails beyond that only ever sees the constant extension, so it is added
    exactly as (tail area) x (end value).  Area: the integral over the data range
    is preserved for features whose broadened tails stay inside the range (with
    constant ends, what leaks out at one end is what the extension brings in).
    """
    if shape not in BROADENING_SHAPES:
        raise ValueError(f"broadening shape: expected one of {BROADENING_SHAPES}, found {shape!r}")
    if not (math.isfinite(fwhm_ev) and fwhm_ev >= 0):
        raise ValueError(f"broadening FWHM: expected a finite width >= 0 eV, found {fwhm_ev}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size < 2 or fwhm_ev == 0:
        return y.copy()
    span = float(x[-1] - x[0])
    # finer than the data's smallest step (no detail lost), but never below FWHM/200: details that
    # fine are smeared by the kernel anyway, and a near-duplicate point must not blow up the work
    h = max(min(fwhm_ev / points_per_fwhm, float(np.diff(x).min())), fwhm_ev / 200.0)
    reach = span if shape == "lorentzian" else min(span, 8.0 * fwhm_ev / _FWHM_PER_SIGMA)
    h = max(h, (span + 2.0 * reach) / _MAX_FINE_POINTS)  # bounded work for long, finely sampled data
    n_reach = int(math.ceil(reach / h))
    n_data = int(math.ceil(span / h)) + 1
    fine = x[0] + h * np.arange(-n_reach, n_data + n_reach)
    padded = np.interp(fine, x, y)  # np.interp holds the end values beyond the data: constant extension
    offsets = h * np.arange(-n_reach, n_reach + 1)
    cdf = _kernel_cdf(np.concatenate([offsets - 0.5 * h, offsets[-1:] + 0.5 * h]), fwhm_ev, shape)
    weights = np.diff(cdf)
    tail = 0.5 * (1.0 - weights.sum())  # area beyond the reach on each side (symmetric kernel)
    from scipy.signal import fftconvolve

    smooth = fftconvolve(padded, weights, mode="valid")  # length n_data: one value per in-range fine point
    smooth += tail * (y[0] + y[-1])
    return np.interp(x, fine[n_reach:n_reach + n_data], smooth)


def max_normalize(y: np.ndarray) -> np.ndarray:
    """``y`` divided by its maximum (dimensionless, maximum 1)."""
    y = np.asarray(y, dtype=float)
    top = float(np.nanmax(y)) if y.size else math.nan
    if not (math.isfinite(top) and top > 0):
        raise ValueError(f"intensity: expected a positive finite maximum to normalise by, found {top}")
    return y / top


# --------------------------------------------------------------------------- pipelines

STEP_KINDS = ("shift", "align", "broaden", "normalize", "max_normalize", "grid")
_STEP_PARAMS: dict[str, dict[str, tuple[type, ...]]] = {
    "shift": {"delta_ev": (int, float)},
    "align": {"reference": (str,), "method": (str,), "window": (list,), "max_shift": (int, float)},
    "broaden": {"fwhm_ev": (int, float), "shape": (str,)},
    "normalize": {"e0": (int, float, type(None)), "step": (int, float, type(None)), "pre1": (int, float, type(None)),
                  "pre2": (int, float, type(None)), "norm1": (int, float, type(None)),
                  "norm2": (int, float, type(None)), "nnorm": (int, type(None)), "npre": (int,),
                  "output": (str,)},
    "max_normalize": {},
    "grid": {"grid": (str,)},
}
_REQUIRED = {"shift": ("delta_ev",), "align": ("reference",), "broaden": ("fwhm_ev",), "grid": ("grid",)}
NORMALIZE_OUTPUTS = ("norm", "flat")


@dataclass(frozen=True)
class Step:
    """One processing step: ``kind`` (one of :data:`STEP_KINDS`) and its parameters.

    shift: ``delta_ev`` (eV).  align: ``reference`` (the record_id of a ``spectra`` row), ``method``
    derivative|e0, ``window`` [low, high] eV relative to the reference's E0, ``max_shift`` (eV).
    broaden: ``fwhm_ev`` (eV), ``shape`` gaussian|lorentzian.
    normalize: larch's ``e0``, ``step``, ``pre1``, ``pre2``, ``norm1``, ``norm2`` (eV relative
    to E0), ``nnorm``, ``npre``, and ``output`` norm|flat.  max_normalize: none.
    grid: ``grid`` (a grid name).
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"step: expected one of {STEP_KINDS}, found {self.kind!r}")
        allowed = _STEP_PARAMS[self.kind]
        for key, value in self.params.items():
            if key not in allowed:
                raise ValueError(f"step {self.kind}: unknown parameter {key!r}; expected one of {sorted(allowed)}")
            if not isinstance(value, allowed[key]) or isinstance(value, bool):
                raise ValueError(f"step {self.kind}: parameter {key} expected "
                                 f"{'/'.join(t.__name__ for t in allowed[key])}, found {value!r}")
        for key in _REQUIRED.get(self.kind, ()):
            if key not in self.params:
                raise ValueError(f"step {self.kind}: missing parameter {key!r}")
        if self.kind == "broaden" and self.params.get("shape", "gaussian") not in BROADENING_SHAPES:
            raise ValueError(f"step broaden: shape expected one of {BROADENING_SHAPES}, "
                             f"found {self.params['shape']!r}")
        if self.kind == "align":
            window = self.params.get("window", [-20.0, 40.0])
            if (len(window) != 2 or not all(isinstance(v, (int, float)) for v in window)
                    or not window[0] < window[1]):
                raise ValueError(f"step align: window expected [low, high] eV relative to E0, found {window!r}")
            if self.params.get("method", "derivative") not in ("derivative", "e0"):
                raise ValueError(f"step align: method expected 'derivative' or 'e0', found {self.params['method']!r}")
        if self.kind == "normalize" and self.params.get("output", "norm") not in NORMALIZE_OUTPUTS:
            raise ValueError(f"step normalize: output expected one of {NORMALIZE_OUTPUTS}, "
                             f"found {self.params['output']!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.kind, **self.params}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Step":
        if "step" not in data:
            raise ValueError(f"step: expected an object with a 'step' key, found {dict(data)!r}")
        return cls(str(data["step"]), {k: v for k, v in data.items() if k != "step"})


@dataclass(frozen=True)
class Pipeline:
    """A named, ordered list of steps (JSON: ``[{"step": kind, param: value, ...}, ...]``)."""

    name: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise ValueError(f"pipeline name: expected letters, digits, '.', '_' or '-', found {self.name!r}")
        if not self.steps:
            raise ValueError(f"pipeline {self.name}: expected at least one step, found none")
        kinds = [s.kind for s in self.steps]
        if "grid" in kinds[:-1]:
            raise ValueError(f"pipeline {self.name}: the grid step must be the last, found steps {kinds}")

    @property
    def grid_name(self) -> str | None:
        last = self.steps[-1]
        return last.params["grid"] if last.kind == "grid" else None

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]

    def to_json(self) -> str:
        return json.dumps(self.to_list(), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, text: str) -> "Pipeline":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"pipeline {name}: expected a JSON list of steps, found invalid JSON ({exc})") from None
        if not isinstance(data, list):
            raise ValueError(f"pipeline {name}: expected a JSON list of steps, found {type(data).__name__}")
        return cls(name, tuple(Step.from_dict(d) for d in data))


def xanes_study_pipeline(shift_ev: float, fwhm_ev: float = 3.0, grid: str | None = "xanes-ni-k") -> Pipeline:
    """The XANES featurization study's treatment of computed spectra: shift by ``shift_ev``
    (the study used +120 eV), Gaussian broadening of ``fwhm_ev`` (3 eV) FWHM,
    max-normalisation, interpolation onto ``grid`` (``xanes-ni-k``)."""
    steps = [Step("shift", {"delta_ev": float(shift_ev)}),
             Step("broaden", {"fwhm_ev": float(fwhm_ev), "shape": "gaussian"}),
             Step("max_normalize")]
    if grid:
        steps.append(Step("grid", {"grid": grid}))
    return Pipeline("xanes-study", tuple(steps))


def normalize_pipeline(grid: str | None = None, **larch_params: Any) -> Pipeline:
    """Pre-edge normalisation (larch's rules; parameters as :class:`Step` ``normalize``), then ``grid``."""
    params = {k: v for k, v in larch_params.items() if v is not None}
    steps = [Step("normalize", params)]
    if grid:
        steps.append(Step("grid", {"grid": grid}))
    return Pipeline("normalize", tuple(steps))


BUILTIN_PIPELINES = {"xanes-study": xanes_study_pipeline, "normalize": normalize_pipeline}


def builtin_pipeline(name: str, **options: Any) -> Pipeline:
    """A built-in pipeline by name (:data:`BUILTIN_PIPELINES`) with its options."""
    try:
        make = BUILTIN_PIPELINES[name]
    except KeyError:
        raise ValueError(f"pipeline: expected one of {sorted(BUILTIN_PIPELINES)}, found {name!r}") from None
    return make(**options)


@dataclass(frozen=True)
class ProcessedSpectrum:
    """A pipeline's result.  Energies in eV; ``pre_edge_line`` = [slope per eV, intercept];
    ``post_edge_poly`` in (E - E0), lowest first; ``steps`` = each step's parameters plus
    what it resolved (E0 and the ranges used, the grid's extent)."""

    axis: np.ndarray
    intensity: np.ndarray
    axis_unit: str
    intensity_quantity: str
    grid_name: str | None
    steps: list[dict[str, Any]]
    e0: float | None = None
    edge_step: float | None = None
    pre_edge_line: list[float] | None = None
    post_edge_poly: list[float] | None = None


def _prepare(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    from matlake.models.spectra.normalization import finite_points

    try:
        x, y = finite_points(x, y, "axis", "intensity")
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if not np.all(np.diff(x) > 0):
        bad = int(np.flatnonzero(np.diff(x) <= 0)[0])
        raise ValueError(f"{what}: field axis expected strictly increasing values, found {x[bad]:.6g} then "
                         f"{x[bad + 1]:.6g} at index {bad}")
    return x, y


def run_pipeline(pipeline: Pipeline, x: np.ndarray, y: np.ndarray, *, axis_unit: str = "eV",
                 intensity_quantity: str | None = "mu", grids: Mapping[str, Grid] | None = None,
                 references: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 what: str = "spectrum") -> ProcessedSpectrum:
    """Apply ``pipeline`` to (x, y).  ``x`` in ``axis_unit`` (energy steps need eV), increasing;
    non-finite points are dropped.  ``grids`` maps grid names to grids (built-ins are known
    without it); ``references`` maps the record ids that align steps name to their (axis in
    eV, intensity).  ``what`` names the spectrum in error messages."""
    x, y = _prepare(x, y, what)
    quantity = intensity_quantity or "intensity"
    out: dict[str, Any] = {"e0": None, "edge_step": None, "pre_edge_line": None, "post_edge_poly": None}
    done: list[dict[str, Any]] = []
    grid_name = None
    for step in pipeline.steps:
        record = step.to_dict()
        p = step.params
        if step.kind in ("shift", "align", "broaden", "normalize") and axis_unit != "eV":
            raise ValueError(f"{what}: field axis_unit expected 'eV' for the {step.kind} step, found {axis_unit!r}")
        if step.kind == "shift":
            x = shift_energy(x, float(p["delta_ev"]))
        elif step.kind == "align":
            if p["reference"] not in (references or {}):
                raise ValueError(f"{what}: step align expected the reference spectrum {p['reference']!r}, "
                                 "found it not provided")
            rx, ry = references[p["reference"]]
            found = align_to_reference(x, y, rx, ry, method=p.get("method", "derivative"),
                                       window=tuple(p.get("window", (-20.0, 40.0))),
                                       max_shift=float(p.get("max_shift", 20.0)))
            x = shift_energy(x, found.shift_ev)
            record["resolved"] = {"shift_ev": found.shift_ev, "score": _finite_or_none(found.score),
                                  "reference_e0": found.reference_e0}
        elif step.kind == "broaden":
            y = broaden(x, y, float(p["fwhm_ev"]), p.get("shape", "gaussian"))
        elif step.kind == "max_normalize":
            y = max_normalize(y)
            quantity = "max-normalized"
        elif step.kind == "normalize":
            from matlake.models.spectra.normalization import pre_edge

            larch = {k: v for k, v in p.items() if k != "output"}
            res = pre_edge(x, y, **larch)
            x = res.energy
            y = res.flat if p.get("output", "norm") == "flat" else res.norm
            quantity = "flattened mu" if p.get("output", "norm") == "flat" else "normalized mu"
            out.update(e0=res.e0, edge_step=res.edge_step, pre_edge_line=[res.pre_slope, res.pre_intercept],
                       post_edge_poly=list(res.post_coefs))
            record["resolved"] = res.parameters()
        elif step.kind == "grid":
            grid = (grids or {}).get(p["grid"]) or resolve_grid(p["grid"])
            if grid.unit != axis_unit:
                raise ValueError(f"{what}: grid {grid.name} is in {grid.unit}, expected the axis unit {axis_unit}")
            y = interpolate_to_grid(x, y, grid)
            x = grid.array
            grid_name = grid.name
            record["resolved"] = {"n": len(grid), "start": grid.start, "stop": grid.stop, "unit": grid.unit}
        done.append(record)
    return ProcessedSpectrum(x, y, axis_unit, quantity, grid_name, done, **out)


# --------------------------------------------------------------------------- the featurizer (pure)


def _grid_digest(grid: Grid) -> str:
    return hashlib.sha256(np.asarray(grid.points, dtype="<f8").tobytes()).hexdigest()[:16]


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


class SpectrumProcessor(Featurizer):
    """Runs one :class:`Pipeline` on ``spectra`` rows; one ``spectra_processed`` row per spectrum.

    Named ``spectra-<pipeline>`` (the activity's name).  Record ids are
    ``derived_record_id(name, spectrum, '<grid name or empty>:<intensity quantity>')``:
    normalised and flattened outputs, or outputs on different grids, are different
    records, but the ids do not depend on the processing version or the other
    parameters, so a re-run with another shift or fit range, a newer version or
    ``force`` adds a version of the same record.  ``grids`` are the grids
    the pipeline needs, resolved by the caller at the snapshot it reads (the
    parameters keep each grid's name, size and a digest of its points, so
    redefining a user grid counts as new parameters).  ``references`` (record id ->
    (version, axis in eV, intensity)) are the spectra that align steps name, read
    by the caller at the same snapshot; their versions are in the parameters, so a
    corrected reference is new work.
    """

    version = PROCESSING_VERSION
    subject_table = "spectra"
    input_sql = ("select record_id as subject_id, version as subject_version, technique, element, edge, "
                 "source_kind, code, measurement_mode, sample, source_name, file_format, parent_id, axis, axis_unit, "
                 "axis_quantity, intensity, intensity_quantity, n_points from spectra")

    def __init__(self, pipeline: Pipeline, grids: Mapping[str, Grid] | None = None,
                 references: Mapping[str, tuple[int, np.ndarray, np.ndarray]] | None = None) -> None:
        self.pipeline = pipeline
        self.name = f"spectra-{pipeline.name}"
        self.grids = dict(grids or {})
        self.references = {rid: (np.asarray(x, float), np.asarray(y, float))
                           for rid, (_, x, y) in (references or {}).items()}
        name = pipeline.grid_name
        if name is not None and name not in self.grids:
            self.grids[name] = resolve_grid(name)  # built-in; an unknown name fails here, before any work
        super().__init__(pipeline=pipeline.name, steps=pipeline.to_list(),
                         grids={g.name: {"n": len(g), "start": g.start, "stop": g.stop, "unit": g.unit,
                                         "points_sha256": _grid_digest(g)} for g in self.grids.values()},
                         references={rid: int(v) for rid, (v, _, _) in (references or {}).items()})

    def featurize_one(self, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        subject = str(row["subject_id"])
        what = f"spectrum {subject}" + (f" ({row['source_name']})" if row.get("source_name") else "")
        if row.get("axis") is None or row.get("intensity") is None:
            raise ValueError(f"{what}: fields axis and intensity expected lists, found "
                             f"{'null' if row.get('axis') is None else 'a list'} and "
                             f"{'null' if row.get('intensity') is None else 'a list'}")
        result = run_pipeline(self.pipeline, np.asarray(row["axis"], float), np.asarray(row["intensity"], float),
                              axis_unit=row.get("axis_unit") or "eV", intensity_quantity=row.get("intensity_quantity"),
                              grids=self.grids, references=self.references, what=what)
        if not np.all(np.isfinite(result.intensity)):
            raise ValueError(f"{what}: pipeline {self.pipeline.name} expected finite intensities, found "
                             f"{int((~np.isfinite(result.intensity)).sum())} non-finite values")
        processed = {
            "record_id": derived_record_id(self.name, subject,
                                           f"{result.grid_name or ''}:{result.intensity_quantity}"),
            "subject_id": subject, "subject_version": int(row["subject_version"]),
            "pipeline": self.pipeline.name, "steps_json": json.dumps(result.steps, sort_keys=True),
            "grid_name": result.grid_name, "axis": [float(v) for v in result.axis], "axis_unit": result.axis_unit,
            "intensity": [float(v) for v in result.intensity], "intensity_quantity": result.intensity_quantity,
            "n_points": int(result.axis.size), "e0": _finite_or_none(result.e0),
            "edge_step": _finite_or_none(result.edge_step),
            "pre_edge_line": result.pre_edge_line, "post_edge_poly": result.post_edge_poly,
        }
        return {"spectra_processed": [processed]}


# --------------------------------------------------------------------------- platform side


def user_grid_rows(lake: "Lake", as_of: int | str | None = None) -> list[dict[str, Any]]:
    """The ``spectral_grids`` rows (latest live versions) at a snapshot."""
    df = lake.sql("select record_id, version, name, axis, unit, element, edge, description from spectral_grids "
                  "order by name", as_of=as_of).df()
    return df.to_dict("records")


def process(lake: "Lake", pipeline: Pipeline, *, where: str | None = None, as_of: int | str | None = None,
            force: bool = False, progress: bool = False) -> "FeaturizeReport":
    """Run ``pipeline`` over the ``spectra`` of ``lake`` (those matching the SQL condition ``where``).

    ``where`` may use subject_id, technique, element, edge, source_kind, code,
    measurement_mode, sample, source_name, file_format, parent_id (null unless a pixel of
    a spectrum image), axis_unit, axis_quantity, intensity_quantity and n_points.
    The pipeline's grid is resolved at the snapshot the spectra are read from (a
    built-in, else a ``spectral_grids`` row); an unknown grid fails before any work.
    Spectra already processed by this version with the same steps and grids are
    skipped unless ``force``.  Returns the platform's featurize report.
    """
    from matlake.platform.modeling import featurize

    sid = lake.resolve_snapshot(as_of)
    grids: dict[str, Grid] = {}
    user_grids: list[dict[str, Any]] = []
    if pipeline.grid_name is not None:
        user_grids = user_grid_rows(lake, sid)
        grids[pipeline.grid_name] = resolve_grid(pipeline.grid_name, user_grids)
    references: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    for rid in sorted({st.params["reference"] for st in pipeline.steps if st.kind == "align"}):
        found = lake.sql("select version, axis, intensity, axis_unit from spectra where record_id = ?", as_of=sid,
                         params=[rid]).fetchone()
        if found is None:
            raise ValueError(f"step align: reference expected a spectra record_id, found no spectrum {rid!r} "
                             f"at snapshot {sid}")
        if found[3] != "eV":
            raise ValueError(f"step align: reference {rid} field axis_unit expected 'eV', found {found[3]!r}")
        references[rid] = (int(found[0]), np.asarray(found[1], float), np.asarray(found[2], float))
    processor = SpectrumProcessor(pipeline, grids, references)
    # the reference spectra and user grids are inputs too: linked as used records, not only named in parameters
    processor.extra_used = [("spectra", rid, v) for rid, (v, _, _) in references.items()]
    processor.extra_used += [("spectral_grids", str(r["record_id"]), int(r["version"]))
                             for r in user_grids if r["name"] in grids]
    return featurize(lake, processor, as_of=sid, where=where, progress=progress, force=force)


GRID_PRODUCER = "spectral-grid"


def grid_points(start: float, stop: float, *, n: int | None = None, step: float | None = None) -> np.ndarray:
    """Grid points from ``start`` to ``stop``: ``n`` evenly spaced points (both ends included), or
    ``start + i*step`` up to ``stop`` (included when it falls on a step within 1e-9), rounded to 1e-9."""
    if (n is None) == (step is None):
        raise ValueError("grid: expected exactly one of n (number of points) and step")
    if not (math.isfinite(start) and math.isfinite(stop) and stop > start):
        raise ValueError(f"grid: expected finite start < stop, found start {start} and stop {stop}")
    if n is not None:
        if n < 2:
            raise ValueError(f"grid: expected n >= 2 points, found {n}")
        return np.linspace(start, stop, int(n))
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"grid: expected a positive step, found {step}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count < 2:
        raise ValueError(f"grid: expected at least 2 points, found {count} (step {step} > stop - start)")
    return np.round(start + step * np.arange(count), 9)


def add_grid(lake: "Lake", name: str, points: Sequence[float] | np.ndarray, *, unit: str = "eV",
             element: str | None = None, edge: str | None = None, description: str = "",
             replace: bool = False) -> dict[str, Any]:
    """Commit a user grid as a ``spectral_grids`` row (one ``define`` activity).

    A built-in name is refused; the same name with the same points and labels adds
    nothing (``status`` 'unchanged'); other points need ``replace=True`` (a new
    version of the grid's record).  Returns {status, record_id, snapshot, activity_id, n}.
    """
    from matlake.platform.derivation import commit_derived

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ValueError(f"grid name: expected letters, digits, '.', '_' or '-', found {name!r}")
    if name in BUILTIN_GRIDS:
        raise ValueError(f"grid {name!r}: a built-in grid has this name; choose another "
                         f"(built-ins: {', '.join(sorted(BUILTIN_GRIDS))})")
    if unit not in ("eV", "nm"):
        raise ValueError(f"grid {name}: unit expected 'eV' or 'nm', found {unit!r}")
    row = {"record_id": derived_record_id(GRID_PRODUCER, name), "name": name,
           "axis": [float(v) for v in np.asarray(points, dtype=float)], "unit": unit, "element": element,
           "edge": edge, "description": description or ""}
    grid = grid_from_row(row)  # checks >= 2 strictly increasing points
    if not np.all(np.isfinite(grid.array)):
        raise ValueError(f"grid {name}: expected finite points, found non-finite values")
    existing = [r for r in user_grid_rows(lake) if r["name"] == name]
    if existing:
        old = existing[0]
        same = (np.array_equal(np.asarray(old["axis"], float), grid.array) and old["unit"] == unit
                and old["element"] == element and old["edge"] == edge
                and (old["description"] or "") == row["description"])
        if same:
            return {"status": "unchanged", "record_id": row["record_id"], "snapshot": None, "activity_id": None,
                    "n": len(grid)}
        if not replace:
            raise ValueError(f"grid {name!r} exists with other points or labels ({len(old['axis'])} points, "
                             f"{old['axis'][0]:.6g}-{old['axis'][-1]:.6g} {old['unit']}); "
                             f"use replace (--replace) to add a new version")
    params = {"name": name, "n": len(grid), "start": grid.start, "stop": grid.stop, "unit": unit,
              "points_sha256": _grid_digest(grid), "replace": bool(existing)}
    sid, act = commit_derived(lake, kind="define", name=GRID_PRODUCER, version=PROCESSING_VERSION,
                              parameters=params, used={}, rows={"spectral_grids": [row]},
                              message=f"spectral grid {name}")
    return {"status": "replaced" if existing else "added", "record_id": row["record_id"], "snapshot": sid,
            "activity_id": act, "n": len(grid)}


def list_grids(lake: "Lake | None" = None, as_of: int | str | None = None) -> "pd.DataFrame":
    """Built-in grids and (with a lake) the user grids at a snapshot: name, source, points,
    start, stop, step (None when not uniform), unit, element, edge, description."""
    import pandas as pd

    def describe(grid: Grid, source: str) -> dict[str, Any]:
        steps = np.diff(grid.array)
        uniform = bool(np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9))
        return {"name": grid.name, "source": source, "points": len(grid), "start": grid.start, "stop": grid.stop,
                "step": round(float(steps[0]), 9) if uniform else None, "unit": grid.unit,
                "element": grid.element, "edge": grid.edge, "description": grid.description}

    rows = [describe(g, "built-in") for g in BUILTIN_GRIDS.values()]
    if lake is not None:
        rows += [describe(grid_from_row(r), f"user v{r['version']}") for r in user_grid_rows(lake, as_of)]
    return pd.DataFrame(rows)

