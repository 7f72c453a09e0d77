"""A tiny real HTTP server speaking the OpenAI chat-completions protocol, for tests.

It listens on 127.0.0.1 on a free port and answers ``POST /v1/chat/completions`` from a script
of :class:`Reply` objects (first in, first out; the ``default`` reply once the script is used up),
so a test can make the server fail in a chosen way (500, 429 with ``Retry-After``, a malformed
body, a slow answer) and watch what the client does. Every request body is kept in ``requests``.

Example::

    with OpenAIServer() as server:
        server.script(Reply.error(500), Reply.ok("hello"))
        llm = LLM("openai/test-model", api_base=server.base_url, api_key="sk-test")
"""

from __future__ import annotations

import collections
import dataclasses
import http.server
import json
import threading
from typing import Any


@dataclasses.dataclass
class Reply:
    """One scripted HTTP answer.

    Args:
        status: The HTTP status code.
        body: The raw response body.
        headers: Extra response headers.
        delay_s: Seconds to wait before answering (cut short when the server stops).
    """

    status: int
    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0

    @classmethod
    def ok(cls, content: str, *, prompt_tokens: int = 11, completion_tokens: int = 7) -> Reply:
        """A successful chat completion whose message content is ``content``."""
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return cls(200, json.dumps(payload).encode())

    @classmethod
    def error(cls, status: int, *, headers: dict[str, str] | None = None) -> Reply:
        """An OpenAI-style error answer with the given status."""
        payload = {
            "error": {"message": f"scripted {status}", "type": "server_error", "code": None}
        }
        return cls(status, json.dumps(payload).encode(), headers=dict(headers or {}))

    @classmethod
    def malformed(cls) -> Reply:
        """A 200 answer whose body is not JSON."""
        return cls(200, b"this is not json {")

    @classmethod
    def slow(cls, content: str, delay_s: float) -> Reply:
        """A successful answer sent only after ``delay_s`` seconds."""
        return dataclasses.replace(cls.ok(content), delay_s=delay_s)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_POST(self) -> None:  # noqa: N802 (name fixed by http.server)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        owner = self.server.owner
        reply = owner._record_and_pop(
            raw, {name.lower(): value for name, value in self.headers.items()}
        )
        if reply.delay_s > 0:
            owner._stopping.wait(reply.delay_s)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: OpenAIServer


class OpenAIServer:
    """A scripted OpenAI-compatible server on 127.0.0.1 and a free port, run in a thread.

    Attributes:
        requests: The JSON bodies received, in order.
        request_headers: The headers received, in order (names lower-cased: HTTP header names
            are case-insensitive, and clients differ).
        default: The reply used once the script is empty.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.default: Reply = Reply.ok('{"reasoning": "ok", "suggestion": {}}')
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """The ``api_base`` to give litellm, e.g. ``http://127.0.0.1:54321/v1``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies to send, first in, first out."""
        with self._lock:
            self._script.extend(replies)

    def _record_and_pop(self, raw: bytes, headers: dict[str, str]) -> Reply:
        with self._lock:
            try:
                self.requests.append(json.loads(raw or b"{}"))
            except json.JSONDecodeError:
                self.requests.append({"_raw": raw.decode(errors="replace")})
            self.request_headers.append(headers)
            return self._script.popleft() if self._script else self.default

    def start(self) -> OpenAIServer:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; slow replies are cut short."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
