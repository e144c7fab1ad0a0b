"""Kill `vitreg extract` with SIGKILL 20 times at random moments, resume each
time, and count the arrays that differ from an uninterrupted run (must be 0).

    .venv/bin/python bench/bench_kill.py [--kills 20] [--images 300]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from vitreg.cache import open_store


def make_shards(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(42)
    folder.mkdir(parents=True)
    with wds.ShardWriter(str(folder / "shard-%03d.tar"), maxcount=100, verbose=0) as sink:
        for i in range(n):
            pixels = rng.integers(0, 255, (int(rng.integers(48, 160)), 96, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG")
            sink.write({"__key__": f"img{i:05d}", "jpg": buf.getvalue(), "cls": str(i % 10).encode()})
    return sorted(str(p) for p in folder.glob("*.tar"))


def command(shards: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "vitreg.cli", "extract", *shards, "--model", "vit_tiny_patch16_224",
            "--weights", "random", "--img-size", "64", "--precision", "fp32", "--batch-size", "8",
            "--chunk-rows", "8", "--with", "pixels,blocks,qkv", "--out", str(out), "--no-progress"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vitreg-kill-", dir=os.environ.get("VITREG_BENCH_DIR")))
    shards = make_shards(tmp / "shards", args.images)
    start = time.perf_counter()
    subprocess.run(command(shards, tmp / "ref"), check=True, capture_output=True)
    full_run = time.perf_counter() - start
    rng = random.Random(42)
    out, kills, runs = tmp / "killed", 0, 0
    while kills < args.kills:
        proc = subprocess.Popen(command(shards, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs += 1
        try:
            proc.wait(timeout=rng.uniform(1.0, full_run))
            if proc.returncode == 0:  # finished before the kill: start over
                subprocess.run(["rm", "-rf", str(out)], check=True)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            ok = open_store(str(out), allow_partial=True).counts()["ok"] if (out / "zarr.json").exists() else 0
            print(f"kill {kills:2d}: {ok} rows ok in the store")
    orphans = len(list(out.rglob("*.partial")))  # left by kills mid-write
    verify = subprocess.run([sys.executable, "-m", "vitreg.cli", "verify", str(out)], capture_output=True, text=True)
    subprocess.run(command(shards, out), check=True, capture_output=True)
    done, ref = open_store(str(out)), open_store(str(tmp / "ref"))
    differing = [n for n in ref.names if not np.array_equal(done.array(n)[:], ref.array(n)[:])]
    partials = list(out.rglob("*.partial"))
    print(f"\n{args.images} images; uninterrupted run {full_run:.1f} s; {runs} runs, {kills} SIGKILLs")
    print(f"orphaned .partial files after the kills {orphans}; verify (before the last run) "
          f"exit code {verify.returncode}; .partial files at the end {len(partials)}")
    print(f"arrays compared {len(ref.names)}, differing {len(differing)} {differing}")
    print(f"rows ok {done.counts()['ok']} of {done.n_rows} (reference {ref.counts()['ok']})")


if __name__ == "__main__":
    main()
