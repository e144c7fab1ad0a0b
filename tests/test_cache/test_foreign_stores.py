"""A store from elsewhere (another writer, an older or newer version, a damaged
copy) gets a sentence, never a traceback: every open or read either works or
raises a VitregError that names what is wrong."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store_edit import edit_array_meta, random_store
from vitreg.cache import Geometry, StoreFormatError, VitregError, open_store
from vitreg.cache.cli import run_info, run_verify

GEOM = Geometry(registers=1, grid=(2, 3), dim=4, depth=2, img_size=12)
N = 20
ROOT_KEYS = ["schema_version", "complete", "registers", "grid", "embed_dim", "depth", "img_size",
             "prefix_tokens", "token_mode", "failed_rows", "outlier_threshold", "stored_bytes",
             "model", "weights"]
ARRAY_KEYS = ["shape", "data_type", "chunk_grid", "codecs", "fill_value", "dimension_names",
              "chunk_key_encoding", "zarr_format", "node_type"]
ARRAYS = ["status", "norms", "tokens", "key", "pooled/cls"]
ODD_VALUES = [None, -1, 0, 3, 10**9, 1.5, True, "x", "", [], [1], [2, 3, 4], {}, {"a": 1}]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    return random_store(tmp_path_factory.mktemp("valid") / "store.zarr", GEOM, N, 8)


def read_everything(url: str) -> None:
    store = open_store(url, allow_partial=True)
    store.counts()
    store.threshold()
    numbers = [n for n in store.names if store.array(n).dtype.kind in "biuf"]
    for _ in store.batches(numbers):
        pass
    run_info(url)
    run_verify(url)


def mutate_root(url: Path, key: str, value: object, delete: bool) -> None:
    path = url / "zarr.json"
    meta = json.loads(path.read_text())
    if delete:
        meta["attributes"]["vitreg"].pop(key, None)
    else:
        meta["attributes"]["vitreg"][key] = value
    path.write_text(json.dumps(meta))


def mutate_array(url: Path, array: str, key: str, value: object, delete: bool) -> None:
    edit_array_meta(str(url), array,
                    lambda m: m.pop(key, None) if delete else m.update({key: value}))


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


MUTATIONS = st.one_of(
    st.tuples(st.just("root"), st.sampled_from(ROOT_KEYS), st.sampled_from(ODD_VALUES),
              st.booleans()),
    st.tuples(st.just("array"), st.sampled_from(ARRAYS), st.sampled_from(ARRAY_KEYS),
              st.sampled_from(ODD_VALUES), st.booleans()),
    st.tuples(st.just("truncate"), st.sampled_from(["zarr.json", "norms/zarr.json",
                                                    "norms/c/1/0", "tokens/c/0/0/0",
                                                    "key/c/2"]),
              st.floats(0.0, 0.99)),
)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=MUTATIONS)
def test_a_mutated_store_works_or_says_what_is_wrong(valid, mutation):
    with tempfile.TemporaryDirectory() as tmp:
        url = Path(tmp) / "store.zarr"
        shutil.copytree(valid, url)
        kind, *args = mutation
        if kind == "root":
            mutate_root(url, *args)
        elif kind == "array":
            mutate_array(url, *args)
        else:
            truncate(url / args[0], args[1])
        try:
            read_everything(str(url))
        except VitregError as exc:
            assert str(exc).strip(), mutation  # a sentence, not an empty message


@pytest.mark.parametrize("key", ["registers", "grid", "embed_dim", "prefix_tokens"])
def test_a_missing_attribute_is_named(valid, tmp_path, key):
    url = tmp_path / "store.zarr"
    shutil.copytree(valid, url)
    mutate_root(url, key, None, delete=True)
    with pytest.raises(StoreFormatError, match=f"lack '{key}'|'{key}' is None"):
        open_store(str(url))


def test_an_array_that_disagrees_with_the_attributes_is_named(valid, tmp_path):
    url = tmp_path / "store.zarr"
    shutil.copytree(valid, url)
    mutate_root(url, "embed_dim", 5, delete=False)
    with pytest.raises(StoreFormatError, match="has shape .* but the attributes say"):
        open_store(str(url))


def test_a_truncated_root_metadata_file_is_named(valid, tmp_path):
    url = tmp_path / "store.zarr"
    shutil.copytree(valid, url)
    truncate(url / "zarr.json", 0.5)
    with pytest.raises(VitregError, match="metadata zarr cannot parse"):
        open_store(str(url))
