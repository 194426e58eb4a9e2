"""Where a running build stands, read from its files alone, whichever executor runs it.

Each task keeps a heartbeat file, `OUT/.work/tasks/task-RRRRR-of-NNNNN.json`
(rank, world size, state, pid, host, start and last update, documents planned
and done, tokens, error), and each checkpointed chunk is a file whose mtime says
when it was finished. Those are enough to count tasks done, running, failed and
pending, to measure tokens per second over the last minutes and to estimate the
time left, for a build on local processes, Slurm or Ray alike: nothing here asks
the scheduler, so it works from any machine that sees OUT.

A task whose heartbeat says "running" may have died without a word (SIGKILL, a
lost node). On the same host its pid tells; elsewhere a heartbeat older than
`stale_after` seconds does. Such a task is counted as pending and called stale:
its rank runs again from its checkpoints when resubmitted.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from generator.errors import BuildError

TASKS_FOLDER = "tasks"
MANIFEST = "manifest.json"
EXECUTOR_FILE = "executor.json"
RATE_WINDOW = 300.0  # seconds of recent chunks that the rate is measured over
STALE_AFTER = 600.0  # a heartbeat from another host older than this is presumed dead
_STATUS_NAME = re.compile(r"^task-(\d{5,})-of-(\d{5,})\.json$")
_CHUNK_NAME = re.compile(r"^chunk-\d+-\d+\.arrow$")


def read_executor(out: Path) -> dict[str, Any] | None:
    """OUT/.work/executor.json (written by the executor that runs the build: its kind,
    task count and job ids), or None for a build no executor has run yet."""
    path = out / ".work" / EXECUTOR_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise BuildError(f"{path}: unreadable executor record ({exc})") from None
    return data if isinstance(data, dict) else None


def task_status_path(out: Path, rank: int, world_size: int) -> Path:
    """The heartbeat file of task `rank` of `world_size`; its state "done" marks completion."""
    return out / ".work" / TASKS_FOLDER / f"task-{rank:05d}-of-{world_size:05d}.json"


def read_task_status(out: Path, rank: int, world_size: int) -> dict[str, Any] | None:
    """A task's heartbeat, or None if it never started (or its file is half written)."""
    try:
        data = json.loads(task_status_path(out, rank, world_size).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def finished_ranks(out: Path, world_size: int) -> set[int]:
    """Ranks whose completion marker exists: they are never run or submitted again."""
    return {
        rank
        for rank in range(world_size)
        if (read_task_status(out, rank, world_size) or {}).get("state") == "done"
    }


def infer_world_size(out: Path) -> int | None:
    """The world size most heartbeat files name, for a build no executor record describes."""
    folder = out / ".work" / TASKS_FOLDER
    sizes = Counter(
        int(m[2]) for p in _listdir(folder) if (m := _STATUS_NAME.match(p.name)) is not None
    )
    return sizes.most_common(1)[0][0] if sizes else None


@dataclass
class TaskView:
    rank: int
    state: str  # done | running | failed | pending | stale
    documents: int = 0
    planned: int | None = None
    tokens: int = 0
    host: str | None = None
    pid: int | None = None
    started: float | None = None
    updated: float | None = None
    wall_seconds: float | None = None
    error: str | None = None


@dataclass
class BuildStatus:
    out: str
    executor: str | None
    world_size: int | None
    tasks: dict[str, int]  # done, running, failed, pending, stale (stale is part of pending)
    documents: int
    planned: int | None
    planned_estimated: bool
    tokens: int
    tokens_per_second: float | None
    documents_per_second: float | None
    rate_window_seconds: float
    eta_seconds: float | None
    merge: str  # done | ready | waiting
    jobs: dict[str, str] = field(default_factory=dict)
    ranks: list[TaskView] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_status(
    out: Path,
    *,
    now: float | None = None,
    window: float = RATE_WINDOW,
    stale_after: float = STALE_AFTER,
) -> BuildStatus:
    """Read OUT's executor record, heartbeats and chunk files into one status."""
    out = Path(out)
    if not (out / ".work").is_dir():
        raise BuildError(f"{out}: not a build folder (no .work/ inside)")
    now = time.time() if now is None else now
    record = read_executor(out) or {}
    world_size = record.get("tasks") or infer_world_size(out)
    views = [_view(out, rank, world_size, now, stale_after) for rank in range(world_size or 0)]
    counts = Counter(v.state for v in views)
    documents = sum(v.documents for v in views)
    tokens = sum(v.tokens for v in views)
    planned, estimated = _planned(out, views)
    tokens_rate, docs_rate = _recent_rates(out, views, now, window)
    remaining = None if planned is None else max(planned - documents, 0)
    eta = None
    if remaining == 0:
        eta = 0.0
    elif remaining and docs_rate:
        eta = remaining / docs_rate
    if (out / MANIFEST).is_file():
        merge = "done"
    elif world_size and counts["done"] == world_size:
        merge = "ready"
    else:
        merge = "waiting"
    return BuildStatus(
        out=str(out),
        executor=record.get("kind"),
        world_size=world_size,
        tasks={
            "done": counts["done"],
            "running": counts["running"],
            "failed": counts["failed"],
            "pending": counts["pending"] + counts["stale"],
            "stale": counts["stale"],
        },
        documents=documents,
        planned=planned,
        planned_estimated=estimated,
        tokens=tokens,
        tokens_per_second=tokens_rate,
        documents_per_second=docs_rate,
        rate_window_seconds=window,
        eta_seconds=eta,
        merge=merge,
        jobs=dict(record.get("jobs") or {}),
        ranks=views,
    )


def _view(out: Path, rank: int, world_size: int, now: float, stale_after: float) -> TaskView:
    beat = read_task_status(out, rank, world_size)
    if beat is None:
        return TaskView(rank, "pending")
    state = beat.get("state")
    if state == "running" and not _alive(beat, now, stale_after):
        state = "stale"
    if state not in {"done", "running", "failed", "stale"}:
        state = "pending"
    return TaskView(
        rank=rank,
        state=state,
        documents=int(beat.get("documents") or 0),
        planned=beat.get("planned"),
        tokens=int(beat.get("tokens") or 0),
        host=beat.get("host"),
        pid=beat.get("pid"),
        started=beat.get("started"),
        updated=beat.get("updated"),
        wall_seconds=beat.get("wall_seconds"),
        error=beat.get("error"),
    )


def _alive(beat: dict[str, Any], now: float, stale_after: float) -> bool:
    """Whether a "running" heartbeat belongs to a live process: asked of the kernel on
    this host, judged by the heartbeat's age on any other."""
    pid = beat.get("pid")
    if beat.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's live process
        return not _is_zombie(pid)
    updated = beat.get("updated")
    return isinstance(updated, (int, float)) and now - updated <= stale_after


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def planned_documents(out: Path) -> int | None:
    """Documents planned for the whole build, as `gen build` recorded it in the state."""
    try:
        state = json.loads((out / ".work" / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    documents = state.get("documents") if isinstance(state, dict) else None
    if isinstance(documents, int) and not isinstance(documents, bool):
        return documents
    return None


def _planned(out: Path, views: list[TaskView]) -> tuple[int | None, bool]:
    """Documents planned for the whole build, and whether that is an estimate: the build
    state's count; else the tasks' shares, exact once every task has reported, estimated
    from those that have (shares differ by at most one chunk)."""
    documents = planned_documents(out)
    if documents is not None:
        return documents, False
    shares = [v.planned for v in views if isinstance(v.planned, int)]
    if not shares:
        return None, False
    if len(shares) == len(views):
        return sum(shares), False
    return round(sum(shares) / len(shares) * len(views)), True


def _recent_rates(
    out: Path, views: list[TaskView], now: float, window: float
) -> tuple[float | None, float | None]:
    """Tokens and documents per second over the last `window` seconds, from the chunk
    files finished in it. A build younger than the window is measured over its age,
    so an early rate is not diluted by time before it started."""
    import pyarrow as pa
    import pyarrow.compute as pc

    since = now - window
    tokens = documents = 0
    for path in _chunk_files(out / ".work" / "chunks"):
        try:
            mtime = path.stat().st_mtime
            if mtime < since:
                continue
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
        except (OSError, pa.ArrowInvalid):
            continue  # being replaced, or a temporary file
        documents += table.num_rows
        if "n_tokens" in table.column_names:
            tokens += int(pc.sum(table.column("n_tokens")).as_py() or 0)
    starts = [v.started for v in views if v.started and v.state != "pending"]
    span = min(window, now - min(starts)) if starts else window
    if documents == 0 or span <= 0:
        return (0.0, 0.0) if span > 0 else (None, None)
    return tokens / span, documents / span


def _chunk_files(folder: Path) -> list[Path]:
    """The raw completions' checkpoints: one file per generated chunk, written when done."""
    return [p for p in _listdir(folder) if _CHUNK_NAME.match(p.name)]


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def format_status(status: BuildStatus, *, verbose: bool = True) -> str:
    """The human view of `gen status`: a summary, then one line per unfinished rank."""
    t = status.tasks
    who = f"{status.executor} build" if status.executor else "build"
    if not status.world_size:
        return f"{status.out}: {who}, no task has started yet; merge {status.merge}"
    stale = f" ({t['stale']} stale)" if t["stale"] else ""
    lines = [
        f"{status.out}: {who}, {status.world_size} task(s): {t['done']} done, "
        f"{t['running']} running, {t['failed']} failed, {t['pending']} pending{stale}"
    ]
    planned = ""
    if status.planned is not None:
        planned = f"/{'~' if status.planned_estimated else ''}{status.planned}"
    rate = (
        f"{status.tokens_per_second:.1f} tok/s over the last "
        f"{status.rate_window_seconds / 60:.0f} min"
        if status.tokens_per_second is not None
        else "no rate yet"
    )
    eta = f"; ETA {_duration(status.eta_seconds)}" if status.eta_seconds is not None else ""
    lines.append(f"documents {status.documents}{planned}, tokens {status.tokens}; {rate}{eta}")
    merge = {
        "done": "done (manifest.json written)",
        "ready": "ready: every task is done, the merge has not written manifest.json yet",
        "waiting": "waiting for the tasks",
    }[status.merge]
    lines.append(f"merge: {merge}")
    if status.jobs:
        lines.append("jobs: " + ", ".join(f"{k} {v}" for k, v in status.jobs.items()))
    if verbose:
        for v in status.ranks:
            if v.state == "done":
                continue
            lines.append("  " + _rank_line(v))
    return "\n".join(lines)


def _rank_line(v: TaskView) -> str:
    where = f" on {v.host} pid {v.pid}" if v.host else ""
    share = f"{v.documents}/{v.planned}" if v.planned is not None else str(v.documents)
    if v.state == "pending":
        return f"rank {v.rank}: pending (not started)"
    if v.state == "stale":
        return (
            f"rank {v.rank}: stale: last heartbeat{where} at {share} documents, process gone; "
            "pending until resubmitted"
        )
    if v.state == "failed":
        return f"rank {v.rank}: failed{where}: {v.error or 'no error recorded'}"
    return f"rank {v.rank}: running{where}, {share} documents, {v.tokens} tokens"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
