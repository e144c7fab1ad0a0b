"""`vitreg pack`: a complete store into one zip that readers open directly.

Members are stored, not recompressed: chunks are already compressed where it
pays, and a stored member can be read in place.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from vitreg.core.paths import check_not_inside

from .errors import IncompleteStoreError, UnsafeStoreError, VitregError
from .guard import within
from .reader import Store


def run_pack(store: str, out: str) -> int:
    """Write `out` (a .zip) from the local store `store`; return the member count."""
    check_not_inside(out, [store], flag="OUT")
    opened = Store(store, allow_partial=True)
    if not opened.complete:
        raise IncompleteStoreError(f"{store} is incomplete: finish it before packing")
    root = Path(store.removeprefix("file://"))
    if not root.is_dir():
        raise VitregError(f"vitreg pack reads a local store folder; {store} is not one")
    shards = [s.get("url", "") for s in opened.meta.get("shards") or []
              if isinstance(s, dict) and isinstance(s.get("url"), str)]
    check_not_inside(out, shards, flag="OUT")
    files = store_files(root)
    tmp = f"{out}.{os.getpid()}.partial"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in files:
            zf.write(path, arcname=path.relative_to(root).as_posix())
    os.replace(tmp, out)  # readers never see half a zip
    return len(files)


def store_files(root: Path) -> list[Path]:
    """Every file of the store folder `root`, in order; a symbolic link that
    leads outside the folder, or to a folder, is refused (pack would copy
    what it points to)."""
    real = os.path.realpath(root)
    files = []
    for folder, dirs, names in os.walk(root):
        for name in sorted(dirs + names):
            path = Path(folder, name)
            if path.is_symlink() and (path.is_dir() or not within(real, str(path))):
                raise UnsafeStoreError(
                    f"{path} is a symbolic link to {os.path.realpath(path)}; vitreg pack copies "
                    "only files inside a store, not links to folders or to files outside it "
                    "(copy them in instead)")
        files += [Path(folder, n) for n in names if not n.endswith(".partial")]
    return sorted(p for p in files if p.is_file())
