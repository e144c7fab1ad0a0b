"""`ExtractConfig` is the one list of extraction options: the command line,
the store's recorded attributes and the study's plan keys come from it, and a
bad value or a misspelt name fails at once."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

import tests.tiny_models  # noqa: F401
from tests.conftest import image_samples, write_shard
from vitreg.cache.attrs import CONFIG_KEYS, SHARD_DIGESTS, WRITER_KEYS
from vitreg.core.errors import UsageError
from vitreg.extract.cli import extract_command, extract_options, with_options
from vitreg.extract.config import (
    EXTRACT,
    STUDY,
    ExtractConfig,
    execution_keys,
    plan_keys,
    setting,
    settings,
)

BASE = {"shards": ["a.tar"], "model": "tiny_dinov2", "out": "s.zarr"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Extended(ExtractConfig):
    """A config with one more option, as a contributor would add it."""

    gamma: float | None = setting(None, help="A new option.", plan=(EXTRACT,),
                                  records=("gamma",))


# --- the command line ---------------------------------------------------------

def test_every_option_of_vitreg_extract_is_a_field_with_its_default_and_help():
    fields = {f.name: f for f in dataclasses.fields(ExtractConfig)}
    params = {p.name: p for p in extract_command.params}
    own = {"dry_run", "strict", "no_progress"}  # the command's, not the extraction's
    assert set(params) - own == set(fields) - {"progress"}
    for name, param in params.items():
        if name in own or name == "shards":
            continue
        assert param.help == settings()[name].help, name
        default = fields[name].default
        if isinstance(default, bool):
            assert param.is_flag and not default, name
            continue
        expected = None if default is dataclasses.MISSING else ("" if default == () else default)
        assert param.default == expected, name
    assert params["token_mode"].opts == ["--tokens"] and params["keys_file"].opts == ["--keys"]
    assert params["model"].required and params["out"].required


def test_a_new_field_becomes_an_option_that_reaches_the_config():
    seen = {}

    def command(**options):
        options = {k: v for k, v in options.items()
                   if k not in ("dry_run", "strict", "no_progress")}
        seen["config"] = Extended(**options)

    cli = click.command()(with_options(command, extract_options(Extended)))
    result = CliRunner().invoke(cli, ["a.tar", "--model", "m", "--out", "o", "--gamma", "0.5",
                                      "--with", "qkv,pixels", "--blocks", "6,-1"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.gamma == 0.5 and config.shards == ("a.tar",)
    assert config.with_options == ("pixels", "qkv") and config.blocks == (6, -1)
    assert "--gamma FLOAT" in CliRunner().invoke(cli, ["--help"]).output


def test_the_command_line_refuses_what_the_config_refuses(tmp_path):
    result = CliRunner().invoke(extract_command, ["a.tar", "--model", "m", "--out", "o",
                                                  "--precision", "fp8"])
    assert result.exit_code == 2 and "'fp8' is not one of" in result.output


# --- the study's plan keys ----------------------------------------------------

def test_the_study_plan_keys_are_the_fields_plan_names():
    from vitreg.study.plan import KEYS, VALUES
    from vitreg.study.stages import EXTRACT_KEYS, EXTRACT_KWARGS, STUDY_EXTRACT_DEFAULTS
    from vitreg.study.steps import EXECUTION_KEYS

    extract = {"img_size", "preprocess", "crop_pct", "interpolation", "decode", "batch_size",
               "precision", "device", "workers", "limit", "keys", "tokens", "dtype", "with",
               "blocks", "chunk_rows"}
    assert EXTRACT_KEYS == {"split"} | extract == {"split", *plan_keys(EXTRACT)}
    assert set(STUDY_EXTRACT_DEFAULTS) == {"weights", "seed", "batch_size", "precision",
                                           "device", "workers"} == set(plan_keys(STUDY))
    assert KEYS["study"] == {*STUDY_EXTRACT_DEFAULTS, "imports"}
    assert set(VALUES["extract"]) == EXTRACT_KEYS
    assert {EXTRACT_KWARGS[k] for k in ("tokens", "with", "dtype", "keys")} == {
        "token_mode", "with_options", "tokens_dtype", "keys_file"}
    # the settings that never change what a store holds, left out of a step's identity
    assert EXECUTION_KEYS["extract"] == {"batch_size", "workers", "device"} == execution_keys()


def test_a_new_field_gets_a_plan_key():
    assert plan_keys(EXTRACT, Extended) == {**plan_keys(EXTRACT), "gamma": "gamma"}
    assert execution_keys(Extended) == execution_keys()


def test_a_step_configuration_becomes_a_config():
    from vitreg.study.stages import check_extract_options, extract_config

    step = {"model": "m", "split": "val", "shards": ["a.tar"], "tokens": "sampled:4",
            "with": ["pixels"], "dtype": "float32", "keys": "k.txt", "blocks": [2],
            "workers": 0}
    config = extract_config(step, out="o", overwrite=True)
    assert (config.token_mode, config.with_options, config.tokens_dtype, config.keys_file,
            config.blocks, config.workers, config.overwrite) == (
        "sampled:4", ("pixels",), "float32", "k.txt", (2,), 0, True)
    assert check_extract_options({"blocks": ["last"]}).startswith("blocks: give block numbers")
    assert check_extract_options({"tokens": "some"}).startswith("tokens: ")
    assert check_extract_options({"with": ["pixels"], "split": "val"}) is None


# --- the recorded attributes --------------------------------------------------

def test_every_option_is_recorded_or_execution_only():
    for name, spec in settings().items():
        assert spec.execution != bool(spec.records) or name == "chunk_rows", name
        assert set(spec.records) <= set(WRITER_KEYS), name
        # a resume with another value is refused (`cache.attrs.check_config`)
        assert not spec.records or set(spec.records) & {*CONFIG_KEYS, SHARD_DIGESTS}, name


@pytest.fixture(scope="module")
def attrs_of(tmp_path_factory):
    """Root attributes a run of `ExtractConfig(**changes)` would record (nothing written)."""
    from vitreg.extract.distributed import ranks_of
    from vitreg.extract.run import prepare, store_attrs

    folder = tmp_path_factory.mktemp("config")
    shard = write_shard(folder / "a.tar", image_samples(3))
    (folder / "keys.txt").write_text("sample00002\nsample00000\n")
    base = {"shards": [shard], "model": "tiny_dinov2", "out": str(folder / "s.zarr"),
            "weights": "random", "progress": False}

    def attrs(**changes):
        config = ExtractConfig(**{**base, **changes})
        with ranks_of(None, None) as ranks:
            return store_attrs(config, prepare(config, ranks))

    attrs.folder = folder
    return attrs


def test_each_recorded_option_changes_its_attributes_and_execution_ones_nothing(attrs_of):
    base = attrs_of()
    changed = {"model": "tiny_dinov2_reg4", "img_size": 42, "preprocess": "dinov2-linear",
               "crop_pct": 0.5, "interpolation": "nearest", "decode": "gpu",
               "precision": "bf16", "limit": 2, "keys_file": str(attrs_of.folder / "keys.txt"),
               "token_mode": "sampled:4", "tokens_dtype": "float32",
               "with_options": ["pixels"], "blocks": [1], "seed": 7,
               "batch_size": 2, "workers": 0, "device": "cpu", "overwrite": True,
               "chunk_rows": 1}
    for name, value in changed.items():
        after = attrs_of(**{name: value})
        diff = {k for k in base if k != "versions" and base[k] != after[k]}
        records = set(settings()[name].records)
        if settings()[name].execution or name == "chunk_rows":
            assert diff == set(), name
        else:
            assert diff & records, (name, diff)
    recorded = {n for n, s in settings().items() if s.records}
    assert recorded - set(changed) == {"shards", "weights"}  # covered by test_pipeline


# --- bad values -----------------------------------------------------------------

def test_a_misspelt_option_is_a_type_error_everywhere():
    from vitreg.extract.run import run_extract

    with pytest.raises(TypeError, match="token_mod"):
        ExtractConfig(**BASE, token_mod="none")
    with pytest.raises(TypeError, match="batchsize"):
        run_extract(**BASE, batchsize=4)
    with pytest.raises(TypeError, match="seeds"):
        ExtractConfig(**BASE).replace(seeds=3)
    with pytest.raises(TypeError):
        ExtractConfig(BASE["shards"], model="m", out="o")  # keyword-only


@pytest.mark.parametrize("name,value,message", [
    ("img_size", "224", "--img-size '224': give an integer, 1 or more"),
    ("img_size", 0, "--img-size 0: give an integer, 1 or more"),
    ("batch_size", 8.0, "--batch-size 8.0: give an integer"),
    ("seed", True, "--seed True: give an integer from 0 to 4294967295, not a yes/no"),
    ("crop_pct", 1.5, "--crop-pct 1.5: give a finite number above 0, up to 1"),
    ("precision", "fp8", "--precision 'fp8': choose from auto, fp32, bf16, fp16"),
    ("decode", "tpu", "--decode 'tpu': choose from cpu, gpu"),
    ("tokens_dtype", "float64", "--dtype 'float64': choose from float16, float32"),
    ("token_mode", "sampled:x", "--tokens 'sampled:x': "),
    ("with_options", ["pixel"], "--with ['pixel']: unknown ['pixel']"),
    ("blocks", "6,12", "--blocks '6,12': give block numbers"),
    ("workers", -1, "--workers -1: give an integer, 0 or more"),
    ("overwrite", "yes", "--overwrite 'yes': give true or false"),
    ("model", None, "--model None: give a string"),
    ("shards", [], "shards []: give a list of shard paths"),
])
def test_a_bad_value_names_the_option_and_what_to_give(name, value, message):
    with pytest.raises(UsageError) as caught:
        ExtractConfig(**{**BASE, name: value})
    assert str(caught.value).startswith(message), str(caught.value)


def test_values_are_normalised_and_the_config_is_frozen(tmp_path):
    config = ExtractConfig(shards=[tmp_path / "a.tar"], model="m", out="o",
                           with_options="qkv,pixels,qkv", blocks=[6, -1])
    assert config.shards == (str(tmp_path / "a.tar"),)
    assert config.with_options == ("pixels", "qkv") and config.blocks == (6, -1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]
    assert config.replace(seed=3).seed == 3 and config.seed == 42
    with pytest.raises(UsageError, match="--seed"):
        config.replace(seed=-1)
