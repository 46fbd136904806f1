"""Generated (synthetic) spectra with planted labels, for testing and benchmarking spectra models.

Everything here is pure and seeded: the same seed and parameters give the same
arrays, bit for bit.  Sample ``i`` of a data set draws from its own random
stream ``numpy.random.default_rng([seed, stream, i])``, so it does not depend
on how many samples are generated.  These spectra are **generated, not
measured**: their rows carry ``source_kind = 'generated'`` and the generator's
name, version and every parameter, and their labels say ``planted by
generator``.

Ni K-edge XANES (:func:`ni_k_xanes`, normalised absorption, edge step 1)
-----------------------------------------------------------------------
For an oxidation state ``q`` in {2, 3, 4}, a mean Ni-O distance ``R`` (Angstrom)
and a distortion ``d`` in [0, 1] of the NiO6 octahedron:

- **edge position** ``E0 = 8343 eV + 1.5 eV x (q - 2) + e_env``: the half-step
  energy of Ni2+ in NiO is about 8343 eV; the K-edge energy rises roughly
  linearly with the formal oxidation state (Kunzl's law), and in delithiated
  LiNiO2-type cathodes the Ni2+ -> Ni4+ change moves the half-step energy by about
  3 eV, so 1.5 eV per state.  ``e_env`` ~ N(0, 0.3 eV) stands for ligand and
  covalency effects at a fixed state.
- **edge step**: ``0.5 + arctan((E - E0) / (G/2)) / pi`` with ``G`` = 1.5 eV
  (the Ni 1s core-hole width is about 1.4 eV).
- **white line**: a Lorentzian at ``E0 + 7 eV`` with half width
  ``2.5 + 0.5 (q - 2)`` eV and height ``0.75 - 0.15 (q - 2) - 0.2 d`` (+ N(0, 0.03)):
  the strong white line of Ni2+ weakens and broadens as Ni-O covalency grows.
- **1s -> 3d pre-edge**: a Gaussian (sigma 0.8 eV) at ``8333 + 0.7 (q - 2)`` eV
  whose height ``0.012 h (1 + 2 d)`` grows with the number of 3d holes ``h``
  (d8, d7, d6: 2, 3, 4) and with the loss of inversion symmetry ``d``
  (3d-4p mixing).
- **first-shell oscillation**: ``A s(E) sin(2 k R + phi) exp(-2 sigma2 k^2)`` with
  the photo-electron wavenumber ``k = sqrt(0.2625 (E - E0))`` (1/Angstrom, E in eV),
  ``A`` = 0.08, ``phi`` = -2 rad, ``sigma2`` = 0.005 Angstrom^2 and an onset
  ``s = 1 - exp(-(E - E0) / 8 eV)`` above E0: its period in E follows the
  Ni-O distance, as the EXAFS equation's ``sin(2kR)`` does.
- **the Ni-O distance label** ``R = R0(q) + N(0, 0.02 Angstrom)`` with
  ``R0`` = 2.09, 1.96, 1.88 Angstrom for q = 2, 3, 4: the sums of Shannon's
  (1976) six-fold ionic radii (Ni2+ 0.69, low-spin Ni3+ 0.56, Ni4+ 0.48;
  O2- 1.40 Angstrom).
- **noise**: Poisson counting noise for ``counts`` counts per unit of mu
  (fluorescence-like) plus Gaussian noise (sigma ``gaussian_noise``);
- **misalignment**: the whole spectrum is moved by ``delta`` ~ U(-shift_max,
  shift_max) eV (``mu_observed(E) = mu(E - delta)``), the computed-vs-measured
  energy misalignment that the featurization study is about; ``delta`` is kept as
  the ``energy_shift`` label.

The axis (8300-8420 eV at 0.2 eV by default) covers the ``xanes-ni-k`` grid
(8330-8370 eV) with room for shifts of several eV either way.

Two-edge EELS with a planted defect (:func:`eels_sample`)
--------------------------------------------------------
Each sample has one O K and one Ni L2,3 spectrum (background subtracted,
counts), on axes covering the ``eels-o-k`` and ``eels-ni-l`` grids.  Two hidden
bits are drawn independently with probability 1/2:

- ``a`` (label ``o_k_prepeak_high``): the O K pre-peak at ~531 eV (holes in the
  hybridised O 2p - Ni 3d states) is high (0.35) or low (0.15);
- ``b`` (label ``ni_l3_shifted``): the Ni L3 and L2 lines sit 1 eV higher (a more
  oxidised, Ni3+-like Ni) or not (Ni2+-like, L3 at 855 eV, L2 17.3 eV above).

The planted ``defect`` label is ``a XOR b``: a charge-compensation mismatch,
where the oxygen holes and the Ni valence disagree.  Because ``a`` and ``b`` are
independent fair coins, ``defect`` is independent of ``a`` alone and of ``b``
alone: each edge by itself carries no information about it, and only a model
that sees both edges can predict it.  Nuisances: the pre-peak height (+-0.04),
main-edge peak heights (+-15 %), the overall scale (x 0.7-1.3), an energy
calibration offset per spectrum (N(0, 0.2 eV)) and Poisson noise.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from matlake.models.base import derived_record_id

GENERATOR_NAME = "matlake-spectra-generator"
GENERATOR_VERSION = "1"
CODE = "matlake.models.spectra.generator"
PLANTED = "planted by generator"

OXIDATION_STATES = (2, 3, 4)
# Shannon (1976) six-fold radii + O2- 1.40 Angstrom: mean Ni-O distance per oxidation state.
NI_O_DISTANCE = {2: 0.69 + 1.40, 3: 0.56 + 1.40, 4: 0.48 + 1.40}
D_HOLES = {2: 2, 3: 3, 4: 4}  # Ni d8, d7, d6
HBAR2_2M = 0.2624682917  # 2 m_e / hbar^2 in 1/(eV Angstrom^2): k^2 = 0.2625 (E - E0)

_STREAMS = {"xanes": 1, "eels": 2}


@dataclass(frozen=True)
class XanesParameters:
    """Every parameter of the Ni K-edge XANES model (energies in eV, distances in Angstrom)."""

    e0_ni2: float = 8343.0
    shift_per_state: float = 1.5
    e0_env_sigma: float = 0.3
    edge_width: float = 1.5
    white_line_offset: float = 7.0
    white_line_hwhm: float = 2.5
    white_line_hwhm_per_state: float = 0.5
    white_line_height: float = 0.75
    white_line_height_per_state: float = -0.15
    white_line_height_distortion: float = -0.2
    white_line_height_sigma: float = 0.03
    pre_edge_energy: float = 8333.0
    pre_edge_shift_per_state: float = 0.7
    pre_edge_sigma: float = 0.8
    pre_edge_height_per_hole: float = 0.012
    pre_edge_distortion_gain: float = 2.0
    exafs_amplitude: float = 0.08
    exafs_phase: float = -2.0
    exafs_sigma2: float = 0.005
    exafs_onset: float = 8.0
    distance_sigma: float = 0.02
    counts: float = 2.0e4
    gaussian_noise: float = 0.002
    shift_max: float = 1.0
    axis_start: float = 8300.0
    axis_stop: float = 8420.0
    axis_step: float = 0.2

    def axis(self) -> np.ndarray:
        n = int(round((self.axis_stop - self.axis_start) / self.axis_step)) + 1
        return np.round(self.axis_start + self.axis_step * np.arange(n), 9)


@dataclass(frozen=True)
class EelsParameters:
    """Every parameter of the two-edge (O K, Ni L2,3) EELS model (energy loss in eV)."""

    o_prepeak_energy: float = 531.0
    o_prepeak_sigma: float = 0.7
    o_prepeak_low: float = 0.15
    o_prepeak_high: float = 0.35
    o_prepeak_jitter: float = 0.04
    o_edge_energy: float = 537.0
    o_edge_width: float = 1.5
    o_peaks: tuple[tuple[float, float, float], ...] = ((540.0, 2.5, 0.6), (545.0, 3.0, 0.4))  # eV, sigma, height
    ni_l3_energy: float = 855.0
    ni_l3_shift: float = 1.0
    ni_spin_orbit: float = 17.3
    ni_l3_hwhm: float = 0.8
    ni_l2_hwhm: float = 1.2
    ni_l3_height: float = 1.0
    ni_l2_height: float = 0.35
    ni_step_height: float = 0.3
    peak_jitter: float = 0.15
    scale_min: float = 0.7
    scale_max: float = 1.3
    calibration_sigma: float = 0.2
    counts: float = 3000.0
    o_axis: tuple[float, float] = (524.0, 567.0)
    ni_axis: tuple[float, float] = (848.0, 885.0)
    axis_step: float = 0.1


@dataclass
class GeneratedSpectrum:
    """One generated spectrum: its axis (eV) and intensity, the drawn truth and the labels."""

    sample: str
    index: int
    technique: str
    element: str
    edge: str
    axis: np.ndarray
    intensity: np.ndarray
    axis_quantity: str
    intensity_unit: str
    intensity_quantity: str
    truth: dict[str, float]
    labels: dict[str, tuple[float, str | None, str]]  # name -> (value, text, unit)


@dataclass
class GeneratedSet:
    """A generated data set: its kind, name, seed, parameters and spectra."""

    kind: str
    dataset: str
    seed: int
    n: int
    parameters: dict[str, Any]
    spectra: list[GeneratedSpectrum] = field(default_factory=list)

    def parameters_record(self) -> dict[str, Any]:
        """Everything that determines the set (for the generate activity)."""
        return {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "kind": self.kind,
                "dataset": self.dataset, "seed": self.seed, "n": self.n, "parameters": self.parameters}

    def digest(self) -> str:
        text = json.dumps({k: v for k, v in self.parameters_record().items() if k != "n"}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- line shapes


def _arctan_step(e: np.ndarray, center: float, width: float) -> np.ndarray:
    return 0.5 + np.arctan((e - center) / (width / 2.0)) / math.pi


def _lorentzian(e: np.ndarray, center: float, hwhm: float, height: float) -> np.ndarray:
    return height / (1.0 + ((e - center) / hwhm) ** 2)


def _gaussian(e: np.ndarray, center: float, sigma: float, height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((e - center) / sigma) ** 2)


# --------------------------------------------------------------------------- Ni K-edge XANES


def ni_k_xanes(energy: np.ndarray, state: int, distance: float, distortion: float, *, e0_env: float = 0.0,
               white_line_noise: float = 0.0, shift: float = 0.0,
               params: XanesParameters = XanesParameters()) -> np.ndarray:
    """Noise-free normalised Ni K-edge mu(E) (edge step 1) on ``energy`` (eV).

    ``state`` 2, 3 or 4; ``distance`` the mean Ni-O distance (Angstrom);
    ``distortion`` 0 (regular octahedron) to 1; ``shift`` (eV) moves the whole
    spectrum to higher energy.  See the module docstring for every term.
    """
    if state not in OXIDATION_STATES:
        raise ValueError(f"ni_k_xanes: expected an oxidation state in {OXIDATION_STATES}, found {state!r}")
    p = params
    e = np.asarray(energy, dtype=float) - shift
    dq = state - 2
    e0 = p.e0_ni2 + p.shift_per_state * dq + e0_env
    mu = _arctan_step(e, e0, p.edge_width)
    wl_height = (p.white_line_height + p.white_line_height_per_state * dq
                 + p.white_line_height_distortion * distortion + white_line_noise)
    mu = mu + _lorentzian(e, e0 + p.white_line_offset, p.white_line_hwhm + p.white_line_hwhm_per_state * dq,
                          max(wl_height, 0.0))
    pre_height = p.pre_edge_height_per_hole * D_HOLES[state] * (1.0 + p.pre_edge_distortion_gain * distortion)
    mu = mu + _gaussian(e, p.pre_edge_energy + p.pre_edge_shift_per_state * dq, p.pre_edge_sigma, pre_height)
    above = np.clip(e - e0, 0.0, None)
    k = np.sqrt(HBAR2_2M * above)
    onset = 1.0 - np.exp(-above / p.exafs_onset)
    damping = np.exp(-2.0 * p.exafs_sigma2 * k * k)
    mu = mu + p.exafs_amplitude * onset * np.sin(2.0 * k * distance + p.exafs_phase) * damping
    return mu


def xanes_sample(seed: int, index: int, params: XanesParameters = XanesParameters()) -> GeneratedSpectrum:
    """Sample ``index`` of the XANES data set of ``seed``: draws the state, distance,
    distortion, shift and noise from its own stream and returns the noisy spectrum."""
    rng = np.random.default_rng([seed, _STREAMS["xanes"], index])
    p = params
    state = int(rng.choice(OXIDATION_STATES))
    distance = float(NI_O_DISTANCE[state] + rng.normal(0.0, p.distance_sigma))
    distortion = float(rng.uniform(0.0, 1.0))
    e0_env = float(rng.normal(0.0, p.e0_env_sigma))
    wl_noise = float(rng.normal(0.0, p.white_line_height_sigma))
    shift = float(rng.uniform(-p.shift_max, p.shift_max)) if p.shift_max > 0 else 0.0
    axis = p.axis()
    mu = ni_k_xanes(axis, state, distance, distortion, e0_env=e0_env, white_line_noise=wl_noise, shift=shift,
                    params=p)
    noisy = rng.poisson(np.clip(mu, 0.0, None) * p.counts) / p.counts + rng.normal(0.0, p.gaussian_noise, axis.size)
    truth = {"oxidation_state": float(state), "mean_ni_o_distance": distance, "distortion": distortion,
             "e0_env": e0_env, "white_line_noise": wl_noise, "energy_shift": shift,
             "e0": p.e0_ni2 + p.shift_per_state * (state - 2) + e0_env + shift}
    labels = {"oxidation_state": (float(state), f"Ni{state}+", ""),
              "mean_ni_o_distance": (distance, None, "Angstrom"),
              "energy_shift": (shift, None, "eV")}
    return GeneratedSpectrum("", index, "xanes", "Ni", "K", axis, noisy.astype(float), "energy", "mu",
                             "normalized mu", truth, labels)


# --------------------------------------------------------------------------- two-edge EELS


def _axis(lo: float, hi: float, step: float) -> np.ndarray:
    n = int(round((hi - lo) / step)) + 1
    return np.round(lo + step * np.arange(n), 9)


def o_k_edge(loss: np.ndarray, prepeak_high: bool, *, prepeak_noise: float = 0.0,
             peak_scales: tuple[float, ...] = (1.0, 1.0), calibration: float = 0.0,
             params: EelsParameters = EelsParameters()) -> np.ndarray:
    """Noise-free O K edge (background subtracted, edge step 1) on ``loss`` (eV):
    pre-peak, arctan step, two broad peaks."""
    p = params
    e = np.asarray(loss, dtype=float) - calibration
    height = (p.o_prepeak_high if prepeak_high else p.o_prepeak_low) + prepeak_noise
    y = _gaussian(e, p.o_prepeak_energy, p.o_prepeak_sigma, max(height, 0.0))
    y = y + _arctan_step(e, p.o_edge_energy, p.o_edge_width)
    for (center, sigma, h), s in zip(p.o_peaks, peak_scales):
        y = y + _gaussian(e, center, sigma, h * s)
    return y


def ni_l_edge(loss: np.ndarray, l3_shifted: bool, *, peak_scales: tuple[float, float] = (1.0, 1.0),
              calibration: float = 0.0, params: EelsParameters = EelsParameters()) -> np.ndarray:
    """Noise-free Ni L2,3 edges on ``loss`` (eV): L3 and L2 Lorentzian white lines on arctan steps (2:1)."""
    p = params
    e = np.asarray(loss, dtype=float) - calibration
    l3 = p.ni_l3_energy + (p.ni_l3_shift if l3_shifted else 0.0)
    l2 = l3 + p.ni_spin_orbit
    y = _lorentzian(e, l3, p.ni_l3_hwhm, p.ni_l3_height * peak_scales[0])
    y = y + _lorentzian(e, l2, p.ni_l2_hwhm, p.ni_l2_height * peak_scales[1])
    y = y + p.ni_step_height * (2.0 / 3.0 * _arctan_step(e, l3, 1.0) + 1.0 / 3.0 * _arctan_step(e, l2, 1.0))
    return y


def eels_sample(seed: int, index: int, params: EelsParameters = EelsParameters()) -> list[GeneratedSpectrum]:
    """Sample ``index`` of the EELS data set of ``seed``: its O K and Ni L2,3 spectra (counts)
    and the planted ``defect = o_k_prepeak_high XOR ni_l3_shifted``."""
    rng = np.random.default_rng([seed, _STREAMS["eels"], index])
    p = params
    a = bool(rng.integers(0, 2))
    b = bool(rng.integers(0, 2))
    defect = a != b
    scale = float(rng.uniform(p.scale_min, p.scale_max))
    o_axis = _axis(*p.o_axis, p.axis_step)
    ni_axis = _axis(*p.ni_axis, p.axis_step)
    pre_noise = float(rng.normal(0.0, p.o_prepeak_jitter))
    o_scales = tuple(float(s) for s in 1.0 + rng.uniform(-p.peak_jitter, p.peak_jitter, len(p.o_peaks)))
    ni_scales = tuple(float(s) for s in 1.0 + rng.uniform(-p.peak_jitter, p.peak_jitter, 2))
    o_cal, ni_cal = (float(c) for c in rng.normal(0.0, p.calibration_sigma, 2))
    o_mu = scale * o_k_edge(o_axis, a, prepeak_noise=pre_noise, peak_scales=o_scales, calibration=o_cal, params=p)
    ni_mu = scale * ni_l_edge(ni_axis, b, peak_scales=ni_scales, calibration=ni_cal, params=p)
    o_counts = rng.poisson(np.clip(o_mu, 0.0, None) * p.counts).astype(float)
    ni_counts = rng.poisson(np.clip(ni_mu, 0.0, None) * p.counts).astype(float)
    common = {"defect": float(defect), "o_k_prepeak_high": float(a), "ni_l3_shifted": float(b), "scale": scale}
    defect_label = (float(defect), "defect" if defect else "no defect", "")
    o = GeneratedSpectrum("", index, "eels", "O", "K", o_axis, o_counts, "energy_loss", "counts", "counts",
                          {**common, "o_prepeak_noise": pre_noise, "calibration": o_cal,
                           **{f"o_peak_scale_{i}": s for i, s in enumerate(o_scales)}},
                          {"defect": defect_label, "o_k_prepeak_high": (float(a), None, "")})
    ni = GeneratedSpectrum("", index, "eels", "Ni", "L2,3", ni_axis, ni_counts, "energy_loss", "counts", "counts",
                           {**common, "calibration": ni_cal, "ni_l3_scale": ni_scales[0], "ni_l2_scale": ni_scales[1]},
                           {"defect": defect_label, "ni_l3_shifted": (float(b), None, "")})
    return [o, ni]


# --------------------------------------------------------------------------- data sets and rows


def generate(kind: str, n: int, seed: int, dataset: str = "train",
             params: XanesParameters | EelsParameters | None = None) -> GeneratedSet:
    """``n`` samples of ``kind`` ('xanes': one Ni K spectrum each; 'eels': O K + Ni L2,3 each)."""
    if kind not in _STREAMS:
        raise ValueError(f"generate: expected kind 'xanes' or 'eels', found {kind!r}")
    if n < 1:
        raise ValueError(f"generate: expected at least 1 sample, found n={n}")
    if not dataset or any(c in dataset for c in "/ \t\n"):
        raise ValueError(f"generate: expected a data set name without spaces or '/', found {dataset!r}")
    if params is None:
        params = XanesParameters() if kind == "xanes" else EelsParameters()
    want = XanesParameters if kind == "xanes" else EelsParameters
    if not isinstance(params, want):
        raise TypeError(f"generate {kind}: expected {want.__name__}, found {type(params).__name__}")
    out = GeneratedSet(kind, dataset, int(seed), int(n), asdict(params))
    for i in range(n):
        spectra = [xanes_sample(seed, i, params)] if kind == "xanes" else eels_sample(seed, i, params)
        for s in spectra:
            s.sample = f"gen-{kind}-{dataset}-{i:05d}"
            out.spectra.append(s)
    return out


def parameters_from(kind: str, overrides: dict[str, Any]) -> XanesParameters | EelsParameters:
    """Model parameters of ``kind`` with ``overrides`` (unknown names are an error listing the known ones)."""
    cls = XanesParameters if kind == "xanes" else EelsParameters
    known = set(cls.__dataclass_fields__)
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"generator {kind}: unknown parameter(s) {bad}; known: {sorted(known)}")
    return cls(**overrides)


def generated_rows(gset: GeneratedSet) -> dict[str, list[dict[str, Any]]]:
    """``spectra`` and ``spectrum_labels`` rows of a generated set.

    Record ids are :func:`derived_record_id` of (generator, kind/dataset/digest of
    seed and parameters, sample index and edge): the same set gives the same ids,
    so a new generator version adds versions of the same records.
    """
    subject = f"{gset.kind}/{gset.dataset}/{gset.digest()}"
    spectra: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for s in gset.spectra:
        rid = derived_record_id(GENERATOR_NAME, subject, f"{s.index}/{s.element}-{s.edge}")
        code_params = {"generator": GENERATOR_NAME, "kind": gset.kind, "dataset": gset.dataset, "seed": gset.seed,
                       "index": s.index, "parameters": gset.parameters, "drawn": s.truth}
        spectra.append({
            "record_id": rid, "technique": s.technique, "element": s.element, "edge": s.edge,
            "axis": s.axis.tolist(), "axis_unit": "eV", "axis_quantity": s.axis_quantity,
            "intensity": s.intensity.tolist(), "intensity_unit": s.intensity_unit,
            "intensity_quantity": s.intensity_quantity, "n_points": int(s.axis.size),
            "axis_min": float(s.axis[0]), "axis_max": float(s.axis[-1]), "source_kind": "generated",
            "code": CODE, "code_version": GENERATOR_VERSION,
            "code_parameters_json": json.dumps(code_params, sort_keys=True), "sample": s.sample,
            "metadata_json": json.dumps({"note": "generated spectrum with planted labels, not a measurement"}),
        })
        for name, (value, text, unit) in s.labels.items():
            labels.append({"record_id": derived_record_id(GENERATOR_NAME, rid, f"label/{name}"), "subject_id": rid,
                           "label": name, "value": float(value), "value_text": text, "unit": unit,
                           "method": PLANTED})
    return {"spectra": spectra, "spectrum_labels": labels}
