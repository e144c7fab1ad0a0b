"""Extraction as a pipeline: invariances, bad samples, resume, weights, CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import encode, image_samples, make_image, write_shard
from vitreg.cache import ConfigMismatchError, open_store
from vitreg.extract.model import WeightsError, build_model
from vitreg.extract.run import run_extract


def store_arrays(url: str) -> dict[str, np.ndarray]:
    store = open_store(url, allow_partial=True)
    return {name: store.array(name)[:] for name in store.names}


def assert_same_store(a: str, b: str, rows: slice = slice(None)) -> None:
    left, right = store_arrays(a), store_arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name][rows], right[name][rows], err_msg=name)


def extract(shards, out, **kwargs):
    args = dict(
        model="tiny_dinov2_reg4",
        weights="random",
        batch_size=4,
        progress=False,
        with_options=["pixels"],
        chunk_rows=4,
    )
    args.update(kwargs)
    return run_extract(shards=shards, out=str(out), **args)


def test_batch_size_limit_and_workers_give_identical_stores(tmp_path, shards):
    extract(shards, tmp_path / "a")
    extract(shards, tmp_path / "b", batch_size=3, workers=2)
    extract(shards, tmp_path / "c", batch_size=5, limit=9)
    assert_same_store(str(tmp_path / "a"), str(tmp_path / "b"))
    limited = store_arrays(str(tmp_path / "c"))
    full = store_arrays(str(tmp_path / "a"))
    assert limited["status"].shape == (9,)
    for name in full:
        np.testing.assert_array_equal(limited[name], full[name][:9], err_msg=name)


def test_undecodable_sample_becomes_a_failed_row_without_shifting(tmp_path, shards):
    samples = image_samples(4, start=20)
    samples.insert(2, {"__key__": "broken", "jpg": b"not a jpeg at all", "cls": b"1"})
    samples.insert(4, {"__key__": "noimage", "cls": b"2"})
    samples.append(
        {
            "__key__": "gray",
            "jpg": encode(make_image(np.random.default_rng(1), 50, 60).convert("L")),
        }
    )
    shard = write_shard(tmp_path / "bad.tar", samples)
    summary = extract([shard], tmp_path / "s")
    store = open_store(str(tmp_path / "s"))
    keys = list(store.array("key")[:])
    assert keys == [s["__key__"] for s in samples]
    status = store.array("status")[:]
    errors = store.array("error")[:]
    assert list(status) == [1, 1, 2, 1, 2, 1, 1]
    assert errors[2].startswith("decode: UnidentifiedImageError")
    assert "no image member" in errors[4]
    assert store.array("label")[6] == -1  # no cls member
    assert (store.array("tokens")[2] == 0).all()
    assert (summary.ok, summary.failed) == (5, 2)
    # The good rows equal a run over the good samples alone.
    good = write_shard(tmp_path / "good.tar", [samples[i] for i in (0, 1, 3, 5, 6)])
    extract([good], tmp_path / "g")
    clean = open_store(str(tmp_path / "g"))
    np.testing.assert_array_equal(store.array("tokens")[[0, 1, 3, 5, 6]], clean.array("tokens")[:])


def test_rerun_resumes_and_other_config_is_refused(tmp_path, shards):
    out = tmp_path / "s"
    first = extract(shards, out)
    assert first.processed == 13
    again = extract(shards, out)
    assert again.processed == 0 and again.ok == 13
    with pytest.raises(ConfigMismatchError, match="img_size"):
        extract(shards, out, img_size=84)
    redone = extract(shards, out, img_size=84, overwrite=True)
    assert redone.processed == 13
    assert open_store(str(out)).meta["img_size"] == 84


def test_resume_fills_only_pending_chunks(tmp_path, shards):
    out = tmp_path / "s"
    extract(shards, tmp_path / "ref")
    extract(shards, out)
    import zarr

    root = zarr.open_group(str(out), mode="r+")
    root["status"][4:8] = 0  # as if the run died before this chunk's status landed
    root["tokens"][4:8] = 0
    summary = extract(shards, out)
    assert summary.processed == 4
    assert_same_store(str(out), str(tmp_path / "ref"))


def test_pretrained_offline_fails_fast_with_advice():
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="--weights"):
        build_model("vit_small_patch16_224.dino", weights="pretrained")
    assert time.perf_counter() - start < 5


def test_weights_from_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    source = build_model("tiny_dino", weights="random", seed=7)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = build_model("tiny_dino", weights=str(path), seed=0)
    assert loaded.weights_sha256 == source.weights_sha256
    torch.save(source.model.state_dict(), tmp_path / "w.pth")
    assert (
        build_model("tiny_dino", weights=str(tmp_path / "w.pth")).weights_sha256
        == source.weights_sha256
    )


STUDY_MODELS = {  # timm name: (prefix tokens, registers)
    "vit_small_patch14_reg4_dinov2.lvd142m": (5, 4),
    "deit3_medium_patch16_224.fb_in22k_ft_in1k": (1, 0),
    "vit_base_patch16_clip_224.laion2b": (1, 0),
    "vit_small_patch16_224.dino": (1, 0),
}


@pytest.mark.parametrize("name", sorted(STUDY_MODELS))
def test_study_models_build_with_random_weights(name):
    loaded = build_model(name, weights="random", img_size=224)
    prefix, registers = STUDY_MODELS[name]
    assert (loaded.geometry.prefix, loaded.geometry.registers) == (prefix, registers)
    patch = loaded.patch_size
    assert loaded.geometry.grid == (224 // patch, 224 // patch)
    # built at 224 (DINOv2 is 518 native): no resampling at every forward pass
    assert not loaded.dynamic_img_size and tuple(loaded.model.patch_embed.img_size) == (224, 224)


@pytest.mark.parametrize(
    "name", ["vit_giant_patch14_reg4_dinov2.lvd142m", "vit_large_patch14_dinov2.lvd142m"]
)
def test_large_study_models_have_the_right_prefix(name):
    model = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
    assert model.num_prefix_tokens == (5 if "reg4" in name else 1)


def test_cli_shards_extract_info_verify(tmp_path):
    from vitreg.cli import cli

    photos = tmp_path / "photos"
    rng = np.random.default_rng(42)
    for i, synset in enumerate(["n01440764", "n01443537", "n01440764"]):
        photos.mkdir(exist_ok=True)
        make_image(rng, 70, 90).save(photos / f"{synset}_img{i}.JPEG")
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("n01440764 tench\nn01443537 goldfish\n")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "shards",
            str(photos),
            "--out",
            str(tmp_path / "sh"),
            "--per-shard",
            "2",
            "--synsets",
            str(synsets),
        ],
    )
    assert result.exit_code == 0, result.output
    out = str(tmp_path / "store")
    result = runner.invoke(
        cli,
        [
            "extract",
            str(tmp_path / "sh" / "shard-{000000..000001}.tar"),
            "--model",
            "tiny_dino",
            "--weights",
            "random",
            "--out",
            out,
            "--no-progress",
            "--with",
            "qkv",
        ],
    )
    assert result.exit_code == 0, result.output
    store = open_store(out)
    assert list(store.array("key")[:]) == ["n01440764_img0", "n01440764_img2", "n01443537_img1"]
    assert list(store.array("label")[:]) == [0, 0, 1]
    assert "qkv_norms" in store
    result = runner.invoke(cli, ["info", out])
    assert result.exit_code == 0 and "random weights" in result.output
    assert runner.invoke(cli, ["verify", out]).exit_code == 0
    import zarr

    zarr.open_group(out, mode="r+")["norms"][1, 3] = np.nan  # corruption must be reported
    result = runner.invoke(cli, ["verify", out])
    assert result.exit_code == 1 and "row 1" in result.output
    bad = runner.invoke(
        cli,
        [
            "extract",
            str(tmp_path / "sh" / "*.tar"),
            "--model",
            "tiny_dino",
            "--out",
            out,
            "--with",
            "pixels,colour",
        ],
    )
    assert bad.exit_code == 2 and "colour" in bad.output


def test_pipe_urls_and_brace_patterns_read_like_paths(tmp_path, shards):
    extract(shards, tmp_path / "paths")
    pattern = str(tmp_path / "shard-{000..001}.tar")
    extract([pattern], tmp_path / "braces")
    extract([f"pipe:cat {s}" for s in shards], tmp_path / "pipes")
    assert_same_store(str(tmp_path / "paths"), str(tmp_path / "braces"))
    assert_same_store(str(tmp_path / "paths"), str(tmp_path / "pipes"))
    assert open_store(str(tmp_path / "pipes")).meta["shards"][0] == {
        "url": f"pipe:cat {shards[0]}",
        "samples": 7,
    }


def test_creation_cut_short_is_finished_by_the_next_run(tmp_path, shards):
    import zarr

    extract(shards, tmp_path / "ref")
    out = tmp_path / "s"
    extract(shards, out)
    group = zarr.open_group(str(out), mode="r+")
    for name in ("tokens", "norms", "pooled", "status"):
        del group[name]  # as if killed while the arrays were being created
    assert extract(shards, out).processed == 13
    assert_same_store(str(out), str(tmp_path / "ref"))
