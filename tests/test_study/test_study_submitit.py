"""`--executor submitit-local`: the submission code runs, stage by stage."""

from __future__ import annotations

import json

from vitreg.study.executors import SLURM, SUBMITIT_LOCAL, slurm_parameters
from vitreg.study.paper import RESOURCES
from vitreg.study.run import run_study

from .conftest import PLAN, write_plan

ONE_MODEL = PLAN.split("[[model]]")[0] + """[[model]]
name = "tiny"
timm = "tiny_dinov2"
extract = ["val"]
probe = []
analysis = ["norms"]
""" .replace("[probe.position]", "[probe.unused]")


def test_submitit_local_executor_runs_every_stage_as_jobs(study_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = write_plan(tmp_path / "plan.toml", study_shards, ONE_MODEL)
    out = tmp_path / "out"
    result = run_study(plan=plan, out=str(out), executor="submitit-local")
    assert result["ran"] == ["extract:tiny:val", "analysis:norms", "report"]
    assert (out / "report" / "report.html").exists()
    assert len(list((out / "jobs").glob("*_submitted.pkl"))) == 3
    stamp = json.loads((out / "stores" / "tiny-val.zarr.step.json").read_text())
    assert stamp["result"]["ok"] == 16
    assert run_study(plan=plan, out=str(out), executor="submitit-local")["ran"] == []


def test_submitit_local_spreads_extractions_over_the_plan_s_gpus(monkeypatch, tmp_path):
    import submitit

    from vitreg.study.executors import _run_wave
    from vitreg.study.steps import Step

    seen = []
    monkeypatch.setattr(submitit.LocalExecutor, "submit",
                        lambda self, fn, step, paths: seen.append(self.parameters) or _Done())
    steps = [Step(id=f"extract:m{i}:val", stage="extract", config={}, output=f"o{i}")
             for i in range(2)]
    _run_wave(SUBMITIT_LOCAL, tmp_path, steps, {}, lambda s, r: None,
              {**RESOURCES, "local_gpus": 2})
    assert [p["visible_gpus"] for p in seen] == [(0,), (1,)]


class _Done:
    job_id = "0"

    def result(self) -> dict:
        return {}


def test_slurm_parameters_put_extractions_on_gpus_and_the_rest_on_cpus():
    gpu = slurm_parameters(SLURM, "extract", {**RESOURCES, "partition": "gpu"})
    cpu = slurm_parameters(SLURM, "probe", RESOURCES)
    assert gpu["gpus_per_node"] == 1 and gpu["slurm_partition"] == "gpu"
    assert cpu["gpus_per_node"] == 0 and cpu["cpus_per_task"] == RESOURCES["cpus_per_cpu_job"]
