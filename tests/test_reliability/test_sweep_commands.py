"""Issue #23's command-side sweep: hostile and careless values of every
command's options, plans and files. Each case expects exit status 2, one
sentence that names what is wrong (the allowed range for a number), no
traceback, and nothing written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import bare_store, image_samples
from tests.test_study.conftest import PLAN as STUDY_PLAN
from vitreg.cli import cli
from vitreg.probe.registry import PROBES, ProbeError
from vitreg.probe.run import resolve_options

TINY = ["--model", "tiny_dinov2", "--weights", "random", "--no-progress"]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> dict[str, Path]:
    """A tiny store (6 images, no pixels), its shard and a scratch folder."""
    folder = tmp_path_factory.mktemp("sweep")
    store, shard = bare_store(folder)
    (folder / "binary.txt").write_bytes(b"\xff\xfe\x00 not text")
    (folder / "broken.json").write_text("{not json")
    (folder / "list.json").write_text("[1, 2]")
    (folder / "images").mkdir()
    (folder / "images" / "n01440764_1.jpg").write_bytes(image_samples(1)[0]["jpg"])
    return {"store": store, "shard": shard, "dir": folder}


def probe(kind: str, *options: str):
    return lambda c: ["probe", kind, c["store"], "--out", c["dir"] / "never.json", "--quiet",
                      *options]


def analysis(kind: str, *options: str):
    return lambda c: ["analysis", kind, c["store"], "--out", c["dir"] / "never", *options]


def extract(*options: str, shard: str | None = None):
    return lambda c: ["extract", shard or c["shard"], *TINY, "--out", c["dir"] / "never.zarr",
                      *options]


POSITIVE = "a finite number above 0"
CASES = {
    # probe: learning rates, weights, momentum, seeds, counts
    "lr-nan": (probe("position", "--lr", "nan"), ["--lr", POSITIVE]),
    "lr-inf": (probe("position", "--lr", "inf"), ["--lr", POSITIVE]),
    "lr-negative-in-grid": (probe("position", "--lr", "0.01,-1"), ["'-1' is not allowed"]),
    "lr-empty": (probe("position", "--lr", ","), ["one or more"]),
    "lr-linear-zero": (probe("linear", "--lr", "0"), ["--lr", POSITIVE]),
    "momentum-negative": (probe("linear", "--momentum", "-0.1"), ["from 0 up to 1"]),
    "momentum-one": (probe("linear", "--momentum", "1"), ["(1 excluded)"]),
    "weight-decay-negative": (probe("linear", "--weight-decay", "-1"), ["0 or more"]),
    "weight-decay-nan": (probe("classify", "--weight-decay", "nan"), ["0 or more"]),
    "mse-weight-nan": (probe("position", "--mse-weight", "nan"), ["--mse-weight", "0 or more"]),
    "mse-weight-negative": (probe("position", "--mse-weight", "-0.5"), ["0 or more"]),
    "seed-negative": (probe("position", "--seed", "-1"), ["from 0 to 4294967295"]),
    "seed-too-large": (probe("position", "--seed", str(2**32)), ["from 0 to 4294967295"]),
    "seed-fraction": (probe("position", "--seed", "1.5"), ["an integer"]),
    "epochs-zero": (probe("position", "--epochs", "0"), ["--epochs", "1 or more"]),
    "patience-zero": (probe("reconstruct", "--patience", "0"), ["--patience", "1 or more"]),
    "batch-size-zero": (probe("classify", "--batch-size", "0"), ["1 or more"]),
    "val-fraction-one": (probe("position", "--val-fraction", "1"), ["between 0 and 1"]),
    "val-fraction-nan": (probe("position", "--val-fraction", "nan"), ["between 0 and 1"]),
    "percentile-nan": (probe("position", "--percentile", "nan"), ["between 0 and 100"]),
    "normals-negative": (probe("position", "--normals", "-3"), ["0 or more"]),
    "max-images-zero": (probe("classify", "--max-images", "0"), ["1 or more"]),
    "num-classes-zero": (probe("classify", "--num-classes", "0"), ["1 or more"]),
    "decode-workers-negative": (probe("reconstruct", "--decode-workers", "-1"), ["0 or more"]),
    "memory-budget-negative": (probe("position", "--memory-budget", "-1"), ["0 or more"]),
    "shuffle-buffer-zero": (probe("position", "--shuffle-buffer", "0"), ["1 or more"]),
    "sklearn-c-zero": (probe("position", "--sklearn-c", "0"), ["--sklearn-c", POSITIVE]),
    "sklearn-alpha-inf": (probe("position", "--sklearn-alpha", "1,inf"), ["'inf'", POSITIVE]),
    "sklearn-max-iter-zero": (probe("position", "--sklearn-max-iter", "0"), ["1 or more"]),
    "min-steps-negative": (probe("position", "--min-steps", "-1"), ["0 or more"]),
    "shards-unbalanced-braces": (probe("reconstruct", "--targets", "shards", "--shards",
                                       "/data/x-{000..003.tar"), ["unbalanced braces"]),
    # analysis
    "analysis-seed-negative": (analysis("norms", "--seed", "-1"), ["from 0 to 4294967295"]),
    "analysis-images-negative": (analysis("norms", "--images", "-5"), ["--images"]),
    "redundant-percentile-150": (analysis("similarity", "--redundant-percentile", "150"),
                                 ["from 0 to 100"]),
    "redundant-cut-nan": (analysis("similarity", "--redundant-cut", "nan"), ["from -1 to 1"]),
    "maps-unknown-key": (analysis("maps", "--key", "no-such-image"),
                         ["--key 'no-such-image'", "no ok row"]),
    "maps-index-past-the-end": (analysis("maps", "--index", "999"), ["--index 999", "rows 0 to 5"]),
    "maps-index-negative": (analysis("maps", "--index", "-1"), ["0 or more"]),
    # extract
    "crop-pct-nan": (extract("--crop-pct", "nan"), ["--crop-pct", "above 0, up to 1"]),
    "crop-pct-zero": (extract("--crop-pct", "0"), ["above 0, up to 1"]),
    "extract-seed-negative": (extract("--seed", "-5"), ["from 0 to 4294967295"]),
    "extract-unbalanced-braces": (extract(shard="/data/x-{000..001.tar"), ["unbalanced braces"]),
    "extract-stray-closing-brace": (extract(shard="/data/x-}.tar"), ["unbalanced braces"]),
    "extract-binary-keys-file": (lambda c: extract("--keys", c["dir"] / "binary.txt")(c),
                                 ["--keys", "not a UTF-8 text file"]),
    "shards-binary-synsets-file": (lambda c: ["shards", c["dir"] / "images", "--out",
                                              c["dir"] / "never", "--synsets",
                                              c["dir"] / "binary.txt"],
                                   ["--synsets", "not a UTF-8 text file"]),
    # analysis report --probes: files that are not probe results
    "report-probes-broken-json": (lambda c: analysis("report", "--probes",
                                                     c["dir"] / "broken.json")(c),
                                  ["broken.json is not a JSON file"]),
    "report-probes-a-list": (lambda c: analysis("report", "--probes", c["dir"] / "list.json")(c),
                             ["not a `vitreg probe` result"]),
    "report-probes-binary": (lambda c: analysis("report", "--probes", c["dir"] / "binary.txt")(c),
                             ["binary.txt is not a JSON file"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_option_values_are_refused_with_a_sentence(ctx, name):
    make, words = CASES[name]
    result = CliRunner().invoke(cli, [str(a) for a in make(ctx)])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(
        result.exception, (TypeError, KeyError, AttributeError, RuntimeError, IndexError))
    for word in words:
        assert word in flat, (word, flat)
    assert not any((ctx["dir"] / n).exists() for n in ("never.json", "never", "never.zarr"))


def test_every_numeric_probe_option_has_a_range_and_refuses_nan():
    """No NaN or infinity can reach a recorded config, for any probe option."""
    for spec in PROBES.values():
        for opt in spec.all_options:
            numeric = opt.value_type in (int, float) and opt.value_type is not bool
            assert not numeric or opt.range is not None, (spec.name, opt.name)
            if opt.range is None:
                continue
            for bad in (math.nan, math.inf, -math.inf, "nan"):
                with pytest.raises(ProbeError, match=opt.flag):
                    resolve_options(spec, {opt.name: bad})


# -- linear --head files that are not a linear head ----------------------------------------
def _save(path: Path, state) -> Path:
    torch.save(state, path)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


HEADS = {
    "text-file": (lambda d: _write(d / "h.pth", b"not a checkpoint"),
                  "not a weights-only tensor checkpoint"),
    "empty-file": (lambda d: _write(d / "e.pth", b""), "not a weights-only tensor checkpoint"),
    "garbled-safetensors": (lambda d: _write(d / "g.safetensors", b"\x08" + b"\0" * 20),
                            "not a readable .safetensors"),
    "a-list": (lambda d: _save(d / "l.pth", [1, 2, 3]), "holds a list, not a state dict"),
    "bias-of-other-length": (lambda d: _save(d / "b.pth", {"weight": torch.ones(10, 64),
                                                           "bias": torch.ones(7)}),
                             "the bias is (7,) but the weight has 10 rows"),
    "bias-not-a-tensor": (lambda d: _save(d / "n.pth", {"weight": torch.ones(10, 64),
                                                        "bias": [0.0] * 10}),
                          "the bias is list"),
    "nan-weights": (lambda d: _save(d / "w.pth", {"weight": torch.full((10, 64), math.nan)}),
                    "not all finite"),
    "integer-weights": (lambda d: _save(d / "i.pth", {"weight": torch.ones(10, 64,
                                                                           dtype=torch.int64)}),
                        "not all finite floating-point"),
    "two-weights": (lambda d: _save(d / "t.pth", {"a.weight": torch.ones(2, 3),
                                                  "b.weight": torch.ones(2, 3)}),
                    "expected one 2-D weight"),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_malformed_head_files_are_refused_with_a_sentence(ctx, tmp_path, name):
    make, words = HEADS[name]
    head = make(tmp_path)
    result = CliRunner().invoke(cli, ["probe", "linear", str(ctx["store"]), "--head", str(head),
                                      "--out", str(tmp_path / "r.json"), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert words in " ".join(result.output.split()), result.output
    assert not (tmp_path / "r.json").exists()


# -- study plans -------------------------------------------------------------------------
PLAN = STUDY_PLAN[:STUDY_PLAN.index("[extract.val]")] + """\
[extract.val]
split = "val"

[probe.linear]
kind = "linear"
train = "val"
options = {{epochs = 1}}

[analysis.maps]
kind = "maps"
store = "val"

[report]
store = "val"

[[model]]
name = "tiny"
timm = "tiny_dinov2"
extract = ["val"]
probe = ["linear"]
analysis = ["maps"]
"""

PLANS = {
    "data-unbalanced-braces": (("val = \"{val}\"", 'val = "/data/x-{{000..003.tar"'),
                               "[data] val: [data] shard pattern", "unbalanced braces"),
    "seed-in-quotes": (("seed = 42", 'seed = "42"'), "[study] seed", "without quotes"),
    "seed-negative": (("seed = 42", "seed = -1"), "[study] seed", "from 0 to 4294967295"),
    "workers-words": (("seed = 42", 'seed = 42\nworkers = "many"'), "[study] workers",
                      "'auto' or an integer, 0 or more"),
    "batch-size-zero": (("batch_size = 16", "batch_size = 0"), "[study] batch_size",
                        "1 or more"),
    "limit-zero": (('split = "val"', 'split = "val"\nlimit = 0'), "[extract.val] limit",
                   "1 or more"),
    "crop-pct-nan": (('split = "val"', 'split = "val"\ncrop_pct = nan'), "[extract.val] crop_pct",
                     "above 0, up to 1"),
    "img-size-string": (('split = "val"', 'split = "val"\nimg_size = "224"'),
                        "[extract.val] img_size", "without quotes"),
    "probe-lr-nan": (("epochs = 1", "epochs = 1, lr = nan"), "[probe.linear] options",
                     "--lr"),
    "probe-momentum-two": (("epochs = 1", "epochs = 1, momentum = 2"), "[probe.linear] options",
                           "(1 excluded)"),
    "probe-epochs-string": (("epochs = 1", 'epochs = "many"'), "[probe.linear] options",
                            "--epochs"),
    "analysis-top-zero": (('store = "val"\n\n[report]', 'store = "val"\noptions = {{top = 0}}'
                           '\n\n[report]'), "[analysis.maps] options", "--top 0"),
    "report-options-a-number": (('[report]\nstore = "val"', '[report]\nstore = "val"\n'
                                 "options = 3"), "[report] options", "expected a table"),
    "report-top-zero": (('[report]\nstore = "val"', '[report]\nstore = "val"\n'
                         "options = {{top = 0}}"), "[report] options", "--top 0"),
    "model-extract-a-string": (('extract = ["val"]', 'extract = "val"'), "[model] extract",
                               "give a list"),
    "model-name-a-number": (('name = "tiny"', "name = 7"), "[model] name", "string in quotes"),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_hostile_plan_values_are_refused_even_in_a_dry_run(ctx, tmp_path, name):
    (old, new), *words = PLANS[name]
    text = PLAN.replace(old, new, 1)
    assert text != PLAN
    plan = tmp_path / "plan.toml"
    plan.write_text(text.format(val=ctx["shard"], train=ctx["shard"]))
    for dry in (["--dry-run"], []):
        result = CliRunner().invoke(cli, ["study", "run", str(plan), "--out",
                                          str(tmp_path / "out"), *dry])
        flat = " ".join(result.output.split())
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        for word in words:
            assert word in flat, (word, flat)
    assert not (tmp_path / "out" / "stores").exists()


def test_redo_of_a_step_the_plan_lacks_is_refused(ctx, tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(val=ctx["shard"], train=ctx["shard"]))
    result = CliRunner().invoke(cli, ["study", "run", str(plan), "--out", str(tmp_path / "out"),
                                      "--dry-run", "--redo", "extract:tiny:train"])
    assert result.exit_code == 2 and "--redo 'extract:tiny:train' names no step" in \
        " ".join(result.output.split())
