"""The prepared GPU check: `vitreg extract` against the bare forward pass, per model,
in steady state, with the loop's parts, the decode and writer rates on their own,
and an fp32 recomputation of stored rows.

Run it with `bench/gpu/run.sh` (installs the bundle `bench/gpu/prepare.sh` made
into a temporary folder, no network), or here from a clone's venv:

    .venv/bin/python bench/gpu/check.py --device cpu --models tiny --seconds 3

Per model (default ViT-S/14-reg4 and ViT-L/14-reg4 at 224 px, bf16, random
weights: nothing is downloaded), one line per figure, flushed as it comes:

- `bare`: `forward_features` on a uint8 batch already on the device,
  normalised there with mean and std made on the device once, at the batch
  size `vitreg extract` chooses, timed after warm-up over `--seconds / 3`;
- `decode`: the data path alone (the plan's stream in `--workers auto`
  DataLoader workers, no model), steady state;
- `writer`: `ChunkWriter` alone on this model's rows (lent, as the loop puts
  them) against a plain `write()` of the same bytes, same disk;
- `extract`: `run_extract` with the defaults on about `--seconds` of images
  (from the rates above), rate over the batches between the warm-up (the
  first tenth, at least 3 batches) and the tail (the last 2), its ratio to
  `bare`, the loop's host time per batch by part (waiting for input, queueing
  the device step, waiting on the copy event, handing to the writer, waiting
  on the writer), the main process's CPU ms per image (all its threads),
  GPU busy (NVML, sampled every 0.1 s, when it answers), GPU memory peak;
- `extract --decode gpu` (on CUDA, or with `--gpu-decode`): the same run
  with the images decoded and resized on the device, against `bare` and
  the default decoding;
- `fp32`: stored rows of several batches (the first, middle ones and the
  last, partial one) against an fp32 forward of the same JPEGs: worst
  relative error of `norms` and smallest cosine of `tokens`.

The images are `--images DIR` (the ImageNet samples the bundle carries),
repeated under new keys into webdataset shards.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchutil
sys.path.append(str(HERE.parents[1]))  # tests.tiny_models (--models tiny), after the install
import benchutil  # noqa: E402

MODELS = {"vit-s": "vit_small_patch14_reg4_dinov2", "vit-l": "vit_large_patch14_reg4_dinov2",
          "vit-g": "vit_giant_patch14_reg4_dinov2", "tiny": "tiny_dinov2_reg4"}
NEEDED = ("zarr", "numcodecs", "webdataset", "google_crc32c", "crc32c", "donfig", "timm", "PIL",
          "vitreg.extract.run")


def say(line: str) -> None:
    print(line, flush=True)


def preconditions(args: argparse.Namespace, tmp: Path) -> None:
    """Packages, the device, /dev/shm and the disk, before any work; exit 2 if one fails."""
    problems = []
    for name in NEEDED:
        try:
            module = importlib.import_module(name)
            say(f"ok   package {name} {getattr(module, '__version__', '')}".rstrip())
        except ImportError as exc:
            problems.append(f"package {name}: {exc}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append("device: torch sees no CUDA device")
    shm = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    # what `vitreg extract`'s defaults take on a GPU: a worker per core but one
    # (at most 16), 4 batches of 256 images of 224 px each, + the one in use
    workers = max(1, min((os.cpu_count() or 2) - 1, 16))
    need = (workers * 4 + 1) * 256 * 3 * 224 * 224 if args.device.startswith("cuda") else 0
    (problems.append if shm < need else lambda m: say("ok   " + m))(
        f"/dev/shm {shm / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed by {workers} "
        "decode workers")
    disk = shutil.disk_usage(tmp).free
    need = args.max_images * (200e3 + 600e3)  # shards (real JPEGs) + a ViT-L store
    (problems.append if disk < need else lambda m: say("ok   " + m))(
        f"disk {tmp}: {disk / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed at most")
    if problems:
        for problem in problems:
            say(f"FAIL {problem}")
        sys.exit(2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(loaded, device: torch.device, batch: int, seconds: float) -> float:
    """Steady-state img/s of `forward_features` on a batch already on the device."""
    from vitreg.extract.capture import autocast

    model = loaded.model.to(device).eval()
    size = loaded.geometry.img_size
    cfg = loaded.data_config
    mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1) * 255
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    with torch.inference_mode(), autocast("bf16", device):
        def once():
            model.forward_features((images.float() - mean) / std)
        for _ in range(3):
            once()
        sync(device)
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds or done < 3:
            once()
            done += 1
            if done % 4 == 0:
                sync(device)
        sync(device)
    return done * batch / (time.perf_counter() - start)


def steady(ends: list[tuple[float, int]], start: float) -> tuple[float, int]:
    """(img/s, batches) between the warm-up (a tenth, >= 3 batches) and the tail (2)."""
    first = max(3, len(ends) // 10)
    last = len(ends) - 2
    if last - first < 2:  # too few batches: the whole loop
        return sum(n for _, n in ends) / (ends[-1][0] - start), len(ends)
    rows = sum(n for _, n in ends[first + 1: last + 1])
    return rows / (ends[last][0] - ends[first][0]), last - first


def decode_rate(shards: list[str], loaded, workers: int, batch: int, n: int) -> float:
    """Steady-state img/s of the data path alone: the plan's stream in workers, no model."""
    from torch.utils.data import DataLoader

    from vitreg.core.runtime import usable_cores
    from vitreg.extract.checks import PREFETCH
    from vitreg.extract.plan import plan_shards, plan_stream

    plan = plan_shards(shards, limit=n)
    todo = np.ones(plan.n_rows, dtype=bool)
    stream = plan_stream(plan, loaded, todo, batch,
                         decode_threads=1 if workers else usable_cores())
    loader = DataLoader(stream, batch_size=None, num_workers=workers,
                        prefetch_factor=PREFETCH if workers else None)
    start, ends = time.perf_counter(), []
    for item in loader:
        ends.append((time.perf_counter(), len(item["row"])))
    return steady(ends, start)[0]


def writer_rate(geometry, megabytes: float, batch: int, tmp: Path) -> tuple[float, float]:
    """(MB/s of `ChunkWriter` alone, MB/s of a plain write of the same bytes),
    about `megabytes` of this model's rows, chunked and sharded as for
    ImageNet's 1,281,167 images (fewer chunks a shard if that is too much).
    Durable rates, each run after a sync (`bench_writer.timed`): to the page
    cache alone, one run pays for the writeback of the one before."""
    import bench_writer

    from vitreg.cache.layout import chunk_rows_for_store, shard_rows_for_store

    chunk = chunk_rows_for_store(geometry, 1_281_167)
    shard = shard_rows_for_store(geometry, 1_281_167, chunk) or chunk
    rows = int(megabytes * 1e6 // (geometry.tokens * geometry.dim * 2))
    shard = min(shard, max(chunk, rows // 2 // chunk * chunk))
    rows = max(2 * shard, rows - rows % shard)
    bench_writer.VIT_L, bench_writer.CHUNK_ROWS, bench_writer.SHARD_ROWS = geometry, chunk, shard
    data = bench_writer.rows_of_data(2 * shard)
    payload = sum(v.nbytes for v in data.values() if v.dtype != object) * rows // (2 * shard)
    times = {"writer": [], "plain": []}
    for repeat in range(2):
        for name in ("writer", "plain") if repeat % 2 == 0 else ("plain", "writer"):
            url = tmp / f"writer-{name}-{repeat}"
            if name == "writer":
                run = lambda u: bench_writer.run_writer(u, data, rows, batch, 2)  # noqa: E731
            else:
                run = lambda u: bench_writer.run_plain(u, data, rows)  # noqa: E731
            times[name].append(bench_writer.timed(run, str(url))[1])
            shutil.rmtree(url)
    return tuple(payload / statistics.median(times[k]) / 1e6 for k in ("writer", "plain"))


class GpuBusy:
    """NVML's GPU utilisation, sampled every 0.1 s in a thread (None without NVML)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples = device, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # no NVML here: no figure
                return

    def __enter__(self) -> GpuBusy:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def busy(self) -> str:
        return f"{statistics.mean(self.samples):.0f}%" if self.samples else "n/a"


def extract(shards: list[str], model: str, out: str, device: torch.device, img_size,
            batch_size: int | None, limit: int, decode: str = "cpu") -> dict:
    import vitreg.extract.run as run_mod

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with benchutil.loop_cpu() as cpu, GpuBusy(device) as gpu:
        summary = run_mod.run_extract(
            shards=shards, model=model, out=out, weights="random", img_size=img_size,
            device=str(device), precision="bf16", overwrite=True, progress=False,
            batch_size=batch_size, decode=decode, limit=limit)
    rate, batches = steady(summary.batch_ends, start + summary.seconds - summary.loop_seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {"summary": summary, "rate": rate, "batches": batches, "gpu": gpu.busy,
            "host_ms": cpu["loop"] / summary.processed * 1e3, "peak": peak}


def against_fp32(loaded, store_url: str, jpegs, device: torch.device, batch: int):
    """(rows checked, worst relative error of `norms`, smallest token cosine) over
    rows of the first, a middle and the last (partial) batch."""
    from vitreg.cache import open_store
    from vitreg.extract.capture import normalize
    from vitreg.extract.data import decode_image
    from vitreg.extract.transforms import eval_transform

    store = open_store(store_url)
    n = store.n_rows
    rows = sorted({0, 1, batch - 1, min(batch, n - 1), n // 2, (n // batch) * batch, n - 1}
                  & set(range(n)))
    by_key = {j.key: j for j in jpegs}
    keys = [str(store.array("key")[r]) for r in rows]
    transform = eval_transform(loaded.data_config)
    # a repeated image's key is the original's with "_rNNNN" appended
    bases = [k if k in by_key else k.rsplit("_r", 1)[0] for k in keys]
    images = torch.stack([transform(decode_image({"jpg": by_key[b].data})) for b in bases])
    model = loaded.model.float().to(device).eval()
    with torch.inference_mode():
        x = normalize(images.to(device), loaded.data_config["mean"], loaded.data_config["std"])
        _, inter = model.forward_intermediates(
            x, indices=[len(model.blocks) - 1], return_prefix_tokens=True, norm=False,
            output_fmt="NLC")
    patches, prefix = inter[0]
    want = torch.cat([prefix, patches], dim=1).float().cpu().numpy()
    stored = np.stack([store.array("tokens")[r] for r in rows]).astype(np.float32)
    norms = np.stack([store.array("norms")[r] for r in rows])
    length = np.linalg.norm(want, axis=-1)
    cos = (stored * want).sum(-1) / (np.linalg.norm(stored, axis=-1) * length)
    return rows, float(np.abs(norms / length - 1).max()), float(cos.min())


def check_model(key: str, args: argparse.Namespace, device: torch.device, tmp: Path,
                jpegs: list, shards: list[str]) -> None:
    from vitreg.extract.model import build_model
    from vitreg.extract.run import loop_settings

    model = MODELS[key]
    img_size = None if key == "tiny" else 224
    loaded = build_model(model, weights="random", img_size=img_size)
    workers, batch = loop_settings("auto", args.batch_size, device, loaded.geometry)
    bare = bare_rate(loaded, device, batch, args.seconds / 3)
    say(f"{model}: bare forward {bare:.1f} img/s (batch {batch}, bf16, steady state)")
    probe = min(args.max_images, max(4 * batch, int(bare * args.seconds / 6)))
    decode = decode_rate(shards, loaded, workers, batch, probe)
    say(f"{model}: decode only {decode:.1f} img/s ({workers} workers, batch {batch})")
    row_bytes = loaded.geometry.tokens * loaded.geometry.dim * 2
    writer, plain = writer_rate(loaded.geometry, args.writer_mb, batch, tmp)
    say(f"{model}: writer only {writer:.0f} MB/s durable = {writer * 1e6 / row_bytes:.0f} img/s of "
        f"tokens; plain write() {plain:.0f} MB/s; ratio {writer / plain:.3f}")
    n = int(min(bare, decode) * args.seconds)
    n = min(args.max_images, max(6 * batch, n - n % batch) + batch // 3 + 1)  # last batch partial
    out = str(tmp / f"{key}.zarr")
    ext = extract(shards, model, out, device, img_size, args.batch_size, limit=n)
    summary = ext["summary"]
    say(f"{model}: extract {ext['rate']:.1f} img/s in steady state ({ext['batches']} batches "
        f"of {n} images; whole loop {summary.images_per_second:.1f}); extract / bare "
        f"{ext['rate'] / bare:.3f}")
    per_batch = {k: v / max(1, len(summary.batch_ends)) * 1e3 for k, v in summary.phases.items()}
    back = (summary.writer_waited - summary.phases.get("held", 0.0)) \
        / max(1, len(summary.batch_ends)) * 1e3
    say(f"{model}: loop ms per batch: input {per_batch.get('input', 0):.1f}, launch "
        f"{per_batch.get('launch', 0):.1f}, copy event {per_batch.get('event', 0):.1f}, put "
        f"{per_batch.get('put', 0):.1f}, writer releasing buffers {per_batch.get('held', 0):.1f}, "
        f"writer back-pressure {back:.1f}")
    say(f"{model}: main process {ext['host_ms']:.3f} CPU ms/img (all its threads); GPU busy "
        f"{ext['gpu']}; GPU memory peak {ext['peak']:.2f} GiB; {summary.ok} ok, "
        f"{summary.failed} failed")
    rows, err, cos = against_fp32(loaded, out, jpegs, device, batch)
    say(f"{model}: fp32 recomputation of rows {rows}: worst norm relative error {err:.2e}, "
        f"smallest token cosine {cos:.5f}")
    if args.gpu_decode:
        gpu = extract(shards, model, out, device, img_size, args.batch_size, limit=n,
                      decode="gpu")
        say(f"{model}: extract --decode gpu {gpu['rate']:.1f} img/s in steady state; / bare "
            f"{gpu['rate'] / bare:.3f}; / default decoding {gpu['rate'] / ext['rate']:.3f}; "
            f"decode on the device {gpu['summary'].phases.get('decode', 0) / max(1, len(gpu['summary'].batch_ends)) * 1e3:.1f} ms per batch; "
            f"main process {gpu['host_ms']:.3f} CPU ms/img")
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="vit-s,vit-l", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="steady-state time to aim each extraction at")
    parser.add_argument("--max-images", type=int, default=40000,
                        help="at most this many images per extraction (disk)")
    parser.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=None,
                        help="also extract with --decode gpu (default: on a CUDA device)")
    parser.add_argument("--writer-mb", type=float, default=2000,
                        help="megabytes of tokens the writer-only figure writes per run")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: what `vitreg extract` chooses (a quick test: 8)")
    benchutil.add_images_option(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-gpu-", dir=os.environ.get("VITREG_BENCH_DIR")))
    preconditions(args, tmp)
    if "tiny" in args.models:
        import tests.tiny_models  # noqa: F401
    from vitreg.core.device import resolve_device

    device = resolve_device(args.device)
    if args.gpu_decode is None:
        args.gpu_decode = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    say(f"{name}; torch {torch.__version__}; {os.cpu_count()} cores; images "
        f"{args.images or 'packaged photos'}; in {tmp}")
    jpegs = benchutil.load_jpegs(benchutil.image_folder(args.images, tmp))
    start = time.perf_counter()
    try:
        # one set of shards for every figure; each run takes the first rows it needs
        shards = benchutil.write_shards(jpegs, args.max_images, tmp / "shards", 1000)
        say(f"shards: {args.max_images} images in {len(shards)} shards, "
            f"{time.perf_counter() - start:.0f} s")
        for key in args.models.split(","):
            check_model(key, args, device, tmp, jpegs, shards)
            say(f"{MODELS[key]}: done at {time.perf_counter() - start:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
