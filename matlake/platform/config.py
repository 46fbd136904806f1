"""Where a lake lives: its root directory and its catalog URL.

A lake directory holds ``matlake.toml`` (the catalog URL), ``tables/``
(Parquet), ``objects/`` (content-addressed files) and, by default, the SQLite
catalog ``catalog.sqlite``.  A team lake keeps its catalog in PostgreSQL; the
URL is recorded in ``matlake.toml`` and the root directory is recorded in the
catalog, so both ``--lake DIR`` and ``--lake postgresql://...`` find it.
"""

from __future__ import annotations

import os
import shutil
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


def local_config(path_or_url: str | os.PathLike | None) -> LakeConfig:
    """The config of the lake in folder ``path_or_url`` (default: ``$MATLAKE_LAKE``, else the
    current folder); :class:`LakeNotFound` says how to name one when none was given and the
    current folder holds none."""
    where = default_location(path_or_url)
    given = (path_or_url is not None and str(path_or_url) != "") or bool(os.environ.get(ENV_LAKE))
    if not given and not (Path(where) / CONFIG_NAME).exists():
        # No lake named anywhere: the current directory was only a guess.
        raise LakeNotFound(
            f"no lake given and no {CONFIG_NAME} in the current directory {where}: pass --lake DIR "
            f"or set {ENV_LAKE}=DIR (in Python: matlake.open(DIR)), or create a lake with `matlake init DIR`")
    return read_config(Path(where))


def sqlite_url(root: Path) -> str:
    return f"sqlite:///{(root / SQLITE_NAME).resolve()}"


class CreatedPaths:
    """The folders and files one ``init`` makes, so that a failed init removes
    exactly those and nothing that was there before."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def mkdir(self, path: Path) -> None:
        """``mkdir -p path``, remembering each folder that did not exist."""
        missing = []
        p = path
        while not p.exists() and not p.is_symlink():
            missing.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        self.paths.extend(reversed(missing))

    def claim(self, path: Path) -> None:
        """A file this init may create: removed by :meth:`undo` unless it exists now."""
        if not path.exists() and not path.is_symlink():
            self.paths.append(path)

    def undo(self) -> None:
        """Remove what was made, outermost first (a made folder goes with all it holds)."""
        for p in self.paths:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink(missing_ok=True)


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
