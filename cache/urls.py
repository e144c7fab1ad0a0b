"""Where a store lives: a path, a `file://`, `http(s)://` or `s3://` URL, or a
`.zip` from `vitreg pack` (local or remote), as the zarr store that reads it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import zarr
import zarr.storage

from .errors import UnsafeStoreError
from .guard import GuardedStore


def store_like(url: str, mode: str) -> Any:
    """A path or URL as zarr takes it. `file://` URLs become local paths (zarr's
    LocalStore makes folders and writes atomically; fsspec's local one does
    neither); a `.zip` from `vitreg pack` opens in place, local or remote."""
    url = str(url)
    if url.startswith("file://"):
        return url.removeprefix("file://")
    if url.endswith(".zip") and mode == "r" and "://" in url:
        return remote_zip(url)
    if url.endswith(".zip") and mode == "r":
        if not Path(url).is_file():
            raise FileNotFoundError(url)
        try:
            with zipfile.ZipFile(url) as zf:
                check_zip_members(zf, url)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise UnsafeStoreError(f"{url} is not a readable zip ({exc}): cut short or not a "
                                   "zip; copy it again, or pack the store again") from exc
        return zarr.storage.ZipStore(url, mode="r")
    return url


#: Members a zip store may have: a store of 10^9 rows in 16 MiB chunks has fewer.
MAX_ZIP_MEMBERS = 10**7


def check_zip_members(zf: zipfile.ZipFile, url: str) -> None:
    """Refuse a zip whose members are compressed (a deflated member may inflate
    without bound; `vitreg pack` stores them) or claim another size than they hold."""
    members = zf.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise UnsafeStoreError(f"{url}: {len(members):,} zip members, more than any store "
                               "has; refusing to read it")
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsafeStoreError(
                f"{url}: zip member {info.filename} is compressed; `vitreg pack` stores members "
                "uncompressed and a reader refuses compressed ones (a member could inflate "
                "without bound): repack the folder with `vitreg pack`")
        if info.file_size != info.compress_size:
            raise UnsafeStoreError(f"{url}: zip member {info.filename} claims {info.file_size} "
                                   f"bytes but holds {info.compress_size}; refusing to read it")


def remote_zip(url: str) -> zarr.storage.FsspecStore:
    """A zip at an http(s) or s3 URL, read in place: fsspec reads its central
    directory, then each member, with range requests (members are stored)."""
    import fsspec
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    fs = fsspec.filesystem("zip", fo=url)
    check_zip_members(fs.zip, url)
    return zarr.storage.FsspecStore(AsyncFileSystemWrapper(fs, asynchronous=True), path="",
                                    read_only=True)


def guarded(url: str) -> GuardedStore:
    """The zarr store zarr would open for reading `url`, inside a `GuardedStore`."""
    from zarr.core.sync import sync
    from zarr.storage._common import make_store_path

    return GuardedStore(sync(make_store_path(store_like(url, "r"), mode="r")).store, where=url)


def has_root_metadata(url: str) -> bool:
    """Whether a `zarr.json` is there at all (so that zarr's "no group" means
    "unreadable metadata"); False when even that cannot be asked."""
    from zarr.core.sync import sync
    from zarr.storage._common import make_store_path

    try:
        path = sync(make_store_path(store_like(url, "r"), mode="r"))
        return bool(sync((path / "zarr.json").exists()))
    except Exception:  # noqa: BLE001 (any failure means: cannot tell)
        return False


def not_found_message(url: str) -> str:
    """Why no store opened at `url`: nothing there, or something that is not Zarr v3."""
    if "://" not in url and not os.path.exists(url):
        return f"no such file or folder: {url!r} (check the path)"
    return f"no Zarr v3 store at {url!r} (vitreg writes Zarr v3; a v2 store is refused)"
