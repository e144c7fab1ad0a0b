"""`vitreg verify` names every chunk that is missing, truncated or altered;
an intact store verifies clean; a store without checksums says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from tests.store_edit import random_store
from vitreg.cache import Geometry, StoreFormatError, open_store
from vitreg.cache.cli import run_verify
from vitreg.cli import cli
from vitreg.testing import write_store

GEOM = Geometry(registers=2, grid=(3, 4), dim=8, depth=2, img_size=48)
N = 40


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> Path:
    return random_store(tmp_path_factory.mktemp("intact") / "store.zarr", GEOM, N, 16)


def chunk_files(store: Path) -> list[str]:
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*")
                  if p.is_file() and "/c/" in p.as_posix())


def test_an_intact_store_verifies_clean(intact):
    report = run_verify(str(intact))
    assert report.problems == []
    assert report.notes == [f"{len(chunk_files(intact))} chunks, "
                            f"{report.notes[0].split(', ')[1]}"]
    assert CliRunner().invoke(cli, ["verify", str(intact)]).exit_code == 0


def test_every_chunk_file_ends_with_its_crc32c(intact):
    """Independent of vitreg: the last 4 bytes are CRC-32C of the rest, little-endian."""
    for key in chunk_files(intact):
        data = (intact / key).read_bytes()
        assert int.from_bytes(data[-4:], "little") == google_crc32c.value(data[:-4]), key


def test_one_flipped_byte_in_any_chunk_is_named(intact, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(intact, copy)
    rng = np.random.default_rng(42)
    for key in chunk_files(copy):
        path = copy / key
        original = path.read_bytes()
        data = bytearray(original)
        data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        assert run_verify(str(copy)).problems == [f"{key}: altered (its crc32c does not match "
                                                  "the bytes)"], key
        path.write_bytes(original)
    assert run_verify(str(copy)).problems == []


def test_truncated_and_missing_chunks_are_named(intact, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(intact, copy)
    (copy / "tokens/c/1/0/0").write_bytes((copy / "tokens/c/1/0/0").read_bytes()[:-100])
    (copy / "pooled/cls/c/2/0").unlink()
    problems = run_verify(str(copy)).problems
    assert problems == ["pooled/cls/c/2/0: missing", "tokens/c/1/0/0: truncated "
                        f"({16 * GEOM.tokens * GEOM.dim * 2 + 4 - 100} bytes, expected "
                        f"{16 * GEOM.tokens * GEOM.dim * 2 + 4})"]
    result = CliRunner().invoke(cli, ["verify", str(copy)])
    assert result.exit_code == 1 and "tokens/c/1/0/0: truncated" in result.output


def test_open_store_verify_checks_the_chunks_it_reads(intact, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(intact, copy)
    path = copy / "norms/c/1/0"
    data = bytearray(path.read_bytes())
    data[0] ^= 0x10
    path.write_bytes(bytes(data))
    plain = open_store(str(copy)).reader("norms")[16:32]  # the memory map skips the checksum
    assert not np.array_equal(plain, open_store(str(intact)).reader("norms")[16:32])
    checked = open_store(str(copy), verify=True)
    np.testing.assert_array_equal(checked.reader("norms")[0:16],
                                  open_store(str(intact)).reader("norms")[0:16])
    with pytest.raises(StoreFormatError, match="norms"):
        checked.reader("norms")[16:32]


def test_the_memory_map_reads_the_data_before_the_checksum(intact):
    mapped = open_store(str(intact)).reader("tokens")[:]
    np.testing.assert_array_equal(mapped, zarr.open_group(str(intact), mode="r")["tokens"][:])


def test_a_store_without_checksums_says_so(intact, tmp_path, monkeypatch):
    """Schema 1.1 stores have no crc32c: they open, and verify says what it could not check."""
    monkeypatch.setattr("vitreg.cache.create.COMPRESSORS", ())
    url = write_store(str(tmp_path / "old.zarr"), {"norms": np.ones((N, GEOM.tokens), "f4")},
                      geometry=GEOM, chunk_rows=16, schema_version="1.1")
    root = json.loads(Path(url, "zarr.json").read_text())
    root.pop("consolidated_metadata")  # 1.1 stores had none
    root["attributes"]["vitreg"]["schema_version"] = "1.1"
    Path(url, "zarr.json").write_text(json.dumps(root))
    report = run_verify(url)
    assert report.problems == []
    assert report.notes[0].startswith("checksums absent (schema 1.1): attention, error, key")
    assert open_store(url).reader("norms")[:].sum() == N * GEOM.tokens


def test_an_array_metadata_file_that_differs_from_its_consolidated_copy_is_named(intact, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(intact, copy)
    path = copy / "norms" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["attributes"] = {"edited": True}
    path.write_text(json.dumps(meta))
    assert run_verify(str(copy)).problems == [
        "norms/zarr.json: differs from its copy in the root's consolidated metadata (vitreg "
        "and zarr read the copy)"]
