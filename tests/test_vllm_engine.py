"""The vLLM engine against the test double in tests/doubles/vllm (vLLM itself needs a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from generator import engines
from generator.build import plan_document
from generator.cli import main
from generator.engines import EngineConfig, Request, SamplingParams, create_engine, resolve_kind
from generator.mix import load_mix
from generator.prompts import TemplateLibrary
from generator.engines.vllm import VllmEngine, VllmOptions
from shards.format import is_shard_schema
from tests.helpers import build_args

DOUBLES = Path(__file__).parent / "doubles"


@pytest.fixture
def vllm(monkeypatch):
    """Put the vLLM double where `import vllm` finds it, with a clean call record."""
    monkeypatch.syspath_prepend(str(DOUBLES))
    import vllm

    assert vllm.__version__.endswith("+double")
    vllm.LLM.instances.clear()
    monkeypatch.setattr(vllm.LLM, "abort_prompts_containing", None)
    return vllm


def test_llm_gets_the_pass_through_options(vllm):
    options = VllmOptions(
        tensor_parallel_size=4,
        gpu_memory_utilization=0.8,
        max_model_len=8192,
        dtype="bfloat16",
        quantization="awq",
    )
    engine = VllmEngine("org/model-7b", options)
    engine.generate([Request("hello", SamplingParams(seed=1))])
    (llm,) = vllm.LLM.instances
    assert llm.init_args == {
        "model": "org/model-7b",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "max_model_len": 8192,
        "dtype": "bfloat16",
        "quantization": "awq",
        "seed": None,
    }


def test_each_request_gets_its_own_sampling_params_and_seed(vllm):
    engine = VllmEngine("org/model")
    params = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=0,
        min_p=0.05,
        repetition_penalty=1.1,
        presence_penalty=0.2,
        frequency_penalty=0.1,
        max_tokens=40,
        stop=("THE END",),
    )
    requests = [
        Request(f"prompt {i}", SamplingParams(**{**params.to_dict(), "seed": 100 + i}))
        for i in range(3)
    ]
    completions = engine.generate(requests)
    (call,) = vllm.LLM.instances[0].calls
    assert [c[0] for c in call.conversations] == [
        {"role": "user", "content": f"prompt {i}"} for i in range(3)
    ]
    sent = call.sampling_params
    assert [p.seed for p in sent] == [100, 101, 102]
    first = sent[0]
    assert (first.temperature, first.top_p, first.top_k, first.min_p) == (0.7, 0.9, -1, 0.05)
    assert (first.repetition_penalty, first.presence_penalty, first.frequency_penalty) == (
        1.1,
        0.2,
        0.1,
    )
    assert (first.max_tokens, first.stop) == (40, ["THE END"])
    assert len(completions) == 3
    for completion in completions:
        assert completion.n_tokens == len(completion.text.split())
        assert completion.finish_reason in {"stop", "length"}


def test_same_seed_same_text(vllm):
    engine = VllmEngine("org/model")
    a, b, c = engine.generate(
        [Request("p", SamplingParams(seed=s, max_tokens=200)) for s in (1, 2, 1)]
    )
    assert a.text == c.text != b.text


def test_length_finish_and_abort_are_reported(vllm):
    vllm.LLM.abort_prompts_containing = "doomed"
    engine = VllmEngine("org/model")
    cut, aborted = engine.generate(
        [
            Request("long one", SamplingParams(seed=3, max_tokens=2)),
            Request("doomed", SamplingParams(seed=3)),
        ]
    )
    assert (cut.finish_reason, cut.n_tokens) == ("length", 2)
    assert (aborted.finish_reason, aborted.error) == ("error", "aborted by vLLM")


def test_token_counts_come_from_the_vllm_tokenizer(vllm):
    assert VllmEngine("org/model").count_tokens(["one two three", "four"]) == [3, 1]


def test_build_with_vllm_chunks_requests_and_writes_the_same_schema(
    vllm, tiny_mix, tmp_path, runner
):
    out = tmp_path / "out"
    args = build_args(
        tiny_mix,
        out,
        "--limit",
        "12",
        "--chunk-size",
        "5",
        "--engine",
        "vllm",
        "--model",
        "org/model-7b",
        "--tensor-parallel-size",
        "2",
        "-q",
    )
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "by vllm on org/model-7b" in result.output
    (llm,) = vllm.LLM.instances
    assert [len(call.conversations) for call in llm.calls] == [5, 5, 2]
    assert llm.init_args["tensor_parallel_size"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["engine"], manifest["model"]["name"]) == ("vllm", "org/model-7b")
    assert manifest["counts"]["generated"] == 12
    assert manifest["tokens"]["counted_with"] == "model tokenizer"
    for shard in manifest["shards"]:
        table = pa.ipc.open_stream(str(out / shard["path"])).read_all()
        assert is_shard_schema(table.schema)
        assert "score_quality" in table.column_names
        assert set(table.column("engine").to_pylist()) == {"vllm"}


def test_aborted_requests_fail_the_build_and_are_retried_by_the_next_run(vllm, tmp_path, runner):
    mix = tmp_path / "one-family.yaml"
    mix.write_text(
        "documents: 6\nseed: 3\nfamilies: {technical-report: 1}\n"
        "sampling: {max_tokens: 64}\nfilters: {min_words: 1, drop_truncated: false}\n"
    )
    out = tmp_path / "out"
    args = build_args(mix, out, "--engine", "vllm", "--model", "m", "-q")
    # Abort the prompts that name the AI of document 1 (and any other with that name).
    library = TemplateLibrary()
    doomed = plan_document(load_mix(str(mix), library), library, 1).axes["ai_name"]
    vllm.LLM.abort_prompts_containing = doomed
    failed = runner.invoke(main, args)
    assert failed.exit_code == 1
    line = failed.output.strip()
    assert "documents failed after retries" in line and "aborted by vLLM" in line
    assert len(line.splitlines()) == 1
    failures = json.loads((out / ".work" / "failures.json").read_text())
    assert "1" in failures and len(failures) < 6
    assert not (out / "manifest.json").exists()

    vllm.LLM.abort_prompts_containing = None
    retried = runner.invoke(main, args)
    assert retried.exit_code == 0, retried.output
    asked_again = [
        c[0]["content"] for call in vllm.LLM.instances[-1].calls for c in call.conversations
    ]
    assert len(asked_again) == len(failures)
    assert all(doomed in prompt for prompt in asked_again)
    assert not (out / ".work" / "failures.json").exists()
    assert json.loads((out / "manifest.json").read_text())["counts"]["generated"] == 6


def test_auto_picks_vllm_only_with_cuda_and_a_non_gguf_model(vllm, monkeypatch):
    monkeypatch.setattr(engines, "cuda_available", lambda: True)
    assert resolve_kind(EngineConfig(model="org/model")) == "vllm"
    assert resolve_kind(EngineConfig(model="/models/x.gguf")) == "llamacpp"
    assert resolve_kind(EngineConfig()) == "llamacpp"
    monkeypatch.setattr(engines, "cuda_available", lambda: False)
    assert resolve_kind(EngineConfig(model="org/model")) == "llamacpp"
    assert create_engine(EngineConfig()).name == "llamacpp"
