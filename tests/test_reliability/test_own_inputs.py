"""No command writes into or over its own inputs: probe and analysis --out
inside a store, pack onto its store or onto one of the store's shards."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import bare_store
from vitreg.cli import cli


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    return bare_store(tmp_path_factory.mktemp("own"))


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def refused(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert words in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("make_args, words", [
    (lambda s, t: ["probe", "position", s, "--out", s / "zarr.json"], "lies inside the input"),
    (lambda s, t: ["probe", "position", s, "--out", s / "new" / "r.json"], "lies inside"),
    (lambda s, t: ["probe", "position", t / "elsewhere.zarr", "--val", s, "--out",
                   s / "r.json"], "lies inside"),
    (lambda s, t: ["probe", "position", f"file://{s}", "--out", s / "r.json"], "lies inside"),
    (lambda s, t: ["analysis", "norms", s, "--out", s / "figures"], "lies inside the input"),
    (lambda s, t: ["analysis", "report", s, "--out", s], "is the input"),
    (lambda s, t: ["pack", s, s / "s.zip"], "OUT"),
    (lambda s, t: ["pack", s, t / "part-000.tar"], "is the input"),
])
def test_a_command_never_writes_into_or_over_its_input(store, make_args, words):
    folder, shard = store
    before = (digest(folder), digest(shard))
    refused(make_args(folder, folder.parent), words)
    assert (digest(folder), digest(shard)) == before


def test_a_symlink_to_the_store_is_seen_through(store, tmp_path):
    folder, _ = store
    link = tmp_path / "link.zarr"
    os.symlink(folder, link)
    before = digest(folder)
    refused(["probe", "position", link, "--out", folder / "r.json"], "lies inside")
    refused(["probe", "position", folder, "--out", link / "r.json"], "lies inside")
    assert digest(folder) == before
