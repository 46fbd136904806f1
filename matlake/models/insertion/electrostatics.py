"""Electrostatic energies of ions on candidate sites (pure; pymatgen's Ewald summation).

Charges: the inserted ion carries its most common positive oxidation state
(Li +1, Na +1, Mg +2, Al +3, ...; the first common one for an element without a
positive state), unless given; the host's atoms carry pymatgen's oxidation-state
guess (``Composition.oxi_state_guesses``, the most probable charge-balanced
assignment); a host without a guess keeps zero charges, which the method string
records.  A cell that is not neutral gets pymatgen's uniform compensating
background.

:class:`EwaldTable` evaluates the Ewald sum once for the host plus every
candidate site, and then gives the energy of the host with ions on any subset of
the sites as a sum of matrix blocks (the same total as running
``EwaldSummation`` on that structure, to its convergence of ~1e-6 eV), so
ranking thousands of configurations costs array sums, not Ewald sums.

Potential site energies: a LOCPOT holds the electron's potential energy V (eV);
an ion of charge q (in e) at r has q * phi = -q * V(r) (eV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["ion_charge", "host_charges", "EwaldTable", "potential_site_energy", "check_ion"]


def check_ion(ion: str) -> str:
    """The element symbol ``ion`` as pymatgen knows it; ``ValueError`` naming the ion otherwise."""
    from pymatgen.core import Element

    sym = str(ion).strip()
    try:
        return Element(sym).symbol
    except (ValueError, KeyError):
        raise ValueError(f"ion: expected an element symbol (Li, Na, Mg, ...), found {ion!r}") from None


def ion_charge(ion: str, charge: float | None = None) -> float:
    """Charge (e) of the inserted ion: ``charge`` when given, else its most common positive oxidation state."""
    from pymatgen.core import Element

    el = Element(check_ion(ion))
    if charge is not None:
        if not (math.isfinite(charge) and charge != 0):
            raise ValueError(f"ion charge: expected a non-zero number of e, found {charge}")
        return float(charge)
    states = list(el.common_oxidation_states)
    positive = [s for s in states if s > 0]
    if positive:
        return float(min(positive))
    if states and states[0] != 0:
        return float(states[0])
    raise ValueError(f"ion {el.symbol}: expected an element with a common non-zero oxidation state, found "
                     f"{tuple(states)}; give the charge explicitly")


def host_charges(host: "Structure") -> tuple[np.ndarray, str]:
    """(charge per host site in e, description of where they came from)."""
    comp = host.composition.element_composition
    guesses = comp.oxi_state_guesses(max_sites=-1) if len(comp) > 1 else ()
    if guesses:
        best = guesses[0]
        charges = np.array([float(best[site.specie.symbol]) for site in host])
        text = ", ".join(f"{el}{v:+g}" for el, v in sorted(best.items()))
        return charges, f"oxidation-state guess ({text})"
    return np.zeros(len(host)), "no oxidation-state guess: host charges 0"


def potential_site_energy(potential_ev: np.ndarray, charge: float) -> np.ndarray:
    """Energy (eV) of an ion of ``charge`` (e) in the electron potential energy ``potential_ev`` (eV)."""
    return -float(charge) * np.asarray(potential_ev, float)


@dataclass
class EwaldTable:
    """Ewald energies of a host with ions on any subset of ``sites`` (fractional, (M, 3)).

    Build with :meth:`build`; :meth:`energy` takes index sets and returns the
    total Ewald energy in eV; :meth:`insertion_energy` subtracts the bare host's.
    """

    host_block: float  # host-host energy (eV)
    host_site: np.ndarray  # (M,) host-ion interaction, both halves (eV)
    site_site: np.ndarray  # (M, M) ion-ion matrix, self energy on the diagonal (eV)
    host_charge: float  # sum of host charges (e)
    ion_charge: float
    eta: float  # Ewald screening parameter used (1/Angstrom^2)
    volume: float  # Angstrom^3
    method: str

    @classmethod
    def build(cls, host: "Structure", sites: np.ndarray, ion: str, charge: float | None = None) -> "EwaldTable":
        from pymatgen.core import Structure
        from pymatgen.core.ewald import EwaldSummation

        symbol = check_ion(ion)
        q_ion = ion_charge(ion, charge)
        q_host, how = host_charges(host)
        sites = np.atleast_2d(np.asarray(sites, float))
        species = [s.specie.symbol for s in host] + [symbol] * len(sites)
        coords = np.vstack([host.frac_coords, sites]) if len(sites) else host.frac_coords
        full = Structure(host.lattice, species, coords, site_properties={
            "charge": list(q_host) + [q_ion] * len(sites)})
        ew = EwaldSummation(full)
        mat = np.asarray(ew.total_energy_matrix)
        n = len(host)
        return cls(host_block=float(mat[:n, :n].sum()), host_site=2.0 * mat[:n, n:].sum(0),
                   site_site=mat[n:, n:].copy(), host_charge=float(q_host.sum()), ion_charge=q_ion,
                   eta=float(ew.eta), volume=float(host.volume),
                   method=f"Ewald (pymatgen EwaldSummation); ion {symbol}{q_ion:+g}; host {how}")

    def subset(self, indices: np.ndarray) -> "EwaldTable":
        """The table of the sites ``indices`` only (same screening parameter, so the same energies)."""
        idx = np.asarray(indices, int)
        return EwaldTable(host_block=self.host_block, host_site=self.host_site[idx],
                          site_site=self.site_site[np.ix_(idx, idx)], host_charge=self.host_charge,
                          ion_charge=self.ion_charge, eta=self.eta, volume=self.volume, method=self.method)

    def _background(self, total_charge: np.ndarray | float) -> np.ndarray | float:
        from pymatgen.core.ewald import EwaldSummation

        return -EwaldSummation.CONV_FACT / 2 * np.pi / self.volume / self.eta * np.asarray(total_charge) ** 2

    def energy(self, combos: np.ndarray) -> np.ndarray:
        """Total Ewald energy (eV) of the host with one ion on each site of every row of ``combos`` (K, N)."""
        combos = np.atleast_2d(np.asarray(combos, int))
        k, n = combos.shape
        e = np.full(k, self.host_block) + self.host_site[combos].sum(1)
        for i in range(n):
            for j in range(n):
                e += self.site_site[combos[:, i], combos[:, j]]
        return e + self._background(self.host_charge + n * self.ion_charge)

    def host_energy(self) -> float:
        """Ewald energy (eV) of the host alone, with the same screening parameter."""
        return float(self.host_block + self._background(self.host_charge))

    def insertion_energy(self, combos: np.ndarray) -> np.ndarray:
        """:meth:`energy` minus :meth:`host_energy` (eV)."""
        return self.energy(combos) - self.host_energy()
