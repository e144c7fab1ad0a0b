"""What the host costs a GPU, measured on CPUs: before (a source tree given by
`--before`, e.g. a `git worktree` of an older commit) and after (this tree).

    .venv/bin/python bench/bench_host.py [--before /tmp/old-tree] [--n 4000]

Prints, in one run:

1. Main-process CPU ms per image of `run_extract` (timm's `test_vit`, a nearly
   free model, `--workers 2 --batch-size 256`, CPU): the CPU time of the main
   process (its threads, not the decode workers) over the loop, less the CPU
   time of the bare forward pass over the same images in the same child, with
   as many torch threads as the loop had. That remainder is what one process
   spends per image besides the model: it bounds the images/s one process can
   hand a GPU. Below it, the main process's CPU per kind of thread (the whole
   `run_extract` call, so planning too). On a CPU part of the remainder is the
   device's share of the capture (norms, casts, neighbour cosines), which a GPU
   would run.
2. The writer's wait per batch with ViT-L-shaped batches (256 rows of
   (261, 1024) float16 tokens, chunks of 16 rows) when each batch's device
   step takes `--step-ms`: the old bound (two chunks in flight, one file per
   chunk) against `WriteTarget.writer`'s (two batches) into a store sharded
   by the default policy; and the files each wrote.
3. Files per 1,000 rows of the stores written.
4. The data path with the defaults (`--workers auto`, batch size auto): a
   one-block model against the decode limit (bench_datapath.py's: decoding
   alone on every core), and the same with a free model (bench_datapath.py's
   stub capture: arrays of zeros), the host side of a GPU run. The one-block
   model is not free here: its forward pass takes about 0.4-0.8 CPU ms of the
   4-5 each image costs, on the cores the decode limit gives to decoding.

5. One decode worker's CPU per image (read the sample from its shard, decode,
   transform, collate) against the decode limit's per-image work, one thread,
   before and after.

Each extraction runs in its own child process (`benchutil.child_result`);
`--before` runs the same child against another source tree, through a
package folder of links that shadows the editable install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchutil  # noqa: E402

PACKAGES = {"core": "core", "cache": "cache", "extract": "extract", "probe": "probe",
            "analysis": "analysis"}


def linked_package(tree: Path, out: Path) -> Path:
    """A folder holding `vitreg/` made of links into `tree`, as the install maps it."""
    pkg = out / "vitreg"
    pkg.mkdir(parents=True, exist_ok=True)
    for item in (tree / "vitreg").iterdir():
        if not (pkg / item.name).exists():
            (pkg / item.name).symlink_to(item)
    for name, folder in PACKAGES.items():
        if not (pkg / name).exists() and (tree / folder).is_dir():
            (pkg / name).symlink_to(tree / folder)
    return out


def thread_cpu(base: dict[int, float] | None = None) -> dict[int, float]:
    """CPU seconds of each live thread of this process (Linux), less `base`."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick - (base or {}).get(int(tid), 0)
    return out


@contextlib.contextmanager
def threads_watched(every: float = 0.05) -> Iterator[dict[str, float]]:
    """CPU seconds per kind of thread while the block runs: the main thread,
    vitreg's named threads (writer, decode prefetch), and the rest (torch's
    OpenMP threads, zarr's and the DataLoader's), sampled every `every` s
    so that threads that end are counted too."""
    base, last, names = thread_cpu(), {}, {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            last.update(thread_cpu(base))
            names.update({t.native_id: t.name for t in threading.enumerate()})

    watcher = threading.Thread(target=sample, name="bench-watcher", daemon=True)
    watcher.start()
    kinds: dict[str, float] = {}
    try:
        yield kinds
    finally:
        stop.set()
        watcher.join()
        last.update(thread_cpu(base))
        for tid, seconds in last.items():
            name = names.get(tid, "")
            kind = "main thread" if tid == os.getpid() else "bench watcher" \
                if name == "bench-watcher" else "vitreg writer" if "writer" in name else \
                "vitreg decode" if "decode" in name else "torch and other threads"
            kinds[kind] = kinds.get(kind, 0.0) + seconds


def host_child(shards: list[str], out: str, batch: int, workers: int, img_size: int) -> None:
    """In a child: main-process CPU over the extraction loop, per kind of
    thread, and over a bare forward with the loop's torch threads."""
    import timm
    import torch

    import vitreg.extract.run as run_mod

    # the loop's torch threads, for the bare forward (an older tree has no
    # such setting: its loop used all)
    used: list[int | None] = [None]
    real_threads = getattr(run_mod, "intra_op_threads", None)
    if real_threads is not None:
        def recording(threads):
            used[0] = threads
            return real_threads(threads)

        run_mod.intra_op_threads = recording
    with benchutil.loop_cpu() as cpu, threads_watched() as kinds:
        summary = run_mod.run_extract(
            shards=shards, model="test_vit", out=out, weights="random", img_size=img_size,
            batch_size=batch, workers=workers, device="cpu", overwrite=True, progress=False)
    model = timm.create_model("test_vit", num_classes=0, img_size=img_size).eval()
    x = torch.randn(batch, 3, img_size, img_size)
    if used[0] is not None:
        torch.set_num_threads(used[0])  # this child ends after the bare forward
    with torch.inference_mode():
        model.forward_features(x)  # warm-up
        start = time.process_time()
        for _ in range(-(-summary.processed // batch)):
            model.forward_features(x)
        forward = time.process_time() - start
        torch_threads = torch.get_num_threads()
    files = sum(len(f) for _, _, f in os.walk(out))
    benchutil.report({"n": summary.processed, "loop_cpu": cpu["loop"], "forward_cpu": forward,
                      "files": files, "rows": summary.rows, "waited": summary.writer_waited,
                      "threads": kinds, "torch_threads": torch_threads})


def worker_child(shards: list[str], img_size: int) -> None:
    """In a child: one decode worker's CPU per image (the loop's `ShardStream`
    on one thread: read, decode, transform, collate) against the decode
    limit's (decode and transform of the same JPEGs held in memory)."""
    import bench_datapath as bd
    import numpy as np
    import torch

    from vitreg.extract.data import ShardStream
    from vitreg.extract.plan import plan_shards
    from vitreg.extract.transforms import eval_transform

    torch.set_num_threads(1)
    plan = plan_shards(shards[:1])
    cfg = {"input_size": (3, img_size, img_size), "interpolation": "bicubic",
           "crop_pct": 0.875, "crop_mode": "center", "mean": (0.5,) * 3, "std": (0.5,) * 3}
    transform = eval_transform(cfg)
    # an older tree passes byte ranges (`spans`), this one member offsets (`layouts`)
    where = {"layouts": plan.layouts} if hasattr(plan, "layouts") else {"spans": plan.spans}
    stream = ShardStream(plan.urls, offsets=plan.offsets, todo=np.ones(plan.n_rows, bool),
                         batch_size=32, img_size=img_size, transform=transform, **where)
    with tarfile.open(shards[0]) as tar:
        blobs = [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]
    bd._limit_init(blobs, transform)
    start = time.process_time()
    n = sum(len(batch["row"]) for batch in stream)
    stream_ms = (time.process_time() - start) / n * 1e3
    limit_ms = bd._limit_work((0, len(blobs))) / len(blobs) * 1e3
    benchutil.report({"stream_ms": stream_ms, "limit_ms": limit_ms})


def run_child(args: list[str], pythonpath: Path | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}:{env.get('PYTHONPATH', '')}"
    return benchutil.child_result([sys.executable, __file__, "--child", json.dumps(args)], env=env)


def writer_waits(tmp: Path, rows: int, step_ms: float) -> dict[str, float]:
    """Seconds per batch the loop waits on the writer, ViT-L-shaped batches."""
    from types import SimpleNamespace

    from vitreg.cache import ChunkWriter, Geometry, arrays_for
    from vitreg.cache.layout import shard_rows_for_store
    from vitreg.cache.store import create_store, write_rows
    from vitreg.cache.target import WriteTarget
    from vitreg.testing import synthetic_attrs

    geom = Geometry(registers=4, grid=(16, 16), dim=1024, depth=24, img_size=224)
    batch, chunk = 256, 16
    tokens = np.random.default_rng(0).standard_normal((batch, geom.tokens, geom.dim)) \
        .astype(np.float16)
    waits = {}
    for label in ("old: 2 chunks in flight, unsharded", "new: 2 batches in flight, sharded"):
        shard = shard_rows_for_store(geom, rows, chunk) if label.startswith("new") else None
        root = create_store(str(tmp / "vitl.zarr"), geometry=geom, n_rows=rows, chunk_rows=chunk,
                            shard_rows=shard, specs=arrays_for([], "all"),
                            attrs=synthetic_attrs(geom), overwrite=True)
        if label.startswith("old"):
            writer = ChunkWriter(root, ["tokens", "status"], max_pending=2)
        else:
            view = SimpleNamespace(_root=root, names=["tokens", "status"], rows=(0, rows),
                                    chunk_rows=write_rows(root["status"]))
            writer = WriteTarget.writer(view, batch_rows=batch)
        for first in range(0, rows, batch):
            time.sleep(step_ms / 1e3)  # the device computes the next batch
            writer.put(np.arange(first, first + batch),
                       {"tokens": tokens, "status": np.ones(batch, np.uint8)})
        in_loop = writer.waited
        writer.close()
        waits[label] = in_loop / (rows // batch)
        files = sum(len(f) for _, _, f in os.walk(tmp / "vitl.zarr"))
        waits[f"files per 1000 rows ({label[:3]}, tokens + status)"] = files / rows * 1e3
    return waits


def data_path(tmp: Path, shards: list[str], n: int) -> tuple[dict[str, float], float]:
    """Extract img/s with the defaults and with 2 workers, and the decode
    limit in img/s; one-block model."""
    import multiprocessing as mp

    import bench_datapath as bd
    import timm

    from vitreg.extract.run import run_extract
    from vitreg.extract.transforms import eval_transform

    model = timm.create_model(bd.PICO, num_classes=0)
    transform = eval_transform(timm.data.resolve_model_data_config(model))
    blobs = [j.data for j in benchutil.load_jpegs(benchutil.image_folder(None, tmp))]
    procs = os.cpu_count() or 1
    with mp.get_context("fork").Pool(procs, initializer=bd._limit_init,
                                     initargs=(blobs, transform)) as pool:
        bd.decode_limit(pool, len(blobs), procs)
        limit, _ = bd.decode_limit(pool, n, procs)
    import vitreg.extract.run as run_mod

    rates = {}
    for label, workers in (("defaults", "auto"), ("--workers 2", 2), ("defaults, free model", "auto")):
        stub = bd.patched(run_mod, "Capture", bd._StubCapture) if "free" in label else \
            contextlib.nullcontext()
        with stub:
            summary = run_extract(shards=shards, model=bd.PICO, out=str(tmp / "pico.zarr"),
                                  weights="random", device="cpu", overwrite=True, progress=False,
                                  workers=workers)
        rates[label] = summary.images_per_second
    return rates, limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--before", type=Path, help="an older source tree to compare with")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vitl-rows", type=int, default=1024)
    parser.add_argument("--step-ms", type=float, default=300.0,
                        help="device time per ViT-L batch of 256 (an H200 in bf16: about 85, "
                        "faster than this machine's disk takes 137 MB)")
    args = parser.parse_args()
    if args.child:
        child_args = json.loads(args.child)
        (worker_child if len(child_args) == 2 else host_child)(*child_args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-host-", dir=os.environ.get("VITREG_BENCH_DIR")))
    jpegs = benchutil.load_jpegs(benchutil.image_folder(None, tmp))
    shards = benchutil.write_shards(jpegs, args.n, tmp / "shards", 1000)
    trees = {"after": None}
    if args.before:
        trees = {"before": linked_package(args.before, tmp / "before-pkg"), **trees}
    print(f"{len(jpegs)} JPEGs x {args.n // len(jpegs)} = {args.n} samples; test_vit at "
          f"{args.img_size} px, --workers 2 --batch-size 256, device cpu; "
          f"load {os.getloadavg()[0]:.2f}")
    per_image: dict[str, list[float]] = {k: [] for k in trees}
    worker: dict[str, list[dict]] = {k: [] for k in trees}
    files = {}
    for rep in range(args.repeats):
        for name, path in (trees.items() if rep % 2 == 0 else reversed(trees.items())):
            worker[name].append(run_child([shards, args.img_size], path))
            r = run_child([shards, str(tmp / f"{name}.zarr"), 256, 2, args.img_size], path)
            # the bench's own watcher thread is not vitreg's
            watcher = r["threads"].get("bench watcher", 0.0)
            ms = (r["loop_cpu"] - watcher - r["forward_cpu"]) / r["n"] * 1e3
            per_image[name].append(ms)
            files[name] = r["files"] / r["rows"] * 1e3
            print(f"  {name:6s} loop {r['loop_cpu'] / r['n'] * 1e3:.2f} CPU ms/img, bare forward "
                  f"{r['forward_cpu'] / r['n'] * 1e3:.2f} ({r['torch_threads']} torch threads): "
                  f"host {ms:.2f} ms/img, writer wait {r['waited']:.2f} s")
            print("         by thread (whole run_extract): " + ", ".join(
                f"{k} {v / r['n'] * 1e3:.2f}" for k, v in sorted(r["threads"].items())))
    print("\n1. main-process CPU per image, less the bare forward (median)")
    for name, values in per_image.items():
        ms = statistics.median(values)
        print(f"  {name:6s} {ms:.3f} ms/img  -> at most {1e3 / ms if ms > 0 else float('inf'):.0f}"
              f" img/s per process; files per 1000 rows {files[name]:.0f}")
    print(f"\n2. writer wait per ViT-L batch (256 rows, chunks of 16, {args.vitl_rows} rows, "
          f"device step {args.step_ms:.0f} ms)")
    for label, value in writer_waits(tmp, args.vitl_rows, args.step_ms).items():
        unit = "" if label.startswith("files") else " s"
        print(f"  {label:48s} {value:.3f}{unit}")
    rates, limit = data_path(tmp, shards[: max(1, len(shards) // 2)], args.n // 2)
    print(f"\n4. data path (one-block model, CPU), decode limit {limit:.1f} img/s")
    for label, rate in rates.items():
        print(f"  extract, {label:22s} {rate:7.1f} img/s, ratio {rate / limit:.3f}")
    print("\n5. one decode worker (read, decode, transform, collate) against the decode limit's"
          " decode + transform, CPU ms per image, one thread (medians)")
    for name, runs in worker.items():
        stream = statistics.median(r["stream_ms"] for r in runs)
        limit = statistics.median(r["limit_ms"] for r in runs)
        ratios = ", ".join(f"{r['limit_ms'] / r['stream_ms']:.3f}" for r in runs)
        print(f"  {name:6s} worker {stream:.3f}, limit {limit:.3f}: limit / worker {limit / stream:.3f}"
              f" (runs {ratios})")
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
