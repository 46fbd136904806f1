"""Dask scale-out: parsing on a real (local, multi-process) Dask cluster gives the same lake as parsing locally."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa
from conftest import sample

import matlake
from matlake import schemas
from matlake.platform import catalog as cat
from matlake.platform import jobs as J

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def _ledger(lake) -> list[tuple]:
    L = cat.LedgerEntry
    with lake.engine.connect() as conn:
        rows = conn.execute(sa.select(L.source_path, L.sha256, L.parser, L.parser_version, L.status, L.n_records,
                                      L.record_ids_json, L.message)).all()
    return sorted((*r[:6], tuple(sorted(json.loads(r[6]))), r[7]) for r in rows)


def _records(lake) -> dict[str, list]:
    """Every row of every table, without the columns that name the commit (activity, time)."""
    out = {}
    for name in schemas.TABLES:
        table = lake.table(name, all_versions=True).arrow()
        if hasattr(table, "read_all"):
            table = table.read_all()
        keep = [c for c in table.column_names if c not in ("activity_id", "created_at")]
        rows = table.select(keep).to_pylist()
        out[name] = sorted(rows, key=lambda r: (r["record_id"], r["version"]))
    return out


def test_dask_ingest_gives_the_same_records_and_ledger_as_local_ingest(tmp_path, cluster):
    sources = [sample("dft"), sample("eis")]
    local = matlake.init(tmp_path / "local")
    remote = matlake.init(tmp_path / "dask")
    try:
        r_local = local.ingest(sources, progress=False)
        r_dask = remote.ingest(sources, progress=False, dask=cluster.scheduler_address, batch_size=8)
        assert (r_dask.new, r_dask.failed, r_dask.records) == (r_local.new, r_local.failed, r_local.records)
        assert r_local.new >= 15
        assert _ledger(remote) == _ledger(local)
        rec_local, rec_dask = _records(local), _records(remote)
        assert sum(len(v) for v in rec_local.values()) == r_local.records
        assert rec_dask == rec_local
        # The raw bytes and the parsers' arrays landed in the lake's object store from the workers.
        assert sorted(p.name for p in remote.objects.iter_files()) == sorted(p.name for p in local.objects.iter_files())
        again = remote.ingest(sources, progress=False, dask=cluster.scheduler_address)
        assert (again.new, again.unchanged) == (0, r_local.new + r_local.failed)
    finally:
        local.close()
        remote.close()


def test_job_with_a_dask_address_parses_on_the_cluster(lake, cluster):
    raw = lake.root.parent / "raw"
    raw.mkdir()
    for p in sorted(sample("eis").iterdir()):
        (raw / p.name).write_bytes(p.read_bytes())
        os.utime(raw / p.name, (0, 0))
    (lake.root / "jobs.toml").write_text(
        f'[[job]]\nname = "eis-dask"\nsources = ["raw/*"]\ndask = "{cluster.scheduler_address}"\n')
    job = J.load_jobs(lake.root / "jobs.toml", lake.root.parent)["eis-dask"]
    from distributed.diagnostics.plugin import SchedulerPlugin

    class CountParsed(SchedulerPlugin):
        n = 0

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "memory" and str(key).startswith("process_source"):
                self.n += 1

    counter = CountParsed()
    cluster.scheduler.add_plugin(counter, name="count-parsed")
    res = J.run_job(lake, job)
    assert (res.status, res.new, res.failed) == ("ok", len(list(raw.iterdir())), 0)
    cluster.scheduler.remove_plugin(name="count-parsed")
    assert counter.n == res.new  # every file was parsed by a Dask worker
    assert lake.sql("select count(*) from impedance").fetchone()[0] == res.records
    assert json.loads(lake.sql("select parameters_json from activities where kind = 'job'").fetchone()[0])["dask"] \
        == cluster.scheduler_address
