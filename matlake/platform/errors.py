"""The user-facing error base class, in a module with no imports of its own so
that every platform module (the object store included) can raise it without an
import cycle.  :mod:`matlake.platform.lake` re-exports it."""

from __future__ import annotations


class LakeError(Exception):
    """A user-facing error about the lake (unknown tag, bad id, ...)."""
