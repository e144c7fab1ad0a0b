"""bench/gpu/check.py, the prepared GPU check, runs here on the CPU and prints every figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("bare forward", "decode only", "writer only", "extract", "loop ms per batch",
           "main process", "fp32 recomputation", "extract --decode gpu", "done at")


def test_the_gpu_check_runs_on_a_cpu_and_prints_every_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu" / "check.py"), "--device", "cpu",
         "--models", "tiny", "--seconds", "0.5", "--batch-size", "8", "--max-images", "60",
         "--writer-mb", "20", "--gpu-decode"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "VITREG_BENCH_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("tiny_dinov2_reg4: ")]
    for figure in FIGURES:
        assert any(ln.startswith(f"tiny_dinov2_reg4: {figure}") for ln in lines), figure
    fp32 = next(ln for ln in lines if "fp32 recomputation" in ln)
    rows = [int(r) for r in re.search(r"rows \[([\d, ]+)\]", fp32).group(1).split(", ")]
    # rows of several batches, the last one partial
    assert rows[-1] % 8 != 7 and len({r // 8 for r in rows}) >= 3
    assert float(fp32.rsplit(" ", 1)[1]) > 0.999  # smallest token cosine
    assert not list(tmp_path.iterdir())  # it cleans up after itself
