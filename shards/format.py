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
| idea          | string | the premise the idea step wrote ("" without that step)       |
| draft         | string | the document before the revise step ("" without that step)   |
| score_<name>  | double | one column per scorer that ran (higher is better); null where |
|               |        | a judge's reply could not be parsed                          |
"""

from __future__ import annotations

import contextlib
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
        pa.field("idea", pa.string(), nullable=False),
        pa.field("draft", pa.string(), nullable=False),
    ]
)


DROP_REASON = pa.field("drop_reason", pa.string(), nullable=False)


def is_shard_schema(schema: pa.Schema, dropped: bool = False) -> bool:
    """The declared columns, in order, optionally followed by `score_<name>` columns
    (added by scorers, kept so users can re-threshold without regenerating).

    A shard of dropped rows (`dropped=True`) also has one `drop_reason` string
    column among the extra columns (anywhere: before or after the scores), so the
    reason travels with the row.
    """
    base = pa.schema(list(schema)[: len(SCHEMA)])
    extra = list(schema)[len(SCHEMA) :]
    if dropped:
        reasons = [f for f in extra if f.name == DROP_REASON.name]
        if len(reasons) != 1 or not pa.types.is_string(reasons[0].type):
            return False
        extra = [f for f in extra if f.name != DROP_REASON.name]
    return base.equals(SCHEMA) and all(
        f.name.startswith("score_") and pa.types.is_floating(f.type) for f in extra
    )


def schema_for(score_names: Iterable[str], dropped: bool = False) -> pa.Schema:
    """SCHEMA followed by one float64 `score_<name>` column per scorer, sorted by name;
    for dropped rows, `drop_reason` comes between the two."""
    extra = [pa.field(f"score_{name}", pa.float64(), nullable=True) for name in sorted(score_names)]
    return pa.schema([*SCHEMA, *([DROP_REASON] if dropped else []), *extra])


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
        "idea": [d.idea for d in docs],
        "draft": [d.draft for d in docs],
    }
    for name in names:
        columns[f"score_{name}"] = [d.scores.get(name) for d in docs]
    return pa.RecordBatch.from_pydict(columns, schema=schema_for(names))


def to_dropped_batch(
    rows: Sequence[tuple[Document, str]], score_names: Iterable[str]
) -> pa.RecordBatch:
    """Dropped documents with their reasons, every row carrying every `score_<name>`
    column of the build (null where the row was dropped before that scorer ran)."""
    names = sorted(score_names)
    docs = [doc.replace(scores={n: doc.scores.get(n) for n in names}) for doc, _ in rows]
    empty = [pa.array([], f.type) for f in schema_for(names)]
    columns = list(to_batch(docs).columns) if docs else empty
    columns.insert(len(SCHEMA), pa.array([reason for _, reason in rows], pa.string()))
    return pa.RecordBatch.from_arrays(columns, schema=schema_for(names, dropped=True))


def from_batch(batch: pa.RecordBatch) -> Iterator[Document]:
    for row in batch.to_pylist():
        yield Document(
            index=row["doc_index"],
            family=row["family"],
            template=row["template"],
            axes=json_object(row["axes"]),
            prompt=row["prompt"],
            seed=row["seed"],
            text=row["text"],
            model=row["model"],
            engine=row["engine"],
            sampling=json_object(row["sampling"]),
            n_tokens=row["n_tokens"],
            finish_reason=row["finish_reason"],
            idea=row["idea"],
            draft=row["draft"],
            scores={k[6:]: v for k, v in row.items() if k.startswith("score_")},
        )


# Any damage a reader can meet in a file: pyarrow's own errors, the OS's, and an
# allocation a corrupt length field asks for.
READ_ERRORS = (pa.ArrowException, OSError, MemoryError, ValueError)


def json_object(text: str) -> dict[str, Any]:
    """A JSON object column's value (`axes`, `sampling`); ValueError for anything else."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def read_batches(path: Path, dropped: bool = False) -> Iterator[pa.RecordBatch]:
    """Stream a shard's record batches, checking its schema and every batch's buffers.

    Whatever bytes the file holds, the result is batches that are safe to read
    (offsets in bounds, valid UTF-8, no nulls in the declared non-null columns)
    or one ShardError naming the file: a corrupt shard must never crash the
    process or surface as a traceback three calls later.
    """
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            if not is_shard_schema(reader.schema, dropped):
                kind = "dropped-rows shard" if dropped else "shard"
                raise ShardError(f"{path}: not a {kind} of this format (unexpected columns)")
            for batch in reader:
                batch.validate(full=True)
                _require_values(path, batch)
                yield batch
    except FileNotFoundError:
        raise ShardError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ShardError(f"{path}: is a folder, not a shard file") from None
    except READ_ERRORS as exc:
        raise ShardError(
            f"{path}: unreadable or truncated Arrow file ({_first_line(exc)})"
        ) from None


def _require_values(path: Path, batch: pa.RecordBatch) -> None:
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if not field.nullable and column.null_count:
            raise ShardError(f"{path}: null values in column '{field.name}'")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def read_documents(paths: Iterable[Path]) -> Iterator[Document]:
    for path in paths:
        for batch in read_batches(path):
            try:
                docs = list(from_batch(batch))
            except (ValueError, TypeError, RecursionError) as exc:
                raise ShardError(
                    f"{path}: a row's axes or sampling is not a JSON object ({_first_line(exc)})"
                ) from None
            yield from docs


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


def output_format(files: Sequence[Path], requested: str | None = None) -> str:
    """The format `gen score` and `gen dedup` write: the one asked for, else the inputs'
    own (Parquet when every input is Parquet), else Arrow."""
    if requested is not None:
        if requested not in OUTPUT_FORMATS:
            raise ShardError(
                f"--format: expected one of {', '.join(OUTPUT_FORMATS)}, got {requested!r}"
            )
        return requested
    if files and all(path.suffix == ".parquet" for path in files):
        return "parquet"
    return "arrow"


OUTPUT_FORMATS = ("arrow", "parquet")


def read_foreign(path: Path, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """Batches of any Arrow (IPC file or stream) or Parquet file that has a `text` column
    with a string in every row; anything else is one ShardError naming the file."""
    import pyarrow.parquet as pq

    rows = 0
    try:
        with contextlib.ExitStack() as stack:
            if path.suffix == ".parquet":
                parquet = stack.enter_context(pq.ParquetFile(str(path)))
                _require_text(path, parquet.schema_arrow)
                batches: Iterator[pa.RecordBatch] = parquet.iter_batches(batch_size=batch_rows)
            else:
                source = stack.enter_context(pa.memory_map(str(path)))
                try:
                    reader: Any = pa.ipc.open_file(source)
                    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                except pa.ArrowInvalid:
                    source.seek(0)
                    reader = pa.ipc.open_stream(source)
                    batches = iter(reader)
                _require_text(path, reader.schema)
            for batch in batches:
                batch.validate(full=True)
                _require_texts(path, batch, rows)
                rows += batch.num_rows
                yield batch
    except FileNotFoundError:
        raise ShardError(f"{path}: file not found") from None
    except READ_ERRORS as exc:
        raise ShardError(f"{path}: unreadable or truncated file ({_first_line(exc)})") from None


def _require_texts(path: Path, batch: pa.RecordBatch, offset: int) -> None:
    """Scorers and MinHash need a string in every row; a null is the file's problem,
    named with its row, not an empty document scored as if it were one."""
    texts = batch.column("text")
    if texts.null_count:
        first = texts.is_null().to_pylist().index(True)
        raise ShardError(
            f"{path}: row {offset + first} has a null 'text' "
            f"({texts.null_count} null in rows {offset} to {offset + batch.num_rows - 1})"
        )


def _require_text(path: Path, schema: pa.Schema) -> None:
    field = schema.field("text") if "text" in schema.names else None
    if field is None or not (
        pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    ):
        raise ShardError(f"{path}: no string column named 'text'")
