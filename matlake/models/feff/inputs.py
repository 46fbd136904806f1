"""FEFF inputs from pymatgen structures: absorbing sites and ``MPXANESSet`` text, parameters recorded.

Pure: no lake access, no FEFF run.  Distances in Angstrom, energies in eV,
photoelectron wave numbers in 1/Angstrom.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

# Edges FEFF10's EDGE card accepts (K shell through the N shell).
SUPPORTED_EDGES = ("K", "L1", "L2", "L3", "M1", "M2", "M3", "M4", "M5", "N1", "N2", "N3", "N4", "N5", "N6", "N7")
SYMPREC = 0.1  # Angstrom; the same tolerance as the structures table's space group


class FeffInputError(ValueError):
    """A structure/element/edge that cannot give a FEFF input; the message is one line naming the record."""


@dataclass(frozen=True)
class FeffParameters:
    """Every choice that shapes a computed spectrum besides the structure and the site.

    The defaults are pymatgen's ``MPXANESSet`` (the Materials Project's XANES
    settings) with the overrides in ``overrides`` and ``removed``, chosen so a
    Ni K edge costs ~15-30 s on one busy core instead of ~8 min:

    - ``SCF`` removed (no self-consistent potentials: overlapped atoms, 6x faster);
    - ``LDOS`` removed (the density of states is not needed for the spectrum; 35 s saved);
    - ``FMS 4.0 0`` instead of 7.5 Å: full multiple scattering over the first
      two to three shells (27 atoms in rock-salt NiO instead of ~250);
    - ``XANES 4.0 0.07 0.3``: up to k = 4 Å^-1 (~60 eV above E0), 0.3 eV steps near the edge.
    """

    edge: str = "K"
    cluster_radius: float = 7.0  # Angstrom; the ATOMS list (MPXANESSet radius)
    overrides: tuple[tuple[str, tuple[float, ...]], ...] = (("FMS", (4.0, 0)), ("XANES", (4.0, 0.07, 0.3)))
    removed: tuple[str, ...] = ("SCF", "LDOS")
    input_set: str = "pymatgen.io.feff.sets.MPXANESSet"
    extra: dict[str, Any] = field(default_factory=dict)

    def user_tag_settings(self) -> dict[str, Any]:
        """The ``user_tag_settings`` argument of ``MPXANESSet``."""
        tags: dict[str, Any] = {k: list(v) for k, v in self.overrides}
        if self.removed:
            tags["_del"] = list(self.removed)
        return tags

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overrides"] = {k: list(v) for k, v in self.overrides}
        d["removed"] = list(self.removed)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeffParameters":
        return cls(edge=d.get("edge", "K"), cluster_radius=float(d.get("cluster_radius", 7.0)),
                   overrides=tuple((k, tuple(v)) for k, v in d.get("overrides", {}).items()),
                   removed=tuple(d.get("removed", ())), input_set=d.get("input_set", cls.input_set),
                   extra=dict(d.get("extra", {})))

    def digest(self) -> str:
        """Short hash of the parameters (with the pymatgen version): the identity of a run setting."""
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        """Everything to record with a computed spectrum: these parameters, the set's own
        defaults and the pymatgen version that wrote the input."""
        import pymatgen.core
        from pymatgen.io.feff.sets import MPXANESSet

        defaults = {k: (v if isinstance(v, (str, int, float)) else str(v)) for k, v in MPXANESSet.CONFIG.items()}
        return {**self.as_dict(), "set_defaults": defaults, "pymatgen_version": pymatgen.core.__version__}


def check_edge(edge: str) -> str:
    """``edge`` as FEFF spells it; :class:`FeffInputError` for an edge FEFF does not support."""
    e = str(edge).strip().upper()
    if e not in SUPPORTED_EDGES:
        raise FeffInputError(f"edge: expected one of {', '.join(SUPPORTED_EDGES)}, found {edge!r}")
    return e


def absorbing_sites(structure: "Structure", element: str, where: str = "") -> list[tuple[int, int]]:
    """Symmetry-inequivalent sites of ``element``: (index of the first site of each class, multiplicity).

    ``where`` names the structure in the error raised when it holds no ``element``.
    """
    from pymatgen.core import Element
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        symbol = Element(element).symbol
    except ValueError:
        raise FeffInputError(f"{where or 'structure'}: element: expected a chemical symbol, "
                             f"found {element!r}") from None
    if not any(site.specie.symbol == symbol for site in structure if hasattr(site.specie, "symbol")):
        found = " ".join(sorted({str(s.specie) for s in structure}))
        raise FeffInputError(f"{where or 'structure'}: element: expected a structure holding {symbol}, "
                             f"found only {found} ({structure.composition.reduced_formula})")
    sym = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_symmetrized_structure()
    out = []
    for group in sym.equivalent_indices:
        if structure[group[0]].specie.symbol == symbol:
            out.append((int(min(group)), len(group)))
    return sorted(out)


def feff_input(structure: "Structure", site_index: int, params: FeffParameters) -> str:
    """The ``feff.inp`` text for the absorber at ``site_index`` (pymatgen's ``MPXANESSet``)."""
    from pymatgen.io.feff.sets import MPXANESSet

    edge = check_edge(params.edge)
    feff_set = MPXANESSet(site_index, structure, edge=edge, radius=params.cluster_radius,
                          user_tag_settings=params.user_tag_settings())
    # The same order pymatgen's write_input uses for feff.inp.
    parts = feff_set.all_input()
    return "\n\n".join(str(parts[k]) for k in ("HEADER", "PARAMETERS", "POTENTIALS", "ATOMS")) + "\n"
