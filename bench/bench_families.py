"""Walk every architecture of timm's ViT families and say, for each, whether
vitreg reads it exactly (its family's adapter accepts it) or refuses it, and
why, in one sentence: a weightless (meta-device) build, no forward pass.
Exactness per family is checked by tests/test_extract/test_adapters.py.

    .venv/bin/python bench/bench_families.py [--list] [--exact]

`--exact` also builds each accepted architecture small (2 blocks of width 48,
sharpened weights, 4 x 4 patches) where its definition allows, and compares
`Capture`'s tokens and attention with timm's own unfused computation, as the
tests do for one member of each family.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import timm
import torch

from vitreg.extract.adapters import UnsupportedModelError, adapter_for, has_adapter

#: timm modules whose architectures vitreg claims to read
MODULES = ("vision_transformer", "eva", "deit", "beit", "vision_transformer_relpos",
           "vision_transformer_hybrid", "cait", "naflexvit")


def architectures() -> dict[str, str]:
    """Every architecture of `MODULES` -> its module."""
    return {name: module for module in MODULES for name in timm.list_models(module=module)}


def survey(name: str) -> str | None:
    """None if vitreg reads `name` exactly; else the one sentence that refuses it."""
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
    except Exception as exc:  # timm builders raise many types
        return f"timm cannot build it ({type(exc).__name__}: {exc})"
    if not has_adapter(model):
        return f"no adapter for timm's {type(model).__name__}"
    try:
        adapter = adapter_for(model)
        adapter.prefix_layout(), adapter.grid(), adapter.heads()
    except UnsupportedModelError as exc:
        return str(exc)
    return None


def small_build(name: str) -> str:
    """`exact`, `differs: ...`, or `not built small: ...` for one architecture."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_extract.test_adapters import SMALL, captured, reference, sharpen

    try:
        meta = adapter_for(timm.create_model(name, pretrained=False, num_classes=0,
                                             device="meta"))
        size = 4 * meta.patch_size()
        torch.manual_seed(42)
        model = sharpen(timm.create_model(name, pretrained=False, num_classes=0,
                                          img_size=size, **SMALL)).eval()
    except Exception as exc:  # a definition that fixes its width, depth or size
        return f"not built small: {type(exc).__name__}"
    batch = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    want = reference(model, (batch.float() / 255 - 0.5) / 0.25)
    got, geom = captured(model, size, batch)
    errors = {"tokens": np.abs(got["tokens"] - want["tokens"]).max()}
    query = adapter_for(model).query()
    if query:
        ref = want[query]
        ref = np.pad(ref, ((0, 0), (geom.tokens - ref.shape[1], 0)))
        errors["attention"] = np.abs(got["attention"] - ref).max()
    bad = {k: f"{v:.1e}" for k, v in errors.items()
           if v > (2e-3 * np.abs(want["tokens"]).max() + 2e-3 if k == "tokens" else 1e-3)}
    return f"differs: {bad}" if bad else "exact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every refusal")
    parser.add_argument("--exact", action="store_true",
                        help="also compare small builds with timm's unfused computation")
    args = parser.parse_args()
    start = time.perf_counter()
    names = architectures()
    refused = {name: reason for name in names if (reason := survey(name)) is not None}
    seconds = time.perf_counter() - start
    by_module = Counter(names.values())
    refused_by_module = Counter(names[n] for n in refused)
    print(f"{'module':28s} {'archs':>6s} {'exact':>6s} {'refused':>8s}")
    for module in MODULES:
        total, bad = by_module[module], refused_by_module[module]
        print(f"{module:28s} {total:6d} {total - bad:6d} {bad:8d}")
    exact = len(names) - len(refused)
    print(f"{'all':28s} {len(names):6d} {exact:6d} {len(refused):8d}  "
          f"({100 * exact / len(names):.1f}% exact; {seconds:.1f} s)")
    reasons = Counter(reason.split(":")[0] if "block" in reason.split(":")[0] else reason
                      for reason in refused.values())
    for reason, count in reasons.most_common():
        print(f"  {count:3d} x {reason}")
    if args.list:
        for name, reason in sorted(refused.items()):
            print(f"{name}: {reason}")
    if args.exact:
        outcomes = {name: small_build(name) for name in names if name not in refused}
        counts = Counter(o.split(":")[0] for o in outcomes.values())
        print(f"small builds of the {len(outcomes)} accepted: {dict(counts)}")
        for name, outcome in sorted(outcomes.items()):
            if outcome != "exact":
                print(f"  {name}: {outcome}")


if __name__ == "__main__":
    main()
