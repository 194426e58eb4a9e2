"""Real servers for the OpenAI engine tests: llama-cpp-python's OpenAI-compatible
server on the bundled model, and a small fault-injecting proxy in front of it."""

from __future__ import annotations

import collections
import http.server
import socket
import subprocess
import sys
import threading
import time

import httpx

from generator.engines import bundled_model_path

MODEL_ALIAS = "smollm2-135m"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on a loopback port; restartable on the same port."""

    def __init__(self, api_key: str, port: int | None = None) -> None:
        self.api_key = api_key
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(bundled_model_path()),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                "4096",
                "--api_key",
                self.api_key,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("llama_cpp.server exited during start-up")
            try:
                if (
                    httpx.get(f"{self.base_url}/models", headers=headers, timeout=2).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("llama_cpp.server did not come up in time")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class FaultProxy:
    """Forwards to an upstream server, answering the next chat requests with injected
    statuses first (e.g. 429, 500), and recording how many requests were in flight at once."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: collections.deque[int] = collections.deque()
        self.injected: list[int] = []
        self.chat_requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.authorization: set[str] = set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = proxy.forward(self.path, body, self.headers)
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def forward(self, path: str, body: bytes, headers) -> tuple[int, bytes]:
        chat = path.endswith("/chat/completions")
        with self._lock:
            self.authorization.add(headers.get("Authorization", ""))
            if chat:
                self.chat_requests += 1
                if self.faults:
                    status = self.faults.popleft()
                    self.injected.append(status)
                    return status, b'{"error": "injected"}'
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            upstream_path = path.removeprefix("/v1")
            root = self.upstream.removesuffix("/v1")
            url = f"{self.upstream}{upstream_path}" if path.startswith("/v1") else f"{root}{path}"
            response = httpx.post(
                url,
                content=body,
                headers={
                    "Authorization": headers.get("Authorization", ""),
                    "Content-Type": "application/json",
                },
                timeout=600,
            )
            return response.status_code, response.content
        except httpx.HTTPError:
            return 502, b'{"error": "upstream unreachable"}'
        finally:
            if chat:
                with self._lock:
                    self.in_flight -= 1

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScriptedServer:
    """A stdlib HTTP server on a loopback port whose every answer comes from `script`, a
    function of (path, headers, body) returning (status, headers, pieces): for fault
    injection the real servers cannot do on demand (echoing the key, dripping bytes,
    huge or malformed bodies). A piece that is a float is a pause in seconds, so a
    test can stream slowly; every request is recorded in `requests`."""

    def __init__(self, script) -> None:
        self.script = script
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = dict(self.headers.items())
                server.requests.append((self.path, headers, body))
                status, extra, pieces = server.script(self.path, headers, body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                if "Content-Length" not in extra:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for piece in pieces:
                        if isinstance(piece, float):
                            time.sleep(piece)
                        else:
                            self.wfile.write(piece)
                            self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_reply(payload, status: int = 200, **headers: str):
    """One complete JSON answer for a ScriptedServer script."""
    import json

    body = json.dumps(payload).encode()
    return (
        status,
        {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers},
        [body],
    )


def chat_reply(content="A finished document.", finish_reason="stop", usage=None):
    """A chat completion answer in the OpenAI shape, each field overridable."""
    return json_reply(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"completion_tokens": 4} if usage is None else usage,
        }
    )
