"""LiveAvatar (api.liveavatar.com, HeyGen's successor for interactive avatars): REST client, the
LITE WebSocket, and the backend a :class:`~..engine.live.remote.RemoteSession` drives.

Contract followed (docs.liveavatar.com, read 2026-06: API reference "Create Session Token", "Start
Session", "Keep Session Alive", "Stop Session", "List Public Avatars", "List Voices"; guides "LITE
Mode: Lifecycle / Events", "FULL Mode: Events", "Credits and Subscriptions"; and the official web
SDK heygen-com/liveavatar-web-sdk, ``SessionApiClient`` and ``LiveAvatarSession``):

- ``POST /v1/sessions/token`` with header ``X-API-KEY`` (the only call that uses the key), JSON
  ``{mode: "FULL"|"LITE", avatar_id, avatar_persona: {voice_id?, context_id?, language} (FULL),
  is_sandbox, video_settings: {quality: very_high|high|medium|low, encoding: VP8|H264}}`` ->
  ``{code, data: {session_id, session_token}, message}``. The documented sandbox avatar
  (``data/streaming_avatars.json``) gives short free sessions. ``max_session_duration`` is left out:
  its unit is not documented; our own cap (``max_minutes``) ends the session instead.
- ``POST /v1/sessions/start`` with ``Authorization: Bearer <session_token>`` -> ``data: {session_id,
  livekit_url, livekit_client_token, livekit_agent_token?, max_session_duration?, ws_url (LITE)}``;
  ``POST /v1/sessions/keep-alive`` ``{session_id}`` (sessions end after 5 idle minutes);
  ``POST /v1/sessions/stop`` ``{session_id, reason}`` (reason from the documented enum, USER_CLOSED).
- Envelope: ``code`` 1000 on success (the web SDK's check; the OpenAPI schema says 100: both are
  accepted); errors are HTTP 4xx/5xx with ``{code, message}`` or FastAPI's ``{detail}``.
- ``GET /v1/avatars`` (yours), ``GET /v1/avatars/public``, ``GET /v1/voices`` -> ``data: {count,
  results: [...], next, previous}``.
- FULL mode: commands are LiveKit data-channel messages on topic ``agent-control``
  (``avatar.speak_text`` / ``avatar.speak_response`` with ``{text}``, ``avatar.interrupt``,
  ``avatar.start_listening``/``avatar.stop_listening``), answers on ``agent-response``
  (``avatar.speak_started``/``ended``, ``avatar.transcription``, ``user.transcription``,
  ``session.stopped``). The server holds no LiveKit participant, so these travel through the page
  that joined the room: the session emits them as ``command`` events, the page publishes them and
  reports the answers back.
- LITE mode: our own audio over the session's WebSocket (``ws_url``): wait for
  ``{"type": "session.state_updated", "state": "connected"}`` (events sent before are dropped),
  then ``{"type": "agent.speak", "event_id", "audio": base64 PCM16 24 kHz mono}`` (about 600 ms
  first, then 1 s, at most 1 MB a message; one event_id per utterance), ``agent.speak_end`` with
  that event_id, ``agent.interrupt`` (after stopping our own send loop), ``session.keep_alive``;
  the server sends ``agent.speak_started``/``agent.speak_ended``/``agent.speak_interrupted`` and
  ``session.state_updated`` closing/closed.

Keys come from ``LIVEAVATAR_API_KEY`` or the key file; ``LIVEAVATAR_BASE_URL`` points elsewhere
(the tests' fake). The browser only ever gets ``livekit_url`` and ``livekit_client_token``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..engine.live.backend import Check, NeedsPage, ProviderSessionEnded
from ..engine.speech.pcm_chunks import Pcm16Chunker
from .avatar_common import ProviderBackend, as_ended, base_url, ended_error, envelope_data, rules
from .api_key_client import ApiKeyClient
from .http import ApiError, HttpClient, RetryPolicy, guarded
from .prices import streaming_avatar_cost

log = logging.getLogger("DigitalHuman.liveavatar")


@dataclass(frozen=True)
class LiveAvatarConfig:
    """One session's settings (the session token's body)."""

    mode: str = "FULL"
    avatar_id: str = ""
    voice_id: str = ""
    context_id: str = ""
    language: str = "en"
    quality: str = "high"
    encoding: str = "VP8"
    sandbox: bool = False

    def checked(self) -> "LiveAvatarConfig":
        r = rules("liveavatar")
        mode = (self.mode or "").strip().upper()
        if mode not in r["modes"]:
            raise ValueError(f"mode must be one of {', '.join(r['modes'])}, got '{self.mode}'")
        avatar = (self.avatar_id or "").strip() or (r["sandbox_avatar_id"] if self.sandbox else "")
        if not avatar:
            raise ValueError("avatar_id: give the id of one of your LiveAvatar avatars (List Avatars lists them), "
                             "or turn on sandbox to use the documented sandbox avatar")
        if self.quality not in r["video_qualities"]:
            raise ValueError(f"quality must be one of {', '.join(r['video_qualities'])}, got '{self.quality}'")
        if self.encoding not in r["video_encodings"]:
            raise ValueError(f"encoding must be one of {', '.join(r['video_encodings'])}, got '{self.encoding}'")
        lang = (self.language or "en").strip()
        return LiveAvatarConfig(mode, avatar, (self.voice_id or "").strip(), (self.context_id or "").strip(), lang,
                                self.quality, self.encoding, bool(self.sandbox))

    def token_body(self) -> dict:
        body: dict[str, Any] = {"mode": self.mode, "avatar_id": self.avatar_id, "is_sandbox": self.sandbox,
                                "video_settings": {"quality": self.quality, "encoding": self.encoding}}
        if self.mode == "FULL":
            persona: dict[str, Any] = {"language": self.language}
            if self.voice_id:
                persona["voice_id"] = self.voice_id
            if self.context_id:
                persona["context_id"] = self.context_id
            body["avatar_persona"] = persona
        return body


@dataclass
class StartedSession:
    session_id: str
    livekit_url: str
    livekit_client_token: str
    ws_url: str = ""
    max_session_duration: float | None = None
    extra: dict = field(default_factory=dict)


class LiveAvatar(ApiKeyClient):
    """The API-key side: mint session tokens, list avatars and voices."""

    service = "LiveAvatar"
    auth_header, auth_scheme = "X-API-KEY", ""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, retry: RetryPolicy | None = None,
                 read_timeout_s: float = 30.0, **kw):
        self.rules = rules("liveavatar")
        super().__init__(_base(self.rules, base_url), api_key, self.rules["key_env"], user_dir=user_dir,
                         headers={"Accept": "application/json"}, check_interrupt=check_interrupt, retry=retry,
                         read_timeout_s=read_timeout_s, **kw)

    def _data(self, body: Any, where: str) -> Any:
        return envelope_data(self, body, where, self.rules["success_codes"])

    @guarded
    def create_session_token(self, config: LiveAvatarConfig) -> tuple[str, str]:
        """(session_id, session_token) for ``config`` (checked first)."""
        cfg = config.checked()
        data = self._data(self.request("POST", "v1/sessions/token", json_body=cfg.token_body()), "session token request")
        if not isinstance(data, dict) or not data.get("session_token"):
            raise ApiError(self.service, 200, "session token request: the answer holds no session_token")
        return str(data.get("session_id", "")), str(data["session_token"])

    @guarded
    def session_api(self, session_token: str) -> "LiveAvatarSessionApi":
        return LiveAvatarSessionApi(self.base_url, session_token, secrets=self.secrets(), rules_=self.rules,
                                    check_interrupt=self.check_interrupt)

    @guarded
    def list_avatars(self, public: bool = False, page_size: int = 100) -> list[dict]:
        path = "v1/avatars/public" if public else "v1/avatars"
        return self._results(self.request("GET", f"{path}?page=1&page_size={int(page_size)}"), "avatars")

    @guarded
    def list_voices(self, page_size: int = 100) -> list[dict]:
        return self._results(self.request("GET", f"v1/voices?page=1&page_size={int(page_size)}"), "voices")

    def _results(self, body: Any, what: str) -> list[dict]:
        data = self._data(body, what)
        if isinstance(data, dict):
            data = data.get("results", [])
        return [d for d in (data or []) if isinstance(d, dict)]


class LiveAvatarSessionApi(HttpClient):
    """The session-token side (Bearer): start, keep-alive, stop."""

    service = "LiveAvatar"

    def __init__(self, base_url_: str, session_token: str, *, secrets: list[str], rules_: dict,
                 check_interrupt: Callable[[], None] | None = None, retry: RetryPolicy | None = None, **kw):
        self.rules = rules_
        super().__init__(base_url_, headers={"Authorization": f"Bearer {session_token}", "Accept": "application/json"},
                         secrets=[*secrets, session_token], check_interrupt=check_interrupt, retry=retry,
                         read_timeout_s=kw.pop("read_timeout_s", 30.0), **kw)

    def _data(self, body: Any, where: str) -> Any:
        return envelope_data(self, body, where, self.rules["success_codes"])

    @guarded
    def start(self) -> StartedSession:
        data = self._data(self.request("POST", "v1/sessions/start"), "start session")
        if not isinstance(data, dict) or not data.get("livekit_url") or not data.get("livekit_client_token"):
            raise ApiError(self.service, 200, "start session: the answer holds no LiveKit room (livekit_url, livekit_client_token)")
        # short-lived, but secrets all the same: redacted from every message (the socket URL's query
        # values only: the URL itself names the host, which messages must keep readable)
        self._secrets += [str(data[k]) for k in ("livekit_client_token", "livekit_agent_token") if data.get(k)]
        self._secrets += [v for vs in urllib.parse.parse_qs(urllib.parse.urlsplit(str(data.get("ws_url") or "")).query).values()
                          for v in vs if len(v) >= 8]
        return StartedSession(str(data.get("session_id", "")), str(data["livekit_url"]), str(data["livekit_client_token"]),
                              str(data.get("ws_url") or ""), data.get("max_session_duration"))

    @guarded
    def keep_alive(self, session_id: str) -> None:
        self._data(self.request("POST", "v1/sessions/keep-alive", json_body={"session_id": session_id}), "keep-alive")

    @guarded
    def stop(self, session_id: str, reason: str = "USER_CLOSED") -> None:
        self._data(self.request("POST", "v1/sessions/stop", json_body={"session_id": session_id, "reason": reason}),
                   "stop session")


def _base(r: dict, given: str | None) -> str:
    return base_url(r, given)


# -- the LITE WebSocket ---------------------------------------------------------------------------

class LiteSocket:
    """The LITE session's WebSocket, run by aiohttp in a thread of its own (the callers are threads)."""

    def __init__(self, url: str, redact: Callable[[str], str], on_event: Callable[[dict], None],
                 on_closed: Callable[[str], None]):
        self.url = url
        self.redact = redact
        self.on_event = on_event
        self.on_closed = on_closed
        self.state = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws = None
        self._http = None
        self._thread: threading.Thread | None = None
        self._state_cv = threading.Condition()
        self._closing = False
        self.sent = 0

    def open(self, timeout_s: float, check: Check) -> None:
        """Connect and wait for ``session.state_updated`` "connected" (events sent before it are lost)."""
        ready = threading.Event()
        box: dict[str, BaseException] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._main(ready, box))
                pending = asyncio.all_tasks(loop)  # a close still on its way: let it finish
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=5))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="dh-liveavatar-ws", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.1):
            check()
            if time.monotonic() > deadline:
                self.close()
                raise ApiError("LiveAvatar", 0, f"the LITE socket did not open within {timeout_s:g} s")
        if "exc" in box:
            raise ApiError("LiveAvatar", 0, self.redact(f"the LITE socket could not open: {box['exc']}")) from None
        with self._state_cv:
            while self.state != "connected":
                if self.state in ("closed", "closing"):
                    raise ProviderSessionEnded("LiveAvatar closed the LITE session before it connected")
                if time.monotonic() > deadline:
                    raise ApiError("LiveAvatar", 0, f"the LITE session did not report 'connected' within {timeout_s:g} s "
                                   f"(last state: {self.state})")
                self._state_cv.wait(0.1)
                check()

    async def _main(self, ready: threading.Event, box: dict) -> None:
        import aiohttp

        try:
            self._http = aiohttp.ClientSession()
            self._ws = await self._http.ws_connect(self.url, heartbeat=30, max_msg_size=4 * 1024 * 1024)
        except Exception as exc:  # noqa: BLE001 (reported to the opener, redacted there)
            box["exc"] = exc
            ready.set()
            if self._http is not None:
                await self._http.close()
            return
        with self._state_cv:
            self.state = "connecting"
        ready.set()
        why = "the LiveAvatar socket closed"
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        ev = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(ev, dict):
                        self._event(ev)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    why = "the LiveAvatar socket failed (the network dropped?)"
                    break
        except Exception as exc:  # noqa: BLE001
            why = f"the LiveAvatar socket failed: {type(exc).__name__}"
        finally:
            await self._http.close()
            with self._state_cv:
                was = self.state
                self.state = "closed"
                self._state_cv.notify_all()
            if not self._closing:
                self.on_closed(why if was != "closed" else "LiveAvatar closed the session")

    def _event(self, ev: dict) -> None:
        if ev.get("type") == "session.state_updated":
            with self._state_cv:
                self.state = str(ev.get("state", self.state))
                self._state_cv.notify_all()
            if self.state in ("closing", "closed") and not self._closing:
                self.on_closed(f"LiveAvatar ended the session (state {self.state})")
        try:
            self.on_event(ev)
        except Exception:  # noqa: BLE001
            log.exception("[DigitalHuman] LiveAvatar: handling a socket event failed")

    def send(self, msg: dict, timeout_s: float = 10.0) -> None:
        if self._ws is None or self._loop is None or self.state != "connected":
            raise ProviderSessionEnded(f"the LiveAvatar LITE socket is not connected (state {self.state})")
        fut = asyncio.run_coroutine_threadsafe(self._ws.send_str(json.dumps(msg)), self._loop)
        try:
            fut.result(timeout_s)
        except Exception as exc:  # noqa: BLE001
            raise ApiError("LiveAvatar", 0, self.redact(f"sending to the LITE socket failed: {type(exc).__name__}: {exc}")) from None
        self.sent += 1

    def close(self) -> None:
        self._closing = True
        ws, loop = self._ws, self._loop
        if ws is not None and loop is not None and not loop.is_closed():
            try:  # the close coroutine is made inside the loop, so a loop that already ended leaves none behind
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(ws.close()))
            except RuntimeError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


# -- the backend ----------------------------------------------------------------------------------

class LiveAvatarBackend(ProviderBackend):
    """FULL or LITE LiveAvatar session for :class:`~..engine.live.remote.RemoteSession`."""

    provider = "liveavatar"
    transport = "livekit"
    can_interrupt = True

    def __init__(self, config: LiveAvatarConfig, *, api_key: str | None = None, base_url_: str | None = None,
                 user_dir: str | None = None, plan: str | None = None):
        super().__init__()
        self.config = config.checked()
        self.lite = self.config.mode == "LITE"
        self.label = f"LiveAvatar {self.config.mode}" + (" (sandbox)" if self.config.sandbox else "")
        self.modes = ("repeat", "chat", "audio") if self.lite else ("repeat", "chat")
        self.audio_in = self.lite
        self.keep_alive_s = float(self.rules["keep_alive_s"])
        self.plan = plan
        self.api = LiveAvatar(api_key, base_url_, user_dir=user_dir)
        self.session: LiveAvatarSessionApi | None = None
        self.started: StartedSession | None = None
        self.socket: LiteSocket | None = None
        self.page_in_room = False
        self.relay_viewer = ""  # the page that publishes FULL mode's commands into the room (the last to join it)
        self._speaking: dict[str, threading.Event] = {}

    # -- life ----------------------------------------------------------------------------
    def open(self, check: Check) -> dict:
        self.api.check_interrupt = check
        try:
            sid, token = self.api.create_session_token(self.config)
        except ApiError as exc:
            raise self.explained(exc) from None
        self.session = self.api.session_api(token)
        self.session.check_interrupt = check
        try:
            self.started = self.session.start()
        except BaseException as exc:
            # Cancel or an error while starting: the start may have reached LiveAvatar, so stop it by its id
            self.started = StartedSession(sid, "", "")
            self.close("the start did not complete")
            self.started = None
            if isinstance(exc, ApiError):
                raise self.explained(exc) from None
            raise
        if self.lite:
            if not self.started.ws_url:
                self.close("no LITE socket")
                raise ApiError("LiveAvatar", 200, "start session: a LITE session came back without its ws_url")
            self.socket = LiteSocket(self.started.ws_url, self.session.redact, self._on_socket_event, self.ended)
            try:
                self.socket.open(float(self.rules["lite"]["connect_timeout_s"]), check)
            except BaseException:
                self.close("the LITE socket did not connect")
                raise
        return {"avatar_id": self.config.avatar_id, "mode": self.config.mode, "sandbox": self.config.sandbox,
                "quality": self.config.quality, "provider_session": self.started.session_id}

    def page_join(self, viewer: str, check: Check) -> dict:
        if self.started is None:
            raise ProviderSessionEnded("the LiveAvatar session has not started")
        return {"livekit_url": self.started.livekit_url, "token": self.started.livekit_client_token,
                "relay": not self.lite, "command_topic": self.rules["livekit_command_topic"],
                "response_topic": self.rules["livekit_response_topic"], "avatar_identity": "heygen"}

    def page_step(self, step: str, body: dict, check: Check) -> dict:
        if step != "event":
            raise ValueError(f"a LiveAvatar session takes the steps join, ping, leave and event, not '{step}'")
        ev = body.get("data") if isinstance(body.get("data"), dict) else {}
        kind = str(body.get("event") or ev.get("event_type") or "")
        if kind == "room":
            viewer = str(body.get("viewer") or "")
            if ev.get("state") == "connected":
                self.page_in_room, self.relay_viewer = True, viewer
            elif viewer == self.relay_viewer:
                self.page_in_room, self.relay_viewer = False, ""
            self.emit("room", state=str(ev.get("state", "")))
        elif kind in ("avatar.speak_started", "avatar.speak_ended"):
            self.emit("speaking" if kind.endswith("started") else "spoken", source="provider")
        elif kind in ("avatar.transcription", "user.transcription"):
            who = "avatar" if kind.startswith("avatar") else "user"
            self.emit("transcript", who=who, text=str(ev.get("text", ""))[:2000])
        elif kind == "session.stopped":
            self.ended(f"LiveAvatar stopped the session ({ev.get('end_reason', 'no reason given')})")
        return {"ok": True}

    # -- speaking --------------------------------------------------------------------------
    def _command(self, event_type: str, **payload: Any) -> None:
        if not self.page_in_room:
            raise NeedsPage("LiveAvatar FULL mode takes its commands through the LiveKit room the page joined: open this "
                            "session in the Live panel (or its page) first, then send again")
        sid = self.started.session_id if self.started else ""
        self.emit("command", transport="livekit", viewer=self.relay_viewer, topic=self.rules["livekit_command_topic"],
                  payload={"event_id": str(uuid.uuid4()), "event_type": event_type, "session_id": sid, **payload})

    def speak_text(self, text: str, mode: str, check: Check) -> dict:
        if self.lite:
            raise ValueError("a LITE session speaks our own audio: give it a voice (speak_pcm)")
        self._command("avatar.speak_response" if mode == "chat" else "avatar.speak_text", text=text)
        return {"speech_s": None}

    def speak_pcm(self, chunks: Iterator[tuple[np.ndarray, int]], check: Check) -> dict:
        if not self.lite or self.socket is None:
            raise ValueError("only a LITE session lip-syncs our own audio; FULL mode speaks with LiveAvatar's voice")
        lr = self.rules["lite"]
        chunker = Pcm16Chunker(int(lr["sample_rate"]), float(lr["first_chunk_s"]), float(lr["chunk_s"]),
                               int(lr["max_packet_bytes"]) * 3 // 4)
        event_id = f"speak-{uuid.uuid4()}"
        done = threading.Event()
        with self._lock:
            self._speaking[event_id] = done
        for x, sr in chunks:
            check()
            for pcm in chunker.feed(x, sr):
                check()
                self._send_audio(event_id, pcm)
        for pcm in chunker.flush():
            check()
            self._send_audio(event_id, pcm)
        self.socket.send({"type": "agent.speak_end", "event_id": event_id})
        return {"speech_s": chunker.samples_out / float(lr["sample_rate"]), "event_id": event_id}

    def _send_audio(self, event_id: str, pcm: bytes) -> None:
        self.socket.send({"type": "agent.speak", "event_id": event_id, "audio": base64.b64encode(pcm).decode("ascii")})

    def wait_spoken(self, event_id: str, timeout_s: float, check: Check) -> bool:
        """Wait for ``agent.speak_ended`` of ``event_id`` (LITE); False on timeout."""
        with self._lock:
            ev = self._speaking.get(event_id)
        if ev is None:
            return True
        end = time.monotonic() + timeout_s
        while not ev.wait(0.1):
            check()
            if time.monotonic() > end:
                return False
        return True

    def _on_socket_event(self, ev: dict) -> None:
        kind = ev.get("type")
        eid = str(ev.get("event_id", ""))
        if kind == "agent.speak_started":
            self.emit("speaking", source="provider")
        elif kind in ("agent.speak_ended", "agent.speak_interrupted"):
            with self._lock:
                done = self._speaking.pop(eid, None)
            if done is not None:
                done.set()
            self.emit("spoken" if kind == "agent.speak_ended" else "interrupted", by="provider", source="provider")

    def interrupt(self, check: Check) -> None:
        if self.lite:
            if self.socket is not None and self.socket.state == "connected":
                self.socket.send({"type": "agent.interrupt", "event_id": f"interrupt-{uuid.uuid4()}"})
            with self._lock:
                waiting = list(self._speaking.values())
                self._speaking.clear()
            for ev in waiting:
                ev.set()
        elif self.page_in_room:
            self._command("avatar.interrupt")

    def keep_alive(self, check: Check) -> None:
        if self.session is None or self.started is None:
            return
        self.session.check_interrupt = check
        try:
            self.session.keep_alive(self.started.session_id)
        except ApiError as exc:
            if ended_error(exc):
                raise as_ended(exc, "LiveAvatar") from None
            raise
        if self.socket is not None and self.socket.state == "connected":
            self.socket.send({"type": "session.keep_alive", "event_id": f"keepalive-{uuid.uuid4()}"})

    def cost(self, seconds: float, speech_seconds: float) -> tuple[float, str, bool]:
        p = streaming_avatar_cost("liveavatar", seconds=seconds, mode=self.config.mode, sandbox=self.config.sandbox,
                                  plan=self.plan)
        return p.usd, p.basis, p.estimated

    def close(self, reason: str) -> None:
        if self.socket is not None:
            self.socket.close()
        if self.session is not None and self.started is not None:
            self.session.check_interrupt = None
            self.session.retry = RetryPolicy(max_tries=2, base_delay_s=0.5)
            self.session.read_timeout_s = float(rules("session")["stop_timeout_s"])
            try:
                self.session.stop(self.started.session_id, self.rules["stop_reason"])
            except Exception as exc:  # noqa: BLE001 (a stop that fails is reported, never raised)
                log.warning("[DigitalHuman] LiveAvatar: stopping the session failed (it ends by itself after 5 idle "
                            "minutes): %s", self.session.redact(str(exc)))
