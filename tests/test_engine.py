"""The embedded llama.cpp engine, run for real on the bundled SmolLM2-135M model."""

from __future__ import annotations

import pytest

from generator.cli import main
from generator.engines import Request, SamplingParams, bundled_model_path
from generator.engines.llamacpp import LlamaCppEngine
from tests.helpers import build_args

PROMPT = "Write two sentences about a lighthouse keeper and the AI that logs the tides."


@pytest.fixture(scope="module")
def engine() -> LlamaCppEngine:
    engine = LlamaCppEngine(workers=1)
    yield engine
    engine.close()


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


def test_worker_processes_give_the_same_texts_as_one_process(engine):
    requests = [
        Request(PROMPT, SamplingParams(temperature=0.9, max_tokens=16, seed=s)) for s in range(4)
    ]
    pooled = LlamaCppEngine(workers=2)
    try:
        assert pooled.default_chunk_size == 8
        assert pooled.generate(requests) == engine.generate(requests)
        assert pooled.count_tokens(["tide tables"]) == engine.count_tokens(["tide tables"])
    finally:
        pooled.close()


def test_a_corrupt_gguf_is_one_clear_error_from_the_workers(tiny_mix, tmp_path, runner):
    model = tmp_path / "corrupt.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    args = build_args(
        tiny_mix,
        tmp_path / "o",
        "--limit",
        "2",
        "--engine",
        "llamacpp",
        "--model",
        str(model),
        "--workers",
        "2",
        "-q",
    )
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {model}: cannot load model")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "manifest.json").exists()
