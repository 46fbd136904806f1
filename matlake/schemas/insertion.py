"""Insertion domain: candidate sites for working ions (Li, Na, Mg, ...) in a host crystal.

Written by :func:`matlake.models.insertion.analysis.find` from the `volumetric`
grids of one cell (charge density: AECCAR0 + AECCAR2 or CHGCAR; potential:
LOCPOT), in one activity that *used* those grids, the host structure and the
host calculation when the lake has it:

- ``insertion_sites``: one row per candidate site of each field (density minima,
  potential maxima for a cation), with its symmetry group, local field
  average, electrostatic energies and the method's parameters;
- ``insertion_candidates``: one row per symmetry-distinct placement of N ions at
  once (simultaneous insertion), ranked by Ewald energy; its structure (host +
  N ions) is a row of ``structures`` named by ``structure_id``.

The rows name their grids in ``volumetric_id``/``volumetric_ids`` rather than a
``subject_id``: a run is about all of its inputs together, so the lineage of a
site or candidate structure reaches every grid's raw file.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_F64 = pa.list_(pa.float64())
_STR = pa.list_(pa.string())
_COMMON = (
    C("volumetric_ids", _STR, "record_ids of the `volumetric` grids of the field(s) the run used"),
    C("structure_id", pa.string(), "record_id of the host structure in `structures` (the grid's cell)"),
    C("calculation_id", pa.string(), "record_id of the host calculation in `calculations` with the same cell, "
      "if the lake has one"),
    C("reduced_formula", pa.string(), "reduced formula of the host"),
    C("ion", pa.string(), "inserted element, e.g. 'Li'"),
    C("ion_charge", pa.float64(), "charge given to the ion (its common positive oxidation state unless set)", "e"),
)
_PRODUCER = (
    C("finder", pa.string(), "name of the producer ('insertion-sites')"),
    C("finder_version", pa.string(), "its version; bumped when the science changes"),
)

INSERTION_SITES = TableSchema(
    name="insertion_sites",
    version=1,
    domain="insertion",
    description="Candidate ion insertion sites from charge-density minima and potential maxima of a cell",
    hot=("reduced_formula", "ion", "field_kind", "group_rank", "local_average", "ewald_energy"),
    columns=(
        C("volumetric_id", pa.string(), "record_id of the first `volumetric` grid of this site's field",
          nullable=False),
        C("field_kind", pa.string(), "'density' (charge density) or 'potential' (LOCPOT)"),
        C("field_label", pa.string(), "the grids summed into the field, e.g. 'AECCAR0+AECCAR2', 'CHGCAR', 'LOCPOT'"),
        C("extremum", pa.string(), "'min' (density minima; potential minima for an anion) or 'max' (potential "
          "maxima: the electron's potential energy is highest where a cation's is lowest)"),
        *_COMMON,
        C("site_index", pa.int32(), "0-based index of the site in this field's list (by group rank, then "
          "local average)"),
        C("frac_a", pa.float64(), "fractional coordinate along a, in [0, 1)", ""),
        C("frac_b", pa.float64(), "fractional coordinate along b, in [0, 1)", ""),
        C("frac_c", pa.float64(), "fractional coordinate along c, in [0, 1)", ""),
        C("x", pa.float64(), "Cartesian x", "Angstrom"),
        C("y", pa.float64(), "Cartesian y", "Angstrom"),
        C("z", pa.float64(), "Cartesian z", "Angstrom"),
        C("value_unit", pa.string(), "unit of grid_value, local_average and group_average: 'e/Angstrom^3' for a "
          "density, 'eV' for a potential"),
        C("grid_value", pa.float64(), "field at the nearest grid point", "value_unit"),
        C("local_average", pa.float64(), "mean of the field within avg_radius of the site", "value_unit"),
        C("group_rank", pa.int32(), "rank of the site's symmetry group, 1 = best (lowest density, or highest "
          "potential for a cation) by group_average"),
        C("multiplicity", pa.int32(), "number of sites of this symmetry group in the cell"),
        C("group_average", pa.float64(), "mean local_average over the group's sites", "value_unit"),
        C("host_distance", pa.float64(), "distance to the nearest host atom", "Angstrom"),
        C("nearest_host_species", pa.string(), "element of that atom"),
        C("potential_energy", pa.float64(), "-ion_charge x (LOCPOT averaged within avg_radius): the ion's "
          "electrostatic energy in the host's potential (null without a LOCPOT of the cell)", "eV"),
        C("ewald_energy", pa.float64(), "Ewald energy of host + one ion here minus the host's (charges in "
          "energy_method)", "eV"),
        C("energy_method", pa.string(), "how ewald_energy was computed (charges of ion and host)"),
        C("other_field_distance", pa.float64(), "distance to the nearest site found in the other field of the "
          "cell (null when only one field was analysed)", "Angstrom"),
        C("fields_agree", pa.bool_(), "other_field_distance <= agreement_tol: both fields put a site here"),
        C("n_extrema", pa.int32(), "local extrema of the grid before the distance filter and clustering"),
        C("min_dist", pa.float64(), "sites closer than this to a host atom were dropped", "Angstrom"),
        C("cluster_tol", pa.float64(), "periodic single-linkage clustering distance", "Angstrom"),
        C("avg_radius", pa.float64(), "radius of the sphere of local_average", "Angstrom"),
        C("group_tol", pa.float64(), "tolerance for mapping sites onto each other by symmetry", "Angstrom"),
        C("symprec", pa.float64(), "spglib tolerance for the host's space group", "Angstrom"),
        C("agreement_tol", pa.float64(), "distance under which sites of the two fields agree", "Angstrom"),
        *_PRODUCER,
    ),
)

INSERTION_CANDIDATES = TableSchema(
    name="insertion_candidates",
    version=1,
    domain="insertion",
    description="Symmetry-distinct placements of N ions at once on the candidate sites, ranked by energy "
                "(Ewald, optionally CHGNet)",
    hot=("reduced_formula", "ion", "n_ions", "rank", "energy"),
    columns=(
        C("candidate_structure_id", pa.string(), "record_id of the host + N ions structure in `structures`",
          nullable=False),
        C("field_label", pa.string(), "field whose sites were used, e.g. 'AECCAR0+AECCAR2'"),
        *_COMMON,
        C("n_ions", pa.int32(), "number of ions inserted at once"),
        C("rank", pa.int32(), "1 = lowest energy among the distinct placements of n_ions"),
        C("energy", pa.float64(), "the ranking energy: host + n_ions ions minus the host, by the ranker", "eV"),
        C("energy_per_ion", pa.float64(), "energy / n_ions", "eV"),
        C("energy_method", pa.string(), "how energy was computed (ranker, charges of ion and host)"),
        C("ranker", pa.string(), "'ewald' (Ewald sum, oxidation-state charges) or 'chgnet' (CHGNet static "
          "energy of the lowest Ewald placements)"),
        C("ewald_energy", pa.float64(), "Ewald energy of host + n_ions ions minus the host's", "eV"),
        C("multiplicity", pa.int32(), "allowed placements equivalent to this one under the host's symmetry"),
        C("site_ids", _STR, "record_ids of the occupied `insertion_sites` rows"),
        C("frac_coords", _F64, "fractional coordinates of the ions, n_ions x 3, row-major", ""),
        C("min_ion_distance", pa.float64(), "shortest ion-ion distance in this placement (null for one ion)",
          "Angstrom"),
        C("min_ion_distance_cutoff", pa.float64(), "placements with ions closer than this were not considered",
          "Angstrom"),
        C("n_candidates", pa.int32(), "candidate sites the placements were drawn from (capped)"),
        C("n_allowed", pa.int32(), "placements that kept the ions min_ion_distance_cutoff apart"),
        C("n_distinct", pa.int32(), "of those, distinct under the host's symmetry"),
        *_PRODUCER,
    ),
)

TABLES = [INSERTION_SITES, INSERTION_CANDIDATES]

VIEWS = {
    # one row per symmetry group of each field and run: the representative (best) site
    "insertion_groups": """
        select volumetric_id, field_kind, field_label, reduced_formula, ion, group_rank, multiplicity,
               group_average, value_unit, frac_a, frac_b, frac_c, host_distance, nearest_host_species,
               ewald_energy, potential_energy, other_field_distance, fields_agree, record_id as site_id, activity_id
        from insertion_sites
        qualify row_number() over (partition by activity_id, volumetric_id, field_kind, group_rank
                                   order by site_index) = 1
    """,
}
