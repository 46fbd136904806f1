"""DFT domain: crystal structures, calculations and volumetric grids."""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_SOURCE = (
    C("source_name", pa.string(), "file name the record was parsed from"),
    C("source_sha256", pa.string(), "sha256 of the raw source object"),
    C("source_locator", pa.string(), "where in the source the record was found"),
)

STRUCTURES = TableSchema(
    name="structures",
    version=1,
    domain="dft",
    description="Crystal structures (periodic), from CIF, POSCAR, vasprun, CHGCAR or MP documents",
    hot=("formula", "reduced_formula", "elements", "chemsys", "spacegroup_number"),
    columns=(
        C("formula", pa.string(), "full formula, e.g. 'Si2'"),
        C("reduced_formula", pa.string(), "reduced formula, e.g. 'Si'"),
        C("chemsys", pa.string(), "elements joined by '-', sorted, e.g. 'O-P-Y'"),
        C("elements", pa.list_(pa.string()), "sorted element symbols"),
        C("nelements", pa.int32(), "number of distinct elements"),
        C("nsites", pa.int32(), "number of sites in the cell"),
        C("a", pa.float64(), "lattice length a", "Angstrom"),
        C("b", pa.float64(), "lattice length b", "Angstrom"),
        C("c", pa.float64(), "lattice length c", "Angstrom"),
        C("alpha", pa.float64(), "lattice angle alpha", "degree"),
        C("beta", pa.float64(), "lattice angle beta", "degree"),
        C("gamma", pa.float64(), "lattice angle gamma", "degree"),
        C("lattice", pa.list_(pa.float64()), "lattice matrix, row-major 3x3 (rows are vectors)", "Angstrom"),
        C("volume", pa.float64(), "cell volume", "Angstrom^3"),
        C("density", pa.float64(), "mass density", "g/cm^3"),
        C("spacegroup_symbol", pa.string(), "Hermann-Mauguin symbol (spglib, symprec 0.1)"),
        C("spacegroup_number", pa.int32(), "international space-group number"),
        C("crystal_system", pa.string(), "crystal system"),
        C("material_id", pa.string(), "external id when known (e.g. Materials Project mp-id)"),
        C("structure_json", pa.string(), "pymatgen Structure.as_dict() as JSON"),
        *_SOURCE,
    ),
)

CALCULATIONS = TableSchema(
    name="calculations",
    version=1,  # descriptions clarified only; no column change
    domain="dft",
    description="DFT calculations (VASP runs and Materials Project entries)",
    hot=("reduced_formula", "run_type", "functional", "band_gap", "energy_per_atom", "is_metal"),
    columns=(
        C("structure_id", pa.string(), "record_id of the final structure in `structures`, if any"),
        C("formula", pa.string(), "full formula of the calculated cell"),
        C("reduced_formula", pa.string(), "reduced formula"),
        C("elements", pa.list_(pa.string()), "sorted element symbols"),
        C("nsites", pa.int32(), "number of atoms in the cell"),
        C("code", pa.string(), "code name, e.g. 'VASP'"),
        C("code_version", pa.string(), "code version string"),
        C("material_id", pa.string(), "external id (Materials Project entry id) when known"),
        C("run_type", pa.string(), "run type: GGA, GGA+U, PBEsol, SCAN, HSE06, ..."),
        C("functional", pa.string(), "POTCAR family, e.g. 'PBE' (vasprun: from the POTCAR symbols; MP: "
          "parameters.pseudo_potential.functional); the XC functional is run_type"),
        C("is_hubbard", pa.bool_(), "DFT+U"),
        C("hubbards_json", pa.string(), "U values per element (JSON)", "eV"),
        C("potcar_symbols", pa.list_(pa.string()), "POTCAR symbols as the source writes them "
          "('PAW_PBE Si 05Jan2001' in vasprun, 'PBE Si' in MP entries)"),
        C("encut", pa.float64(), "plane-wave cutoff ENCUT", "eV"),
        C("kpoints_mesh", pa.list_(pa.int32()), "k-point subdivisions (Gamma/Monkhorst meshes; null otherwise)"),
        C("kpoints_style", pa.string(), "k-point generation style"),
        C("nkpoints", pa.int32(), "number of irreducible k-points"),
        C("ispin", pa.int32(), "ISPIN"),
        C("nelect", pa.float64(), "number of electrons NELECT", "e"),
        C("ediff", pa.float64(), "electronic convergence criterion EDIFF", "eV"),
        C("ediffg", pa.float64(), "ionic convergence criterion EDIFFG", "eV or eV/Angstrom"),
        C("nionic_steps", pa.int32(), "number of ionic steps"),
        C("electronic_converged", pa.bool_(), "final ionic step's SCF converged"),
        C("ionic_converged", pa.bool_(), "relaxation converged (true for static runs)"),
        C("energy", pa.float64(), "final total energy (uncorrected)", "eV"),
        C("energy_per_atom", pa.float64(), "energy / nsites (uncorrected; add energy_correction / nsites for "
          "MP-compatible energies)", "eV/atom"),
        C("energy_correction", pa.float64(), "energy correction (MP compatibility)", "eV"),
        C("band_gap", pa.float64(), "band gap from eigenvalues", "eV"),
        C("cbm", pa.float64(), "conduction band minimum", "eV"),
        C("vbm", pa.float64(), "valence band maximum", "eV"),
        C("efermi", pa.float64(), "Fermi level (vasprun: last <i name=\"efermi\">)", "eV"),
        C("is_metal", pa.bool_(), "band gap is zero (occupation-based band edges overlap)"),
        C("is_direct", pa.bool_(), "band gap is direct"),
        C("total_magnetization", pa.float64(), "total magnetization of the final step, N_up - N_down from the "
          "k-weighted occupations (ISPIN=2 only)", "mu_B"),
        C("incar_json", pa.string(), "INCAR parameters as JSON"),
        *_SOURCE,
    ),
)

VOLUMETRIC = TableSchema(
    name="volumetric",
    version=2,  # v2: + channels
    domain="dft",
    description="Volumetric grids (CHGCAR, LOCPOT, AECCAR*); the grid itself is an object",
    hot=("kind", "reduced_formula"),
    columns=(
        C("kind", pa.string(), "CHGCAR, LOCPOT, AECCAR0, AECCAR1, AECCAR2, ELFCAR, ..."),
        C("structure_id", pa.string(), "record_id of the cell's structure in `structures`"),
        C("reduced_formula", pa.string(), "reduced formula of the cell"),
        C("grid_shape", pa.list_(pa.int32()), "grid points along a, b, c"),
        C("channels", pa.list_(pa.string()), "pymatgen data keys of the stored grids: ['total'] or "
          "['total', 'diff'] for charge files, ['spin_up', 'spin_down'] for a spin-polarized LOCPOT"),
        C("array_sha256", pa.string(), "object holding the first channel ('total', or 'spin_up' for a "
          "spin-polarized LOCPOT) exactly as pymatgen parses it (.npy; .npz with key 'data' in older lakes)"),
        C("diff_sha256", pa.string(), "object holding the second channel ('diff' = spin difference for charge "
          "files, 'spin_down' for LOCPOT), if present"),
        C("data_unit", pa.string(), "unit of the stored grid values: charge files hold rho*V_cell (e), LOCPOT eV, "
          "ELFCAR dimensionless"),
        C("min", pa.float64(), "minimum of the stored grid values", "data_unit"),
        C("max", pa.float64(), "maximum of the stored grid values", "data_unit"),
        C("mean", pa.float64(), "mean of the stored grid values", "data_unit"),
        C("integral", pa.float64(), "integral of the field over the cell: electrons for charge files (e), "
          "eV*Angstrom^3 for potentials", "e or eV*Angstrom^3"),
        *_SOURCE,
    ),
)

TABLES = [STRUCTURES, CALCULATIONS, VOLUMETRIC]

VIEWS = {
    "dft": """
        select c.*, s.spacegroup_symbol, s.spacegroup_number, s.crystal_system, s.volume, s.density,
               s.lattice, s.a, s.b, s.c, s.alpha, s.beta, s.gamma, s.structure_json
        from calculations c left join structures s on s.record_id = c.structure_id
    """,
}
