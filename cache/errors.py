"""Errors of the cache package, rooted in one base class (zarr's habit).

Each also derives from the builtin that fits, so callers that only know the
builtins still catch them.
"""

from __future__ import annotations

from vitreg.core.errors import InputError, VitregError

__all__ = [
    "ConfigMismatchError", "IncompleteStoreError", "InputError", "MissingArrayError",
    "MissingChunkError", "StoreFormatError", "StoreReadError",
    "StoreNotFoundError", "UnsafeStoreError", "VitregError",
]


class StoreNotFoundError(VitregError, FileNotFoundError):
    """No vitreg store at that location."""


class StoreFormatError(VitregError, ValueError):
    """The store is not a vitreg store of a version this code reads."""


class MissingArrayError(StoreFormatError, KeyError):
    """The store has no array of that name (an option that was not extracted)."""

    def __str__(self) -> str:  # KeyError would quote the sentence
        return str(self.args[0])


class UnsafeStoreError(StoreFormatError):
    """The store asks for a codec or dtype outside the allow-list, or for more
    memory than its metadata allows (a chunk that inflates, a huge shape)."""


class MissingChunkError(StoreFormatError):
    """A complete store lacks a chunk, or holds one of the wrong size: zarr
    would read it as fill values."""


class StoreReadError(VitregError, OSError):
    """The store's bytes could not be fetched (an HTTP error, a cut connection,
    a permission): not a problem of the store's content."""


class IncompleteStoreError(VitregError, RuntimeError):
    """The store still has pending rows and the caller did not allow that."""


class ConfigMismatchError(VitregError, ValueError):
    """An existing store was written with a different configuration."""
