"""A store is data: the shard URLs it records are never run (`pipe:`), and
are reopened at all only when the user confirms them or names the shards."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import bare_store as make_bare_store
from tests.servers import static_server
from vitreg.cache import open_store
from vitreg.cli import cli
from vitreg.core import InputError, UsageError
from vitreg.probe import run_probe
from vitreg.probe.gather import patch_geometry
from vitreg.probe.redecode import decode_targets, unsafe_recorded_url

FAST = {"epochs": 1, "min_steps": 0, "lr": 1e-2, "batch_size": 64, "decode_workers": 1}


@pytest.fixture(scope="module")
def bare_store(tmp_path_factory):
    """A store without pixels, extracted from one local shard of 6 images."""
    store, shard = make_bare_store(tmp_path_factory.mktemp("trust"))
    return store, str(shard)


def _hostile_copy(bare_store, tmp_path, url: str):
    """The store with its recorded shard URL replaced by `url` (a collaborator's edit)."""
    copy = tmp_path / "hostile.zarr"
    shutil.copytree(bare_store[0], copy)
    root = zarr.open_group(str(copy), mode="r+")
    meta = dict(root.attrs["vitreg"])
    meta["shards"] = [dict(meta["shards"][0], url=url)]
    meta.pop("shard_digests", None)
    root.attrs["vitreg"] = meta
    return copy


def _all_patches(store):
    p, grid = patch_geometry(store)
    ok = store.ok_rows()
    n = grid[0] * grid[1]
    return np.repeat(ok, n), np.tile(np.arange(n), ok.size)


def test_pipe_url_recorded_in_a_local_store_runs_nothing(bare_store, tmp_path):
    marker = tmp_path / "MARKER"
    hostile = _hostile_copy(bare_store, tmp_path, f"pipe:touch {marker}")
    for trust in (False, True):
        with pytest.raises(InputError, match="pipe: URL would run a command"):
            run_probe("reconstruct", str(hostile), trust_recorded_shards=trust, **FAST)
    result = CliRunner().invoke(cli, ["probe", "reconstruct", str(hostile), "--out",
                                      str(tmp_path / "r.json"), "--trust-recorded-shards",
                                      "--epochs", "1", "--min-steps", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "never opens those from a store" in " ".join(result.output.split())
    assert not marker.exists() and not (tmp_path / "r.json").exists()


def test_pipe_url_recorded_in_a_store_served_over_http_runs_nothing(bare_store, tmp_path):
    marker = tmp_path / "MARKER"
    hostile = _hostile_copy(bare_store, tmp_path, f"pipe:touch {marker}")
    with static_server(tmp_path) as (base, _sent):
        with pytest.raises(InputError, match="pipe: URL would run a command"):
            run_probe("reconstruct", f"{base}/{hostile.name}", trust_recorded_shards=True,
                      **FAST)
    assert not marker.exists()


def test_recorded_local_shards_need_the_users_confirmation(bare_store):
    store = open_store(str(bare_store[0]))
    rows, patches = _all_patches(store)
    with pytest.raises(UsageError, match="--trust-recorded-shards.*--shards PATTERN"):
        decode_targets(store, rows, patches, workers=1)
    confirmed = decode_targets(store, rows, patches, trust_recorded=True, workers=1)
    named = decode_targets(store, rows, patches, shards=bare_store[1], workers=1)
    np.testing.assert_array_equal(confirmed, named)


def test_pipe_from_the_users_own_command_line_is_accepted(bare_store, tmp_path):
    """--shards is the user's own text: `pipe:cat FILE` reads the same bytes."""
    store = open_store(str(_hostile_copy(bare_store, tmp_path, f"pipe:touch {tmp_path}/M")))
    rows, patches = _all_patches(store)
    piped = decode_targets(store, rows, patches, shards=f"pipe:cat {bare_store[1]}", workers=1)
    direct = decode_targets(store, rows, patches, shards=bare_store[1], workers=1)
    np.testing.assert_array_equal(piped, direct)
    assert not (tmp_path / "M").exists()


@pytest.mark.parametrize("url, unsafe", [
    ("pipe:touch x", True), ("PIPE:touch x", True), ("gs://bucket/a.tar", True),
    ("sftp://host/a.tar", True), ("hf://datasets/x/a.tar", True), ("-", True), ("", True),
    ("/data/a.tar\n", True), ("ais://b/a.tar", True), ("scp://h/a.tar", True),
    ("/data/a.tar", False), ("rel/a.tar", False), ("file:///data/a.tar", False),
    ("http://host/a.tar", False), ("https://host/a.tar", False), ("s3://b/a.tar", False),
])
def test_only_files_and_http_s3_urls_may_be_reopened_from_a_store(url, unsafe):
    assert unsafe_recorded_url(url) is unsafe
