"""Writes that fail (disk full, permission denied): one clear line, no partial snapshot.

Tests run as root, which ignores file modes, so "permission denied" is made
real with the immutable attribute (``chattr +i``: even root gets EPERM) and,
everywhere, with an injected EACCES at the Parquet write; "disk full" is a
2 MiB tmpfs holding the whole lake (root only) and, everywhere, RLIMIT_FSIZE
in a subprocess (writes past the limit fail with EFBIG).
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import matlake
from matlake.platform.operations import doctor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import write_eis_files  # noqa: E402

pytestmark = pytest.mark.slow


def _state(lake) -> tuple:
    return (lake.last_snapshot(), lake.sql("select count(*) from impedance").fetchone()[0],
            lake.sql("select count(*) from ledger").fetchone()[0])


def _cli(root: Path, *args: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matlake.platform.cli", *args, "--lake", str(root)],
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def _assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("matlake: error: "), out.stderr
    assert any(n in lines[0] for n in needles), lines[0]


def test_disk_full_on_tmpfs_fails_in_one_line_and_leaves_no_partial_snapshot(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers disk-full")
    try:
        root = mnt / "lake"
        lake = matlake.init(root)
        lake.ingest(write_eis_files(tmp_path / "first", 0, 3), progress=False)
        before = _state(lake)
        # Ballast leaves ~40 KiB free; 200 new spectra need more (raw objects + Parquet + catalog rows).
        free = shutil.disk_usage(mnt).free
        with open(mnt / "ballast", "wb") as fh:
            fh.write(b"\0" * max(free - 40 * 1024, 0))
        files = write_eis_files(tmp_path / "more", 1000, 200)
        out = _cli(root, "ingest", str(files[0].parent))
        _assert_one_line_error(out, "No space left on device", "disk is full")
        assert _state(lake) == before
        rep = doctor(lake)
        assert rep.ok, rep.problems
        (mnt / "ballast").unlink()  # once space is back, gc clears what the failed run left
        assert _cli(root, "gc", "--grace", "0").returncode == 0
        rep = doctor(lake)
        assert rep.ok and rep.orphans == []
        lake.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _limit_file_size(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_file_size_limit_fails_in_one_line_and_leaves_no_partial_snapshot(tmp_path):
    root = tmp_path / "lake"
    lake = matlake.init(root)
    lake.ingest(write_eis_files(tmp_path / "first", 0, 3), progress=False)
    before = _state(lake)
    big = tmp_path / "big"
    big.mkdir()
    # One spectrum of 60 000 points: its Parquet file exceeds 300 kB, the raw CSV (~2.5 MB) too.
    import numpy as np

    f = np.logspace(6, -2, 60_000)
    z = 5 + 50 / (1 + 2j * np.pi * f * 50 * 1e-5)
    np.savetxt(big / "long.csv", np.column_stack([f, z.real, z.imag]), delimiter=",", fmt="%.10e")
    out = _cli(root, "ingest", str(big), preexec=_limit_file_size(300_000))
    _assert_one_line_error(out, "File too large")
    assert _state(lake) == before
    assert doctor(lake).ok
    lake.close()


def test_immutable_directory_denies_root_and_leaves_no_partial_snapshot(tmp_path):
    root = tmp_path / "lake"
    lake = matlake.init(root)
    lake.ingest(write_eis_files(tmp_path / "first", 0, 3), progress=False)
    before = _state(lake)
    locked = [root / "objects", root / "tables"]
    if subprocess.run(["chattr", "-R", "+i", *map(str, locked)], capture_output=True).returncode:
        pytest.skip("chattr +i not supported on this filesystem; the injected EACCES test covers it")
    try:
        out = _cli(root, "ingest", str(write_eis_files(tmp_path / "more", 100, 4)[0].parent))
        _assert_one_line_error(out, "Operation not permitted", "Permission denied")
        assert _state(lake) == before
        assert doctor(lake).ok
    finally:
        subprocess.run(["chattr", "-R", "-i", *map(str, locked)], check=False)
    lake.close()


def test_permission_denied_writing_parquet_fails_cleanly(sqlite_lake, tmp_path, monkeypatch):
    """EACCES injected at the Parquet write (after the raw objects were stored)."""
    import matlake.platform.lake as lake_mod

    lake = sqlite_lake
    lake.ingest(write_eis_files(tmp_path / "first", 0, 3), progress=False)
    before = _state(lake)

    def denied(path, data, **_sync):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(lake_mod, "write_atomic", denied)
    with pytest.raises(PermissionError, match="Permission denied"):
        lake.ingest(write_eis_files(tmp_path / "more", 100, 4), progress=False)
    monkeypatch.undo()
    assert _state(lake) == before
    rep = doctor(lake)
    assert rep.ok and len(rep.orphans) == 4  # the raw objects, kept for the rerun or for gc
    assert lake.ingest([tmp_path / "more"], progress=False).new == 4
    assert doctor(lake).ok
