"""Ray executor: each task a Ray remote function, then the merge in the driver.

Ray Core places every task where its resources are free (`num_gpus`,
`num_cpus`), and when a worker or node dies it runs the task again, up to
`max_retries` times; `run_task` resumes from its checkpoints, so a retry costs
only the chunk that was in flight. Tasks write into OUT, which every node must
see (a shared filesystem), and the package must be installed on every node, as
for any Ray job. An error raised by a task (bad input) is not retried: it would
fail the same way again.

Ray is an optional extra (`pip install 'alignment-datagen[ray]'`), imported only
when this executor is chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from generator.errors import BuildError, GenError
from generator.executors import (
    ExecutorConfig,
    ExecutorOutcome,
    HeartbeatFollower,
    execution_record,
    record_executor,
    task_environment,
    unfinished_ranks,
)

POLL_SECONDS = 1.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BuildError(
            "the ray executor needs Ray: pip install 'alignment-datagen[ray]'"
        ) from None
    return ray


def run_ray_task(out: str, rank: int, world_size: int, cpus: int) -> dict[str, Any]:
    """What one Ray task runs (module level, so workers import it by name). The engine gets
    as many workers as Ray reserved CPUs for the task."""
    import dataclasses

    from generator.task import run_task

    os.environ.update(task_environment(cpus))
    try:
        result = run_task(Path(out), rank, world_size)
    except GenError as exc:  # a plain error crosses the process boundary intact
        raise BuildError(str(exc)) from None
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)


class RayExecutor:
    name = "ray"

    def run(self, out: Path, config: ExecutorConfig, *, progress: Any = None) -> ExecutorOutcome:
        from generator.merge import merge

        ray = _import_ray()
        record_executor(out, config)
        started_here = not ray.is_initialized()
        if started_here:
            address = config.ray.address or os.environ.get("RAY_ADDRESS")
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except ConnectionError as exc:
                raise BuildError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        try:
            todo = unfinished_ranks(out, config.tasks)
            if todo:
                self._run_tasks(ray, out, config, todo, progress)
            manifest = merge(out, progress=progress, execution=execution_record(config))
        finally:
            if started_here:
                ray.shutdown()
        return ExecutorOutcome(
            kind=self.name,
            tasks=config.tasks,
            manifest=manifest,
            ranks=tuple(todo),
            skipped=tuple(r for r in range(config.tasks) if r not in todo),
        )

    def _run_tasks(
        self, ray: Any, out: Path, config: ExecutorConfig, ranks: list[int], progress: Any
    ) -> None:
        cpus = config.cpus_per_task or 1
        remote = ray.remote(run_ray_task).options(
            num_cpus=cpus,
            num_gpus=config.gpus_per_task,
            max_retries=config.ray.max_retries,
            retry_exceptions=False,
            name="gen-task",
        )
        pending = {remote.remote(str(out), rank, config.tasks, cpus): rank for rank in ranks}
        follower = HeartbeatFollower(out, config.tasks, progress)
        failures: dict[int, str] = {}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                follower.poll()
                for ref in ready:
                    rank = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failures[rank] = _one_line(exc)
            follower.poll()
        except BaseException:  # Ctrl-C: stop our tasks; their checkpoints stay
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            follower.close()
        if failures:
            rank = min(failures)
            others = sorted(failures)[1:]
            also = f" (also failed: {', '.join(map(str, others))})" if others else ""
            raise BuildError(
                f"{out}: task {rank} of {config.tasks} failed on Ray "
                f"(retried up to {config.ray.max_retries} times if lost): {failures[rank]}{also}"
            )


def _one_line(exc: BaseException) -> str:
    """A task's own error message for a BuildError it raised, else Ray's first line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, GenError):
        return str(cause)
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
