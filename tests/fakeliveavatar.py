"""A fake LiveAvatar API (api.liveavatar.com) on 127.0.0.1, following the documented contract
(see ``providers/liveavatar.py`` for the pages read):

- ``POST /v1/sessions/token`` needs ``X-API-KEY`` (else 401); body ``{mode, avatar_id,
  avatar_persona (FULL: language required), is_sandbox, video_settings: {quality, encoding}}``,
  anything else is a 422 ``{"detail": [{loc, msg, type}]}``; an unknown avatar is 404; answers the
  envelope ``{code: 1000, data: {session_id, session_token}, message}``;
- ``POST /v1/sessions/start`` (Bearer session token; an unknown token 401): 402 when the account
  lacks credits for a minute (not in sandbox); started twice -> 400 "Session is not in correct
  state"; answers ``{session_id, livekit_url, livekit_client_token, livekit_agent_token,
  max_session_duration, ws_url (LITE)}``;
- ``POST /v1/sessions/keep-alive`` / ``stop`` ``{session_id}`` (stop: a documented ``reason``);
  on a session that is not running: 400 "Session is not in correct state";
- ``GET /v1/avatars``, ``/v1/avatars/public``, ``/v1/voices`` (``X-API-KEY``): paginated ``results``;
- the LITE WebSocket ``/v1/ws/{session_id}?token=...``: sends ``session.state_updated``
  "connecting", then "connected" after ``connect_delay_s``; events before that are recorded in
  ``dropped`` (the real service drops them silently); ``agent.speak`` audio (base64 PCM16) is
  collected per ``event_id`` (a message over 1 MB is an error and closes the socket); on
  ``agent.speak_end`` it answers ``agent.speak_started`` then, after the audio's length x
  ``speak_speed``, ``agent.speak_ended``; ``agent.interrupt`` drops the utterance
  (``agent.speak_interrupted``); ``session.keep_alive`` is counted. ``end_session(sid)`` plays a
  provider-side timeout (state closing, closed, socket closed);
- a stand-in LiveKit signalling endpoint under ``/livekit``: the LiveKit client's join attempt
  (``/livekit/rtc?access_token=...``, WebSocket or HTTP validate) is recorded in ``livekit_joins``
  and refused (the media path itself cannot be faked here).
"""
from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from dataclasses import dataclass, field

import numpy as np
from aiohttp import WSMsgType, web

from fakeaio import CAP, FakeAio, bearer, fake_secret

SANDBOX_AVATAR = "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a"
REASONS = {"UNKNOWN", "USER_DISCONNECTED", "SERVER_ERROR", "IDLE_TIMEOUT", "NO_CREDITS", "USER_CLOSED", "AVATAR_DELETED",
           "MAX_DURATION_REACHED", "ZOMBIE_SESSION_REAP", "AGENT_HANG_UP"}
TOKEN_FIELDS = {"mode", "avatar_id", "avatar_persona", "is_sandbox", "video_settings", "max_session_duration",
                "interactivity_type", "llm_configuration_id", "livekit_config"}
QUALITIES = {"very_high", "high", "medium", "low"}
ENCODINGS = {"VP8", "H264"}


@dataclass
class Session:
    id: str
    token: str
    mode: str
    avatar_id: str
    sandbox: bool
    body: dict
    state: str = "created"  # created, started, stopped
    client_token: str = ""
    ws_token: str = ""
    keep_alives: int = 0
    ws_keep_alives: int = 0
    stop_reason: str | None = None
    ws: object = None
    ws_state: str = "none"
    utterances: dict = field(default_factory=dict)  # event_id -> {"chunks": [bytes], "ended": bool}
    order: list = field(default_factory=list)  # (type, event_id) of every message received after connected
    dropped: list = field(default_factory=list)
    interrupts: int = 0


class FakeLiveAvatar(FakeAio):
    def __init__(self, api_key: str | None = None):
        super().__init__()
        self.api_key = api_key or fake_secret("la_", "test")
        self.avatars = {SANDBOX_AVATAR: {"id": SANDBOX_AVATAR, "name": "Sandbox", "type": "VIDEO", "status": "ACTIVE"},
                        "6e0a1b2c-0000-4000-8000-00000000a001": {"id": "6e0a1b2c-0000-4000-8000-00000000a001", "name": "Ana",
                                                                 "type": "VIDEO", "status": "ACTIVE",
                                                                 "default_voice": {"id": "v-ana", "name": "Ana"}}}
        self.voices = [{"id": "v-ana", "name": "Ana", "language": "en"}, {"id": "v-li", "name": "Li", "language": "zh"}]
        self.sessions: dict[str, Session] = {}
        self.credits = 100.0
        self.connect_delay_s = 0.2
        self.speak_speed = 0.05  # the fake "speaks" 20x faster than real time
        self.livekit_joins: list[dict] = []
        self.success_code = 1000

    def error_body(self, status: int, message: str) -> dict:
        return {"code": status * 10, "data": None, "message": message}

    def _ok(self, data) -> web.Response:
        return web.json_response({"code": self.success_code, "data": data, "message": "success"})

    def _err(self, status: int, message: str) -> web.Response:
        return web.json_response(self.error_body(status, message), status=status)

    def routes(self) -> list:
        return [web.post("/v1/sessions/token", self.token), web.post("/v1/sessions/start", self.start),
                web.post("/v1/sessions/keep-alive", self.keep_alive), web.post("/v1/sessions/stop", self.stop),
                web.get("/v1/avatars", self.avatars_list), web.get("/v1/avatars/public", self.avatars_list),
                web.get("/v1/voices", self.voices_list), web.get("/v1/ws/{sid}", self.ws),
                web.get("/livekit/{tail:.*}", self.livekit)]

    def _keyed(self, request) -> bool:
        return request.headers.get("X-API-KEY", "") == self.api_key

    def _by_token(self, request) -> Session | None:
        tok = bearer(request)
        return next((s for s in self.sessions.values() if s.token == tok), None) if tok else None

    # -- REST --------------------------------------------------------------------------------
    async def token(self, request):
        if not self._keyed(request):
            return self._err(401, "Invalid API key")
        body = request[CAP].json or {}
        extra = sorted(set(body) - TOKEN_FIELDS)
        if extra:
            return web.json_response({"detail": [{"loc": ["body", extra[0]], "msg": "Extra inputs are not permitted",
                                                  "type": "extra_forbidden"}]}, status=422)
        mode = body.get("mode", "FULL")
        if mode not in ("FULL", "LITE"):
            return web.json_response({"detail": [{"loc": ["body", "mode"], "msg": "Input should be 'FULL' or 'LITE'",
                                                  "type": "literal_error"}]}, status=422)
        if mode == "FULL" and not isinstance(body.get("avatar_persona"), dict):
            return web.json_response({"detail": [{"loc": ["body", "avatar_persona"], "msg": "Field required",
                                                  "type": "missing"}]}, status=422)
        if mode == "LITE" and "avatar_persona" in body:
            return web.json_response({"detail": [{"loc": ["body", "avatar_persona"], "msg": "Extra inputs are not permitted",
                                                  "type": "extra_forbidden"}]}, status=422)
        vs = body.get("video_settings") or {}
        if vs and (vs.get("quality") not in QUALITIES or vs.get("encoding") not in ENCODINGS):
            return web.json_response({"detail": [{"loc": ["body", "video_settings"], "msg": "invalid video settings",
                                                  "type": "enum"}]}, status=422)
        if body.get("avatar_id") not in self.avatars:
            return self._err(404, f"Avatar {body.get('avatar_id')} not found")
        sid = str(uuid.uuid4())
        s = Session(sid, "st_" + secrets.token_urlsafe(24), mode, body["avatar_id"], bool(body.get("is_sandbox")), body)
        self.sessions[sid] = s
        return self._ok({"session_id": sid, "session_token": s.token})

    async def start(self, request):
        s = self._by_token(request)
        if s is None:
            return self._err(401, "Invalid session token")
        if s.state != "created":
            return self._err(400, "Session is not in correct state")
        per_min = 2 if s.mode == "FULL" else 1
        if not s.sandbox and self.credits < per_min:
            return self._err(402, "Insufficient credits to start a session")
        s.state = "started"
        s.client_token = "lkc_" + secrets.token_urlsafe(24)
        s.ws_token = "ws_" + secrets.token_urlsafe(24)
        data = {"session_id": s.id, "livekit_url": f"ws://127.0.0.1:{self.port}/livekit",
                "livekit_client_token": s.client_token, "livekit_agent_token": "lka_" + secrets.token_urlsafe(16),
                "max_session_duration": 60 if s.sandbox else 1200}
        if s.mode == "LITE":
            data["ws_url"] = f"ws://127.0.0.1:{self.port}/v1/ws/{s.id}?token={s.ws_token}"
        return web.json_response({"code": self.success_code, "data": data, "message": "success"}, status=201)

    def _running(self, request) -> tuple[Session | None, web.Response | None]:
        s = self._by_token(request)
        if s is None:
            return None, self._err(401, "Invalid session token")
        body = request[CAP].json or {}
        if body.get("session_id") not in (None, s.id):
            return None, self._err(400, "session_id does not match the token")
        if s.state != "started":
            return None, self._err(400, "Session is not in correct state")
        return s, None

    async def keep_alive(self, request):
        s, err = self._running(request)
        if err is not None:
            return err
        s.keep_alives += 1
        return self._ok(None)

    async def stop(self, request):
        s, err = self._running(request)
        if err is not None:
            return err
        reason = (request[CAP].json or {}).get("reason", "UNKNOWN")
        if reason not in REASONS:
            return web.json_response({"detail": [{"loc": ["body", "reason"], "msg": "not a valid reason", "type": "enum"}]},
                                     status=422)
        s.state = "stopped"
        s.stop_reason = reason
        if s.ws is not None:
            await self._close_ws(s, "closed")
        return self._ok(None)

    async def avatars_list(self, request):
        if not self._keyed(request):
            return self._err(401, "Invalid API key")
        items = list(self.avatars.values())
        return self._ok({"count": len(items), "results": items, "next": None, "previous": None})

    async def voices_list(self, request):
        if not self._keyed(request):
            return self._err(401, "Invalid API key")
        return self._ok({"count": len(self.voices), "results": self.voices, "next": None, "previous": None})

    async def livekit(self, request):
        self.livekit_joins.append({"path": request.path, "query": dict(request.query),
                                   "websocket": request.headers.get("Upgrade", "").lower() == "websocket"})
        return web.Response(status=503, text="this fake holds no LiveKit media server")

    # -- the LITE socket ---------------------------------------------------------------------
    async def ws(self, request):
        s = self.sessions.get(request.match_info["sid"])
        if s is None or request.query.get("token") != s.ws_token or s.state != "started":
            return web.Response(status=401, text="bad session or token")
        ws = web.WebSocketResponse(max_msg_size=2 * 1024 * 1024)
        await ws.prepare(request)
        s.ws = ws
        s.ws_state = "connecting"
        await ws.send_json({"type": "session.state_updated", "state": "connecting"})

        async def connected():
            await asyncio.sleep(self.connect_delay_s)
            if not ws.closed and s.ws_state == "connecting":
                s.ws_state = "connected"
                await ws.send_json({"type": "session.state_updated", "state": "connected"})

        asyncio.ensure_future(connected())
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if len(msg.data) > 1_000_000:
                s.order.append(("too-large", ""))
                await ws.close(code=1009, message=b"message too large")
                break
            ev = json.loads(msg.data)
            if s.ws_state != "connected":
                s.dropped.append(ev.get("type"))
                continue
            await self._lite_event(s, ws, ev)
        s.ws_state = "closed"
        return ws

    async def _lite_event(self, s: Session, ws, ev: dict) -> None:
        kind, eid = ev.get("type"), str(ev.get("event_id", ""))
        s.order.append((kind, eid))
        if kind == "agent.speak":
            u = s.utterances.setdefault(eid, {"chunks": [], "ended": False, "interrupted": False})
            u["chunks"].append(base64.b64decode(ev["audio"]))
        elif kind == "agent.speak_end":
            u = s.utterances.setdefault(eid, {"chunks": [], "ended": False, "interrupted": False})
            u["ended"] = True
            seconds = sum(len(c) for c in u["chunks"]) / 48000.0
            await ws.send_json({"type": "agent.speak_started", "event_id": eid, "task": {"id": eid}})

            async def finish():
                await asyncio.sleep(seconds * self.speak_speed)
                if not ws.closed and not u["interrupted"]:
                    await ws.send_json({"type": "agent.speak_ended", "event_id": eid, "task": {"id": eid}})

            asyncio.ensure_future(finish())
        elif kind == "agent.interrupt":
            s.interrupts += 1
            for e, u in s.utterances.items():
                if not u["interrupted"]:
                    u["interrupted"] = True
                    await ws.send_json({"type": "agent.speak_interrupted", "event_id": e})
        elif kind == "session.keep_alive":
            s.ws_keep_alives += 1

    async def _close_ws(self, s: Session, state: str) -> None:
        ws = s.ws
        if ws is not None and not ws.closed:
            await ws.send_json({"type": "session.state_updated", "state": "closing"})
            await ws.send_json({"type": "session.state_updated", "state": state})
            await ws.close()

    def end_session(self, sid: str) -> None:
        """The provider ends the session by itself (its idle timeout, the credits running out)."""
        s = self.sessions[sid]
        s.state = "stopped"
        s.stop_reason = "IDLE_TIMEOUT"
        self.call(self._close_ws(s, "closed"))

    async def shutdown(self) -> None:
        for s in self.sessions.values():
            if s.ws is not None and not s.ws.closed:
                await s.ws.close()

    # -- for the tests -----------------------------------------------------------------------
    def audio(self, sid: str, event_id: str) -> np.ndarray:
        """The PCM16 an utterance carried, as float."""
        u = self.sessions[sid].utterances[event_id]
        return np.frombuffer(b"".join(u["chunks"]), "<i2").astype(np.float32) / 32768.0

    def one(self) -> Session:
        assert len(self.sessions) == 1, list(self.sessions)
        return next(iter(self.sessions.values()))
