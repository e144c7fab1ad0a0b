"""The paper plan, end to end, for one study model (issue #25): `study init --paper
--models DINOv2-S`, its "pretrained" weights laid in a local Hugging Face cache (timm
loads them offline), run on generated shards; report.html holds our Tables 1-4 rows
beside the study's numbers, each difference from the study's setup marked.

The weights are a random ViT-S/14 (timm's real `vit_small_patch14_dinov2`
architecture, saved at its 518 px pretrained geometry): the numbers mean nothing,
the plumbing from plan to report is what is checked."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.conftest import image_samples, write_shard

MODEL = "vit_small_patch14_dinov2.lvd142m"


def fill_hf_cache(home: Path, name: str) -> Path:
    """`name`'s weights in the Hugging Face hub cache layout under `home`."""
    torch.manual_seed(0)
    model = timm.create_model(name.split(".")[0], pretrained=False, num_classes=0)
    repo = home / "hub" / f"models--timm--{name}"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot / "model.safetensors"


def vitreg(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "vitreg", *args], env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def paper_subset(tmp_path: Path, env: dict[str, str], head: Path) -> Path:
    """The paper plan for DINOv2-S, on few images, without the 800 px maps (Tables 1-4
    only, to stay fast), with one deliberate difference (Table 1's protocol)."""
    val = [write_shard(tmp_path / f"val-{i}.tar", image_samples(6, start=6 * i))
           for i in range(2)]
    train = [write_shard(tmp_path / f"train-{i}.tar", image_samples(8, start=100 + 8 * i))
             for i in range(2)]
    text = vitreg("study", "init", "--paper", "--models", "DINOv2-S", "--val", " ".join(val),
                  "--train", " ".join(train), env=env)
    quick = 'lr = "0.01", epochs = 3, min_steps = 0, batch_size = 64'
    text = (text.replace('# head = "/path/to/dinov2_vits14_linear_head.pth"', f'head = "{head}"')
            .replace('extract = ["val", "train", "hires", "linear_val"]',
                     'extract = ["val", "train", "linear_val"]')
            .replace('analysis = ["norms", "similarity", "maps"]',
                     'analysis = ["norms", "similarity"]')
            .replace("batch_size = 256", "batch_size = 8")
            .replace("workers = 8", "workers = 0")
            .replace('options = {protocol = "study"}\n\n[probe.reconstruct]',
                     f'options = {{protocol = "heldout", {quick}}}\n\n[probe.reconstruct]')
            .replace('options = {protocol = "study"', f'options = {{protocol = "study", {quick}'))
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    return plan


def _rows(text: str, table: int) -> list[str]:
    start = text.index(f"<h3>Table {table}.")
    body = text[start:text.index("</table>", start)]
    return [html.unescape(re.sub(r"<[^>]+>", "|", r)) for r in re.findall(r"<tr[^>]*>(.*?)</tr>",
                                                                          body)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper_e2e")
    env = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "2"}
    fill_hf_cache(tmp / "hf", MODEL)
    head = tmp / "dinov2_vits14_linear_head.pth"
    torch.save(torch.nn.Linear(2 * 384, 1000).state_dict(), head)
    plan = paper_subset(tmp, env, head)
    dry = vitreg("study", "run", str(plan), "--out", str(tmp / "out"), "--dry-run", env=env)
    vitreg("study", "run", str(plan), "--out", str(tmp / "out"), env=env)
    return {"out": tmp / "out", "dry": dry,
            "report": (tmp / "out" / "report" / "report.html").read_text()}


def test_pretrained_weights_came_from_the_local_hub_cache(study):
    result = json.loads((study["out"] / "probes" / "DINOv2-S-classify.json").read_text())
    store = result["setup"]["train_store"]
    assert store["weights"] == "pretrained" and store["pretrained_cfg"] == MODEL
    assert store["token_mode"] == "sampled:64" and store["img_size"] == 224
    head = json.loads((study["out"] / "probes" / "DINOv2-S-head.json").read_text())
    assert head["setup"]["train_store"]["preprocessing_preset"] == "dinov2-linear"


def test_report_puts_tables_1_to_4_beside_the_studys_numbers(study):
    text = study["report"]
    assert "RANDOM WEIGHTS" not in text
    for table, number in ((1, "28.05"), (2, "383.13"), (3, "74.81"), (4, "81.15")):
        rows = _rows(text, table)
        ours = [i for i, r in enumerate(rows) if r.lstrip("|").startswith(f"ours: {MODEL}")]
        assert ours, (table, rows)
        assert rows[ours[0] + 1].lstrip("|").startswith("study: DINOv2-S"), rows
        assert number in rows[ours[0] + 1], (table, rows)


def test_each_difference_from_the_studys_setup_is_marked(study):
    text = study["report"]
    marks = {t: _rows(text, t)[1] for t in (1, 2, 3, 4)}
    assert "--protocol heldout" in marks[1]  # the one difference the test plan makes
    for table in (2, 3, 4):
        result = json.loads((study["out"] / "probes" / f"DINOv2-S-"
                             f"{['', '', 'reconstruct', 'classify', 'head'][table]}.json")
                            .read_text())
        truncated = sum(p["truncated_images"] for p in
                        (result["setup"]["truncation"] or {}).values())
        if truncated:
            assert "had more outliers than K/2" in marks[table]
        else:
            assert "none: the study's setup" in marks[table], marks[table]
    assert "Deviations from the study" in text


def test_dry_run_prints_each_tables_setup_and_its_differences(study):
    dry = study["dry"]
    assert re.search(r"Table 1 DINOv2-S \(position\): pretrained, 224 px, timm, tokens "
                     r"sampled:64, protocol heldout, .*differs: epoch chosen on held-out", dry)
    assert "Table 3 DINOv2-S (classify): pretrained, 224 px, timm, tokens sampled:64, " \
           "protocol study, trained on train, reported on val; as the study's" in dry
    assert "Table 4 DINOv2-S (head): pretrained, 224 px, dinov2-linear" in dry
