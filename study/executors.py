"""Running the steps of one stage: in this process, or as submitit jobs (SLURM:
extractions on GPUs, the rest on CPUs). Stages run one after the other, so a
step starts only once every step it depends on has finished.

Executors are a registry (`register_executor`): `--executor NAME` offers every
registered one, and the study runs a stage through the runner it makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitreg.core import UsageError, VitregError
from vitreg.core.registry import add_entry

from .execute import execute_step
from .steps import Step


class StepFailed(VitregError, RuntimeError):
    """A step raised; the message names it."""


Report = Callable[[Step, dict[str, Any]], None]
#: Runs one stage's steps (each after its dependencies) and reports each result.
Runner = Callable[[Sequence[Step], dict[str, str], Report], None]
#: (folder for job files, the plan's `[resources]`) -> the runner of every stage
MakeRunner = Callable[[Path, dict[str, Any]], Runner]


@dataclass(frozen=True)
class Executor:
    name: str
    help: str
    make: MakeRunner


#: Every executor by name, in registration order (`--executor`).
EXECUTORS: dict[str, Executor] = {}


def register_executor(name: str, *, help: str) -> Callable[[MakeRunner], MakeRunner]:  # noqa: A002
    """Register `make(folder, resources) -> runner` as executor `name` (`--executor
    NAME`); a name taken twice is refused (`RegistryError`)."""

    def add(make: MakeRunner) -> MakeRunner:
        add_entry(EXECUTORS, name, Executor(name, help, make), what="executor")
        return make

    return add


def unregister_executor(name: str) -> None:
    """Remove executor `name` (a test's or a plugin's)."""
    EXECUTORS.pop(name, None)


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS:
        raise UsageError(f"--executor {name!r}: one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def run_local(steps: Sequence[Step], paths: dict[str, str], report: Report) -> None:
    for step in steps:
        report(step, execute_step(step, paths))


@register_executor("local", help="one step after another, in this process")
def _local(folder: Path, resources: dict[str, Any]) -> Runner:
    return run_local


# -- submitit: each step a job -------------------------------------------------------
@dataclass(frozen=True)
class Jobs:
    """One way of submitting jobs with submitit."""

    #: (folder, GPU index on this node or None) -> a submitit executor
    make: Callable[[Path, int | None], Any]
    cluster: bool = False  # SLURM's parameters: partition, memory, CPUs, GPUs
    one_node: bool = False  # waves as wide as the node's GPUs or CPU job slots


def _slurm(folder: Path, gpu: int | None) -> Any:
    import submitit

    return submitit.AutoExecutor(folder=str(folder), cluster="slurm")


def _on_this_node(folder: Path, gpu: int | None) -> Any:
    import submitit

    executor = submitit.LocalExecutor(folder=str(folder))
    if gpu is not None:
        executor.update_parameters(visible_gpus=(gpu,), gpus_per_node=1)
    return executor


def _debug(folder: Path, gpu: int | None) -> Any:
    import submitit

    return submitit.DebugExecutor(folder=str(folder))


SLURM = Jobs(_slurm, cluster=True)
SUBMITIT_LOCAL = Jobs(_on_this_node, one_node=True)
SUBMITIT_DEBUG = Jobs(_debug)


def register_jobs(name: str, jobs: Jobs, *, help: str) -> None:  # noqa: A002
    """Register submitting `jobs` as executor `name`."""
    register_executor(name, help=help)(
        lambda folder, resources: run_submitit(jobs, folder, resources))


register_jobs("slurm", SLURM, help="each step a SLURM job (submitit)")
register_jobs("submitit-local", SUBMITIT_LOCAL,
              help="each step a job on this node (submitit), over its GPUs and CPU slots")
register_jobs("submitit-debug", SUBMITIT_DEBUG, help="submitit's debug executor, in this process")


def _executor(jobs: Jobs, folder: Path, stage: str, resources: dict[str, Any],
              gpu: int | None = None) -> Any:
    executor = jobs.make(folder, gpu)
    executor.update_parameters(**slurm_parameters(jobs, stage, resources))
    return executor


def slurm_parameters(jobs: Jobs, stage: str, resources: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters of one stage's jobs from the plan's `[resources]`."""
    params: dict[str, Any] = {"timeout_min": int(resources["timeout_min"])}
    if not jobs.cluster:
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


def run_submitit(jobs: Jobs, folder: Path, resources: dict[str, Any]) -> Runner:
    """A runner that submits one stage's steps as jobs and waits for them all."""

    def run(steps: Sequence[Step], paths: dict[str, str], report: Report) -> None:
        width = _wave_width(jobs, steps, resources)
        for start in range(0, len(steps), width):
            _run_wave(jobs, folder, steps[start:start + width], paths, report, resources)

    return run


def _wave_width(jobs: Jobs, steps: Sequence[Step], resources: dict[str, Any]) -> int:
    """Jobs in flight at once: every job on SLURM; on one node, one per GPU or CPU slot."""
    if not jobs.one_node or not steps:
        return max(len(steps), 1)
    gpus = int(resources.get("local_gpus", 0))
    if steps[0].stage == "extract" and gpus > 0:
        return gpus
    return max(int(resources.get("local_cpu_jobs", 1)), 1)


def _run_wave(jobs: Jobs, folder: Path, steps: Sequence[Step], paths: dict[str, str],
              report: Report, resources: dict[str, Any]) -> None:
    """Submit `steps` at once (extractions on GPUs 0, 1, ... under `local_gpus`), wait for all."""
    gpus = int(resources.get("local_gpus", 0)) if jobs.one_node else 0
    submitted = []
    for i, step in enumerate(steps):
        gpu = i if gpus and step.stage == "extract" else None
        executor = _executor(jobs, folder, step.stage, resources, gpu)
        submitted.append((step, executor.submit(execute_step, step, paths)))
    failures = []
    for step, job in submitted:
        try:
            report(step, job.result())
        except Exception as exc:  # noqa: BLE001  (every job is waited for first)
            failures.append(f"{step.id} (job {job.job_id}): {str(exc).strip()[-500:]}")
    if failures:
        raise StepFailed("step(s) failed:\n" + "\n".join(failures))
