"""The prepared GPU check: `vitreg extract` against the bare forward pass, per model.

    .venv/bin/python bench/bench_gpu.py                 # on a GPU node, under 8 minutes
    .venv/bin/python bench/bench_gpu.py --device cpu --models tiny --n 64   # its code, here

For each model (default ViT-S/14-reg4 and ViT-L/14-reg4 at 224 px, bf16,
random weights, so nothing is downloaded), in one process:

- bare: `forward_features` on random uint8 batches already on the device,
  normalised there, at the batch size `vitreg extract` chooses;
- extract: `run_extract` with the defaults (`--workers auto`, batch size
  auto) on generated shards of `--n` JPEGs; its loop img/s, the ratio to
  bare (target >= 0.9), the main process's CPU ms per image over the loop
  (less nothing: on a GPU the forward pass costs the host only its launches),
  the writer's wait;
- syncs per step (`extract.step.syncs_per_step`: `.cpu`, `.item`, `bool`,
  `.numpy`, masks), on the device;
- GPU memory peak (`torch.cuda.max_memory_allocated`) over the extraction;
- a few rows against an fp32 recomputation (the same JPEGs, timm's eval
  transform, fp32 `forward_intermediates`): worst relative error of the
  stored `norms` and the smallest cosine between stored and recomputed tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.tiny_models, for --models tiny
import benchutil  # noqa: E402

MODELS = {"vit-s": "vit_small_patch14_reg4_dinov2", "vit-l": "vit_large_patch14_reg4_dinov2",
          "tiny": "tiny_dinov2_reg4"}


def bare_rate(loaded, device: torch.device, batch: int, n: int) -> float:
    from vitreg.extract.capture import autocast, normalize

    model = loaded.model.to(device).eval()
    size = loaded.geometry.img_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    cfg = loaded.data_config
    with torch.inference_mode(), autocast("bf16", device):
        model.forward_features(normalize(images, cfg["mean"], cfg["std"]))  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model.forward_features(normalize(images, cfg["mean"], cfg["std"]))
        sync(device)
    return max(1, n // batch) * batch / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def extract_once(shards: list[str], model: str, out: str, device: torch.device) -> dict:
    import vitreg.extract.run as run_mod

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with benchutil.loop_cpu() as cpu:
        s = run_mod.run_extract(shards=shards, model=model, out=out, weights="random",
                                img_size=224 if model != MODELS["tiny"] else None,
                                device=str(device), precision="bf16", overwrite=True,
                                progress=False)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"rate": s.images_per_second, "host_ms": cpu["loop"] / s.processed * 1e3,
            "waited": s.writer_waited, "peak_gib": peak, "processed": s.processed}


def syncs(loaded, device: torch.device, batch: int) -> dict[str, float]:
    from vitreg.extract.capture import Capture
    from vitreg.extract.step import Step, syncs_per_step

    capture = Capture(loaded, device=device, precision="bf16")
    dtypes = {"tokens": "float16", "attention": "float16", "neighbor_cos": "float16",
              "norms": "float32", "pooled/cls": "float32", "pooled/patch_mean": "float32",
              "pooled/registers": "float32"}
    size = loaded.geometry.img_size
    batches = [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8),
                np.arange(i * batch, (i + 1) * batch)) for i in range(4)]
    return syncs_per_step(Step(capture, dtypes), batches)


def against_fp32(loaded, store_url: str, jpegs, rows: int = 4) -> tuple[float, float]:
    """(worst relative error of `norms`, smallest token cosine) over the first rows."""
    from vitreg.cache import open_store
    from vitreg.extract.capture import normalize
    from vitreg.extract.data import decode_image
    from vitreg.extract.transforms import eval_transform

    store = open_store(store_url)
    transform = eval_transform(loaded.data_config)
    model = loaded.model.float().cpu().eval()
    images = torch.stack([transform(decode_image({"jpg": j.data})) for j in jpegs[:rows]])
    with torch.inference_mode():
        _, inter = model.forward_intermediates(
            normalize(images, loaded.data_config["mean"], loaded.data_config["std"]),
            indices=[len(model.blocks) - 1], return_prefix_tokens=True, norm=False,
            output_fmt="NLC")
    patches, prefix = inter[0]
    tokens = torch.cat([prefix, patches], dim=1).numpy()
    stored = store.array("tokens")[:rows].astype(np.float32)
    norms = store.array("norms")[:rows]
    want = np.linalg.norm(tokens, axis=-1)
    cos = (stored * tokens).sum(-1) / (np.linalg.norm(stored, axis=-1) * want)
    return float(np.abs(norms / want - 1).max()), float(cos.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="vit-s,vit-l", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--n", type=int, default=4000, help="images per extraction")
    args = parser.parse_args()
    from vitreg.core.device import resolve_device
    from vitreg.extract.model import build_model
    from vitreg.extract.run import loop_settings

    if "tiny" in args.models:
        import tests.tiny_models  # noqa: F401
    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-gpu-", dir=os.environ.get("VITREG_BENCH_DIR")))
    jpegs = benchutil.load_jpegs(benchutil.image_folder(None, tmp))
    shards = benchutil.write_shards(jpegs, args.n, tmp / "shards", 1000)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}; torch {torch.__version__}; {args.n} images; {os.cpu_count()} cores")
    print(f"{'model':32s} {'bare':>8s} {'extract':>8s} {'ratio':>6s} {'host ms':>8s} "
          f"{'wait s':>7s} {'syncs':>6s} {'peak GiB':>8s} {'norm err':>9s} {'min cos':>8s}")
    for key in args.models.split(","):
        model = MODELS[key]
        loaded = build_model(model, weights="random",
                             img_size=224 if key != "tiny" else None)
        _, batch = loop_settings("auto", None, device, loaded.geometry)
        bare = bare_rate(loaded, device, batch, args.n)
        out = str(tmp / f"{key}.zarr")
        ext = extract_once(shards, model, out, device)
        counted = syncs(loaded, device, min(batch, 32))
        err, cos = against_fp32(loaded, out, jpegs)
        print(f"{model:32s} {bare:8.1f} {ext['rate']:8.1f} {ext['rate'] / bare:6.3f} "
              f"{ext['host_ms']:8.3f} {ext['waited']:7.2f} {sum(counted.values()):6.1f} "
              f"{ext['peak_gib']:8.2f} {err:9.2e} {cos:8.5f}")


if __name__ == "__main__":
    main()
