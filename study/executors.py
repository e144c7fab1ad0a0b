"""Running the steps of one stage: in this process, or as submitit jobs (SLURM:
extractions on GPUs, the rest on CPUs). Stages run one after the other, so a
step starts only once every step it depends on has finished."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vitreg.core import VitregError

from .execute import execute_step
from .steps import Step

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")


class StepFailed(VitregError, RuntimeError):
    """A step raised; the message names it."""


Report = Callable[[Step, dict[str, Any]], None]


def run_local(steps: Sequence[Step], paths: dict[str, str], report: Report) -> None:
    for step in steps:
        report(step, execute_step(step, paths))


def _executor(kind: str, folder: Path, stage: str, resources: dict[str, Any],
              gpu: int | None = None) -> Any:
    import submitit

    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder))
        if gpu is not None:
            executor.update_parameters(visible_gpus=(gpu,), gpus_per_node=1)
    elif kind == "submitit-debug":
        executor = submitit.DebugExecutor(folder=str(folder))
    else:
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**slurm_parameters(kind, stage, resources))
    return executor


def slurm_parameters(kind: str, stage: str, resources: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters of one stage's jobs from the plan's `[resources]`."""
    params: dict[str, Any] = {"timeout_min": int(resources["timeout_min"])}
    if kind != "slurm":
        return params
    gpu = stage == "extract"
    params.update(
        name=f"vitreg-{stage}", nodes=1, tasks_per_node=1, mem_gb=int(resources["mem_gb"]),
        cpus_per_task=int(resources["cpus_per_gpu_job" if gpu else "cpus_per_cpu_job"]),
        gpus_per_node=int(resources["gpus_per_job"]) if gpu else 0,
    )
    if resources.get("partition"):
        params["slurm_partition"] = str(resources["partition"])
    return params


def run_submitit(kind: str, folder: Path, resources: dict[str, Any]) -> Callable[..., None]:
    """A runner that submits one stage's steps as jobs and waits for them all."""

    def run(steps: Sequence[Step], paths: dict[str, str], report: Report) -> None:
        width = _wave_width(kind, steps, resources)
        for start in range(0, len(steps), width):
            _run_wave(kind, folder, steps[start:start + width], paths, report, resources)

    return run


def _wave_width(kind: str, steps: Sequence[Step], resources: dict[str, Any]) -> int:
    """Jobs in flight at once: every job on SLURM; on one node, one per GPU or CPU slot."""
    if kind != "submitit-local" or not steps:
        return max(len(steps), 1)
    gpus = int(resources.get("local_gpus", 0))
    if steps[0].stage == "extract" and gpus > 0:
        return gpus
    return max(int(resources.get("local_cpu_jobs", 1)), 1)


def _run_wave(kind: str, folder: Path, steps: Sequence[Step], paths: dict[str, str],
              report: Report, resources: dict[str, Any]) -> None:
    """Submit `steps` at once (extractions on GPUs 0, 1, ... under `local_gpus`), wait for all."""
    gpus = int(resources.get("local_gpus", 0)) if kind == "submitit-local" else 0
    jobs = []
    for i, step in enumerate(steps):
        gpu = i if gpus and step.stage == "extract" else None
        executor = _executor(kind, folder, step.stage, resources, gpu)
        jobs.append((step, executor.submit(execute_step, step, paths)))
    failures = []
    for step, job in jobs:
        try:
            report(step, job.result())
        except Exception as exc:  # noqa: BLE001  (every job is waited for first)
            failures.append(f"{step.id} (job {job.job_id}): {str(exc).strip()[-500:]}")
    if failures:
        raise StepFailed("step(s) failed:\n" + "\n".join(failures))
