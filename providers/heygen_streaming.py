"""HeyGen's streaming (Interactive Avatar) API: legacy, kept while HeyGen serves it (HeyGen moves
its interactive avatars to LiveAvatar, ``providers/liveavatar.py``).

Contract followed (docs.heygen.com API reference, read 2026-06: "Create Session Token", "New
Session", "Start Session", "Send Task", "Interrupt Task", "Close Session", "Keep Alive", "Error
Responses", the changelog entry for ``activity_idle_timeout``, and the official SDK
HeyGen-Official/StreamingAvatarSDK ``src/index.ts``):

- ``POST /v1/streaming.create_token`` with ``X-Api-Key`` -> ``{error: null, data: {token}}``: the
  only call that uses the key; every other call sends ``Authorization: Bearer <token>``;
- ``POST /v1/streaming.new`` ``{quality: high|medium|low, avatar_id (the SDK names it avatar_name:
  both are sent), voice: {voice_id?, rate?, emotion?}, language?, knowledge_base? (the chat
  prompt), version: "v2" (media through a LiveKit room), video_encoding: H264|VP8,
  activity_idle_timeout: 30-3599 s}`` -> ``data: {session_id, url, access_token,
  session_duration_limit?, ...}`` (``url`` + ``access_token``: the LiveKit room, all the page gets);
- ``POST /v1/streaming.start`` ``{session_id}``; ``POST /v1/streaming.task`` ``{session_id, text,
  task_type: repeat|chat, task_mode: async}`` -> ``data: {duration_ms, task_id}``;
  ``POST /v1/streaming.interrupt``, ``/v1/streaming.keep_alive``, ``/v1/streaming.stop``
  ``{session_id}``;
- envelopes ``{code: 100, data, message}`` (or ``{error: null, data}``); errors HTTP 4xx with
  ``{code, message}``, e.g. 400 ``{code: 400006, message: "Session is not in correct state"}``,
  401 ``{code: 400112, message: "Unauthorized"}``.

Keys come from ``HEYGEN_API_KEY`` or the key file; ``HEYGEN_BASE_URL`` points elsewhere (tests).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import numpy as np

from ..engine.live.backend import Check
from .avatar_common import ProviderBackend, as_ended, base_url as _base_url, ended_error, envelope_data, rules
from .api_key_client import ApiKeyClient
from .http import ApiError, HttpClient, RetryPolicy, guarded
from .prices import streaming_avatar_cost

log = logging.getLogger("DigitalHuman.heygen")


class HeyGenStreaming(ApiKeyClient):
    """The API-key side: mint the session token (``streaming.create_token``)."""

    service = "HeyGen"
    auth_header, auth_scheme = "X-Api-Key", ""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, retry: RetryPolicy | None = None, **kw):
        self.rules = rules("heygen")
        super().__init__(_base_url(self.rules, base_url), api_key, self.rules["key_env"], user_dir=user_dir,
                         headers={"Accept": "application/json"}, check_interrupt=check_interrupt, retry=retry,
                         read_timeout_s=kw.pop("read_timeout_s", 30.0), **kw)

    @guarded
    def create_token(self) -> "HeyGenSession":
        data = envelope_data(self, self.request("POST", "v1/streaming.create_token"), "create_token call",
                             self.rules["success_codes"])
        token = data.get("token") if isinstance(data, dict) else None
        if not token:
            raise ApiError(self.service, 200, "create_token call: the answer holds no token")
        return HeyGenSession(self.base_url, str(token), secrets=self.secrets(), rules_=self.rules,
                             check_interrupt=self.check_interrupt)


class HeyGenSession(HttpClient):
    """The session-token side (Bearer): new, start, task, interrupt, keep-alive, stop."""

    service = "HeyGen"

    def __init__(self, base: str, token: str, *, secrets: list[str], rules_: dict,
                 check_interrupt: Callable[[], None] | None = None, retry: RetryPolicy | None = None, **kw):
        self.rules = rules_
        self.session_id = ""
        super().__init__(base, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                         secrets=[*secrets, token], check_interrupt=check_interrupt, retry=retry,
                         read_timeout_s=kw.pop("read_timeout_s", 30.0), **kw)

    def _call(self, path: str, body: dict, where: str) -> Any:
        return envelope_data(self, self.request("POST", path, json_body=body), where, self.rules["success_codes"])

    @guarded
    def new(self, *, avatar: str, quality: str = "high", voice_id: str = "", rate: float | None = None,
            emotion: str = "", language: str = "", knowledge_base: str = "", encoding: str = "H264",
            idle_timeout_s: int | None = None) -> dict:
        r = self.rules
        if quality not in r["qualities"]:
            raise ValueError(f"quality must be one of {', '.join(r['qualities'])}, got '{quality}'")
        if encoding not in r["video_encodings"]:
            raise ValueError(f"encoding must be one of {', '.join(r['video_encodings'])}, got '{encoding}'")
        lo, hi = r["idle_timeout_range_s"]
        idle = int(idle_timeout_s if idle_timeout_s is not None else r["activity_idle_timeout_s"])
        if not lo <= idle <= hi:
            raise ValueError(f"idle timeout must be {lo}-{hi} s, got {idle}")
        avatar = (avatar or "").strip() or r["default_avatar"]
        voice: dict[str, Any] = {}
        if voice_id.strip():
            voice["voice_id"] = voice_id.strip()
        if rate is not None:
            voice["rate"] = float(rate)
        if emotion.strip():
            voice["emotion"] = emotion.strip()
        body: dict[str, Any] = {"quality": quality, "avatar_id": avatar, "avatar_name": avatar, "version": r["version"],
                                "video_encoding": encoding, "activity_idle_timeout": idle}
        if voice:
            body["voice"] = voice
        if language.strip():
            body["language"] = language.strip()
        if knowledge_base.strip():
            body["knowledge_base"] = knowledge_base.strip()
        data = self._call("v1/streaming.new", body, "new session")
        if not isinstance(data, dict) or not data.get("session_id") or not data.get("url") or not data.get("access_token"):
            raise ApiError(self.service, 200, "new session: the answer holds no LiveKit room (session_id, url, access_token); "
                           "the pack asks for version v2")
        self.session_id = str(data["session_id"])
        self._secrets.append(str(data["access_token"]))
        return data

    @guarded
    def start(self) -> None:
        self._call("v1/streaming.start", {"session_id": self.session_id}, "start session")

    @guarded
    def task(self, text: str, task_type: str = "repeat") -> dict:
        data = self._call("v1/streaming.task", {"session_id": self.session_id, "text": text, "task_type": task_type,
                                                "task_mode": "async"}, "send task")
        return data if isinstance(data, dict) else {}

    @guarded
    def interrupt(self) -> None:
        self._call("v1/streaming.interrupt", {"session_id": self.session_id}, "interrupt")

    @guarded
    def keep_alive(self) -> None:
        self._call("v1/streaming.keep_alive", {"session_id": self.session_id}, "keep alive")

    @guarded
    def stop(self) -> None:
        self._call("v1/streaming.stop", {"session_id": self.session_id}, "stop session")


class HeyGenBackend(ProviderBackend):
    """A HeyGen streaming session (v2, LiveKit) for :class:`~..engine.live.remote.RemoteSession`."""

    provider = "heygen"
    transport = "livekit"
    modes = ("repeat", "chat")
    audio_in = False
    can_interrupt = True

    def __init__(self, *, avatar: str = "", quality: str = "high", voice_id: str = "", language: str = "",
                 knowledge_base: str = "", encoding: str = "H264", idle_timeout_s: int | None = None,
                 api_key: str | None = None, base_url_: str | None = None, user_dir: str | None = None,
                 plan: str | None = None):
        super().__init__()
        self.label = "HeyGen (legacy)"
        self.keep_alive_s = float(self.rules["keep_alive_s"])
        self.args = dict(avatar=avatar, quality=quality, voice_id=voice_id, language=language,
                         knowledge_base=knowledge_base, encoding=encoding, idle_timeout_s=idle_timeout_s)
        self.plan = plan
        self.api = HeyGenStreaming(api_key, base_url_, user_dir=user_dir)
        self.session: HeyGenSession | None = None
        self.room: dict = {}

    def open(self, check: Check) -> dict:
        self.api.check_interrupt = check
        try:
            self.session = self.api.create_token()
            self.session.check_interrupt = check
            data = self.session.new(**self.args)
            self.room = {"url": str(data["url"]), "token": str(data["access_token"])}
            self.session.start()
        except BaseException as exc:  # Cancel too: a session HeyGen created is stopped, not left to bill
            if self.session is not None and self.session.session_id:
                self.close("start failed")
            if isinstance(exc, ApiError):
                raise self.explained(exc) from None
            raise
        return {"avatar": self.args["avatar"] or self.rules["default_avatar"], "quality": self.args["quality"],
                "provider_session": self.session.session_id,
                "duration_limit_s": data.get("session_duration_limit")}

    def page_join(self, viewer: str, check: Check) -> dict:
        if not self.room:
            raise ValueError("the HeyGen session has not started")
        return {"livekit_url": self.room["url"], "token": self.room["token"], "relay": False}

    def page_step(self, step: str, body: dict, check: Check) -> dict:
        if step != "event":
            raise ValueError(f"a HeyGen session takes the steps join, ping, leave and event, not '{step}'")
        ev = body.get("data") if isinstance(body.get("data"), dict) else {}
        kind = str(body.get("event") or ev.get("type") or "")
        if kind == "avatar_start_talking":
            self.emit("speaking", source="provider")
        elif kind == "avatar_stop_talking":
            self.emit("spoken", source="provider")
        elif kind == "room":
            self.emit("room", state=str(ev.get("state", "")))
        return {"ok": True}

    def _guard(self, fn, check: Check):
        self.session.check_interrupt = check
        try:
            return fn()
        except ApiError as exc:
            if ended_error(exc):
                raise as_ended(exc, "HeyGen") from None
            raise

    def speak_text(self, text: str, mode: str, check: Check) -> dict:
        task_type = self.rules["task_types"].get(mode)
        if task_type is None:
            raise ValueError(f"HeyGen speaks in the modes {', '.join(self.rules['task_types'])}, not '{mode}'")
        data = self._guard(lambda: self.session.task(text, task_type), check)
        ms = data.get("duration_ms")
        return {"speech_s": float(ms) / 1000.0 if isinstance(ms, (int, float)) else None, "task_id": data.get("task_id")}

    def speak_pcm(self, chunks: Iterator[tuple[np.ndarray, int]], check: Check) -> dict:
        raise ValueError("HeyGen's streaming API speaks text with its own voices; it does not take audio")

    def interrupt(self, check: Check) -> None:
        self._guard(self.session.interrupt, check)

    def keep_alive(self, check: Check) -> None:
        if self.session is not None and self.session.session_id:
            self._guard(self.session.keep_alive, check)

    def cost(self, seconds: float, speech_seconds: float) -> tuple[float, str, bool]:
        p = streaming_avatar_cost("heygen", seconds=seconds, plan=self.plan)
        return p.usd, p.basis, p.estimated

    def close(self, reason: str) -> None:
        if self.session is None or not self.session.session_id:
            return
        self.session.check_interrupt = None
        self.session.retry = RetryPolicy(max_tries=2, base_delay_s=0.5)
        self.session.read_timeout_s = float(rules("session")["stop_timeout_s"])
        try:
            self.session.stop()
        except Exception as exc:  # noqa: BLE001
            log.warning("[DigitalHuman] HeyGen: stopping the session failed (it closes after its idle timeout): %s",
                        self.session.redact(str(exc)))
