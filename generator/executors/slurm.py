"""Slurm executor: one sbatch array job for the tasks, one merge job after it.

The array runs `gen task OUT --world-size N` once per unfinished rank; Slurm's
SLURM_ARRAY_TASK_ID is the rank, so only unfinished ranks are submitted
(`--array=1,3`) and the world size is passed explicitly (SLURM_ARRAY_TASK_COUNT
would count only the submitted ranks). The merge job depends on the array with
`afterok` and is killed rather than left pending if a task fails; submitting the
same build again then runs only the ranks without a completion marker, from
their checkpoints, and a new merge. Both scripts call the Python interpreter
that submitted them, by absolute path, so the jobs run in the same environment.

This module decides only what to submit; Slurm does the scheduling, the
requeueing and the waiting.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generator.errors import BuildError
from generator.executors import (
    ExecutorConfig,
    ExecutorOutcome,
    record_executor,
    unfinished_ranks,
)
from generator.status import read_executor


def array_spec(ranks: Sequence[int], parallelism: int | None = None) -> str:
    """Ranks as a Slurm array range list: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8", plus "%W"."""
    parts: list[str] = []
    ranks = sorted(ranks)
    start = prev = ranks[0]
    for rank in [*ranks[1:], None]:
        if rank is not None and rank == prev + 1:
            prev = rank
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if rank is not None:
            start = prev = rank
    return ",".join(parts) + (f"%{parallelism}" if parallelism else "")


def sbatch_script(
    header: dict[str, str | None], extra: Sequence[str], command: Sequence[str], env: dict[str, str]
) -> str:
    """A batch script: #SBATCH lines (a None value is a flag), raw extra lines, the command."""
    lines = ["#!/bin/bash"]
    for key, value in header.items():
        lines.append(f"#SBATCH --{key}" if value is None else f"#SBATCH --{key}={value}")
    for line in extra:
        if "\n" in line or not line.strip():
            raise BuildError(f"--sbatch {line!r}: one sbatch option per value, without newlines")
        line = line.strip()
        lines.append(line if line.startswith("#SBATCH") else f"#SBATCH {line}")
    lines.append("set -eu")
    lines.extend(f"export {k}={v}" for k, v in env.items())
    lines.append("exec " + " ".join(shlex.quote(part) for part in command))
    return "\n".join(lines) + "\n"


class SlurmExecutor:
    name = "slurm"

    def run(self, out: Path, config: ExecutorConfig, *, progress: Any = None) -> ExecutorOutcome:
        if shutil.which("sbatch") is None:
            raise BuildError(
                "the slurm executor needs sbatch on PATH: run gen build on a Slurm login node"
            )
        options = config.slurm
        n = config.tasks
        _refuse_while_queued(out)
        folder = out / ".work" / "slurm"
        logs = Path(options.log_folder or folder / "logs").resolve()
        logs.mkdir(parents=True, exist_ok=True)
        job_name = options.job_name or f"gen-{out.name}"
        python = [sys.executable, "-m", "generator"]
        common: dict[str, str | None] = {}
        for key, value in (
            ("partition", options.partition),
            ("time", options.time),
            ("mem", options.mem),
        ):
            if value:
                common[key] = value

        task_header: dict[str, str | None] = {
            "job-name": job_name,
            "output": str(logs / "task-%a-job-%A.log"),
            "open-mode": "append",  # a requeued task adds to its log
            **common,
            ("requeue" if options.requeue else "no-requeue"): None,
        }
        env = {"PYTHONUNBUFFERED": "1"}
        if config.cpus_per_task:
            task_header["cpus-per-task"] = str(config.cpus_per_task)
            env["GEN_WORKERS"] = f"${{SLURM_CPUS_PER_TASK:-{config.cpus_per_task}}}"
        if config.gpus_per_task:
            task_header["gres"] = f"gpu:{config.gpus_per_task}"
        task_script = folder / "task.sbatch"
        task_script.write_text(
            sbatch_script(
                task_header,
                options.extra,
                [*python, "task", str(out), "--world-size", str(n)],
                env,
            )
        )
        merge_script = folder / "merge.sbatch"
        merge_script.write_text(
            sbatch_script(
                {
                    "job-name": f"{job_name}-merge",
                    "output": str(logs / "merge-job-%j.log"),
                    "open-mode": "append",
                    **common,
                },
                options.extra,
                [*python, "merge", str(out)],
                {"PYTHONUNBUFFERED": "1"},
            )
        )

        todo = unfinished_ranks(out, n)
        jobs: dict[str, str] = {}
        merge_args: list[str] = []
        if todo:
            jobs["tasks"] = _sbatch(
                [f"--array={array_spec(todo, options.parallelism)}", str(task_script)]
            )
            # Killed, not left pending forever, when a task fails: rerun to resume.
            merge_args = [f"--dependency=afterok:{jobs['tasks']}", "--kill-on-invalid-dep=yes"]
        jobs["merge"] = _sbatch([*merge_args, str(merge_script)])
        record_executor(out, config, jobs=jobs, ranks=todo, submitted=time.time())
        ids = ",".join(jobs.values())
        return ExecutorOutcome(
            kind=self.name,
            tasks=n,
            job_ids=jobs,
            ranks=tuple(todo),
            skipped=tuple(r for r in range(n) if r not in todo),
            follow=(f"gen status {shlex.quote(str(out))}", f"squeue -j {ids}"),
            logs=logs,
        )


def _refuse_while_queued(out: Path) -> None:
    """A second submission while the first one's jobs are queued would run ranks twice
    (the second copy fails on the rank's lock) and merge twice: refuse it."""
    previous = read_executor(out) or {}
    jobs = previous.get("jobs") or {}
    if previous.get("kind") != "slurm" or not jobs:
        return
    ids = ",".join(str(j) for j in jobs.values())
    if any(_queued(str(job)) for job in jobs.values()):
        raise BuildError(
            f"{out}: the previous submission (jobs {ids}) is still queued or running; "
            f"follow it with gen status {out}, or scancel {ids.replace(',', ' ')} first"
        )


def _queued(job: str) -> bool:
    """Whether squeue still lists any part of `job` (a purged id is an error: gone)."""
    done = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def _sbatch(args: list[str]) -> str:
    """Submit; the job id that `sbatch --parsable` prints (before any ';cluster')."""
    done = subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BuildError(f"sbatch {' '.join(args)} failed: {message}")
    return done.stdout.strip().split(";")[0]
