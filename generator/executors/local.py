"""Local executor: N tasks as N processes on this machine, then the merge in-process.

Each task is `python -m generator task OUT --rank r --world-size N`, the same
command a Slurm array runs, with its own log file. On a GPU node each task sees
only its own GPUs (CUDA_VISIBLE_DEVICES), so an 8-GPU node runs 8 engine
replicas, or 4 with tensor parallelism 2. Each task is also pinned to its share
of the CPU cores, so the llama.cpp engine, which starts one worker per usable
core, starts cores // N workers per task instead of oversubscribing the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
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
    HeartbeatFollower,
    execution_record,
    record_executor,
    task_environment,
    unfinished_ranks,
    usable_cpu_list,
)

POLL_SECONDS = 0.5
GRACE_SECONDS = 15.0  # after Ctrl-C, how long tasks get to stop before SIGKILL


def gpu_groups(visible: Sequence[str], tasks: int, per_task: int) -> list[list[str]]:
    """Disjoint GPU sets, one per task, from the devices this process may use."""
    need = tasks * per_task
    if need > len(visible):
        raise BuildError(
            f"{tasks} task(s) x {per_task} GPU(s) need {need} GPUs; "
            f"this machine offers {len(visible)} ({','.join(visible) or 'none'})"
        )
    return [list(visible[i * per_task : (i + 1) * per_task]) for i in range(tasks)]


def cpu_groups(cpus: Sequence[int], tasks: int, per_task: int | None) -> list[list[int]]:
    """Each task's cores: an even share (at least one; tasks share cores round-robin when
    there are more tasks than cores), or `per_task` of them wrapping around the machine."""
    if not cpus:
        return [[] for _ in range(tasks)]
    share = per_task or max(1, len(cpus) // tasks)
    return [[cpus[(i * share + k) % len(cpus)] for k in range(share)] for i in range(tasks)]


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: CUDA_VISIBLE_DEVICES if set, else every GPU
    nvidia-smi lists."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d for d in (s.strip() for s in declared.split(",")) if d and d != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def task_process_environment(
    base: Any, gpus: list[str], cpus: list[int], gpus_per_task: int
) -> dict[str, str]:
    """A task's environment: its own GPUs only, and its CPU share as its engine's workers."""
    env = {**base, **task_environment(len(cpus) or None), "PYTHONUNBUFFERED": "1"}
    if gpus_per_task:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def task_command(out: Path, rank: int, world_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "generator",
        "task",
        str(out),
        "--rank",
        str(rank),
        "--world-size",
        str(world_size),
    ]


def task_log(out: Path, rank: int, world_size: int) -> Path:
    return out / ".work" / "logs" / f"task-{rank:05d}-of-{world_size:05d}.log"


class LocalExecutor:
    name = "local"

    def run(self, out: Path, config: ExecutorConfig, *, progress: Any = None) -> ExecutorOutcome:
        from generator.merge import merge

        record_executor(out, config)
        todo = unfinished_ranks(out, config.tasks)
        skipped = tuple(r for r in range(config.tasks) if r not in todo)
        if todo and config.tasks == 1 and not config.gpus_per_task:
            from generator.task import run_task  # one task: no process of its own needed

            run_task(out, 0, 1, progress=progress)
        elif todo:
            self._run_processes(out, config, todo, progress)
        manifest = merge(out, progress=progress, execution=execution_record(config))
        return ExecutorOutcome(
            kind=self.name,
            tasks=config.tasks,
            manifest=manifest,
            ranks=tuple(todo),
            skipped=skipped,
            logs=out / ".work" / "logs",
        )

    def _run_processes(
        self, out: Path, config: ExecutorConfig, ranks: list[int], progress: Any
    ) -> None:
        n = config.tasks
        gpus = gpu_groups(visible_gpus(), len(ranks), config.gpus_per_task)
        cpus = cpu_groups(usable_cpu_list(), len(ranks), config.cpus_per_task)
        (out / ".work" / "logs").mkdir(parents=True, exist_ok=True)
        processes: dict[int, subprocess.Popen] = {}
        follower = HeartbeatFollower(out, n, progress)
        restore = _sigterm_as_interrupt()
        try:
            for slot, rank in enumerate(ranks):
                processes[rank] = self._start(out, rank, n, gpus[slot], cpus[slot], config)
            while any(p.poll() is None for p in processes.values()):
                follower.poll()
                time.sleep(POLL_SECONDS)
            follower.poll()
        except BaseException:  # Ctrl-C, SIGTERM or a bug here: never leave tasks behind
            _stop_all(processes.values())
            raise
        finally:
            follower.close()
            restore()
        failed = sorted(rank for rank, p in processes.items() if p.returncode != 0)
        if failed:
            rank = failed[0]
            log = task_log(out, rank, n)
            others = f" (also failed: {', '.join(map(str, failed[1:]))})" if failed[1:] else ""
            raise BuildError(
                f"{out}: task {rank} of {n} failed with exit code "
                f"{processes[rank].returncode}: {_last_line(log)}{others}; log: {log}"
            )

    def _start(
        self,
        out: Path,
        rank: int,
        world_size: int,
        gpus: list[str],
        cpus: list[int],
        config: ExecutorConfig,
    ) -> subprocess.Popen:
        env = task_process_environment(os.environ, gpus, cpus, config.gpus_per_task)
        log = task_log(out, rank, world_size).open("ab")

        def pin() -> None:
            if cpus and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, cpus)

        try:
            # Its own session: Ctrl-C reaches this process only, which forwards it.
            return subprocess.Popen(
                task_command(out, rank, world_size),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=pin,
            )
        finally:
            log.close()


def _sigterm_as_interrupt() -> Any:
    """While tasks run, SIGTERM (a killed session, a scheduler) stops them as Ctrl-C does
    instead of leaving them orphaned; returns what restores the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _stop_all(processes: Any) -> None:
    """SIGINT to every running task (they stop between chunks, checkpoints intact), then
    SIGKILL to any still running after the grace period."""
    running = [p for p in processes if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + GRACE_SECONDS
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _last_line(log: Path) -> str:
    """The task's own one-line error, which is the last line its log holds."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"
