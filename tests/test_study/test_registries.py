"""Registries are the only lists: a probe, an analysis and an executor, each
registered in ONE place (the `toys` fixture), are found by the command line
(`--help` and invoking them), a study plan (checked, dry run, run) and the
report, with no other edit; a registration that cannot work is a programming
error (`RegistryError`), never a user's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vitreg.analysis.common import (
    ANALYSES,
    open_stores,
    patch_part,
    register_analysis,
    unregister_analysis,
)
from vitreg.cache import open_store
from vitreg.cli import cli
from vitreg.core import UsageError, VitregError
from vitreg.core.numbers import COUNT, POSITIVE
from vitreg.core.options import Option
from vitreg.core.registry import RegistryError
from vitreg.probe.registry import PROBES, register_probe, unregister_probe
from vitreg.study.executors import EXECUTORS, register_executor, run_local, unregister_executor
from vitreg.study.plan import PlanError, load_plan
from vitreg.study.run import run_study

from .conftest import PLAN, write_plan

TOY_PLAN = PLAN.split("[extract.train]")[0] + """\
[probe]
toy = {{kind = "toy", train = "val", options = {{scale = 3}}}}

[analysis]
toy = {{kind = "toy", store = "val", options = {{factor = 3.0}}}}

[report]
store = "val"
options = {{factor = 3.0, images = 4, top = 1}}

[[model]]
name = "tiny"
timm = "tiny_dinov2"
extract = ["val"]
probe = ["toy"]
analysis = ["toy"]
"""

#: Steps the toy executor ran.
EXECUTED: list[str] = []


def toy_probe(ctx):
    used = {"train": ctx.train.images, "val": ctx.val.images}
    return {"counts": {k: {"images": v} for k, v in used.items()},
            "metrics": {"toy": {"scaled_images": ctx.options["scale"] * used["val"]}},
            "curves": {}}


def run_toy(stores, *, out, images: int = 5000, seed: int = 42, allow_partial: bool = False,
            block: int | None = None, factor: float = 1.0):
    opened = open_stores(stores, allow_partial=allow_partial, block=block)
    stats = {s.url: {"scaled_mean_norm": factor * float(patch_part(
        s.take("norms", s.ok_rows()), s).astype(np.float64).mean())} for s in opened}
    Path(out).mkdir(parents=True, exist_ok=True)
    return {"figures": [], "stats": stats, "notes": [f"toy factor {factor}"]}


def toy_executor(folder, resources):
    def run(steps, paths, report):
        EXECUTED.extend(step.id for step in steps)
        run_local(steps, paths, report)

    return run


@pytest.fixture(scope="module")
def toys():
    register_probe("toy", summary="a toy probe of the registry test", options=(
        Option("scale", 1, "multiplies the toy metric", range=COUNT),))(toy_probe)
    register_analysis("toy", order=99, title="Toy analysis section", help="A toy analysis.",
                      options=(Option("factor", help="Scales the toy statistic.",
                                      range=POSITIVE),))(run_toy)
    register_executor("toy", help="run_local, remembering the steps")(toy_executor)
    yield
    unregister_probe("toy")
    unregister_analysis("toy")
    unregister_executor("toy")
    assert "toy" not in PROBES and "toy" not in ANALYSES and "toy" not in EXECUTORS
    assert "toy" not in CliRunner().invoke(cli, ["analysis", "--help"]).output


@pytest.fixture(scope="module")
def toy_study(toys, study_shards, tmp_path_factory):
    """The toy plan, run once with the toy executor."""
    folder = tmp_path_factory.mktemp("toy_study")
    plan = write_plan(folder / "plan.toml", study_shards, TOY_PLAN)
    out = folder / "out"
    EXECUTED.clear()
    result = run_study(plan=plan, out=str(out), executor="toy")
    return {"plan": plan, "out": out, "result": result}


def test_the_cli_lists_and_runs_the_toys(toy_study, tmp_path):
    runner = CliRunner()
    assert "toy" in runner.invoke(cli, ["probe", "--help"]).output
    assert "--scale" in runner.invoke(cli, ["probe", "toy", "--help"]).output
    assert "toy" in runner.invoke(cli, ["analysis", "--help"]).output
    assert "--factor" in runner.invoke(cli, ["analysis", "toy", "--help"]).output
    assert "--factor" in runner.invoke(cli, ["analysis", "report", "--help"]).output
    assert "toy" in runner.invoke(cli, ["study", "run", "--help"]).output
    store = str(toy_study["out"] / "stores" / "tiny-val.zarr")
    done = runner.invoke(cli, ["probe", "toy", store, "--out", str(tmp_path / "t.json"),
                               "--scale", "2", "--val-fraction", "0.25", "--quiet"])
    assert done.exit_code == 0, done.output
    metric = json.loads((tmp_path / "t.json").read_text())["metrics"]["toy"]["scaled_images"]
    assert metric == 2 * 4  # 16 images, a quarter held out
    done = runner.invoke(cli, ["analysis", "toy", store, "--out", str(tmp_path / "a"),
                               "--factor", "0"])
    assert done.exit_code == 2 and "--factor" in done.output  # the record's range


def test_a_plan_naming_the_toys_is_checked_and_dry_run(toys, study_shards, tmp_path, capsys):
    plan = write_plan(tmp_path / "plan.toml", study_shards, TOY_PLAN)
    loaded = load_plan(plan)
    assert loaded.probe["toy"]["kind"] == "toy" and loaded.analysis["toy"]["kind"] == "toy"
    described = run_study(plan=plan, out=str(tmp_path / "o"), dry_run=True, executor="toy")
    assert {"probe:tiny:toy", "analysis:toy", "report"} <= set(described["steps"])
    assert "no cost model for this probe" in capsys.readouterr().out
    for wrong, named in (("{factor = 3.0}", "{factr = 3.0}"), ("{scale = 3}", "{scales = 3}")):
        bad = write_plan(tmp_path / "bad.toml", study_shards, TOY_PLAN.replace(wrong, named, 1))
        with pytest.raises(PlanError, match=r"unknown option\(s\) \['(factr|scales)'\]; .*'"
                           r"(factor|scale)'"):
            load_plan(bad)
    bad = write_plan(tmp_path / "bad.toml", study_shards,
                     TOY_PLAN.replace("{factor = 3.0}", "{factor = -1}", 1))
    with pytest.raises(PlanError, match="factor"):
        load_plan(bad)


PLUGIN = """\
from vitreg.analysis.common import register_analysis
from vitreg.probe.registry import register_probe


@register_probe("plugin", summary="a plugin's probe")
def plugin(ctx):
    return {}


@register_analysis("plugin", order=98, title="Plugin", help="A plugin's analysis.")
def run_plugin(stores, *, out, images=5000, seed=42, allow_partial=False, block=None):
    return {"figures": [], "stats": {}}
"""


def test_a_plan_s_imports_may_register_probes_and_analyses(study_shards, tmp_path,
                                                           monkeypatch):
    (tmp_path / "vitreg_plugin_of_the_test.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = TOY_PLAN.replace('"tests.tiny_models"]',
                            '"tests.tiny_models", "vitreg_plugin_of_the_test"]')
    for option in (", options = {{scale = 3}}", ", options = {{factor = 3.0}}", "factor = 3.0, "):
        text = text.replace(option, "")
    text = text.replace('kind = "toy"', 'kind = "plugin"')
    try:
        loaded = load_plan(write_plan(tmp_path / "plan.toml", study_shards, text))
        assert loaded.probe["toy"]["kind"] == "plugin"
    finally:
        unregister_probe("plugin")
        unregister_analysis("plugin")


def test_the_study_runs_the_toys_through_the_toy_executor(toy_study):
    out = toy_study["out"]
    assert EXECUTED == ["extract:tiny:val", "probe:tiny:toy", "analysis:toy", "report"]
    store = open_store(str(out / "stores" / "tiny-val.zarr"))
    norms = np.asarray(store.take("norms", store.ok_rows()), dtype=np.float64)
    expected = 3.0 * norms[:, store.geometry.prefix:].mean()
    stamp = json.loads((out / "analysis" / "toy.step.json").read_text())
    assert stamp["config"]["options"] == {"factor": 3.0}
    report = (out / "report" / "report.html").read_text()
    assert "Toy analysis section" in report and "toy factor 3.0" in report
    assert f"{expected:.4g}" in report
    probe = json.loads((out / "probes" / "tiny-toy.json").read_text())
    assert probe["metrics"]["toy"]["scaled_images"] == 3 * probe["counts"]["val"]["images"]
    assert "Other probes" in report and f"toy.scaled_images {3 * 3}" in report  # 3 of 16 held out


def test_an_analysis_refuses_an_option_it_does_not_declare(toys):
    with pytest.raises(UsageError, match=r"unknown option\(s\) \['factr'\].*'factor'"):
        ANALYSES["toy"].call(["unused.zarr"], out="unused", factr=2.0)
    with pytest.raises(UsageError, match=r"'images'"):
        ANALYSES["norms"].call(["unused.zarr"], out="unused", image=2)


def test_list_options_are_checked_item_by_item():
    checked = ANALYSES["maps"].check({"indices": [1, "2"], "keys": ["a"]})
    assert checked["indices"] == (1, 2) and checked["keys"] == ("a",)
    assert checked["top"] == 3 and checked["block_images"] == 500  # run_maps' own defaults
    with pytest.raises(UsageError, match="give a list"):
        ANALYSES["maps"].check({"indices": 3})
    with pytest.raises(UsageError, match="--index -1"):
        ANALYSES["maps"].check({"indices": [-1]})


def test_a_registration_that_cannot_work_is_a_programming_error(toys):
    assert not issubclass(RegistryError, VitregError)
    with pytest.raises(RegistryError, match="already registered"):
        register_probe("toy", summary="again")(toy_probe)
    with pytest.raises(RegistryError, match="already registered"):
        register_analysis("toy", order=1, title="t", help="h",
                          options=(Option("factor", help="f"),))(run_toy)
    with pytest.raises(RegistryError, match="already registered"):
        register_executor("toy", help="again")(toy_executor)
    with pytest.raises(RegistryError, match="keywords of run_toy"):  # `factor` not declared
        register_analysis("toy2", order=1, title="t", help="h")(run_toy)
    assert "toy2" not in ANALYSES
