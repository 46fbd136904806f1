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
        ("lineage", "nope", "--lake", str(cli_lake)),
        ("lineage", "ab" * 32, "--down", "--lake", str(cli_lake)),
        ("tag", "x", "--as-of", "999", "--lake", str(cli_lake)),
        ("ingest", str(tmp_path / "missing.cif"), "--lake", str(cli_lake)),
        ("train", "nosuch-model", "--lake", str(cli_lake)),
        ("schema", "nosuchtable", "--lake", str(cli_lake)),
    ]
    for args in cases:
        proc = matlake(*args, check=False)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("matlake: error:"), (args, proc.stderr)


def test_no_lake_given_outside_a_lake_says_how_to_name_one(tmp_path):
    env = dict(os.environ)
    env.pop("MATLAKE_LAKE", None)
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "tables"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 1
    msg = proc.stderr.strip()
    assert msg.startswith("matlake: error: no lake given") and str(tmp_path) in msg
    assert "--lake DIR" in msg and "MATLAKE_LAKE=DIR" in msg and "matlake init DIR" in msg


def test_unknown_model_name_and_table_errors_name_what_exists(cli_lake):
    proc = matlake("train", "nosuch-model", "--lake", str(cli_lake), check=False)
    assert proc.returncode == 1
    assert "model module 'nosuch-model': expected one of composition-regressor or package.module:Class" in proc.stderr
    proc = matlake("schema", "nosuchtable", "--lake", str(cli_lake), check=False)
    # the message itself, not the repr of a KeyError in quotes
    assert proc.stderr.startswith("matlake: error: unknown table 'nosuchtable'; known tables:"), proc.stderr


@pytest.mark.parametrize(("query", "hint"), [
    ("select formla from structures", 'Candidate bindings: "formula"'),
    ("select * from structure", 'Did you mean "structures"'),  # DuckDB may name a second candidate
    ("select * from ledgr", 'Did you mean "ledger"?'),  # a catalog view DuckDB has not seen yet
    ("select * from nosuchtable", "Tables and views: activities, calculations"),
    ("select floorr(1.5)", 'Did you mean "floor"'),
])
def test_sql_errors_keep_duckdb_suggestions(cli_lake, query, hint):
    proc = matlake("sql", query, "--lake", str(cli_lake), check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("matlake: error:") and 2 <= len(lines) <= 8, proc.stderr
    assert hint in proc.stderr and "Traceback" not in proc.stderr


def test_sql_syntax_error_shows_the_query_line_with_a_caret(cli_lake):
    proc = matlake("sql", "selct 1", "--lake", str(cli_lake), check=False)
    lines = proc.stderr.rstrip().splitlines()
    assert proc.returncode == 1 and 'syntax error at or near "selct"' in lines[0]
    assert lines[1] == "LINE 1: selct 1"
    # DuckDB 1.x puts one caret at the token, 2.x underlines it: "^" or "^^^^^" under "selct"
    assert set(lines[2].strip()) == {"^"} and lines[2].index("^") == lines[1].index("selct")


def _sql_lines(*args: str, env=None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (env or {})
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "sql", *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_sql_output_fits_120_columns_when_piped_and_names_the_columns_left_out(cli_lake):
    lines = _sql_lines("select * from structures", "--lake", str(cli_lake))
    assert max(len(line) for line in lines) <= 120
    assert lines[0].split()[:2] == ["record_id", "version"]
    assert len(lines) == 1 + 9 + 1  # header, nine structures, the note
    assert lines[-1].startswith("23 more columns: formula, reduced_formula, chemsys")
    narrow = _sql_lines("select * from structures", "--lake", str(cli_lake), "--max-width", "50")
    assert max(len(line) for line in narrow) <= 50
    assert narrow[-1].startswith("25 more columns: schema_version, created_at")  # activity_id cut to fit
    env = _sql_lines("select * from structures", "--lake", str(cli_lake), env={"COLUMNS": "80"})
    assert max(len(line) for line in env) <= 80


def test_sql_cuts_long_cells_and_wide_prints_them_whole(cli_lake):
    lines = _sql_lines("select structure_json from structures limit 1", "--lake", str(cli_lake))
    assert len(lines) == 2 and len(lines[1]) == 120 and lines[1].endswith("…")
    wide = _sql_lines("select * from structures", "--lake", str(cli_lake), "--wide")
    assert len(wide) == 10 and not any("more columns" in line for line in wide)
    assert max(len(line) for line in wide) > 1000 and "structure_json" in wide[0]
    assert not any(line.endswith("…") for line in wide)


def test_sql_into_head_stops_quietly_with_status_zero(cli_lake):
    # Far more output than a pipe buffers, so the writer meets the closed pipe.
    proc = subprocess.Popen([sys.executable, "-m", "matlake.platform.cli", "sql", "select * from range(300000)",
                             "--max-rows", "1000000", "--lake", str(cli_lake)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0
    assert first.strip() == b"range" and err == b""


def test_sql_into_head_through_a_shell_pipeline(cli_lake):
    cmd = (f"set -o pipefail; '{sys.executable}' -m matlake.platform.cli sql 'select * from range(300000)' "
           f"--max-rows 1000000 --lake '{cli_lake}' | head -n 3")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == ""
    assert [line.strip() for line in proc.stdout.splitlines()] == ["range", "0", "1"]


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
    # --down from the CIF (not training data): its structure's one prediction, not all nine
    sha = matlake("sql", "select sha256 from ledger where source_path like '%.cif'", "--lake",
                  str(cli_lake)).stdout.split()[-1]
    down = matlake("lineage", sha, "--down", "--max-fanout", "100", "--lake", str(cli_lake)).stdout
    assert sum("(predictions v1)" in line for line in down.splitlines()) == 1, down
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
