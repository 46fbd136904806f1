"""Where a lake lives: its root directory and its catalog URL.

A lake directory holds ``matlake.toml`` (the catalog URL), ``tables/``
(Parquet), ``objects/`` (content-addressed files) and, by default, the SQLite
catalog ``catalog.sqlite``.  A team lake keeps its catalog in PostgreSQL; the
URL is recorded in ``matlake.toml`` and the root directory is recorded in the
catalog, so both ``--lake DIR`` and ``--lake postgresql://...`` find it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "matlake.toml"
SQLITE_NAME = "catalog.sqlite"
ENV_LAKE = "MATLAKE_LAKE"


class LakeNotFound(Exception):
    """No lake at the given place."""


@dataclass(frozen=True)
class LakeConfig:
    root: Path
    catalog_url: str

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def is_sqlite(self) -> bool:
        return self.catalog_url.startswith("sqlite")


def is_url(text: str) -> bool:
    return "://" in text


def default_location(path_or_url: str | os.PathLike | None) -> str:
    """``path_or_url``, else ``$MATLAKE_LAKE``, else the current directory."""
    if path_or_url is not None and str(path_or_url) != "":
        return str(path_or_url)
    return os.environ.get(ENV_LAKE) or os.getcwd()


def sqlite_url(root: Path) -> str:
    return f"sqlite:///{(root / SQLITE_NAME).resolve()}"


def write_config(root: Path, catalog_url: str) -> None:
    # TOML basic strings: escape backslashes and quotes.
    quoted = catalog_url.replace("\\", "\\\\").replace('"', '\\"')
    text = (
        "# matlake lake configuration\n"
        "[catalog]\n"
        f'url = "{quoted}"\n'
    )
    tmp = root / (CONFIG_NAME + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, root / CONFIG_NAME)


def read_config(root: Path) -> LakeConfig:
    cfg_path = root / CONFIG_NAME
    if not cfg_path.exists():
        raise LakeNotFound(f"no lake at {root}: {CONFIG_NAME} not found (create one with `matlake init {root}`)")
    try:
        data = tomllib.loads(cfg_path.read_text())
        url = data["catalog"]["url"]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise LakeNotFound(f"{cfg_path}: expected [catalog] url = \"...\", found unreadable config ({exc})") from exc
    return LakeConfig(root=root.resolve(), catalog_url=url)
