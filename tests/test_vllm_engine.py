"""The vLLM engine against the test double in tests/doubles/vllm (vLLM itself needs a GPU)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from generator import engines
from generator.build import plan_document
from generator.cli import main
from generator.engines import EngineConfig, Request, SamplingParams, create_engine, resolve_kind
from generator.engines.vllm import VllmEngine, VllmOptions
from generator.errors import EngineError
from generator.mix import load_mix
from generator.prompts import TemplateLibrary
from shards.format import is_shard_schema
from tests.helpers import TINY_MIX, build_args, write

DOUBLES = Path(__file__).parent / "doubles"
# The helpers' tiny mix without judges (they would judge on the double's word salad)
# and with scores kept but never dropping.
NO_JUDGES = TINY_MIX.format(max_tokens=24, max_rows=2) + "judges: {}\nscores: {quality: null}\n"


@pytest.fixture
def tiny_mix(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", NO_JUDGES)


@pytest.fixture
def vllm(monkeypatch):
    """Put the vLLM double where `import vllm` finds it, with a clean call record, no
    VLLM_BATCH_INVARIANT in the environment and its batch-invariance module not yet
    imported (vLLM reads the variable once, at that import)."""
    monkeypatch.syspath_prepend(str(DOUBLES))
    import vllm

    assert vllm.__version__.endswith("+double")
    vllm.LLM.instances.clear()
    monkeypatch.setattr(vllm.LLM, "abort_prompts_containing", None)
    monkeypatch.setattr(vllm.LLM, "finish_prompts_containing", {})
    monkeypatch.setenv("VLLM_BATCH_INVARIANT", "unset")
    monkeypatch.delenv("VLLM_BATCH_INVARIANT")
    for name in [m for m in sys.modules if m.startswith("vllm.model_executor")]:
        monkeypatch.delitem(sys.modules, name)
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
        "enable_prefix_caching": True,
        "seed": 0,
    }


def test_options_left_unset_keep_vllms_own_defaults(vllm):
    VllmEngine("org/model").generate([Request("hello", SamplingParams(seed=1))])
    (llm,) = vllm.LLM.instances
    assert (llm.init_args["gpu_memory_utilization"], llm.init_args["seed"]) == (0.92, 0)
    assert llm.init_args["max_model_len"] is None


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
    assert "model tokenizer" in manifest["tokens"]["counted_with"]
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
        "scores: {quality: null}\njudges: {}\nsteps: {idea: false, revise: false}\n"
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
        c[-1]["content"] for call in vllm.LLM.instances[-1].calls for c in call.conversations
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


def test_the_double_mirrors_vllms_sampling_rules(vllm, caplog):
    from vllm.exceptions import VLLMValidationError

    assert not issubclass(VLLMValidationError, ValueError)  # the 0.33 shape
    with pytest.raises(VLLMValidationError, match=r"temperature must be in \[0, 2\], got 2.5"):
        vllm.SamplingParams(temperature=2.5)
    assert vllm.SamplingParams(temperature=0.005).temperature == 0.01
    assert "We have maxed it out to 0.01" in caplog.text
    greedy = vllm.SamplingParams(temperature=0.0, top_p=0.5, top_k=3)
    assert (greedy.top_p, greedy.top_k) == (1.0, 0)


def test_temperatures_vllm_refuses_are_refused_when_the_mix_loads():
    with pytest.raises(ValueError, match=r"invalid value 2\.5 for temperature"):
        SamplingParams(temperature=2.5)
    assert SamplingParams(temperature=2.0).temperature == 2.0


def test_a_vllm_validation_error_is_one_line_naming_the_parameter(vllm):
    engine = VllmEngine("org/model", VllmOptions(max_model_len=5))
    with pytest.raises(EngineError) as caught:
        engine.generate([Request("a prompt of more than five words here", SamplingParams(seed=1))])
    message = str(caught.value)
    assert message.startswith("vLLM rejected max_model_len: The decoder prompt (length 9) is ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("error", ("error", "vLLM reported a retryable request error (finish_reason 'error')")),
        ("abort", ("error", "aborted by vLLM")),
        ("repetition", ("length", None)),
    ],
)
def test_finish_reasons_become_failures_or_truncated_documents(vllm, reason, expected):
    vllm.LLM.finish_prompts_containing = {"odd": reason}
    normal, odd = VllmEngine("org/model").generate(
        [
            Request("plain", SamplingParams(seed=4, max_tokens=500)),
            Request("odd", SamplingParams(seed=4)),
        ]
    )
    assert (normal.finish_reason, normal.error) == ("stop", None)
    assert (odd.finish_reason, odd.error) == expected
    assert (odd.text != "") == (reason == "repetition")


def test_requests_ending_in_error_fail_the_build_and_are_retried(vllm, tmp_path, runner):
    mix = tmp_path / "one-family.yaml"
    mix.write_text(
        "documents: 4\nseed: 3\nfamilies: {technical-report: 1}\n"
        "sampling: {max_tokens: 64}\nfilters: {min_words: 1, drop_truncated: false}\n"
        "scores: {quality: null}\njudges: {}\nsteps: {idea: false, revise: false}\n"
    )
    out = tmp_path / "out"
    args = build_args(mix, out, "--engine", "vllm", "--model", "m", "-q")
    library = TemplateLibrary()
    doomed = plan_document(load_mix(str(mix), library), library, 2).axes["ai_name"]
    vllm.LLM.finish_prompts_containing = {doomed: "error"}
    failed = runner.invoke(main, args)
    assert failed.exit_code == 1
    assert "finish_reason 'error'" in failed.output
    assert "2" in json.loads((out / ".work" / "failures.json").read_text())
    vllm.LLM.finish_prompts_containing = {}
    assert runner.invoke(main, args).exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["generated"] == 4


def texts(engine: VllmEngine, batches: list[int]) -> list[str]:
    requests = [Request(f"prompt {i}", SamplingParams(seed=i, max_tokens=200)) for i in range(4)]
    done, start = [], 0
    for size in batches:
        done += engine.generate(requests[start : start + size])
        start += size
    return [c.text for c in done]


def test_batch_invariant_mode_is_on_by_default_and_makes_chunking_irrelevant(vllm):
    engine = VllmEngine("org/model")
    assert texts(engine, [4]) == texts(engine, [1, 3]) == texts(engine, [2, 2])
    assert os.environ["VLLM_BATCH_INVARIANT"] == "1"
    assert engine.reproducibility == {
        "mode": "batch-invariant",
        "guarantee": "same text for any chunk size, kill and resume "
        "(vLLM batch-invariant kernels and a fixed seed per document)",
    }


def test_without_batch_invariance_chunking_changes_texts_and_the_engine_says_so(vllm):
    engine = VllmEngine("org/model", VllmOptions(batch_invariant=False))
    assert texts(engine, [4]) != texts(engine, [2, 2])
    assert engine.reproducibility == {
        "mode": "off",
        "guarantee": "resumed documents may differ from an uninterrupted run: "
        "batch-invariant mode switched off (--no-batch-invariant)",
    }


def test_vllm_imported_before_the_variable_is_set_reports_the_mode_off(vllm):
    import vllm.model_executor.layers.batch_invariant  # noqa: F401 - read without the variable

    engine = VllmEngine("org/model")
    assert engine.reproducibility["mode"] == "off"
    assert (
        "imported before VLLM_BATCH_INVARIANT could be set" in engine.reproducibility["guarantee"]
    )


def test_a_vllm_without_batch_invariance_reports_the_mode_off(vllm, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm.model_executor.layers.batch_invariant", None)
    monkeypatch.setitem(sys.modules, "vllm.envs", None)
    engine = VllmEngine("org/model")
    assert engine.reproducibility["guarantee"].endswith("this vLLM has no batch-invariant mode")


def test_the_cli_can_switch_batch_invariance_off(vllm, tiny_mix, tmp_path, runner):
    args = build_args(
        tiny_mix,
        tmp_path / "o",
        "--limit",
        "2",
        "--engine",
        "vllm",
        "--model",
        "m",
        "--no-batch-invariant",
        "-q",
    )
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert vllm.LLM.instances[0].batch_invariant is False
