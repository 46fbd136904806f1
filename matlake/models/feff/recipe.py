"""The recipe of the shipped computed Ni K-edge set: Ni oxides built from pymatgen prototypes.

Pure and deterministic (no randomness): :func:`recipe_structures` returns the
same structures every time, and :func:`write_structures` writes them as
pymatgen Structure JSON files that ``matlake ingest`` reads into ``structures``.

Prototypes (lattice constants in Angstrom, from experiment):

- rock-salt NiO (Fm-3m, a = 4.177): Ni2+, octahedral;
- layered LiNiO2 (R-3m, a = 2.878, c = 14.19, O z = 0.2584): Ni3+;
- NaNiO2 by substituting Li -> Na in the layered prototype (a = 2.96, c = 15.77): Ni3+;
- NiO2 by delithiating LiNiO2 (all Li removed, a = 2.81, c = 13.36): Ni4+;
- Li-Ni-Mn-Co-O layered variants: a 3x1x1 supercell of the LiNiO2 cell (9 transition-metal
  sites in three layers) with Ni replaced by Mn/Co in a fixed pattern, and some delithiated:
  LiNi1/3Mn1/3Co1/3O2 in two cation orders and LiNi4/9Mn4/9Co1/9O2 (Ni2+ with Mn4+, Co3+),
  LiNi2/3Co1/3O2 and LiNi7/9Co2/9O2 (Ni3+), Li1/3Ni1/3Mn1/3Co1/3O2 and Li1/3Ni2/3Co1/3O2
  (Ni4+ after removing 6 of the 9 Li).  Compositions are chosen so that charge balance
  (Li +1, O -2, Mn +4, Co +3) gives Ni an integer state.

Each single-phase prototype is also strained isotropically (lattice scaled by
-4, -2, +2, +4 %) so the first-shell Ni-O distance varies within an oxidation
state.  The structures are not relaxed: the point is a labelled set with known
local geometry, not formation energies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from matlake.models.feff.labels import charge_balance_state

if TYPE_CHECKING:
    from pymatgen.core import Structure

RECIPE_VERSION = "1"
STRAINS = (-0.04, -0.02, 0.0, 0.02, 0.04)
LINIO2_NI_O = 1.9732  # Angstrom, Ni-O in the LiNiO2 prototype below
VEGARD_NI_O = {2: 2.0885, 4: 1.9060}  # Angstrom, Ni-O in rock-salt NiO and in the NiO2 prototype


def _layered(a: float, c: float, z_o: float, alkali: str = "Li"):
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("R-3m", Lattice.hexagonal(a, c), [alkali, "Ni", "O"],
                                     [[0, 0, 0.5], [0, 0, 0], [0, 0, z_o]])


def _rocksalt(a: float):
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _strained(s, strain: float):
    t = s.copy()
    t.scale_lattice(s.volume * (1.0 + strain) ** 3)
    return t


def _tm_variant(pattern: str, remove_li: int = 0):
    """3x1x1 supercell of LiNiO2; ``pattern`` gives the 9 transition metals in site order
    (N = Ni, M = Mn, C = Co); the first ``remove_li`` Li sites are removed."""
    s = _layered(2.878, 14.19, 0.2584) * (3, 1, 1)
    symbol = {"N": "Ni", "M": "Mn", "C": "Co"}
    tm = [i for i, site in enumerate(s) if site.specie.symbol == "Ni"]
    for i, letter in zip(tm, pattern, strict=True):
        s.replace(i, symbol[letter])
    li = [i for i, site in enumerate(s) if site.specie.symbol == "Li"]
    s.remove_sites(li[:remove_li])
    return s


def recipe_structures() -> list[tuple[str, "Structure", str]]:
    """(file stem, structure, how it was built) for every structure of the set."""
    out = []
    bases = [("NiO_rocksalt", _rocksalt(4.177), "rock-salt NiO prototype, Ni2+"),
             ("LiNiO2_layered", _layered(2.878, 14.19, 0.2584), "layered R-3m LiNiO2 prototype, Ni3+"),
             ("NaNiO2_layered", _layered(2.96, 15.77, 0.2669, "Na"), "LiNiO2 prototype with Li -> Na, Ni3+"),
             ("NiO2_delithiated", _layered(2.81, 13.36, 0.2584).copy(), "LiNiO2 with all Li removed, Ni4+")]
    for stem, s, how in bases:
        if stem == "NiO2_delithiated":
            s.remove_species(["Li"])
        for strain in STRAINS:
            tag = f"{stem}_strain{strain * 100:+.0f}pct"
            out.append((tag, _strained(s, strain), f"{how}; lattice scaled by {strain * 100:+.0f} %"))
    variants = [("LiNi1-3Mn1-3Co1-3O2", "NMCNMCNMC", 0, "NMC111 (Ni2+ Mn4+ Co3+)"),
                ("LiNi1-3Mn1-3Co1-3O2_b", "NNMMCCNMC", 0, "NMC111, other cation order (Ni2+)"),
                ("LiNi4-9Mn4-9Co1-9O2", "NMNMNMNMC", 0, "Ni/Mn-rich layered (Ni2+)"),
                ("LiNi2-3Co1-3O2", "NNCNNCNNC", 0, "Ni/Co layered (Ni3+ Co3+)"),
                ("LiNi7-9Co2-9O2", "NNNNCNNCN", 0, "Ni-rich Ni/Co layered (Ni3+)"),
                ("Li1-3Ni1-3Mn1-3Co1-3O2", "NMCNMCNMC", 6, "NMC111 with 6 of 9 Li removed (Ni4+)"),
                ("Li1-3Ni2-3Co1-3O2", "NNCNNCNNC", 6, "Ni/Co layered with 6 of 9 Li removed (Ni4+)")]
    for stem, pattern, remove, how in variants:
        s = _tm_variant(pattern, remove)
        built = f"3x1x1 LiNiO2 supercell, transition metals {pattern}, {remove} Li removed: {how}"
        out.append((stem, s, built))
        # A second copy with the lattice scaled so the Ni-O distance is that of the prototype of
        # the same Ni state (rock-salt NiO for Ni2+, NiO2 for Ni4+): a crude stand-in for relaxation.
        state = round(charge_balance_state(s, "Ni")[0])
        if state in VEGARD_NI_O:
            f = VEGARD_NI_O[state] / LINIO2_NI_O
            t = s.copy()
            t.scale_lattice(s.volume * f ** 3)
            out.append((f"{stem}_scaled", t, f"{built}; lattice scaled by {(f - 1) * 100:+.1f} % to the "
                                             f"Ni{state}+ prototype's Ni-O distance {VEGARD_NI_O[state]} A"))
    return out


def write_structures(folder: str | Path, notes_file: str | Path | None = None) -> list[Path]:
    """Write every recipe structure as ``<stem>.json`` (pymatgen ``Structure.as_dict``) into
    ``folder`` and, when given, ``notes_file`` (JSON: stem -> how it was built); returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    notes = {}
    for stem, s, how in recipe_structures():
        p = folder / f"{stem}.json"
        # as_dict order ("@module", "@class" first) is what the structure-JSON detector looks for.
        p.write_text(json.dumps(s.as_dict()) + "\n")
        paths.append(p)
        notes[stem] = how
    if notes_file is not None:
        Path(notes_file).write_text(json.dumps({"recipe_version": RECIPE_VERSION, "structures": notes},
                                                   indent=1, sort_keys=True))
    return paths
