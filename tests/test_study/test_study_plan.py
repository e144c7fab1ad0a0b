"""`vitreg study init` and the plan checks: every model of the study named, a
dry run without weights or network, bad plans refused before any work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from vitreg.analysis.study import STUDY_MODELS
from vitreg.cli import cli
from vitreg.core import UsageError
from vitreg.study.paper import PAPER_MODELS
from vitreg.study.plan import PlanError, load_plan
from vitreg.study.run import run_study

from .conftest import PLAN, write_plan

README_MODELS = re.findall(r"^\| `([^`]+)` \|", (Path(__file__).resolve().parents[2]
                                                 / "README.md").read_text(), re.M)


def test_init_paper_names_every_model_of_the_study(tmp_path):
    result = CliRunner().invoke(cli, ["study", "init", "--paper"])
    assert result.exit_code == 0, result.output
    timm_names = set(re.findall(r'^timm = "([^"]+)"', result.output, re.M))
    assert set(STUDY_MODELS.values()) <= timm_names
    assert set(README_MODELS) <= timm_names and len(timm_names) == len(PAPER_MODELS) == 18


def test_dry_run_of_the_paper_plan_lists_every_step_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = tmp_path / "paper.toml"
    plan.write_text(CliRunner().invoke(cli, ["study", "init", "--paper"]).output)
    result = CliRunner().invoke(cli, ["study", "run", str(plan), "--out", str(tmp_path / "o"),
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    for name in PAPER_MODELS:
        assert f"extract:{name}:val " in result.output
    assert "probe:DINOv2-G:position" in result.output and "report" in result.output
    assert "of GPU time" in result.output and not (tmp_path / "o").exists()
    # each table's setup, and where it differs from the study's
    assert ("Table 1 DINOv2-S (position): pretrained, 224 px, timm, tokens sampled:64, "
            "protocol study, trained on train, reported on val; as the study's") in result.output
    assert "Table 5 DINOv2-S+reg (linear): pretrained, 224 px, dinov2-linear" in result.output
    refused = CliRunner().invoke(cli, ["study", "run", str(plan), "--out", str(tmp_path / "o")])
    assert refused.exit_code == 2 and "placeholder" in refused.output


def test_init_models_writes_a_plan_that_loads(study_shards, tmp_path):
    result = CliRunner().invoke(cli, [
        "study", "init", "--models", "tiny_dinov2,tiny_dinov2_reg4", "--weights", "random",
        "--val", study_shards["val"], "--img-size", "56"])
    assert result.exit_code == 0, result.output
    (tmp_path / "p.toml").write_text(result.output.replace(
        "[study]", '[study]\nimports = ["tests.tiny_models"]'))
    plan = load_plan(tmp_path / "p.toml")
    assert [m["timm"] for m in plan.models] == ["tiny_dinov2", "tiny_dinov2_reg4"]


@pytest.mark.parametrize("old,new,message", [
    ('timm = "tiny_dinov2"\n', 'timm = "tiny_dinov3"\n', r"plan.toml:\d+: \[model\] timm"),
    ("batch_size = 16", "batch_sise = 16", r"plan.toml:4: \[study\] batch_sise: unknown key"),
    ('tokens = "sampled:8"', 'tokens = "sampled:8"\nwith_ = []', r"\[extract.train\] with_"),
    ('kind = "norms"', 'kind = "norm"', r"\[analysis.norms\] kind: unknown analysis"),
    ('probe = ["position", "linear"]', 'probe = ["position", "lineer"]', r"\[model\] probe"),
    ("{epochs = 2, batch_size = 64, backend", "{epoch = 2, batch_size = 64, backend",
     r"plan.toml:\d+: \[probe.position\] options: unknown option\(s\) \['epoch'\]"),
    ("{top = 2}", "{tops = 2}", r"\[analysis.maps\] options: unknown"),
    ('with = ["pixels", "blocks"]', 'with = ["pixel"]', r"\[extract.val\] with: unknown"),

])
def test_bad_plan_fails_before_any_work_naming_the_line(study_shards, tmp_path, old, new,
                                                        message):
    assert old in PLAN
    plan = write_plan(tmp_path / "plan.toml", study_shards, PLAN.replace(old, new, 1))
    with pytest.raises(PlanError, match=message):
        run_study(plan=plan, out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_unknown_pretrained_tag_is_named(study_shards, tmp_path):
    text = PLAN.replace('timm = "tiny_dinov2"\n', 'timm = "vit_small_patch14_dinov2.lvd143m"\n')
    plan = write_plan(tmp_path / "plan.toml", study_shards, text)
    with pytest.raises(PlanError, match=r"plan.toml:\d+: \[model\] timm: timm has no "
                                        r"pretrained tag .*lvd142m"):
        load_plan(plan)


def test_missing_shards_are_named(study_shards, tmp_path):
    shards = {**study_shards, "train": study_shards["train"] + " /nowhere/x-{0..3}.tar"}
    plan = write_plan(tmp_path / "plan.toml", shards)
    result = CliRunner().invoke(cli, ["study", "run", plan, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "[data] train: 4 shard(s)" in result.output and "/nowhere/x-0.tar" in result.output


def test_only_a_later_stage_is_refused_while_its_inputs_are_not_done(plan_file, tmp_path):
    with pytest.raises(UsageError, match=r"--only probe: probe:tiny-reg:position needs "
                                         r"extract:tiny-reg:train, which is todo"):
        run_study(plan=plan_file, out=str(tmp_path / "out"), only="probe")


def test_an_interrupted_extraction_resumes_and_a_stale_one_starts_over_with_redo(
        plan_file, tmp_path, monkeypatch):
    from vitreg.study import execute, stages
    from vitreg.study.steps import build_steps

    calls = []
    monkeypatch.setattr(stages, "call_extract", lambda config: calls.append(config.overwrite) or {})
    step = build_steps(load_plan(plan_file), tmp_path / "out")[0]
    step.pending.parent.mkdir(parents=True)
    step.pending.write_text(step.hash)          # killed during this very configuration
    execute.execute_step(step, {})
    step.pending.write_text("another-hash")     # killed during an older configuration
    step.stamp.unlink()
    Path(step.output).mkdir()
    assert execute.step_state(step).status == "stop"  # kept until named with --redo
    step.redo = True
    assert execute.step_state(step).status == "redo"
    execute.execute_step(step, {})
    assert calls == [False, True] and step.stamp.exists() and not step.pending.exists()
