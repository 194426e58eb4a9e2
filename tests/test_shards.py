from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pytest

from generator.errors import ShardError
from generator.records import Document, content_id
from shards.format import SCHEMA, read_documents
from shards.writer import ShardConfig, write_arrow_atomic, write_shards


def make_docs(n: int, words: int = 20) -> list[Document]:
    return [
        Document(
            index=i,
            family="technical-report",
            template="technical-report@1",
            axes={"domain": "tax return processing", "words": ["kiln", "ledger"]},
            prompt=f"prompt {i}",
            seed=1000 + i,
            text=" ".join(f"w{i}_{j}" for j in range(words)),
            model="m.gguf",
            engine="llamacpp",
            sampling={"temperature": 0.8, "seed": 1000 + i},
            n_tokens=words,
            finish_reason="stop",
        )
        for i in range(n)
    ]


def test_documents_round_trip_through_a_shard(tmp_path):
    docs = make_docs(5)
    path = tmp_path / "shard-00000.arrow"
    assert write_arrow_atomic(path, docs) == 5
    assert list(read_documents([path])) == docs
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away


def test_shards_are_read_by_pyarrow_and_datasets_as_they_are(tmp_path):
    docs = make_docs(3)
    path = tmp_path / "shard-00000.arrow"
    write_arrow_atomic(path, docs)
    table = pa.ipc.open_stream(str(path)).read_all()
    assert table.schema.equals(SCHEMA)
    assert table.column("id").to_pylist() == [content_id(d.text) for d in docs]
    dataset = datasets.Dataset.from_file(str(path))
    assert dataset.num_rows == 3
    assert dataset[1]["text"] == docs[1].text
    assert json.loads(dataset[0]["axes"]) == docs[0].axes


def test_shards_respect_row_and_byte_bounds(tmp_path):
    docs = make_docs(10, words=10)
    (tmp_path / "rows").mkdir()
    by_rows = write_shards(docs, tmp_path / "rows", ShardConfig(max_rows=4))
    assert [s.rows for s in by_rows] == [4, 4, 2]
    assert [s.path for s in by_rows] == [
        "shard-00000.arrow",
        "shard-00001.arrow",
        "shard-00002.arrow",
    ]
    text_bytes = len(docs[0].text.encode())
    (tmp_path / "bytes").mkdir()
    by_bytes = write_shards(docs, tmp_path / "bytes", ShardConfig(max_bytes=3 * text_bytes + 5))
    assert [s.rows for s in by_bytes] == [3, 3, 3, 1]
    # A single document larger than the bound still gets a shard of its own.
    (tmp_path / "big").mkdir()
    assert [s.rows for s in write_shards(docs[:2], tmp_path / "big", ShardConfig(max_bytes=1))] == [
        1,
        1,
    ]
    assert list(read_documents(sorted((tmp_path / "bytes").glob("shard-*.arrow")))) == docs


def test_a_truncated_shard_is_one_clear_error(tmp_path):
    path = tmp_path / "shard-00000.arrow"
    write_arrow_atomic(path, make_docs(50, words=50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"shard-00000\.arrow: unreadable or truncated Arrow file"):
        list(read_documents([path]))


def test_a_foreign_arrow_file_is_refused(tmp_path):
    path = tmp_path / "other.arrow"
    table = pa.table({"text": ["a"]})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ShardError, match="unexpected columns"):
        list(read_documents([path]))


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "shard-00000.arrow"

    def broken():
        yield from make_docs(2)
        raise RuntimeError("engine died")

    with pytest.raises(RuntimeError):
        write_arrow_atomic(path, broken())
    assert list(tmp_path.iterdir()) == []
