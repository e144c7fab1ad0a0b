"""Options of `vitreg extract` checked before any work: a run that cannot
start says why in one sentence and leaves no store behind."""

from __future__ import annotations

import difflib
import os
import shutil

import timm

from vitreg.core.errors import UsageError

from .adapters import ADAPTERS, UnsupportedModelError, adapter_for, has_adapter


def check_model(name: str, img_size: int | None) -> None:
    """`name` is a timm model vitreg reads exactly (it has an adapter, see
    `extract.adapters`), with a known pretrained tag if one is given, and
    `img_size` gives it at least 2 x 2 patches."""
    arch, _, tag = name.partition(".")
    if arch not in timm.list_models():
        names = timm.list_models()
        close = [n for n in names if n.startswith(arch)][:3] or \
            difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            "; list them with python -c \"import timm; print(timm.list_models('vit_*'))\""
        raise UsageError(f"--model {name}: timm has no model {arch!r}{hint}")
    if tag:
        known = [p.partition(".")[2] for p in timm.list_pretrained(f"{arch}.*")]
        if tag not in known:
            shown = ", ".join(known[:8]) or "none"
            raise UsageError(f"--model {name}: timm has no pretrained tag {tag!r} for {arch} "
                             f"(known: {shown}); drop the tag or choose one of those")
    try:
        meta = timm.create_model(arch, pretrained=False, num_classes=0, device="meta")
    except Exception as exc:  # timm builders raise many types
        raise UsageError(f"--model {name}: timm cannot build it ({exc})") from exc
    if not has_adapter(meta):
        raise UsageError(f"--model {name} is not a Vision Transformer vitreg reads (timm's "
                         f"{type(meta).__name__}; families: {', '.join(sorted(ADAPTERS))}), "
                         "such as vit_small_patch14_dinov2 or deit_small_patch16_224")
    try:
        adapter = adapter_for(meta)
    except UnsupportedModelError as exc:
        raise UsageError(f"--model {name}: vitreg cannot read it exactly: {exc}") from exc
    patch = adapter.patch_size()
    size = img_size if img_size is not None else adapter.img_size()
    check_grid((size // patch, size // patch), size, patch)


def check_grid(grid: tuple[int, int], img_size: int, patch: int) -> None:
    """At least 2 x 2 patches: the neighbour similarity compares each with its neighbours."""
    if min(grid) < 2:
        raise UsageError(
            f"--img-size {img_size} gives a {grid[0]} x {grid[1]} grid of {patch}-px patches; "
            f"vitreg needs at least 2 x 2 patches: use --img-size {2 * patch} or more")


#: Batches a DataLoader worker keeps ready (`prefetch_factor` in `run._extract_rows`).
PREFETCH = 4


def check_shared_memory(workers: int, batch_bytes: int, shm: str = "/dev/shm",
                        ranks_on_node: int = 1) -> None:
    """Decode workers hand each batch to the main process through `shm`; a
    container's default of 64 MB kills them (a "bus error" deep in torch) as
    soon as a few 38 MB ViT-L batches are in flight. Refuse such a run first.
    The `ranks_on_node` ranks of a node (torchrun) all fill the one `shm`."""
    if workers == 0 or not os.path.isdir(shm):
        return
    need = ranks_on_node * (workers * PREFETCH * batch_bytes + batch_bytes)  # + the batch in use
    free = shutil.disk_usage(shm).free
    if free < need:
        mib = 2**20
        who = f"{workers} decode worker(s)" if ranks_on_node == 1 else \
            f"{ranks_on_node} ranks of {workers} decode worker(s) each"
        raise UsageError(
            f"{shm} has {free // mib} MiB free, and {who} need about "
            f"{-(-need // mib)} MiB there for their batches ({batch_bytes // mib} MiB each); "
            f"give the container more (docker run --shm-size={-(-2 * need // 2**30)}g), or "
            "use fewer --workers, a smaller --batch-size, or --workers 0")
