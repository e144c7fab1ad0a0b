"""The hostile-input sweep of issue #13: one test per numbered case, each
asserting what a user should get (exit status, one sentence, files kept)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

import tests.tiny_models  # noqa: F401
from tests.conftest import encode, image_samples, make_image, write_shard
from vitreg.cache import open_store
from vitreg.cli import cli

TINY = ["--model", "tiny_dino", "--weights", "random", "--no-progress", "--batch-size", "4"]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def extract(shard, out, *extra):
    return invoke("extract", *([shard] if isinstance(shard, str) else shard), *TINY,
                  "--out", out, *extra)


def assert_sentence(result, code: int, *words: str) -> None:
    """Exit `code`, no traceback, and the message names `words`."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (
        TypeError, KeyError, AttributeError, RuntimeError)), result.output
    flat = " ".join(result.output.split())
    for word in words:
        assert word in flat, (word, result.output)


# 1 -------------------------------------------------------------------------------------
def test_1_overwrite_never_deletes_a_folder_that_is_not_a_store(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(3))
    thesis = tmp_path / "d"
    (thesis / "sub").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("years of work")
    for extra in (("--overwrite",), ()):
        result = extract(shard, thesis, *extra)
        assert_sentence(result, 2, "not a vitreg store", "thesis.tex")
    assert (thesis / "thesis.tex").read_text() == "years of work" and (thesis / "sub").is_dir()
    assert sorted(p.name for p in thesis.iterdir()) == ["sub", "thesis.tex"]
    # a real store is still overwritten
    store = tmp_path / "store"
    assert extract(shard, store).exit_code == 0
    assert extract(shard, store, "--overwrite").exit_code == 0


# 2 -------------------------------------------------------------------------------------
def test_2_resume_refuses_a_shard_rewritten_in_another_order(tmp_path):
    samples = image_samples(12)
    shard = write_shard(tmp_path / "s.tar", samples)
    out = tmp_path / "store"
    assert extract(shard, out, "--chunk-rows", "4").exit_code == 0
    root = zarr.open_group(str(out), mode="r+")  # as if killed after the first 4 rows
    status = root["status"][:]
    status[4:] = 0
    root["status"][:] = status
    meta = dict(root.attrs["vitreg"], complete=False)
    root.attrs["vitreg"] = meta
    write_shard(tmp_path / "s.tar", samples[::-1])  # same samples, other order
    result = extract(shard, out, "--chunk-rows", "4")
    assert_sentence(result, 2, "rewritten since the store was started", "--overwrite")
    assert open_store(str(out), allow_partial=True).counts()["ok"] == 4


def test_2_finished_rows_are_checked_against_the_plan_and_verify_sees_a_changed_shard(tmp_path):
    samples = image_samples(8)
    shard = write_shard(tmp_path / "s.tar", samples)
    out = tmp_path / "store"
    assert extract(shard, out).exit_code == 0
    assert invoke("verify", out).exit_code == 0
    write_shard(tmp_path / "s.tar", samples[::-1])
    result = invoke("verify", out)
    assert_sentence(result, 1, "changed since the store was written")
    # a store without digests (schema 1.1) still has its finished keys checked on resume
    root = zarr.open_group(str(out), mode="r+")
    status = root["status"][:]
    status[4:] = 0
    root["status"][:] = status
    meta = {k: v for k, v in root.attrs["vitreg"].items() if k != "shard_digests"}
    root.attrs["vitreg"] = dict(meta, complete=False)
    result = extract(shard, out)
    assert_sentence(result, 2, "finished row(s) of the store hold other samples", "--overwrite")


# 3 -------------------------------------------------------------------------------------
def test_3_two_images_under_one_dotted_key_are_refused_with_the_rename(tmp_path):
    jpeg = encode(make_image(np.random.default_rng(42), 40, 40))
    path = tmp_path / "dots.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("img.v1.jpg", "img.v2.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(jpeg)
            tar.addfile(info, io.BytesIO(jpeg))
    result = extract(str(path), tmp_path / "store")
    assert_sentence(result, 2, "key 'img'", "img.v1.jpg", "img.v2.jpg", "rename")
    assert not (tmp_path / "store").exists()


def test_3_shards_makes_colliding_keys_unique_and_says_so(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    img = make_image(np.random.default_rng(42), 40, 40)
    names = (("x.jpg", "JPEG"), ("x.png", "PNG"), ("a.b.jpg", "JPEG"), ("a_b.jpg", "JPEG"))
    for name, fmt in names:
        img.save(src / name, format=fmt)
    result = invoke("shards", src, "--out", tmp_path / "sh")
    assert_sentence(result, 0, "got a new one")
    result = extract(str(tmp_path / "sh" / "shard-000000.tar"), tmp_path / "store")
    assert result.exit_code == 0, result.output
    store = open_store(str(tmp_path / "store"))
    keys = list(store.array("key")[:])
    assert len(set(keys)) == 4 and store.counts()["ok"] == 4


# 4 -------------------------------------------------------------------------------------
def test_4_bad_labels_keep_the_image_with_a_warning(tmp_path):
    good = image_samples(5)
    for sample, cls in zip(good, (b"abc", b"", b"3.0", b"-5", b"1")):
        sample["cls"] = cls
    shard = write_shard(tmp_path / "s.tar", good)
    result = extract(shard, tmp_path / "store")
    assert_sentence(result, 0, "5 ok, 0 failed", "4 with a warning", "not an integer")
    store = open_store(str(tmp_path / "store"))
    assert list(store.array("label")[:]) == [-1, -1, -1, -1, 1]
    info = invoke("info", tmp_path / "store")
    assert "warned" in info.output and "out of range" in " ".join(info.output.split())


def test_4_probes_refuse_a_sparse_label_unless_told_the_class_count(tmp_path):
    samples = image_samples(12)
    for i, sample in enumerate(samples):
        sample["cls"] = b"1000000" if i == 0 else str(i % 2).encode()
    shard = write_shard(tmp_path / "s.tar", samples)
    assert extract(shard, tmp_path / "store").exit_code == 0
    args = ["probe", "linear", tmp_path / "store", "--out", tmp_path / "r.json", "--quiet",
            "--epochs", "1"]
    assert_sentence(invoke(*args), 2, "largest label is 1000000", "--num-classes")
    assert not (tmp_path / "r.json").exists()


# 5 -------------------------------------------------------------------------------------
def test_5_a_16_bit_png_keeps_its_values(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    samples = [{"__key__": "deep", "png": buf.getvalue(), "cls": b"0"}]
    shard = write_shard(tmp_path / "s.tar", samples)
    assert extract(shard, tmp_path / "store", "--with", "pixels").exit_code == 0
    pixels = open_store(str(tmp_path / "store")).array("pixels")[0]
    assert pixels.min() < 30 and pixels.max() > 220 and len(np.unique(pixels)) > 50
    beyond = (np.arange(64 * 64).reshape(64, 64) * 1000).astype(np.int32)  # up to 4 million
    buf = io.BytesIO()
    Image.fromarray(beyond).save(buf, format="TIFF")
    shard = write_shard(tmp_path / "t.tar", [{"__key__": "wide", "tif": buf.getvalue()}])
    result = extract(shard, tmp_path / "tif")
    assert_sentence(result, 0, "1 ok", "with a warning", "were clipped")


def test_5_a_grid_under_2x2_is_refused_before_any_work(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(2))
    result = invoke("extract", shard, "--model", "test_vit", "--weights", "random",
                    "--img-size", "17", "--out", tmp_path / "store")
    assert_sentence(result, 2, "1 x 1 grid", "--img-size 32")
    assert not (tmp_path / "store").exists()


# 6 -------------------------------------------------------------------------------------
def test_6_val_store_overlapping_the_training_store_is_refused(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(12))
    assert extract(shard, tmp_path / "store").exit_code == 0
    store = tmp_path / "store"
    args = ["probe", "linear", store, "--val", store, "--out", tmp_path / "r.json", "--quiet",
            "--epochs", "1"]
    assert_sentence(invoke(*args), 2, "shares 12 of its 12 images", "--allow-val-overlap")
    assert invoke(*args, "--allow-val-overlap").exit_code == 0


# 7 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, words", [
    ("vit_smal_patch16_224", ["timm has no model", "did you mean vit_small_patch16_224"]),
    ("test_vit.nope", ["no pretrained tag 'nope'", "r160_in1k"]),
    ("resnet18", ["not a Vision Transformer"]),
])
def test_7_bad_model_names_say_what_to_use_and_create_no_store(tmp_path, model, words):
    shard = write_shard(tmp_path / "s.tar", image_samples(2))
    result = invoke("extract", shard, "--model", model, "--weights", "random",
                    "--out", tmp_path / "store")
    assert_sentence(result, 2, *words)
    assert not (tmp_path / "store").exists()


def test_7_bad_device_percentile_and_out_are_refused_before_training(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(12))
    result = extract(shard, tmp_path / "gpu", "--device", "gpu")
    assert_sentence(result, 2, "--device gpu", "cpu")
    assert not (tmp_path / "gpu").exists()
    store = tmp_path / "store"
    assert extract(shard, store).exit_code == 0
    common = ["probe", "linear", store, "--quiet", "--epochs", "1"]
    assert_sentence(invoke(*common, "--out", tmp_path / "r.json", "--percentile", "101"),
                    2, "--percentile", "101", "between 0 and 100")
    (tmp_path / "taken").mkdir()
    assert_sentence(invoke(*common, "--out", tmp_path / "taken"), 2, "is a folder", "probe.json")


# 8 -------------------------------------------------------------------------------------
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_8_cuda_without_a_gpu_leaves_no_store_and_cpu_then_works(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(3))
    result = extract(shard, tmp_path / "store", "--device", "cuda")
    assert_sentence(result, 2, "no CUDA device", "--device cpu")
    assert not (tmp_path / "store").exists()
    assert extract(shard, tmp_path / "store", "--device", "cpu").exit_code == 0


# 9 -------------------------------------------------------------------------------------
def test_9_shards_that_give_no_samples_say_why(tmp_path):
    samples = image_samples(3)
    missing = extract(str(tmp_path / "nope.tar"), tmp_path / "a")
    assert_sentence(missing, 2, "nope.tar: no such file")
    glob = extract(str(tmp_path / "shard-*.tar"), tmp_path / "b")
    assert_sentence(glob, 2, "glob pattern that was not expanded")
    (tmp_path / "notes.tar").write_text("not a tar at all\n" * 50)
    assert_sentence(extract(str(tmp_path / "notes.tar"), tmp_path / "c"), 2, "not a readable tar")
    tar = Path(write_shard(tmp_path / "s.tar", samples))
    gz = tmp_path / "s.tar.gz"
    import gzip

    gz.write_bytes(gzip.compress(tar.read_bytes()))
    result = extract(str(gz), tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert open_store(str(tmp_path / "d")).counts()["ok"] == 3
    for out in "abc":
        assert not (tmp_path / out).exists()


# 10 ------------------------------------------------------------------------------------
def test_10_failed_rows_are_grouped_by_reason_everywhere(tmp_path):
    samples = [*image_samples(3), {"__key__": "junk1", "jpg": b"junk"},
               {"__key__": "junk2", "jpg": b"junk"}]
    shard = write_shard(tmp_path / "s.tar", samples)
    out = tmp_path / "store"
    result = extract(shard, out, "--strict")
    assert result.exit_code == 1
    assert_sentence(result, 1, "failed 2 row(s): decode: UnidentifiedImageError", "junk1, junk2",
                    "--strict")
    info = invoke("info", out)
    assert "UnidentifiedImageError" in info.output and "pooled/registers" in info.output


def test_10_all_failed_incomplete_and_bad_out_paths_each_say_so(tmp_path):
    junk = write_shard(tmp_path / "j.tar", [{"__key__": f"j{i}", "jpg": b"junk"} for i in range(3)])
    assert_sentence(extract(junk, tmp_path / "bad"), 2, "no row of", "every image failed")
    shard = write_shard(tmp_path / "s.tar", image_samples(8))
    out = tmp_path / "store"
    assert extract(shard, out, "--chunk-rows", "4").exit_code == 0
    root = zarr.open_group(str(out), mode="r+")
    status = root["status"][:]
    status[4:] = 0
    root["status"][:] = status
    root.attrs["vitreg"] = dict(root.attrs["vitreg"], complete=False)
    verify = invoke("verify", out)
    assert verify.exit_code == 1 and "incomplete: 4 pending" in verify.output
    (tmp_path / "file").write_text("x")
    assert_sentence(extract(shard, tmp_path / "file"), 2, "is a file")


def test_10_ctrl_c_exits_130_and_says_rerun_resumes(tmp_path, monkeypatch):
    import vitreg.extract.run as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_extract_rows", interrupted)
    shard = write_shard(tmp_path / "s.tar", image_samples(3))
    result = extract(shard, tmp_path / "store")
    assert result.exit_code == 130
    assert "rerun the same command to resume" in " ".join(result.output.split())


def test_10_a_write_refused_by_permissions_does_not_say_free_the_space(tmp_path, monkeypatch):
    import errno

    shard = write_shard(tmp_path / "s.tar", image_samples(3))

    async def refused(self, key, value):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(zarr.storage.LocalStore, "set", refused)
    result = extract(shard, tmp_path / "store")
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "no permission to write there" in flat and "free" not in flat
