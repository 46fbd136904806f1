"""Ingest ledger: parser errors apart from bad input, failures keyed by how they were tried.

Why: a crash inside a parser (a bug) was recorded like malformed input, as
``failed`` with a one-line message, so neither users nor the fuzz tests could
tell them apart; it is now status ``error`` and its traceback goes into the
new ``detail`` column.  A failure was keyed like a success, by (sha256,
parser, parser_version), so after a detection failure the same file tried
again with ``--kind`` or other options was "unchanged" and never tried, and a
file that could not be read (no bytes, no hash) could not be recorded at all.
The new ``attempt_key`` column joins the key: empty for ``ok`` rows (the same
bytes are still parsed once per parser version), the kind and options for a
failure, and the path, size, mtime and reason for an unreadable file.
Existing failures get the key of the kind and options kept in their ingest
activity by the helper beside this migration.

Downgrade drops the two columns; rows that only ``attempt_key`` told apart
are removed first (the ``ok`` row, else the oldest, is kept; the removed
attempts' messages stay in their activities).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_KEY = "uq_ingest_ledger_sha256_parser_parser_version"
NEW_KEY = "uq_ingest_ledger_sha256_parser_parser_version_attempt_key"


def upgrade() -> None:
    with op.batch_alter_table("ingest_ledger") as batch:
        batch.add_column(sa.Column("attempt_key", sa.String(80), nullable=False, server_default=""))
        batch.add_column(sa.Column("detail", sa.Text(), nullable=False, server_default=""))
        batch.drop_constraint(OLD_KEY, type_="unique")
        batch.create_unique_constraint(NEW_KEY, ["sha256", "parser", "parser_version", "attempt_key"])
    from matlake.migrations.helpers import backfill_attempt_keys

    backfill_attempt_keys(op.get_bind())


def downgrade() -> None:
    from matlake.migrations.helpers import drop_extra_attempts

    drop_extra_attempts(op.get_bind())
    with op.batch_alter_table("ingest_ledger") as batch:
        batch.drop_constraint(NEW_KEY, type_="unique")
        batch.create_unique_constraint(OLD_KEY, ["sha256", "parser", "parser_version"])
        batch.drop_column("detail")
        batch.drop_column("attempt_key")
