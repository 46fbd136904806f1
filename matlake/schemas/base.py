"""One definition per table: columns with Arrow type, unit and description.

The Arrow schema, the documentation (`matlake schema`), and row validation are
all derived from a :class:`TableSchema`.  Every science table also carries the
provenance columns of :data:`PROVENANCE_COLUMNS`, filled in by the platform at
commit time; ingest and model modules never set them (except ``record_id``,
which they compute through :meth:`matlake.ingest.base.ParseContext.record_id`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One column of a science table.

    ``unit`` is the physical unit of the stored values (SI-like names: "eV",
    "Angstrom", "Hz", "ohm", ...), or "" for dimensionless/categorical.
    """

    name: str
    type: pa.DataType
    description: str
    unit: str = ""
    nullable: bool = True

    def field(self) -> pa.Field:
        meta = {b"description": self.description.encode(), b"unit": self.unit.encode()}
        return pa.field(self.name, self.type, nullable=self.nullable, metadata=meta)


PROVENANCE_COLUMNS: tuple[Column, ...] = (
    Column("record_id", pa.string(), "stable logical id of the record", nullable=False),
    Column("version", pa.int32(), "1, 2, ...: a re-parse or correction adds a version", nullable=False),
    Column("activity_id", pa.string(), "activity that generated this row", nullable=False),
    Column("schema_version", pa.int32(), "version of the table schema this row was written under", nullable=False),
    Column("created_at", pa.timestamp("us", tz="UTC"), "commit time", nullable=False),
    Column("tombstone", pa.bool_(), "true when this version deletes the record", nullable=False),
)
PROVENANCE_NAMES = frozenset(c.name for c in PROVENANCE_COLUMNS)


@dataclass(frozen=True)
class TableSchema:
    """A science table: name, schema version and its data columns.

    Bump ``version`` for an additive change (new nullable column); readers
    merge files of different versions by column name.  Anything else needs a
    migration.
    """

    name: str
    version: int
    description: str
    columns: tuple[Column, ...]
    domain: str = ""
    # Columns a user filters on; documented, and kept as real columns.
    hot: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"table {self.name}: duplicate columns {sorted(dup)}")
        clash = set(names) & (PROVENANCE_NAMES - {"record_id"})
        if clash:
            raise ValueError(f"table {self.name}: columns {sorted(clash)} are reserved for provenance")

    # The schemas below are built once per table (cached_property writes the instance's __dict__,
    # which a frozen dataclass allows): every parsed file and every commit asks for them.
    @functools.cached_property
    def data_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name != "record_id")

    @functools.cached_property
    def _data_schema(self) -> pa.Schema:
        return pa.schema([PROVENANCE_COLUMNS[0].field()] + [c.field() for c in self.data_columns])

    @functools.cached_property
    def _arrow_schema(self) -> pa.Schema:
        meta = {b"matlake.table": self.name.encode(), b"matlake.schema_version": str(self.version).encode()}
        fields = [c.field() for c in PROVENANCE_COLUMNS] + [c.field() for c in self.data_columns]
        return pa.schema(fields, metadata=meta)

    def data_schema(self) -> pa.Schema:
        """Schema a module returns: ``record_id`` plus the data columns."""
        return self._data_schema

    def arrow_schema(self) -> pa.Schema:
        """Schema of the stored Parquet files: provenance columns first."""
        return self._arrow_schema

    def conform(self, table: pa.Table, source: str = "") -> pa.Table:
        """Return ``table`` cast to :meth:`data_schema`, in column order.

        Missing nullable columns are filled with nulls; an unknown column, a
        missing non-nullable column or an impossible cast raises ``ValueError``
        naming the table, column, expected and found type.
        """
        target = self.data_schema()
        if table.schema.equals(target):  # already conformed (e.g. by the ingest worker)
            return table
        where = f" (from {source})" if source else ""
        present = set(table.column_names)
        unknown = [n for n in table.column_names if target.get_field_index(n) < 0]
        if unknown:
            raise ValueError(f"table {self.name}{where}: unknown columns {unknown}; expected a subset of {target.names}")
        arrays = []
        for f in target:
            if f.name in present:
                col = table.column(f.name)
                if not col.type.equals(f.type):
                    try:
                        col = col.cast(f.type)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise ValueError(
                            f"table {self.name}{where}: column {f.name!r} expected {f.type}, found {col.type}: {exc}"
                        ) from exc
                if not f.nullable and col.null_count:
                    raise ValueError(f"table {self.name}{where}: column {f.name!r} expected no nulls, found {col.null_count}")
            else:
                if not f.nullable:
                    raise ValueError(f"table {self.name}{where}: column {f.name!r} is required, found it missing")
                col = pa.nulls(table.num_rows, f.type)
            arrays.append(col)
        return pa.table(arrays, schema=target)

    def docs(self) -> str:
        lines = [f"{self.name} (schema v{self.version}): {self.description}"]
        for c in PROVENANCE_COLUMNS[:1] + self.data_columns:
            unit = f" [{c.unit}]" if c.unit else ""
            lines.append(f"  {c.name:<24} {str(c.type):<28}{unit} {c.description}")
        return "\n".join(lines)
