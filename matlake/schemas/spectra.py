"""Spectra domain: X-ray absorption (XAS/XANES/EXAFS), EELS and luminescence (PL/CL).

One row of ``spectra`` is one 1D spectrum: an axis and an intensity of equal
length, as list columns, with their units.  Energies are in eV (for EELS the
axis is the energy *loss* in eV); luminescence keeps the wavelength axis in nm
as measured (``axis_quantity = 'wavelength'``) and the eV axis is derived
(E = hc/lambda, :mod:`matlake.models.spectra.units`).  Measured, computed and
generated spectra live side by side, told apart by ``source_kind``.

A spectrum image (an EELS line scan or map) is a parent row of
``spectrum_images`` whose full data cube is kept as an exact array object, plus
one child row of ``spectra`` per pixel that names the parent
(``parent_id``) and its position.

Processing steps (alignment, broadening, normalisation, interpolation onto a
named grid) write ``spectra_processed`` rows derived from one ``spectra`` row
at one version; featurizers write one vector per spectrum and featurizer to
``spectrum_features``.  Labels of a spectrum (a planted oxidation state, a
bond length computed from the structure) are ``spectrum_labels`` rows.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

TECHNIQUES = ("xas", "xanes", "exafs", "eels", "pl", "cl", "other")
SOURCE_KINDS = ("measured", "computed", "generated")
AXIS_QUANTITIES = ("energy", "energy_loss", "wavelength")

_SOURCE = (
    C("file_format", pa.string(), "source format, e.g. 'xdi', 'mp-xas-json', 'emsa', 'dm3', 'csv'"),
    C("source_name", pa.string(), "file name the record was parsed from (null for spectra computed or generated inside the lake)"),
    C("source_sha256", pa.string(), "sha256 of the raw source object"),
    C("source_locator", pa.string(), "where in the source the spectrum was found, e.g. 'pixel=3,0'"),
)

SPECTRA = TableSchema(
    name="spectra",
    version=1,
    domain="spectra",
    description="One-dimensional spectra (XAS/XANES/EXAFS, EELS, PL/CL): axis and intensity as lists with units",
    hot=("technique", "element", "edge", "sample", "source_kind", "parent_id"),
    columns=(
        C("technique", pa.string(), "one of: " + ", ".join(TECHNIQUES), nullable=False),
        C("element", pa.string(), "absorbing / edge element symbol, e.g. 'Ni' (null for luminescence)"),
        C("edge", pa.string(), "absorption edge, e.g. 'K', 'L3', 'L2,3' (null for luminescence)"),
        C("axis", pa.list_(pa.float64()), "axis values, strictly increasing; unit in axis_unit", "see axis_unit"),
        C("axis_unit", pa.string(), "unit of axis: 'eV' (energy, energy loss) or 'nm' (wavelength)", nullable=False),
        C("axis_quantity", pa.string(), "one of: " + ", ".join(AXIS_QUANTITIES), nullable=False),
        C("intensity", pa.list_(pa.float64()), "intensity per axis value", "see intensity_unit"),
        C("intensity_unit", pa.string(), "unit of intensity: 'counts', 'arb', 'mu' (absorption, dimensionless), ..."),
        C("intensity_quantity", pa.string(),
          "what intensity is, e.g. 'mu' (ln(I0/I) or If/I0), 'counts', 'normalized mu', 'xmu'"),
        C("n_points", pa.int32(), "number of axis values", nullable=False),
        C("axis_min", pa.float64(), "first axis value", "see axis_unit"),
        C("axis_max", pa.float64(), "last axis value", "see axis_unit"),
        C("measurement_mode", pa.string(), "transmission, fluorescence, TEY, EELS, PL, ... when known"),
        C("source_kind", pa.string(), "one of: " + ", ".join(SOURCE_KINDS), nullable=False),
        C("code", pa.string(), "for computed/generated spectra: the code or generator, e.g. 'FEFF 10.0'"),
        C("code_version", pa.string(), "version of code"),
        C("code_parameters_json", pa.string(), "every input parameter of the code or generator (incl. seed), JSON"),
        C("structure_id", pa.string(), "record_id of the structures row a computed spectrum was computed for"),
        C("absorbing_site", pa.int32(), "index of the absorbing site in that structure (computed spectra)"),
        C("sample", pa.string(), "sample name from the file or the ingest options"),
        C("instrument", pa.string(), "instrument, beamline or microscope"),
        C("facility", pa.string(), "facility, e.g. 'APS'"),
        C("beam_energy", pa.float64(), "incident beam energy (electron beam for EELS, ring energy not here)", "eV"),
        C("convergence_angle", pa.float64(), "probe convergence semi-angle (EELS)", "mrad"),
        C("collection_angle", pa.float64(), "collection semi-angle (EELS)", "mrad"),
        C("measured_at", pa.timestamp("us"), "start of the measurement, local time as the file gives it"),
        C("parent_id", pa.string(), "record_id of the spectrum_images row this pixel spectrum belongs to"),
        C("pixel_index", pa.list_(pa.int32()), "pixel position inside the parent, in the parent's axis order"),
        C("position", pa.list_(pa.float64()), "pixel position in physical units (see position_unit)", "see position_unit"),
        C("position_unit", pa.string(), "unit of position, e.g. 'nm'"),
        C("metadata_json", pa.string(), "every other header entry of the source, as JSON"),
        *_SOURCE,
    ),
)

SPECTRUM_IMAGES = TableSchema(
    name="spectrum_images",
    version=1,
    domain="spectra",
    description="Spectrum images (EELS line scans and maps): the data cube as an exact array object; pixels in spectra",
    hot=("technique", "sample"),
    columns=(
        C("technique", pa.string(), "one of: " + ", ".join(TECHNIQUES), nullable=False),
        C("shape", pa.list_(pa.int64()), "array shape, navigation axes first, signal axis last"),
        C("axis_names", pa.list_(pa.string()), "name of each array axis, e.g. ['y', 'x', 'Energy loss']"),
        C("axis_scales", pa.list_(pa.float64()), "step of each axis, in axis_units"),
        C("axis_offsets", pa.list_(pa.float64()), "value at index 0 of each axis, in axis_units"),
        C("axis_units", pa.list_(pa.string()), "unit of each axis, e.g. ['nm', 'nm', 'eV']"),
        C("array_sha256", pa.string(), "object holding the data cube (.npy, dtype and shape kept; .npz in older lakes)"),
        C("dtype", pa.string(), "numpy dtype of the data cube"),
        C("n_spectra", pa.int32(), "number of child spectra (pixels)"),
        C("sample", pa.string(), "sample name when known"),
        C("instrument", pa.string(), "microscope / spectrometer"),
        C("beam_energy", pa.float64(), "electron beam energy", "eV"),
        C("measured_at", pa.timestamp("us"), "acquisition time, local as the file gives it"),
        C("metadata_json", pa.string(), "the source's metadata tree, as JSON"),
        *_SOURCE,
    ),
)

SPECTRA_PROCESSED = TableSchema(
    name="spectra_processed",
    version=1,
    domain="spectra",
    description="A spectrum after processing steps (shift, broadening, normalisation, interpolation onto a grid)",
    hot=("subject_id", "pipeline", "grid_name"),
    columns=(
        C("subject_id", pa.string(), "record_id of the spectra row processed"),
        C("subject_version", pa.int32(), "version of that spectra row that was used"),
        C("pipeline", pa.string(), "name of the processing pipeline, e.g. 'normalize' or 'xanes-ni-k'"),
        C("steps_json", pa.string(), "the steps in order with every parameter, JSON"),
        C("grid_name", pa.string(), "named grid the result is on (null when on the input axis)"),
        C("axis", pa.list_(pa.float64()), "axis values after processing", "see axis_unit"),
        C("axis_unit", pa.string(), "unit of axis"),
        C("intensity", pa.list_(pa.float64()), "processed intensity", "see intensity_quantity"),
        C("intensity_quantity", pa.string(), "e.g. 'normalized mu', 'flattened mu', 'max-normalized'"),
        C("n_points", pa.int32(), "number of axis values"),
        C("e0", pa.float64(), "edge energy E0 (maximum of the derivative, or as given)", "eV"),
        C("edge_step", pa.float64(), "edge step: post-edge minus pre-edge line at E0", "same as input intensity"),
        C("pre_edge_line", pa.list_(pa.float64()), "pre-edge line [slope (per eV), intercept]"),
        C("post_edge_poly", pa.list_(pa.float64()), "post-edge polynomial coefficients in (E - E0), lowest first"),
    ),
)

SPECTRUM_FEATURES = TableSchema(
    name="spectrum_features",
    version=1,
    domain="spectra",
    description="One feature vector per spectrum and featurizer (raw on grid, derivative, CDF, Gaussians, ...)",
    hot=("featurizer", "subject_id", "grid_name"),
    columns=(
        C("subject_id", pa.string(), "record_id of the spectrum (spectra or spectra_processed row)"),
        C("subject_table", pa.string(), "table of the subject: 'spectra' or 'spectra_processed'"),
        C("subject_version", pa.int32(), "version of the subject that was featurized"),
        C("spectrum_id", pa.string(), "record_id of the underlying spectra row (equal to subject_id for spectra)"),
        C("featurizer", pa.string(), "featurizer name, e.g. 'cdf'"),
        C("featurizer_version", pa.string(), "featurizer version"),
        C("params_json", pa.string(), "featurizer parameters, JSON"),
        C("grid_name", pa.string(), "named grid the vector was computed on"),
        C("vector", pa.list_(pa.float64()), "the feature vector", "see unit"),
        C("n_features", pa.int32(), "length of vector"),
        C("feature_names", pa.list_(pa.string()), "name of each component when they are not grid points"),
        C("unit", pa.string(), "unit of the vector's values ('' when dimensionless)"),
    ),
)

SPECTRUM_LABELS = TableSchema(
    name="spectrum_labels",
    version=1,
    domain="spectra",
    description="Labels of spectra used as model targets: oxidation state, bond length, defect class, ...",
    hot=("subject_id", "label"),
    columns=(
        C("subject_id", pa.string(), "record_id of the spectra row labelled"),
        C("label", pa.string(), "label name, e.g. 'oxidation_state', 'mean_ni_o_distance', 'defect'"),
        C("value", pa.float64(), "numeric value", "see unit"),
        C("value_text", pa.string(), "categorical value when the label is not numeric"),
        C("unit", pa.string(), "unit of value"),
        C("method", pa.string(), "how the label was obtained: 'planted by generator', 'bond valence', ..."),
    ),
)

SPECTRAL_GRIDS = TableSchema(
    name="spectral_grids",
    version=1,
    domain="spectra",
    description="User-defined named grids for interpolation (the built-in grids are in matlake.models.spectra.grids)",
    hot=("name",),
    columns=(
        C("name", pa.string(), "grid name, unique among grids", nullable=False),
        C("axis", pa.list_(pa.float64()), "grid points, strictly increasing", "see unit"),
        C("unit", pa.string(), "unit of the grid: 'eV' or 'nm'"),
        C("element", pa.string(), "element the grid is meant for, if any"),
        C("edge", pa.string(), "edge the grid is meant for, if any"),
        C("description", pa.string(), "where the grid comes from"),
    ),
)

TABLES = [SPECTRA, SPECTRUM_IMAGES, SPECTRA_PROCESSED, SPECTRUM_FEATURES, SPECTRUM_LABELS, SPECTRAL_GRIDS]

VIEWS = {
    # A spectrum's summary without its arrays, for listing.
    "spectra_summary": """
        select record_id, version, technique, element, edge, source_kind, sample, n_points,
               axis_min, axis_max, axis_unit, measurement_mode, parent_id, file_format, source_name
        from spectra
    """,
}
