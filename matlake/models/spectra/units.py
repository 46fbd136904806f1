"""Wavelength (nm) <-> photon energy (eV) for luminescence spectra.

E [eV] = hc / lambda [nm] with hc = h c / e x 1e9 = 1239.841984... eV nm, from the
exact SI constants in :mod:`scipy.constants` (CODATA 2018, h, c and e exact).

A spectrum is a density: counts per nm on the wavelength axis, counts per eV
on the energy axis.  Converting it needs the Jacobian |d lambda / dE| =
lambda^2 / hc, so that the intensity integrated over any band is the same in
both units: I_E(E) = I_lambda(lambda) * lambda^2 / hc.  Because E falls as
lambda rises, converted axes are reversed to increase.

A line's width does not convert by the linear rule dE = hc dlambda / lambda^2
alone: the half-maximum points map separately (E = hc/lambda is not linear),
and the Jacobian reshapes the line.  :func:`fwhm_nm_to_ev` maps the two
half-maximum wavelengths; :func:`line_in_energy` finds the maximum and the
half-maximum energies of the converted line itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import constants
from scipy.optimize import brentq, minimize_scalar

__all__ = ["HC_EV_NM", "nm_to_ev", "ev_to_nm", "spectrum_nm_to_ev", "spectrum_ev_to_nm", "fwhm_nm_to_ev",
           "fwhm_nm_to_ev_linear", "line_in_energy", "LineInEnergy"]

HC_EV_NM: float = constants.h * constants.c / constants.e * 1e9
"""Planck constant x speed of light in eV nm (1239.8419843320...)."""


def _hc_over(x: np.ndarray | float, quantity: str, unit: str) -> np.ndarray | float:
    """hc / x for positive ``x`` (E = hc/lambda and lambda = hc/E are the same map)."""
    v = np.asarray(x, dtype=float)
    if np.any(v <= 0):
        raise ValueError(f"{quantity}: expected positive values in {unit}, found minimum {np.min(v)}")
    out = HC_EV_NM / v
    return float(out) if np.ndim(out) == 0 else out


def nm_to_ev(wavelength_nm: np.ndarray | float) -> np.ndarray | float:
    """Photon energy in eV of a vacuum wavelength in nm (E = hc / lambda)."""
    return _hc_over(wavelength_nm, "wavelength", "nm")


def ev_to_nm(energy_ev: np.ndarray | float) -> np.ndarray | float:
    """Vacuum wavelength in nm of a photon energy in eV (lambda = hc / E)."""
    return _hc_over(energy_ev, "energy", "eV")


def _increasing(x: np.ndarray, name: str) -> None:
    if x.ndim != 1 or x.size < 2 or not np.all(np.diff(x) > 0):
        raise ValueError(f"{name}: expected a strictly increasing 1D axis of at least 2 points, "
                         f"found {x.size} points" + ("" if x.size < 2 else " not strictly increasing"))


def spectrum_nm_to_ev(wavelength_nm: np.ndarray, intensity_per_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(energy in eV, increasing; intensity per eV) of a spectrum given per nm on an increasing wavelength axis.

    I_E = I_lambda * lambda^2 / hc (the Jacobian), so integrated intensity over any band is preserved.
    """
    w = np.asarray(wavelength_nm, dtype=float)
    y = np.asarray(intensity_per_nm, dtype=float)
    _increasing(w, "wavelength")
    if y.shape != w.shape:
        raise ValueError(f"intensity: expected {w.size} values (one per wavelength), found {y.size}")
    energy = nm_to_ev(w)
    return energy[::-1].copy(), (y * w**2 / HC_EV_NM)[::-1].copy()


def spectrum_ev_to_nm(energy_ev: np.ndarray, intensity_per_ev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength in nm, increasing; intensity per nm) of a spectrum given per eV on an increasing energy axis.

    The inverse of :func:`spectrum_nm_to_ev`: I_lambda = I_E * E^2 / hc.
    """
    e = np.asarray(energy_ev, dtype=float)
    y = np.asarray(intensity_per_ev, dtype=float)
    _increasing(e, "energy")
    if y.shape != e.shape:
        raise ValueError(f"intensity: expected {e.size} values (one per energy), found {y.size}")
    wavelength = ev_to_nm(e)
    return wavelength[::-1].copy(), (y * e**2 / HC_EV_NM)[::-1].copy()


def fwhm_nm_to_ev(center_nm: float, fwhm_nm: float) -> float:
    """FWHM in eV of a line symmetric in wavelength, from its half-maximum wavelengths
    center -/+ fwhm/2: hc/(c - w/2) - hc/(c + w/2) = hc w / (c^2 - w^2/4).

    This maps the half-maximum points of the wavelength line; the Jacobian's
    reshaping of the line is in :func:`line_in_energy`.
    """
    if not (fwhm_nm > 0 and center_nm > fwhm_nm / 2):
        raise ValueError(f"fwhm: expected 0 < fwhm < 2 x centre (nm), found centre {center_nm}, fwhm {fwhm_nm}")
    return HC_EV_NM * fwhm_nm / (center_nm**2 - fwhm_nm**2 / 4)


def fwhm_nm_to_ev_linear(center_nm: float, fwhm_nm: float) -> float:
    """First-order FWHM in eV, hc w / c^2 (low by a relative (w / 2c)^2); for comparison only."""
    return HC_EV_NM * fwhm_nm / center_nm**2


class LineInEnergy(NamedTuple):
    """A line's maximum and half-maximum points on the energy axis (eV)."""

    peak_ev: float
    fwhm_ev: float
    low_ev: float
    high_ev: float


def line_in_energy(profile_per_nm: Callable[[np.ndarray], np.ndarray], center_nm: float,
                   fwhm_nm: float) -> LineInEnergy:
    """Peak energy and FWHM (eV) of a single line given as a function of wavelength (nm), per nm.

    The line is converted with the Jacobian, I_E(E) = I(hc/E) (hc/E)^2 / hc; its
    maximum is found by bounded minimisation near hc/center and the two
    half-maximum energies by root finding (brentq) on each side, searching out
    to 50 FWHM.  ``center_nm`` and ``fwhm_nm`` only place the search.
    """
    def per_ev(e: float) -> float:
        lam = HC_EV_NM / e
        return float(profile_per_nm(np.asarray([lam]))[0]) * lam**2 / HC_EV_NM

    e0 = HC_EV_NM / center_nm
    width = fwhm_nm_to_ev(center_nm, fwhm_nm)
    opt = minimize_scalar(lambda e: -per_ev(e), bounds=(e0 - width, e0 + width), method="bounded",
                          options={"xatol": 1e-10 * e0})
    peak = float(opt.x)
    half = per_ev(peak) / 2

    def crossing(direction: int) -> float:
        step = width / 2
        inner = peak
        for _ in range(200):  # walk out until the line is below half maximum
            outer = peak + direction * step
            if outer <= 0:
                break
            if per_ev(outer) < half:
                return brentq(lambda e: per_ev(e) - half, min(inner, outer), max(inner, outer), xtol=1e-12 * e0)
            inner, step = outer, step * 1.25
            if step > 50 * width:
                break
        raise ValueError(f"line: expected the converted line to fall below half maximum within 50 FWHM "
                         f"{'above' if direction > 0 else 'below'} {peak:.6g} eV, found it does not")

    low, high = crossing(-1), crossing(+1)
    return LineInEnergy(peak, high - low, low, high)
