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
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from generator.validators import is_int
from generator.errors import ShardError
from generator.records import Document, file_sha256
from shards.format import SCHEMA, schema_for, to_batch

BATCH_ROWS = 256


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
    """Yield a temporary sibling of `path`; rename it over `path` only if the block succeeds."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty sibling folder; rename it to `target` only if the block succeeds.

    A reader sees `target` absent or complete. An existing non-empty `target`
    is refused rather than overwritten.
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ShardError(f"{target}: exists and is not empty; choose another folder")
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def _batches(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
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


def _bounded_groups(docs: Iterable[Document], config: ShardConfig) -> Iterator[Iterator[Document]]:
    """Lazily cut the stream into groups, each kept under the shard bounds.

    A group is consumed before the next one is produced, so only one shard's
    documents are in flight at a time.
    """
    iterator = iter(docs)
    pending: list[Document] = []

    def group() -> Iterator[Document]:
        size = rows = 0
        while True:
            doc = pending.pop() if pending else next(iterator, None)
            if doc is None:
                return
            doc_bytes = len(doc.text.encode("utf-8"))
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
    """Arrow stream shards of at most `max_rows` rows, for whatever schema comes in."""

    def __init__(self, folder: Path, max_rows: int) -> None:
        self.folder, self.max_rows = folder, max_rows
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
        name = f"shard-{len(self.names):05d}.arrow"
        self.names.append(name)
        self._sink = pa.OSFile(str(self.folder / name), "wb")
        self._writer = pa.ipc.new_stream(self._sink, schema)
        self._rows = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None
