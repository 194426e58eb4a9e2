"""The OpenAI-compatible engine against hostile or broken servers: real HTTP servers on
loopback ports (tests/servers.py ScriptedServer) that echo the key, drip bytes, hang,
send huge or malformed bodies."""

from __future__ import annotations

import json
import time

import pytest

from generator.cli import main
from generator.engines import Request, SamplingParams
from generator.engines.openai import OpenAIEngine, Redactor, RetryPolicy
from generator.errors import EngineError
from tests.helpers import build_args, write
from tests.servers import ScriptedServer, chat_reply, json_reply

SECRET = "sk-test-9c1e77b2d4a84f05"
PASSWORD = "pw-Zq81-hunter2"
QUICK = RetryPolicy(max_retries=1, base_seconds=0.01)
MIX = """\
documents: 2
seed: 5
families: {technical-report: 1}
sampling: {max_tokens: 32}
filters: {min_words: 1, drop_truncated: false}
scores: {quality: null}
judges: {}
"""


def one(engine: OpenAIEngine):
    (completion,) = engine.generate([Request("Write a report.", SamplingParams(seed=1))])
    return completion


def engine_for(server: ScriptedServer, **options) -> OpenAIEngine:
    return OpenAIEngine(server.base_url, "served", **{"retry": QUICK, **options})


def echo_the_key(path, headers, body):
    """What a careless proxy does: put the credentials it was sent into its error."""
    said = headers.get("Authorization", "")
    return json_reply({"error": f"Incorrect API key provided: {said} for {path}"}, status=401)


def test_a_key_echoed_in_a_401_body_reaches_neither_stderr_nor_failures_json(
    monkeypatch, runner, tmp_path
):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with ScriptedServer(echo_the_key) as server:
        url = server.base_url.replace("http://", f"http://alice:{PASSWORD}@")
        out = tmp_path / "out"
        mix = write(tmp_path / "m.yaml", MIX)
        args = build_args(
            mix, out, "--engine", "openai", "--base-url", url, "--model", "served", "-q"
        )
        result = runner.invoke(main, args)
        sent = {headers["Authorization"] for _, headers, _ in server.requests}
    assert sent == {f"Bearer {SECRET}"}  # the key went to the server, as it must
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert 'HTTP 401: {"error": "Incorrect API key provided: Bearer [redacted]' in result.output
    failures = (out / ".work" / "failures.json").read_text()
    assert set(json.loads(failures)) == {"0", "1"}
    for text in (result.output, failures):
        assert SECRET not in text and PASSWORD not in text and "alice" not in text
    everything = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert SECRET.encode() not in everything


def test_no_file_in_the_build_folder_holds_url_credentials(monkeypatch, runner, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with ScriptedServer(echo_the_key) as server:
        url = server.base_url.replace("http://", f"http://alice:{PASSWORD}@")
        out = tmp_path / "out"
        args = build_args(
            write(tmp_path / "m.yaml", MIX),
            out,
            "--engine",
            "openai",
            "--base-url",
            url,
            "--model",
            "served",
            "-q",
        )
        assert runner.invoke(main, args).exit_code == 1
    leaking = [
        p.name for p in out.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()
    ]
    assert leaking == []


def test_url_credentials_become_basic_auth_and_leave_the_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer(echo_the_key) as server:
        url = server.base_url.replace("http://", f"http://alice:{PASSWORD}@")
        engine = OpenAIEngine(url, "served", retry=QUICK)
        completion = one(engine)
        (_, headers, _) = server.requests[0]
    assert engine.base_url == server.base_url
    assert PASSWORD not in repr(engine) and engine.model.name == "served"
    assert headers["Authorization"].startswith("Basic ")
    assert completion.error is not None and "HTTP 401" in completion.error
    assert PASSWORD not in completion.error


def test_a_bad_base_url_does_not_show_its_credentials():
    with pytest.raises(EngineError) as caught:
        OpenAIEngine(f"ftp://alice:{PASSWORD}@host/v1", "served")
    assert (
        str(caught.value)
        == "--base-url: expected an http:// or https:// URL, got 'ftp://[redacted]@host/v1'"
    )


def test_the_redactor_removes_keys_tokens_and_url_credentials():
    redact = Redactor([SECRET, "p%40ss"])
    text = (
        f"key {SECRET}; header Authorization: Bearer abc.def; other sk-live-0123456789; "
        "url https://bob:p%40ss@example.com/v1 and p@ss"
    )
    assert redact(text) == (
        "key [redacted]; header Authorization: Bearer [redacted]; other sk-[redacted]; "
        "url https://[redacted]@example.com/v1 and [redacted]"
    )


def test_a_slow_drip_server_is_cut_off_at_the_deadline():
    def drip(path, headers, body):
        return 200, {"Content-Type": "application/json"}, [b"{", *([0.3, b" "] * 40)]

    with ScriptedServer(drip) as server:
        started = time.monotonic()
        completion = one(engine_for(server, deadline_seconds=1.0))
        elapsed = time.monotonic() - started
    assert completion.error == (
        f"{server.base_url}/chat/completions: no complete answer within 1 s (after 2 attempts)"
    )
    assert elapsed < 6
    assert len(server.requests) == 2


def test_a_server_that_never_answers_is_cut_off_at_the_deadline():
    def hang(path, headers, body):
        time.sleep(4)
        return chat_reply()

    with ScriptedServer(hang) as server:
        started = time.monotonic()
        completion = one(engine_for(server, deadline_seconds=0.5, retry=RetryPolicy(0)))
        assert time.monotonic() - started < 3
    assert completion.error is not None and "no complete answer within 0.5 s" in completion.error


@pytest.mark.parametrize("declare_length", [True, False])
def test_a_huge_answer_is_abandoned_at_the_size_cap(declare_length):
    piece = b"x" * 65536
    pieces = [piece] * 80  # 5 MiB

    def huge(path, headers, body):
        extra = {"Content-Length": str(len(piece) * len(pieces))} if declare_length else {}
        return 200, {"Content-Type": "application/json", **extra}, pieces

    with ScriptedServer(huge) as server:
        completion = one(engine_for(server, max_response_bytes=1024 * 1024))
        assert len(server.requests) == 1  # a final failure: retrying would fetch it again
    assert completion.error == (
        f"{server.base_url}/chat/completions: the answer is larger than 1,048,576 bytes; "
        "stopped reading"
    )


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (chat_reply(content=["a", "list"]), "message.content is a list, not text"),
        (chat_reply(content=42), "message.content is a number, not text"),
        (chat_reply(finish_reason=5), "finish_reason is a number, not text"),
        (chat_reply(usage="many"), "usage is a string, not an object"),
        (chat_reply(usage={"completion_tokens": -3}), "usage.completion_tokens is -3, not a"),
        (
            chat_reply(usage={"completion_tokens": 10**12}),
            "usage.completion_tokens is 1000000000000, not a token count",
        ),
        (chat_reply(usage={"completion_tokens": "7"}), "usage.completion_tokens is '7', not a"),
        (chat_reply(usage={"completion_tokens": 2.5}), "usage.completion_tokens is 2.5, not a"),
        (json_reply({"choices": []}), "malformed response: no choices"),
        (json_reply([1, 2]), "malformed response: no choices"),
        (json_reply({"choices": [{"message": "hi"}]}), "choices[0].message is not an object"),
    ],
)
def test_replies_that_break_the_api_shape_are_recorded_failures(reply, problem):
    with ScriptedServer(lambda path, headers, body: reply) as server:
        completion = one(engine_for(server))
        assert len(server.requests) == 1
    assert completion.finish_reason == "error"
    assert completion.error.startswith(f"{server.base_url}/chat/completions: malformed response")
    assert problem in completion.error


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[" * 100000 + b"]" * 100000])
def test_a_body_that_is_not_json_is_retried_then_recorded(body):
    def garbage(path, headers, _):
        return 200, {"Content-Length": str(len(body))}, [body]

    with ScriptedServer(garbage) as server:
        completion = one(engine_for(server))
        assert len(server.requests) == 2
    assert completion.error == (
        f"{server.base_url}/chat/completions: malformed response (not JSON) (after 2 attempts)"
    )


def test_finish_reason_error_is_retried_and_repetition_counts_as_truncated():
    answers = iter([chat_reply(finish_reason="error"), chat_reply(finish_reason="repetition")])
    with ScriptedServer(lambda path, headers, body: next(answers)) as server:
        completion = one(engine_for(server))
        assert len(server.requests) == 2
    assert (completion.error, completion.finish_reason, completion.n_tokens) == (None, "length", 4)


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "stop"),
        (None, "stop"),
        ("eos", "stop"),
        ("length", "length"),
        ("content_filter", "length"),
    ],
)
def test_finish_reasons_map_to_natural_end_or_truncated(finish, expected):
    with ScriptedServer(lambda path, headers, body: chat_reply(finish_reason=finish)) as server:
        assert one(engine_for(server)).finish_reason == expected


def test_missing_usage_counts_zero_tokens():
    with ScriptedServer(
        lambda path, headers, body: json_reply({"choices": [{"message": {"content": "x"}}]})
    ) as server:
        completion = one(engine_for(server))
    assert (completion.text, completion.n_tokens, completion.finish_reason) == ("x", 0, "stop")


def tokenizer_server(answer):
    def script(path, headers, body):
        if path.endswith("/tokenize"):
            return answer(json.loads(body))
        return 404, {"Content-Length": "0"}, []

    return script


def test_a_tokenizer_that_answers_non_json_is_no_tokenizer():
    with ScriptedServer(tokenizer_server(lambda body: (200, {}, [b"not json"]))) as server:
        engine = engine_for(server)
        assert engine.count_tokens(["one two"]) == [None]


def test_a_tokenizer_answer_without_tokens_is_a_counted_fallback():
    def answer(body):
        if body["prompt"] == "probe":
            return json_reply({"tokens": [1]})
        if body["prompt"] == "broken":
            return json_reply({"count": 3})
        return json_reply({"tokens": body["prompt"].split()})

    with ScriptedServer(tokenizer_server(answer)) as server:
        engine = engine_for(server)
        assert engine.count_tokens(["one two three", "broken", "four"]) == [3, None, 1]
    assert engine.tokenizer_fallbacks == 1


def test_a_tokenizer_that_keeps_failing_is_one_redacted_line(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def answer(body):
        if body["prompt"] == "probe":
            return json_reply({"tokens": [1]})
        return json_reply({"error": f"busy, Bearer {SECRET}"}, status=503)

    with ScriptedServer(tokenizer_server(answer)) as server, pytest.raises(EngineError) as caught:
        engine_for(server).count_tokens(["text"])
    root = server.base_url.removesuffix("/v1")
    assert str(caught.value) == f"{root}/tokenize: HTTP 503: the tokenizer endpoint keeps failing"


def test_the_engine_states_its_reproducibility():
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "served")
    assert engine.reproducibility["mode"] == "server"
    assert "seed" in engine.reproducibility["guarantee"]
