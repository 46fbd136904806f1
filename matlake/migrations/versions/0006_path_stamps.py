"""Path stamps: the sha256 last found at a source path, keyed by the file's stat stamp.

Why: every ingest and scheduled job read and hashed every matched file to
learn that it was unchanged; at 10^4 files a no-op run was dominated by that.
Ingest now records, per path, (device, inode, size, mtime_ns, ctime_ns) and
the sha256 it hashed, and the parser detected for it (with the kind and a
digest of the parser registry); a later run whose stat of the path gives the
same five values reuses the sha256 (and the detection, while kind and registry
are the same) and checks the ledger without reading the file.
The content hash stays the identity; the table is a cache and starts empty
(existing lakes simply hash each file once more, then fill it).

Downgrade drops the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "path_stamps",
        sa.Column("path", sa.Text(), primary_key=True),
        sa.Column("device", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("ctime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("parser", sa.String(64), nullable=False),
        sa.Column("parser_version", sa.String(32), nullable=False),
        sa.Column("parser_registry", sa.String(32), nullable=False),
        sa.Column("hashed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("path_stamps")
