"""HTTP routes of the live panel, added to ComfyUI's own aiohttp server (thin: the sessions are engine
objects in ``engine/live/registry.py``; the WebRTC viewers are ``server/webrtc.py``).

Every route takes only what it needs: JSON bodies of at most ``max_json_bytes`` with known fields
only, an SDP of at most ``max_sdp_chars``, a text of at most ``max_text_chars``, an audio clip of at
most ``max_audio_bytes``; session ids are unguessable and an unknown one is a 404 that says so;
viewers per session are bounded. Responses never hold an API key: a session's status names its
voice and chat model, nothing else of them.

Routes (prefix ``/digitalhuman/live``):

- ``GET  /sessions``: every session the panel can show (ours and, later, providers').
- ``GET  /page``: the standalone page (``#s=<id>`` picks the session); ``GET /static/<file>``: its files;
  ``GET /static/vendor/<file>``: the vendored LiveKit client (loaded only for LiveKit sessions).
- ``GET  /s/{id}``: status; ``GET /s/{id}/events?after=N&wait=S``: events after N (long poll).
- ``POST /s/{id}/connect``: media. ``webrtc-offer`` sessions: ``{sdp, type: "offer"}`` -> the answer
  and a viewer id; other transports are handled by the session's own ``connect(body)`` (the
  providers' sessions, ``engine/live/remote.py``: ``{step: join|ping|leave|answer|ice|event, ...}``).
- ``POST /s/{id}/viewers/{vid}/ping`` (keep-alive) and ``/close``.
- ``POST /s/{id}/say`` ``{text, mode: "repeat"|"chat"}``; ``POST /s/{id}/audio`` (a clip as the body);
  ``POST /s/{id}/stop``; ``POST /s/{id}/close``.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..engine.live.registry import Registry, TooManySessionsError, UnknownSessionError, registry as default_registry
from ..engine.live.session import SessionClosedError

log = logging.getLogger("DigitalHuman.live")

PREFIX = "/digitalhuman/live"
STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "js" / "live"
STATIC_FILES = {"client.js": "text/javascript", "panel.js": "text/javascript", "page.js": "text/javascript",
                "provider_transports.js": "text/javascript", "page.html": "text/html"}
VENDOR_DIR = STATIC_DIR.parent / "vendor"
VENDOR_FILES = {"livekit-client.esm.mjs": "text/javascript"}  # web/js/vendor/README.md says where they come from
SID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class LiveRoutes:
    """The handlers, bound to a registry (the process's one inside ComfyUI; a fresh one in tests)."""

    def __init__(self, reg: Registry | None = None):
        self.reg = reg or default_registry()
        self.lim = self.reg.limits
        self.viewers: dict[str, dict[str, Any]] = {}  # session id -> viewer id -> Viewer
        self._watch: asyncio.Task | None = None
        self.reg.on_close.append(self._session_closed)

    # -- plumbing ----------------------------------------------------------------------------
    def table(self) -> list[web.RouteDef]:
        p = PREFIX
        return [
            web.get(f"{p}/sessions", self.sessions),
            web.get(f"{p}/page", self.page),
            web.get(f"{p}/static/{{name}}", self.static),
            web.get(f"{p}/static/vendor/{{name}}", self.vendor),
            web.get(f"{p}/s/{{sid}}", self.status),
            web.get(f"{p}/s/{{sid}}/events", self.events),
            web.post(f"{p}/s/{{sid}}/connect", self.connect),
            web.post(f"{p}/s/{{sid}}/viewers/{{vid}}/ping", self.ping),
            web.post(f"{p}/s/{{sid}}/viewers/{{vid}}/close", self.close_viewer),
            web.post(f"{p}/s/{{sid}}/say", self.say),
            web.post(f"{p}/s/{{sid}}/audio", self.audio),
            web.post(f"{p}/s/{{sid}}/stop", self.stop),
            web.post(f"{p}/s/{{sid}}/close", self.close_session),
        ]

    def _session(self, request: web.Request):
        sid = request.match_info.get("sid", "")
        if not SID.match(sid):
            raise UnknownSessionError(sid)
        return self.reg.get(sid)

    async def _body(self, request: web.Request, cap: int) -> bytes:
        if request.content_length is not None and request.content_length > cap:
            raise BadRequest(413, f"the request body is {request.content_length} bytes; this route takes at most {cap}")
        raw = await request.content.read(cap + 1)
        if len(raw) > cap:
            raise BadRequest(413, f"the request body is over {cap} bytes; this route takes at most {cap}")
        return raw

    async def _json(self, request: web.Request, fields: dict[str, type], required: tuple[str, ...]) -> dict:
        raw = await self._body(request, int(self.lim["max_json_bytes"]))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest(400, "the body must be a JSON object")
        extra = sorted(set(body) - set(fields))
        if extra:
            raise BadRequest(400, f"unknown field '{extra[0]}' (this route takes {', '.join(sorted(fields))})")
        for k in required:
            if k not in body:
                raise BadRequest(400, f"missing field '{k}'")
        for k, t in fields.items():
            if k in body and not isinstance(body[k], t):
                raise BadRequest(400, f"field '{k}' must be {t.__name__}")
        return body

    @staticmethod
    def guard(handler):
        async def run(self, request: web.Request) -> web.StreamResponse:
            try:
                return await handler(self, request)
            except BadRequest as exc:
                return _error(exc.status, str(exc))
            except UnknownSessionError as exc:
                return _error(404, str(exc))
            except SessionClosedError as exc:
                return _error(409, str(exc))
            except TooManySessionsError as exc:
                return _error(503, str(exc))
            except ValueError as exc:
                return _error(400, str(exc))
            except Exception as exc:  # never a traceback (or anything in it) to the browser
                log.exception("[DigitalHuman] live route %s failed", request.path)
                return _error(500, f"internal error ({type(exc).__name__}); see the ComfyUI log")

        run.__name__ = handler.__name__
        return run

    # -- listing, pages ----------------------------------------------------------------------
    def _entry(self, s) -> dict:
        sid = s.id
        return {"id": sid, "name": getattr(s, "name", ""), "kind": getattr(s, "kind", "self-hosted"),
                "transport": getattr(s, "transport", "webrtc-offer"), "modes": list(getattr(s, "modes", [])),
                "state": getattr(s, "state", ""), "viewers": len(self.viewers.get(sid, {})),
                "created": getattr(s, "created", 0), "link": f"{PREFIX}/page#s={sid}"}

    @guard
    async def sessions(self, request: web.Request) -> web.Response:
        # a closed session stays reachable by id a while (its last events), but is no longer offered
        return web.json_response({"sessions": [self._entry(s) for s in self.reg.list()
                                               if getattr(s, "state", "") != "closed"],
                                  "limits": {k: self.lim[k] for k in ("max_sessions", "max_viewers", "max_text_chars",
                                                                      "max_audio_bytes", "max_audio_s")},
                                  "ice_servers": _page_ice_servers()})

    @guard
    async def page(self, request: web.Request) -> web.Response:
        html = (STATIC_DIR / "page.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers=_NO_STORE)

    @guard
    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            return _error(404, "no such file")
        return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=STATIC_FILES[name], headers=_NO_STORE)

    @guard
    async def vendor(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in VENDOR_FILES:
            return _error(404, "no such file")
        return web.Response(body=(VENDOR_DIR / name).read_bytes(), content_type=VENDOR_FILES[name],
                            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    # -- one session -------------------------------------------------------------------------
    @guard
    async def status(self, request: web.Request) -> web.Response:
        s = self._session(request)
        st = s.status()
        st["viewers"] = [v.stats() for v in self.viewers.get(s.id, {}).values()]
        return web.json_response(st)

    @guard
    async def events(self, request: web.Request) -> web.Response:
        s = self._session(request)
        try:
            after = int(request.query.get("after", "0"))
            wait = min(float(request.query.get("wait", "0")), float(self.lim["long_poll_s"]))
        except ValueError:
            raise BadRequest(400, "'after' must be an integer and 'wait' a number of seconds") from None
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            items, last = s.events.since(after)
            if items or time.monotonic() >= deadline or getattr(s, "state", "") == "closed":
                return web.json_response({"events": items, "next": last, "state": getattr(s, "state", "")})
            await asyncio.sleep(0.1)

    @guard
    async def say(self, request: web.Request) -> web.Response:
        s = self._session(request)
        body = await self._json(request, {"text": str, "mode": str}, ("text",))
        mode = body.get("mode", "repeat")
        if mode not in ("repeat", "chat"):
            raise BadRequest(400, f"mode must be 'repeat' or 'chat' (audio goes to /audio), got '{mode}'")
        text = body["text"]
        if len(text) > int(self.lim["max_text_chars"]):
            raise BadRequest(413, f"the text is {len(text)} characters; a message may have at most {self.lim['max_text_chars']}")
        if mode not in getattr(s, "modes", ["repeat", "chat"]):
            raise BadRequest(400, f"this session cannot {mode}: it has no {'chat model' if mode == 'chat' else 'voice'}")
        turn = s.ask(text) if mode == "chat" else s.say(text)
        return web.json_response({"turn": turn, "state": s.state})

    @guard
    async def audio(self, request: web.Request) -> web.Response:
        s = self._session(request)
        ctype = request.content_type or ""
        if not (ctype.startswith("audio/") or ctype.startswith("video/") or ctype == "application/octet-stream"):
            raise BadRequest(415, f"send the clip as the body with an audio/* type (got '{ctype or 'none'}')")
        raw = await self._body(request, int(self.lim["max_audio_bytes"]))
        if not raw:
            raise BadRequest(400, "the clip is empty")
        loop = asyncio.get_running_loop()
        samples, sr = await loop.run_in_executor(None, _decode_clip, raw)
        turn = s.play(samples, sr, label=f"audio clip ({len(samples) / sr:.1f} s)")
        return web.json_response({"turn": turn, "seconds": round(len(samples) / sr, 3), "state": s.state})

    @guard
    async def stop(self, request: web.Request) -> web.Response:
        s = self._session(request)
        await self._body(request, int(self.lim["max_json_bytes"]))
        stopped = s.interrupt()
        return web.json_response({"stopped": bool(stopped), "state": s.state})

    @guard
    async def close_session(self, request: web.Request) -> web.Response:
        s = self._session(request)
        await self._body(request, int(self.lim["max_json_bytes"]))
        await asyncio.get_running_loop().run_in_executor(None, self.reg.close, s.id)
        return web.json_response({"closed": True})

    # -- media -------------------------------------------------------------------------------
    @guard
    async def connect(self, request: web.Request) -> web.Response:
        s = self._session(request)
        if getattr(s, "state", "") == "closed":
            raise SessionClosedError("the session is closed")
        transport = getattr(s, "transport", "webrtc-offer")
        if transport != "webrtc-offer":
            handler = getattr(s, "connect", None)
            if handler is None:
                raise BadRequest(400, f"this session's media ({transport}) cannot be connected here")
            body = await self._json(request, {k: object for k in getattr(s, "connect_fields", ())}, ())
            out = handler(body)
            return web.json_response(await out if inspect.isawaitable(out) else out)
        body = await self._json(request, {"sdp": str, "type": str}, ("sdp", "type"))
        if body["type"] != "offer":
            raise BadRequest(400, f"type must be 'offer', got '{body['type']}'")
        sdp = body["sdp"]
        if len(sdp) > int(self.lim["max_sdp_chars"]):
            raise BadRequest(413, f"the SDP is {len(sdp)} characters; at most {self.lim['max_sdp_chars']}")
        if not sdp.lstrip().startswith("v=0") or "m=" not in sdp:
            raise BadRequest(400, "bad SDP: an offer starts with 'v=0' and has at least one 'm=' section")
        mine = self.viewers.setdefault(s.id, {})
        if len(mine) >= int(self.lim["max_viewers"]):
            raise BadRequest(429, f"this session already has {len(mine)} viewers, the most allowed "
                                  f"(DH_LIVE_MAX_VIEWERS={self.lim['max_viewers']}); for more viewers use a media server "
                                  "(see the README, 'Real time at scale')")
        from .webrtc import Viewer

        viewer = Viewer(s, asyncio.get_running_loop(), on_end=self._viewer_ended,
                        negotiate_timeout_s=float(self.lim.get("negotiate_timeout_s", 20)))
        mine[viewer.id] = viewer
        self.reg.set_viewers(s.id, len(mine))
        self._ensure_watch()
        try:
            answer = await viewer.answer(sdp)
        except Exception as exc:
            await viewer.close("bad offer")
            msg = str(exc) or type(exc).__name__
            raise BadRequest(400, f"bad SDP: {msg[:300]}") from None
        s.last_activity = time.monotonic()
        return web.json_response({**answer, "viewer": viewer.id, "ice_servers": _page_ice_servers()})

    def _viewer(self, request: web.Request):
        s = self._session(request)
        v = self.viewers.get(s.id, {}).get(request.match_info.get("vid", ""))
        if v is None:
            raise BadRequest(404, "no such viewer (it may have been closed)")
        return s, v

    @guard
    async def ping(self, request: web.Request) -> web.Response:
        s, v = self._viewer(request)
        await self._body(request, int(self.lim["max_json_bytes"]))
        v.last_ping = time.monotonic()
        s.last_activity = time.monotonic()
        return web.json_response({"ok": True, **v.stats()})

    @guard
    async def close_viewer(self, request: web.Request) -> web.Response:
        s, v = self._viewer(request)
        await self._body(request, int(self.lim["max_json_bytes"]))
        await v.close("closed by the page")
        return web.json_response({"closed": True})

    def _viewer_ended(self, viewer, why: str) -> None:
        sid = getattr(viewer.session, "id", "")
        mine = self.viewers.get(sid)
        if mine is not None:
            mine.pop(viewer.id, None)
            self.reg.set_viewers(sid, len(mine))
            if not mine:
                self.viewers.pop(sid, None)

    def _session_closed(self, sid: str) -> None:
        """The registry closed a session (any thread): end its viewers in the loop."""
        mine = self.viewers.get(sid, {})
        for v in list(mine.values()):
            try:
                asyncio.run_coroutine_threadsafe(v.close("the session ended"), v.loop)
            except RuntimeError:
                pass

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_viewers())

    async def _watch_viewers(self) -> None:
        timeout = float(self.lim["viewer_timeout_s"])
        while any(self.viewers.values()):
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for mine in list(self.viewers.values()):
                for v in list(mine.values()):
                    why = v.expired(now, timeout)
                    if why:
                        await v.close(why)

    async def close_all_viewers(self) -> None:
        for mine in list(self.viewers.values()):
            for v in list(mine.values()):
                await v.close("server closing")


_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _page_ice_servers() -> list:
    import os

    raw = os.environ.get("DH_LIVE_ICE_SERVERS", "").strip()
    try:
        return json.loads(raw) if raw else []
    except ValueError:
        return []


def _decode_clip(raw: bytes):
    """Any audio PyAV reads (WAV, WebM/Opus from a browser's recorder, MP3, M4A...) -> mono float, rate."""
    from ..engine.speech.pcm import decode_audio

    fmt = "wav" if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE" else "compressed"
    try:
        return decode_audio(raw, fmt, None, "uploaded clip")
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"uploaded clip: not readable audio ({exc})") from None
