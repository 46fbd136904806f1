"""Shared fixtures: the real sample files in ../shared/data and fresh lakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """Path of a file in ../shared/data; skips the test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not SHARED_DATA.exists():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}; real sample files are needed")
    if not path.exists():
        pytest.fail(f"missing sample file {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA
