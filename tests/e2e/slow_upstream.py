"""An upstream that is healthy but slow to start its answers: each POST waits until the test
releases it, then streams one short chat completion. It stands in for a busy vLLM behind the
proxy under test, so that clients can leave while the proxy still waits for the upstream."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

HOLD_AT_MOST_S = 60.0


class SlowUpstream:
    """Counts the POSTs that arrived; `release` lets every held and later one be answered."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._arrived = 0
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def arrived(self) -> int:
        with self._changed:
            return self._arrived

    def wait_for_arrivals(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._arrived < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{self._arrived} of {count} requests reached the upstream"
                self._changed.wait(left)

    def _arrive(self) -> None:
        with self._changed:
            self._arrived += 1
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:  # keep the test output clean
                pass

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                with contextlib.suppress(OSError):  # the proxy may have hung up meanwhile
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_GET(self) -> None:
                body = b'{"object": "list", "data": []}' if self.path == "/v1/models" else b"{}"
                self._answer(200, "application/json", body)

            def do_POST(self) -> None:
                request = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                upstream._arrive()
                upstream.release.wait(HOLD_AT_MOST_S)
                chunk = {
                    "object": "chat.completion.chunk",
                    "model": request.get("model"),
                    "choices": [{"index": 0, "delta": {"content": "late"}, "finish_reason": "stop"}],
                }
                events = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
                self._answer(200, "text/event-stream", events)

        return Handler

    @contextlib.contextmanager
    def serving(self) -> Iterator[SlowUpstream]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
