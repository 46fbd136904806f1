"""Catalog URLs and ``init``: plain ``postgresql://`` (psycopg 3) and
``postgresql+psycopg2://`` both work on the real server, a bad URL or a missing
driver says what to do, and a failed init leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import matlake
from matlake.platform import catalog, migrate
from matlake.platform.lake import ChangeSet, LakeError

UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def _with_scheme(url: str, scheme: str) -> str:
    return make_url(url).set(drivername=scheme).render_as_string(hide_password=False)


def _schema_tables(url: str) -> set[str]:
    """Tables in the schema a fixture URL points at (its search_path)."""
    engine = catalog.make_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MATLAKE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


# --------------------------------------------------------------------------- URLs and drivers


@pytest.mark.parametrize(("written", "driver"), [
    ("postgresql://u@h/db", "postgresql+psycopg"),
    ("postgres://u@h/db", "postgresql+psycopg"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
    ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
    ("sqlite:////tmp/c.sqlite", "sqlite"),
])
def test_catalog_url_schemes_map_to_one_driver_on_every_sqlalchemy(written, driver):
    assert catalog.resolve_url(written).drivername == driver
    assert catalog.make_engine(written).url.drivername == driver


def test_unsupported_catalog_url_names_the_supported_schemes():
    with pytest.raises(catalog.CatalogURLError, match=r"mysql://a:\*\*\*@h/db: expected one of .*postgresql://"):
        catalog.make_engine("mysql://a:secret@h/db")
    with pytest.raises(catalog.CatalogURLError, match="expected e.g. postgresql://"):
        catalog.make_engine("not a url")


@pytest.mark.parametrize(("scheme", "module", "package"), [
    ("postgresql", "psycopg", "psycopg[binary]"),
    ("postgresql+psycopg2", "psycopg2", "psycopg2-binary"),
])
def test_missing_driver_says_what_to_install_and_init_makes_nothing(monkeypatch, tmp_path, scheme, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    for sub in [k for k in sys.modules if k.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, sub, None)
    with pytest.raises(catalog.CatalogURLError, match=rf"needs the Python driver .{module}.*{re.escape(package)}") as info:
        matlake.init(tmp_path / "lake", catalog=f"{scheme}://u:secret@127.0.0.1:5432/test")
    assert "secret" not in str(info.value)
    assert not (tmp_path / "lake").exists()


# --------------------------------------------------------------------------- init on the real server, both drivers


@pytest.mark.postgres
@pytest.mark.parametrize(("scheme", "driver"), [("postgresql", "psycopg"), ("postgresql+psycopg", "psycopg"),
                                                ("postgresql+psycopg2", "psycopg2")])
def test_init_commit_and_reopen_by_url_with_each_postgresql_driver(pg_url, tmp_path, scheme, driver):
    url = _with_scheme(pg_url, scheme)
    lake = matlake.init(tmp_path / "lake", catalog=url)
    try:
        assert lake.engine.dialect.driver == driver
        cs = ChangeSet("test", "drivers")
        act = cs.activity("ingest", "drivers", "1")
        cs.add_rows("structures", [{"record_id": "a", "formula": "Si2", "nsites": 2}], act)
        assert lake.commit(cs) == 1
    finally:
        lake.close()
    assert "lake_settings" in _schema_tables(pg_url)  # in the fixture's schema, via the URL's search_path
    with matlake.open(url) as again:
        assert again.root == (tmp_path / "lake").resolve()
        assert again.engine.dialect.driver == driver
        assert again.sql("select record_id, formula from structures").fetchall() == [("a", "Si2")]


@pytest.mark.postgres
def test_cli_init_with_a_plain_postgresql_url_as_the_help_shows(pg_url, tmp_path):
    url = _with_scheme(pg_url, "postgresql")
    proc = _cli("init", str(tmp_path / "lake"), "--catalog", url)
    assert proc.returncode == 0, proc.stderr
    assert "created lake" in proc.stdout
    proc = _cli("sql", "select count(*) as n from snapshots", "--lake", url)
    assert proc.returncode == 0, proc.stderr
    assert "n" in proc.stdout and "0" in proc.stdout


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2"])
def test_init_with_a_search_path_schema_that_does_not_exist_says_to_create_it(pg_url, tmp_path, scheme):
    base = _with_scheme(pg_url, scheme).split("?")[0]
    url = f"{base}?options=-csearch_path%3Dno_such_schema_r7"
    with pytest.raises(LakeError, match=r"no schema to create tables in .*does not exist.*CREATE SCHEMA"):
        matlake.init(tmp_path / "lake", catalog=url)
    assert not (tmp_path / "lake").exists()


# --------------------------------------------------------------------------- failed init leaves nothing


def test_init_against_an_unreachable_catalog_leaves_no_folder(tmp_path):
    target = tmp_path / "new" / "lake"
    with pytest.raises(LakeError, match=r"cannot connect to the catalog postgresql://postgres@127.0.0.1:1/test"):
        matlake.init(target, catalog=UNREACHABLE_PG)
    assert list(tmp_path.iterdir()) == []  # not even the parent folder init would have made


def test_init_into_an_existing_folder_that_fails_removes_only_what_it_made(tmp_path):
    target = tmp_path / "lake"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(LakeError):
        matlake.init(target, catalog=UNREACHABLE_PG)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_cli_init_against_an_unreachable_catalog_fails_in_one_line_and_leaves_nothing(tmp_path):
    proc = _cli("init", str(tmp_path / "lake"), "--catalog", UNREACHABLE_PG)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "cannot connect to the catalog postgresql://postgres@127.0.0.1:1/test" in proc.stderr
    assert "no lake was created" in proc.stderr
    assert not (tmp_path / "lake").exists()


def _fail_after_partial_migration(monkeypatch):
    """Migrations stop after the second revision, as a failing third one would."""
    real_upgrade = migrate.upgrade
    second = migrate.history()[1][0]

    def partial(engine, revision="head"):
        real_upgrade(engine, second)
        raise RuntimeError(f"migration after {second} failed")

    monkeypatch.setattr(migrate, "upgrade", partial)


@pytest.mark.postgres
def test_failed_init_rolls_a_partly_migrated_postgresql_catalog_back_to_empty(pg_url, tmp_path, monkeypatch):
    _fail_after_partial_migration(monkeypatch)
    with pytest.raises(RuntimeError, match="migration after"):
        matlake.init(tmp_path / "lake", catalog=_with_scheme(pg_url, "postgresql"))
    assert _schema_tables(pg_url) == set()
    assert not (tmp_path / "lake").exists()
    monkeypatch.undo()
    with matlake.init(tmp_path / "lake", catalog=pg_url) as lake:  # and the same catalog works afterwards
        assert lake.last_snapshot() == 0


def test_failed_init_removes_a_partly_migrated_sqlite_catalog(tmp_path, monkeypatch):
    _fail_after_partial_migration(monkeypatch)
    target = tmp_path / "lake"
    target.mkdir()
    with pytest.raises(RuntimeError, match="migration after"):
        matlake.init(target)
    assert list(target.iterdir()) == []


@pytest.mark.postgres
def test_failed_rollback_is_reported_with_how_to_finish_it(pg_url, tmp_path, monkeypatch):
    _fail_after_partial_migration(monkeypatch)

    def broken(*_a, **_k):
        raise RuntimeError("server went away")

    monkeypatch.setattr(migrate, "downgrade_to_empty", broken)
    with pytest.raises(LakeError, match=r"migration after .*could not be rolled back \(server went away\).*"
                                        r"matlake db downgrade base"):
        matlake.init(tmp_path / "lake", catalog=pg_url)
    assert not (tmp_path / "lake").exists()


@pytest.mark.postgres
def test_init_on_a_catalog_of_another_lake_refuses_and_leaves_it_untouched(pg_url, tmp_path):
    with matlake.init(tmp_path / "first", catalog=pg_url) as first:
        cs = ChangeSet("test", "keep")
        cs.add_rows("structures", [{"record_id": "a"}], cs.activity("ingest", "keep", "1"))
        first.commit(cs)
    with pytest.raises(LakeError, match="already belongs to the lake at"):
        matlake.init(tmp_path / "second", catalog=_with_scheme(pg_url, "postgresql"))
    assert not (tmp_path / "second").exists()
    with matlake.open(tmp_path / "first") as first:
        assert first.last_snapshot() == 1
        assert first.sql("select count(*) from structures").fetchone() == (1,)
