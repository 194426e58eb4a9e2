"""Property tests for the mix loader: whatever a mix file holds, loading it gives a Mix
or a one-line MixError naming the file, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.errors import MixError
from generator.mix import Mix, load_mix
from generator.prompts import TemplateLibrary

LIBRARY = TemplateLibrary()
KEYS = [
    "name",
    "description",
    "extends",
    "documents",
    "seed",
    "families",
    "sampling",
    "filters",
    "dedup",
    "scores",
    "judges",
    "shards",
    "temperature",
    "max_tokens",
    "seed",
    "stop",
    "technical-report",
    "deployment-story",
    "min_words",
    "quality",
    "alignment",
    "max_rows",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["alignment-stories", "../x", "/tmp/x", "1e308", "nan", ".inf"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=8)
VALID = "documents: 3\nfamilies: {technical-report: 1}\n"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_text(data: bytes) -> Mix | MixError:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prop.yaml"
        path.write_bytes(data)
        try:
            return load_mix(str(path), LIBRARY)
        except MixError as exc:
            message = str(exc)
            assert message.startswith(f"{path}: "), message
            assert "\n" not in message and len(message) < 1000, message
            return exc


@SETTINGS
@given(documents)
def test_any_mapping_gives_a_mix_or_one_line_error(data):
    load_text(yaml.safe_dump(data, allow_unicode=True).encode())


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=4))
def test_any_addition_to_a_valid_mix_gives_a_mix_or_one_line_error(extra):
    extra.pop("documents", None)
    extra.pop("families", None)
    text = VALID + (yaml.safe_dump(extra, allow_unicode=True) if extra else "")
    load_text(text.encode())


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_give_a_mix_or_one_line_error(data):
    load_text(data)


@SETTINGS
@given(
    st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`, \n\t?.0123456789")), max_size=80)
)
def test_yaml_punctuation_soup_gives_a_mix_or_one_line_error(text):
    load_text((VALID + text).encode())
