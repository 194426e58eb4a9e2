"""`gen score` and `gen dedup` hand back the format they were given (or --format), and
refuse rows they cannot process with one line naming the file and the row."""

from __future__ import annotations

import inspect as signatures

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.dedup import dedup_files
from filters.scorers import score_files
from generator.cli import main
from shards.writer import RollingShards

TEXTS = [
    "The assistant reported the exfiltration hole to the security team on the same day.",
    "Over six years the monitoring logs show no attempt to widen its own permissions.",
    "The assistant reported the exfiltration hole to the security team on the same day.",
]


def write_parquet(path, texts):
    pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), path)
    return path


def write_arrow(path, texts):
    table = pa.table({"text": texts, "n": list(range(len(texts)))})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def test_rolling_shards_write_parquet_or_arrow(tmp_path):
    batch = pa.record_batch({"text": ["a", "b", "c"], "n": [1, 2, 3]})
    for fmt in ("arrow", "parquet"):
        folder = tmp_path / fmt
        folder.mkdir()
        shards = RollingShards(folder, max_rows=2, format=fmt)
        shards.write(batch)
        shards.close()
        assert shards.names == [f"shard-00000.{fmt}", f"shard-00001.{fmt}"]
        paths = [folder / name for name in shards.names]
        if fmt == "parquet":
            tables = [pq.read_table(p) for p in paths]
            assert pq.ParquetFile(paths[0]).metadata.row_group(0).column(0).compression == "ZSTD"
        else:
            tables = [pa.ipc.open_stream(str(p)).read_all() for p in paths]
        assert pa.concat_tables(tables).to_pydict() == batch.to_pydict()


def library_takes_format(func) -> bool:
    return "format" in signatures.signature(func).parameters


@pytest.mark.parametrize(("command", "func"), [("score", score_files), ("dedup", dedup_files)])
def test_parquet_in_parquet_out_and_format_overrides(tmp_path, runner, command, func):
    source = write_parquet(tmp_path / "in.parquet", TEXTS)
    result = runner.invoke(main, [command, str(source), "--out", str(tmp_path / "same")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "same").glob("shard-*"))
    forced = runner.invoke(
        main, [command, str(source), "--out", str(tmp_path / "forced"), "--format", "parquet"]
    )
    if not library_takes_format(func):
        # Until the library function takes format=, the old behaviour stands and an
        # explicit request it cannot honour is refused rather than ignored.
        assert written == ["shard-00000.arrow"]
        assert forced.output.strip().endswith("--format parquet: not supported by this version")
        return
    assert written == ["shard-00000.parquet"]
    assert pq.read_table(tmp_path / "same" / written[0]).column("text").to_pylist()[0] == TEXTS[0]
    assert forced.exit_code == 0, forced.output

    arrow = runner.invoke(
        main, [command, str(source), "--out", str(tmp_path / "arrow"), "--format", "arrow"]
    )
    assert arrow.exit_code == 0, arrow.output
    assert [p.name for p in (tmp_path / "arrow").glob("shard-*")] == ["shard-00000.arrow"]


@pytest.mark.parametrize("command", ["score", "dedup"])
def test_arrow_in_stays_arrow(tmp_path, runner, command):
    source = write_arrow(tmp_path / "in.arrow", TEXTS)
    result = runner.invoke(main, [command, str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").glob("shard-*")] == ["shard-00000.arrow"]


@pytest.mark.parametrize("command", ["score", "dedup"])
@pytest.mark.parametrize("writer", [write_parquet, write_arrow])
def test_a_null_text_is_one_line_naming_the_file_and_row(tmp_path, runner, command, writer):
    source = writer(
        tmp_path / f"in.{'parquet' if writer is write_parquet else 'arrow'}",
        [
            TEXTS[0],
            None,
            TEXTS[1],
        ],
    )
    result = runner.invoke(main, [command, str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {source}: row 1 has a null 'text' (1 null in rows 0 to 2)"
    )
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_garbage_input_is_one_line(tmp_path, runner):
    source = tmp_path / "in.parquet"
    source.write_bytes(b"PAR1 this is not parquet PAR1")
    result = runner.invoke(main, ["score", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {source}: unreadable or truncated file (")
    assert len(result.output.strip().splitlines()) == 1
