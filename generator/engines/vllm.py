"""Batched generation on GPUs with vLLM's offline `LLM` API (install extra `.[vllm]`).

A chunk of thousands of chat prompts goes to `LLM.chat` in one call, with one
`SamplingParams` per prompt so each document keeps its own seed; vLLM's
scheduler does the batching. The build checkpoints after every chunk, so a
crash loses at most one chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from generator.engines import Completion, EngineBase, EngineConfig, ModelInfo, Request
from generator.errors import EngineError


@dataclass(frozen=True)
class VllmOptions:
    """Passed through to `vllm.LLM` unchanged."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    quantization: str | None = None


class VllmEngine(EngineBase):
    name = "vllm"
    default_chunk_size = 2048

    @classmethod
    def from_config(cls, config: EngineConfig) -> VllmEngine:
        return cls(config.model or "", VllmOptions(**(config.vllm or {})))

    def __init__(self, model: str, options: VllmOptions | None = None) -> None:
        if not model:
            raise EngineError(
                "--model: the vllm engine needs a Hugging Face model id or a local path"
            )
        self.model_ref = model
        self.options = options or VllmOptions()

    @cached_property
    def model(self) -> ModelInfo:
        """A hub id or a folder name; vLLM resolves the weights, so no file digest."""
        local = Path(self.model_ref)
        return ModelInfo(name=local.name if local.exists() else self.model_ref, sha256="")

    @cached_property
    def _llm(self) -> Any:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError("the vllm engine needs vLLM: pip install -e '.[vllm]'") from exc
        options = self.options
        return LLM(
            model=self.model_ref,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
            dtype=options.dtype,
            quantization=options.quantization,
        )

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=r.params.temperature,
                top_p=r.params.top_p,
                top_k=r.params.top_k if r.params.top_k > 0 else -1,
                min_p=r.params.min_p,
                repetition_penalty=r.params.repetition_penalty,
                presence_penalty=r.params.presence_penalty,
                frequency_penalty=r.params.frequency_penalty,
                max_tokens=r.params.max_tokens,
                stop=list(r.params.stop) or None,
                seed=r.params.seed,
            )
            for r in requests
        ]
        conversations = [[{"role": "user", "content": r.prompt}] for r in requests]
        outputs = self._llm.chat(conversations, params, use_tqdm=False)
        return [_completion(output) for output in outputs]

    def close(self) -> None:
        """vLLM frees its GPU memory when the process ends."""

    def count_tokens(self, texts: Sequence[str]) -> list[int | None]:
        tokenizer = self._llm.get_tokenizer()
        return [len(tokenizer.encode(text, add_special_tokens=False)) for text in texts]


def _completion(output: Any) -> Completion:
    """vLLM finishes with `stop`, `length` or `abort`; an aborted request is retried later."""
    best = output.outputs[0]
    if best.finish_reason == "abort":
        return Completion(text="", n_tokens=0, finish_reason="error", error="aborted by vLLM")
    return Completion(
        text=best.text, n_tokens=len(best.token_ids), finish_reason=best.finish_reason or "stop"
    )
