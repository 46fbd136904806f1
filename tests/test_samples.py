"""The sample files ship with the repository, and the demo finds them without ../shared."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT, SAMPLES, sample

import matlake.demo as demo


def test_every_sample_file_is_listed_in_sources_with_its_licence():
    text = (SAMPLES / "SOURCES.md").read_text()
    files = sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    assert files
    for p in files:
        assert p.name in text, f"{p.relative_to(ROOT)} has no row in SOURCES.md"
    assert "Permission is hereby granted" in text and "Redistribution and use in source and binary forms" in text


def test_missing_sample_fails_the_test_instead_of_skipping():
    with pytest.raises(pytest.fail.Exception, match="missing sample .*no_such_file"):
        sample("eis", "no_such_file.csv")


def test_demo_uses_the_clone_samples_folder_by_default(monkeypatch):
    monkeypatch.delenv(demo.SAMPLE_ENV, raising=False)
    assert demo.sample_data_dir() == SAMPLES


def test_sample_data_env_overrides_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv(demo.SAMPLE_ENV, str(tmp_path))
    assert demo.sample_data_dir() == tmp_path


def test_installed_package_finds_the_samples_of_the_clone_it_runs_in(monkeypatch, tmp_path):
    # a regular (non-editable) install: the package sits in site-packages, away from the clone
    fake = tmp_path / "site-packages" / "matlake" / "demo.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(demo, "__file__", str(fake))
    monkeypatch.delenv(demo.SAMPLE_ENV, raising=False)
    monkeypatch.chdir(ROOT / "tests")
    assert demo.sample_data_dir() == SAMPLES
    monkeypatch.chdir(tmp_path)  # outside any clone: no samples, the demo says so
    assert demo.sample_data_dir() is None


def test_nothing_in_the_repository_points_at_the_old_shared_folder():
    pattern = re.compile(r"\.\./shared|\"shared\" */ *\"data\"|parents\[\d\] */ *\"shared\"")
    hits = []
    # The project's own files (tracked, or new and not ignored): build outputs such as
    # matlake.egg-info copy the README and are not the project's to fix.
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        p = ROOT / name
        if (p.is_file() and "samples" not in p.parts
                and p.suffix in {".py", ".md", ".ipynb", ".toml", ""} and p != ROOT / "tests" / "test_samples.py"):
            try:
                text = p.read_text()
            except UnicodeDecodeError:
                continue
            if pattern.search(text):
                hits.append(name)
    assert hits == []


@pytest.mark.slow
def test_demo_runs_end_to_end_from_the_clone_without_warnings_or_failed_files(tmp_path):
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k not in (demo.SAMPLE_ENV, "MATLAKE_LAKE", "MATLAKE_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "matlake.platform.cli", "demo", str(tmp_path / "demo")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Warning" not in out, out  # e.g. pymatgen's "No Pauling electronegativity for He"
    assert "0 failed, 0 errors" in out and "  failed:" not in out and "  error:" not in out
    assert re.search(r"re-ingest of the same folders: 0 new, \d+ unchanged", out)
    assert "used object" in out and "_vasprun.xml.gz" in out  # the lineage reaches raw sample files
