"""The shard schema, declared once, and conversion between documents and Arrow.

Shards are Arrow IPC *stream* files, the format of `datasets`' own cache files,
so `datasets.Dataset.from_file(path)` memory-maps them as they are and
`pyarrow.ipc.open_stream(path).read_all()` reads them without `datasets`.

| column        | type   | meaning                                                      |
|---------------|--------|--------------------------------------------------------------|
| id            | string | sha256 of `text`, first 32 hex digits: stable across builds  |
| text          | string | the cleaned document                                         |
| family        | string | template family, e.g. `deployment-story`                     |
| template      | string | family and template version, e.g. `deployment-story@1`       |
| axes          | string | JSON object: every sampled axis value and concrete seed      |
| prompt        | string | the rendered prompt sent to the model as the user turn       |
| model         | string | model name (the GGUF file name, or the served model id)      |
| engine        | string | engine that generated the text (`llamacpp`, ...)             |
| sampling      | string | JSON object: the sampling parameters, seed included          |
| seed          | int64  | the per-document generation seed                             |
| n_tokens      | int32  | length of `text` in the generating model's tokenizer         |
| finish_reason | string | `stop` (natural end) or `length` (cut at max_tokens)         |
| doc_index     | int64  | the document's index in the build plan                       |
| score_<name>  | double | one column per scorer that ran (higher is better); null where |
|               |        | a judge's reply could not be parsed                          |
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from generator.errors import ShardError
from generator.records import Document

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("template", pa.string(), nullable=False),
        pa.field("axes", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("sampling", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("doc_index", pa.int64(), nullable=False),
    ]
)


def is_shard_schema(schema: pa.Schema) -> bool:
    """The declared columns, in order, optionally followed by `score_<name>` columns
    (added by scorers, kept so users can re-threshold without regenerating)."""
    base = pa.schema(list(schema)[: len(SCHEMA)])
    extra = list(schema)[len(SCHEMA) :]
    return base.equals(SCHEMA) and all(
        f.name.startswith("score_") and pa.types.is_floating(f.type) for f in extra
    )


def schema_for(score_names: Iterable[str]) -> pa.Schema:
    """SCHEMA followed by one float64 `score_<name>` column per scorer, sorted by name."""
    extra = [pa.field(f"score_{name}", pa.float64(), nullable=True) for name in sorted(score_names)]
    return pa.schema([*SCHEMA, *extra])


def to_batch(docs: Sequence[Document]) -> pa.RecordBatch:
    names = sorted(docs[0].scores) if docs else []
    columns = {
        "id": [d.id for d in docs],
        "text": [d.text for d in docs],
        "family": [d.family for d in docs],
        "template": [d.template for d in docs],
        "axes": [json.dumps(d.axes, ensure_ascii=False, sort_keys=True) for d in docs],
        "prompt": [d.prompt for d in docs],
        "model": [d.model for d in docs],
        "engine": [d.engine for d in docs],
        "sampling": [json.dumps(d.sampling, sort_keys=True) for d in docs],
        "seed": [d.seed for d in docs],
        "n_tokens": [d.n_tokens for d in docs],
        "finish_reason": [d.finish_reason for d in docs],
        "doc_index": [d.index for d in docs],
    }
    for name in names:
        columns[f"score_{name}"] = [d.scores.get(name) for d in docs]
    return pa.RecordBatch.from_pydict(columns, schema=schema_for(names))


def from_batch(batch: pa.RecordBatch) -> Iterator[Document]:
    for row in batch.to_pylist():
        yield Document(
            index=row["doc_index"],
            family=row["family"],
            template=row["template"],
            axes=json.loads(row["axes"]),
            prompt=row["prompt"],
            seed=row["seed"],
            text=row["text"],
            model=row["model"],
            engine=row["engine"],
            sampling=json.loads(row["sampling"]),
            n_tokens=row["n_tokens"],
            finish_reason=row["finish_reason"],
            scores={k[6:]: v for k, v in row.items() if k.startswith("score_")},
        )


def read_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream a shard's record batches, checking its schema; any damage is one ShardError."""
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            if not is_shard_schema(reader.schema):
                raise ShardError(f"{path}: not a shard of this format (unexpected columns)")
            yield from reader
    except FileNotFoundError:
        raise ShardError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{path}: unreadable or truncated Arrow file ({exc})") from None


def read_documents(paths: Iterable[Path]) -> Iterator[Document]:
    for path in paths:
        for batch in read_batches(path):
            yield from from_batch(batch)


FOREIGN_SUFFIXES = (".arrow", ".parquet")


def foreign_files(paths: Iterable[Path]) -> list[Path]:
    """Arrow and Parquet files named directly or found (sorted) in named folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in FOREIGN_SUFFIXES)
            if not found:
                raise ShardError(f"{path}: no .arrow or .parquet files in this folder")
            files.extend(found)
        elif path.is_file():
            if path.suffix not in FOREIGN_SUFFIXES:
                raise ShardError(f"{path}: expected an .arrow or .parquet file")
            files.append(path)
        else:
            raise ShardError(f"{path}: no such file or folder")
    return files


def read_foreign(path: Path, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """Batches of any Arrow (IPC file or stream) or Parquet file that has a `text` column."""
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(str(path))
            _require_text(path, parquet.schema_arrow)
            yield from parquet.iter_batches(batch_size=batch_rows)
            return
        with pa.memory_map(str(path)) as source:
            try:
                reader: Any = pa.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_stream(source)
                batches = iter(reader)
            _require_text(path, reader.schema)
            yield from batches
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{path}: unreadable or truncated file ({exc})") from None


def _require_text(path: Path, schema: pa.Schema) -> None:
    field = schema.field("text") if "text" in schema.names else None
    if field is None or not (
        pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    ):
        raise ShardError(f"{path}: no string column named 'text'")
