"""Stores off the happy path: each gives a result, or an error that says why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg.cache import Geometry, IncompleteStoreError, open_store
from vitreg.probe import ProbeError, run_probe
from vitreg.testing import write_planted_store, write_store


def _planted(tmp_path, name="s.zarr", **kw):
    kw.setdefault("geometry", Geometry(registers=2, grid=(4, 4), dim=48, depth=2, img_size=32))
    kw.setdefault("n_images", 400)
    return write_planted_store(str(tmp_path / name), **kw)


# -- no outliers ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def flat_norms(tmp_path_factory):
    """Every patch-token norm equal: nothing is above the 98th percentile."""
    g = Geometry(registers=1, grid=(4, 4), dim=16, depth=2, img_size=32)
    rng = np.random.default_rng(0)
    n = 60
    tokens = rng.standard_normal((n, g.tokens, g.dim)).astype(np.float16)
    arrays = {
        "tokens": tokens, "norms": np.ones((n, g.tokens), np.float32),
        "label": (np.arange(n) % 3).astype(np.int32),
        "pooled/cls": rng.standard_normal((n, g.dim)).astype(np.float32),
        "pooled/patch_mean": rng.standard_normal((n, g.dim)).astype(np.float32),
        "pooled/registers": rng.standard_normal((n, 1, g.dim)).astype(np.float32),
    }
    path = tmp_path_factory.mktemp("flat") / "s.zarr"
    return write_store(str(path), arrays, geometry=g, chunk_rows=16)


def test_no_outliers_position_says_why_and_how(flat_norms):
    with pytest.raises(ProbeError, match="no outlier token.*--normals"):
        run_probe("position", flat_norms)


def test_no_outliers_position_with_normals_gives_normal_metrics_only(flat_norms):
    r = run_probe("position", flat_norms, normals=100, epochs=2, min_steps=0)
    assert r["metrics"]["outlier"] is None
    assert r["metrics"]["normal"]["count"] > 0
    assert any("no outlier token" in n for n in r["notes"])


def test_no_outliers_classify_says_why(flat_norms):
    with pytest.raises(ProbeError, match="has a label and an outlier token"):
        run_probe("classify", flat_norms)


def test_no_outliers_linear_still_runs(flat_norms):
    r = run_probe("linear", flat_norms, epochs=2)
    assert set(r["metrics"]) == {"cls+patch_mean", "cls+patch_mean+registers",
                                 "patch_mean+registers"}


# -- tiny stores ---------------------------------------------------------------------
def test_fewer_images_than_one_chunk(tmp_path):
    g = Geometry(registers=1, grid=(8, 8), dim=96, depth=2, img_size=64)
    url = _planted(tmp_path, n_images=12, geometry=g, chunk_rows=16)
    store = open_store(url)
    assert store.n_rows < store.chunk_rows
    for kind in ("position", "linear"):
        r = run_probe(kind, url, epochs=2, **({"min_steps": 0} if kind != "linear" else {}))
        assert r["split"]["train_images"] + r["split"]["val_images"] == 12


def test_fewer_ok_images_than_chunks(tmp_path):
    url = _planted(tmp_path, n_images=64, chunk_rows=16,
                   failed=[i for i in range(64) if i not in (3, 40, 61)])
    store = open_store(url)
    assert store.counts()["ok"] == 3 < 64 // store.chunk_rows
    r = run_probe("linear", url, epochs=2)
    assert r["split"]["train_images"] == 2 and r["split"]["val_images"] == 1
    assert r["provenance"]["train"]["rows"]["failed"] == 61


def test_demo_sized_store_runs_every_probe_with_defaults(tmp_path):
    """About 30 images, as in the demo: defaults clamp, every probe gives a result."""
    g = Geometry(registers=4, grid=(8, 8), dim=64, depth=2, img_size=64)
    url = _planted(tmp_path, n_images=30, geometry=g)
    for kind in ("position", "reconstruct", "classify", "linear"):
        r = run_probe(kind, url)
        assert r["metrics"], kind
        assert r["split"] == {"mode": "fraction", "val_fraction": 0.2, "seed": 42,
                              "train_images": 24, "val_images": 6}


def test_one_image_cannot_be_split(tmp_path):
    url = _planted(tmp_path, n_images=8, chunk_rows=8, failed=list(range(1, 8)))
    with pytest.raises(ProbeError, match="at least 2"):
        run_probe("linear", url)


# -- failed rows ------------------------------------------------------------------------
def test_failed_rows_are_never_used(tmp_path, fast):
    failed = np.arange(0, 400, 7)
    url = _planted(tmp_path, failed=failed)
    r = run_probe("position", url, **dict(fast, epochs=3))
    assert r["provenance"]["train"]["rows"]["failed"] == failed.size
    assert r["split"]["train_images"] + r["split"]["val_images"] == 400 - failed.size
    from vitreg.probe.select import Part, select_tokens

    store = open_store(url)
    items = select_tokens(Part("t", store, np.arange(400), 98.0), normals=None, seed=0)
    assert not np.isin(items.rows, failed).any()


# -- sampled-token stores -------------------------------------------------------------------
def test_sampled_store_position_and_classify(sampled, fast):
    r = run_probe("position", sampled, **fast)
    assert r["metrics"]["normal"]["top1"] > 0.9
    assert r["metrics"]["outlier"]["top1"] < 0.2
    c = run_probe("classify", sampled, **fast)
    assert c["cls_source"] == "pooled/cls"
    assert c["metrics"]["outlier"]["top1"] > 0.9
    assert any("pooled/cls" in n for n in c["notes"])


def test_sampled_store_reconstruct(sampled, fast_reconstruct):
    r = run_probe("reconstruct", sampled, **fast_reconstruct)
    assert r["metrics"]["normal"]["mse"] < r["metrics"]["outlier"]["mse"] / 10


def test_store_without_tokens(tmp_path):
    url = _planted(tmp_path, token_mode="none")
    with pytest.raises(ProbeError, match="holds no patch tokens"):
        run_probe("position", url)
    assert run_probe("linear", url, epochs=1)["metrics"]


# -- a store still being written ---------------------------------------------------------
def test_incomplete_store_needs_allow_partial(tmp_path, fast):
    url = _planted(tmp_path, n_images=400, written_rows=300)
    with pytest.raises(IncompleteStoreError, match="--allow-partial"):
        run_probe("position", url)
    r = run_probe("position", url, allow_partial=True, **dict(fast, epochs=3))
    assert r["provenance"]["train"]["complete"] is False
    assert r["provenance"]["train"]["rows"]["pending"] == 400 - 288  # whole chunks only
    assert r["split"]["train_images"] + r["split"]["val_images"] == 288
    assert any("incomplete" in n for n in r["notes"])
    assert r["provenance"]["train"]["outlier_threshold"]["value"] > 0


# -- missing pieces ---------------------------------------------------------------------
def test_reconstruct_without_pixels_says_re_extract(tmp_path):
    url = _planted(tmp_path, with_pixels=False)
    with pytest.raises(ProbeError, match="--with pixels"):
        run_probe("reconstruct", url)


def test_unlabelled_store(tmp_path):
    url = _planted(tmp_path, labels=np.full(400, -1))
    for kind in ("classify", "linear"):
        with pytest.raises(ProbeError, match="label"):
            run_probe(kind, url)


def test_val_store_of_another_model_is_refused(tmp_path, planted):
    other = _planted(tmp_path, geometry=Geometry(registers=0, grid=(4, 4), dim=48, depth=2,
                                                 img_size=32))
    with pytest.raises(ProbeError, match="same model"):
        run_probe("position", planted, val=other)


def test_model_without_registers(tmp_path):
    url = _planted(tmp_path, geometry=Geometry(registers=0, grid=(4, 4), dim=48, depth=2,
                                               img_size=32))
    r = run_probe("linear", url, epochs=1)
    assert list(r["metrics"]) == ["cls+patch_mean"]
    assert any("no registers" in n for n in r["notes"])
    with pytest.raises(ProbeError, match="no registers"):
        run_probe("linear", url, features="patch_mean+registers")


def test_features_accept_any_combination(planted):
    r = run_probe("linear", planted, features="registers,cls+registers, patch_mean", epochs=1)
    assert set(r["metrics"]) == {"registers", "cls+registers", "patch_mean"}
    assert r["features"]["cls+registers"] == 48 * 3
    with pytest.raises(ProbeError, match="join distinct names"):
        run_probe("linear", planted, features="cls+cls")


# -- official heads ---------------------------------------------------------------------
def _manual_top1(url: str, weight: np.ndarray, bias: np.ndarray) -> float:
    store = open_store(url)
    x = np.concatenate([store.array("pooled/cls")[:], store.array("pooled/patch_mean")[:]], 1)
    pred = (x @ weight.T + bias).argmax(1)
    labels = store.array("label")[:]
    return float((pred == labels).mean())


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_official_head_is_evaluated_untrained(planted, tmp_path, fmt):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 96)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    state = {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}
    path = tmp_path / f"head.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    r = run_probe("linear", planted, head=str(path))
    m = r["metrics"]["head"]
    assert m["count"] == 2000 and r["epochs_run"] == 0
    assert m["top1"] == pytest.approx(_manual_top1(planted, weight, bias), abs=1e-9)
    assert r["head"]["features"] == "cls+patch_mean" and len(r["head"]["sha256"]) == 64


def test_head_of_the_wrong_width_or_a_pickle_is_refused(planted, tmp_path):
    path = tmp_path / "wide.pth"
    torch.save({"weight": torch.zeros(4, 5 * 48), "bias": torch.zeros(4)}, path)
    with pytest.raises(ProbeError, match="intermediate blocks"):
        run_probe("linear", planted, head=str(path))
    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(4, 96), "extra": _Opaque()}, evil)
    with pytest.raises(ProbeError, match="weights-only"):
        run_probe("linear", planted, head=str(evil))


class _Opaque:
    """An object that only a full unpickler would rebuild."""
