"""Labels of an absorbing site from its structure: oxidation state and first-shell anion distance.

Pure.  Distances in Angstrom, oxidation states in units of the elementary charge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymatgen.core import Structure

ANIONS = ("O", "F", "S", "Cl", "N", "Se", "Br", "I", "Te", "P")
FIRST_SHELL_TOLERANCE = 1.25  # anions within 1.25 x the shortest absorber-anion distance form the first shell
NEIGHBOUR_SEARCH = 4.0  # Angstrom; no first-shell anion of a metal oxide/halide lies further out
METHOD_BVA = "bond valence (pymatgen BVAnalyzer)"


class LabelError(ValueError):
    """No label could be derived; the message names the structure and the reason."""


@dataclass(frozen=True)
class SiteLabel:
    name: str
    value: float
    unit: str
    method: str
    text: str | None = None


# Formal states of the other elements in the charge balance (the absorber takes the remainder):
# in layered Li-Ni-Mn-Co oxides Mn stays 4+ and Co 3+ while Ni changes (Li(Ni,Mn,Co)O2 chemistry).
FIXED_STATES = {"Li": 1, "Na": 1, "K": 1, "Mg": 2, "Al": 3, "Ti": 4, "Mn": 4, "Co": 3,
                "O": -2, "F": -1, "S": -2, "Cl": -1, "N": -3}


def charge_balance_state(structure: "Structure", element: str, where: str = "") -> tuple[float, str]:
    """Formal oxidation state of ``element`` (the same on every site of it) from charge neutrality
    with :data:`FIXED_STATES` for every other element; the method names the states used."""
    comp = structure.composition.element_composition
    others = {el.symbol: amt for el, amt in comp.items() if el.symbol != element}
    missing = sorted(e for e in others if e not in FIXED_STATES)
    if missing:
        raise LabelError(f"{where or 'structure'}: oxidation_state: expected only elements with a fixed formal "
                         f"state besides {element}, found {' '.join(missing)}")
    charge = sum(FIXED_STATES[e] * amt for e, amt in others.items())
    state = -charge / comp[element]
    fixed = ", ".join(f"{e} {FIXED_STATES[e]:+d}" for e in sorted(others))
    return float(state), f"charge balance ({fixed}; {element} the remainder)"


BVA_MAX_SITES = 16  # BVAnalyzer enumerates valence combinations: 10-30 s per 36-site cell, seconds below 16


def oxidation_states(structure: "Structure", where: str = "") -> tuple[list[float], str]:
    """Oxidation state of every site from pymatgen's bond-valence analysis, and the method.
    On unrelaxed substituted cells it follows the geometry, not the composition: it is kept
    as a second label (``oxidation_state_bva``) next to the charge balance.  Cells over
    :data:`BVA_MAX_SITES` sites are refused (LabelError) because the analysis cost explodes."""
    from pymatgen.analysis.bond_valence import BVAnalyzer

    if len(structure) > BVA_MAX_SITES:
        raise LabelError(f"{where or 'structure'}: oxidation_state_bva: expected at most {BVA_MAX_SITES} sites "
                         f"for the bond-valence analysis, found {len(structure)} (not computed)")

    try:
        return [float(v) for v in BVAnalyzer().get_valences(structure)], METHOD_BVA
    except ValueError as exc:
        raise LabelError(f"{where or 'structure'}: oxidation_state_bva: expected a charge-balanced bond-valence "
                         f"assignment, found none ({exc})") from None


def first_shell(structure: "Structure", site_index: int) -> tuple[float, int, str]:
    """Mean distance (Angstrom) from the site to its first-shell anions, how many, and which anion(s)."""
    site = structure[site_index]
    neigh = [n for n in structure.get_neighbors(site, NEIGHBOUR_SEARCH) if n.specie.symbol in ANIONS]
    if not neigh:
        raise LabelError(f"site {site_index} ({site.specie}): first shell: expected an anion within "
                         f"{NEIGHBOUR_SEARCH} A, found none")
    dmin = min(n.nn_distance for n in neigh)
    shell = [n for n in neigh if n.nn_distance <= FIRST_SHELL_TOLERANCE * dmin]
    anions = "-".join(sorted({n.specie.symbol for n in shell}))
    return float(sum(n.nn_distance for n in shell) / len(shell)), len(shell), anions


def _state_text(el: str, q: float) -> str:
    return f"{el}{abs(q):.3g}{'+' if q > 0 else '-'}" if q else f"{el}0"


def site_labels(structure: "Structure", site_index: int, where: str = "",
                bva: tuple[list[float], str] | LabelError | None = None) -> tuple[list[SiteLabel], list[str]]:
    """Labels of one site and one error line per label that could not be derived:
    ``oxidation_state`` (value_text e.g. 'Ni3+'), ``mean_<absorber>_<anion>_distance`` (e.g.
    ``mean_ni_o_distance``, Angstrom) and ``first_shell_coordination``.  ``bva``: the result of
    :func:`oxidation_states` for the structure when the caller has it already (one per structure)."""
    labels: list[SiteLabel] = []
    errors: list[str] = []
    el = structure[site_index].specie.symbol
    try:
        q, method = charge_balance_state(structure, el, where)
    except LabelError as exc:
        errors.append(str(exc))
    else:
        labels.append(SiteLabel("oxidation_state", q, "", method, _state_text(el, q)))
    if bva is None:
        try:
            bva = oxidation_states(structure, where)
        except LabelError as exc:
            bva = exc
    if isinstance(bva, LabelError):
        errors.append(str(bva))
    else:
        states, method = bva
        labels.append(SiteLabel("oxidation_state_bva", states[site_index], "", method,
                                _state_text(el, states[site_index])))
    try:
        dist, n, anions = first_shell(structure, site_index)
    except LabelError as exc:
        errors.append(f"{where or 'structure'}: {exc}")
    else:
        how = (f"mean distance to the anions within {FIRST_SHELL_TOLERANCE} x the shortest "
               f"{el}-anion distance (pymatgen get_neighbors, {NEIGHBOUR_SEARCH} A search)")
        labels.append(SiteLabel(f"mean_{el.lower()}_{anions.lower().replace('-', '_')}_distance", dist, "Angstrom",
                                how, f"{n} {anions}"))
        labels.append(SiteLabel("first_shell_coordination", float(n), "", how, anions))
    return labels, errors
