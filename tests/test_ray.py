"""A real local Ray cluster (tests/clusters.py) runs a build as Ray tasks: a task's worker
process is killed mid-build, Ray runs the task again, it resumes from its checkpoints,
and the result equals the single-process build."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from generator.errors import BuildError
from generator.executors import ExecutorConfig, RayOptions, run_executor
from generator.status import read_task_status
from tests.clusters import build_fingerprint


def test_lost_task_is_retried_by_ray_and_equals_single_process(
    ray_cluster, mini, single_process, tmp_path: Path
):
    out = mini.prepare(tmp_path / "out")
    killed: dict[str, int] = {}

    def kill_rank_1_once_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            beat = read_task_status(out, 1, 3)
            if beat and beat["state"] == "running":
                os.kill(beat["pid"], signal.SIGKILL)  # the Ray worker running the task
                killed["pid"] = beat["pid"]
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank_1_once_running, daemon=True)
    killer.start()
    outcome = run_executor(out, ExecutorConfig(kind="ray", tasks=3))
    killer.join(timeout=5)

    assert "pid" in killed, "rank 1 was never seen running"
    beat = read_task_status(out, 1, 3)
    assert beat["state"] == "done" and beat["pid"] != killed["pid"]  # retried elsewhere
    assert outcome.completed and outcome.ranks == (0, 1, 2)
    assert build_fingerprint(out) == single_process
    execution = outcome.manifest["execution"]
    assert (execution["executor"], execution["tasks"]) == ("ray", 3)


def test_a_task_error_is_not_retried_and_names_the_rank(ray_cluster, mini, tmp_path: Path):
    out = mini.prepare(tmp_path / "out")
    (out / ".work" / "build.json").write_text("{}")  # every task fails the same way
    with pytest.raises(BuildError) as error:
        run_executor(out, ExecutorConfig(kind="ray", tasks=2, ray=RayOptions(max_retries=1)))
    message = str(error.value)
    assert message.startswith(f"{out}: task 0 of 2 failed on Ray (retried up to 1 times if lost): ")
    assert "malformed build spec" in message and message.endswith("(also failed: 1)")


def test_without_ray_installed_the_error_is_one_line(monkeypatch):
    from generator.executors.ray import _import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(BuildError) as error:
        _import_ray()
    assert str(error.value) == ("the ray executor needs Ray: pip install 'alignment-datagen[ray]'")
