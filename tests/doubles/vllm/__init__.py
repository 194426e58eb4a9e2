"""TEST DOUBLE of vLLM's offline API. Not vLLM.

vLLM needs a CUDA GPU, which CI and the development machines lack. This
package stands in for `vllm` on `sys.path` in the tests so that the engine's
request building and output handling run against the same classes, argument
names and validation rules as vLLM's documented API:

- `LLM(model, *, tensor_parallel_size, dtype, quantization, seed,
  gpu_memory_utilization, max_model_len, **kwargs)`, `LLM.chat(messages,
  sampling_params, use_tqdm, ...)` returning `list[RequestOutput]` in input
  order, `LLM.get_tokenizer().encode(text, add_special_tokens=...)`;
- `SamplingParams` with vLLM's field names, defaults and argument checks
  (`_verify_args` of vLLM 0.2x-0.33: temperature in [0, 2], values in (0, 0.01)
  raised to 0.01 with a warning, finite numbers), raising the 0.33
  `vllm.exceptions.VLLMValidationError`, which is not a ValueError;
- `RequestOutput` and `CompletionOutput` with vLLM's fields, and its five finish
  reasons: `stop`, `length`, `abort`, `error` (retryable), `repetition`;
- `SamplingParams(logprobs=k)`: `CompletionOutput.logprobs` holds one
  `{token_id: vllm.logprobs.Logprob}` per generated token, the k most likely of
  `LLM.next_token_logprobs` (set by the tests);
- `LLM` defaults as vLLM 0.25 has them (`seed=0`, `gpu_memory_utilization=0.92`);
  a prompt longer than `max_model_len` refused for the whole call, as vLLM does;
- batch invariance: `vllm.model_executor.layers.batch_invariant` reads
  `VLLM_BATCH_INVARIANT` once at import. Without it a text depends on the size of
  the batch it was generated in (as vLLM's numerics do), with it only on prompt
  and seed.

What it cannot stand in for: the model itself (texts are words drawn from a
seeded generator), real scheduling and kernels, GPU memory, the cost of the
batch-invariant kernels, and the chat template.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from vllm.exceptions import VLLMValidationError

__version__ = "0.0.0+double"
FINISH_REASON_STRINGS = ("stop", "length", "abort", "error", "repetition")
_SAMPLING_EPS = 1e-5
_MAX_TEMP = 1e-2
logger = logging.getLogger("vllm")

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
        # vLLM's SamplingParams.__post_init__ and _verify_args, in their order.
        if 0 < self.temperature < _MAX_TEMP:
            logger.warning(
                "temperature %s is less than %s, which may cause numerical errors nan or inf "
                "in tensors. We have maxed it out to %s.",
                self.temperature,
                _MAX_TEMP,
                _MAX_TEMP,
            )
            self.temperature = max(self.temperature, _MAX_TEMP)
        if self.seed == -1:
            self.seed = None
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # greedy
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0

    def _verify_args(self) -> None:
        def fail(message: str, parameter: str | None = None) -> None:
            value = getattr(self, parameter) if parameter else None
            raise VLLMValidationError(message, parameter=parameter, value=value)

        if not isinstance(self.n, int) or self.n < 1:
            fail(f"n must be at least 1, got {self.n}.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            fail(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            fail(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if not math.isfinite(self.repetition_penalty):
            fail(f"repetition_penalty must be a finite number, got {self.repetition_penalty}.")
        if self.repetition_penalty <= 0.0:
            fail(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        if not math.isfinite(self.temperature):
            fail(f"temperature must be a finite number, got {self.temperature}.", "temperature")
        if self.temperature < 0.0:
            fail(f"temperature must be non-negative, got {self.temperature}.", "temperature")
        if self.temperature > 2.0:
            fail(f"temperature must be in [0, 2], got {self.temperature}.", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            fail(f"top_p must be in (0, 1], got {self.top_p}.", "top_p")
        if self.top_k < -1:
            fail(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not isinstance(self.top_k, int):
            fail(f"top_k must be an integer, got {type(self.top_k).__name__}")
        if not 0.0 <= self.min_p <= 1.0:
            fail(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            fail(f"max_tokens must be at least 1, got {self.max_tokens}.", "max_tokens")
        if self.min_tokens < 0:
            fail(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            fail(
                f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}."
            )
        if any(not stop for stop in self.stop):
            fail("stop cannot contain an empty string.")


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
    # prompt substring -> finish reason the request ends with ("error", "repetition", ...)
    finish_prompts_containing: ClassVar[dict[str, str]] = {}
    # With SamplingParams.logprobs = k: decoded token -> log-probability at every generated
    # position, of which the k most likely come back as {token_id: Logprob}, as vLLM does.
    next_token_logprobs: ClassVar[dict[str, float]] = {"A": -0.7, " B": -1.2, "B": -1.9, "I": -3}

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        quantization: str | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        max_model_len: int | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            from vllm.model_executor.layers.batch_invariant import vllm_is_batch_invariant
        except ImportError:  # standing in for a vLLM from before batch invariance
            self.batch_invariant = False
        else:
            self.batch_invariant = vllm_is_batch_invariant()
        self.max_model_len = max_model_len
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
        for conversation in conversations:
            length = len(self.get_tokenizer().encode(conversation[-1]["content"]))
            if self.max_model_len is not None and length > self.max_model_len:
                raise VLLMValidationError(
                    f"The decoder prompt (length {length}) is longer than the maximum model "
                    f"length of {self.max_model_len}. Make sure that `max_model_len` is no "
                    "smaller than the number of text tokens.",
                    parameter="max_model_len",
                )
        self.calls.append(_Call(list(conversations), list(params)))
        batch = len(conversations)
        return [self._one(conv, p, batch) for conv, p in zip(conversations, params, strict=True)]

    def _one(
        self, conversation: list[dict[str, str]], params: SamplingParams, batch: int
    ) -> RequestOutput:
        prompt = conversation[-1]["content"]
        request_id = str(self._requests)
        self._requests += 1
        forced = [r for s, r in LLM.finish_prompts_containing.items() if s in prompt]
        if LLM.abort_prompts_containing and LLM.abort_prompts_containing in prompt:
            forced.insert(0, "abort")
        if forced and forced[0] in ("abort", "error"):
            output = CompletionOutput(0, "", [], None, None, finish_reason=forced[0])
            return RequestOutput(request_id, prompt, None, None, [output], finished=True)
        # Without batch invariance the numerics, and so the text, depend on the batch.
        context = "" if self.batch_invariant else f"|batch={batch}"
        digest = hashlib.sha256(f"{params.seed}|{prompt}{context}".encode()).digest()
        rng = random.Random(digest)
        length = rng.randint(20, 80)
        words = [rng.choice(_VOCAB) for _ in range(min(length, params.max_tokens or length))]
        cut = params.max_tokens is not None and length > params.max_tokens
        finish = "length" if cut else "stop"
        if forced:  # "repetition": vLLM stopped a repeating text early
            words, finish = words[: max(1, len(words) // 2)], forced[0]
        text = " ".join(words).capitalize() + ("." if finish == "stop" else "")
        ids = [len(w) for w in text.split()]
        logprobs = None if params.logprobs is None else [_top_logprobs(params.logprobs)] * len(ids)
        output = CompletionOutput(0, text, ids, None, logprobs, finish_reason=finish)
        return RequestOutput(request_id, prompt, None, None, [output], finished=True)


def _top_logprobs(k: int) -> dict[int, Any]:
    from vllm.logprobs import Logprob

    ranked = sorted(LLM.next_token_logprobs.items(), key=lambda item: -item[1])[:k]
    return {
        1000 + rank: Logprob(logprob, rank, token)
        for rank, (token, logprob) in enumerate(ranked, 1)
    }
