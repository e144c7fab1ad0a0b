"""The paper plan follows the study (issue #25): a subset by the study's names, timm
wildcards in `--models`, the optional official `head` per DINOv2 model (Table 4)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import timm
from click.testing import CliRunner

from vitreg.cli import cli
from vitreg.study.plan import PlanError, load_plan
from vitreg.study.steps import build_steps


def _init(*args: str) -> str:
    result = CliRunner().invoke(cli, ["study", "init", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_paper_subset_writes_those_models_and_the_recipes_they_use():
    plan = tomllib.loads(_init("--paper", "--models", "DINOv2-S,DINOv2-S+reg"))
    assert [(m["name"], m["timm"]) for m in plan["model"]] == [
        ("DINOv2-S", "vit_small_patch14_dinov2.lvd142m"),
        ("DINOv2-S+reg", "vit_small_patch14_reg4_dinov2.lvd142m")]
    assert set(plan["extract"]) == {"val", "train", "hires", "linear_val", "linear_train"}
    assert set(plan["probe"]) == {"position", "reconstruct", "classify", "linear", "head"}
    # the study's protocol, reconstruction trained on train and reported on val
    assert plan["probe"]["reconstruct"]["train"] == "train"
    assert plan["probe"]["reconstruct"]["val"] == "val"
    assert all(plan["probe"][k]["options"]["protocol"] == "study"
               for k in ("position", "reconstruct", "classify"))
    assert plan["extract"]["linear_val"]["preprocess"] == "dinov2-linear"
    assert "blocks_qkv" in plan["extract"]["hires"]["with"]


def test_paper_plan_uses_imagenet_1k_deit3_and_the_openclip_models_of_the_figures():
    text = _init("--paper")
    names = re.findall(r'^timm = "([^"]+)"', text, re.M)
    assert "deit3_medium_patch16_224.fb_in1k" in names
    assert not any("in22k" in n for n in names)
    assert {"vit_base_patch16_clip_224.laion2b", "vit_large_patch14_clip_224.laion2b",
            "vit_huge_patch14_clip_224.laion2b", "vit_giant_patch14_clip_224.laion2b"} <= set(names)
    assert text.count('# head = "/path/to/dinov2_vit') == 8


def test_paper_subset_refuses_an_unknown_study_name():
    result = CliRunner().invoke(cli, ["study", "init", "--paper", "--models", "DINOv2-XL"])
    assert result.exit_code == 2 and "DINOv2-XL" in result.output and "DINOv2-S" in result.output


def test_models_accept_timm_wildcards(tmp_path):
    text = _init("--models", "vit_*_dinov3.lvd1689m", "--val", "v.tar")
    want = sorted(n for n in timm.list_pretrained() if fnmatch.fnmatchcase(
        n, "vit_*_dinov3.lvd1689m"))
    assert len(want) >= 4
    assert sorted(re.findall(r'^timm = "([^"]+)"', text, re.M)) == want
    names = re.findall(r'^name = "([^"]+)"', text, re.M)
    assert len(set(names)) == len(names)
    none = CliRunner().invoke(cli, ["study", "init", "--models", "vit_nothing_*", "--val", "v"])
    assert none.exit_code == 2 and "matches no timm model" in none.output


def _head_plan(tmp_path, head_line: str) -> str:
    text = _init("--paper", "--models", "DINOv2-S", "--val", str(tmp_path / "v.tar"),
                 "--train", str(tmp_path / "t.tar"))
    (tmp_path / "v.tar").write_bytes(b"")
    (tmp_path / "t.tar").write_bytes(b"")
    text = text.replace('# head = "/path/to/dinov2_vits14_linear_head.pth"', head_line)
    (tmp_path / "plan.toml").write_text(text)
    return str(tmp_path / "plan.toml")


def test_a_head_file_adds_the_table4_probe(tmp_path):
    head = tmp_path / "dinov2_vits14_linear_head.pth"
    head.write_bytes(b"weights")
    plan = load_plan(_head_plan(tmp_path, f'head = "{head}"'))
    steps = {s.id: s for s in build_steps(plan, tmp_path / "o")}
    step = steps["probe:DINOv2-S:head"]
    assert step.config["options"] == {"head": str(head)}
    assert step.config["train"] == "extract:DINOv2-S:linear_val" and step.config["val"] is None
    assert "probe:DINOv2-S:head" in steps["report"].deps
    without = load_plan(_head_plan(tmp_path, ""))
    assert "probe:DINOv2-S:head" not in {s.id for s in build_steps(without, tmp_path / "o")}


def test_a_missing_head_file_is_named_with_its_line(tmp_path):
    try:
        load_plan(_head_plan(tmp_path, 'head = "/nowhere/head.pth"'))
    except PlanError as exc:
        assert re.search(r"plan.toml:\d+: \[model\] head: head file '/nowhere/head.pth'",
                         str(exc)), exc
    else:
        raise AssertionError("a missing head file was accepted")
