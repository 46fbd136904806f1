"""Jobs and leases: a ``job_runs`` history and a ``leases`` table.

Why: scheduled ingestion jobs (ARCHITECTURE, "Jobs and campaigns") need a
record of every run with its counts, for ``matlake jobs status``, and a lock
that works across processes and hosts so that two runs of one job never
overlap.  A lease is a row that its holder renews while it works and that
expires when the holder dies, so a crashed run cannot block a job forever.
Both tables are new; no existing row changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("acquired_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("heartbeat", TS, nullable=False),
    )
    op.create_table(
        "job_runs",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("job_name", sa.String(128), nullable=False),
        sa.Column("activity_id", sa.String(40), sa.ForeignKey("activities.activity_id"), nullable=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_new", sa.Integer(), nullable=False),
        sa.Column("n_unchanged", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("n_deferred", sa.Integer(), nullable=False),
        sa.Column("n_records", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_index("ix_job_runs_job_name_started_at", "job_runs", ["job_name", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_job_name_started_at", table_name="job_runs")
    op.drop_table("job_runs")
    op.drop_table("leases")
