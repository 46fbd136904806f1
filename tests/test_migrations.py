"""Every catalog migration runs up and down, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import inspect

from matlake.platform import catalog, migrate


def _walk_all_revisions(url: str) -> None:
    engine = catalog.make_engine(url)
    try:
        revs = [r for r, _doc in migrate.history()]
        assert revs[0] == "0001"
        for i, rev in enumerate(revs):
            migrate.upgrade(engine, rev)
            assert migrate.current(engine) == rev
        # The models describe the head schema: same tables and columns.
        insp = inspect(engine)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        assert tables == set(catalog.Base.metadata.tables)
        for name, table in catalog.Base.metadata.tables.items():
            assert {c["name"] for c in insp.get_columns(name)} == {c.name for c in table.columns}, name
        for rev in reversed(revs[:-1]):
            migrate.downgrade(engine, rev)
            assert migrate.current(engine) == rev
        migrate.downgrade(engine, "base")
        assert migrate.current(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)  # and up again from nothing
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_migrations_up_and_down_sqlite(tmp_path):
    _walk_all_revisions(f"sqlite:///{tmp_path / 'c.sqlite'}")


def test_migrations_up_and_down_postgresql(pg_url):
    _walk_all_revisions(pg_url)


def test_sqlite_catalog_uses_wal(sqlite_lake):
    with sqlite_lake.engine.connect() as conn:
        assert conn.execute(sa.text("pragma journal_mode")).scalar() == "wal"


def test_opening_an_old_catalog_asks_for_upgrade(sqlite_lake):
    import pytest

    import matlake
    from matlake.platform.lake import LakeError

    if len(migrate.history()) < 2:
        pytest.skip("only one revision so far")
    migrate.downgrade(sqlite_lake.engine, migrate.history()[-2][0])
    with pytest.raises(LakeError, match="matlake db upgrade"):
        matlake.open(sqlite_lake.root)
    assert matlake.open(sqlite_lake.root, upgrade=True).last_snapshot() == 0
