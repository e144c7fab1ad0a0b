"""A 2-model study plan over tiny random-init models and a few generated shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import image_samples, write_shard

PLAN = """\
[study]
weights = "random"
seed = 42
batch_size = 16
imports = ["tests.tiny_models"]

[data]
val = "{val}"
train = "{train}"

[extract.val]
split = "val"
tokens = "all"
with = ["pixels", "blocks"]

[extract.train]
split = "train"
tokens = "sampled:8"

[probe.position]
kind = "position"
train = "train"
options = {{epochs = 2, batch_size = 64, backend = "torch"}}

[probe.classify]
kind = "classify"
train = "train"
options = {{epochs = 2, batch_size = 64}}

[probe.linear]
kind = "linear"
train = "train"
val = "val"
options = {{epochs = 2, batch_size = 16}}

[analysis.norms]
kind = "norms"
store = "val"

[analysis.maps]
kind = "maps"
store = "val"
options = {{top = 2}}

[report]
store = "val"

[[model]]
name = "tiny-reg"
timm = "tiny_dinov2_reg4"
extract = ["val", "train"]
probe = ["position", "linear"]
analysis = ["norms", "maps"]

[[model]]
name = "tiny"
timm = "tiny_dinov2"
extract = ["val", "train"]
probe = ["position", "classify", "linear"]
analysis = ["norms", "maps"]
"""


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def study_shards(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("study_shards")
    val = [write_shard(folder / f"val-{i}.tar", image_samples(8, start=8 * i)) for i in range(2)]
    train = [write_shard(folder / f"train-{i}.tar", image_samples(12, start=100 + 12 * i))
             for i in range(2)]
    return {"val": " ".join(val), "train": " ".join(train)}


def write_plan(path: Path, shards: dict[str, str], text: str = PLAN) -> str:
    path.write_text(text.format(**shards))
    return str(path)


@pytest.fixture
def plan_file(tmp_path, study_shards) -> str:
    return write_plan(tmp_path / "plan.toml", study_shards)
