"""What exact [CLS] attention costs: timm's unfused path on the last block only,
read at its `attn_drop` (extract/adapters/base.py), against the fused model.

    .venv/bin/python bench/bench_attention.py [--model NAME] [--batch-size 16]
        [--repeats 7] [--precision fp32|bf16]

Interleaved and repeated on one random batch (CPU), medians and spread (min-max)
in ms per image:
  fused   `forward_features`, every block fused (no attention at all)
  qkv     fused, plus the pre-1.6 way: a hook on the last block's `qkv` output
          and softmax(q_cls k^T) recomputed from it (wrong for RoPE/BEiT models)
  exact   the last block on timm's unfused path, its softmax's [CLS] row kept
  capture `Capture` as `vitreg extract` runs it (every array, exact attention)
It prints the ratios of medians and what the unfused block adds per image on a
GPU, by count (kernels, bytes of the T x T matrix).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from vitreg.core.runtime import tune_allocator
from vitreg.extract.adapters.base import project_qkv
from vitreg.extract.capture import Capture, autocast
from vitreg.extract.model import build_model


def timed(fn, images: int) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch14_reg4_dinov2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    tune_allocator()
    torch.manual_seed(0)
    loaded = build_model(args.model, weights="random", img_size=224)
    adapter, b = loaded.adapter, args.batch_size
    cpu = torch.device("cpu")
    cap = Capture(loaded, device=cpu, precision=args.precision)  # taps the last block
    attn = adapter.attention_module(adapter.depth() - 1)
    images = torch.randint(0, 255, (b, 3, 224, 224), dtype=torch.uint8)
    x = torch.randn(b, 3, 224, 224)
    kept: list[torch.Tensor] = []

    def recompute(module, args_, output):  # the pre-1.6 taps, for comparison
        q, k, _ = project_qkv(attn, args_[0])
        kept.append(((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1))

    def forward(fused: bool, old: bool) -> None:
        cap.taps.remove()  # no capture hooks: the bare forward pass
        attn.fused_attn = fused
        handle = attn.register_forward_pre_hook(lambda m, a: recompute(m, a, None)) \
            if old else None
        with torch.inference_mode(), autocast(args.precision, cpu):
            adapter.features(x)
        if handle:
            handle.remove()
        kept.clear()

    def exact() -> None:
        attn.fused_attn = False
        hook = attn.attn_drop.register_forward_hook(
            lambda m, a, o: kept.append(o[:, :, 0].float().mean(1)))
        with torch.inference_mode(), autocast(args.precision, cpu):
            adapter.features(x)
        hook.remove()
        kept.clear()

    def capture() -> None:
        fresh = Capture(loaded, device=cpu, precision=args.precision)
        fresh(images, np.arange(b))
        fresh.taps.remove()

    variants = {"fused": lambda: forward(True, False), "qkv": lambda: forward(True, True),
                "exact": exact, "capture": capture}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, b))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.model} 224 px, batch {b}, {args.precision}, {torch.get_num_threads()} "
          f"threads, {args.repeats} interleaved repeats (ms/img: median, min-max)")
    for name, t in times.items():
        print(f"  {name:8s} {med[name]:7.2f}  {min(t):7.2f}-{max(t):7.2f}")
    print(f"  exact / fused  {med['exact'] / med['fused']:.3f}")
    print(f"  exact / qkv    {med['exact'] / med['qkv']:.3f}")
    extra = med["exact"] - med["fused"]
    print(f"  (exact - fused) / capture  {extra / med['capture']:+.3f} of the extraction")
    t, h = loaded.geometry.tokens, loaded.heads
    matrix = h * t * t * (2 if args.precision == "bf16" else 4)
    print(f"GPU, per image, by count: the tapped block runs 5 kernels (q*scale, q@k^T, "
          f"softmax, attn@v, and the [CLS] row's mean) instead of 1 fused SDPA, and "
          f"materialises its {h} x {t} x {t} matrix: {matrix / 1e6:.2f} MB written by q@k^T, "
          f"read and written by softmax, read by attn@v ({4 * matrix / 1e6:.2f} MB of "
          f"traffic; {matrix * 256 / 2**20:.0f} MiB held at batch 256)")


if __name__ == "__main__":
    main()
