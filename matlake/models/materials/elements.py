"""Elemental property tables: one versioned, digested table of numbers per (name, version).

:func:`element_table` builds the table ``pymatgen-elemental`` from pymatgen's
``Element`` data (which pymatgen compiles from WebElements and other sources) for every
element Z = 1..103, plus the species of ``data/molecular_ions.toml`` (MA, FA, and the
A-site alkali ions).  The table is DATA: its name, version, properties, units and values
are what a model depends on, and :meth:`ElementTable.digest` (sha256 of the canonical
JSON of all of them) identifies it; :meth:`ElementTable.rows` gives the one-row-per-value
form of the ``element_property_tables`` table (:mod:`matlake.schemas.materials_models`).

Properties (:data:`PROPERTIES`, units as stored):

=======================  ===========  ===============================================
name                     unit         pymatgen source
=======================  ===========  ===============================================
ionic_radius             Angstrom     Shannon ionic radius, see below
boiling_point            K            ``Element.boiling_point``
melting_point            K            ``Element.melting_point``
density                  kg/m^3       ``Element.density_of_solid`` (none for gases)
atomic_mass              amu          ``Element.atomic_mass``
electron_affinity        eV           ``Element.electron_affinity``
ionization_energy        eV           first ionization energy
electronegativity        (Pauling)    ``Element.X``
atomic_number            ""           ``Element.Z``
period                   ""           ``Element.row``
group                    ""           ``Element.group`` (1-18)
atomic_radius            Angstrom     empirical (Slater) ``Element.atomic_radius``
atomic_radius_calc       Angstrom     calculated (Clementi) ``atomic_radius_calculated``
molar_volume             cm^3/mol     ``Element.molar_volume``
=======================  ===========  ===============================================

**Ionic radius choice**: the Shannon *ionic* (not crystal) radius at coordination VI, for
the first of the element's common oxidation states (pymatgen's order) that Shannon lists;
when coordination VI is not listed for that state, the mean over the coordinations that
are.  Elements without any Shannon radius for a common state fall back to pymatgen's
``average_ionic_radius`` (mean over all listed states); noble gases have none (NaN).
The species of ``molecular_ions.toml`` override it with their own radius (12-coordinate
Shannon radii for Cs+/Rb+/K+, effective radii of Kieslich, Sun & Cheetham 2014 for
MA 2.17 Angstrom and FA 2.53 Angstrom).

**Missing in pymatgen**: heats of formation and of vaporization (the perovskite study used
them; pymatgen has neither, so they are absent, not invented), and covalent radii (the
empirical and calculated atomic radii stand in).  Values pymatgen lacks for an element
(density of gases, electron affinity of some elements, ...) are NaN; models impute them.

**Molecular ions**: atomic mass and atomic number are sums over the ion's atoms (the
ion's mass and electron count + charge); every other property is the atom-fraction mean
of its atoms' values (e.g. MA = C N H6: 1/8 C + 1/8 N + 6/8 H).  Bump
:data:`TABLE_VERSION` whenever any of this changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

TABLE_NAME = "pymatgen-elemental"
TABLE_VERSION = "1"
IONS_FILE = Path(__file__).with_name("data") / "molecular_ions.toml"

#: (name, unit, source description) of every property, in column order.
PROPERTIES: tuple[tuple[str, str, str], ...] = (
    ("ionic_radius", "Angstrom", "Shannon ionic radius, coordination VI, first common oxidation state"),
    ("boiling_point", "K", "pymatgen Element.boiling_point"),
    ("melting_point", "K", "pymatgen Element.melting_point"),
    ("density", "kg/m^3", "pymatgen Element.density_of_solid"),
    ("atomic_mass", "amu", "pymatgen Element.atomic_mass"),
    ("electron_affinity", "eV", "pymatgen Element.electron_affinity"),
    ("ionization_energy", "eV", "pymatgen Element.ionization_energies[0]"),
    ("electronegativity", "", "pymatgen Element.X (Pauling)"),
    ("atomic_number", "", "pymatgen Element.Z"),
    ("period", "", "pymatgen Element.row"),
    ("group", "", "pymatgen Element.group"),
    ("atomic_radius", "Angstrom", "pymatgen Element.atomic_radius (empirical)"),
    ("atomic_radius_calc", "Angstrom", "pymatgen Element.atomic_radius_calculated"),
    ("molar_volume", "cm^3/mol", "pymatgen Element.molar_volume"),
)
PROPERTY_NAMES = tuple(p[0] for p in PROPERTIES)
#: pymatgen has no data for these properties of the perovskite study.
MISSING_PROPERTIES = ("heat_of_formation", "heat_of_vaporization", "covalent_radius")
#: summed (not averaged) over a molecular ion's atoms.
EXTENSIVE = frozenset({"atomic_mass", "atomic_number"})


@dataclass(frozen=True)
class ElementTable:
    """A table of property values: ``values[i, j]`` is property ``properties[j]`` (unit
    ``units[j]``) of species ``species[i]``; NaN where the source has no value."""

    name: str
    version: str
    species: tuple[str, ...]
    properties: tuple[str, ...]
    units: tuple[str, ...]
    values: np.ndarray
    sources: dict[str, str] = field(default_factory=dict)  # species -> where its row came from, when not pymatgen

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.species), len(self.properties)):
            raise ValueError(f"element table {self.name}: expected values of shape "
                             f"{(len(self.species), len(self.properties))}, found {self.values.shape}")
        # species -> row, built once (looked up per composition when featurizing millions)
        object.__setattr__(self, "_idx", {s: i for i, s in enumerate(self.species)})

    @property
    def index(self) -> dict[str, int]:
        return self._idx  # type: ignore[attr-defined]

    def lookup(self, species: Iterable[str]) -> np.ndarray:
        """Rows of ``species`` (an array of symbols, vectorised): shape (n, n_properties).

        An unknown symbol raises ``KeyError`` naming it and the table."""
        arr = np.asarray(list(species) if not isinstance(species, np.ndarray) else species, dtype=object)
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
        idx = self.index
        missing = [u for u in uniq if u not in idx]
        if missing:
            raise KeyError(f"element table {self.name} v{self.version}: unknown species {missing[:5]}")
        rows = np.array([idx[u] for u in uniq], dtype=int)
        return self.values[rows][inv.reshape(arr.shape)]

    def column(self, prop: str) -> np.ndarray:
        return self.values[:, self.properties.index(prop)]

    def canonical(self) -> dict[str, Any]:
        """Everything that defines the table, JSON-ready (NaN as null, floats by repr)."""
        return {"name": self.name, "version": self.version, "species": list(self.species),
                "properties": list(self.properties), "units": list(self.units),
                "values": [[None if math.isnan(v) else float(v) for v in row] for row in self.values.tolist()],
                "sources": dict(sorted(self.sources.items()))}

    def digest(self) -> str:
        """sha256 of :meth:`canonical` as sorted, compact JSON: equal iff the data are equal."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (species, property) for ``element_property_tables`` (NaN values kept as null)."""
        digest = self.digest()
        descr = {p[0]: p[2] for p in PROPERTIES}
        out = []
        for i, sp in enumerate(self.species):
            for j, prop in enumerate(self.properties):
                v = float(self.values[i, j])
                out.append({"table_name": self.name, "table_version": self.version, "table_sha256": digest,
                            "species": sp, "property": prop, "value": None if math.isnan(v) else v,
                            "unit": self.units[j], "source": self.sources.get(sp, descr.get(prop, ""))})
        return out


def shannon_radius(symbol: str) -> tuple[float, str]:
    """(ionic radius in Angstrom, how it was chosen) of an element; see the module docstring."""
    from pymatgen.core import Element

    el = Element(symbol)
    shannon = el.data.get("Shannon radii") or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        states = list(el.common_oxidation_states)
    for ox in states:
        per_cn = shannon.get(str(ox))
        if not per_cn:
            continue
        radii = {cn: spins for cn, spins in per_cn.items()}
        if "VI" in radii:
            vals = [v["ionic_radius"] for v in radii["VI"].values()]
            return float(np.mean(vals)), f"Shannon {ox:+d} VI"
        vals = [v["ionic_radius"] for spins in radii.values() for v in spins.values()]
        return float(np.mean(vals)), f"Shannon {ox:+d} mean over {','.join(radii)}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        avg = el.average_ionic_radius
    if avg and float(avg) > 0:
        return float(avg), "pymatgen average_ionic_radius"
    return math.nan, "none"


def _num(x: Any) -> float:
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _element_row(symbol: str) -> list[float]:
    from pymatgen.core import Element

    el = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for every missing datum
        ies = el.ionization_energies
        values = {
            "ionic_radius": shannon_radius(symbol)[0],
            "boiling_point": _num(el.boiling_point),
            "melting_point": _num(el.melting_point),
            "density": _num(el.density_of_solid),
            "atomic_mass": _num(el.atomic_mass),
            "electron_affinity": _num(el.electron_affinity),
            "ionization_energy": _num(ies[0]) if ies else math.nan,
            "electronegativity": _num(el.X),
            "atomic_number": float(el.Z),
            "period": float(el.row),
            "group": float(el.group),
            "atomic_radius": _num(el.atomic_radius),
            "atomic_radius_calc": _num(el.atomic_radius_calculated),
            "molar_volume": _num(el.molar_volume),
        }
    return [values[p] for p in PROPERTY_NAMES]


def molecular_ions(path: Path = IONS_FILE) -> dict[str, dict[str, Any]]:
    """The species of ``molecular_ions.toml``: symbol -> its entry (composition or element, radius in pm)."""
    data = tomllib.loads(path.read_text())
    ions = data.get("ions", {})
    for sym, entry in ions.items():
        if ("composition" in entry) == ("element" in entry):
            raise ValueError(f"{path}: ions.{sym}: expected exactly one of 'composition' or 'element'")
        if not isinstance(entry.get("ionic_radius_pm"), (int, float)):
            raise ValueError(f"{path}: ions.{sym}: expected a numeric ionic_radius_pm, found "
                             f"{entry.get('ionic_radius_pm')!r}")
    return ions


@lru_cache(maxsize=4)
def element_table(max_z: int = 103, a_site: bool = False) -> ElementTable:
    """The ``pymatgen-elemental`` table (elements Z = 1..``max_z`` and the molecular ions of the data file).

    ``a_site``: the table ``pymatgen-elemental-asite`` for the A site of a perovskite, where the
    elemental ions of the data file (Cs, Rb, K) take their 12-coordinate radius; the generic
    table keeps every element's coordination-VI radius (an impurity Cs in CdTe is not 12-fold).
    """
    from pymatgen.core import Element

    symbols = [Element.from_Z(z).symbol for z in range(1, max_z + 1)]
    values = np.array([_element_row(s) for s in symbols], dtype=float)
    species = list(symbols)
    rows = [values]
    sources: dict[str, str] = {}
    ions = molecular_ions()
    idx = {s: i for i, s in enumerate(symbols)}
    r_col = PROPERTY_NAMES.index("ionic_radius")
    for sym, entry in ions.items():
        if "element" in entry:
            row = values[idx[entry["element"]]].copy()
        else:
            comp = {str(k): float(v) for k, v in entry["composition"].items()}
            atoms = values[[idx[k] for k in comp]]
            counts = np.array(list(comp.values()))
            frac = counts / counts.sum()
            row = frac @ atoms
            for j, prop in enumerate(PROPERTY_NAMES):
                if prop in EXTENSIVE:
                    row[j] = counts @ atoms[:, j]
        row[r_col] = float(entry["ionic_radius_pm"]) / 100.0  # pm -> Angstrom
        sources[sym] = f"molecular_ions.toml: {entry.get('description', sym)}; radius {entry.get('radius_source', '')}"
        if sym in idx:  # Cs, Rb, K: only the A-site table takes the data file's radius
            if a_site:
                values[idx[sym]] = row
                sources[sym] = f"pymatgen; ionic radius from {sources[sym]}"
            else:
                del sources[sym]
        else:
            species.append(sym)
            rows.append(row[None, :])
    table = np.vstack(rows)
    table.setflags(write=False)
    return ElementTable(TABLE_NAME + ("-asite" if a_site else ""), TABLE_VERSION, tuple(species), PROPERTY_NAMES,
                        tuple(p[1] for p in PROPERTIES), table, sources)
