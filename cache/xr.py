"""A store as one lazy `xarray.Dataset`, with coordinates that say what each
index is: the image's key and label, each token's kind (cls / register /
patch) and grid row and column, each patch's row and column, the q/k/v axis.

Plain xarray opens a store too (`xr.open_zarr(path)`, one group at a time:
`group="pooled"`), but without these coordinates; a packed zip needs
`zarr.storage.ZipStore` or an fsspec `zip::` URL (README, "Opening a store
with zarr and xarray").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .schema import Geometry

#: Arrays of one value per image that become coordinates of `image`.
IMAGE_COORDS = ("key", "label")


def token_coords(g: Geometry) -> dict[str, tuple[str, np.ndarray]]:
    """`token_kind`, `token_row`, `token_col` along `token` (the model's order:
    its prefix tokens as the store's layout names them (cls, register,
    distillation), then the patches row-major; -1 for the prefix's row/col)."""
    kinds = [*g.layout, *["patch"] * g.patches]
    row, col = patch_grid(g)
    pad = np.full(g.prefix, -1, dtype=np.int32)
    return {"token_kind": ("token", np.array(kinds, dtype=object)),
            "token_row": ("token", np.concatenate([pad, row])),
            "token_col": ("token", np.concatenate([pad, col]))}


def patch_grid(g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Grid row and column of each patch, row-major."""
    rows, cols = np.divmod(np.arange(g.patches, dtype=np.int32), np.int32(g.grid[1]))
    return rows.astype(np.int32), cols.astype(np.int32)


def with_coords(ds: Any, g: Geometry) -> Any:
    """`ds` with the store's coordinates on whichever dimensions it has."""
    coords: dict[str, tuple[str, np.ndarray]] = {}
    if "token" in ds.dims:
        coords.update(token_coords(g))
    if "patch" in ds.dims:
        row, col = patch_grid(g)
        coords.update(patch_row=("patch", row), patch_col=("patch", col))
    if "qkv" in ds.dims:
        coords["qkv"] = ("qkv", np.array(["q", "k", "v"], dtype=object))
    if "register" in ds.dims:
        coords["register"] = ("register", np.arange(ds.sizes["register"], dtype=np.int32))
    ds = ds.assign_coords(coords)
    return ds.set_coords([name for name in IMAGE_COORDS if name in ds.data_vars])


def store_dataset(root: Any, g: Geometry) -> Any:
    """Every array of the zarr group `root` (groups flattened to `group/name`), lazily."""
    import xarray as xr

    def open_one(group: str | None) -> xr.Dataset:
        # cache=False: xarray would otherwise keep every array it touched
        # in memory, `tokens` included.
        return xr.open_dataset(root.store, engine="zarr", group=group, consolidated=None,
                               cache=False, zarr_format=3, chunks=None)

    datasets = [open_one(None)]
    for name, _ in root.groups():
        ds = open_one(name)
        datasets.append(ds.rename({v: f"{name}/{v}" for v in ds.data_vars}))
    merged = xr.merge(datasets, compat="override", join="outer")
    return with_coords(merged, g)
