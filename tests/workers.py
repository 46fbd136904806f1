"""Subprocess entry points for the stress tests (run as ``python tests/workers.py CMD ...``).

Commands:

- ``ingest LAKE LISTFILE BATCH``      ingest the paths listed in LISTFILE (one per line), BATCH files per commit
- ``query LAKE STOPFILE``             count rows at the latest snapshot until STOPFILE exists, checking at every
                                      snapshot that the impedance rows equal the ok ledger's record count
- ``train LAKE STOPFILE``             train + predict with the composition regressor until STOPFILE exists
- ``delete LAKE TABLE IDSFILE``       tombstone the records listed in IDSFILE one by one (racing another process)
- ``predict LAKE MODEL_ID ROUNDS``    predict ROUNDS times with one model version (racing another process)
- ``analyze LAKE ROUNDS``             ``eis analyze --force`` ROUNDS times (racing another process)

Each prints one JSON line of figures on stdout and exits 0; any error exits 1 with a traceback on stderr.
Also :func:`write_eis_files`, the generator of the synthetic EIS CSVs the tests ingest.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def eis_csv(seed: int, n_points: int = 25) -> str:
    """A synthetic R0 + (R1 || C1) spectrum as a header-less CSV: frequency (Hz), Z' (ohm), Z'' (ohm).

    Each seed gives different circuit values, so each file has unique bytes.
    """
    rng = np.random.default_rng(seed)
    r0, r1, c1 = rng.uniform(1, 20), rng.uniform(5, 200), 10 ** rng.uniform(-6, -3)
    f = np.logspace(5, -1, n_points)
    z = r0 + r1 / (1 + 2j * np.pi * f * r1 * c1)
    z = z * (1 + rng.normal(0, 1e-3, n_points))
    # Header-less, like impedance.py's example data: the eis-csv parser detects a log-spaced sweep.
    lines = [f"{a:.8e},{b:.8e},{c:.8e}" for a, b, c in zip(f, z.real, z.imag)]
    return "\n".join(lines) + "\n"


def write_eis_files(folder: Path, start: int, count: int, duplicates: int = 0) -> list[Path]:
    """Write ``count`` EIS CSVs (seeds start..start+count-1) plus ``duplicates`` byte-identical
    copies of some of them under other names; returns every path written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(start, start + count):
        p = folder / f"cell_{s:05d}.csv"
        p.write_text(eis_csv(s))
        paths.append(p)
    for k in range(duplicates):
        src = paths[(k * 7) % len(paths)]
        p = folder / f"copy_{start + k:05d}_{src.name}"
        p.write_bytes(src.read_bytes())
        paths.append(p)
    return paths


def write_ingest_lists(files: list[Path], folder: Path, n: int, extra: int, seed: int) -> list[Path]:
    """One file list per ingest process: every file is in some list (files[i::n]) and
    ``extra`` random others make the lists overlap, so dedup races happen."""
    rng = random.Random(seed)
    lists = []
    for i in range(n):
        mine = list({str(p) for p in files[i::n] + rng.sample(files, min(len(files), extra))})
        rng.shuffle(mine)
        lf = folder / f"list-{i}"
        lf.write_text("\n".join(mine))
        lists.append(lf)
    return lists


def reconcile(lake, table: str = "impedance", parser_prefix: str = "eis-") -> dict:
    """Check that ``table`` and the ingest ledger agree exactly; returns figures, raises on a mismatch.

    Every record id listed by an ok ledger row of the parsers ``parser_prefix*``
    is present exactly once in ``table`` (all versions), the table holds no
    other record, and each distinct content (sha256) has one ledger row.
    """
    from collections import Counter

    rows = lake.sql("select sha256, status, record_ids_json from ledger where parser like ?",
                    params=[parser_prefix + "%"]).fetchall()
    shas = Counter(r[0] for r in rows)
    twice = [s for s, n in shas.items() if n > 1]
    ids = Counter(rid for _sha, status, js in rows if status == "ok" for rid in json.loads(js))
    stored = dict(lake.sql(f"select record_id, count(*) from {table}_all group by record_id").fetchall())
    problems = []
    if twice:
        problems.append(f"{len(twice)} contents have more than one ledger row, e.g. {twice[0]}")
    dup_ids = [r for r, n in ids.items() if n > 1]
    if dup_ids:
        problems.append(f"{len(dup_ids)} record ids listed by two ledger rows, e.g. {dup_ids[0]}")
    lost = [r for r in ids if stored.get(r, 0) == 0]
    doubled = [r for r in ids if stored.get(r, 0) > 1]
    extra = [r for r in stored if r not in ids]
    if lost:
        problems.append(f"{len(lost)} ledger records missing from {table}, e.g. {lost[0]}")
    if doubled:
        problems.append(f"{len(doubled)} records stored more than once in {table}, e.g. {doubled[0]}")
    if extra:
        problems.append(f"{len(extra)} rows of {table} no ok ledger row lists, e.g. {extra[0]}")
    if problems:
        raise AssertionError("; ".join(problems))
    return {"ledger_rows": len(rows), "records": sum(ids.values()),
            "failed": sum(1 for r in rows if r[1] != "ok")}


def file_shas(folder: Path) -> set[str]:
    import hashlib

    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


FAULT_MODES = ("before_barrier", "after_files", "in_transaction", "after_commit", "timer")


def crash_campaign(lake_root: Path, work: Path, kills: int, parallel: int = 4, new_per_run: int = 6,
                   seed: int = 0, catalog: str | None = None) -> dict:
    """Kill -9 ingest processes at random points of their commits until ``kills`` were killed.

    Waves of ``parallel`` ingest processes run against one lake; each wave adds
    ``new_per_run`` new EIS files per process to a shared source folder and
    every process ingests the whole folder (shuffled), so they also race for
    the same files.  A process is killed either by the ``MATLAKE_FAULT`` hook
    at its N-th ``before_barrier`` / ``after_files`` / ``in_transaction`` / ``after_commit`` point
    (N = 1..3) or by the parent after a random delay (``timer``).  After every
    wave :func:`matlake.platform.operations.doctor` must report consistent and
    :func:`reconcile` must hold.  Returns figures.
    """
    import os
    import signal
    import subprocess
    from collections import Counter

    import matlake
    from matlake.platform.operations import doctor

    rng = random.Random(seed)
    src = work / "src"
    lake = matlake.open(str(lake_root))
    stats: dict = {"kills": 0, "completed": 0, "runs": 0, "waves": 0, "kills_by_point": Counter(),
                   "max_orphans": 0, "doctor_runs": 0}
    t0 = time.time()
    next_seed = seed * 1_000_000
    while stats["kills"] < kills:
        procs = []
        for j in range(parallel):
            write_eis_files(src, next_seed, new_per_run)
            next_seed += new_per_run
            listing = sorted(str(p) for p in src.iterdir())
            rng.shuffle(listing)
            listfile = work / f"list-{stats['runs'] + j}"
            listfile.write_text("\n".join(listing))
            mode = rng.choice(FAULT_MODES)
            env = dict(os.environ)
            env.pop("MATLAKE_FAULT", None)
            if mode != "timer":
                env["MATLAKE_FAULT"] = f"{mode}:{rng.randint(1, 3)}"
            delay = rng.uniform(0.7, 1.8)  # interpreter start-up is ~0.6 s; commits follow within ~1 s
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "ingest", str(lake_root),
                                  str(listfile), str(rng.choice([2, 3, 4, 6]))],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append((p, mode, time.time() + delay))
        for p, mode, deadline in procs:
            if mode == "timer":
                try:
                    p.wait(timeout=max(0.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGKILL)
        for p, mode, _ in procs:
            _out, err = p.communicate(timeout=120)
            stats["runs"] += 1
            if p.returncode == -signal.SIGKILL:
                stats["kills"] += 1
                stats["kills_by_point"][mode] += 1
            elif p.returncode == 0:
                stats["completed"] += 1
            else:
                raise AssertionError(f"ingest ({mode}) exited {p.returncode}: {err.decode()[-2000:]}")
        stats["waves"] += 1
        rep = doctor(lake)
        stats["doctor_runs"] += 1
        if not rep.ok:
            raise AssertionError(f"doctor after wave {stats['waves']}: " + "; ".join(rep.problems[:10]))
        stats["max_orphans"] = max(stats["max_orphans"], len(rep.orphans))
        reconcile(lake)
    stats["seconds"] = round(time.time() - t0, 1)
    stats["kills_by_point"] = dict(stats["kills_by_point"])
    lake.close()
    return stats


# --------------------------------------------------------------------------- commands


def cmd_ingest(lake_path: str, listfile: str, batch: str) -> dict:
    import matlake

    paths = [line for line in Path(listfile).read_text().splitlines() if line]
    lake = matlake.open(lake_path)
    t0 = time.time()
    rep = lake.ingest(paths, batch_size=int(batch), progress=False)
    return {"new": rep.new, "unchanged": rep.unchanged, "failed": rep.failed, "records": rep.records,
            "commits": len(rep.snapshots), "seconds": round(time.time() - t0, 2)}


def cmd_query(lake_path: str, stopfile: str) -> dict:
    import matlake

    lake = matlake.open(lake_path)
    n_queries = snapshots_seen = 0
    last_rows = -1
    stop = Path(stopfile)
    while True:
        done = stop.exists()  # read before the query so the final pass sees the final state
        sid = lake.last_snapshot()
        rows = lake.sql("select count(*) from impedance", as_of=sid).fetchone()[0]
        ledger = lake.sql("select coalesce(sum(n_records), 0) from ledger where status = 'ok' "
                          "and parser like 'eis-%'", as_of=sid).fetchone()[0]
        n_queries += 2
        if rows != ledger:
            raise AssertionError(f"snapshot {sid}: impedance has {rows} rows, ok ledger lists {ledger} records")
        if rows < last_rows:
            raise AssertionError(f"snapshot {sid}: impedance shrank from {last_rows} to {rows} rows")
        if rows != last_rows:
            snapshots_seen += 1
        last_rows = rows
        if done:
            break
        time.sleep(0.05)
    return {"queries": n_queries, "distinct_counts_seen": snapshots_seen, "final_rows": last_rows}


def cmd_train(lake_path: str, stopfile: str) -> dict:
    import matlake
    from matlake.platform.modeling import predict, train

    lake = matlake.open(lake_path)
    stop = Path(stopfile)
    trained = predicted = 0
    while True:
        done = stop.exists()
        info = train(lake, "matlake.models.dft.composition:CompositionRegressor", params={"n_estimators": 10})
        out = predict(lake, info.model_id)
        trained += 1
        predicted += out["n"]
        if done or trained >= 50:
            break
    return {"models": trained, "predictions": predicted}


def cmd_delete(lake_path: str, table: str, idsfile: str) -> dict:
    """Delete each listed record on its own; a record another process changed or
    deleted first is refused (VersionConflict) or already gone, never deleted twice."""
    import matlake
    from matlake.platform.lake import LakeError, VersionConflict

    lake = matlake.open(lake_path)
    deleted = conflicts = gone = 0
    for rid in Path(idsfile).read_text().split():
        try:
            lake.delete(table, [rid], reason="race")
            deleted += 1
        except VersionConflict:
            conflicts += 1
        except LakeError as exc:
            if "no live records" not in str(exc):
                raise
            gone += 1
    return {"deleted": deleted, "conflicts": conflicts, "gone": gone}


def cmd_predict(lake_path: str, model_id: str, rounds: str) -> dict:
    import matlake
    from matlake.platform.modeling import predict

    lake = matlake.open(lake_path)
    rows = sum(predict(lake, model_id)["n"] for _ in range(int(rounds)))
    return {"predictions": rows, "rebases": lake.rebases}


def cmd_analyze(lake_path: str, rounds: str) -> dict:
    import matlake
    from matlake.models.eis.analysis import analyze

    lake = matlake.open(lake_path)
    subjects = sum(analyze(lake, force=True).n_subjects for _ in range(int(rounds)))
    return {"subjects": subjects, "rebases": lake.rebases}


COMMANDS = {"ingest": cmd_ingest, "query": cmd_query, "train": cmd_train, "delete": cmd_delete,
            "predict": cmd_predict, "analyze": cmd_analyze}

if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    print(json.dumps(COMMANDS[cmd](*args)))
