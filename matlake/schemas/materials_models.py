"""Versioned elemental property tables behind the materials descriptors.

One ``element_property_tables`` row per (table name, table version, species, property):
the value with its unit and source.  A table is identified by (``table_name``,
``table_version``) and its content by ``table_sha256``
(:meth:`matlake.models.materials.elements.ElementTable.digest`, sha256 of the canonical
JSON of every species, property, unit and value); descriptor features record that
sha256 in their parameters, so a model's inputs name the exact table.  Long form so that
SQL can read any value (``where species = 'Pb' and property = 'ionic_radius'``).
"""

from __future__ import annotations

import pyarrow as pa

from matlake.schemas.base import Column as C
from matlake.schemas.base import TableSchema

ELEMENT_PROPERTY_TABLES = TableSchema(
    name="element_property_tables",
    version=1,
    domain="materials_models",
    description="Elemental (and molecular-ion) property tables used by descriptors: one row per species and property",
    hot=("table_name", "table_version", "species", "property"),
    columns=(
        C("table_name", pa.string(), "table name, e.g. 'pymatgen-elemental'", nullable=False),
        C("table_version", pa.string(), "table version (bumped when its data or rules change)", nullable=False),
        C("table_sha256", pa.string(), "sha256 of the whole table's canonical JSON", nullable=False),
        C("species", pa.string(), "element symbol or molecular ion name (MA, FA)", nullable=False),
        C("property", pa.string(), "property name, e.g. 'ionic_radius'", nullable=False),
        C("value", pa.float64(), "the value (null when the source has none)", "see unit"),
        C("unit", pa.string(), "unit of value ('' for dimensionless)"),
        C("source", pa.string(), "where the value comes from"),
    ),
)

TABLES = [ELEMENT_PROPERTY_TABLES]
