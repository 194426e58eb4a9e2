"""The executor seam: where a build's tasks and its merge run.

A build is planned once (`gen build` writes `OUT/.work/build.json`), then cut into
N tasks: task `rank` generates, cleans, scores, judges and MinHashes the chunks
whose number is `rank` modulo N, checkpointing each chunk, and one merge
deduplicates across all tasks and writes the shards and manifest. Every task
needs only OUT, so an executor decides nothing but WHERE `generator.task.run_task`
and `generator.merge.merge` run: local processes, a Slurm array job, Ray tasks.
Scheduling, retries and resources are left to the system that runs them.

Like the engine seam, this module holds only the seam's types and a lazy
registry, so choosing the local executor never imports Ray, and `gen --help`
stays instant. A new executor is one module plus one line in `EXECUTORS`.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from generator.errors import BuildError
from generator.status import (
    EXECUTOR_FILE,
    finished_ranks,
    planned_documents,
    read_task_status,
)


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch settings. None leaves a setting to the cluster's defaults."""

    partition: str | None = None
    time: str | None = None  # sbatch --time, e.g. "4:00:00"
    mem: str | None = None  # sbatch --mem per task, e.g. "16G"
    parallelism: int | None = None  # the array's %W: at most W tasks at once
    requeue: bool = True
    extra: tuple[str, ...] = ()  # raw sbatch options, e.g. "--qos=high" or "--account=x"
    job_name: str | None = None  # default: "gen-" + the output folder's name
    log_folder: Path | None = None  # default: OUT/.work/slurm/logs

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", tuple(self.extra))


@dataclass(frozen=True)
class RayOptions:
    """How to reach a Ray cluster and how often Ray may rerun a lost task."""

    address: str | None = None  # None: RAY_ADDRESS, or a new local cluster
    max_retries: int = 3


@dataclass(frozen=True)
class ExecutorConfig:
    """Where a build's tasks run and with what resources each.

    `gpus_per_task` pins each task to its own GPUs (local), asks the scheduler for
    them (Slurm, Ray), or is 0 on CPU. `cpus_per_task` None means an even share of
    the machine's cores (local) or the scheduler's default (Slurm: 1, Ray: 1).
    """

    kind: str = "local"
    tasks: int = 1
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    ray: RayOptions = field(default_factory=RayOptions)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise BuildError(f"unknown executor '{self.kind}' (known: {', '.join(EXECUTOR_KINDS)})")
        if not isinstance(self.tasks, int) or self.tasks < 1:
            raise BuildError(f"--tasks must be a positive integer, not {self.tasks!r}")
        if self.gpus_per_task < 0 or (self.cpus_per_task is not None and self.cpus_per_task < 1):
            raise BuildError("--gpus-per-task must be >= 0 and --cpus-per-task >= 1")

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON, for OUT/.work/executor.json and the manifest."""
        data = asdict(self)
        data["slurm"]["extra"] = list(self.slurm.extra)
        if self.slurm.log_folder is not None:
            data["slurm"]["log_folder"] = str(self.slurm.log_folder)
        return data


@dataclass(frozen=True)
class ExecutorOutcome:
    """What an executor did: ran the build to its manifest, or submitted it.

    A submitted build (Slurm) carries the scheduler's job ids and the commands
    that follow it; `skipped` are ranks that had already finished and were not
    run again.
    """

    kind: str
    tasks: int
    manifest: dict[str, Any] | None = None
    job_ids: dict[str, str] = field(default_factory=dict)  # "tasks"/"merge" -> job id
    ranks: tuple[int, ...] = ()  # the ranks run or submitted this time
    skipped: tuple[int, ...] = ()
    follow: tuple[str, ...] = ()
    logs: Path | None = None

    @property
    def completed(self) -> bool:
        return self.manifest is not None


class Executor(Protocol):
    """Runs the tasks of a prepared build (OUT/.work/build.json) and then its merge."""

    name: str

    def run(self, out: Path, config: ExecutorConfig, *, progress: Any = None) -> ExecutorOutcome:
        """Run or submit every unfinished task of `out`, then the merge."""
        ...


# name -> "module:Class"; the module is imported only when the executor is chosen.
EXECUTORS: dict[str, str] = {
    "local": "generator.executors.local:LocalExecutor",
    "slurm": "generator.executors.slurm:SlurmExecutor",
    "ray": "generator.executors.ray:RayExecutor",
}
EXECUTOR_KINDS = tuple(EXECUTORS)


def create_executor(kind: str) -> Executor:
    if kind not in EXECUTORS:
        raise BuildError(f"unknown executor '{kind}' (known: {', '.join(EXECUTOR_KINDS)})")
    module_name, class_name = EXECUTORS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def run_executor(out: Path, config: ExecutorConfig, *, progress: Any = None) -> ExecutorOutcome:
    """Run the prepared build in `out` with the executor `config` names.

    `progress` (optional, a `generator.build.Progress`) receives the generating
    phase and its documents and tokens as the tasks' heartbeats report them,
    whichever executor runs them; a submitting executor (Slurm) returns before
    any task runs.
    """
    out = Path(out).resolve()
    if not (out / ".work" / "build.json").is_file():
        raise BuildError(f"{out}: no .work/build.json; prepare the build with gen build first")
    return create_executor(config.kind).run(out, config, progress=progress)


def record_executor(out: Path, config: ExecutorConfig, **extra: Any) -> None:
    """Write OUT/.work/executor.json: which executor runs this build, with how many tasks,
    and (Slurm) its job ids, so `gen status` and the merge can tell."""
    from shards.writer import write_json_atomic

    path = out / ".work" / EXECUTOR_FILE
    data = {**config.describe(), "recorded": time.time(), **extra}
    write_json_atomic(path, data)


def task_environment(cpus: int | None) -> dict[str, str]:
    """Environment variables a task process reads to size its engine to its share.

    GEN_WORKERS caps the llama.cpp workers a task starts when the build does not
    name `--workers` (`Build.from_spec` reads it), so N tasks on one machine do not
    each start one worker per core.
    """
    return {"GEN_WORKERS": str(cpus)} if cpus else {}


def usable_cpu_list() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


class HeartbeatFollower:
    """Feeds a progress bar from the tasks' heartbeat files, for executors whose tasks
    run in other processes: the bar shows the whole build, not one task."""

    def __init__(self, out: Path, world_size: int, progress: Any) -> None:
        self.out, self.world_size, self.progress = out, world_size, progress
        self.started = False
        self.documents = self.tokens = 0

    def poll(self) -> None:
        if self.progress is None:
            return
        beats = [read_task_status(self.out, r, self.world_size) for r in range(self.world_size)]
        documents = sum(int(b.get("documents") or 0) for b in beats if b)
        tokens = sum(int(b.get("tokens") or 0) for b in beats if b)
        if not self.started:
            total = planned_documents(self.out)
            if total is None:
                planned = [b.get("planned") for b in beats if b]
                if len(planned) < self.world_size or not all(isinstance(p, int) for p in planned):
                    return  # no total yet: the bar starts once every task has reported
                total = sum(planned)
            self.progress.phase("generating", total=total, done=documents)
            self.started, self.documents, self.tokens = True, documents, tokens
            return
        if documents > self.documents or tokens > self.tokens:
            self.progress.advance(documents - self.documents, tokens - self.tokens)
            self.documents, self.tokens = documents, tokens

    def close(self) -> None:
        if self.progress is not None and self.started:
            self.progress.close()


def execution_record(config: ExecutorConfig) -> dict[str, Any]:
    """What the manifest's `execution` records about the executor (its executor fields)."""
    return {"executor": config.kind, "tasks": config.tasks, "gpus_per_task": config.gpus_per_task}


def unfinished_ranks(out: Path, world_size: int) -> list[int]:
    done = finished_ranks(out, world_size)
    return [rank for rank in range(world_size) if rank not in done]
