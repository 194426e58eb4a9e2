"""The local executor: a build split into N task processes equals the single-process
build; finished tasks are skipped; a failed task is named with its log; each task gets
its own GPUs and its share of the cores."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.build import Progress
from generator.errors import BuildError
from generator.executors import ExecutorConfig, run_executor
from generator.executors.local import cpu_groups, gpu_groups, task_process_environment
from generator.status import build_status, read_task_status
from tests.clusters import build_fingerprint


class RecordingProgress(Progress):
    """Records what a progress display would be shown."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None, int]] = []
        self.items: dict[str, int] = {}
        self.tokens: dict[str, int] = {}

    def phase(self, name: str, total: int | None = None, done: int = 0) -> None:
        self.phases.append((name, total, done))
        self.items[name], self.tokens[name] = done, 0

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        name = self.phases[-1][0]
        self.items[name] += items
        self.tokens[name] += tokens


def test_three_tasks_equal_one_process(mini, single_process, tmp_path: Path):
    out = mini.prepare(tmp_path / "out")
    progress = RecordingProgress()
    outcome = run_executor(out, ExecutorConfig(kind="local", tasks=3), progress=progress)
    assert outcome.completed and outcome.ranks == (0, 1, 2) and outcome.skipped == ()
    assert build_fingerprint(out) == single_process
    execution = outcome.manifest["execution"]
    assert (execution["executor"], execution["tasks"]) == ("local", 3)
    assert sorted(t["rank"] for t in execution["tasks_report"]) == [0, 1, 2]
    status = build_status(out)
    assert status.tasks["done"] == 3 and status.merge == "done"
    # The display followed all three tasks through their heartbeats.
    assert progress.phases[0] == ("generating", 6, 0)
    assert progress.items["generating"] == status.documents == 6
    assert progress.tokens["generating"] == status.tokens > 0
    pids = {view.pid for view in status.ranks}
    assert len(pids) == 3 and os.getpid() not in pids  # each task in its own process
    for rank in range(3):
        assert (out / ".work" / "logs" / f"task-{rank:05d}-of-00003.log").is_file()

    again = run_executor(out, ExecutorConfig(kind="local", tasks=3))
    assert again.ranks == () and again.skipped == (0, 1, 2)
    assert build_fingerprint(out) == single_process


def test_a_failed_task_is_named_with_its_log(mini, tmp_path: Path):
    out = mini.prepare(tmp_path / "out")
    tasks = out / ".work" / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    # Another process holds both ranks' locks: both tasks refuse to start.
    handles = [(tasks / f"task-{r:05d}-of-00002.lock").open("a+") for r in range(2)]
    try:
        for handle in handles:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(BuildError) as error:
            run_executor(out, ExecutorConfig(kind="local", tasks=2))
    finally:
        for handle in handles:
            handle.close()
    log = out / ".work" / "logs" / "task-00000-of-00002.log"
    message = str(error.value)
    assert message.startswith(f"{out}: task 0 of 2 failed with exit code 1: Error: ")
    assert "task 0 of 2 is already running" in message
    assert message.endswith(f"(also failed: 1); log: {log}")
    assert "\n" not in message
    assert not (out / "manifest.json").exists()


def test_gpus_are_split_into_disjoint_sets():
    assert gpu_groups(["0", "1", "2", "3", "4", "5", "6", "7"], 4, 2) == [
        ["0", "1"],
        ["2", "3"],
        ["4", "5"],
        ["6", "7"],
    ]
    assert gpu_groups(["3", "5"], 2, 1) == [["3"], ["5"]]
    with pytest.raises(BuildError, match=r"3 task\(s\) x 1 GPU\(s\) need 3 GPUs; "):
        gpu_groups(["0", "1"], 3, 1)


def test_cores_are_shared_evenly_at_least_one_each():
    assert cpu_groups(list(range(8)), 4, None) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert cpu_groups([0, 1], 3, None) == [[0], [1], [0]]
    assert cpu_groups(list(range(4)), 2, 3) == [[0, 1, 2], [3, 0, 1]]


def test_a_task_sees_only_its_gpus_and_its_share_of_workers():
    env = task_process_environment({"PATH": "/bin"}, ["2", "3"], [4, 5], gpus_per_task=2)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["GEN_WORKERS"] == "2"
    assert env["PATH"] == "/bin"
    cpu_only = task_process_environment({"CUDA_VISIBLE_DEVICES": "0"}, [], [1], gpus_per_task=0)
    assert cpu_only["CUDA_VISIBLE_DEVICES"] == "0" and cpu_only["GEN_WORKERS"] == "1"


def test_ctrl_c_stops_every_task_and_a_rerun_resumes(mini, single_process, tmp_path: Path):
    out = mini.prepare(tmp_path / "out")
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from generator.executors import ExecutorConfig, run_executor; "
            "run_executor(Path(sys.argv[1]), ExecutorConfig(kind='local', tasks=2))",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    beats: list = []
    while len(beats) < 2 or not all(b and b["state"] == "running" for b in beats):
        assert time.monotonic() < deadline, "the tasks never started"
        assert driver.poll() is None, driver.stderr.read()
        beats = [read_task_status(out, rank, 2) for rank in range(2)]
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode != 0 and "KeyboardInterrupt" in stderr
    for beat in beats:  # the executor stopped its tasks before it exited
        with pytest.raises(ProcessLookupError):
            os.kill(beat["pid"], 0)
    assert not (out / "manifest.json").exists()

    outcome = run_executor(out, ExecutorConfig(kind="local", tasks=2))
    assert outcome.completed and build_fingerprint(out) == single_process


def test_executor_settings_are_checked_on_construction():
    with pytest.raises(BuildError, match=r"unknown executor 'k8s' \(known: local, slurm, ray\)"):
        ExecutorConfig(kind="k8s")
    with pytest.raises(BuildError, match="--tasks must be a positive integer"):
        ExecutorConfig(tasks=0)


def test_an_unprepared_folder_is_refused(tmp_path: Path):
    with pytest.raises(BuildError, match=r"no \.work/build\.json; prepare the build"):
        run_executor(tmp_path, ExecutorConfig(kind="local", tasks=2))
