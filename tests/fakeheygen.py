"""A fake HeyGen streaming API (legacy Interactive Avatar) on 127.0.0.1, following the documented
contract (see ``providers/heygen_streaming.py``):

- ``POST /v1/streaming.create_token`` needs ``X-Api-Key`` (else 401 ``{code: 400112, message:
  "Unauthorized"}``) and answers ``{error: null, data: {token}}``;
- every other call needs ``Authorization: Bearer <token>``; bodies are JSON with ``session_id``;
- ``streaming.new``: ``quality`` high|medium|low, ``version`` must be "v2" here (the pack asks for
  LiveKit), ``activity_idle_timeout`` 30-3599, an unknown avatar is 400 ``{code: 400116, message:
  "Avatar not found"}``, no quota left 400 ``{code: 10013, message: "Insufficient credits"}``
  (illustrative codes); answers ``{code: 100, data: {session_id, url, access_token,
  session_duration_limit, is_paid}, message: "success"}``;
- ``streaming.start``, ``streaming.task`` (``task_type`` repeat|chat; answers ``duration_ms`` of
  60 ms per character and ``task_id``), ``streaming.interrupt``, ``streaming.keep_alive``,
  ``streaming.stop``; a call in the wrong state is 400 ``{code: 400006, message: "Session is not
  in correct state"}``.
"""
from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from fakeaio import CAP, FakeAio, bearer, fake_secret

NEW_FIELDS = {"quality", "avatar_id", "avatar_name", "voice", "language", "knowledge_base", "knowledge_base_id", "version",
              "video_encoding", "activity_idle_timeout", "disable_idle_timeout", "stt_settings", "source"}


@dataclass
class Session:
    id: str
    body: dict
    token: str
    state: str = "new"  # new, started, stopped
    access_token: str = ""
    tasks: list = field(default_factory=list)
    interrupts: int = 0
    keep_alives: int = 0


class FakeHeyGen(FakeAio):
    def __init__(self, api_key: str | None = None):
        super().__init__()
        self.api_key = api_key or fake_secret("hg_", "test")
        self.tokens: set[str] = set()
        self.sessions: dict[str, Session] = {}
        self.avatars = {"default", "Anna_public_3_20240108", "Wayne_20240711"}
        self.quota = True

    def error_body(self, status: int, message: str) -> dict:
        return {"code": 400000 + status, "message": message}

    def routes(self) -> list:
        r = "/v1/streaming."
        return [web.post(r + "create_token", self.create_token), web.post(r + "new", self.new),
                web.post(r + "start", self.start), web.post(r + "task", self.task),
                web.post(r + "interrupt", self.interrupt), web.post(r + "keep_alive", self.keep_alive),
                web.post(r + "stop", self.stop)]

    @staticmethod
    def _err(code: int, message: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "message": message}, status=status)

    @staticmethod
    def _ok(data=None) -> web.Response:
        return web.json_response({"code": 100, "data": data, "message": "success"})

    async def create_token(self, request):
        if request.headers.get("X-Api-Key", "") != self.api_key:
            return self._err(400112, "Unauthorized", 401)
        tok = "hgt_" + secrets.token_urlsafe(24)
        self.tokens.add(tok)
        return web.json_response({"error": None, "data": {"token": tok}})

    def _session(self, request, need: str | None = "started"):
        if bearer(request) not in self.tokens:
            return None, self._err(400112, "Unauthorized", 401)
        body = request[CAP].json or {}
        s = self.sessions.get(body.get("session_id", ""))
        if s is None:
            return None, self._err(400006, "Session is not in correct state")
        if need is not None and s.state != need:
            return None, self._err(400006, "Session is not in correct state")
        return s, None

    async def new(self, request):
        tok = bearer(request)
        if tok not in self.tokens:
            return self._err(400112, "Unauthorized", 401)
        body = request[CAP].json or {}
        extra = sorted(set(body) - NEW_FIELDS)
        if extra:
            return self._err(400175, f"Invalid parameter: {extra[0]}")
        if body.get("quality", "high") not in ("high", "medium", "low"):
            return self._err(400175, "Invalid parameter: quality")
        if body.get("version") != "v2":
            return self._err(400175, "this fake serves version v2 (LiveKit) only")
        if not 30 <= int(body.get("activity_idle_timeout", 120)) < 3600:
            return self._err(400175, "Invalid parameter: activity_idle_timeout")
        avatar = body.get("avatar_id") or body.get("avatar_name") or "default"
        if avatar not in self.avatars:
            return self._err(400116, "Avatar not found")
        if not self.quota:
            return self._err(10013, "Insufficient credits: your API quota is used up")
        sid = str(uuid.uuid4())
        s = Session(sid, body, tok, access_token="lkh_" + secrets.token_urlsafe(24))
        self.sessions[sid] = s
        return self._ok({"session_id": sid, "url": f"ws://127.0.0.1:{self.port}/livekit", "access_token": s.access_token,
                         "session_duration_limit": 600, "is_paid": True})

    async def start(self, request):
        s, err = self._session(request, need="new")
        if err is not None:
            return err
        s.state = "started"
        return self._ok(None)

    async def task(self, request):
        s, err = self._session(request)
        if err is not None:
            return err
        body = request[CAP].json
        if body.get("task_type", "repeat") not in ("repeat", "chat", "talk"):
            return self._err(400175, "Invalid parameter: task_type")
        if not str(body.get("text", "")).strip():
            return self._err(40001, "Missing required input parameters")
        s.tasks.append(body)
        return self._ok({"duration_ms": 60.0 * len(body["text"]), "task_id": str(uuid.uuid4())})

    async def interrupt(self, request):
        s, err = self._session(request)
        if err is not None:
            return err
        s.interrupts += 1
        return self._ok(None)

    async def keep_alive(self, request):
        s, err = self._session(request)
        if err is not None:
            return err
        s.keep_alives += 1
        return self._ok(None)

    async def stop(self, request):
        s, err = self._session(request)
        if err is not None:
            return err
        s.state = "stopped"
        return self._ok(None)

    def one(self) -> Session:
        assert len(self.sessions) == 1, list(self.sessions)
        return next(iter(self.sessions.values()))
