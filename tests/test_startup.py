"""Start-up cost: which modules a ``matlake`` command imports, and the cheap catalog revision check.

Durations are never asserted (bench/bench_startup.py measures them); these tests
check the causes: building the command line and ``--help`` of every command
import none of the heavy libraries, opening a lake does not import Alembic, and
the fast revision readers agree with Alembic's own, still refusing an outdated
catalog.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from matlake.platform import catalog, migrate

ROOT = Path(__file__).resolve().parents[1]

# Libraries that no command line parsing may import (each costs 0.1-2 s, several pull others in).
HEAVY = ("pandas", "pyarrow", "sqlalchemy", "numpy", "pymatgen", "scipy", "torch", "lmfit", "alembic", "duckdb",
         "larch", "sklearn", "skops", "matplotlib", "rsciio", "apscheduler", "dask", "h5py", "mp_api")


def _imported_after(code: str, cwd: Path | None = None) -> set[str]:
    """Top-level package names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MATLAKE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=cwd or ROOT)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_help_of_every_command_imports_no_heavy_library():
    # `matlake --help`, then `matlake COMMAND --help` and `matlake GROUP SUBCOMMAND --help` for every
    # command the parser knows, all in one process: any of them importing a heavy library shows.
    loaded = _imported_after("""
        import argparse, contextlib, io
        from matlake.platform.cli import build_parser, main

        def commands(parser, prefix=()):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        yield prefix + (name,)
                        yield from commands(sub, prefix + (name,))

        argvs = [["--help"]] + [[*c, "--help"] for c in commands(build_parser())]
        assert len(argvs) > 30, argvs  # the built-in commands, operations, jobs, eis, insertion, spectra, demo
        for argv in argvs:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
    """)
    assert "matlake" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_command_modules_import_nothing_heavy_when_registering():
    loaded = _imported_after("""
        import importlib
        from matlake.platform import cli
        from matlake.models.spectra import cli as spectra_cli
        for name in cli.EXTENSIONS + spectra_cli.SUBCOMMAND_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
    """)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_sql_imports_no_alembic_and_no_science(sqlite_lake):
    # The revision check reads alembic_version and the migration files without Alembic, and a
    # query needs none of the science stacks.
    loaded = _imported_after(f"""
        import contextlib, io
        from matlake.platform.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["sql", "--lake", {str(sqlite_lake.root)!r}, "select 41 + 1 as answer"]) == 0
        assert "42" in out.getvalue(), out.getvalue()
    """)
    assert "duckdb" in loaded  # the query really ran
    unwanted = {"alembic", "pymatgen", "scipy", "torch", "lmfit", "larch", "sklearn", "skops", "matplotlib"}
    assert not loaded & unwanted, sorted(loaded & unwanted)


def test_sql_on_a_sqlite_lake_imports_neither_sqlalchemy_nor_pandas(sqlite_lake, tmp_path):
    # `matlake sql` reads a SQLite catalog through the standard library's sqlite3 (platform/reader.py):
    # tables, time travel by tag, printing and --parquet without SQLAlchemy, pandas, Alembic or the
    # command modules of other packages.  Catalog views and --csv build Arrow arrays from Python
    # values, and pyarrow itself then imports pandas (to check for DataFrames): still no SQLAlchemy.
    from matlake.platform.lake import ChangeSet

    cs = ChangeSet("test")
    cs.add_rows("structures", [{"record_id": "a", "formula": "Si2"}], cs.activity("ingest", "test"))
    sqlite_lake.commit(cs)
    sqlite_lake.tag("first")
    root, out_csv, out_parquet = str(sqlite_lake.root), str(tmp_path / "o.csv"), str(tmp_path / "o.parquet")
    script = f"""
        import contextlib, io, json, sys
        from matlake.platform.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["sql", "--lake", {root!r}, "select 1"]) == 0
            assert main(["sql", "--lake", {root!r}, "select formula from structures", "--as-of", "first"]) == 0
            assert main(["sql", "--lake", {root!r}, "select * from structures_all", "--parquet", {out_parquet!r}]) == 0
        TABLES = sorted({{m.split(".")[0] for m in sys.modules}})
        with contextlib.redirect_stdout(out):
            assert main(["sql", "--lake", {root!r}, "select s.kind, t.name from snapshots s join tags t "
                         "using (snapshot_id)", "--csv", {out_csv!r}]) == 0
        assert "Si2" in out.getvalue() and "wrote 1 rows" in out.getvalue(), out.getvalue()
        PLATFORM = sorted(m for m in sys.modules if m.startswith("matlake.platform"))
        print(json.dumps([TABLES, PLATFORM, sorted({{m.split(".")[0] for m in sys.modules}})]))
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MATLAKE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    after_tables, platform_modules, loaded = map(set, json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "duckdb" in after_tables and "matlake.platform.reader" in platform_modules  # the light path ran
    assert not after_tables & {"sqlalchemy", "pandas", "alembic"}, sorted(after_tables & {"sqlalchemy", "pandas"})
    assert not loaded & {"sqlalchemy", "alembic"}, sorted(loaded & {"sqlalchemy", "alembic"})
    assert not platform_modules & {"matlake.platform.lake", "matlake.platform.catalog", "matlake.platform.operations",
                                   "matlake.platform.jobs"}, sorted(platform_modules)
    assert (tmp_path / "o.csv").read_text().splitlines() == ["\"kind\",\"name\"", "\"test\",\"first\""]


def test_lazy_stand_ins_import_on_first_use(tmp_path, monkeypatch):
    from matlake.lazy_imports import lazy_function, lazy_module

    (tmp_path / "startup_probe_module.py").write_text("VALUE = 42\n\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "startup_probe_module", raising=False)
    module, double = lazy_module("startup_probe_module"), lazy_function("startup_probe_module", "double")
    assert "startup_probe_module" not in sys.modules and double.__name__ == "double"
    assert double(21) == 42 and "startup_probe_module" in sys.modules
    assert module.VALUE == 42 and module.double is sys.modules["startup_probe_module"].double
    module.VALUE = 7  # writes go to the module itself, as with a real import
    assert sys.modules["startup_probe_module"].VALUE == 7
    with pytest.raises(AttributeError):
        module.missing  # noqa: B018 - the attribute error of the real module


# --------------------------------------------------------------------------- revision check


def _write_migrations(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name, body in files.items():
        (folder / name).write_text(textwrap.dedent(body))
    return folder


def test_head_from_files_agrees_with_alembic():
    assert migrate.head_from_files(migrate.VERSIONS_DIR) == migrate._alembic_head() == migrate.head()
    assert migrate.head() == migrate.history()[-1][0]


def test_head_from_files_reads_straight_chains_and_leaves_the_rest_to_alembic(tmp_path):
    chain = {
        "a.py": '"""First.\n\nRevision ID: r1\nRevises:\n"""\nrevision = "r1"\n'
                'down_revision = None\nbranch_labels = None\ndepends_on = None\n',
        "b.py": "revision: str = 'r2'\ndown_revision: str | None = 'r1'\n",
        "c.py": 'revision = "r3"  \ndown_revision = "r2"\n',
    }
    assert migrate.head_from_files(_write_migrations(tmp_path / "chain", chain)) == "r3"
    cases = {
        "branch": {**chain, "d.py": 'revision = "r4"\ndown_revision = "r2"\n'},  # two heads: r3 and r4
        "merge": {**chain, "d.py": 'revision = "r4"\ndown_revision = ("r2", "r3")\n'},
        "computed": {**chain, "d.py": 'revision = "r" + "4"\ndown_revision = "r3"\n'},
        "commented": {**chain, "d.py": 'revision = "r4"  # a comment\ndown_revision = "r3"\n'},
        "labelled": {**chain, "d.py": 'revision = "r4"\ndown_revision = "r3"\nbranch_labels = ("x",)\n'},
        "dangling": {**chain, "d.py": 'revision = "r4"\ndown_revision = "r9"\n'},
        "no revision": {**chain, "d.py": "x = 1\n"},
        "docstring": {**chain, "d.py": '"""\nrevision = r4 (looks like a declaration)\n"""\nrevision = "r4"\n'
                                       'down_revision = "r3"\n'},
        "twice": {**chain, "d.py": 'revision = "r4"\nrevision = "r5"\ndown_revision = "r3"\n'},
        "duplicate": {**chain, "d.py": 'revision = "r3"\ndown_revision = "r3"\n'},
        "cycle": {**chain, "d.py": 'revision = "x1"\ndown_revision = "x2"\n', "e.py": 'revision = "x2"\n'
                                                                                        'down_revision = "x1"\n'},
    }
    for name, files in cases.items():
        assert migrate.head_from_files(_write_migrations(tmp_path / name.replace(" ", "_"), files)) is None, name


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = catalog.make_engine(url)
    yield engine
    engine.dispose()


def test_current_agrees_with_alembic_at_every_revision(bare_engine):
    assert migrate.current(bare_engine) is None is migrate._alembic_current(bare_engine)  # no alembic_version
    revisions = [rev for rev, _doc in migrate.history()]
    for rev in revisions:
        migrate.upgrade(bare_engine, rev)
        assert migrate.current(bare_engine) == rev == migrate._alembic_current(bare_engine)
        assert migrate.revision_status(bare_engine) == (rev, revisions[-1])
    migrate.downgrade(bare_engine, "base")  # alembic_version stays, empty
    assert migrate.has_version_table(bare_engine)
    assert migrate.current(bare_engine) is None is migrate._alembic_current(bare_engine)
    migrate.upgrade(bare_engine)


def test_a_version_table_with_two_revisions_is_refused_by_alembic(tmp_path):
    from alembic.util import CommandError

    engine = catalog.make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("insert into alembic_version (version_num) values ('0001')"))
        with pytest.raises(CommandError, match="more than one head"):
            migrate.current(engine)
    finally:
        engine.dispose()


def test_outdated_catalog_is_still_refused(sqlite_lake):
    import matlake
    from matlake.platform.lake import LakeError

    previous = migrate.history()[-2][0]
    migrate.downgrade(sqlite_lake.engine, previous)
    assert migrate.revision_status(sqlite_lake.engine) == (previous, migrate.head())
    with pytest.raises(LakeError, match=f"catalog at revision {previous}, code expects {migrate.head()}"):
        matlake.open(sqlite_lake.root)
