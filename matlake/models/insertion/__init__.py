"""Ion insertion sites from stored charge densities and potentials.

Science (pure; numpy and pymatgen): :func:`find_sites` (extrema of a density or
potential grid, filtered, clustered and grouped by symmetry),
:class:`EwaldTable` (electrostatic energies of ions on the sites),
:func:`insert_simultaneously` (N ions placed at once, symmetry-reduced, ranked by
Ewald energy) and :class:`InsertionFinder` (all of it for one cell, as rows).

Platform: :func:`find` reads the `volumetric` grids of a cell from a lake and
commits `insertion_sites`, `insertion_candidates` and candidate `structures`
with provenance; :func:`plot_sites` draws a slice of the field with the sites;
``matlake insertion ...`` is the command line.

Names are imported on first use (PEP 562), so that ``import
matlake.models.insertion.cli`` (done by every ``matlake`` command) stays cheap.
"""

from __future__ import annotations

from matlake.models.lazy import lazy_exports

_EXPORTS = {
    "Field": "sites", "SiteSet": "sites", "combine_grids": "sites", "find_sites": "sites",
    "local_extrema": "sites", "local_average": "sites", "pbc_distances": "sites",
    "EwaldTable": "electrostatics", "ion_charge": "electrostatics", "host_charges": "electrostatics",
    "Configuration": "simultaneous", "insert_simultaneously": "simultaneous", "MAX_CANDIDATES": "simultaneous",
    "GridInput": "analysis", "InsertionFinder": "analysis", "FinderResult": "analysis", "FindReport": "analysis",
    "find": "analysis", "FINDER_NAME": "analysis", "FINDER_VERSION": "analysis",
    "plot_sites": "plots", "slice_figure": "plots",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
