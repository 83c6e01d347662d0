"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 (what OpenAI, Ollama, vLLM and
llama.cpp's server answer on ``POST /v1/chat/completions``).

Contract: JSON ``{model, messages: [{role, content}], stream?, temperature?, max_tokens?}``; a
missing model or messages, an unknown role or a non-string content is a 400
``{"error": {message, type, code}}``. ``stream: true`` answers ``text/event-stream``: a first
chunk with ``delta: {role: "assistant"}``, then one ``data: {"id", "object":
"chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": token}, "finish_reason":
null}]}`` per token (``server.token_delay_s`` apart), a last chunk with ``finish_reason: "stop"``,
a usage-only chunk with ``choices: []``, and ``data: [DONE]``. Without stream: one JSON
``chat.completion``.

The reply is ``server.reply(messages)`` (default: "You said: <last user text>. " and a fixed
second sentence), cut into word tokens. Scripted behaviour per request (``server.script``, consumed
in order): ``("status", code, headers)`` (e.g. 429 with Retry-After, 500), ``("stall", n_tokens,
seconds)`` (the stream stops after n tokens and hangs), ``("garbage",)`` (events that are not
JSON), ``("html",)`` (a 200 HTML page), ``("error_event", n_tokens)`` (an ``error`` object in the
stream after n tokens). With ``api_key`` set, requests need ``Authorization: Bearer <key>``
(a wrong key is a 401 that echoes it, as real APIs do).
"""
from __future__ import annotations

import json
import re
import time

from loopback import LoopbackServer, QuietHandler

ROLES = {"system", "user", "assistant", "tool", "developer"}


def default_reply(messages: list[dict]) -> str:
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return f"You said: {last}. That is a fine thing to say, and I am glad you said it."


def word_tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


class FakeChat(LoopbackServer):
    def __init__(self, api_key: str | None = None):
        super().__init__(_Handler)
        self.api_key = api_key
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        self.headers_seen: list[dict] = []
        self.token_delay_s = 0.0
        self.reply = default_reply
        self.streams_open = 0

    @property
    def url(self) -> str:
        return self.origin + "/v1"


class _Handler(QuietHandler):
    server: FakeChat

    def _error(self, status: int, message: str, etype: str = "invalid_request_error", headers: dict | None = None) -> None:
        self.send_json(status, {"error": {"message": message, "type": etype, "param": None, "code": None}}, headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        srv = self.server
        with srv.lock:
            srv.headers_seen.append(dict(self.headers.items()))
            step = srv.script.pop(0) if srv.script else None
        if self.path != "/v1/chat/completions":
            return self._error(404, f"Invalid URL (POST {self.path})")
        if srv.api_key is not None:
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {srv.api_key}":
                return self._error(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.", "invalid_request_error")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        with srv.lock:
            srv.requests.append(body)
        if not isinstance(body.get("model"), str) or not body["model"]:
            return self._error(400, "you must provide a model parameter")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return self._error(400, "Missing required parameter: 'messages'.")
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                return self._error(400, f"Invalid message: {json.dumps(m)[:80]}")
        if step is not None and step[0] == "status":
            msg = "Rate limit reached" if step[1] == 429 else "The server had an error while processing your request."
            return self._error(step[1], msg, "requests" if step[1] == 429 else "server_error", step[2] if len(step) > 2 else {})
        reply = srv.reply(msgs)
        if step is not None and step[0] == "html":
            page = b"<html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if not body.get("stream"):
            return self.send_json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": body["model"],
                                        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                                     "finish_reason": "stop"}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with srv.lock:
            srv.streams_open += 1
        try:
            self._stream(body["model"], reply, step)
        finally:
            with srv.lock:
                srv.streams_open -= 1

    def _event(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self._chunk(b"data: " + data + b"\n\n")

    def _stream(self, model: str, reply: str, step: tuple | None) -> None:
        srv = self.server
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        if step is not None and step[0] == "garbage":
            self._event(b"<<not json>>")
            self._chunk(b"")
            return
        self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for n, tok in enumerate(word_tokens(reply)):
            if step is not None and step[0] == "stall" and n >= step[1]:
                time.sleep(step[2])
                self.close_connection = True
                return
            if step is not None and step[0] == "error_event" and n >= step[1]:
                self._event({"error": {"message": "The model overloaded while answering", "type": "server_error"}})
                self._chunk(b"")
                return
            self._event({**base, "choices": [{"index": 0, "delta": {"content": tok}, "finish_reason": None}]})
            if srv.token_delay_s:
                time.sleep(srv.token_delay_s)
        self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event({**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
        self._event(b"[DONE]")
        self._chunk(b"")
