"""SIGKILL at random moments, then the same command again: the same bytes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import image_samples, write_shard
from vitreg.cache import open_store

ROOT = Path(__file__).parents[2]
RUNNER = ("import tests.tiny_models; from vitreg.extract.cli import extract_command; "
          "extract_command()")


def extract_cmd(shard: str, out: Path) -> list[str]:
    return [sys.executable, "-c", RUNNER, shard, "--model", "tiny_dinov2_reg4", "--weights",
            "random", "--out", str(out), "--batch-size", "4", "--chunk-rows", "4",
            "--no-progress", "--with", "pixels,blocks"]


def run_killed(cmd: list[str], after: float) -> bool:
    """Start `cmd`, SIGKILL it after `after` seconds; True if it was killed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def test_killed_twice_then_resumed_equals_an_uninterrupted_run(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(48))
    subprocess.run(extract_cmd(shard, tmp_path / "ref"), cwd=ROOT, check=True,
                   capture_output=True)
    rng = random.Random(42)
    out = tmp_path / "killed"
    kills = 0
    for _ in range(2):
        # after python and torch start (~2 s here), somewhere in the run
        kills += run_killed(extract_cmd(shard, out), after=rng.uniform(2.0, 4.5))
    assert kills >= 1
    verify_code = "from vitreg.cache.cli import verify_command; verify_command()"
    verify = subprocess.run([sys.executable, "-c", verify_code,
                             str(out)], cwd=ROOT, capture_output=True, text=True)
    assert verify.returncode in (0, 1), verify.stderr
    assert not list(out.rglob("*.partial"))
    subprocess.run(extract_cmd(shard, out), cwd=ROOT, check=True, capture_output=True)
    done, ref = open_store(str(out)), open_store(str(tmp_path / "ref"))
    assert done.names == ref.names
    for name in ref.names:
        np.testing.assert_array_equal(done.array(name)[:], ref.array(name)[:], err_msg=name)
    assert done.meta["outlier_threshold"] == ref.meta["outlier_threshold"]
