"""The command line, run as a user would: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import sample


def matlake(*args: str, cwd=None, env=None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("MATLAKE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"matlake {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cli_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "lake"
    matlake("init", str(root))
    matlake("ingest", str(sample("dft")), "--lake", str(root), "--no-progress")
    return root


def test_every_command_has_help():
    out = matlake("--help").stdout
    for cmd in ("init", "db", "ingest", "sql", "tag", "lineage", "gc", "ledger", "train", "predict", "demo"):
        assert cmd in out
        assert matlake(cmd, "--help").returncode == 0


def test_sql_prints_a_table_and_writes_csv_and_parquet(cli_lake, tmp_path):
    out = matlake("sql", "select reduced_formula, round(band_gap, 2) gap from calculations where band_gap > 1 "
                  "order by gap", "--lake", str(cli_lake)).stdout
    assert "YPO4" in out and "5.8" in out
    csv = tmp_path / "out.csv"
    pq = tmp_path / "out.parquet"
    matlake("sql", "select * from dft", "--lake", str(cli_lake), "--csv", str(csv), "--parquet", str(pq))
    import pyarrow.parquet as papq

    assert csv.read_text().count("\n") == 15  # header + 14 calculations
    assert papq.read_table(pq).num_rows == 14


def test_sql_is_read_only_by_default(cli_lake):
    proc = matlake("sql", "create table x as select 1", "--lake", str(cli_lake), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "read-only query expected" in proc.stderr


def test_lake_from_environment_and_working_directory(cli_lake):
    env_out = matlake("sql", "select count(*) as n from structures", env={"MATLAKE_LAKE": str(cli_lake)}).stdout
    cwd_out = matlake("sql", "select count(*) as n from structures", cwd=cli_lake).stdout
    assert env_out == cwd_out and "9" in env_out


def test_errors_are_one_line_with_nonzero_exit(tmp_path, cli_lake):
    cases = [
        ("sql", "select 1", "--lake", str(tmp_path / "nolake")),
        ("sql", "select * from nosuchtable", "--lake", str(cli_lake)),
        ("lineage", "nope", "--lake", str(cli_lake)),
        ("tag", "x", "--as-of", "999", "--lake", str(cli_lake)),
        ("ingest", str(tmp_path / "missing.cif"), "--lake", str(cli_lake)),
    ]
    for args in cases:
        proc = matlake(*args, check=False)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("matlake: error:"), (args, proc.stderr)


def test_tag_train_predict_lineage_and_dot(cli_lake, tmp_path):
    matlake("tag", "cli-train", "--lake", str(cli_lake))
    out = matlake("train", "composition-regressor", "--as-of", "cli-train", "--param", "n_estimators=20",
                  "--lake", str(cli_lake)).stdout
    assert "trained composition-regressor v1" in out
    out = matlake("predict", "composition-regressor", "--lake", str(cli_lake)).stdout
    assert "9 predictions" in out
    rid = matlake("sql", "select record_id from predictions limit 1", "--lake", str(cli_lake)).stdout.split()[-1]
    dot = tmp_path / "lineage.dot"
    out = matlake("lineage", rid, "--lake", str(cli_lake), "--dot", str(dot)).stdout
    assert "ingest" in out and "bytes" in out
    assert dot.read_text().startswith("digraph")
    assert "composition-regressor" in matlake("models", "--lake", str(cli_lake)).stdout


def test_db_current_and_history(cli_lake):
    out = matlake("db", "current", "--lake", str(cli_lake)).stdout
    assert "catalog revision" in out
    assert "0001" in matlake("db", "history", "--lake", str(cli_lake)).stdout


def test_ledger_failed_lists_messages(tmp_path):
    root = tmp_path / "l"
    matlake("init", str(root))
    bad = tmp_path / "bad.cif"
    bad.write_text("data_broken\n_cell_length_a nonsense\n")
    out = matlake("ingest", str(bad), "--lake", str(root), "--no-progress")
    assert "1 failed" in out.stdout and "FAILED" in out.stderr
    failed = matlake("ledger", "--failed", "--lake", str(root)).stdout
    assert "bad.cif" in failed and "expected" in failed
