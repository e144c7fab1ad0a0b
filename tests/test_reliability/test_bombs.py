"""Resource bombs are refused within bounded memory: a compressed chunk that
inflates past its array's chunk size, a compressed zip member, and files
reached through a symbolic link that leads out of the store."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import pytest
from click.testing import CliRunner
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

from vitreg.cache import Geometry, UnsafeStoreError, open_store
from vitreg.cache.pack import run_pack
from vitreg.cli import cli
from vitreg.testing import write_store

GEOM = Geometry(registers=0, grid=(2, 2), dim=4, depth=1, img_size=28)
BOMB_BYTES = 256 * 2**20  # what a bomb chunk inflates to
#: The most a refused read may allocate (Python's allocations, traced): the
#: guard inflates gzip in 1 MiB steps and reads blosc/zstd sizes from headers.
BOUND = 8 * 2**20

CODECS = {"gzip": (GzipCodec(level=1), numcodecs.GZip(level=1)),
          "zstd": (ZstdCodec(level=1), numcodecs.Zstd(level=1)),
          "blosc": (BloscCodec(), numcodecs.Blosc())}


@pytest.mark.parametrize("name", list(CODECS))
def test_a_chunk_that_inflates_past_its_array_is_refused_in_bounded_memory(
        tmp_path, monkeypatch, name):
    codec, encoder = CODECS[name]
    monkeypatch.setattr("vitreg.cache.create.COMPRESSORS", (codec, Crc32cCodec()))
    norms = np.ones((8, GEOM.tokens), np.float32)
    url = write_store(str(tmp_path / "s.zarr"), {"norms": norms}, geometry=GEOM, chunk_rows=4)
    np.testing.assert_array_equal(open_store(url).array("norms")[:], norms)  # intact: reads
    zeros = np.zeros(BOMB_BYTES // 8, np.float64) if name != "blosc" else \
        np.zeros(BOMB_BYTES // 2 // 8, np.float64)  # blosc caps a buffer at 2 GB; half is plenty
    payload = encoder.encode(zeros)
    assert len(payload) < BOMB_BYTES // 100  # small on disk
    crc = google_crc32c.value(bytes(payload)).to_bytes(4, "little")
    Path(url, "norms", "c", "1", "0").write_bytes(bytes(payload) + crc)
    del zeros
    store = open_store(url)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeStoreError, match=r"norms/c/1/0 decodes to more than 80 bytes"):
            store.array("norms")[:]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < BOUND, peak


def test_a_vlen_chunk_claiming_billions_of_strings_is_refused(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"), {"norms": np.ones((8, GEOM.tokens), np.float32)},
                      geometry=GEOM, chunk_rows=4)
    path = Path(url, "key", "c", "0")
    body = (2**31).to_bytes(4, "little") + b"\x00" * 12
    path.write_bytes(body + google_crc32c.value(body).to_bytes(4, "little"))
    with pytest.raises(UnsafeStoreError, match="claims 2147483648 strings"):
        open_store(url).array("key")[:]


def test_a_zip_with_a_compressed_member_is_refused_before_reading(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"), {"norms": np.ones((8, GEOM.tokens), np.float32)},
                      geometry=GEOM, chunk_rows=4)
    packed = tmp_path / "s.zip"
    run_pack(url, str(packed))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(packed) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "norms/c/0/0":
                dst.writestr(info.filename, b"\0" * BOMB_BYTES, compress_type=zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(info, data)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(UnsafeStoreError, match="norms/c/0/0 is compressed"):
        open_store(str(bomb))
    result = CliRunner().invoke(cli, ["info", str(bomb)])
    assert result.exit_code == 2 and "repack" in result.output


@pytest.fixture
def linked(tmp_path) -> tuple[Path, Path]:
    """A store, and a file of the right size outside it (a secret to leak)."""
    url = write_store(str(tmp_path / "s.zarr"), {"norms": np.ones((8, GEOM.tokens), np.float32)},
                      geometry=GEOM, chunk_rows=4)
    chunk = Path(url, "norms", "c", "1", "0")
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"S" * chunk.stat().st_size)
    return Path(url), secret


def test_a_chunk_linked_out_of_the_store_is_refused_by_every_reader(linked, tmp_path):
    store, secret = linked
    chunk = store / "norms" / "c" / "1" / "0"
    chunk.unlink()
    chunk.symlink_to(secret)
    for verify in (False, True):  # memory maps, then zarr
        with pytest.raises(UnsafeStoreError, match="symbolic link .* outside the store"):
            open_store(str(store), verify=verify).reader("norms")[:]
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        run_pack(str(store), str(tmp_path / "p.zip"))
    assert not (tmp_path / "p.zip").exists()


def test_a_folder_linked_out_of_the_store_is_refused(linked, tmp_path):
    store, _ = linked
    outside = tmp_path / "elsewhere"
    os.rename(store / "norms" / "c", outside)
    (store / "norms" / "c").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeStoreError, match="outside the store"):
        open_store(str(store)).reader("norms")[:]
    with pytest.raises(UnsafeStoreError, match="outside the store"):
        open_store(str(store)).array("norms")[:]
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        run_pack(str(store), str(tmp_path / "p.zip"))


def test_links_inside_the_store_and_a_linked_store_folder_still_read(linked, tmp_path):
    store, _ = linked
    one, zero = store / "norms" / "c" / "1" / "0", store / "norms" / "c" / "0" / "0"
    one.unlink()
    one.symlink_to(zero)  # the same bytes, inside the store
    alias = tmp_path / "alias.zarr"
    alias.symlink_to(store, target_is_directory=True)  # the user's own link to a store
    for url in (store, alias):
        assert open_store(str(url)).reader("norms")[:].shape == (8, GEOM.tokens)
        assert open_store(str(url)).array("norms")[:].shape == (8, GEOM.tokens)
