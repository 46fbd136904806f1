"""Deletion vectors instead of superseded rows; used sets instead of one link per record.

Why: re-predicting 10^6 records wrote 10^6 ``superseded`` rows and 10^6
``used`` links (468 MB of catalog for 71 MB of Parquet), and every query
engine loaded all superseded rows into Python.  Now a commit that replaces
rows of a data file registers one cumulative deletion vector for that file (a
small Parquet sidecar of row positions, or none when every row is replaced),
which DuckDB anti-joins by row position; and train, predict and featurize
record the records they used as one ``used_sets`` row (table, snapshot, view
SQL, count, digest) whose members are read from Parquet.

Upgrade converts the ``superseded`` rows into deletion vectors (writing their
sidecars under ``tables/NAME/_deletes/``) and drops the table.  Existing
per-record ``used`` links are kept as they are: lineage reads links and sets.
Downgrade rebuilds ``superseded`` from the data files (the 0003 backfill),
expands every used set back into per-record links, and drops both new tables
(sidecars are left for ``gc``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deletion_vectors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("data_file_id", sa.Integer(), sa.ForeignKey("data_files.id"), nullable=False),
        sa.Column("table_name", sa.String(128), nullable=False),
        sa.Column("path", sa.String(512), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("added_snapshot", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
        sa.Column("retired_snapshot", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=True),
    )
    op.create_index("ix_deletion_vectors_data_file_id", "deletion_vectors", ["data_file_id"])
    op.create_index("ix_deletion_vectors_added_snapshot", "deletion_vectors", ["added_snapshot"])
    op.create_table(
        "used_sets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("activity_id", sa.String(40), sa.ForeignKey("activities.activity_id"), nullable=False),
        sa.Column("table_name", sa.String(128), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
        sa.Column("view_sql", sa.Text(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("members", sa.String(16), nullable=False),
        sa.Column("members_sha256", sa.String(64), nullable=True),
    )
    op.create_index("ix_used_sets_activity_id", "used_sets", ["activity_id"])
    op.create_index("ix_used_sets_table_name", "used_sets", ["table_name"])
    from matlake.migrations.helpers import superseded_to_deletion_vectors

    superseded_to_deletion_vectors(op.get_bind())
    op.drop_index("ix_superseded_data_file_id", table_name="superseded")
    op.drop_index("ix_superseded_table_name_snapshot_id", table_name="superseded")
    op.drop_table("superseded")


def downgrade() -> None:
    op.create_table(
        "superseded",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(128), nullable=False),
        sa.Column("data_file_id", sa.Integer(), sa.ForeignKey("data_files.id"), nullable=False),
        sa.Column("record_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
    )
    op.create_index("ix_superseded_table_name_snapshot_id", "superseded", ["table_name", "snapshot_id"])
    op.create_index("ix_superseded_data_file_id", "superseded", ["data_file_id"])
    from matlake.migrations.helpers import backfill_superseded, expand_used_sets

    backfill_superseded(op.get_bind())
    expand_used_sets(op.get_bind())
    op.drop_index("ix_used_sets_table_name", table_name="used_sets")
    op.drop_index("ix_used_sets_activity_id", table_name="used_sets")
    op.drop_table("used_sets")
    op.drop_index("ix_deletion_vectors_added_snapshot", table_name="deletion_vectors")
    op.drop_index("ix_deletion_vectors_data_file_id", table_name="deletion_vectors")
    op.drop_table("deletion_vectors")
