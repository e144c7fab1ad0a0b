"""A shard's identity: a digest of its tar members' names and sizes, in order.

Recorded for every input shard in a store's attributes (schema 1.2), so that
a resumed run, and `vitreg verify`, notice a shard rewritten since the store
was started (other samples, or the same ones in another order) from the tar
headers alone, without reading any image.
"""

from __future__ import annotations

import hashlib
import os
import tarfile


def local_shard_path(url: str) -> str | None:
    """The file of a local shard (a path or `file://` URL), else None."""
    path = url.removeprefix("file://") if url.startswith("file://") else url
    if ":" in path.split("/")[0] or not os.path.isfile(path):
        return None
    return path


def members_digest(members: list[tuple[str, int]]) -> str:
    """sha256 of (name, size) pairs in tar order."""
    digest = hashlib.sha256()
    for name, size in members:
        digest.update(f"{name}\0{size}\n".encode())
    return "sha256:" + digest.hexdigest()


def shard_digest(path: str) -> str | None:
    """The identity of the local tar `path` from its headers; None if unreadable."""
    try:
        with tarfile.open(path, "r:") as tar:
            return members_digest([(m.name, m.size) for m in tar if m.isreg()])
    except (tarfile.TarError, OSError):
        return None
