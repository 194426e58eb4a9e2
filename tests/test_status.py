"""`gen status` on build folders laid out as tasks leave them: heartbeats, chunk files,
an executor record, a manifest. The end-to-end view of a running Slurm build is in
tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.cli.scale import status as status_command
from generator.records import Document
from generator.status import build_status, finished_ranks, format_status, task_status_path
from shards.writer import write_arrow_atomic

NOW = 1_900_000_000.0
HOST = socket.gethostname()


def heartbeat(out: Path, rank: int, world_size: int, **fields) -> None:
    path = task_status_path(out, rank, world_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    beat = {
        "rank": rank,
        "world_size": world_size,
        "state": "running",
        "pid": os.getpid(),
        "host": HOST,
        "started": NOW - 100,
        "updated": NOW - 1,
        "planned": 10,
        "documents": 0,
        "tokens": 0,
        "wall_seconds": 0.0,
        "error": None,
        **fields,
    }
    path.write_text(json.dumps(beat))


def chunk(out: Path, first: int, end: int, tokens_each: int, mtime: float) -> None:
    path = out / ".work" / "chunks" / f"chunk-{first:09d}-{end:09d}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = [
        Document(index=i, family="f", template="t", axes={}, prompt="p", seed=i, text="x").replace(
            n_tokens=tokens_each
        )
        for i in range(first, end)
    ]
    write_arrow_atomic(path, docs)
    os.utime(path, (mtime, mtime))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def four_tasks(tmp_path: Path) -> Path:
    """A 4-task build: rank 0 done, 1 running here, 2 stale (its process is gone), 3 not
    started; chunk files finished 30 s, 90 s and an hour ago."""
    out = tmp_path / "out"
    heartbeat(out, 0, 4, state="done", documents=10, tokens=400)
    heartbeat(out, 1, 4, documents=4, tokens=160)
    heartbeat(out, 2, 4, documents=2, tokens=80, pid=dead_pid(), updated=NOW - 20)
    chunk(out, 0, 4, 40, NOW - 30)
    chunk(out, 4, 8, 40, NOW - 90)
    chunk(out, 8, 10, 40, NOW - 3600)
    (out / ".work" / "executor.json").write_text(json.dumps({"kind": "slurm", "tasks": 4}))
    return out


def test_counts_each_kind_of_task(four_tasks: Path):
    status = build_status(four_tasks, now=NOW)
    assert status.executor == "slurm" and status.world_size == 4
    assert status.tasks == {"done": 1, "running": 1, "failed": 0, "pending": 2, "stale": 1}
    assert [v.state for v in status.ranks] == ["done", "running", "stale", "pending"]
    assert (status.documents, status.tokens) == (16, 640)
    assert finished_ranks(four_tasks, 4) == {0}
    assert status.merge == "waiting"


def test_rate_and_eta_come_from_recent_chunks(four_tasks: Path):
    status = build_status(four_tasks, now=NOW, window=300)
    # 8 documents of 40 tokens finished in the last 5 minutes; the tasks began 100 s ago,
    # so the rate is over those 100 s, not the whole window.
    assert status.documents_per_second == pytest.approx(8 / 100)
    assert status.tokens_per_second == pytest.approx(320 / 100)
    # Planned: 3 of 4 tasks reported 10 each, so about 40; 16 done.
    assert (status.planned, status.planned_estimated) == (40, True)
    assert status.eta_seconds == pytest.approx((40 - 16) / (8 / 100))


def test_planned_comes_from_the_build_state_when_present(four_tasks: Path):
    (four_tasks / ".work" / "state.json").write_text(json.dumps({"documents": 37}))
    status = build_status(four_tasks, now=NOW)
    assert (status.planned, status.planned_estimated) == (37, False)


def test_a_heartbeat_from_another_host_is_stale_only_when_old(tmp_path: Path):
    out = tmp_path / "out"
    heartbeat(out, 0, 2, host="node-17", pid=1, updated=NOW - 30)
    heartbeat(out, 1, 2, host="node-18", pid=1, updated=NOW - 700)
    status = build_status(out, now=NOW, stale_after=600)
    assert [v.state for v in status.ranks] == ["running", "stale"]
    assert status.world_size == 2  # no executor record: inferred from the heartbeat files


def test_failed_task_shows_its_error(tmp_path: Path):
    out = tmp_path / "out"
    heartbeat(out, 0, 2, state="done", documents=10)
    heartbeat(out, 1, 2, state="failed", error="out.yaml: model file not found")
    status = build_status(out, now=NOW)
    assert status.tasks["failed"] == 1
    assert "rank 1: failed on" in format_status(status)
    assert "out.yaml: model file not found" in format_status(status)


def test_merge_ready_then_done(tmp_path: Path):
    out = tmp_path / "out"
    for rank in range(2):
        heartbeat(out, rank, 2, state="done", documents=10, tokens=100)
    assert build_status(out, now=NOW).merge == "ready"
    (out / "manifest.json").write_text("{}")
    status = build_status(out, now=NOW)
    assert status.merge == "done" and status.eta_seconds == 0


def test_cli_human_and_json(four_tasks: Path, runner):
    result = runner.invoke(status_command, [str(four_tasks)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        f"{four_tasks}: slurm build, 4 task(s): 1 done, 1 running, 0 failed, 2 pending (1 stale)"
    )
    assert "rank 2: stale" in result.output and "rank 3: pending" in result.output
    result = runner.invoke(status_command, [str(four_tasks), "--json"])
    data = json.loads(result.output)
    assert data["tasks"]["stale"] == 1 and data["ranks"][1]["state"] == "running"
    assert data["documents"] == 16 and data["merge"] == "waiting"


def test_cli_on_a_folder_that_is_no_build(tmp_path: Path, runner):
    result = runner.invoke(status_command, [str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path}: not a build folder (no .work/ inside)\n"


def test_a_build_no_task_has_started(tmp_path: Path):
    (tmp_path / ".work").mkdir()
    assert format_status(build_status(tmp_path, now=time.time())) == (
        f"{tmp_path}: build, no task has started yet; merge waiting"
    )
