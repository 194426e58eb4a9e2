"""A real Slurm cluster (tests/clusters.py) runs a build as an array job: one task is
killed mid-build, `gen status` follows it, the build is submitted again, only the
killed rank runs, and the result equals the single-process build."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from generator.cli import main
from generator.cli.scale import status as status_command
from generator.errors import BuildError
from generator.executors import ExecutorConfig, SlurmOptions, run_executor
from generator.executors.slurm import array_spec, sbatch_script
from generator.status import build_status, read_task_status
from tests.clusters import build_fingerprint


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def observe(runner, out: Path) -> dict:
    """`gen status OUT --json`, as a script following the build would call it."""
    result = runner.invoke(status_command, [str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_array_job_killed_task_resubmitted_equals_single_process(
    slurm_env, mini, single_process, runner, tmp_path: Path
):
    out = tmp_path / "out"
    config = ExecutorConfig(kind="slurm", tasks=3, cpus_per_task=1)
    # Submitted by the project's own command, as a user would.
    submitted = runner.invoke(
        main, mini.build_args(out, "--executor", "slurm", "--tasks", "3", "--cpus-per-task", "1")
    )
    assert submitted.exit_code == 0, submitted.output
    jobs = json.loads((out / ".work" / "executor.json").read_text())["jobs"]
    assert set(jobs) == {"tasks", "merge"}
    lines = submitted.output.splitlines()
    assert lines[lines.index(f"logs: {out}/.work/slurm/logs") - 2 :][:3] == [
        f"{out}: submitted 3 of 3 task(s) as Slurm array job {jobs['tasks']}, "
        f"and merge job {jobs['merge']} to run after it",
        f"follow with: gen status {out}; squeue -j {jobs['tasks']},{jobs['merge']}",
        f"logs: {out}/.work/slurm/logs",
    ]
    script = (out / ".work" / "slurm" / "task.sbatch").read_text()
    assert f"exec {sys.executable} -m generator task {out} --world-size 3" in script

    # A second submission while the first is queued would run ranks twice: refused.
    with pytest.raises(BuildError, match=r"the previous submission .* is still queued"):
        run_executor(out, config)

    # Kill rank 1's task process as soon as it is running, as a lost node would.
    beat = wait_for(
        lambda: (b := read_task_status(out, 1, 3)) and b["state"] == "running" and b,
        "rank 1 to start",
    )
    running = observe(runner, out)
    assert running["tasks"]["running"] >= 1 and running["merge"] == "waiting"
    os.kill(beat["pid"], signal.SIGKILL)
    # Slurm marks the task failed and kills the merge job, whose afterok can never hold.
    wait_for(lambda: not slurm_env.jobs(), "the queue to empty")
    assert not (out / "manifest.json").exists()
    after_kill = build_status(out)
    assert [v.state for v in after_kill.ranks] == ["done", "stale", "done"]

    resubmitted = run_executor(out, config)
    assert resubmitted.ranks == (1,) and resubmitted.skipped == (0, 2)
    wait_for(lambda: not slurm_env.jobs(), "the resubmitted build to finish")
    done = observe(runner, out)
    assert done["tasks"] == {"done": 3, "running": 0, "failed": 0, "pending": 0, "stale": 0}
    assert done["merge"] == "done"
    assert read_task_status(out, 1, 3)["pid"] != beat["pid"]  # rank 1 really ran again

    assert build_fingerprint(out) == single_process
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["execution"]["executor"], manifest["execution"]["tasks"]) == ("slurm", 3)
    task_logs = sorted(p.name for p in (out / ".work" / "slurm" / "logs").glob("task-*.log"))
    assert task_logs == [
        f"task-0-job-{jobs['tasks']}.log",
        f"task-1-job-{jobs['tasks']}.log",
        f"task-1-job-{resubmitted.job_ids['tasks']}.log",
        f"task-2-job-{jobs['tasks']}.log",
    ]


def test_the_task_script_runs_this_interpreter_with_every_setting(tmp_path: Path):
    options = SlurmOptions(partition="gpu", time="4:00:00", mem="32G", extra=("--qos=high",))
    header = {"job-name": "gen-x", "partition": options.partition, "requeue": None}
    script = sbatch_script(
        header,
        options.extra,
        ["/opt/venv/bin/python", "-m", "generator", "task", "/data/my out", "--world-size", "8"],
        {"GEN_WORKERS": "${SLURM_CPUS_PER_TASK:-4}"},
    )
    assert script.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=gen-x",
        "#SBATCH --partition=gpu",
        "#SBATCH --requeue",
        "#SBATCH --qos=high",
        "set -eu",
        "export GEN_WORKERS=${SLURM_CPUS_PER_TASK:-4}",
        "exec /opt/venv/bin/python -m generator task '/data/my out' --world-size 8",
    ]
    with pytest.raises(BuildError, match="one sbatch option per value"):
        sbatch_script({}, ["--qos=high\nrm -rf /"], ["true"], {})


def test_array_spec_lists_only_unfinished_ranks():
    assert array_spec([0, 1, 2, 3]) == "0-3"
    assert array_spec([1, 3], parallelism=2) == "1,3%2"
    assert array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
