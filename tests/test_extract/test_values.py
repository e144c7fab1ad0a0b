"""The store equals an independent recomputation with plain timm calls.

The reference uses timm's normalising eval transform on PIL images, the
model's ordinary `forward_features` with unfused attention (so attention
weights exist and are read from the softmax output), forward hooks on the
blocks, and numpy in float64 for norms, means and neighbour cosines.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
import zarr
from PIL import Image

import tests.tiny_models  # noqa: F401  (registers the tiny families)
from tests.tiny_models import FAMILIES
from vitreg.cache import open_store
from vitreg.extract.run import run_extract


def reference(model_name: str, images: list[Image.Image], img_size: int | None) -> dict:
    """The arrays of a random-init `model_name` built by timm at `img_size`."""
    torch.manual_seed(42)
    size = img_size or FAMILIES[model_name][1]
    model = timm.create_model(model_name, num_classes=0, img_size=size)
    return reference_arrays(model, images, size)


def reference_arrays(model: torch.nn.Module, images: list[Image.Image], size: int) -> dict:
    """Every store array, from timm's own forward pass of `model` at `size` px."""
    model.eval()
    for block in model.blocks:
        block.attn.fused_attn = False
    config = timm.data.resolve_data_config(model=model)
    config["input_size"] = (3, size, size)
    transform = timm.data.create_transform(**config)
    x = torch.stack([transform(img) for img in images])
    seen: dict[str, list] = {"blocks": [], "attn": [], "embed": [], "norm1": []}
    hooks = [
        b.register_forward_hook(lambda m, a, o: seen["blocks"].append(o)) for b in model.blocks
    ]
    last = model.blocks[-1]
    hooks.append(
        last.attn.attn_drop.register_forward_hook(lambda m, a, o: seen["attn"].append(a[0]))
    )
    hooks.append(model.patch_embed.register_forward_hook(lambda m, a, o: seen["embed"].append(o)))
    hooks += [
        b.norm1.register_forward_hook(lambda m, a, o: seen["norm1"].append(o)) for b in model.blocks
    ]
    with torch.no_grad():
        final = model.forward_features(x).double().numpy()
    for h in hooks:
        h.remove()
    prefix = model.num_prefix_tokens
    tokens = seen["blocks"][-1].double().numpy()
    embed = (
        seen["embed"][0]
        .double()
        .numpy()
        .reshape(len(images), size // model.patch_embed.patch_size[0], -1, tokens.shape[-1])
    )
    qkv_norms = [qkv_norms_of(block.attn, x) for block, x in zip(model.blocks, seen["norm1"])]
    return {
        "tokens": tokens,
        "norms": np.linalg.norm(tokens, axis=-1),
        "attention": seen["attn"][0][:, :, 0, :].double().mean(dim=1).numpy(),
        "neighbor_cos": neighbor_cos_numpy(embed),
        "pooled/cls": final[:, 0],
        "pooled/patch_mean": final[:, prefix:].mean(axis=1),
        "pooled/registers": final[:, 1:prefix],
        "blocks/norms": np.stack(
            [np.linalg.norm(o.double().numpy(), axis=-1) for o in seen["blocks"]], 1
        ),
        "qkv_norms": qkv_norms[-1],
        "blocks/qkv_norms": np.stack(qkv_norms, axis=1),
    }


def qkv_norms_of(attn: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """(B, 3, T) norms of q, k (after the block's q/k norms) and v, heads concatenated,
    from the block's own qkv projection of its normalised input."""
    with torch.no_grad():
        qkv = attn.qkv(x)
        b, t, _ = qkv.shape
        q, k, v = qkv.reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(q), attn.k_norm(k)
        norms = [
            z.transpose(1, 2).reshape(b, t, -1).double().norm(dim=-1).numpy() for z in (q, k, v)
        ]
    return np.stack(norms, axis=1)


def neighbor_cos_numpy(grid: np.ndarray) -> np.ndarray:
    """Plain loops over the grid: mean cosine with the 4-neighbours that exist."""
    n, h, w, _ = grid.shape
    unit = grid / np.linalg.norm(grid, axis=-1, keepdims=True)
    out = np.zeros((n, h, w))
    for i in range(h):
        for j in range(w):
            sims = [
                (unit[:, i, j] * unit[:, a, c]).sum(-1)
                for a, c in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                if 0 <= a < h and 0 <= c < w
            ]
            out[:, i, j] = np.mean(sims, axis=0)
    return out.reshape(n, -1)


def decoded_images(samples: list[dict]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(s["jpg"])).convert("RGB") for s in samples]


TOLERANCE = {  # (rtol, atol): float16 arrays are compared at float16 precision
    "tokens": (2e-3, 2e-3),
    "norms": (1e-4, 1e-5),
    "attention": (2e-3, 1e-5),
    "neighbor_cos": (2e-3, 2e-3),
    "pooled/cls": (1e-4, 1e-5),
    "pooled/patch_mean": (1e-4, 1e-5),
    "pooled/registers": (1e-4, 1e-5),
    "blocks/norms": (2e-3, 1e-3),
    "qkv_norms": (2e-3, 1e-3),
    "blocks/qkv_norms": (2e-3, 1e-3),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("img_size", [None, 100])
def test_store_matches_reference(tmp_path, family, img_size):
    from tests.conftest import image_samples, write_shard

    samples = image_samples(5, start=3)
    shard = write_shard(tmp_path / "s.tar", samples)
    out = str(tmp_path / "store.zarr")
    run_extract(
        shards=[shard],
        model=family,
        out=out,
        weights="random",
        img_size=img_size,
        batch_size=2,
        with_options=["blocks", "qkv", "blocks_qkv", "pixels"],
        progress=False,
    )
    store = open_store(out)
    size = store.meta["img_size"]
    patch = store.meta["patch_size"]
    assert size == (img_size or FAMILIES[family][1]) // patch * patch
    ref = reference(family, decoded_images(samples), size)
    for name, (rtol, atol) in TOLERANCE.items():
        np.testing.assert_allclose(
            store.array(name)[:].astype(np.float64),
            ref[name],
            rtol=rtol,
            atol=atol,
            err_msg=f"{family} {name}",
        )
    assert list(store.array("key")[:]) == [s["__key__"] for s in samples]
    assert list(store.array("label")[:]) == [int(s["cls"]) for s in samples]
    assert (store.array("status")[:] == 1).all()
    threshold = np.percentile(ref["norms"][:, store.geometry.prefix :], 98)
    assert store.threshold() == pytest.approx(threshold, rel=1e-5)


def test_store_opens_with_plain_zarr_and_xarray(tmp_path, shards):
    import xarray as xr

    out = str(tmp_path / "store.zarr")
    run_extract(
        shards=shards,
        model="tiny_dinov2_reg4",
        out=out,
        weights="random",
        batch_size=4,
        progress=False,
    )
    group = zarr.open_group(out, mode="r")
    assert group["tokens"].shape == (13, 1 + 4 + 16, 48)
    assert group["pooled/registers"].shape == (13, 4, 48)
    ds = xr.open_zarr(out, consolidated=False)
    assert ds["norms"].dims == ("image", "token")
    np.testing.assert_array_equal(ds["norms"].values, group["norms"][:])
    full = open_store(out).to_xarray()
    assert full["pooled/cls"].dims == ("image", "dim")
