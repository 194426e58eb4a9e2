"""Property tests: whatever a user types into --where and whatever bytes sit in a shard
file, the answer is a result or one ShardError line, promptly; never a traceback,
a hang or a crash of the process."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from generator.errors import ShardError
from shards.format import read_batches
from shards.inspect import MAX_WHERE_CHARS, open_build, select
from shards.writer import write_arrow_atomic
from tests.test_shards_checks import make_docs

# Fragments of the --where language and of things it must refuse, so generated
# strings reach deep into the parser rather than failing at the first character.
WORDS = [
    "n_tokens", "score_quality", "family", "text", "id", "seed", "nosuch", "null", "None",
    "and", "or", "not", "is", "in", "lambda", "__import__", "(", ")", "[", "]", "==", "=",
    "!=", "<", "<=", ">", ">=", "&", "|", "~", "-", "+", "*", "**", ",", ".", ":", "'x'",
    '"technical-report"', "0", "1", "-1", "0.5", "1e400", "99999999999999999999999999",
    "True", "False", "not not not", "\x00", "\n", "\\", "#", "'", '"',
]  # fmt: skip
where_strings = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join),
    st.integers(1, 6_000).map(lambda n: " or ".join(["n_tokens > 1"] * n)),
    st.integers(1, 6_000).map(lambda n: "not " * n + "n_tokens > 1"),
    st.integers(1, 400).map(lambda n: "(" * n + "n_tokens > 1" + ")" * n),
)

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    folder = tmp_path_factory.mktemp("where")
    write_arrow_atomic(folder / "shard-00000.arrow", make_docs(20))
    return open_build([folder])


@FAST
@given(expression=where_strings)
@example(expression=" or ".join(["n_tokens > 1"] * 9_000))
@example(expression="not " * 3_000 + "n_tokens > 1")
@example(expression="n_tokens > 100000000000000000000000000")
def test_any_where_string_selects_rows_or_is_one_line(view, expression):
    started = time.monotonic()
    try:
        selected = select(view, where=expression)
    except ShardError as exc:
        message = str(exc)
        assert message.startswith("--where: ")
        assert "\n" not in message
        assert len(message) < MAX_WHERE_CHARS + 300
    else:
        assert selected.num_rows <= view.table.num_rows
        assert selected.schema.equals(view.table.schema)
    assert time.monotonic() - started < 2


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("bytes") / "shard-00000.arrow"
    write_arrow_atomic(path, make_docs(300))  # two record batches
    return path.read_bytes()


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """A real shard cut, overwritten or spliced: the damage a disk or a person does."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FAST
@given(data=st.data())
def test_any_bytes_as_a_shard_read_as_a_table_or_one_line(tmp_path_factory, shard_bytes, data):
    raw = data.draw(st.one_of(st.binary(max_size=2_000), damaged(shard_bytes)))
    path = tmp_path_factory.mktemp("shard") / "shard-00000.arrow"
    path.write_bytes(raw)
    try:
        table = pa.Table.from_batches(list(read_batches(path)))
        table.to_pylist()  # every value readable
    except ShardError as exc:
        assert str(exc).startswith(f"{path}: ")
        assert "\n" not in str(exc)


def test_damage_the_properties_must_catch_is_really_generated(shard_bytes, tmp_path: Path):
    """The strategy above does produce unreadable shards (it is not vacuous)."""
    path = tmp_path / "shard-00000.arrow"
    path.write_bytes(shard_bytes[: len(shard_bytes) // 2])
    with pytest.raises(ShardError, match="unreadable or truncated Arrow file"):
        list(read_batches(path))
