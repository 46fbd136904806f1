"""Run the catalog's Alembic migrations (shipped inside the package)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def _config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.connect() as conn:
        command.upgrade(_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as conn:
        command.downgrade(_config(conn), revision)
        conn.commit()


def has_version_table(engine: Engine) -> bool:
    """Whether the catalog database already has Alembic's ``alembic_version`` table."""
    with engine.connect() as conn:
        return inspect(conn).has_table("alembic_version")


def downgrade_to_empty(engine: Engine, drop_version_table: bool) -> None:
    """Undo every matlake migration (a failed ``init`` on a catalog that was
    empty before); ``drop_version_table`` also drops ``alembic_version``."""
    if current(engine) is not None:
        downgrade(engine, "base")
    if drop_version_table:
        with engine.connect() as conn:
            conn.execute(text("drop table if exists alembic_version"))
            conn.commit()


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    return ScriptDirectory.from_config(_config(None)).get_current_head()


def history() -> list[tuple[str, str]]:
    """(revision, first docstring line) from base to head."""
    script = ScriptDirectory.from_config(_config(None))
    revs = list(script.walk_revisions())
    return [(r.revision, (r.doc or "").splitlines()[0] if r.doc else "") for r in reversed(revs)]
