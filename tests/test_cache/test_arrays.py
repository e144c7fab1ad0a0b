"""`StoreArray`, the cache's one array type: it reads what zarr reads (checked
against zarr opened directly on the same folder), raises vitreg's errors for
a missing or damaged chunk, and is all a reader ever gets (no zarr object)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from vitreg.cache import Geometry, StoreArray, StoreFormatError, VitregError, names, open_store
from vitreg.cache.errors import MissingChunkError
from vitreg.cache.schema import ARRAYS
from vitreg.testing import write_store

GEOM = Geometry(registers=1, grid=(2, 3), dim=8, depth=3, img_size=42, chosen=(0, 1))
N, CHUNK = 37, 8
RNG = np.random.default_rng(42)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    """A complete store with tokens, norms, labels, keys and two chosen blocks."""
    arrays = {
        names.TOKENS: RNG.normal(size=(N, GEOM.tokens, GEOM.dim)).astype(np.float16),
        names.NORMS: RNG.random((N, GEOM.tokens), dtype=np.float32),
        names.LABEL: RNG.integers(0, 5, N).astype(np.int32),
        names.KEY: np.array([f"k{i:03d}" for i in range(N)], dtype=object),
        names.CHOSEN_TOKENS: RNG.normal(size=(N, 2, GEOM.tokens, GEOM.dim)).astype(np.float16),
        names.CHOSEN_NORMS: RNG.random((N, 2, GEOM.tokens), dtype=np.float32),
    }
    url = str(tmp_path_factory.mktemp("arrays") / "s.zarr")
    return write_store(url, arrays, geometry=GEOM, chunk_rows=CHUNK, blocks=[0, 1])


def direct(url: str, name: str) -> np.ndarray:
    """The whole array as zarr itself reads it, independently of the cache."""
    return zarr.open_group(url, mode="r")[name][:]


KEYS = [np.s_[:], np.s_[3:20], np.s_[9:14], np.s_[30:], np.s_[5], np.s_[-1], np.s_[2:30:3],
        np.s_[4:11, 2], np.s_[[0, 9, 36]], np.s_[10:12, 1:3]]


@pytest.mark.parametrize("how", ["array", "reader"])
@pytest.mark.parametrize("name", [names.TOKENS, names.NORMS, names.LABEL])
def test_reads_equal_zarr(store_url, how, name):
    got = getattr(open_store(store_url), how)(name)
    ref = direct(store_url, name)
    assert isinstance(got, StoreArray) and not isinstance(got, zarr.Array)
    assert (got.shape, got.dtype, len(got), got.ndim) == (ref.shape, ref.dtype, N, ref.ndim)
    assert got.chunks[0] == CHUNK
    for key in KEYS[: None if ref.ndim > 1 else 7]:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=str(key))
    rows = np.array([0, 8, 9, 36])
    np.testing.assert_array_equal(got.get_orthogonal_selection((rows,)), ref[rows])


def test_strings_read_as_zarr_reads_them(store_url):
    got = open_store(store_url).array(names.KEY)
    assert list(got[:]) == list(direct(store_url, names.KEY)) == [f"k{i:03d}" for i in range(N)]


def test_array_hands_out_fresh_arrays_reader_may_hand_out_views(store_url):
    """`array` reads as zarr did (a new, writable array); `reader` may map."""
    store = open_store(store_url)
    assert store.array(names.TOKENS)[9:14].flags.writeable
    assert store.reader(names.TOKENS).mapped and not store.array(names.TOKENS).mapped


def test_a_chosen_block_reads_its_slot_of_the_chosen_array(store_url):
    store = open_store(store_url)
    ref = direct(store_url, names.CHOSEN_TOKENS)[:, 0]
    for how in ("array", "reader"):
        first = getattr(store.at_block(1), how)(names.TOKENS)
        assert first.shape == ref.shape and first.chunks[0] == CHUNK
        for key in (np.s_[:], np.s_[3:20], np.s_[5], np.s_[4:11, 2], np.s_[[1, 30]]):
            np.testing.assert_array_equal(first[key], ref[key], err_msg=str(key))
        np.testing.assert_array_equal(first.get_orthogonal_selection((np.array([2, 33]),)),
                                      ref[[2, 33]])
    np.testing.assert_array_equal(store.at_block(2).array(names.NORMS)[:],
                                  direct(store_url, names.CHOSEN_NORMS)[:, 1])


def test_no_public_attribute_of_a_store_or_its_arrays_is_zarr(store_url):
    store = open_store(store_url)
    held = [store, *(store.array(name) for name in store.names),
            *(store.reader(name) for name in store.names)]
    for thing in held:
        for attr in dir(thing):
            if attr.startswith("_") or attr in ("status", "to_xarray"):
                continue
            value = getattr(thing, attr)
            module = type(value).__module__ or ""
            assert not module.startswith("zarr"), f"{type(thing).__name__}.{attr} is {module}"


@pytest.mark.parametrize("how", ["array", "reader"])
def test_a_missing_chunk_raises_vitregs_error(store_url, tmp_path, how):
    """The guard: a chunk a complete store lacks is an error, never zeros."""
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(store_url, copy)
    (copy / names.NORMS / "c" / "1" / "0").unlink()  # rows 8-15
    array = getattr(open_store(str(copy)), how)(names.NORMS)
    np.testing.assert_array_equal(array[0:8], direct(store_url, names.NORMS)[0:8])
    for key in (np.s_[8:9], np.s_[:], np.s_[12], np.s_[[3, 10]]):
        with pytest.raises(MissingChunkError, match="missing from a complete store"):
            array[key]
    with pytest.raises(VitregError):
        array.get_orthogonal_selection((np.array([9]),))


def test_a_damaged_chunk_raises_vitregs_error(store_url, tmp_path):
    """Altered bytes fail zarr's crc32c: a StoreFormatError naming the array."""
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(store_url, copy)
    chunk = copy / names.LABEL / "c" / "2"
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreFormatError, match=r"copy\.zarr/label.*damaged"):
        open_store(str(copy)).array(names.LABEL)[16:24]


def test_every_array_name_has_one_constant():
    constants = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(ARRAYS)
    assert set(names.ROW_META) < set(ARRAYS) and names.ROW_META[-1] == names.STATUS
    assert set(names.BLOCK_ARRAYS.values()) | set(names.POOLED.values()) < set(ARRAYS)


def test_schema_fallbacks_are_the_stores(tmp_path):
    """[CLS] before the final norm: `tokens`, else `sampled/prefix`, else (a
    sampled store of schema < 1.4) `pooled/cls`; patch tokens likewise."""
    g = Geometry(registers=0, grid=(2, 2), dim=4, depth=1, img_size=8)
    n, k = 4, 2
    full = {names.TOKENS: np.zeros((n, g.tokens, g.dim), np.float16)}
    sampled = {names.SAMPLED_INDEX: np.zeros((n, k), np.int16),
               names.SAMPLED_TOKENS: np.zeros((n, k, g.dim), np.float16)}
    new = {**sampled, names.SAMPLED_PREFIX: np.zeros((n, g.prefix, g.dim), np.float16)}
    found = []
    for i, arrays in enumerate([full, new, sampled, {names.NORMS: np.zeros((n, g.tokens))}]):
        mode = "all" if i == 0 else f"sampled:{k}" if i < 3 else "none"
        url = write_store(str(tmp_path / f"{i}.zarr"), arrays, geometry=g, chunk_rows=8,
                          sample_k=k if 0 < i < 3 else 0, token_mode=mode)
        store = open_store(url)
        found.append((store.cls_source(), store.token_source()))
    assert found == [(names.TOKENS, names.TOKENS), (names.SAMPLED_PREFIX, names.SAMPLED_TOKENS),
                     (names.POOLED_CLS, names.SAMPLED_TOKENS), (names.POOLED_CLS, None)]
