"""Every probe runs end to end on a store written by `vitreg extract`.

The model is a tiny random-init ViT, so the numbers mean nothing; what is
checked is that the real path works and reports what it used.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from vitreg.cache import open_store
from vitreg.cli import cli
from vitreg.extract.run import run_extract


def test_every_probe_runs_on_an_extracted_store(tmp_path):
    shard = write_shard(tmp_path / "s.tar", image_samples(24, classes=3))
    store = str(tmp_path / "store.zarr")
    run_extract(shards=[shard], model="tiny_dinov2_reg4", out=store, weights="random",
                with_options=["pixels"], batch_size=8, progress=False)
    n_ok = open_store(store).counts()["ok"]
    runner = CliRunner()
    for kind in ("position", "reconstruct", "classify", "linear"):
        out = tmp_path / f"{kind}.json"
        result = runner.invoke(cli, ["probe", kind, store, "--out", str(out), "--epochs", "2",
                                     *(["--min-steps", "0"] if kind != "linear" else [])])
        assert result.exit_code == 0, (kind, result.output)
        saved = json.loads(out.read_text())
        assert saved["probe"] == kind
        assert saved["store"]["model"] == "tiny_dinov2_reg4"
        assert saved["store"]["weights"] == "random"
        assert saved["metrics"], kind
        images = saved["counts"]["train"]["images"] + saved["counts"]["val"]["images"]
        assert images == n_ok, kind  # every ok row, split by image into train and val
