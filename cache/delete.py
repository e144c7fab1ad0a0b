"""What a writer may delete: only a vitreg store (recognised by its
attributes), never a folder of the user's files; and the orphans a killed
write leaves."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import zarr

from .errors import StoreFormatError
from .urls import store_like


def check_out(url: str, *, overwrite: bool) -> None:
    """Refuse an `--out` that cannot become a store, before any work is done.

    Only a vitreg store (recognised by its root attributes) may be resumed
    or, with `overwrite`, deleted: a folder of the user's files never is.
    """
    local = url.removeprefix("file://")
    if not local.strip():
        raise StoreFormatError("--out is empty; give the path of the store to write")
    if "://" in local:
        return  # a remote store: fsspec decides
    path = Path(local)
    if path.exists() and not path.is_dir():
        raise StoreFormatError(f"--out {url} is a file, not a store folder; choose a new path")
    if path.is_dir() and any(path.iterdir()) and not is_vitreg_store(path):
        found = sorted(p.name for p in path.iterdir())
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise StoreFormatError(
            f"--out {url} is a folder that is not a vitreg store (it holds {shown}); "
            "vitreg never writes into or deletes such a folder: choose a new or empty path")
    parent = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreFormatError(f"--out {url}: no permission to write in {parent}; "
                               "choose a writable path")


def is_vitreg_store(path: Path) -> bool:
    """A folder whose root group carries vitreg's attributes, or a bare Zarr
    group that a creation cut short (or another job starting the same store
    a moment ago) left: `zarr.json` with no attributes and nothing else."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
        attrs = meta.get("attributes") or {}
        if "vitreg" in attrs:
            return True
        return meta.get("node_type") == "group" and not attrs and \
            [p.name for p in path.iterdir()] == ["zarr.json"]
    except (OSError, ValueError, AttributeError):
        return False


def delete_store(url: str) -> None:
    """Delete a vitreg store (and nothing else) so that it can be rewritten."""
    local = url.removeprefix("file://")
    if "://" in local:
        try:
            found = zarr.open_group(store_like(url, "r"), mode="r", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return
        if "vitreg" not in found.attrs:
            raise StoreFormatError(
                f"--overwrite: {url} is not a vitreg store; refusing to delete it")
        zarr.open_group(store_like(url, "w"), mode="w", zarr_format=3)
        return
    path = Path(local)
    if not path.exists():
        return
    if not is_vitreg_store(path):
        raise StoreFormatError(f"--overwrite: {url} is not a vitreg store; refusing to delete it")
    if path.is_symlink():  # empty the store the link points to; keep the link
        for child in path.resolve().iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return
    shutil.rmtree(path)


def remove_partials(url: str) -> list[str]:
    """Delete the `.partial` files a killed local write left behind; return them.

    zarr's LocalStore writes each chunk to `<name>.<uuid>.partial`, then
    renames it, so a kill leaves at most such orphans, never half a chunk.
    """
    root = Path(url.removeprefix("file://"))
    if "://" in url.removeprefix("file://") or not root.is_dir():
        return []
    leftovers = sorted(root.rglob("*.partial"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return [str(p) for p in leftovers]
