"""Benchmark of the probe stage's streaming, measured in one run.

1. ratio: one position-probe epoch reading its tokens from the Zarr store
   against the same epoch (same selection, same batches, same model) over the
   same tokens held in a NumPy array. Reported: t_numpy / t_zarr per repeat and
   the median, for the streaming path (every epoch re-reads the store; also
   from a cold page cache) and for the default path (the selected tokens
   gathered once, then kept).
2. memory: peak RSS of `python -m vitreg.probe position` (a subprocess, read
   with getrusage) over a planted store of at least 4 GB of tokens, written in
   /tmp (after checking free space) and deleted afterwards.
3. fidelity (`--fidelity`): the position and reconstruct probes with their
   defaults on a realistic planted store (`vitreg.testing.REALISTIC`) with a
   few hundred thousand normal tokens, against an oracle fitted on as many
   normal tokens of the training images (LDA, Ridge); with the time per epoch.

    python bench/bench_probe.py                  # both, about 5-10 minutes on 2 CPUs
    python bench/bench_probe.py --skip-memory    # the ratio only
    python bench/bench_probe.py --fidelity --fidelity-normals 250000 --fidelity-epochs 6 \
        --fidelity-lr 0.001,0.01 --fidelity-min-steps 0   # about 13 minutes on 2 CPUs
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import drop_cache

from vitreg.cache import Geometry, default_chunk_rows, open_store
from vitreg.probe.backend_torch import cosine, make_optimizer, train_epoch
from vitreg.probe.fit_config import TrainConfig
from vitreg.probe.gather import TokenGather
from vitreg.probe.linear_heads import Head, build_model
from vitreg.probe.select import Part, select_tokens
from vitreg.probe.stream import TokenStream
from vitreg.probe.tasks import PositionTask
from vitreg.testing import write_planted_store

#: ViT-S/14 at 224 px with 4 registers: T = 1 + 4 + 256, D = 384 (200 KB a row).
GEOMETRY = Geometry(registers=4, grid=(16, 16), dim=384, depth=12, img_size=224)
ROW_BYTES = GEOMETRY.tokens * GEOMETRY.dim * 2


def write_store(path: Path, gbytes: float) -> tuple[str, int, float]:
    n = math.ceil(gbytes * 1e9 / ROW_BYTES)
    t0 = time.perf_counter()
    write_planted_store(str(path), n_images=n, geometry=GEOMETRY, with_pixels=False,
                        chunk_rows=default_chunk_rows(GEOMETRY), seed=0)
    os.sync()  # no write-back of the fresh store competing with the timed reads
    return str(path), n, time.perf_counter() - t0


class NumpySource:
    """The store's `tokens` loaded whole into a NumPy array: the in-memory baseline."""

    def __init__(self, store) -> None:
        self.chunk_rows = store.chunk_rows
        self.tokens = store.array("tokens")[:]

    def reader(self, name: str) -> np.ndarray:
        assert name == "tokens"
        return self.tokens


def timed_epoch(model0, stream, task, cfg) -> float:
    model = copy.deepcopy(model0)
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine(math.ceil(len(stream) / cfg.batch_size) * cfg.epochs))
    t0 = time.perf_counter()
    train_epoch(model, stream, task, cfg, optimizer, scheduler, epoch=1, active=[0])
    return time.perf_counter() - t0


def bench_ratio(workdir: Path, gbytes: float, repeats: int) -> dict:
    url, n, write_s = write_store(workdir / "ratio.zarr", gbytes)
    store = open_store(url)
    items = select_tokens(Part("train", store, store.ok_rows(), 98.0), normals=None, seed=42)
    gather = TokenGather("tokens")
    task = PositionTask(GEOMETRY.grid, 0.5)
    cfg = TrainConfig(epochs=30, patience=3, lr=1e-3, optimizer="adam", weight_decay=0.0,
                      batch_size=256, shuffle_buffer=8192, seed=42,
                      device=torch.device("cpu"), standardize=True)
    zarr_stream = TokenStream(store, items, gather, in_memory=False)
    numpy_source = NumpySource(store)
    numpy_stream = TokenStream(numpy_source, items, gather, in_memory=False)
    model0 = build_model(numpy_stream, task, [Head("position", GEOMETRY.patches)], cfg)
    timed_epoch(model0, numpy_stream, task, cfg)  # warm-up: torch's first-call costs

    streamed = []
    for _ in range(repeats):
        t_np = timed_epoch(model0, numpy_stream, task, cfg)
        t_z = timed_epoch(model0, zarr_stream, task, cfg)
        drop_cache(Path(url))
        t_cold = timed_epoch(model0, zarr_stream, task, cfg)
        streamed.append({"numpy_s": t_np, "zarr_s": t_z, "ratio": t_np / t_z,
                         "zarr_cold_s": t_cold, "ratio_cold": t_np / t_cold})

    kept = []
    for _ in range(repeats):
        stream = TokenStream(store, items, gather, in_memory=True)
        t0 = time.perf_counter()
        stream.load()
        gather_s = time.perf_counter() - t0
        t_np = timed_epoch(model0, numpy_stream, task, cfg)
        t_k = timed_epoch(model0, stream, task, cfg)
        kept.append({"gather_s": gather_s, "numpy_s": t_np, "kept_s": t_k,
                     "ratio_epoch": t_np / t_k, "ratio_first_epoch": t_np / (gather_s + t_k),
                     "ratio_30_epochs": 30 * t_np / (gather_s + 30 * t_k)})
    chunk_rows = store.chunk_rows
    del numpy_source, numpy_stream
    shutil.rmtree(url)
    return {
        "store_gb": n * ROW_BYTES / 1e9, "images": n, "write_s": write_s,
        "selected_tokens": len(items), "chunk_rows": chunk_rows,
        "torch_threads": torch.get_num_threads(),
        "streamed": streamed, "kept": kept,
        "median": {
            "streamed": statistics.median(r["ratio"] for r in streamed),
            "streamed_cold": statistics.median(r["ratio_cold"] for r in streamed),
            "kept_epoch": statistics.median(r["ratio_epoch"] for r in kept),
            "kept_first_epoch": statistics.median(r["ratio_first_epoch"] for r in kept),
            "kept_30_epochs": statistics.median(r["ratio_30_epochs"] for r in kept),
        },
    }


def peak_rss_mib(args: list[str]) -> tuple[float, float, int]:
    """Peak RSS of one command, measured by a fresh wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "time.perf_counter() - t, rc]))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True,
                         check=False)
    kib, seconds, rc = json.loads(out.stdout.strip().splitlines()[-1])
    if rc:
        sys.stderr.write(out.stderr[-3000:])
    return kib / 1024, seconds, rc


def bench_memory(workdir: Path, gbytes: float, epochs: int) -> dict:
    need = gbytes * 1e9 * 1.1 + 1e9
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise SystemExit(f"{workdir} has {free / 1e9:.1f} GB free; the memory benchmark needs "
                         f"{need / 1e9:.1f} GB")
    print(f"free space in {workdir}: {free / 1e9:.1f} GB; writing a {gbytes:.1f} GB store",
          flush=True)
    url, n, write_s = write_store(workdir / "memory.zarr", gbytes)
    try:
        stored = sum(f.stat().st_size for f in (Path(url) / "tokens").rglob("*") if f.is_file())
        runs = {}
        for mode in ("auto", "no"):
            out = workdir / f"memory-{mode}.json"
            cmd = [sys.executable, "-m", "vitreg.probe", "position", url, "--out", str(out),
                   "--epochs", str(epochs), "--min-steps", "0", "--in-memory", mode, "--quiet"]
            rss, seconds, rc = peak_rss_mib(cmd)
            result = json.loads(out.read_text()) if rc == 0 else {}
            runs[mode] = {"peak_rss_mib": rss, "seconds": seconds, "rc": rc,
                          "data": result.get("data"), "counts": result.get("counts"),
                          "epochs_run": result.get("epochs_run")}
            print(f"  --in-memory {mode}: peak RSS {rss:.0f} MiB in {seconds:.0f} s", flush=True)
        baseline, _, _ = peak_rss_mib([sys.executable, "-c",
                                       "import torch, vitreg.probe.run, vitreg.probe.cli"])
        return {"store_gb_tokens": stored / 1e9, "images": n, "write_s": write_s,
                "epochs": epochs, "runs": runs, "import_only_rss_mib": baseline}
    finally:
        shutil.rmtree(url, ignore_errors=True)


def bench_fidelity(workdir: Path, images: int, normals: int, options: dict) -> dict:
    """Probe vs oracle on normal tokens, and outliers, on a realistic planted store.

    `options` bound the probes' training (`epochs`, `lr`, `min_steps`), so that a
    few hundred thousand tokens finish on 2 CPUs; empty means the probes' defaults.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import Ridge

    from vitreg.probe import run_probe
    from vitreg.probe.select import split_rows
    from vitreg.testing import REALISTIC
    from vitreg.testing import REALISTIC_GEOMETRY as G

    url = str(workdir / "fidelity.zarr")
    t0 = time.perf_counter()
    write_planted_store(url, n_images=images, geometry=G, planted=REALISTIC, seed=0,
                        chunk_rows=256)
    write_s = time.perf_counter() - t0
    store = open_store(url)
    train, val, _ = split_rows(store, None, val_fraction=0.2, seed=42)
    norms = store.array("norms")[:][:, G.prefix:]
    normal = norms <= store.threshold(98.0)
    p = G.img_size // G.grid[0]
    rng = np.random.default_rng(1)

    tokens = store.array("tokens")[:][:, G.prefix:]
    n, (gh, gw) = tokens.shape[0], G.grid
    patches = (store.array("pixels")[:].reshape(n, gh, p, gw, p, 3).transpose(0, 1, 3, 2, 4, 5)
               .reshape(n, gh * gw, -1))

    def draw(rows, k):
        r, c = np.nonzero(normal[rows])
        pick = rng.choice(r.size, size=min(k, r.size), replace=False)
        r, c = rows[r[pick]], c[pick]
        return tokens[r, c].astype(np.float32), c, patches[r, c].astype(np.float32)

    t0 = time.perf_counter()
    xa, pos_a, pix_a = draw(train, normals)
    xb, pos_b, pix_b = draw(val, 20_000)
    oracle = {"top1": float(LinearDiscriminantAnalysis().fit(xa, pos_a).score(xb, pos_b)),
              "mse": float(((Ridge(alpha=1.0).fit(xa, pix_a).predict(xb) - pix_b) ** 2).mean()),
              "mean_patch_mse": float(((pix_a.mean(0) - pix_b) ** 2).mean()),
              "seconds": time.perf_counter() - t0}
    runs = {}
    for kind in ("position", "reconstruct"):
        t0 = time.perf_counter()
        r = run_probe(kind, url, normals=normals, **options)
        epochs = {cat: [(c["seconds"], c["passes"], c["steps"]) for c in curve]
                  for cat, curve in r["curves"].items()}
        runs[kind] = {"metrics": r["metrics"], "counts": r["counts"]["train"],
                      "chosen": {c: f["chosen"] for c, f in r["fits"].items()},
                      "epochs_run": r["epochs_run"], "seconds": time.perf_counter() - t0,
                      "epoch_seconds": {c: statistics.median(e[0] for e in v)
                                        for c, v in epochs.items()},
                      "passes_per_epoch": {c: f["passes_per_epoch"] for c, f in r["fits"].items()}}
    shutil.rmtree(url, ignore_errors=True)
    return {"images": images, "normals": normals, "options": options, "write_s": write_s,
            "oracle": oracle, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--ratio-gb", type=float, default=1.0)
    parser.add_argument("--memory-gb", type=float, default=4.2)
    parser.add_argument("--memory-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-ratio", action="store_true")
    parser.add_argument("--fidelity", action="store_true", help="run only the fidelity bench")
    parser.add_argument("--fidelity-images", type=int, default=4000)
    parser.add_argument("--fidelity-normals", type=int, default=200_000)
    parser.add_argument("--fidelity-epochs", type=int, help="most epochs (default: the probes')")
    parser.add_argument("--fidelity-lr", help="learning-rate grid, e.g. 0.003 (default: the "
                        "probes' five values)")
    parser.add_argument("--fidelity-min-steps", type=int,
                        help="fewest optimisation steps (default: the probes')")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads for the ratio (default: torch's own)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vitreg-bench-probe-", dir=args.workdir))
    report: dict = {"cpus": torch.get_num_threads()}
    try:
        if args.fidelity:
            options = {k: v for k, v in (("epochs", args.fidelity_epochs),
                                         ("lr", args.fidelity_lr),
                                         ("min_steps", args.fidelity_min_steps)) if v is not None}
            f = report["fidelity"] = bench_fidelity(work, args.fidelity_images,
                                                    args.fidelity_normals, options)
            o = f["oracle"]
            print(f"fidelity: {f['images']} images, {f['normals']} normal train tokens, "
                  f"options {options or 'the defaults'}; oracle "
                  f"LDA top-1 {o['top1']:.3f}, Ridge MSE {o['mse']:.2f}, mean patch "
                  f"{o['mean_patch_mse']:.1f}")
            for kind, run in f["runs"].items():
                print(f"  {kind}: {json.dumps(run['metrics'])}; epochs {run['epochs_run']}, "
                      f"median s/epoch {run['epoch_seconds']}, passes/epoch "
                      f"{run['passes_per_epoch']}, chosen {json.dumps(run['chosen'])}, "
                      f"{run['seconds']:.0f} s")
            args.skip_ratio = args.skip_memory = True
        if not args.skip_ratio:
            r = report["ratio"] = bench_ratio(work, args.ratio_gb, args.repeats)
            print(f"ratio: {r['store_gb']:.2f} GB store, {r['images']} images, "
                  f"{r['selected_tokens']} selected train tokens, chunk {r['chunk_rows']} rows")
            for row in r["streamed"]:
                print(f"  streamed epoch: numpy {row['numpy_s']:.2f} s, zarr {row['zarr_s']:.2f} s"
                      f", ratio {row['ratio']:.2f}; from a cold page cache {row['zarr_cold_s']:.2f}"
                      f" s, ratio {row['ratio_cold']:.2f}")
            for row in r["kept"]:
                print(f"  kept: gather {row['gather_s']:.2f} s, epoch numpy {row['numpy_s']:.2f} s"
                      f" vs kept {row['kept_s']:.2f} s: ratio {row['ratio_epoch']:.2f}; first "
                      f"epoch incl. gather {row['ratio_first_epoch']:.2f}; 30 epochs "
                      f"{row['ratio_30_epochs']:.2f}")
            m = r["median"]
            print(f"  median ratio t_numpy/t_zarr: streamed {m['streamed']:.2f} (cold page cache "
                  f"{m['streamed_cold']:.2f}); kept epoch "
                  f"{m['kept_epoch']:.2f}; first epoch incl. gather {m['kept_first_epoch']:.2f}; "
                  f"30 epochs {m['kept_30_epochs']:.2f} (target >= 0.7)")
        if not args.skip_memory:
            m = report["memory"] = bench_memory(work, args.memory_gb, args.memory_epochs)
            print(f"memory: {m['store_gb_tokens']:.2f} GB of tokens, {m['images']} images, "
                  f"{m['epochs']} epochs; import-only RSS {m['import_only_rss_mib']:.0f} MiB")
            for mode, run in m["runs"].items():
                print(f"  --in-memory {mode}: peak RSS {run['peak_rss_mib']:.0f} MiB "
                      f"(target < 1536), selected {run['data']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
