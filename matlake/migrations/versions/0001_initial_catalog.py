"""Initial catalog: table registry, snapshots, data files, tags, objects,
activities and links (provenance), ingest ledger and model registry.

Why: the first schema of the lake's catalog (ARCHITECTURE, "Storage").

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lake_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "lake_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_snapshot", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(sa.table("lake_state", sa.column("id"), sa.column("last_snapshot")), [{"id": 1, "last_snapshot": 0}])
    op.create_table(
        "table_registry",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("domain", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("schema_json", sa.Text(), nullable=False),
        sa.Column("registered_at", TS, nullable=False),
    )
    op.create_table(
        "snapshots",
        sa.Column("snapshot_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_table(
        "data_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(128), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("max_version", sa.Integer(), nullable=False),
        sa.Column("tombstones", sa.Integer(), nullable=False),
        sa.Column("added_snapshot", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
        sa.Column("retired_snapshot", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=True),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_data_files_table_name", "data_files", ["table_name"])
    op.create_index("ix_data_files_added_snapshot", "data_files", ["added_snapshot"])
    op.create_table(
        "tags",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_table(
        "objects",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("hash_algo", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("original_name", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
    )
    op.create_table(
        "activities",
        sa.Column("activity_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("parameters_json", sa.Text(), nullable=False),
        sa.Column("matlake_version", sa.String(32), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
    )
    op.create_index("ix_activities_kind", "activities", ["kind"])
    op.create_index("ix_activities_snapshot_id", "activities", ["snapshot_id"])
    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("activity_id", sa.String(40), sa.ForeignKey("activities.activity_id"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("entity_kind", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=False),
        sa.Column("entity_version", sa.Integer(), nullable=True),
        sa.Column("table_name", sa.String(128), nullable=True),
    )
    op.create_index("ix_links_activity_id", "links", ["activity_id"])
    op.create_index("ix_links_entity_id", "links", ["entity_id"])
    op.create_table(
        "ingest_ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("parser", sa.String(64), nullable=False),
        sa.Column("parser_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("record_ids_json", sa.Text(), nullable=False),
        sa.Column("n_records", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(40), sa.ForeignKey("activities.activity_id"), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("sha256", "parser", "parser_version"),
    )
    op.create_index("ix_ingest_ledger_sha256", "ingest_ledger", ["sha256"])
    op.create_index("ix_ingest_ledger_status", "ingest_ledger", ["status"])
    op.create_index("ix_ingest_ledger_status_created", "ingest_ledger", ["status", "created_at"])
    op.create_table(
        "model_versions",
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("module", sa.String(256), nullable=False),
        sa.Column("module_version", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("view_sql", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), sa.ForeignKey("snapshots.snapshot_id"), nullable=False),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.String(40), sa.ForeignKey("activities.activity_id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_model_versions_name", "model_versions", ["name"])


def downgrade() -> None:
    for name in (
        "model_versions",
        "ingest_ledger",
        "links",
        "activities",
        "objects",
        "tags",
        "data_files",
        "snapshots",
        "table_registry",
        "lake_state",
        "lake_settings",
    ):
        op.drop_table(name)
