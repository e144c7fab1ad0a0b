"""The data path at full speed: `vitreg extract` with a nearly free model
against the decode-and-transform limit of this machine, in one run.

    .venv/bin/python bench/bench_datapath.py [--images DIR] [--n 2000]
        [--workers 0,1,2] [--repeats 2] [--variants base,...]

Shards hold the JPEGs of --images (by default 100 made from the photos that
installed packages ship; see benchutil.py) repeated under new keys to --n
samples. The model is `vit_tiny_patch16_224` cut to one
block and narrowed (`vit_pico_patch16_224_1block`), random weights: its forward
pass costs little next to decoding. The process tunes glibc's allocator as the
`vitreg` command does (`tune_allocator`) unless VITREG_NO_TUNING=1.

1. decoders, one process: vitreg's path (PIL decode + timm eval transform to
   uint8) against PIL decode only, simplejpeg and torchvision.io.decode_jpeg,
   and whether a faster decoder gives the same pixels;
2. the limit: the same images decoded and transformed by vitreg's own
   functions (no model, no tar reading), in as many processes as there are
   cores, bytes already in memory;
3. `run_extract` over the shards for each --workers value (and each
   prototype --variant), interleaved and repeated; the figure is the median
   loop img/s divided by the median limit.

Everything is interleaved (limit, then each configuration, per repeat) so
that the shared machine's noise hits all alike; the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import timm
import torch
from benchutil import add_images_option, image_folder, load_jpegs, write_shards
from PIL import Image
from timm.models import register_model
from timm.models.vision_transformer import _create_vision_transformer

from vitreg.core.runtime import tune_allocator
from vitreg.extract import data as data_mod
from vitreg.extract.data import decode_image
from vitreg.extract.run import run_extract
from vitreg.extract.transforms import eval_transform

TINY = "vit_tiny_patch16_224_1block"
PICO = "vit_pico_patch16_224_1block"


@register_model
def vit_tiny_patch16_224_1block(pretrained: bool = False, **kwargs):
    """vit_tiny_patch16_224 with one block: a forward pass that costs almost nothing."""
    args = {"patch_size": 16, "embed_dim": 192, "depth": 1, "num_heads": 3}
    return _create_vision_transformer("vit_tiny_patch16_224", pretrained=False, **{**args, **kwargs})


@register_model
def vit_pico_patch16_224_1block(pretrained: bool = False, **kwargs):
    """One block of width 64, one head: cheaper still (tiny-1block costs as much as a
    JPEG decode on this CPU, so it is not "nearly free" here)."""
    args = {"patch_size": 16, "embed_dim": 64, "depth": 1, "num_heads": 1}
    return _create_vision_transformer("vit_tiny_patch16_224", pretrained=False, **{**args, **kwargs})


# -- 1. decoders in one process ---------------------------------------------------------------

def decoders(transform) -> dict[str, Callable[[bytes], object]]:
    """Decoder candidates; simplejpeg's only if it is installed (pip install simplejpeg)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None

    def vitreg_pil(data: bytes):
        return transform(decode_image({"jpg": data}))

    def pil_decode(data: bytes):
        return decode_image({"jpg": data})

    def simplejpeg_decode(data: bytes):
        return simplejpeg.decode_jpeg(data, colorspace="RGB")

    def tv_decode(data: bytes):
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)

    def simplejpeg_then_pil(data: bytes):
        return transform(Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB")))

    def tv_then_pil(data: bytes):
        return transform(Image.fromarray(tv_decode(data).permute(1, 2, 0).numpy()))

    fns = {"vitreg (PIL + timm transform)": vitreg_pil, "PIL decode only": pil_decode,
           "simplejpeg decode only": simplejpeg_decode, "torchvision decode_jpeg only": tv_decode,
           "simplejpeg + timm transform": simplejpeg_then_pil,
           "torchvision + timm transform": tv_then_pil}
    return {k: v for k, v in fns.items() if simplejpeg is not None or "simplejpeg" not in k}


def time_decoder(fn, blobs: list[bytes]) -> float:
    start = time.perf_counter()
    for data in blobs:
        fn(data)
    return len(blobs) / (time.perf_counter() - start)


def same_pixels(transform, blobs: list[bytes]) -> dict[str, str]:
    fns = decoders(transform)
    ref = [np.asarray(fns["vitreg (PIL + timm transform)"](b)) for b in blobs]
    out = {}
    for name in [n for n in fns if n.endswith("+ timm transform")]:
        diffs = [np.abs(np.asarray(fns[name](b)).astype(int) - r).max() for b, r in zip(blobs, ref)]
        out[name] = f"max |diff| {max(diffs)}, identical images {sum(d == 0 for d in diffs)}/{len(diffs)}"
    return out


# -- 2. the decode-and-transform limit ---------------------------------------------------------

_LIMIT_STATE: dict = {}


def _limit_init(blobs, transform) -> None:
    torch.set_num_threads(1)
    _LIMIT_STATE["blobs"], _LIMIT_STATE["transform"] = blobs, transform


def _limit_work(part: tuple[int, int]) -> float:
    blobs, transform = _LIMIT_STATE["blobs"], _LIMIT_STATE["transform"]
    cpu = time.process_time()
    for i in range(*part):
        transform(decode_image({"jpg": blobs[i % len(blobs)]}))
    return time.process_time() - cpu


def decode_limit(pool, n: int, procs: int) -> tuple[float, float]:
    """images/s over all processes, and CPU ms per image."""
    step = -(-n // (procs * 8))
    parts = [(s, min(s + step, n)) for s in range(0, n, step)]
    start = time.perf_counter()
    cpu = sum(pool.map(_limit_work, parts, chunksize=1))
    return n / (time.perf_counter() - start), cpu / n * 1e3


# -- 3. prototypes (monkeypatches of vitreg, undone afterwards) -------------------------------

@contextlib.contextmanager
def patched(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _simplejpeg_decode_image(sample):
    """decode_image with simplejpeg for JPEG bytes (same pixels, see section 1), PIL otherwise."""
    import simplejpeg

    data = sample.get("jpg") or sample.get("jpeg")
    if data is not None and simplejpeg.is_jpeg(data):
        try:
            return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB"))
        except ValueError:
            pass  # CMYK and other oddities: PIL says why
    return _PIL_DECODE(sample)


_PIL_DECODE = data_mod.decode_image


class _StubCapture:
    """A device that costs nothing: the right arrays of zeros (the GPU regime's host side)."""

    def __init__(self, loaded, *, device, precision, with_options=(), token_mode="all", seed=42) -> None:
        g = loaded.geometry
        self.shapes = {"norms": (g.tokens,), "attention": (g.tokens,), "neighbor_cos": (g.patches,),
                       "pooled/cls": (g.dim,), "pooled/patch_mean": (g.dim,),
                       "pooled/registers": (max(g.registers, 0), g.dim), "tokens": (g.tokens, g.dim)}
        self.cache: dict[int, dict[str, torch.Tensor]] = {}
        self.names, self.device = list(self.shapes), torch.device("cpu")

    def __call__(self, images: torch.Tensor, rows=None) -> dict[str, torch.Tensor]:
        b = images.shape[0]
        if b not in self.cache:
            out = {k: torch.zeros((b, *s)) for k, s in self.shapes.items()}
            out["finite"] = torch.ones(b, dtype=torch.bool)
            self.cache[b] = out
        return dict(self.cache[b])


def _hwc_collate(self, items, pool=None):
    """ShardStream._collate filling a (B, H, W, 3) buffer straight from the PIL
    image (one memcpy per image), returned as a (B, 3, H, W) view: same pixels,
    no strided uint8 copy per image."""
    size = self.img_size
    hwc = torch.zeros((len(items), size, size, 3), dtype=torch.uint8)
    pil_steps = self.transform.transforms[:-1]  # Resize, CenterCrop; drop MaybePILToTensor
    errors, labels = [], []
    for i, (_, sample) in enumerate(items):
        error = ""
        if "__duplicate_of__" in sample:
            error = f"duplicate key: row {sample['__duplicate_of__']} has the same key"
        try:
            if not error:
                img = data_mod.decode_image(sample)
                for step in pil_steps:
                    img = step(img)
                hwc[i].numpy()[...] = np.asarray(img)
        except Exception as exc:  # noqa: BLE001 - as vitreg's _collate
            error = data_mod._reason("decode", exc)
        try:
            labels.append(data_mod.read_label(sample)[0])
        except (ValueError, UnicodeDecodeError) as exc:
            labels.append(-1)
            error = error or data_mod._reason("label", exc)
        errors.append(error)
    return {"row": torch.tensor([r for r, _ in items], dtype=torch.int64),
            "key": [s["__key__"] for _, s in items],
            "label": torch.tensor(labels, dtype=torch.int32),
            "image": hwc.permute(0, 3, 1, 2), "error": errors}


def variant(name: str) -> contextlib.AbstractContextManager:
    stack = contextlib.ExitStack()
    import vitreg.extract.run as run_mod

    if "stub" in name:
        stack.enter_context(patched(run_mod, "Capture", _StubCapture))
    if "hwc" in name:
        stack.enter_context(patched(data_mod.ShardStream, "_collate", _hwc_collate))
    if "simplejpeg" in name:
        stack.enter_context(patched(data_mod, "decode_image", _simplejpeg_decode_image))
    if "1thread" in name:
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        stack.callback(torch.set_num_threads, old)
    return stack


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_images_option(parser)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--per-shard", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--variants", default="base",
                        help="comma list of base, simplejpeg, 1thread, hwc, stub (joined by +)")
    parser.add_argument("--model", default=PICO)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-decoders", action="store_true")
    args = parser.parse_args()
    tune_allocator()
    procs = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-datapath-", dir=os.environ.get("VITREG_BENCH_DIR")))
    jpegs = load_jpegs(image_folder(args.images, tmp))
    shards = write_shards(jpegs, args.n, tmp / "shards", args.per_shard)
    model = timm.create_model(args.model, num_classes=0)
    cfg = timm.data.resolve_model_data_config(model)
    transform = eval_transform(cfg)
    blobs = [j.data for j in jpegs]
    print(f"{len(jpegs)} JPEGs x {args.n // len(jpegs)} = {args.n} samples in {len(shards)} shards; "
          f"{procs} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; {load()}")

    if not args.skip_decoders:
        fns = decoders(transform)
        rates: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                rates[name].append(time_decoder(fn, blobs))
        print(f"\n1. decoders, one process, {len(blobs)} images, median of {args.repeats}")
        base = statistics.median(rates["vitreg (PIL + timm transform)"])
        for name, r in rates.items():
            print(f"  {name:32s} {statistics.median(r):7.0f} img/s  ({statistics.median(r) / base:.2f}x vitreg)")
        for name, verdict in same_pixels(transform, blobs).items():
            print(f"  pixels of {name:28s} vs vitreg: {verdict}")

    configs = [(v, int(w)) for v in args.variants.split(",") for w in args.workers.split(",")]
    limit: list[float] = []
    limit_cpu: list[float] = []
    cpus: dict[tuple[str, int], list[tuple[float, float]]] = {c: [] for c in configs}
    loops: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    waits: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    ctx = mp.get_context("fork")
    with ctx.Pool(procs, initializer=_limit_init, initargs=(blobs, transform)) as pool:
        decode_limit(pool, len(blobs), procs)  # warm-up
        for rep in range(args.repeats):
            rate, cpu = decode_limit(pool, args.n, procs)
            limit.append(rate)
            limit_cpu.append(cpu)
            print(f"\nrepeat {rep}: decode limit ({procs} processes) {rate:7.1f} img/s, "
                  f"{cpu:.2f} CPU ms/img   {load()}")
            for v, w in configs:
                with variant(v):
                    main0, kids0 = time.process_time(), _children_cpu()
                    s = run_extract(shards=shards, model=args.model, out=str(tmp / "store.zarr"),
                                    weights="random", batch_size=args.batch_size,
                                    precision=args.precision, workers=w, overwrite=True, progress=False)
                    main_ms = (time.process_time() - main0) / s.processed * 1e3
                    kids_ms = (_children_cpu() - kids0) / s.processed * 1e3
                loops[(v, w)].append(s.images_per_second)
                waits[(v, w)].append(s.writer_waited)
                cpus[(v, w)].append((main_ms, kids_ms))
                print(f"  extract {v:22s} workers {w}: loop {s.images_per_second:7.1f} img/s, "
                      f"writer wait {s.writer_waited:.2f} s of {s.loop_seconds:.1f} s, CPU ms/img "
                      f"main {main_ms:.2f} workers {kids_ms:.2f}")
    lim = statistics.median(limit)
    lcpu = statistics.median(limit_cpu)
    print(f"\n{args.model} {args.precision} batch {args.batch_size}, {args.n} images; {load()}")
    print(f"decode limit, {procs} processes (median)  {lim:7.1f} img/s   decode CPU {lcpu:.2f} ms/img")
    print("CPU ms/img: main = model + capture + collate (w0) + writer; workers = tar reading + decode")
    for (v, w), r in loops.items():
        med = statistics.median(r)
        m = statistics.median(c[0] for c in cpus[(v, w)])
        k = statistics.median(c[1] for c in cpus[(v, w)])
        print(f"extract {v:22s} workers {w}      {med:7.1f} img/s   ratio {med / lim:.3f}   "
              f"writer wait {statistics.median(waits[(v, w)]):.2f} s   CPU ms/img main {m:.2f} "
              f"workers {k:.2f}")


if __name__ == "__main__":
    main()
