from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pytest

from generator.errors import ShardError
from generator.records import Document, content_id
from shards.format import SCHEMA, read_batches, read_documents
from shards.writer import (
    ShardConfig,
    staged_folder,
    write_arrow_atomic,
    write_dropped_shards,
    write_json_atomic,
    write_shards,
)


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


def test_dropped_rows_round_trip_with_their_reasons(tmp_path):
    docs = make_docs(5)
    rows = [(docs[0], "refusal"), (docs[1].replace(scores={"quality": 0.2}), "low-quality")]
    rows += [(d, "near-duplicate") for d in docs[2:]]
    shards = write_dropped_shards(rows, tmp_path, ShardConfig(max_rows=3), ["quality", "slop"])
    assert [(s.path, s.rows) for s in shards] == [
        ("dropped/shard-00000.arrow", 3),
        ("dropped/shard-00001.arrow", 2),
    ]
    table = pa.concat_tables(
        pa.Table.from_batches(list(read_batches(tmp_path / s.path, dropped=True))) for s in shards
    )
    assert table.column("drop_reason").to_pylist() == [reason for _, reason in rows]
    assert table.column("score_quality").to_pylist() == [None, 0.2, None, None, None]
    assert table.column("id").to_pylist() == [d.id for d, _ in rows]
    # A dropped-rows shard is not a kept-rows shard, and the other way round.
    with pytest.raises(ShardError, match="not a shard of this format"):
        list(read_batches(tmp_path / shards[0].path))


def test_writing_never_touches_a_file_that_looks_like_a_temporary(tmp_path, monkeypatch):
    """The temporary name is new and opened exclusively: a user's file (or a symlink to
    one) under the old predictable name survives a write beside it."""
    monkeypatch.setattr("os.getpid", lambda: 4242)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / ".shard-00000.arrow.tmp-4242").symlink_to(victim)
    (tmp_path / ".manifest.json.tmp-4242").write_text("also mine")
    write_arrow_atomic(tmp_path / "shard-00000.arrow", make_docs(2))
    write_json_atomic(tmp_path / "manifest.json", {"ok": True})
    assert victim.read_text() == "mine"
    assert (tmp_path / ".manifest.json.tmp-4242").read_text() == "also mine"
    assert len(list(read_documents([tmp_path / "shard-00000.arrow"]))) == 2


def test_staged_folder_refuses_what_it_must_not_replace(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine")
    for target, message in [
        (tmp_path / "full", "exists and is not empty"),
        (tmp_path / "afile", "exists and is not a folder"),
        (tmp_path / "afile" / "sub", "is a file, not a folder"),
        (Path("."), "is the current folder or holds it"),
        (tmp_path, "is the current folder or holds it"),
    ]:
        with pytest.raises(ShardError, match=message), staged_folder(target):
            pytest.fail("the block must not run")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_staged_folder_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "a" / "b" / "out") as staging:
        (staging / "half.parquet").write_text("half")
        raise RuntimeError("disk died")
    assert list(tmp_path.iterdir()) == []
