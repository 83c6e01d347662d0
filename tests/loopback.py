"""What every loopback fake HTTP server of the tests shares: a threaded server on 127.0.0.1 at a
free port, served from a daemon thread for the life of a ``with`` block, and a quiet handler that
answers JSON, and a log of the requests a fake answered. The fakes (hub, storage, OpenAI,
ElevenLabs, chat) add only their API's contract."""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout, Cancel) or closed its keep-alive socket leaves a broken
        pipe or a reset: expected here, not noise."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


class RequestLog:
    """The requests a fake answered (anything with ``method`` and ``path``), appended from its
    handler threads under ``_lock``, which the fake may take for its own state too."""

    def __init__(self) -> None:
        self.requests: list = []
        self._lock = threading.Lock()

    def log(self, request) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, method: str | None = None, contains: str = "") -> int:
        """How many requests matched ``method`` and contain ``contains`` in their path."""
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method) and contains in r.path)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
