"""`vitreg study run` never destroys finished work implicitly: execution-only
edits redo nothing, a store in doubt stops the run and is left byte for byte,
a finished store is re-extracted only with --redo, two runs never share --out,
and two models never share an output path."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

from tests.store_edit import edit_array_meta
from vitreg.cli import cli
from vitreg.core import UsageError
from vitreg.study.plan import PlanError
from vitreg.study.run import LOCK_NAME, out_lock, run_study

from .conftest import PLAN, write_plan

SMALL = PLAN[:PLAN.index("[extract.val]")] + """\
[extract.val]
split = "val"
tokens = "all"

[report]
store = "val"

[[model]]
name = "tiny"
timm = "tiny_dinov2"
extract = ["val"]
"""
STORE = "stores/tiny-val.zarr"


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (the lock file aside)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def small_done(tmp_path_factory, study_shards) -> dict:
    root = tmp_path_factory.mktemp("small")
    plan = write_plan(root / "plan.toml", study_shards, SMALL)
    run_study(plan=plan, out=str(root / "out"))
    return {"plan": plan, "out": root / "out", "shards": study_shards}


@pytest.fixture
def copy(small_done, tmp_path) -> tuple[str, Path]:
    """A private copy of the finished study: (plan, out)."""
    out = tmp_path / "out"
    shutil.copytree(small_done["out"], out)
    plan = tmp_path / "plan.toml"
    plan.write_text(Path(small_done["plan"]).read_text())
    return str(plan), out


def test_execution_only_edits_and_touched_shards_redo_nothing(copy, small_done):
    plan, out = copy
    text = Path(plan).read_text().replace("batch_size = 16", 'batch_size = 4\nworkers = 0\n'
                                          'device = "cpu"')
    Path(plan).write_text(text)
    for shard in small_done["shards"]["val"].split():
        os.utime(shard, (1, 1))  # an rsync without -t, a `touch`
    before = folder_digest(out / STORE)
    assert run_study(plan=plan, out=str(out))["ran"] == []
    assert folder_digest(out / STORE) == before


def test_a_changed_store_setting_stops_the_run_until_named_with_redo(copy, capsys):
    plan, out = copy
    Path(plan).write_text(Path(plan).read_text().replace('tokens = "all"',
                                                         'tokens = "sampled:4"'))
    before = folder_digest(out)
    with pytest.raises(UsageError, match=r'config.tokens: "all" -> "sampled:4".*--redo '
                                         r"extract:tiny:val"):
        run_study(plan=plan, out=str(out))
    assert folder_digest(out) == before
    states = run_study(plan=plan, out=str(out), dry_run=True, redo=("extract:*",))["states"]
    assert states["extract:tiny:val"] == "redo"
    assert "--redo deletes and re-extracts 1 finished store(s): extract:tiny:val" in \
        capsys.readouterr().out
    assert run_study(plan=plan, out=str(out), redo=("extract:tiny:val",))["ran"] == [
        "extract:tiny:val", "report"]
    assert "sampled" in zarr.open_group(str(out / STORE), mode="r")  # extracted afresh


def _newer_schema(store: Path) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["vitreg"]["schema_version"] = "99.0"
    (store / "zarr.json").write_text(json.dumps(meta))


def _pickle_codec(store: Path) -> None:
    edit_array_meta(str(store), "norms", lambda m: m["codecs"].append(
        {"name": "numcodecs.pickle", "configuration": {}}))


def _garbled_root(store: Path) -> None:
    (store / "zarr.json").write_text("{ not json")


@pytest.mark.parametrize("damage, words", [
    (_newer_schema, "schema 99.0"), (_pickle_codec, "pickle"), (_garbled_root, "cannot be opened"),
])
def test_a_finished_store_that_cannot_be_opened_is_left_byte_identical(copy, damage, words):
    plan, out = copy
    damage(out / STORE)
    before = folder_digest(out)
    result = CliRunner().invoke(cli, ["study", "run", plan, "--out", str(out)])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert words in flat and "--redo extract:tiny:val" in flat, flat
    assert folder_digest(out) == before


def test_a_second_run_on_one_out_is_refused_with_a_sentence(copy):
    plan, out = copy
    with out_lock(str(out)):
        result = CliRunner().invoke(cli, ["study", "run", plan, "--out", str(out)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"another `vitreg study run` (pid {os.getpid()}" in result.output
    assert run_study(plan=plan, out=str(out))["ran"] == []  # released


@pytest.mark.parametrize("first, second", [("tiny/a", "tiny_a"), ("Tiny", "tiny"),
                                           ("a b", "a_b")])
def test_two_models_whose_names_map_to_one_path_are_refused(study_shards, tmp_path, first,
                                                           second):
    model = SMALL[SMALL.index("[[model]]"):]
    text = (SMALL.replace('name = "tiny"', f'name = "{first}"')
            + "\n" + model.replace('name = "tiny"', f'name = "{second}"'))
    plan = write_plan(tmp_path / "plan.toml", study_shards, text)
    for dry_run in (True, False):
        with pytest.raises(PlanError, match="would both write"):
            run_study(plan=plan, out=str(tmp_path / "out"), dry_run=dry_run)
    assert not (tmp_path / "out" / "stores").exists()


def test_a_recipe_name_cannot_reach_outside_out(study_shards, tmp_path):
    text = SMALL.replace("[extract.val]", '[extract."../../escape"]').replace(
        'extract = ["val"]', 'extract = ["../../escape"]')
    plan = write_plan(tmp_path / "plan.toml", study_shards, text.replace(
        '[report]\nstore = "val"', '[report]\nstore = "../../escape"'))
    result = run_study(plan=plan, out=str(tmp_path / "out"), dry_run=True)
    assert result["steps"][0] == "extract:tiny:../../escape"
    from vitreg.study.plan import load_plan
    from vitreg.study.steps import build_steps

    output = Path(build_steps(load_plan(plan, placeholders=True), tmp_path / "out")[0].output)
    assert output.parent == tmp_path / "out" / "stores" and output.name == "tiny-_._.._escape.zarr"


def test_a_finished_store_without_its_stamp_is_kept(copy):
    plan, out = copy
    (out / (STORE + ".step.json")).unlink()
    before = folder_digest(out / STORE)
    run_study(plan=plan, out=str(out))
    assert folder_digest(out / STORE) == before
    assert (out / (STORE + ".step.json")).exists()


def test_a_stamp_of_an_older_vitreg_keeps_its_store(copy):
    """Stamps written before identities left out mtimes and execution settings
    (full config, files as [path, size, mtime]) still mark their store done."""
    plan, out = copy
    stamp_path = out / (STORE + ".step.json")
    stamp = json.loads(stamp_path.read_text())
    shards = stamp["run_config"]["shards"]
    legacy = {"step": stamp["step"], "hash": "0123456789abcdef", "config": stamp["run_config"],
              "files": {"shards": [[p, os.path.getsize(p), 1] for p in shards]},
              "inputs": {}, "result": stamp["result"]}
    stamp_path.write_text(json.dumps(legacy))
    before = folder_digest(out / STORE)
    states = run_study(plan=plan, out=str(out), dry_run=True)["states"]
    assert states["extract:tiny:val"] == "done"
    run_study(plan=plan, out=str(out))
    assert folder_digest(out / STORE) == before
