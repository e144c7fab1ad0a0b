"""Faults on the way out and odd values: clear stops, resumable stores."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tests.tiny_models  # noqa: F401
from tests.conftest import encode, image_samples, write_shard
from vitreg.cache import open_store, shardfile
from vitreg.extract.capture import Float16OverflowError
from vitreg.extract.cli import extract_command
from vitreg.extract.run import run_extract


def test_no_space_left_stops_clearly_and_the_rerun_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    shard = write_shard(tmp_path / "s.tar", image_samples(20))
    args = [shard, "--model", "tiny_dinov2_reg4", "--weights", "random", "--batch-size", "4",
            "--chunk-rows", "4", "--no-progress"]
    ref = CliRunner().invoke(extract_command, [*args, "--out", str(tmp_path / "ref")])
    assert ref.exit_code == 0
    # chunk files are written by `cache.shardfile` (zarr's LocalStore.set
    # writes the metadata only): the disk fills up under it, mid-run
    real_write = shardfile._pwritev_all
    calls = {"n": 0}

    def failing_write(fd, buffers, offset):
        calls["n"] += 1
        if calls["n"] > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, buffers, offset)

    monkeypatch.setattr(shardfile, "_pwritev_all", failing_write)
    out = str(tmp_path / "out")
    result = CliRunner().invoke(extract_command, [*args, "--out", out])
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    assert "run the same command again" in result.output
    monkeypatch.undo()
    partial = open_store(out, allow_partial=True)
    assert 0 < partial.counts()["ok"] < 20
    assert CliRunner().invoke(extract_command, [*args, "--out", out]).exit_code == 0
    done, ref = open_store(out), open_store(str(tmp_path / "ref"))
    for name in ref.names:
        np.testing.assert_array_equal(done.array(name)[:], ref.array(name)[:], err_msg=name)


def test_values_beyond_float16_stop_the_run_or_go_to_float32(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(3))
    with pytest.raises(Float16OverflowError, match="--dtype float32"):
        run_extract(shards=[shard], model="tiny_dino_loud", out=str(tmp_path / "a"),
                    weights="random", progress=False)
    run_extract(shards=[shard], model="tiny_dino_loud", out=str(tmp_path / "b"), weights="random",
                progress=False, tokens_dtype="float32")
    store = open_store(str(tmp_path / "b"))
    tokens = store.array("tokens")[:]
    assert tokens.dtype == np.float32 and np.isfinite(tokens).all()
    assert np.abs(tokens).max() > np.finfo(np.float16).max


def test_nan_from_the_model_marks_the_row_failed(tmp_path):
    samples = image_samples(3)
    samples[1]["jpg"] = encode(Image.new("RGB", (64, 64)))
    shard = write_shard(tmp_path / "s.tar", samples)
    summary = run_extract(shards=[shard], model="tiny_dino_nan", out=str(tmp_path / "s"),
                          weights="random", progress=False)
    store = open_store(str(tmp_path / "s"))
    assert list(store.array("status")[:]) == [1, 2, 1]
    assert store.array("error")[1] == "model: NaN or inf in the outputs"
    assert np.isfinite(store.array("tokens")[:]).all()
    assert (summary.ok, summary.failed) == (2, 1)
