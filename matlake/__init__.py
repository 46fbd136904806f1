"""matlake: a versioned data lake with provenance for materials science."""

from __future__ import annotations

__version__ = "0.1.0"


def open(path_or_url: str | None = None, **kwargs):  # noqa: A001 - mirrors builtins.open on purpose
    """Open an existing lake by directory (or the URL recorded in its config).

    ``path_or_url`` defaults to ``$MATLAKE_LAKE``, else the current directory.
    """
    from matlake.platform.lake import Lake

    return Lake.open(path_or_url, **kwargs)


def init(path: str, catalog: str | None = None):
    """Create a lake in directory ``path``; ``catalog`` is an optional SQLAlchemy URL (PostgreSQL for teams)."""
    from matlake.platform.lake import Lake

    return Lake.init(path, catalog=catalog)
