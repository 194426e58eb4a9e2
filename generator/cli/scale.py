"""`gen task`, `gen merge`, `gen status` and the executor options of `gen build`.

`gen task` and `gen merge` are what executors run: a Slurm array job, a local
process or a person finishing a build by hand. Both need only the output folder,
which `gen build` prepared.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from generator.cli.common import option_group, user_errors
from generator.executors import (
    EXECUTOR_KINDS,
    ExecutorConfig,
    ExecutorOutcome,
    RayOptions,
    SlurmOptions,
)

out_argument = click.argument("out", type=click.Path(path_type=Path, file_okay=False, exists=True))


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


@click.command("task")
@out_argument
@click.option(
    "--rank",
    type=click.IntRange(min=0),
    help="Which task this is  [default: $SLURM_ARRAY_TASK_ID]",
)
@click.option(
    "--world-size",
    type=click.IntRange(min=1),
    help="How many tasks the build is split into  [default: $SLURM_ARRAY_TASK_COUNT]",
)
@user_errors
def task(out: Path, rank: int | None, world_size: int | None) -> None:
    """Run one task of a prepared build: generate, clean, score, judge and MinHash the
    chunks of rank R, checkpointing each. Runs again from its checkpoints after a kill;
    does nothing if the task already finished.

    \b
    Examples:
      gen task out/run1 --rank 2 --world-size 8
      sbatch --array=0-7 --wrap "gen task out/run1 --world-size 8"   # rank from Slurm
    """
    from generator.task import run_task

    rank = rank if rank is not None else _env_int("SLURM_ARRAY_TASK_ID")
    world_size = world_size if world_size is not None else _env_int("SLURM_ARRAY_TASK_COUNT")
    if rank is None or world_size is None:
        raise click.UsageError(
            "--rank and --world-size are required outside a Slurm array job "
            "(SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are unset)"
        )
    if rank >= world_size:
        raise click.UsageError(f"--rank {rank} must be below --world-size {world_size}")
    result = run_task(out, rank, world_size)
    click.echo(
        f"{out}: task {rank} of {world_size} done: {result.documents} documents, "
        f"{result.tokens} tokens in {result.wall_seconds:.1f} s"
    )


@click.command("merge")
@out_argument
@user_errors
def merge(out: Path) -> None:
    """Merge the finished tasks of a build: global exact and near dedup, shards, manifest.

    Never calls a model. Fails naming the missing ranks if a task has not finished.

    \b
    Example:
      gen merge out/run1
    """
    from generator.merge import merge as merge_build
    from generator.status import read_executor

    record = read_executor(out)
    execution = {"executor": record.get("kind"), "tasks": record.get("tasks")} if record else {}
    manifest = merge_build(out, execution=execution)
    click.echo(summary_line(out, manifest))


@click.command("status")
@out_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option(
    "--stale-after",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="Seconds after which a heartbeat from another host counts as a dead task.",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=1),
    help="Print again every N seconds until the merge is done (Ctrl-C to stop).",
)
@user_errors
def status(out: Path, as_json: bool, stale_after: float, watch: float | None) -> None:
    """Follow a build of any executor: tasks done, running, failed and pending, documents
    and tokens so far, tokens/s over the last minutes, ETA, and the merge.

    \b
    Examples:
      gen status out/run1
      gen status out/run1 --json | jq .tasks
      gen status out/run1 --watch 30
    """
    from generator.status import build_status, format_status

    while True:
        current = build_status(out, stale_after=stale_after)
        if as_json:
            click.echo(json.dumps(current.to_dict()))
        else:
            click.echo(format_status(current))
        if watch is None or current.merge == "done":
            return
        time.sleep(watch)
        if not as_json:
            click.echo()


def summary_line(out: Path, manifest: dict[str, Any]) -> str:
    counts = manifest["counts"]
    dropped = ", ".join(f"{n} {reason}" for reason, n in counts["dropped"].items()) or "none"
    return (
        f"{out}: {counts['kept']} of {counts['generated']} documents kept "
        f"({manifest['tokens']['total']} tokens) in {len(manifest['shards'])} shard(s); "
        f"dropped: {dropped}"
    )


def describe_outcome(out: Path, outcome: ExecutorOutcome) -> str:
    """What `gen build` prints after an executor returns without a manifest (submitted)."""
    if outcome.completed:
        return summary_line(out, outcome.manifest or {})
    skipped = f"; {len(outcome.skipped)} already done" if outcome.skipped else ""
    jobs = outcome.job_ids
    if "tasks" in jobs:
        submitted = (
            f"submitted {len(outcome.ranks)} of {outcome.tasks} task(s) as Slurm array job "
            f"{jobs['tasks']}{skipped}, and merge job {jobs['merge']} to run after it"
        )
    else:
        submitted = f"every task is done; submitted merge job {jobs.get('merge')}"
    follow = "; ".join(outcome.follow)
    return f"{out}: {submitted}\nfollow with: {follow}\nlogs: {outcome.logs}"


EXECUTOR_OPTIONS = [
    click.option(
        "--executor",
        type=click.Choice(EXECUTOR_KINDS),
        default="local",
        show_default=True,
        help="Where tasks run: local processes, a Slurm array job, or a Ray cluster.",
    ),
    click.option(
        "--tasks",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Split the build into N tasks (each its own engine); same shards for any N.",
    ),
    click.option(
        "--gpus-per-task",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="GPUs each task gets (local: pinned with CUDA_VISIBLE_DEVICES).",
    ),
    click.option(
        "--cpus-per-task",
        type=click.IntRange(min=1),
        help="CPU cores each task gets  [default: local: an even share; slurm, ray: 1]",
    ),
    click.option("--partition", help="slurm: partition to submit to."),
    click.option("--time", "time_limit", help="slurm: time limit per task, e.g. 4:00:00."),
    click.option("--mem", help="slurm: memory per task, e.g. 32G."),
    click.option(
        "--max-parallel",
        type=click.IntRange(min=1),
        help="slurm: at most N tasks running at once (the array's %N).",
    ),
    click.option(
        "--requeue/--no-requeue",
        default=True,
        show_default=True,
        help="slurm: requeue a task whose node fails or is preempted.",
    ),
    click.option(
        "--sbatch",
        "sbatch_extra",
        multiple=True,
        help="slurm: an extra sbatch option, repeatable, e.g. --sbatch=--qos=high.",
    ),
    click.option("--job-name", help="slurm: job name  [default: gen-OUT]"),
    click.option(
        "--slurm-logs",
        type=click.Path(path_type=Path, file_okay=False),
        help="slurm: folder for job logs  [default: OUT/.work/slurm/logs]",
    ),
    click.option("--address", help="ray: cluster address  [default: $RAY_ADDRESS or a new one]"),
    click.option(
        "--ray-max-retries",
        type=click.IntRange(min=0),
        default=3,
        show_default=True,
        help="ray: how often Ray reruns a task whose worker or node died.",
    ),
]


def _executor_config(
    executor: str,
    tasks: int,
    gpus_per_task: int,
    cpus_per_task: int | None,
    partition: str | None,
    time_limit: str | None,
    mem: str | None,
    max_parallel: int | None,
    requeue: bool,
    sbatch_extra: tuple[str, ...],
    job_name: str | None,
    slurm_logs: Path | None,
    address: str | None,
    ray_max_retries: int,
) -> ExecutorConfig:
    return ExecutorConfig(
        kind=executor,
        tasks=tasks,
        gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task,
        slurm=SlurmOptions(
            partition=partition,
            time=time_limit,
            mem=mem,
            parallelism=max_parallel,
            requeue=requeue,
            extra=sbatch_extra,
            job_name=job_name,
            log_folder=slurm_logs.resolve() if slurm_logs else None,
        ),
        ray=RayOptions(address=address, max_retries=ray_max_retries),
    )


executor_options = option_group("executor_config", EXECUTOR_OPTIONS, _executor_config)
