"""Any OpenAI-compatible server: `vllm serve`, SGLang, llama.cpp's servers, hosted endpoints.

Requests go out concurrently (bounded by `concurrency`), each carrying its
document's seed. Timeouts, connection failures, 429 and 5xx are retried with
exponential backoff and full jitter, honouring `Retry-After`; a request that
still fails comes back as a `Completion` with `error` set, so the build can
record it and retry it on the next run instead of dropping it.

The API key is read from an environment variable at construction and only ever
placed in the Authorization header: it never appears in an error message, a
log line, a row or a manifest.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import httpx

from generator.engines import Completion, EngineBase, EngineConfig, ModelInfo, Request
from generator.errors import EngineError

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff schedule: attempt n waits a random time up to `base * 2**n`, capped at `cap`."""

    max_retries: int = 8
    base_seconds: float = 0.5
    cap_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap_seconds)
        return random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))


class RequestFailed(Exception):
    """A request failed in a way worth retrying, with the server's suggested wait if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIEngine(EngineBase):
    name = "openai"
    default_chunk_size = 64

    @classmethod
    def from_config(cls, config: EngineConfig) -> OpenAIEngine:
        if not config.base_url:
            raise EngineError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        return cls(
            base_url=config.base_url,
            model=config.model or "",
            api_key_env=config.api_key_env,
            concurrency=config.concurrency,
            retry=RetryPolicy(max_retries=config.max_retries),
        )

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_seconds: float = 600.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"--base-url: expected an http:// or https:// URL, got {base_url!r}")
        if not model:
            raise EngineError("--model: the openai engine needs the served model's name")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.concurrency = concurrency
        self.timeout = httpx.Timeout(timeout_seconds, connect=10.0)
        self.retry = retry or RetryPolicy()
        key = os.environ.get(api_key_env, "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    def __repr__(self) -> str:  # never show the headers
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model_name!r})"

    @cached_property
    def model(self) -> ModelInfo:
        """A served model is known by its name; the server owns the weights, so no digest."""
        return ModelInfo(name=self.model_name, sha256="")

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return asyncio.run(self._generate_all(requests))

    async def _generate_all(self, requests: Sequence[Request]) -> list[Completion]:
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            timeout=self.timeout,
            headers=self._headers,
            limits=httpx.Limits(max_connections=self.concurrency),
        ) as client:

            async def one(request: Request) -> Completion:
                async with limit:
                    return await self._with_retries(client, request)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _with_retries(self, client: httpx.AsyncClient, request: Request) -> Completion:
        last = ""
        for attempt in range(self.retry.max_retries + 1):
            try:
                return await self._chat(client, request)
            except RequestFailed as exc:
                last = str(exc)
                if attempt < self.retry.max_retries:
                    await asyncio.sleep(self.retry.delay(attempt, exc.retry_after))
            except EngineError as exc:
                return Completion(text="", n_tokens=0, finish_reason="error", error=str(exc))
        attempts = self.retry.max_retries + 1
        return Completion(
            text="", n_tokens=0, finish_reason="error", error=f"{last} (after {attempts} attempts)"
        )

    async def _chat(self, client: httpx.AsyncClient, request: Request) -> Completion:
        params = request.params
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": request.prompt}],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        # Not in the OpenAI API, but vLLM, SGLang and llama.cpp servers accept them.
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.min_p > 0:
            body["min_p"] = params.min_p
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
            body["repeat_penalty"] = params.repetition_penalty
        url = f"{self.base_url}/chat/completions"
        try:
            response = await client.post(url, json=body)
        except httpx.TimeoutException:
            raise RequestFailed(f"{url}: timed out") from None
        except httpx.TransportError as exc:
            raise RequestFailed(f"{url}: {type(exc).__name__}") from None
        if response.status_code in RETRYABLE_STATUS:
            raise RequestFailed(
                f"{url}: HTTP {response.status_code}", _retry_after(response.headers)
            )
        if response.status_code != 200:
            raise EngineError(f"{url}: HTTP {response.status_code}: {_brief(response.text)}")
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed(f"{url}: malformed response") from None
        return Completion(
            text=text,
            n_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def close(self) -> None:
        """Nothing held between calls."""

    def count_tokens(self, texts: Sequence[str]) -> list[int | None]:
        """Counted by the server's tokenizer where it offers an endpoint for it
        (vLLM's `/tokenize`, llama-cpp-python's `/extras/tokenize`); None otherwise,
        and the build keeps the server's usage count for the uncleaned completion."""
        return [self._tokenizer_count(t) for t in texts]

    @cached_property
    def _tokenize_route(self) -> tuple[str, str] | None:
        root = self.base_url.removesuffix("/v1")
        for url, field in ((f"{root}/tokenize", "prompt"), (f"{root}/extras/tokenize", "input")):
            try:
                response = httpx.post(
                    url,
                    json={"model": self.model_name, field: "probe", "add_special_tokens": False},
                    headers=self._headers,
                    timeout=10,
                )
            except httpx.HTTPError:
                continue
            if response.status_code == 200 and "tokens" in response.json():
                return url, field
        return None

    def _tokenizer_count(self, text: str) -> int | None:
        if self._tokenize_route is None:
            return None
        url, field = self._tokenize_route
        body = {"model": self.model_name, field: text, "add_special_tokens": False}
        for attempt in range(self.retry.max_retries + 1):
            try:
                response = httpx.post(url, json=body, headers=self._headers, timeout=30)
                if response.status_code == 200:
                    return len(response.json()["tokens"])
            except httpx.HTTPError:
                pass
            time.sleep(self.retry.delay(attempt))
        raise EngineError(f"{url}: tokenizer endpoint keeps failing")


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _brief(text: str, limit: int = 200) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "..."
