"""The OpenAI-compatible engine against a real llama.cpp server (llama-cpp-python's,
serving the bundled model on a loopback port), directly and through a proxy that
injects 429 and 5xx answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from generator.cli import main
from generator.engines.llamacpp import LlamaCppEngine
from shards.format import is_shard_schema
from tests.helpers import TINY_MIX, build_args, write
from tests.servers import MODEL_ALIAS, FaultProxy, LlamaServer

SECRET = "sk-test-5f1d8c0a9e2b47d6"
# The helpers' tiny mix without judges (a judge run would cost 84 extra requests on the
# bundled model) and with scores kept but never dropping.
NO_JUDGES = TINY_MIX.format(max_tokens=24, max_rows=2) + "judges: {}\nscores: {quality: null}\n"


@pytest.fixture
def tiny_mix(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", NO_JUDGES)


@pytest.fixture(scope="module")
def server():
    server = LlamaServer(api_key=SECRET)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def proxy(server):
    with FaultProxy(server.base_url) as proxy:
        yield proxy


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def openai_args(mix: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return build_args(
        mix,
        out,
        "--engine",
        "openai",
        "--base-url",
        base_url,
        "--model",
        MODEL_ALIAS,
        "-q",
        *extra,
    )


def all_output_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def test_build_through_a_real_server_with_concurrent_requests(
    key, proxy, tiny_mix, tmp_path, runner
):
    out = tmp_path / "out"
    result = runner.invoke(
        main, openai_args(tiny_mix, out, proxy.base_url, "--limit", "6", "--concurrency", "3")
    )
    assert result.exit_code == 0, result.output
    assert f"by openai on {MODEL_ALIAS}" in result.output
    assert proxy.peak_in_flight >= 2
    assert proxy.authorization == {f"Bearer {SECRET}"}

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["engine"], manifest["model"]["name"]) == ("openai", MODEL_ALIAS)
    assert manifest["counts"]["generated"] == 6
    assert "model tokenizer" in manifest["tokens"]["counted_with"]
    rows = [
        r
        for s in manifest["shards"]
        for r in pa.ipc.open_stream(str(out / s["path"])).read_all().to_pylist()
    ]
    assert len(rows) == manifest["counts"]["kept"] > 0
    assert is_shard_schema(pa.ipc.open_stream(str(out / manifest["shards"][0]["path"])).schema)
    # The server's tokenizer is the model's tokenizer: counts match the embedded engine's.
    assert [r["n_tokens"] for r in rows] == LlamaCppEngine().count_tokens([r["text"] for r in rows])
    assert {json.loads(r["sampling"])["seed"] for r in rows} == {r["seed"] for r in rows}
    # The key went to the server and nowhere else.
    assert SECRET not in result.output
    assert SECRET.encode() not in all_output_bytes(out)


def test_429_and_5xx_answers_are_retried_until_they_pass(key, proxy, tiny_mix, tmp_path, runner):
    proxy.faults.extend([429, 500, 503, 429, 502])
    out = tmp_path / "out"
    result = runner.invoke(main, openai_args(tiny_mix, out, proxy.base_url, "--limit", "3"))
    assert result.exit_code == 0, result.output
    assert proxy.injected == [429, 500, 503, 429, 502]
    assert proxy.chat_requests == 3 + 5
    assert json.loads((out / "manifest.json").read_text())["counts"]["generated"] == 3


def test_requests_failing_past_the_last_retry_are_recorded_and_retried_next_run(
    key, proxy, tiny_mix, tmp_path, runner
):
    proxy.faults.extend([500] * 4)  # documents 0 and 1 fail twice each with --max-retries 1
    out = tmp_path / "out"
    args = openai_args(
        tiny_mix,
        out,
        proxy.base_url,
        "--limit",
        "4",
        "--concurrency",
        "1",
        "--chunk-size",
        "4",
        "--max-retries",
        "1",
    )
    failed = runner.invoke(main, args)
    assert failed.exit_code == 1
    message = failed.output.strip()
    assert len(message.splitlines()) == 1
    assert "2 of 4 documents failed after retries (document 0: " in message
    assert "HTTP 500 (after 2 attempts)" in message
    assert json.loads((out / ".work" / "failures.json").read_text()).keys() == {"0", "1"}
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / ".work" / "chunks").iterdir()) == [
        "chunk-000000002-000000004.arrow"
    ]

    retried = runner.invoke(main, args)
    assert retried.exit_code == 0, retried.output
    assert json.loads((out / "manifest.json").read_text())["counts"]["generated"] == 4
    assert not (out / ".work" / "failures.json").exists()


def test_a_wrong_api_key_fails_at_once_without_showing_any_key(
    monkeypatch, server, tiny_mix, tmp_path, runner
):
    monkeypatch.setenv("MY_KEY", "sk-wrong-0000")
    out = tmp_path / "out"
    result = runner.invoke(
        main, openai_args(tiny_mix, out, server.base_url, "--limit", "1", "--api-key-env", "MY_KEY")
    )
    assert result.exit_code == 1
    assert "HTTP 401" in result.output
    assert "sk-wrong-0000" not in result.output and SECRET not in result.output


def test_server_killed_mid_build_then_restarted_and_the_build_resumed(tiny_mix, tmp_path):
    server = LlamaServer(api_key=SECRET)
    server.start()
    out = tmp_path / "out"
    chunks = out / ".work" / "chunks"
    command = [
        sys.executable,
        "-m",
        "generator",
        *openai_args(
            tiny_mix,
            out,
            server.base_url,
            "--limit",
            "5",
            "--chunk-size",
            "1",
            "--max-retries",
            "2",
        ),
    ]
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    try:
        build = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while not (chunks.is_dir() and any(chunks.iterdir())):
            assert time.monotonic() < deadline and build.poll() is None
            time.sleep(0.05)
        server.kill()
        _, stderr = build.communicate(timeout=120)
        assert build.returncode == 1
        assert "documents failed after retries" in stderr and "run the same command again" in stderr
        assert SECRET not in stderr
        survivors = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
        assert 1 <= len(survivors) < 5

        server.start()
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        for name, mtime in survivors.items():
            assert (chunks / name).stat().st_mtime_ns == mtime
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["generated"] == 5
        assert SECRET.encode() not in all_output_bytes(out)
    finally:
        server.kill()
