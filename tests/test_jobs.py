"""Scheduled ingestion jobs: job file, incremental runs, leases, settling, serve, migration 0002."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import sample

from matlake.platform import catalog as cat
from matlake.platform import jobs as J
from matlake.platform import migrate

EIS = ("impedancepy_Circuit3_EIS_1.z", "impedancepy_exampleDataBioLogic.mpt", "impedancepy_exampleDataGamry.DTA")
OLD = time.time() - 3600  # an mtime well outside any settle window


def put(folder: Path, name: str, mtime: float | None = OLD) -> Path:
    """Copy a real sample file into ``folder`` so that it appears at once (write hidden, rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    shutil.copyfile(sample("eis", name), tmp)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, folder / name)
    return folder / name


def make_job(lake, name: str = "eis", **fields) -> J.Job:
    entry = {"name": name, "sources": ["raw/*"], **fields}
    return J.parse_jobs({"job": [entry]}, "jobs.toml", lake.root.parent)[name]


def runs(lake, job: str | None = None) -> list[dict]:
    return list(reversed(J.recent_runs(lake, job, limit=1000)))


def ledger(lake) -> list[tuple]:
    with lake.engine.connect() as conn:
        return sorted(conn.execute(sa.select(cat.LedgerEntry.sha256, cat.LedgerEntry.parser,
                                             cat.LedgerEntry.status, cat.LedgerEntry.source_path)).all())


# --------------------------------------------------------------------------- job file


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "a"}, r"job 'a': field sources: expected a non-empty list of glob strings, found None"),
    ({"name": "a", "sources": "raw/*"}, r"field sources: expected a non-empty list .* found 'raw/\*'"),
    ({"name": "a b", "sources": ["x"]}, r"job #1: field name: expected a name of letters"),
    ({"name": "a", "sources": ["x"], "schedule": "* * * *"}, r"field schedule: expected 5 cron fields .* found 4"),
    ({"name": "a", "sources": ["x"], "schedule": "61 * * * *"}, r"field schedule: expected a valid cron expression"),
    ({"name": "a", "sources": ["x"], "retries": -1}, r"field retries: expected an integer >= 0, found -1"),
    ({"name": "a", "sources": ["x"], "workers": 2.5}, r"field workers: expected an integer >= 1, found 2.5"),
    ({"name": "a", "sources": ["x"], "settle_seconds": "2"}, r"field settle_seconds: expected a number .* found '2'"),
    ({"name": "a", "sources": ["x"], "lease_ttl": 0}, r"field lease_ttl: expected a number of seconds > 0, found 0"),
    ({"name": "a", "sources": ["x"], "kind": "nmr"}, r"field kind: expected 'auto' or one of \[.*'eis'.*\], found 'nmr'"),
    ({"name": "a", "sources": ["x"], "schedul": "* * * * *"}, r"unknown field\(s\) \['schedul'\]"),
    ({"name": "a", "sources": ["x"], "timezone": "Mars/Olympus"}, r"field timezone: expected an IANA time zone"),
])
def test_bad_job_file_errors_name_file_job_field_expected_found(tmp_path, entry, message):
    with pytest.raises(J.JobFileError, match=r"jobs\.toml: .*" + message):
        J.parse_jobs({"job": [entry]}, str(tmp_path / "jobs.toml"), tmp_path)


def test_job_file_rejects_duplicates_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(J.JobFileError, match="expected a unique name, found 'a' twice"):
        J.parse_jobs({"job": [{"name": "a", "sources": ["x"]}] * 2}, "jobs.toml", tmp_path)
    with pytest.raises(J.JobFileError, match="no job file"):
        J.load_jobs(tmp_path / "missing.toml", tmp_path)
    (tmp_path / "jobs.toml").write_text("[[job]]\nname = \n")
    with pytest.raises(J.JobFileError, match="expected TOML, found a syntax error"):
        J.load_jobs(tmp_path / "jobs.toml", tmp_path)


def test_job_file_defaults_and_relative_sources_resolve_against_the_lake_parent(tmp_path):
    (tmp_path / "jobs.toml").write_text('[[job]]\nname = "x"\nsources = ["raw/*.z", "/abs/*.mpt"]\n')
    job = J.load_jobs(tmp_path / "jobs.toml", tmp_path / "base")["x"]
    assert (job.kind, job.retries, job.workers, job.settle_seconds, job.lease_ttl, job.dask) == \
        ("auto", 2, 1, 2.0, 60.0, None)
    assert job.patterns() == [str(tmp_path / "base" / "raw/*.z"), "/abs/*.mpt"]


def test_cron_day_of_week_numbers_follow_standard_cron_and_six_fields_put_seconds_first():
    sunday = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
    assert sunday.weekday() == 6
    weekdays = J.cron_trigger("0 9 * * 1-5", "UTC").get_next_fire_time(None, sunday)
    assert weekdays == datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)  # Monday, not Tuesday
    sundays = J.cron_trigger("30 8 * * 0", "UTC").get_next_fire_time(None, datetime(2026, 11, 23, tzinfo=timezone.utc))
    assert sundays == datetime(2026, 11, 29, 8, 30, tzinfo=timezone.utc) and sundays.weekday() == 6
    assert J.cron_trigger("15 30 8 * * 7", "UTC").get_next_fire_time(None, sunday) == \
        datetime(2026, 11, 29, 8, 30, 15, tzinfo=timezone.utc)
    every_2s = J.cron_trigger("*/2 * * * * *", "UTC")
    t1 = every_2s.get_next_fire_time(None, sunday)
    assert (every_2s.get_next_fire_time(t1, t1.replace(microsecond=1)) - t1).total_seconds() == 2


# --------------------------------------------------------------------------- runs


def test_run_is_incremental_and_recorded_as_a_job_activity(lake):
    raw = lake.root.parent / "raw"
    put(raw, EIS[0])
    put(raw, EIS[1])
    job = make_job(lake)
    first = J.run_job(lake, job)
    assert (first.status, first.new, first.unchanged, first.failed, first.deferred) == ("ok", 2, 0, 0, 0)
    put(raw, EIS[2])
    second = J.run_job(lake, job)
    assert (second.new, second.unchanged) == (1, 2)
    third = J.run_job(lake, job)
    assert (third.new, third.unchanged) == (0, 3)
    assert len(ledger(lake)) == 3
    assert lake.sql("select count(*) from impedance").fetchone()[0] == 3

    acts = lake.sql("select activity_id, parameters_json, status from activities where kind = 'job' "
                    "order by started_at").fetchall()
    # the third run found nothing new: no activity, only its job_runs row
    assert [json.loads(p)["new"] for _a, p, _s in acts] == [2, 1]
    assert [json.loads(p)["run_id"] for _a, p, _s in acts] == [first.run_id, second.run_id]
    assert [r["activity_id"] for r in runs(lake)] == [a for a, _p, _s in acts] + [None]
    assert third.activity_id is None and third.snapshots == []
    with lake.engine.connect() as conn:
        gen = conn.execute(sa.select(cat.Link.entity_id).where(cat.Link.activity_id == first.activity_id,
                                                               cat.Link.entity_kind == "snapshot")).scalars().all()
    assert gen == [str(s) for s in first.snapshots] and first.snapshots


def test_runs_over_unchanged_files_commit_no_snapshot_but_stay_visible_in_status(lake):
    raw = lake.root.parent / "raw"
    put(raw, EIS[0])
    put(raw, EIS[1])
    job = make_job(lake)
    first = J.run_job(lake, job)
    assert first.new == 2 and first.activity_id is not None
    after_first = lake.last_snapshot()
    assert after_first == max(first.snapshots) + 1  # the ingest batch, then the run's activity
    second = J.run_job(lake, job)
    third = J.run_job(lake, job)
    assert (second.status, second.new, second.unchanged) == ("ok", 0, 2)
    assert (third.status, third.new, third.unchanged) == ("ok", 0, 2)
    assert lake.last_snapshot() == after_first
    assert second.snapshots == [] and second.activity_id is None and third.activity_id is None
    recorded = runs(lake)
    assert [r["run_id"] for r in recorded] == [first.run_id, second.run_id, third.run_id]
    assert [(r["status"], r["n_new"], r["n_unchanged"]) for r in recorded[1:]] == [("ok", 0, 2)] * 2

    (lake.root / "jobs.toml").write_text('[[job]]\nname = "eis"\nsources = ["raw/*"]\n')
    out = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "jobs", "status", "--lake", str(lake.root)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sum(third.run_id in line or second.run_id in line for line in out.stdout.splitlines()) == 2


def test_dry_run_lists_new_files_and_writes_nothing(sqlite_lake):
    raw = sqlite_lake.root.parent / "raw"
    for n in EIS[:2]:
        put(raw, n)
    job = make_job(sqlite_lake)
    J.run_job(sqlite_lake, make_job(sqlite_lake, sources=[f"raw/{EIS[0]}"]))
    before = (sqlite_lake.last_snapshot(), ledger(sqlite_lake), runs(sqlite_lake))
    planned = {Path(f.path).name: f for f in J.plan(sqlite_lake, job)}
    assert planned[EIS[0]].status == "unchanged" and planned[EIS[1]].status == "new"
    assert planned[EIS[1]].parser == "eis-biologic-mpt"
    assert (sqlite_lake.last_snapshot(), ledger(sqlite_lake), runs(sqlite_lake)) == before

    (sqlite_lake.root / "jobs.toml").write_text('[[job]]\nname = "eis"\nsources = ["raw/*"]\n')
    out = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "jobs", "run", "eis", "--dry-run",
                          "--lake", str(sqlite_lake.root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "new        eis-biologic-mpt" in out.stdout and EIS[1] in out.stdout and EIS[0] not in out.stdout
    assert "would ingest 1 new files; 1 unchanged" in out.stdout
    assert sqlite_lake.last_snapshot() == before[0]


def test_file_still_being_written_is_deferred_then_picked_up(lake):
    raw = lake.root.parent / "raw"
    put(raw, EIS[0])
    fresh = put(raw, EIS[1], mtime=None)  # just written: mtime is now
    job = make_job(lake, settle_seconds=30)
    assert {Path(f.path).name: f.status for f in J.plan(lake, job)} == {EIS[0]: "new", EIS[1]: "deferred"}
    first = J.run_job(lake, job)
    assert (first.new, first.deferred) == (1, 1)
    assert [Path(p).name for _s, _p, _st, p in ledger(lake)] == [EIS[0]]
    os.utime(fresh, (OLD, OLD))  # the writer finished long ago
    second = J.run_job(lake, job)
    assert (second.new, second.unchanged, second.deferred) == (1, 1, 0)
    assert sorted(Path(p).name for *_x, p in ledger(lake)) == sorted(EIS[:2])


def test_settle_defers_a_file_that_changes_between_two_stats(tmp_path, monkeypatch):
    f = tmp_path / "a.z"
    f.write_bytes(b"x" * 10)
    os.utime(f, (OLD, OLD))
    real_stat = os.stat
    calls = {"n": 0}

    def growing_stat(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # a writer appends between the first and the second look
            with open(f, "ab") as fh:
                fh.write(b"more")
            os.utime(f, (OLD + 1, OLD + 1))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(J.os, "stat", growing_stat)
    assert J.settle([f], 2.0) == ([], [f])


def test_unreadable_file_is_retried_and_a_transient_catalog_error_too(sqlite_lake, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from matlake.platform import ingestion

    raw = sqlite_lake.root.parent / "raw"
    for n in EIS[:2]:
        put(raw, n)
    real_read, real_ingest = ingestion._read_and_keep, ingestion.ingest
    hidden = {"done": False}

    def flaky_read(item, store, known):
        # The first read of EIS[0] finds the file gone (e.g. an NFS hiccup); it is back for the retry.
        if item.path.endswith(EIS[0]) and not hidden["done"]:
            hidden["done"] = True
            os.rename(item.path, item.path + ".away")
            try:
                return real_read(item, store, known)
            finally:
                os.rename(item.path + ".away", item.path)
        return real_read(item, store, known)

    locked = {"n": 0}

    def locked_once(*a, **k):
        if locked["n"] == 0:
            locked["n"] += 1
            raise OperationalError("commit", {}, Exception("database is locked"))
        return real_ingest(*a, **k)

    monkeypatch.setattr(ingestion, "_read_and_keep", flaky_read)
    monkeypatch.setattr(ingestion, "ingest", locked_once)
    res = J.run_job(sqlite_lake, make_job(sqlite_lake, retries=2), backoff=0.01)
    assert (res.status, res.new, res.failed) == ("ok", 2, 0)
    assert hidden["done"] and locked["n"] == 1

    # A file that stays unreadable is counted failed after the retries and gets one failed
    # ledger row without bytes (the first attempt at EIS[0] has one too), however often it is retried.
    monkeypatch.setattr(ingestion, "ingest", real_ingest)
    monkeypatch.setattr(ingestion, "_read_and_keep", lambda item, store, known: real_read(
        ingestion.SourceItem(item.path + ".gone", item.kind, item.options), store, known))

    def unreadable(path):  # the parent, which reads files of a size the ledger knows, cannot read them either
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(ingestion, "_hash_file", unreadable)
    put(raw, EIS[2])
    res = J.run_job(sqlite_lake, make_job(sqlite_lake, retries=1), backoff=0.01)
    assert (res.new, res.failed) == (0, 3)
    assert all("cannot read" in m for m in res.failures)
    rows = ledger(sqlite_lake)
    assert [r[2] for r in rows if r[0]] == ["ok", "ok"]
    unread = sorted(r[3] for r in rows if not r[0])
    assert unread == sorted([str(raw / EIS[0])] + [str(raw / n) + ".gone" for n in EIS[:3]])


def test_stop_mid_run_commits_what_was_parsed_and_releases_the_lease(lake, monkeypatch):
    from matlake.platform import ingestion

    raw = lake.root.parent / "raw"
    for n in EIS:
        put(raw, n)
    stop = threading.Event()
    real_process = ingestion._process_got

    def then_sigterm(item, got, store, known, started):
        out = real_process(item, got, store, known, started)
        stop.set()  # as the SIGTERM handler does, while the first file is being parsed
        return out

    monkeypatch.setattr(ingestion, "_process_got", then_sigterm)
    res = J.run_job(lake, make_job(lake, batch_size=1), stop=stop)
    assert (res.status, res.new, res.deferred) == ("interrupted", 0, 3)
    assert J.active_leases(lake) == [] and ledger(lake) == []
    assert runs(lake)[0]["status"] == "interrupted" and runs(lake)[0]["activity_id"] == res.activity_id
    monkeypatch.setattr(ingestion, "_process_got", real_process)
    again = J.run_job(lake, make_job(lake))
    assert (again.status, again.new) == ("ok", 3)


# --------------------------------------------------------------------------- leases


def test_racing_acquires_have_exactly_one_winner(lake):
    for round_ in range(4):
        barrier = threading.Barrier(4)
        wins: list[bool] = []

        def contend():
            lease = J.Lease(lake.engine, f"race-{round_}", ttl=30)
            barrier.wait()
            wins.append(lease.try_acquire())

        threads = [threading.Thread(target=contend) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False, False, False, True]


def test_expired_lease_is_taken_over_and_the_old_holder_learns_it_lost(lake):
    a = J.Lease(lake.engine, "job:x", ttl=0.4, holder="host-a:1:aaaa")
    b = J.Lease(lake.engine, "job:x", ttl=30, holder="host-b:2:bbbb")
    assert a.try_acquire()
    assert not b.try_acquire()  # a is alive
    assert a.renew()
    time.sleep(0.6)  # a crashed: no heartbeat
    assert b.try_acquire()
    assert b.current()["holder"] == "host-b:2:bbbb"
    assert not a.renew() and a.lost.is_set()
    a.release()  # releasing a lease one no longer holds must not free someone else's
    assert b.current()["holder"] == "host-b:2:bbbb"
    b.release()
    assert b.current() is None


def test_heartbeat_keeps_a_long_run_lease_alive(lake):
    lease = J.Lease(lake.engine, "job:long", ttl=0.6)
    with lease:
        first = lease.current()["expires_at"]
        time.sleep(1.3)  # more than two TTLs
        assert not J.Lease(lake.engine, "job:long", ttl=5).try_acquire()
        assert lease.current()["expires_at"] > first and not lease.lost.is_set()
    assert lease.current() is None


def test_second_run_of_a_job_is_refused_or_waits(lake):
    raw = lake.root.parent / "raw"
    put(raw, EIS[0])
    job = make_job(lake)
    other = J.Lease(lake.engine, job.lease_name, ttl=60, holder="elsewhere:99:cafe")
    assert other.try_acquire()
    with pytest.raises(J.LeaseHeld, match="job:eis is held by elsewhere:99:cafe"):
        J.run_job(lake, job)
    assert runs(lake) == [] and ledger(lake) == []

    (lake.root / "jobs.toml").write_text('[[job]]\nname = "eis"\nsources = ["raw/*"]\n')
    out = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "jobs", "run", "eis", "--lake",
                          str(lake.root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == J.EXIT_LEASE_HELD
    assert "job eis is already running" in out.stderr and "--wait" in out.stderr

    released = threading.Event()

    def release() -> None:
        released.set()  # set first: the waiting run can only start after the release below
        other.release()

    threading.Timer(1.0, release).start()
    res = J.run_job(lake, job, wait=True, wait_timeout=30)
    assert res.status == "ok" and res.new == 1 and released.is_set()  # it waited for the holder, not a clock


def test_racing_runs_of_one_job_never_overlap(lake):
    raw = lake.root.parent / "raw"
    for n in EIS:
        put(raw, n)
    job = make_job(lake)
    results: list[J.RunResult] = []
    barrier = threading.Barrier(3)

    def go():
        barrier.wait()
        results.append(J.run_job(lake, job, wait=True, wait_timeout=60))

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["ok"] * 3
    assert sum(r.new for r in results) == 3 and sum(r.unchanged for r in results) == 6
    spans = sorted((r["started_at"], r["ended_at"]) for r in runs(lake))
    assert len(spans) == 3
    for (_s1, e1), (s2, _e2) in zip(spans, spans[1:]):
        assert e1 <= s2, "two runs of one job overlapped"
    assert len(ledger(lake)) == 3


def test_crashed_run_is_marked_abandoned_and_its_lease_expires(lake):
    raw = lake.root.parent / "raw"
    put(raw, EIS[0])
    job = make_job(lake)
    dead = J.Lease(lake.engine, job.lease_name, ttl=0.3, holder="gone:1:dead")
    assert dead.try_acquire()
    with lake.engine.begin() as conn:
        conn.execute(sa.insert(cat.JobRun).values(
            run_id="run_dead", job_name="eis", holder="gone:1:dead", trigger="schedule", started_at=cat.utcnow(),
            status="running", n_new=0, n_unchanged=0, n_failed=0, n_deferred=0, n_records=0, error=""))
    time.sleep(0.5)
    res = J.run_job(lake, job)
    assert res.status == "ok" and res.new == 1
    by_id = {r["run_id"]: r for r in runs(lake)}
    assert by_id["run_dead"]["status"] == "abandoned" and by_id["run_dead"]["ended_at"] is not None


# --------------------------------------------------------------------------- serve


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"timed out waiting for {what}; serve exited {proc.returncode}\n{out}\n{err}")


def test_serve_runs_incrementally_on_schedule_and_stops_cleanly_on_sigterm(lake):
    raw = lake.root.parent / "raw"
    put(raw, EIS[0])
    put(raw, EIS[1])
    (lake.root / "jobs.toml").write_text(
        '[[job]]\nname = "eis"\nsources = ["raw/*"]\nschedule = "* * * * * *"\nsettle_seconds = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "matlake.platform.cli", "jobs", "serve", "--lake", str(lake.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _wait_for(lambda: [r for r in runs(lake) if r["status"] == "ok"], 40, "a first run", proc)[0]
        assert (first["n_new"], first["n_unchanged"]) == (2, 0)
        put(raw, EIS[2])
        later = _wait_for(lambda: [r for r in runs(lake) if r["status"] == "ok" and r["n_new"] == 1], 20,
                          "a run that ingests the new file", proc)[0]
        assert later["n_unchanged"] == 2 and later["started_at"] > first["started_at"]
        _wait_for(lambda: any(r["started_at"] > later["started_at"] and r["status"] == "ok" for r in runs(lake)),
                  20, "a run after the new file", proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "received SIGTERM" in out and out.rstrip().endswith("stopped")

    all_runs = runs(lake)
    assert {r["status"] for r in all_runs} <= {"ok", "interrupted"}  # nothing left 'running'
    assert sum(r["n_new"] for r in all_runs) == 3
    assert all(r["n_unchanged"] == 2 for r in all_runs[1:] if r["ended_at"] < later["started_at"])
    assert J.active_leases(lake) == []
    # Every run's activity is committed; every registered file exists; three files, each ingested once.
    acts = {a for (a,) in lake.sql("select activity_id from activities where kind = 'job'").fetchall()}
    assert {r["activity_id"] for r in all_runs if r["n_new"] or r["n_failed"]} == acts
    assert all(r["activity_id"] is None for r in all_runs if not (r["n_new"] or r["n_failed"]))
    assert all((lake.root / f["path"]).exists() for f in lake.files_at(lake.last_snapshot()))
    assert sorted(Path(p).name for *_x, p in ledger(lake)) == sorted(EIS)
    assert lake.sql("select count(*) from impedance").fetchone()[0] == 3


def test_sigterm_to_the_whole_process_group_interrupts_a_parallel_run_cleanly(lake):
    import numpy as np

    raw = lake.root.parent / "raw"
    raw.mkdir()
    f = np.logspace(5, -1, 60)
    for i in range(40):  # distinct spectra, so that the run has files in flight in both workers
        z = 10 + 0.01 * i + 50 / (1 + 1j * 2 * np.pi * f * 5e-3)
        (raw / f"s{i:02d}.csv").write_text("freq,Zreal,Zimag\n" + "".join(f"{a},{b.real},{b.imag}\n"
                                                                          for a, b in zip(f, z)))
        os.utime(raw / f"s{i:02d}.csv", (OLD, OLD))
    (lake.root / "jobs.toml").write_text('[[job]]\nname = "eis"\nsources = ["raw/*.csv"]\n'
                                         'schedule = "* * * * * *"\nworkers = 2\nsettle_seconds = 0\n')
    # systemd's default KillMode=control-group signals every process, the parse workers too
    proc = subprocess.Popen([sys.executable, "-m", "matlake.platform.cli", "jobs", "serve", "--lake", str(lake.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: runs(lake), 60, "a run to start", proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "BrokenProcessPool" not in out + err
    assert {r["status"] for r in runs(lake)} <= {"ok", "interrupted"}, runs(lake)
    assert J.active_leases(lake) == []


# --------------------------------------------------------------------------- migration 0002


def _check_0002(url: str) -> None:
    engine = cat.make_engine(url)
    try:
        migrate.upgrade(engine, "0001")
        assert not {"leases", "job_runs"} & set(sa.inspect(engine).get_table_names())
        migrate.upgrade(engine, "0002")
        insp = sa.inspect(engine)
        for table in ("leases", "job_runs"):
            assert {c["name"] for c in insp.get_columns(table)} == {c.name for c in cat.Base.metadata.tables[table].columns}
        assert [i["name"] for i in insp.get_indexes("job_runs")] == ["ix_job_runs_job_name_started_at"]
        assert J.Lease(engine, "probe", ttl=5).try_acquire()
        migrate.downgrade(engine, "0001")
        assert migrate.current(engine) == "0001"
        assert not {"leases", "job_runs"} & set(sa.inspect(engine).get_table_names())
        migrate.upgrade(engine, "0002")
        assert migrate.current(engine) == "0002"
    finally:
        engine.dispose()


def test_migration_0002_goes_up_and_down_on_sqlite(tmp_path):
    _check_0002(f"sqlite:///{tmp_path / 'c.sqlite'}")


def test_migration_0002_goes_up_and_down_on_postgresql(pg_url):
    _check_0002(pg_url)


def test_dry_run_plans_a_failed_file_again_only_when_the_job_tries_it_another_way(sqlite_lake):
    raw = sqlite_lake.root.parent / "raw"
    raw.mkdir(parents=True)
    bad = raw / "notes.txt"
    bad.write_text("not a spectrum\n" * 20)
    os.utime(bad, (OLD, OLD))
    plain = make_job(sqlite_lake)
    assert J.run_job(sqlite_lake, plain).failed == 1
    # the same attempt again: a run would skip it, so the plan says unchanged
    assert [f.status for f in J.plan(sqlite_lake, plain)] == ["unchanged"]
    # another kind: a run would try it again (its failure is keyed by kind and options), so it is new
    as_eis = make_job(sqlite_lake, kind="eis")
    assert [f.status for f in J.plan(sqlite_lake, as_eis)] == ["new"]
    assert J.run_job(sqlite_lake, as_eis).failed == 1
    assert [f.status for f in J.plan(sqlite_lake, as_eis)] == ["unchanged"]
