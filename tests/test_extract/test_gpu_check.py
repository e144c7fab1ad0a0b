"""bench/bench_gpu.py, the prepared GPU check, runs here on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_on_a_cpu(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--device", "cpu",
         "--models", "tiny", "--n", "24"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "VITREG_BENCH_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    row = result.stdout.splitlines()[-1].split()
    assert row[0] == "tiny_dinov2_reg4"
    syncs, cosine = float(row[6]), float(row[9])
    assert syncs == 0 and cosine > 0.999
