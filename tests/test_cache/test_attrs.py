"""Root attributes: built from one table, and a store lacking one says which."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from vitreg.cache import Geometry
from vitreg.cache.attrs import WRITER_KEYS, root_attrs
from vitreg.cache.cli import info_command
from vitreg.testing import write_store


def test_root_attrs_refuses_missing_and_unknown_keys():
    values = dict.fromkeys(WRITER_KEYS, None)
    del values["versions"]
    attrs = root_attrs(versions={"timm": "x", "torch": "y"}, **values)
    assert list(attrs) == list(WRITER_KEYS)
    assert set(attrs["versions"]) == {"vitreg", "timm", "torch", "zarr", "python"}
    with pytest.raises(TypeError, match="missing"):
        root_attrs(versions={}, model="m")
    with pytest.raises(TypeError, match="unknown"):
        root_attrs(versions={}, **values, colour="blue")


def test_a_store_without_geometry_attributes_says_which(tmp_path):
    geom = Geometry(registers=1, grid=(2, 2), dim=4, depth=1, img_size=28)
    url = write_store(str(tmp_path / "s"), {"norms": np.ones((3, geom.tokens), np.float32)},
                      geometry=geom)
    root = zarr.open_group(url, mode="r+")
    meta = dict(root.attrs["vitreg"])
    del meta["registers"]
    root.attrs["vitreg"] = meta
    result = CliRunner().invoke(info_command, [url])
    assert result.exit_code == 2, result.output
    assert "'registers'" in result.output and "Traceback" not in result.output
    assert "Error: " in result.output
