"""kill -9 during ingest commits: the lake stays consistent and a rerun finishes the job.

The kills land at the commit's critical points through the ``MATLAKE_FAULT``
hook of :mod:`matlake.platform.lake` (after the Parquet/object files are
written but before the durability barrier, after the barrier, inside the catalog
transaction before it commits, right after it commits) and at random moments (the parent's SIGKILL after a random delay).
``bench/crash_soak.py`` runs the same campaign for longer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import matlake
from matlake.platform.operations import doctor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import crash_campaign, file_shas, reconcile  # noqa: E402

pytestmark = pytest.mark.slow
WORKERS = Path(__file__).resolve().parent / "workers.py"


def _finish_and_collect(lake_root: Path, work: Path) -> None:
    """Rerun without faults, check everything was ingested, then gc the orphans."""
    listfile = work / "list-final"
    listfile.write_text("\n".join(sorted(str(p) for p in (work / "src").iterdir())))
    out = subprocess.run([sys.executable, str(WORKERS), "ingest", str(lake_root), str(listfile), "8"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lake = matlake.open(str(lake_root))
    try:
        ledger = {r[0] for r in lake.sql("select sha256 from ledger where status = 'ok'").fetchall()}
        assert ledger == file_shas(work / "src"), "the rerun must ingest every file the killed runs left"
        figures = reconcile(lake)
        assert figures["records"] == len(ledger)  # one spectrum per file, each stored once
        before = doctor(lake)
        assert before.ok, before.problems
        gc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "gc", "--grace", "0",
                             "--lake", str(lake_root)], capture_output=True, text=True, timeout=120)
        assert gc.returncode == 0, gc.stderr
        after = doctor(lake)
        assert after.ok, after.problems
        assert after.orphans == []
        assert reconcile(lake) == figures  # gc removed nothing a snapshot uses
    finally:
        lake.close()


def test_kill9_during_commits_leaves_sqlite_lake_consistent(tmp_path):
    root = tmp_path / "lake"
    matlake.init(root).close()
    stats = crash_campaign(root, tmp_path, kills=50, parallel=4, seed=1)
    assert stats["kills"] >= 50
    # Every critical point was hit at least once, and the kills left orphans for gc to find.
    assert set(stats["kills_by_point"]) == {"before_barrier", "after_files", "in_transaction", "after_commit", "timer"}
    assert stats["max_orphans"] > 0
    print("crash campaign (sqlite):", stats)
    _finish_and_collect(root, tmp_path)


@pytest.mark.postgres
def test_kill9_during_commits_leaves_postgresql_lake_consistent(tmp_path, pg_url):
    root = tmp_path / "lake"
    matlake.init(root, catalog=pg_url).close()
    stats = crash_campaign(root, tmp_path, kills=12, parallel=4, seed=2)
    assert stats["kills"] >= 12
    print("crash campaign (postgresql):", stats)
    _finish_and_collect(root, tmp_path)
