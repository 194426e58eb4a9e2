"""Any OpenAI-compatible server: `vllm serve`, SGLang, llama.cpp's servers, hosted endpoints.

Requests go out concurrently (bounded by `concurrency`), each carrying its
document's seed. Timeouts, connection failures, 429 and 5xx are retried with
exponential backoff and full jitter, honouring `Retry-After`; a request that
still fails comes back as a `Completion` with `error` set, so the build can
record it and retry it on the next run instead of dropping it.

A server is not trusted: each attempt has a total deadline (a server that
drips one byte a minute cannot hold a build), each body is read in pieces and
abandoned past `max_response_bytes`, and every field of a reply is checked
(text is text, token counts are counts) before it becomes a document.

The API key is read from an environment variable at construction and only ever
placed in the Authorization header; credentials in `--base-url`
(`http://user:secret@host`) become basic auth and are removed from the URL.
Every error string the engine produces passes through one `Redactor`, so a
server that echoes the key back (`Incorrect API key provided: Bearer sk-...`)
cannot put it in an error message, `failures.json` or a log.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from generator.engines import (
    ChoiceRequest,
    Completion,
    EngineBase,
    EngineConfig,
    ModelInfo,
    Request,
)
from generator.errors import EngineError
from generator.validators import is_int

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # a 100,000-token completion is under 1 MiB of JSON
MAX_USAGE_TOKENS = 10**9
NATURAL_ENDS = {None, "stop", "eos", "eos_token", "stop_sequence", "end_turn"}
RETRYABLE_ENDS = {"abort", "error"}  # vLLM: aborted, or a retryable request-level error


class Redactor:
    """Removes secrets from any text the engine shows or stores: the key itself, URL
    credentials, and anything that looks like a bearer token or an `sk-` key, whatever
    the server chose to echo."""

    _USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
    _BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")
    _KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")

    def __init__(self, secrets: Iterable[str]) -> None:
        found = {s for secret in secrets if secret for s in (secret, unquote(secret))}
        self.secrets = sorted((s for s in found if len(s) >= 3), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        text = self._USERINFO.sub(r"\1[redacted]@", text)
        text = self._BEARER.sub("Bearer [redacted]", text)
        return self._KEY_LIKE.sub("sk-[redacted]", text)


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
        deadline_seconds: float = 300.0,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        key = os.environ.get(api_key_env, "")
        self.base_url, username, password = _split_credentials(base_url, Redactor([key]))
        self.redact = Redactor([key, password])
        if not model:
            raise EngineError("--model: the openai engine needs the served model's name")
        self.model_name = model
        self.concurrency = concurrency
        self.deadline = deadline_seconds
        self.timeout = httpx.Timeout(deadline_seconds, connect=min(10.0, deadline_seconds))
        self.max_response_bytes = max_response_bytes
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._auth = httpx.BasicAuth(username, password) if username and not key else None
        self.tokenizer_fallbacks = 0  # texts the server's tokenizer could not count

    def __repr__(self) -> str:  # never show the headers
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model_name!r})"

    @cached_property
    def model(self) -> ModelInfo:
        """A served model is known by its name; the server owns the weights, so no digest."""
        return ModelInfo(name=self.model_name, sha256="")

    @property
    def reproducibility(self) -> dict[str, str]:
        """What the manifest can promise about re-running: only what the server promises."""
        return {
            "mode": "server",
            "guarantee": "each request carries its document's seed; the same text comes back "
            "only as far as the server makes sampling reproducible",
        }

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return asyncio.run(self._generate_all(requests))

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.timeout,
            headers=self._headers,
            auth=self._auth,
            limits=httpx.Limits(max_connections=self.concurrency),
        )

    async def _generate_all(self, requests: Sequence[Request]) -> list[Completion]:
        limit = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:

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
                return _failed(self.redact(str(exc)))
        attempts = self.retry.max_retries + 1
        return _failed(self.redact(f"{last} (after {attempts} attempts)"))

    async def _post(
        self, client: httpx.AsyncClient, url: str, body: dict[str, Any]
    ) -> tuple[int, httpx.Headers, bytes]:
        """One POST within the deadline, its body read in pieces up to the size cap."""
        try:
            return await asyncio.wait_for(self._read(client, url, body), self.deadline)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise RequestFailed(f"{url}: no complete answer within {self.deadline:g} s") from None
        except httpx.TransportError as exc:
            raise RequestFailed(f"{url}: {type(exc).__name__}") from None

    async def _read(
        self, client: httpx.AsyncClient, url: str, body: dict[str, Any]
    ) -> tuple[int, httpx.Headers, bytes]:
        cap = self.max_response_bytes
        too_big = EngineError(f"{url}: the answer is larger than {cap:,} bytes; stopped reading")
        async with client.stream("POST", url, json=body) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise too_big
            pieces: list[bytes] = []
            size = 0
            async for piece in response.aiter_bytes():
                size += len(piece)
                if size > cap:
                    raise too_big
                pieces.append(piece)
            return response.status_code, response.headers, b"".join(pieces)

    async def _chat(self, client: httpx.AsyncClient, request: Request) -> Completion:
        params = request.params
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": request.messages(),
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
        status, headers, raw = await self._post(client, url, body)
        if status in RETRYABLE_STATUS:
            raise RequestFailed(f"{url}: HTTP {status}", _retry_after(headers))
        if status != 200:
            text = raw[:4096].decode("utf-8", "replace")
            raise EngineError(f"{url}: HTTP {status}: {_brief(text)}")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise RequestFailed(f"{url}: malformed response (not JSON)") from None
        return _parse_chat(url, data)

    def close(self) -> None:
        """Nothing held between calls."""

    # -- token counting ------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int | None]:
        """Counted by the server's tokenizer where it offers an endpoint for it
        (vLLM's `/tokenize`, llama-cpp-python's `/extras/tokenize`); None otherwise,
        and the build keeps the server's usage count for the uncleaned completion.
        An answer without a token list is a counted fallback (`tokenizer_fallbacks`)."""
        if not texts or self._tokenize_route is None:
            return [None] * len(texts)
        return asyncio.run(self._count_all(texts))

    @cached_property
    def _tokenize_route(self) -> tuple[str, str] | None:
        return asyncio.run(self._probe_tokenizer())

    async def _probe_tokenizer(self) -> tuple[str, str] | None:
        root = self.base_url.removesuffix("/v1")
        async with self._client() as client:
            for url, field in (
                (f"{root}/tokenize", "prompt"),
                (f"{root}/extras/tokenize", "input"),
            ):
                body = {"model": self.model_name, field: "probe", "add_special_tokens": False}
                try:
                    status, _, raw = await self._post(client, url, body)
                except (RequestFailed, EngineError):
                    continue
                if status == 200 and _token_count(raw) is not None:
                    return url, field
        return None

    async def _count_all(self, texts: Sequence[str]) -> list[int | None]:
        limit = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:

            async def one(text: str) -> int | None:
                async with limit:
                    return await self._count_one(client, text)

            return list(await asyncio.gather(*(one(t) for t in texts)))

    async def _count_one(self, client: httpx.AsyncClient, text: str) -> int | None:
        assert self._tokenize_route is not None
        url, field = self._tokenize_route
        body = {"model": self.model_name, field: text, "add_special_tokens": False}
        last = ""
        for attempt in range(self.retry.max_retries + 1):
            try:
                status, _, raw = await self._post(client, url, body)
            except RequestFailed as exc:
                last = str(exc)
            except EngineError:  # an answer over the size cap is not a count
                return self._fallback()
            else:
                if status not in RETRYABLE_STATUS:
                    count = _token_count(raw) if status == 200 else None
                    return self._fallback() if count is None else count
                last = f"{url}: HTTP {status}"
            if attempt < self.retry.max_retries:
                await asyncio.sleep(self.retry.delay(attempt))
        raise EngineError(self.redact(f"{last}: the tokenizer endpoint keeps failing"))

    def _fallback(self) -> None:
        self.tokenizer_fallbacks += 1

    def option_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[dict[str, float]]:
        """Each option letter's log-probability as the reply's first token, from the chat
        endpoint's `logprobs` (one token, temperature 0, the top 20 alternatives); "A" and
        " A" both count as "A", the better one wins, and a letter outside the top 20 gets
        -inf. A request that keeps failing stops the eval with one line: a missing answer
        must not pass for a tie."""
        url = f"{self.base_url}/chat/completions"

        async def ask(
            client: httpx.AsyncClient, limit: asyncio.Semaphore, request: ChoiceRequest
        ) -> dict[str, float]:
            body = {
                "model": self.model_name,
                "messages": [
                    {"role": "system", "content": request.system},
                    {"role": "user", "content": request.prompt},
                ],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": 20,
            }
            last = ""
            for attempt in range(self.retry.max_retries + 1):
                try:
                    async with limit:
                        status, headers, raw = await self._post(client, url, body)
                    if status in RETRYABLE_STATUS:
                        raise RequestFailed(f"{url}: HTTP {status}", _retry_after(headers))
                    if status != 200:
                        text = _brief(raw[:4096].decode("utf-8", "replace"))
                        raise EngineError(self.redact(f"{url}: HTTP {status}: {text}"))
                    try:
                        top = json.loads(raw)["choices"][0]["logprobs"]["content"][0]
                        pairs = [
                            (str(t["token"]).strip(), float(t["logprob"]))
                            for t in top["top_logprobs"]
                        ]
                    except (ValueError, RecursionError, KeyError, IndexError, TypeError):
                        raise EngineError(
                            f"{url}: the answer has no top_logprobs (does the server support "
                            "logprobs on chat completions?)"
                        ) from None
                    return {
                        o: max((lp for token, lp in pairs if token == o), default=float("-inf"))
                        for o in request.options
                    }
                except RequestFailed as exc:
                    last = str(exc)
                    if attempt < self.retry.max_retries:
                        await asyncio.sleep(self.retry.delay(attempt, exc.retry_after))
            attempts = self.retry.max_retries + 1
            raise EngineError(self.redact(f"{last} (after {attempts} attempts)"))

        async def ask_all() -> list[dict[str, float]]:
            limit = asyncio.Semaphore(self.concurrency)
            async with self._client() as client:
                return list(await asyncio.gather(*(ask(client, limit, r) for r in requests)))

        return asyncio.run(ask_all())


def _split_credentials(base_url: str, redact: Redactor) -> tuple[str, str, str]:
    """The base URL without `user:password@`, and the credentials it carried."""
    try:
        parts = urlsplit(base_url)
        valid = parts.scheme in {"http", "https"} and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        shown = Redactor._USERINFO.sub(r"\1[redacted]@", redact(base_url))
        raise EngineError(f"--base-url: expected an http:// or https:// URL, got {shown!r}")
    netloc = parts.netloc.rpartition("@")[2]
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    return clean.rstrip("/"), username, password


def _parse_chat(url: str, data: Any) -> Completion:
    """Check every field a document is made from; a reply that breaks the API's shape is
    a recorded failure, never a traceback or a document built from garbage."""

    def bad(what: str) -> EngineError:
        return EngineError(f"{url}: malformed response: {what}")

    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise bad("choices[0].message is not an object")
    text = message.get("content")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise bad(f"message.content is {_json_kind(text)}, not text")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise bad(f"finish_reason is {_json_kind(finish)}, not text")
    if finish in RETRYABLE_ENDS:
        raise RequestFailed(f"{url}: the server ended the request with finish_reason {finish!r}")
    usage = data.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise bad(f"usage is {_json_kind(usage)}, not an object")
    tokens = usage.get("completion_tokens")
    if tokens is None:
        tokens = 0
    if not is_int(tokens) or not 0 <= tokens <= MAX_USAGE_TOKENS:
        raise bad(f"usage.completion_tokens is {_brief(repr(tokens), 40)}, not a token count")
    # A natural end is `stop`; anything else that ended the text early (length, vLLM's
    # `repetition`, a content filter) leaves it unfinished: treated as truncated.
    return Completion(
        text=text, n_tokens=tokens, finish_reason="stop" if finish in NATURAL_ENDS else "length"
    )


def _token_count(raw: bytes) -> int | None:
    """The length of a tokenizer endpoint's `tokens` list, or None for any other answer."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    return len(tokens) if isinstance(tokens, list) else None


def _failed(error: str) -> Completion:
    return Completion(text="", n_tokens=0, finish_reason="error", error=error)


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else "a string")


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return max(0.0, seconds) if seconds is not None and seconds == seconds else None


def _brief(text: str, limit: int = 200) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "..."
