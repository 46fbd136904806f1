"""Shared fixtures: the real sample files in the repository's samples/ and fresh lakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def sample(*parts: str) -> Path:
    """Path of a file or folder under ``<repo>/samples``; fails the test when it is missing.

    The samples ship with the repository, so a missing one is a broken checkout,
    never a reason to skip.
    """
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"missing sample {path} (samples/ ships with the repository; see samples/SOURCES.md)")
    return path


@pytest.fixture
def samples_dir() -> Path:
    """The repository's samples/ folder (fails when it is missing)."""
    return sample()


# --------------------------------------------------------------------------- lakes on both catalogs

PG_BASE = os.environ.get("MATLAKE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def pg_available() -> bool:
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


_PG_OK: bool | None = None


def require_pg() -> None:
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = pg_available()
    if not _PG_OK:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable at {PG_BASE} (CI must test the team catalog)")
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE}")


@pytest.fixture
def pg_url():
    """A catalog URL for a fresh, empty PostgreSQL schema (dropped afterwards)."""
    import uuid

    import sqlalchemy as sa

    require_pg()
    schema = f"mltest_{uuid.uuid4().hex[:12]}"
    eng = sa.create_engine(PG_BASE)
    with eng.begin() as conn:
        conn.execute(sa.text(f"create schema {schema}"))
    url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    yield url
    with eng.begin() as conn:
        conn.execute(sa.text(f"drop schema {schema} cascade"))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    """None (SQLite in the lake folder) or a fresh PostgreSQL schema URL."""
    if request.param == "sqlite":
        yield None
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def lake(tmp_path, catalog_url):
    """A new, empty lake, once with a SQLite and once with a PostgreSQL catalog."""
    import matlake

    lk = matlake.init(tmp_path / "lake", catalog=catalog_url)
    yield lk
    lk.close()


@pytest.fixture
def sqlite_lake(tmp_path):
    import matlake

    lk = matlake.init(tmp_path / "lake")
    yield lk
    lk.close()


def eis_spectrum(name: str):
    """(frequency in Hz, complex Z in ohm) of the first spectrum of an EIS file in samples/eis."""
    import numpy as np

    from matlake.ingest.eis import read_spectra

    spec = read_spectra(sample("eis", name))[0]
    return np.asarray(spec.frequency, float), np.asarray(spec.z, complex)
