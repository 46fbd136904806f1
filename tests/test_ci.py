"""CI fails loudly without PostgreSQL: `.ci/run` stops with a message, and PG tests fail instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

CI_RUN = ROOT / ".ci" / "run"


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run_ci(tmp_path: Path, *, ready: str, start: str, clusters: bool = True) -> tuple[subprocess.CompletedProcess, Path]:
    """Run .ci/run with stub pg_isready / pg_ctlcluster / make first on PATH; returns (result, make's marker)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    marker = tmp_path / "make-called"
    _stub(stubs, "pg_isready", ready)
    _stub(stubs, "pg_ctlcluster", start)
    _stub(stubs, "make", f'echo "CI=$CI $*" > "{marker}"')
    conf = tmp_path / "etc-postgresql"
    conf.mkdir()
    if clusters:
        (conf / "16").mkdir()
    env = {**os.environ, "PATH": f"{stubs}:{os.environ.get('PATH', '/usr/bin:/bin')}", "PG_CONF_DIR": str(conf),
           "PG_WAIT": "1"}
    env.pop("CI", None)
    out = subprocess.run(["bash", str(CI_RUN)], capture_output=True, text=True, env=env, timeout=60)
    return out, marker


def test_ci_run_stops_with_a_message_when_postgresql_cannot_be_started(tmp_path):
    out, marker = _run_ci(tmp_path, ready="exit 2", start="echo 'cluster 16/main: no such cluster' >&2; exit 1")
    assert out.returncode == 3
    assert "PostgreSQL is not available at 127.0.0.1:5432" in out.stderr
    assert "could not start cluster 16/main" in out.stderr
    assert not marker.exists()  # the test suite never ran


def test_ci_run_stops_when_the_started_server_never_answers(tmp_path):
    out, marker = _run_ci(tmp_path, ready="exit 2", start="exit 0")
    assert out.returncode == 3
    assert "does not accept connections after 1 s" in out.stderr
    assert not marker.exists()


def test_ci_run_stops_when_no_cluster_is_configured(tmp_path):
    out, marker = _run_ci(tmp_path, ready="exit 2", start="exit 0", clusters=False)
    assert out.returncode == 3
    assert "no local cluster is configured" in out.stderr
    assert not marker.exists()


def test_ci_run_runs_make_test_with_ci_set_when_postgresql_answers(tmp_path):
    out, marker = _run_ci(tmp_path, ready="exit 0", start="exit 1")
    assert out.returncode == 0, out.stderr
    assert marker.read_text().split() == ["CI=1", "test"]


def _pytest_pg_test(ci: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "MATLAKE_TEST_PG": "postgresql+psycopg2://postgres@127.0.0.1:1/test"}  # nothing listens
    env.pop("CI", None)
    if ci:
        env["CI"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-rsf",
         "tests/test_migrations.py::test_migrations_up_and_down_postgresql"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )


def test_postgresql_tests_fail_instead_of_skipping_in_ci_when_the_server_is_unreachable():
    out = _pytest_pg_test(ci=True)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "1 error" in out.stdout and "skipped" not in out.stdout  # the fixture fails: an error, not a skip
    assert "PostgreSQL not reachable" in out.stdout and "CI must test the team catalog" in out.stdout
    # outside CI the same test is reported as skipped, with the reason
    local = _pytest_pg_test(ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
