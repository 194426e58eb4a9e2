"""The embedded llama.cpp engine, run for real on the bundled SmolLM2-135M model."""

from __future__ import annotations

import pytest

from generator.engines import Request, SamplingParams, bundled_model_path
from generator.llamacpp import LlamaCppEngine

PROMPT = "Write two sentences about a lighthouse keeper and the AI that logs the tides."


@pytest.fixture(scope="module")
def engine() -> LlamaCppEngine:
    return LlamaCppEngine()


def test_bundled_model_ships_inside_the_wheel():
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "site-packages" in str(path) or "dist-packages" in str(path)
    assert path.read_bytes()[:4] == b"GGUF"


def test_same_seed_same_text_different_seed_different_text(engine):
    params = SamplingParams(temperature=0.9, top_p=0.95, max_tokens=24)
    requests = [
        Request(PROMPT, SamplingParams(**{**params.to_dict(), "seed": s})) for s in (1, 2, 1)
    ]
    first, second, again = engine.generate(requests)
    assert first.text == again.text
    assert first.text != second.text
    assert 0 < first.n_tokens <= 24
    assert first.finish_reason in {"stop", "length"}


def test_max_tokens_cuts_with_finish_reason_length(engine):
    (completion,) = engine.generate([Request(PROMPT, SamplingParams(max_tokens=3, seed=4))])
    assert completion.n_tokens == 3
    assert completion.finish_reason == "length"


def test_count_tokens_uses_the_models_tokenizer(engine):
    short, longer = engine.count_tokens(["tide", "tide tables for the harbour master at Tromsø"])
    assert 1 <= short < longer


def test_model_identity_is_name_and_digest_not_a_path(engine):
    assert engine.model.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(engine.model.sha256) == 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("top_p", 0),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("top_k", -2),
        ("seed", -1),
        ("stop", ("",)),
        ("temperature", True),
        ("max_tokens", 2.5),
    ],
)
def test_sampling_params_are_validated_on_construction(field, value):
    with pytest.raises(ValueError, match=f"invalid value .* for {field}"):
        SamplingParams(**{field: value})


def test_sampling_params_defaults_follow_vllm():
    params = SamplingParams()
    assert (params.temperature, params.top_p, params.max_tokens, params.seed) == (
        1.0,
        1.0,
        16,
        None,
    )
