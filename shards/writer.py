"""Writing Arrow files so that a reader never sees half of one.

Every file is written under a temporary name in the same folder, flushed to
disk and renamed into place: a crash leaves either the old state or the new,
never a truncated shard.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from generator.errors import ShardError
from generator.records import Document, file_sha256
from generator.validators import is_int
from shards.format import OUTPUT_FORMATS, SCHEMA, schema_for, to_batch, to_dropped_batch

BATCH_ROWS = 256
T = TypeVar("T")


@dataclass(frozen=True)
class ShardConfig:
    """Shard size bounds, set in a mix's `shards:` section. A shard closes when the
    next batch would take its text past `max_bytes` or its rows past `max_rows`."""

    max_bytes: int = 256 * 1024 * 1024
    max_rows: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_rows"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"invalid value {value!r} for {name}")


@dataclass(frozen=True)
class ShardInfo:
    path: str
    rows: int
    bytes: int
    sha256: str


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a new temporary sibling of `path`; rename it over `path` only if the block
    succeeds.

    The temporary file is created exclusively (O_EXCL, never through a symlink)
    under a name no one else holds, so neither writing it nor cleaning it up can
    touch a file this process did not create.
    """
    tmp = _exclusive_file(path)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _exclusive_file(path: Path) -> Path:
    # The `.NAME.tmp-` prefix is what a build's cleanup of its own temporary files matches.
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a new, empty sibling folder; rename it to `target` only if the block succeeds.

    A reader sees `target` absent or complete. An existing non-empty `target`,
    a file, or the current folder (or one holding it) is refused rather than
    replaced. Missing parent folders are created and, if the block fails,
    removed again; nothing this function did not create is written or deleted.
    """
    shown, target = target, Path(os.path.abspath(target))
    if Path.cwd().is_relative_to(target):
        raise ShardError(f"{shown}: is the current folder or holds it; name a new folder")
    if target.is_symlink() or target.exists():
        if not target.is_dir() or target.is_symlink():
            raise ShardError(f"{shown}: exists and is not a folder; choose another folder")
        if any(target.iterdir()):
            raise ShardError(f"{shown}: exists and is not empty; choose another folder")
    created = _make_parents(target, shown)
    done = False
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield staging
            os.rename(staging, target)  # also replaces an empty folder, atomically
            done = True
        finally:
            if not done:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ShardError(f"{shown}: could not write ({_reason(exc)})") from None
    finally:
        if not done:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _make_parents(target: Path, shown: Path) -> list[Path]:
    """Create the missing folders above `target`, returning those created (outermost first)."""
    missing = [p for p in reversed(target.parents) if not p.is_dir()]
    for folder in missing:
        if folder.exists() or folder.is_symlink():
            raise ShardError(f"{shown}: {folder} is a file, not a folder")
    created: list[Path] = []
    try:
        for folder in missing:
            folder.mkdir()
            created.append(folder)
    except OSError as exc:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ShardError(f"{shown}: cannot create {folder} ({_reason(exc)})") from None
    return created


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc).splitlines()[0]


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_arrow_atomic(path: Path, docs: Iterable[Document]) -> int:
    """Write one Arrow stream file of documents; returns the number of rows."""
    rows = 0
    batches = _batches(docs, BATCH_ROWS)
    first = next(batches, [])
    schema = schema_for(first[0].scores) if first else SCHEMA
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_stream(sink, schema) as writer,
    ):
        for batch in itertools.chain([first] if first else [], batches):
            writer.write_batch(to_batch(batch))
            rows += len(batch)
    return rows


def _batches(docs: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_shards(docs: Iterable[Document], folder: Path, config: ShardConfig) -> list[ShardInfo]:
    """Split documents into `shard-00000.arrow`, ... in `folder`, each within the bounds."""
    shards: list[ShardInfo] = []
    for number, group in enumerate(_bounded_groups(docs, config)):
        path = folder / f"shard-{number:05d}.arrow"
        rows = write_arrow_atomic(path, group)
        shards.append(ShardInfo(path.name, rows, path.stat().st_size, file_sha256(path)))
    return shards


def write_dropped_shards(
    rows: Iterable[tuple[Document, str]],
    folder: Path,
    config: ShardConfig,
    score_names: Iterable[str],
) -> list[ShardInfo]:
    """Keep what a build dropped, with why, in `folder/dropped/shard-00000.arrow`, ...

    Same columns as the shards plus `drop_reason`, within the same bounds, so
    `gen inspect OUT --dropped` reads them like kept rows. Each ShardInfo's path
    is relative to `folder` (`dropped/shard-00000.arrow`), as the manifest lists it.
    """
    names = sorted(score_names)
    target = folder / DROPPED_FOLDER
    target.mkdir(exist_ok=True)
    shards: list[ShardInfo] = []
    for number, group in enumerate(_bounded_groups(rows, config, text=lambda row: row[0].text)):
        path = target / f"shard-{number:05d}.arrow"
        count = 0
        with (
            atomic_path(path) as tmp,
            pa.OSFile(str(tmp), "wb") as sink,
            pa.ipc.new_stream(sink, schema_for(names, dropped=True)) as writer,
        ):
            for batch in _batches(group, BATCH_ROWS):
                writer.write_batch(to_dropped_batch(batch, names))
                count += len(batch)
        relative = f"{DROPPED_FOLDER}/{path.name}"
        shards.append(ShardInfo(relative, count, path.stat().st_size, file_sha256(path)))
    return shards


DROPPED_FOLDER = "dropped"


def _bounded_groups(
    docs: Iterable[T], config: ShardConfig, text: Callable[[T], str] = lambda doc: doc.text
) -> Iterator[Iterator[T]]:
    """Lazily cut the stream into groups, each kept under the shard bounds.

    A group is consumed before the next one is produced, so only one shard's
    documents are in flight at a time.
    """
    iterator = iter(docs)
    pending: list[T] = []

    def group() -> Iterator[T]:
        size = rows = 0
        while True:
            doc = pending.pop() if pending else next(iterator, None)
            if doc is None:
                return
            doc_bytes = len(text(doc).encode("utf-8"))
            if rows and (size + doc_bytes > config.max_bytes or rows + 1 > config.max_rows):
                pending.append(doc)
                return
            size += doc_bytes
            rows += 1
            yield doc

    while True:
        first = pending.pop() if pending else next(iterator, None)
        if first is None:
            return
        pending.append(first)
        yield group()


class RollingShards:
    """Shards of at most `max_rows` rows, for whatever schema comes in: Arrow stream
    files (`shard-00000.arrow`, the default) or zstd Parquet (`shard-00000.parquet`),
    so `gen score` and `gen dedup` hand back the format they were given."""

    def __init__(self, folder: Path, max_rows: int, format: str = "arrow") -> None:
        if format not in OUTPUT_FORMATS:
            raise ShardError(
                f"--format: expected one of {', '.join(OUTPUT_FORMATS)}, got {format!r}"
            )
        self.folder, self.max_rows, self.format = folder, max_rows, format
        self.names: list[str] = []
        self._writer: Any = None
        self._sink: Any = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._writer is None or self._rows >= self.max_rows:
                self._open(batch.schema)
            room = self.max_rows - self._rows
            self._writer.write_batch(batch.slice(0, room))
            self._rows += min(room, batch.num_rows)
            batch = batch.slice(room)

    def _open(self, schema: pa.Schema) -> None:
        self.close()
        name = f"shard-{len(self.names):05d}.{self.format}"
        self.names.append(name)
        path = str(self.folder / name)
        if self.format == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        else:
            self._sink = pa.OSFile(path, "wb")
            self._writer = pa.ipc.new_stream(self._sink, schema)
        self._rows = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if self._sink is not None:
                self._sink.close()
            self._writer = self._sink = None
