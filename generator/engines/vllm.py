"""Batched generation on GPUs with vLLM's offline `LLM` API (install extra `.[vllm]`).

A chunk of thousands of chat prompts goes to `LLM.chat` in one call, with one
`SamplingParams` per prompt so each document keeps its own seed; vLLM's
scheduler does the batching. The build checkpoints after every chunk, so a
crash loses at most one chunk.

Reproducibility. vLLM's numerics depend on what else is in the batch, so with
per-request seeds alone a document's text still changes with the chunk size or
after a kill and resume (measured on vLLM 0.25: 44-48 of 64 texts differ between
chunk sizes). vLLM's batch-invariant mode (`VLLM_BATCH_INVARIANT=1`, beta; needs
an NVIDIA GPU of compute capability 8.0 or newer, 9.0 in the latest docs) makes
each request's output independent of its batch. vLLM reads the variable when it
is first imported, so the engine sets it before importing vLLM, then asks vLLM
whether the mode is really on and reports that in `reproducibility`. On by
default (`batch_invariant=False` turns it off); its cost in tokens/s is not
measured on a GPU here.

vLLM's own rules this engine relies on: temperatures in (0, 0.01) run at 0.01
(vLLM raises them, with a warning); finish reasons are `stop`, `length`,
`abort`, `error` (a retryable request-level error) and `repetition` (a
repetitive token pattern ended the text early); since 0.33 a rejected parameter
raises `VLLMValidationError`, which is no longer a `ValueError`.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from generator.engines import (
    ChoiceRequest,
    Completion,
    EngineBase,
    EngineConfig,
    ModelInfo,
    Request,
)
from generator.errors import EngineError

BATCH_INVARIANT_ENV = "VLLM_BATCH_INVARIANT"
RESUME_MAY_DIFFER = "resumed documents may differ from an uninterrupted run"


@dataclass(frozen=True)
class VllmOptions:
    """Passed through to `vllm.LLM`; None leaves vLLM's own default (for
    `gpu_memory_utilization`, 0.92 in vLLM 0.25), so a build and a raw vLLM script
    given the same flags use the same memory."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    quantization: str | None = None
    batch_invariant: bool = True


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
        self._batch_invariant: bool | None = None  # known once vLLM is imported

    @cached_property
    def model(self) -> ModelInfo:
        """A hub id or a folder name; vLLM resolves the weights, so no file digest."""
        local = Path(self.model_ref)
        return ModelInfo(name=local.name if local.exists() else self.model_ref, sha256="")

    @property
    def reproducibility(self) -> dict[str, str]:
        """A short statement for the manifest: what re-running the build promises.
        Starts the engine if it has not started, since only vLLM knows whether its
        batch-invariant mode took effect."""
        self._llm  # noqa: B018 - imports vLLM and settles the mode
        if self._batch_invariant:
            return {
                "mode": "batch-invariant",
                "guarantee": "same text for any chunk size, kill and resume "
                "(vLLM batch-invariant kernels and a fixed seed per document)",
            }
        if not self.options.batch_invariant:
            reason = "batch-invariant mode switched off (--no-batch-invariant)"
        elif self._batch_invariant is None:
            reason = "this vLLM has no batch-invariant mode"
        elif os.environ.get(BATCH_INVARIANT_ENV, "1").strip() in {"", "0"}:
            reason = f"{BATCH_INVARIANT_ENV}=0 in the environment"
        else:
            reason = f"vLLM was imported before {BATCH_INVARIANT_ENV} could be set"
        return {"mode": "off", "guarantee": f"{RESUME_MAY_DIFFER}: {reason}"}

    @cached_property
    def _llm(self) -> Any:
        if self.options.batch_invariant:
            os.environ.setdefault(BATCH_INVARIANT_ENV, "1")
        else:
            os.environ[BATCH_INVARIANT_ENV] = "0"
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError("the vllm engine needs vLLM: pip install -e '.[vllm]'") from exc
        self._batch_invariant = _batch_invariance_active()
        options = self.options
        passed = {
            "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "max_model_len": options.max_model_len,
            "dtype": options.dtype,
            "quantization": options.quantization,
            # Every document of a family starts with the same system message: vLLM's
            # automatic prefix caching computes it once (on by default in recent vLLM;
            # asked for explicitly so older versions do it too).
            "enable_prefix_caching": True,
        }
        kwargs = {k: v for k, v in passed.items() if v is not None}
        try:
            return LLM(model=self.model_ref, **kwargs)
        except _validation_errors() as exc:
            hint = " (or run with --no-batch-invariant)" if "invariant" in str(exc) else ""
            raise EngineError(
                f"vLLM cannot start {self.model_ref}: {_one_line(exc)}{hint}"
            ) from None

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        from vllm import SamplingParams

        try:
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
            conversations = [r.messages() for r in requests]
            outputs = self._llm.chat(conversations, params, use_tqdm=False)
        except _validation_errors() as exc:
            raise EngineError(f"vLLM rejected {_parameter(exc)}: {_one_line(exc)}") from None
        return [_completion(output) for output in outputs]

    def close(self) -> None:
        """vLLM frees its GPU memory when the process ends."""

    def count_tokens(self, texts: Sequence[str]) -> list[int | None]:
        tokenizer = self._llm.get_tokenizer()
        return [len(tokenizer.encode(text, add_special_tokens=False)) for text in texts]

    def option_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[dict[str, float]]:
        """Each option letter's log-probability as the reply's first token: one greedy
        token per request with its top 20 log-probabilities (vLLM's default
        `max_logprobs`), read from `outputs[0].logprobs[0]`, whose `Logprob` entries carry
        the decoded token; "A" and " A" both count as "A", the better one wins. A letter
        outside the top 20 gets -inf."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=20)
        conversations = [
            [{"role": "system", "content": r.system}, {"role": "user", "content": r.prompt}]
            for r in requests
        ]
        try:
            outputs = self._llm.chat(conversations, params, use_tqdm=False)
        except _validation_errors() as exc:
            raise EngineError(f"vLLM rejected {_parameter(exc)}: {_one_line(exc)}") from None
        answers = []
        for output, request in zip(outputs, requests, strict=True):
            steps = output.outputs[0].logprobs
            if not steps:
                raise EngineError("vLLM returned no logprobs for a one-token request")
            top = [(str(e.decoded_token or "").strip(), e.logprob) for e in steps[0].values()]
            answers.append(
                {
                    o: max((lp for token, lp in top if token == o), default=float("-inf"))
                    for o in request.options
                }
            )
        return answers


def _completion(output: Any) -> Completion:
    """vLLM's finish reasons as documents or failures. `abort` and `error` are failures the
    build records and retries on the next run; `repetition` means vLLM ended a degenerate,
    repeating text early, so the text is unfinished: kept as truncated (`length`), which
    `drop_truncated` drops."""
    best = output.outputs[0]
    reason = best.finish_reason
    if reason == "abort":
        return Completion(text="", n_tokens=0, finish_reason="error", error="aborted by vLLM")
    if reason == "error":
        return Completion(
            text="",
            n_tokens=0,
            finish_reason="error",
            error="vLLM reported a retryable request error (finish_reason 'error')",
        )
    finish = "stop" if reason in (None, "stop") else "length"
    return Completion(text=best.text, n_tokens=len(best.token_ids), finish_reason=finish)


def _batch_invariance_active() -> bool | None:
    """Whether vLLM runs batch-invariant: True or False, or None when this vLLM has no
    such mode. Asks vLLM itself (the function in 0.11-0.2x, `vllm.envs` later)."""
    try:
        module = importlib.import_module("vllm.model_executor.layers.batch_invariant")
        check = getattr(module, "vllm_is_batch_invariant", None)
        if check is not None:
            return bool(check())
    except ImportError:
        pass
    try:
        envs = importlib.import_module("vllm.envs")
    except ImportError:
        return None
    value = getattr(envs, BATCH_INVARIANT_ENV, None)
    return None if value is None else bool(value)


def _validation_errors() -> tuple[type[BaseException], ...]:
    """What vLLM raises for a value it refuses: ValueError up to 0.2x; from 0.33 a
    `VLLMValidationError` under `VLLMClientError`, outside the ValueError tree."""
    found: list[type[BaseException]] = [ValueError, TypeError]
    try:
        exceptions = importlib.import_module("vllm.exceptions")
    except ImportError:
        return tuple(found)
    for name in ("VLLMValidationError", "VLLMClientError"):
        cls = getattr(exceptions, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _parameter(exc: BaseException) -> str:
    """The parameter vLLM names (its `parameter` attribute, else the message's subject)."""
    named = getattr(exc, "parameter", None)
    if isinstance(named, str) and named:
        return named
    match = re.match(r"\s*`?([a-z_]+)`? must", str(exc))
    return match.group(1) if match else "the request"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
