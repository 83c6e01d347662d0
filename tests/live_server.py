"""An aiohttp server on loopback carrying the live routes (server/live_routes.py) in its own thread
and event loop, and a Python WebRTC viewer (aiortc) for the tests.

The routes are the very handlers ComfyUI gets; only the app around them is a plain aiohttp one here,
so the WebRTC path is tested without starting ComfyUI (the browser tests run it inside ComfyUI)."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np


class RouteServer:
    def __init__(self, routes):
        from aiohttp import web

        self.routes = routes
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-live-server", daemon=True)
        self.thread.start()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(routes.table())
        self.runner = web.AppRunner(app)

        async def start():
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def down():
            await self.routes.close_all_viewers()
            await self.runner.cleanup()

        try:
            self.call(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def http(method: str, url: str, body=None, ctype: str = "application/json", timeout: float = 60) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": ctype} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read() or b"{}"
        try:
            return e.code, json.loads(raw)
        except ValueError:  # aiohttp's own 404 for a path no route matches
            return e.code, {"error": raw.decode(errors="replace")}


class PyViewer:
    """A WebRTC viewer: offers recvonly video + audio, records every decoded frame with its arrival time."""

    def __init__(self, base: str, sid: str):
        self.base, self.sid = base, sid
        self.video: list[tuple[float, np.ndarray]] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self.tasks: list[asyncio.Task] = []
        self.pc = None
        self.viewer_id = None

    async def connect(self, timeout: float = 60) -> None:
        import aiohttp
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{self.base}/digitalhuman/live/s/{self.sid}/connect",
                              json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                body = await r.json()
                assert r.status == 200, body
        self.viewer_id = body["viewer"]
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
        t0 = time.monotonic()
        while pc.connectionState != "connected":
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"WebRTC did not connect ({pc.connectionState})")
            await asyncio.sleep(0.05)

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                f = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.video.append((now, f.to_ndarray(format="rgb24")))
                else:
                    self.audio.append((now, f.to_ndarray().astype(np.float32).reshape(-1) / 32768.0))
        except (MediaStreamError, asyncio.CancelledError):
            return

    async def ping(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            await s.post(f"{self.base}/digitalhuman/live/s/{self.sid}/viewers/{self.viewer_id}/ping", data=b"")

    async def wait(self, cond, timeout: float, ping: bool = True) -> None:
        t0 = time.monotonic()
        last_ping = t0
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"viewer condition not met in {timeout} s ({len(self.video)} frames)")
            if ping and time.monotonic() - last_ping > 1:
                await self.ping()
                last_ping = time.monotonic()
            await asyncio.sleep(0.05)

    async def idle(self, seconds: float) -> None:
        """Wait (keeping the viewer alive)."""
        t_end = time.monotonic() + seconds
        await self.wait(lambda: time.monotonic() >= t_end, seconds + 5)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.pc is not None:
            await self.pc.close()


def mouth_change(frames: list[tuple[float, np.ndarray]], ref: np.ndarray) -> list[float]:
    """Mean absolute difference of each frame's lower-centre region (where the mouth is) from ``ref``."""
    h, w = ref.shape[:2]
    ys, xs = slice(int(h * 0.5), int(h * 0.8)), slice(int(w * 0.3), int(w * 0.7))
    r = ref[ys, xs].astype(np.float32)
    return [float(np.abs(f[ys, xs].astype(np.float32) - r).mean()) for _, f in frames]
