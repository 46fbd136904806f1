"""Run the catalog's Alembic migrations (shipped inside the package).

Every ``Lake.open`` (so every ``matlake`` command) compares the catalog's
revision with the newest migration of the code.  That check does not import
Alembic, which costs more than many commands' own work: :func:`current` reads
the ``alembic_version`` row with SQLAlchemy and :func:`head` reads the
``revision = "..."`` / ``down_revision = "..."`` lines of the migration files
as text.  Anything these readings do not recognise (several rows, a file that
is not one link of a single straight chain) goes to Alembic's own machinery,
and :func:`revision_status` re-reads both sides through Alembic whenever they
differ, so an outdated catalog is reported exactly as Alembic sees it.
The read-only query path (:mod:`matlake.platform.reader`) reads the same row of a SQLite
catalog through the standard library (:func:`sqlite_revisions`) and opens the full lake,
which runs :func:`revision_status`, whenever it is not the head.
Migrating (:func:`upgrade`, :func:`downgrade`) always runs Alembic.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

    from alembic.config import Config
    from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default; env.py does not rename it

# A module-level `name = value` line of a migration file, as Alembic's template writes them.
_DECLARATION = re.compile(r"^(revision|down_revision|branch_labels|depends_on)\s*(?::[^=\n]*)?=\s*(.*?)\s*$",
                          re.MULTILINE)
_STRING_OR_NONE = re.compile(r"""None|"([^"\\]*)"|'([^'\\]*)'""")


def _config(connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    with engine.connect() as conn:
        command.upgrade(_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.connect() as conn:
        command.downgrade(_config(conn), revision)
        conn.commit()


def has_version_table(engine: Engine) -> bool:
    """Whether the catalog database already has Alembic's ``alembic_version`` table."""
    from sqlalchemy import inspect

    with engine.connect() as conn:
        return inspect(conn).has_table(VERSION_TABLE)


def downgrade_to_empty(engine: Engine, drop_version_table: bool) -> None:
    """Undo every matlake migration (a failed ``init`` on a catalog that was
    empty before); ``drop_version_table`` also drops ``alembic_version``."""
    from sqlalchemy import text

    if current(engine) is not None:
        downgrade(engine, "base")
    if drop_version_table:
        with engine.connect() as conn:
            conn.execute(text(f"drop table if exists {VERSION_TABLE}"))
            conn.commit()


def current(engine: Engine) -> str | None:
    """The catalog's revision; None when no migration has run (no or an empty ``alembic_version``).

    Read with one query; a table holding several revisions (branches, which
    matlake never makes) is left to Alembic, which refuses it."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        revisions = conn.execute(text(f"select version_num from {VERSION_TABLE}")).scalars().all()
    if len(revisions) <= 1:
        return revisions[0] if revisions else None
    return _alembic_current(engine)


def sqlite_revisions(con: "sqlite3.Connection") -> list[str]:
    """The revisions in ``alembic_version`` of a SQLite catalog, read with a stdlib ``sqlite3``
    connection (the read-only query path, which has no SQLAlchemy engine): [] when no migration
    has run.  Callers accept only ``[head()]`` and leave anything else to :func:`revision_status`."""
    found = con.execute("select 1 from sqlite_master where type = 'table' and name = ?", (VERSION_TABLE,)).fetchone()
    if found is None:
        return []
    return [row[0] for row in con.execute(f"select version_num from {VERSION_TABLE}").fetchall()]


def head() -> str:
    """The newest revision of the code's migrations: read from the files' text when they
    form one straight chain (as matlake's do), else by Alembic."""
    return head_from_files(VERSIONS_DIR) or _alembic_head()


def revision_status(engine: Engine) -> tuple[str | None, str]:
    """(catalog revision, code head), cheaply when they agree; when they differ both are
    read again by Alembic itself, so a mismatch is never the fast readers' mistake."""
    cur, code_head = current(engine), head()
    if cur != code_head:
        cur, code_head = _alembic_current(engine), _alembic_head()
    return cur, code_head


def head_from_files(versions_dir: Path) -> str | None:
    """The head revision declared by the migration files in ``versions_dir``, read as
    text; None (ask Alembic) unless every file declares a literal ``revision`` and
    ``down_revision``, no branch labels or dependencies, and together they make
    one chain from a single base to a single head."""
    parent_of: dict[str, str | None] = {}
    for path in sorted(versions_dir.glob("*.py")):
        if path.name == "__init__.py" or path.name.startswith(".#"):  # the files Alembic skips too
            continue
        declared: dict[str, str | None] = {}
        for name, value in _DECLARATION.findall(path.read_text(encoding="utf-8")):
            literal = _STRING_OR_NONE.fullmatch(value)
            if name in declared or literal is None:  # assigned twice, or not a plain literal (a merge's tuple)
                return None
            declared[name] = None if value == "None" else (literal.group(1) or literal.group(2) or "")
        revision = declared.get("revision")
        if (not revision or "down_revision" not in declared or revision in parent_of
                or declared.get("branch_labels") is not None or declared.get("depends_on") is not None):
            return None
        parent_of[revision] = declared["down_revision"]
    # One straight chain: walk down from the only revision nobody revises, through every file.
    children = set(parent_of.values())
    heads = [rev for rev in parent_of if rev not in children]
    if len(heads) != 1:
        return None
    seen, rev = set(), heads[0]
    while rev is not None and rev in parent_of and rev not in seen:
        seen.add(rev)
        rev = parent_of[rev]
    return heads[0] if rev is None and len(seen) == len(parent_of) else None


def _alembic_current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(None)).get_current_head()


def history() -> list[tuple[str, str]]:
    """(revision, first docstring line) from base to head."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config(None))
    revs = list(script.walk_revisions())
    return [(r.revision, (r.doc or "").splitlines()[0] if r.doc else "") for r in reversed(revs)]
