"""Helpers the bench scripts share: child processes that report one JSON line,
and dropping a store's pages from the page cache."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

RESULT = "RESULT "


def report(result: dict) -> None:
    """A child's answer to `child_result`: one line on stdout."""
    print(RESULT + json.dumps(result), flush=True)


def child_result(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a child process and return the dict it reported; fail with its output."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(RESULT)), None)
    if line is None:
        raise RuntimeError(f"child failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(line[len(RESULT):])


def drop_cache(path: Path) -> None:
    """Ask the kernel to forget a file's (or a folder's files') clean pages."""
    for file in [path] if path.is_file() else path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
