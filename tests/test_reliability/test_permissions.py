"""Results and reports are written with the umask's permissions (collaborators
on a shared file system read them), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from vitreg.cache import Geometry
from vitreg.cli import cli
from vitreg.core.files import atomic_write_text, current_umask, write_json
from vitreg.testing import write_planted_store


@pytest.fixture
def umask():
    before = os.umask(0o022)
    os.umask(before)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    assert mode(atomic_write_text(tmp_path / "a.txt", "x")) == 0o666 & ~mask
    assert mode(write_json(tmp_path / "b.json", {"a": 1})) == 0o666 & ~mask
    plain = tmp_path / "c.txt"
    plain.write_text("x")  # what `open` gives: the reference
    assert mode(plain) == 0o666 & ~mask


def test_command_results_are_readable_by_the_group(tmp_path, umask):
    umask(0o022)
    store = write_planted_store(str(tmp_path / "s.zarr"), n_images=48,
                                geometry=Geometry(registers=1, grid=(4, 4), dim=8, depth=1,
                                                  img_size=32), seed=0, chunk_rows=8,
                                with_pixels=False)
    out = tmp_path / "out"
    for args in (["probe", "position", store, "--out", str(out / "r.json"), "--epochs", "1",
                  "--normals", "8"],
                 ["analysis", "norms", store, "--out", str(out / "norms"), "--images", "4"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and {p.name: mode(p) for p in written} == {p.name: 0o644 for p in written}
