"""Materials property tables: subjects, properties in long form, feature vectors.

A tabular dataset (a CSV of compositions or defects with computed or measured
properties, read through a map file by :mod:`matlake.ingest.tables`) becomes:

- ``material_subjects``: one row per subject (one data row of the file): the
  dataset name from the map, the subject key (the identifying columns joined by
  ``|``), the composition when the file gives one (or site occupancies from which
  it is built), the identifying columns as tags.
- ``material_properties``: one row per (subject, property, fidelity), a float64
  value with its unit, the fidelity ('PBE', 'HSE', 'GGA', 'experiment', ...),
  method and source as the map declares them, and the row and column it came from.
- ``material_features``: one feature vector per (subject, featurizer).  Descriptor
  columns the file carries are stored as given under featurizer ``given:<dataset>``;
  featurizers (elemental and site descriptors) write other rows of the same table.
- ``table_rejects``: the bad cells of a file ingested with ``on_bad_cell = skip``
  (row, column, what was expected, what was found).

View ``material_targets`` is the latest live property rows of live subjects in the
narrow form model views join on.
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

_SOURCE = (
    C("file_format", pa.string(), "source format: 'csv' (any delimiter) or 'frame' (a pandas DataFrame written as CSV)"),
    C("source_name", pa.string(), "file name the row was parsed from"),
    C("source_sha256", pa.string(), "sha256 of the raw source object"),
    C("source_locator", pa.string(), "where in the source: 'row=N line=L' (N the 1-based data row, L the text line)"),
)

MATERIAL_SUBJECTS = TableSchema(
    name="material_subjects",
    version=1,
    domain="materials",
    description="Subjects of tabular property datasets: one row per data row (a composition, a defect, a structure)",
    hot=("dataset", "subject_key", "formula"),
    columns=(
        C("dataset", pa.string(), "dataset name from the map file", nullable=False),
        C("subject_key", pa.string(), "the map's subject columns' values joined by '|', as given", nullable=False),
        C("formula", pa.string(), "pymatgen reduced formula of the composition (null when none is given)"),
        C("composition_json", pa.string(), "element -> amount per formula unit, JSON (null when none is given)"),
        C("sites_json", pa.string(),
          "site -> {species: fraction}, fractions of each site summing to 1, JSON (when the map declares sites)"),
        C("structure_id", pa.string(), "record_id of a structures row the subject refers to, when given"),
        C("row_number", pa.int32(), "1-based data row in the source file (the header is not counted)"),
        C("tags_json", pa.string(), "identifying columns (subject and tag columns of the map): column -> text, JSON"),
        *_SOURCE,
    ),
)

MATERIAL_PROPERTIES = TableSchema(
    name="material_properties",
    version=1,
    domain="materials",
    description="Properties of material subjects in long form: one row per (subject, property, fidelity)",
    hot=("dataset", "name", "fidelity", "subject_id"),
    columns=(
        C("subject_id", pa.string(), "record_id of the material_subjects row", nullable=False),
        C("dataset", pa.string(), "dataset name from the map file", nullable=False),
        C("name", pa.string(), "property name from the map, e.g. 'band_gap', 'level(+1/0)'", nullable=False),
        C("value", pa.float64(), "the value, in unit", "see unit", nullable=False),
        C("unit", pa.string(), "unit of value as the map declares it ('' for dimensionless)", nullable=False),
        C("fidelity", pa.string(), "level of theory or measurement: 'PBE', 'HSE', 'GGA', 'experiment', ...",
          nullable=False),
        C("method", pa.string(), "how the value was obtained, from the map (e.g. 'DFT supercell')"),
        C("source", pa.string(), "where the values come from, from the map (a paper, a repository)"),
        C("row_number", pa.int32(), "1-based data row in the source file"),
        C("column_name", pa.string(), "column of the source file the value was read from"),
    ),
)

MATERIAL_FEATURES = TableSchema(
    name="material_features",
    version=1,
    domain="materials",
    description="One feature vector per (subject, featurizer): descriptors given in a file ('given:<dataset>') "
                "or computed by a featurizer",
    hot=("featurizer", "subject_id"),
    columns=(
        C("subject_id", pa.string(), "record_id of the subject", nullable=False),
        C("subject_table", pa.string(), "table of the subject, e.g. 'material_subjects'", nullable=False),
        C("featurizer", pa.string(), "'given:<dataset>' for descriptor columns of a file, else the featurizer name",
          nullable=False),
        C("featurizer_version", pa.string(), "featurizer version (the parser version for given descriptors)"),
        C("parameters_json", pa.string(), "featurizer parameters (for given descriptors: dataset and columns), JSON"),
        C("names", pa.list_(pa.string()), "name of each component"),
        C("values", pa.list_(pa.float64()), "the vector (NaN where a given descriptor cell was missing)",
          "see units"),
        C("units", pa.list_(pa.string()), "unit of each component ('' for dimensionless)"),
    ),
)

TABLE_REJECTS = TableSchema(
    name="table_rejects",
    version=1,
    domain="materials",
    description="Bad cells of a tabular file ingested with on_bad_cell = skip: the rows holding them were left out",
    hot=("dataset", "row_number"),
    columns=(
        C("dataset", pa.string(), "dataset name from the map file", nullable=False),
        C("row_number", pa.int32(), "1-based data row in the source file"),
        C("line_number", pa.int32(), "1-based text line in the source file"),
        C("column_name", pa.string(), "column of the bad cell ('(row)' when the row has the wrong number of fields)"),
        C("expected", pa.string(), "what the map requires there"),
        C("found", pa.string(), "what the cell held"),
        *_SOURCE,
    ),
)

TABLES = [MATERIAL_SUBJECTS, MATERIAL_PROPERTIES, MATERIAL_FEATURES, TABLE_REJECTS]

VIEWS = {
    # The targets model views join on: latest live property rows of live subjects.
    "material_targets": """
        select p.subject_id, p.dataset, p.name, p.fidelity, p.value, p.unit
        from material_properties p
        join material_subjects s on s.record_id = p.subject_id
    """,
}
