"""`vitreg study run` end to end on a 2-model plan: skip when done, resume
after a kill, redo exactly what a changed option touches."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitreg.study.run import run_study

from .conftest import write_plan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def done(tmp_path_factory, study_shards) -> dict:
    """One uninterrupted run of the plan, timed."""
    root = tmp_path_factory.mktemp("study_done")
    plan = write_plan(root / "plan.toml", study_shards)
    start = time.perf_counter()
    result = run_study(plan=plan, out=str(root / "out"))
    return {"plan": plan, "out": root / "out", "seconds": time.perf_counter() - start,
            "result": result}


def metrics(out: Path) -> dict[str, object]:
    return {p.name: json.loads(p.read_text())["metrics"]
            for p in sorted((out / "probes").glob("*.json")) if not p.name.endswith(".step.json")}


def test_first_run_does_every_step_and_one_report_holds_both_models(done):
    result = done["result"]
    assert result["ran"] == result["steps"] and len(result["steps"]) == 12
    html = (done["out"] / "report" / "report.html").read_text()
    # each store by model, its name, size and images
    assert re.search(r"Stores: tiny_dinov2_reg4 · \S+ · 56 px · [\d,]+ img · 4 reg · RANDOM "
                     r"WEIGHTS, tiny_dinov2 · \S+ · 56 px", html), html[:3000]
    assert "Study figures" in html and "Table 1" in html


def test_second_run_does_no_work_in_a_tenth_of_the_time(done):
    start = time.perf_counter()
    again = run_study(plan=done["plan"], out=str(done["out"]))
    assert again["ran"] == []
    assert time.perf_counter() - start < done["seconds"] / 10


def test_changing_one_probe_option_redoes_exactly_it_and_the_report(done, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(done["out"], out)
    text = Path(done["plan"]).read_text().replace(
        "options = {epochs = 2, batch_size = 64}", "options = {epochs = 3, batch_size = 64}")
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    result = run_study(plan=str(plan), out=str(out), dry_run=True)
    assert result["states"]["probe:tiny:classify"] == "stale"
    assert "options.epochs: 2 -> 3" in capsys.readouterr().out
    assert run_study(plan=str(plan), out=str(out))["ran"] == ["probe:tiny:classify", "report"]


def test_kill_during_probes_then_rerun_equals_uninterrupted(done, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "vitreg", "study", "run", done["plan"], "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_probe = out / "probes" / "tiny-reg-position.json.step.json"
    deadline = time.monotonic() + 300
    while not first_probe.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert first_probe.exists(), "the child never reached the probes"
    assert not (out / "report" / "report.html.step.json").exists()
    rerun = run_study(plan=done["plan"], out=str(out))
    assert not any(s.startswith("extract:") for s in rerun["ran"])
    assert "probe:tiny-reg:position" not in rerun["ran"] and "report" in rerun["ran"]
    assert metrics(out) == metrics(done["out"])


def test_a_changed_extraction_makes_it_and_only_its_dependents_stale(done, tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    plan.write_text(Path(done["plan"]).read_text().replace('tokens = "sampled:8"',
                                                           'tokens = "sampled:4"'))
    states = run_study(plan=str(plan), out=str(done["out"]), dry_run=True)["states"]
    stale = sorted(k for k, v in states.items() if v != "done")
    assert stale == ["extract:tiny-reg:train", "extract:tiny:train", "probe:tiny-reg:linear",
                     "probe:tiny-reg:position", "probe:tiny:classify", "probe:tiny:linear",
                     "probe:tiny:position", "report"]
    assert 'config.tokens: "sampled:8" -> "sampled:4"' in capsys.readouterr().out
