"""A fake OpenAI-compatible chat endpoint on 127.0.0.1 for fault tests.

It speaks the chat-completions SSE format (`data: {...}` events, a final chunk with a
`finish_reason`, then `data: [DONE]`) over HTTP/1.1 chunked transfer, like llama.cpp's server,
vLLM or Ollama do. Each request takes the next behaviour from a script (the last one repeats), so
a test can say "500, 500, then answer" and count what the client really sent.

Behaviours:
    "ok"          stream `reply` word by word, then finish_reason "stop" and [DONE]
    int status    answer that HTTP status with an OpenAI-style JSON error body
    "break"       stream the first `break_after` words, then drop the connection mid-chunk
    "eof"         stream the first `break_after` words, then end the body cleanly but without a
                  finish_reason or [DONE] (a server that died between two events)
    "trickle"     one word every `trickle_interval` seconds, forever (until the client leaves)
    "keepalive"   SSE comment lines every `trickle_interval` seconds, forever: bytes flow but no
                  event ever arrives
    "stall"       read the request, then say nothing at all until the client leaves
    "garbage"     a `data:` line that is not JSON
    "error_event" a 200 stream whose first event is {"error": {...}}

Every loop is bounded (`max_seconds`) and stops when the server is closed, so no test can leave
a thread sending forever.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Behaviour = str | int


@dataclass
class Attempt:
    """What the server saw of one request."""

    path: str
    at: float
    body: dict
    authorization: str | None


@dataclass
class FakeOpenAI:
    """Start with `with FakeOpenAI(script=[...]) as server:`; `server.base_url` ends in /v1."""

    script: list[Behaviour] = field(default_factory=lambda: ["ok"])
    reply: str = "Hekla erupted in 1947 [1]."
    break_after: int = 2
    trickle_interval: float = 0.1
    max_seconds: float = 30.0
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        return len(self.attempts)

    def _next(self, attempt: Attempt) -> Behaviour:
        with self._lock:
            index = len(self.attempts)
            self.attempts.append(attempt)
            return self.script[min(index, len(self.script) - 1)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeOpenAI

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (keep test output clean)
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        behaviour = fake._next(
            Attempt(self.path, time.monotonic(), body, self.headers.get("Authorization"))
        )
        try:
            self._serve(fake, behaviour)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client left; that is what several behaviours are waiting for
        self.close_connection = True

    def _serve(self, fake: FakeOpenAI, behaviour: Behaviour) -> None:
        if isinstance(behaviour, int):
            payload = json.dumps(
                {"error": {"message": f"fake error {behaviour}", "type": "fake", "code": behaviour}}
            ).encode()
            self.send_response(behaviour)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            return
        if behaviour == "stall":
            self._wait(fake, fake.max_seconds)
            return
        if behaviour == "eof":
            # HTTP/1.0-style body: no chunking, no length; closing the socket ends it cleanly.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for word in _words(fake.reply)[: fake.break_after]:
                self.wfile.write(_event(_chunk(word)))
            self.wfile.flush()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._send(_event(_chunk(None, role="assistant")))
        if behaviour == "ok":
            for word in _words(fake.reply):
                self._send(_event(_chunk(word)))
            self._send(_event(_chunk(None, finish="stop")))
            self._send(b"data: [DONE]\n\n")
            self._send(b"")
        elif behaviour == "break":
            for word in _words(fake.reply)[: fake.break_after]:
                self._send(_event(_chunk(word)))
            # Half a chunk, then the connection goes away: the client sees a truncated body.
            self.wfile.write(b"40\r\ndata: {\"trunc")
            self.wfile.flush()
        elif behaviour in ("trickle", "keepalive"):
            started = time.monotonic()
            n = 0
            while not fake._stop.is_set() and time.monotonic() - started < fake.max_seconds:
                if behaviour == "trickle":
                    self._send(_event(_chunk(f"w{n} ")))
                else:
                    self._send(b": keep-alive\n\n")
                n += 1
                fake._stop.wait(fake.trickle_interval)
        elif behaviour == "garbage":
            self._send(b"data: {this is not json\n\n")
            self._send(b"")
        elif behaviour == "error_event":
            self._send(_event({"error": {"message": "the model crashed", "type": "server_error"}}))
            self._send(b"")
        else:
            raise ValueError(f"unknown behaviour {behaviour!r}")

    def _send(self, data: bytes) -> None:
        """One HTTP/1.1 chunk (an empty one ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _wait(self, fake: FakeOpenAI, seconds: float) -> None:
        """Hold the connection open without a byte until the client or the server gives up."""
        import select

        end = time.monotonic() + seconds
        while not fake._stop.is_set() and time.monotonic() < end:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable and not self.connection.recv(1):
                return  # the client closed its side


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


def _chunk(content: str | None, *, role: str | None = None, finish: str | None = None) -> dict:
    delta: dict = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _event(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"
