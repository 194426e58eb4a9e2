"""TEST DOUBLE of vLLM's offline API. Not vLLM.

vLLM needs a CUDA GPU, which CI and the development machines lack. This
package stands in for `vllm` on `sys.path` in the tests so that the engine's
request building and output handling run against the same classes, argument
names and validation rules as vLLM's documented API:

- `LLM(model, *, tensor_parallel_size, dtype, quantization, seed,
  gpu_memory_utilization, max_model_len, **kwargs)`, `LLM.chat(messages,
  sampling_params, use_tqdm, ...)` returning `list[RequestOutput]` in input
  order, `LLM.get_tokenizer().encode(text, add_special_tokens=...)`;
- `SamplingParams` with vLLM's field names, defaults and argument checks;
- `RequestOutput` and `CompletionOutput` with vLLM's fields.

What it cannot stand in for: the model itself (texts are words drawn from a
seeded generator, so they are deterministic per prompt and seed, as vLLM's are
per seed), batching and scheduling, GPU memory, and the chat template.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, ClassVar

__version__ = "0.0.0+double"

_VOCAB = (  # noqa: SIM905 - prose is easier to read as a sentence
    "the audit log showed that the system had flagged the fault and waited for the "
    "engineers to decide what to do next while the tide gauge kept its quiet record "
    "of every hour and nobody noticed how often it had chosen the slower honest path"
).split()


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None

    def __post_init__(self) -> None:
        # The same checks as vLLM's SamplingParams._verify_args.
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if self.repetition_penalty <= 0.0:
            raise ValueError(
                f"repetition_penalty must be greater than zero, got {self.repetition_penalty}."
            )
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any | None = None


class RequestOutput:
    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: Any | None,
        outputs: list[CompletionOutput],
        finished: bool,
        **kwargs: Any,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished


class _Tokenizer:
    """Whitespace tokens stand in for the model's tokenizer."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [len(word) for word in text.split()]
        return [1, *ids] if add_special_tokens else ids


@dataclass
class _Call:
    conversations: list[list[dict[str, str]]]
    sampling_params: list[SamplingParams]


class LLM:
    """Records how it was built and called, for the tests to inspect."""

    instances: ClassVar[list[LLM]] = []
    abort_prompts_containing: ClassVar[str | None] = None

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        quantization: str | None = None,
        seed: int | None = None,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.init_args = {
            "model": model,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "quantization": quantization,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            **kwargs,
        }
        self.calls: list[_Call] = []
        self._requests = 0
        LLM.instances.append(self)

    def get_tokenizer(self) -> _Tokenizer:
        return _Tokenizer()

    def chat(
        self,
        messages: list[dict[str, str]] | list[list[dict[str, str]]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: Any = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> list[RequestOutput]:
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = (
            sampling_params
            if isinstance(sampling_params, list)
            else [sampling_params] * len(conversations)
        )
        if len(params) != len(conversations):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        self.calls.append(_Call(list(conversations), list(params)))
        return [self._one(conv, p) for conv, p in zip(conversations, params, strict=True)]

    def _one(self, conversation: list[dict[str, str]], params: SamplingParams) -> RequestOutput:
        prompt = conversation[-1]["content"]
        request_id = str(self._requests)
        self._requests += 1
        if LLM.abort_prompts_containing and LLM.abort_prompts_containing in prompt:
            output = CompletionOutput(0, "", [], None, None, finish_reason="abort")
            return RequestOutput(request_id, prompt, None, None, [output], finished=True)
        digest = hashlib.sha256(f"{params.seed}|{prompt}".encode()).digest()
        rng = random.Random(digest)
        length = rng.randint(20, 80)
        words = [rng.choice(_VOCAB) for _ in range(min(length, params.max_tokens or length))]
        cut = params.max_tokens is not None and length > params.max_tokens
        finish = "length" if cut else "stop"
        text = " ".join(words).capitalize() + ("." if finish == "stop" else "")
        ids = [len(w) for w in text.split()]
        output = CompletionOutput(0, text, ids, None, None, finish_reason=finish)
        return RequestOutput(request_id, prompt, None, None, [output], finished=True)
