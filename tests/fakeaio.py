"""The base of the streaming-avatar fakes (LiveAvatar, HeyGen, D-ID): an aiohttp app on 127.0.0.1 in
its own thread and event loop (so the fakes can hold WebSockets and aiortc peers), every request
captured, and scripted failures.

``server.fail(path_prefix, status, body=None, headers=None, times=1)`` makes the next ``times``
requests whose path starts with ``path_prefix`` answer ``status`` (a 429 with ``Retry-After``, a
503...) with the provider's own error shape; ``server.requests`` lists ``Captured`` requests;
``server.down()`` stops answering (connections refused: the network dropped), ``server.up()``
answers again on the same port.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web


CAP = web.RequestKey("cap", object) if hasattr(web, "RequestKey") else "cap"


def fake_secret(prefix: str, tag: str) -> str:
    """A made-up key-shaped string, built at run time; it opens nothing anywhere."""
    return prefix + (tag.encode().hex() + secrets.token_hex(16))[:40]


@dataclass
class Captured:
    method: str
    path: str
    query: dict
    headers: dict
    json: Any = None
    form: dict = field(default_factory=dict)


class FakeAio:
    """Subclasses add routes in :meth:`routes` and the provider's error shape in :meth:`error_body`."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"fake-{type(self).__name__}", daemon=True)
        self.requests: list[Captured] = []
        self.lock = threading.Lock()
        self._failures: list[list] = []
        self.port = 0
        self._runner = None
        self._site = None

    # -- to override -------------------------------------------------------------------------
    def routes(self) -> list:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict:
        return {"message": message}

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn: Callable, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def __enter__(self):
        self.thread.start()
        app = web.Application(middlewares=[self._middleware], client_max_size=32 * 1024 * 1024)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app)
        self.call(self._runner.setup())
        self.up()
        return self

    def up(self) -> None:
        async def start():
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await self._site.start()
            return self._site._server.sockets[0].getsockname()[1]

        self.port = self.call(start())

    def down(self) -> None:
        """Stop listening and cut every open connection (kept-alive HTTP, WebSockets) without a
        goodbye, as a network that drops does: the provider is unreachable."""
        async def stop():
            await self._site.stop()
            server = self._runner.server
            for handler in list(getattr(server, "connections", [])):
                transport = getattr(handler, "transport", None)
                if transport is not None:
                    transport.abort()

        self.call(stop())

    def __exit__(self, *exc) -> None:
        try:
            self.call(self.shutdown())
            self.call(self._runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    async def shutdown(self) -> None:
        """Subclasses close their peers and sockets here."""

    def fail(self, path_prefix: str, status: int, body: dict | None = None, headers: dict | None = None,
             times: int = 1) -> None:
        with self.lock:
            self._failures.append([path_prefix, status, body, headers or {}, times])

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[Captured]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        cap = Captured(request.method, request.path, dict(request.query), dict(request.headers))
        if request.content_type == "application/json" and request.can_read_body:
            raw = await request.read()
            try:
                cap.json = json.loads(raw) if raw else None
            except ValueError:
                return web.json_response(self.error_body(400, "the body is not valid JSON"), status=400)
        elif request.content_type.startswith("multipart/") and request.can_read_body:
            form = await request.post()
            cap.form = {k: (v.filename, v.content_type, v.file.read()) if hasattr(v, "file") else v for k, v in form.items()}
        request[CAP] = cap
        with self.lock:
            self.requests.append(cap)
            hit = next((f for f in self._failures if request.path.startswith(f[0])), None)
            if hit is not None:
                hit[4] -= 1
                if hit[4] <= 0:
                    self._failures.remove(hit)
        if hit is not None:
            _, status, body, headers, _ = hit
            return web.json_response(body if body is not None else self.error_body(status, f"scripted error {status}"),
                                     status=status, headers=headers)
        return await handler(request)


def bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else ""
