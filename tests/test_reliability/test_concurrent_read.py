"""Readers opened while extract writes see only whole, ok rows."""

from __future__ import annotations

import subprocess
import time

import numpy as np

from tests.conftest import image_samples, write_shard
from tests.test_reliability.test_kill import ROOT, extract_cmd
from vitreg.cache import IncompleteStoreError, StoreFormatError, StoreNotFoundError, open_store


def test_reader_during_extract_sees_only_finished_rows(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(48))
    subprocess.run(extract_cmd(shard, tmp_path / "ref"), cwd=ROOT, check=True, capture_output=True)
    ref = open_store(str(tmp_path / "ref"))
    ref_tokens, ref_keys = ref.array("tokens")[:], ref.array("key")[:]
    out = tmp_path / "live"
    proc = subprocess.Popen(extract_cmd(shard, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen_partial, reads = set(), 0
    try:
        while proc.poll() is None:
            try:
                store = open_store(str(out), allow_partial=True)
            except (StoreNotFoundError, StoreFormatError):
                time.sleep(0.05)  # not created yet, or its arrays still being created
                continue
            try:  # without --allow-partial only a finished store opens
                assert open_store(str(out)).complete
            except IncompleteStoreError as exc:
                assert "--allow-partial" in str(exc)
            for batch in store.batches(["tokens", "key"]):
                np.testing.assert_array_equal(batch["tokens"], ref_tokens[batch["row"]])
                np.testing.assert_array_equal(batch["key"], ref_keys[batch["row"]])
                reads += 1
            seen_partial.add(store.counts()["ok"])
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
    assert reads > 0 and len(seen_partial) >= 2  # it did read mid-run, more than once
