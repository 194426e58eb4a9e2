"""The output folder's bookkeeping: ownership, locks, chunk files and their coverage.

    OUT/.work/owner.json              marks the folder as made by a build (see `claim_folder`)
    OUT/.work/build.json              the build spec every task and the merge read
    OUT/.work/state.json              the generation key the checkpoints belong to
    OUT/.work/lock                    held (flock) by a single-process build and by the merge
    OUT/.work/chunks/chunk-A-B.arrow  raw completions for documents [A, B)
    OUT/.work/steps/STEP/chunk-A-B.arrow   earlier generation steps (idea, draft)
    OUT/.work/processed/KEY/chunk-A-B.arrow  cleaned, scored, judged and MinHashed rows
    OUT/.work/tasks/task-R-of-W.json  heartbeat and completion marker of task R of W

A chunk file names its index range, so coverage is read from the names; a chunk
whose rows do not match its name (a truncated or edited file) does not count
and is regenerated. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from generator.errors import BuildError
from shards.writer import atomic_path, write_json_atomic

WORK = ".work"
OWNER = "owner.json"
OWNER_TOOL = "alignment-datagen"
_CHUNK_NAME = re.compile(r"^chunk-(\d{9})-(\d{9})\.arrow$")


def chunk_name(first: int, end: int) -> str:
    return f"chunk-{first:09d}-{end:09d}.arrow"


def parse_chunk_name(name: str) -> tuple[int, int] | None:
    match = _CHUNK_NAME.match(name)
    if not match or int(match[2]) <= int(match[1]):
        return None
    return int(match[1]), int(match[2])


# -- ownership ---------------------------------------------------------------------------


def claim_folder(out: Path) -> None:
    """Make `out` a build folder, or refuse, before anything is written into it.

    A build writes only into a new or empty folder, or into one that a build
    marked as its own when it created it (`.work/owner.json`). A user's folder of
    other files, `/` or a home folder is refused whole, so no file of theirs is
    ever overwritten or deleted.
    """
    work = out / WORK
    marker = work / OWNER
    if _is_owned(out):
        return
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BuildError(f"{out}: not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise BuildError(
            f"{out}: the folder is not empty and was not made by gen build; "
            "choose a new or empty --out"
        )
    try:
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            marker, {"tool": OWNER_TOOL, "created": time.time(), "host": socket.gethostname()}
        )
    except OSError as exc:
        raise BuildError(f"{out}: cannot create the output folder: {_reason(exc)}") from None


def _is_owned(out: Path) -> bool:
    marker = out / WORK / OWNER
    if out.is_symlink() or (out / WORK).is_symlink() or marker.is_symlink():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("tool") == OWNER_TOOL


def require_owned(out: Path) -> None:
    if not _is_owned(out):
        raise BuildError(f"{out}: not a build folder (no {WORK}/{OWNER}); run gen build first")


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


# -- files that never follow symlinks ----------------------------------------------------


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """Open a file the build writes without following a symlink planted in its place."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BuildError(f"{path}: is a symbolic link; refusing to write through it") from None
        raise


def read_json(path: Path) -> Any | None:
    """A JSON file the build wrote, or None if it is absent or unreadable."""
    if path.is_symlink():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- locks -------------------------------------------------------------------------------


@contextmanager
def locked(path: Path, refusal: str) -> Iterator[None]:
    """Hold an exclusive flock on `path` (the kernel releases it when the holder dies,
    so a killed build never leaves a stale lock); refuse at once if another holds it,
    with `refusal` (its `{pid}` filled with the holder's pid)."""
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BuildError(refusal.format(pid=holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def folder_refusal(out: Path) -> str:
    return (
        f"{out}: another build is writing to this folder (pid {{pid}}); "
        "wait for it or choose another --out"
    )


def remove_temporaries(folder: Path, pattern: str, mine: Callable[[str], bool]) -> None:
    """Delete the temporaries a killed writer left (`.NAME.tmp-...`), only those whose
    NAME matches `pattern` and that `mine` says this process is the only writer of."""
    if not folder.is_dir():
        return
    for path in folder.glob(f".{pattern}.tmp-*"):
        name = path.name[1:].split(".tmp-", 1)[0]
        if not path.is_symlink() and path.is_file() and mine(name):
            path.unlink(missing_ok=True)


def write_batch_atomic(path: Path, batch: pa.RecordBatch) -> None:
    """One Arrow stream file holding `batch`, written under a temporary name and renamed."""
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_stream(sink, batch.schema) as writer,
    ):
        writer.write_batch(batch)


# -- chunks ------------------------------------------------------------------------------


def chunk_rows(path: Path) -> int | None:
    """Rows in an Arrow stream chunk file, or None if it cannot be read whole."""
    try:
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_stream(source)
            return sum(batch.num_rows for batch in reader)
    except (OSError, pa.ArrowInvalid):
        return None


@dataclass(frozen=True)
class Chunk:
    first: int
    end: int
    path: Path

    @property
    def indices(self) -> range:
        return range(self.first, self.end)


def list_chunks(folder: Path, verify: bool = True) -> tuple[list[Chunk], list[Path]]:
    """Chunk files in index order, and the ones that do not hold exactly the rows their
    name promises (truncated, emptied or edited): those do not count as coverage."""
    good: list[Chunk] = []
    bad: list[Path] = []
    if not folder.is_dir():
        return good, bad
    for path in sorted(folder.iterdir()):
        span = parse_chunk_name(path.name)
        if span is None or path.is_symlink():
            continue
        if verify and chunk_rows(path) != span[1] - span[0]:
            bad.append(path)
            continue
        good.append(Chunk(span[0], span[1], path))
    return good, bad


def covered(chunks: Sequence[Chunk]) -> set[int]:
    done: set[int] = set()
    for chunk in chunks:
        done.update(chunk.indices)
    return done


def contiguous_runs(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    """Split sorted indices into runs of consecutive numbers, at most `size` long,
    so each chunk file names its range exactly."""
    run: list[int] = []
    for index in indices:
        if run and (index != run[-1] + 1 or len(run) == size):
            yield run
            run = []
        run.append(index)
    if run:
        yield run


def grid_owner(index: int, chunk_size: int, world_size: int) -> int:
    """The rank that owns document `index`: chunk c of the build's fixed grid belongs to
    rank c % world_size, so ranks interleave and finish at about the same time."""
    return (index // chunk_size) % world_size


# -- task status -------------------------------------------------------------------------


@dataclass
class TaskStatus:
    """A task's heartbeat and, once `state` is "done", its completion marker."""

    rank: int
    world_size: int
    state: str = "running"
    pid: int = 0
    host: str = ""
    started: float = 0.0
    updated: float = 0.0
    planned: int = 0
    documents: int = 0
    tokens: int = 0
    wall_seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_status_path(work: Path, rank: int, world_size: int) -> Path:
    return work / "tasks" / f"task-{rank:05d}-of-{world_size:05d}.json"
