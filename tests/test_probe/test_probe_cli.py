"""The registry, the click group built from it, and `run_probe`'s option checks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vitreg.core.registry import RegistryError
from vitreg.probe import PROBES, ProbeError, register_probe, run_probe
from vitreg.probe.cli import probe
from vitreg.probe.registry import Option


def test_registry_holds_the_four_probes():
    assert list(PROBES) == ["position", "reconstruct", "classify", "linear"]


def test_registry_refuses_a_duplicate_name():
    with pytest.raises(RegistryError, match="already registered"):
        register_probe("position", summary="again")(lambda ctx: {})
    assert PROBES["position"].summary.startswith("which of the P grid positions")


def test_registry_refuses_redefining_a_common_option():
    with pytest.raises(RegistryError, match="common option"):
        register_probe("x-probe", summary="x", options=(Option("seed", 1, "s"),))(lambda c: {})
    assert "x-probe" not in PROBES


def test_help_lists_every_registered_probe():
    result = CliRunner().invoke(probe, ["--help"])
    assert result.exit_code == 0
    for name in PROBES:
        assert name in result.output
    assert result.output.index("position") < result.output.index("linear")


@pytest.mark.parametrize("kind,flags", [
    ("position", {"--epochs": "30", "--patience": "3", "--mse-weight": "0.5"}),
    ("reconstruct", {"--epochs": "30", "--patience": "3"}),
    ("classify", {"--patience": "3", "--max-images": "200000"}),
    ("linear", {"--epochs": "20", "--momentum": "0.9"}),
])
def test_paper_hyper_parameters_are_flags_with_paper_defaults(kind, flags):
    defaults = PROBES[kind].defaults()
    assert defaults["seed"] == 42 and defaults["val_fraction"] == 0.2
    assert defaults["percentile"] == 98.0
    text = CliRunner().invoke(probe, [kind, "--help"], terminal_width=200).output
    for flag, value in flags.items():
        line = next(t for t in text.splitlines() if t.strip().startswith(flag + " "))
        assert f"[default: {value}]" in line.replace("200,000", "200000") or \
            f"default: {value}" in text, (flag, line)
    for common in ("--val ", "--val-fraction", "--seed", "--allow-partial", "--device",
                   "--backend", "--out"):
        assert common in text


def test_cli_runs_a_probe_and_writes_json(planted, tmp_path):
    out = tmp_path / "r" / "position.json"
    result = CliRunner().invoke(probe, [
        "position", planted, "--out", str(out), "--epochs", "2", "--lr", "0.01",
        "--batch-size", "64", "--min-steps", "0", "--quiet",
    ], terminal_width=150)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["probe"] == "position" and data["config"]["epochs"] == 2
    assert "normal" in result.output and "outlier" in result.output  # the table
    assert not list(out.parent.glob("*.partial"))


def test_cli_turns_vitreg_errors_into_a_message(tmp_path):
    result = CliRunner().invoke(probe, ["position", str(tmp_path / "nothing.zarr"),
                                        "--out", str(tmp_path / "r.json"), "--quiet"])
    assert result.exit_code == 2  # vitreg.boundary.cli_errors: a VitregError exits 2
    assert "Error:" in result.output and "nothing.zarr" in result.output
    assert "Traceback" not in result.output


def test_cli_requires_out(planted):
    result = CliRunner().invoke(probe, ["position", planted])
    assert result.exit_code == 2 and "--out" in result.output


def test_run_probe_refuses_unknown_options_and_probes(planted):
    with pytest.raises(ProbeError, match="unknown option"):
        run_probe("position", planted, epoch=3)
    with pytest.raises(ProbeError, match="unknown probe"):
        run_probe("depth", planted)
    with pytest.raises(ProbeError, match="one of"):
        run_probe("position", planted, backend="jax")


def test_device_cuda_without_cuda_is_a_clear_error(planted):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ProbeError, match="no CUDA device"):
        run_probe("position", planted, device="cuda")
