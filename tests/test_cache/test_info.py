"""`vitreg info` in an 80-column terminal (issue #28): each array's whole shape on its
line, numbers with a few significant digits and their unit, never a raw float."""

from __future__ import annotations

import re

import numpy as np
import zarr
from click.testing import CliRunner

from vitreg.cache import Geometry
from vitreg.cli import cli
from vitreg.testing import write_store

GEOMETRY = Geometry(registers=4, grid=(57, 57), dim=64, depth=24, img_size=798)


def _store(tmp_path) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(42)
    n, t = 3, GEOMETRY.tokens
    norms = rng.uniform(1, 30, (n, t)).astype(np.float32)
    url = write_store(str(tmp_path / "s.zarr"), {
        "norms": norms, "tokens": rng.normal(size=(n, t, GEOMETRY.dim)).astype(np.float16),
        "blocks/qkv_norms": rng.uniform(1, 3, (n, 24, 3, t)).astype(np.float16)},
        geometry=GEOMETRY, model="vit_large_patch14_reg4_dinov2.lvd142m")
    return url, norms


def _significant(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))


def test_info_at_80_columns_keeps_shapes_whole_and_numbers_short(tmp_path):
    url, norms = _store(tmp_path)
    result = CliRunner().invoke(cli, ["info", url], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines[1:]) <= 80, result.output  # [0]: the path
    root = zarr.open_group(url, mode="r")
    names = ["norms", "tokens", "blocks/qkv_norms", "pooled/registers", "key"]
    for name in names:
        line = next(x for x in lines if x.split() and x.split()[0] == name)
        shape = "×".join(map(str, root[name].shape))
        assert f" {shape} " in line, (name, shape, line)
    floats = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", result.output)
    assert floats and all(_significant(f) <= 4 for f in floats), floats
    # the threshold, 98th percentile of the patch-token norms computed here
    expected = np.percentile(norms[:, GEOMETRY.prefix:], 98)
    shown = re.search(r"outlier threshold\s+([\d.]+) \(L2 norm", result.output)
    assert shown and abs(float(shown.group(1)) - expected) <= 0.01 * expected
    assert re.search(r"image size\s+798 px", result.output)
    assert re.search(r"tokens .* \d+\.\d MiB .*x$", result.output, re.M)


def test_info_in_a_narrow_terminal_drops_a_column_rather_than_split_a_shape(tmp_path):
    url, _ = _store(tmp_path)
    result = CliRunner().invoke(cli, ["info", url], env={"COLUMNS": "72"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("tokens "))
    assert f" 3×{GEOMETRY.tokens}×{GEOMETRY.dim} " in line, line
    header = next(x for x in result.output.splitlines() if x.startswith("array "))
    assert header.split() == ["array", "shape", "dtype", "chunks", "on", "disk", "ratio"]
