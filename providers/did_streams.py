"""D-ID Talks Streams (a portrait that speaks in real time over WebRTC; D-ID calls them legacy next
to its Agents streams): client and the backend a :class:`~..engine.live.remote.RemoteSession` drives.

Contract followed (docs.d-id.com, read 2026-06: "Talks Streams Overview", "Create a new stream",
"Start a stream" (SDP), "Submit network information" (ICE), "Create a talk stream", "Delete a
stream", "Upload an image", "Upload an audio", and D-ID's own example de-id/live-streaming-demo
``streaming-client-api.js``):

- auth ``Authorization: Basic <key>`` with the key exactly as D-ID issues it (already encoded);
- ``POST /images`` (multipart ``image``, JPEG/PNG up to 10 MB) -> ``{id, url}``: the portrait's
  ``source_url``; ``POST /audios`` (multipart ``audio``) -> ``{id, url}`` for audio scripts;
- ``POST /talks/streams`` ``{source_url, stream_warmup?}`` -> 201 ``{id, offer: {type, sdp},
  ice_servers: [...], session_id}``: D-ID offers, the page answers; ``session_id`` is a load
  balancer cookie that must be echoed in the body of every later call of the stream (or the call
  reaches another server instance and fails);
- ``POST /talks/streams/{id}/sdp`` ``{answer: {type, sdp}, session_id}``;
  ``POST /talks/streams/{id}/ice`` ``{candidate, sdpMid, sdpMLineIndex, session_id}`` (no
  candidate: end of candidates);
- ``POST /talks/streams/{id}`` ``{script: {type: "text", input, provider: {type, voice_id}} |
  {type: "audio", audio_url}, config: {stitch: true}, session_id}`` -> ``{status: "started",
  duration?, session_id}``;
- ``DELETE /talks/streams/{id}`` ``{session_id}``;
- errors ``{kind, description}`` (e.g. 401 ``AuthorizationError``, 402 ``InsufficientCreditsError``,
  400 ``SessionError``), shown as "kind: description";
- the page's data channel carries ``stream/started``, ``stream/done``, ``stream/ready``,
  ``stream/error`` (``event:payload`` text); the page reports them here.

Talks Streams have no interrupt: a Stop lets the current sentence play out (the panel says so).
Keys come from ``DID_API_KEY`` or the key file; ``DID_BASE_URL`` points elsewhere (tests).
"""
from __future__ import annotations

import io
import logging
import wave
from typing import Any, Callable, Iterator

import numpy as np

from ..engine.live.backend import Check, NeedsPage
from .avatar_common import ProviderBackend, as_ended, base_url as _base_url, ended_error, rules
from .api_key_client import ApiKeyClient
from .http import ApiError, RetryPolicy, guarded
from .prices import streaming_avatar_cost

log = logging.getLogger("DigitalHuman.did")


class DIDStreams(ApiKeyClient):
    """REST client of D-ID's images, audios and talks streams."""

    service = "D-ID"
    auth_scheme = "Basic "  # the key exactly as D-ID issues it (already encoded)

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, retry: RetryPolicy | None = None, **kw):
        self.rules = rules("did")
        super().__init__(_base_url(self.rules, base_url), api_key, self.rules["key_env"], user_dir=user_dir,
                         headers={"Accept": "application/json"}, check_interrupt=check_interrupt, retry=retry,
                         read_timeout_s=kw.pop("read_timeout_s", 60.0), **kw)

    @guarded
    def upload_image(self, data: bytes, filename: str = "portrait.png") -> str:
        if len(data) > int(self.rules["image_max_bytes"]):
            raise ValueError(f"the portrait is {len(data)} bytes; D-ID takes images of at most {self.rules['image_max_bytes']}")
        ctype = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
        body = self.request("POST", "images", files={"image": (filename, data, ctype)})
        if not isinstance(body, dict) or not body.get("url"):
            raise ApiError(self.service, 200, "upload image: the answer holds no url")
        return str(body["url"])

    @guarded
    def upload_audio(self, data: bytes, filename: str = "speech.wav") -> str:
        if len(data) > int(self.rules["audio_max_bytes"]):
            raise ValueError(f"the audio is {len(data)} bytes; D-ID takes files of at most {self.rules['audio_max_bytes']}")
        body = self.request("POST", "audios", files={"audio": (filename, data, "audio/wav")})
        if not isinstance(body, dict) or not body.get("url"):
            raise ApiError(self.service, 200, "upload audio: the answer holds no url")
        return str(body["url"])

    @guarded
    def create_stream(self, source_url: str, warmup: bool = False) -> dict:
        body = self.request("POST", "talks/streams", json_body={"source_url": source_url, "stream_warmup": bool(warmup)})
        if not isinstance(body, dict) or not body.get("id") or not isinstance(body.get("offer"), dict) \
                or "session_id" not in body:
            raise ApiError(self.service, 200, "create stream: the answer holds no id, offer and session_id")
        return body

    @guarded
    def send_answer(self, stream_id: str, session_id: str, answer: dict) -> None:
        self.request("POST", f"talks/streams/{stream_id}/sdp", json_body={"answer": answer, "session_id": session_id})

    @guarded
    def send_ice(self, stream_id: str, session_id: str, candidate: dict | None) -> None:
        body: dict[str, Any] = {"session_id": session_id}
        if candidate and candidate.get("candidate"):
            body.update(candidate=candidate["candidate"], sdpMid=candidate.get("sdpMid"),
                        sdpMLineIndex=candidate.get("sdpMLineIndex"))
        self.request("POST", f"talks/streams/{stream_id}/ice", json_body=body)

    @guarded
    def talk(self, stream_id: str, session_id: str, script: dict) -> dict:
        body = self.request("POST", f"talks/streams/{stream_id}",
                            json_body={"script": script, "config": self.rules["stream_config"], "session_id": session_id})
        return body if isinstance(body, dict) else {}

    @guarded
    def delete_stream(self, stream_id: str, session_id: str) -> None:
        self.request("DELETE", f"talks/streams/{stream_id}", json_body={"session_id": session_id})


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono float audio as a 16-bit WAV file (what D-ID's audio upload takes)."""
    pcm = np.clip(np.round(np.asarray(samples, np.float32).reshape(-1) * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class DIDBackend(ProviderBackend):
    """A D-ID talks stream for :class:`~..engine.live.remote.RemoteSession` (media: the page answers
    D-ID's WebRTC offer; our server relays the answer and candidates with the key)."""

    provider = "did"
    transport = "did-webrtc"
    modes = ("repeat", "audio")
    audio_in = False  # D-ID takes whole clips (uploaded), not a stream: see speak_audio_clip
    can_interrupt = False
    keep_alive_s = 0.0

    def __init__(self, *, portrait_png: bytes | None = None, source_url: str = "", voice: dict | None = None,
                 api_key: str | None = None, base_url_: str | None = None, user_dir: str | None = None):
        super().__init__()
        if not portrait_png and not (source_url or "").strip():
            raise ValueError("D-ID needs a portrait: connect an IMAGE (it is uploaded to D-ID) or give a source_url")
        self.label = "D-ID"
        self.portrait = portrait_png
        self.source_url = (source_url or "").strip()
        self.voice = dict(voice or self.rules["default_provider"])
        self.api = DIDStreams(api_key, base_url_, user_dir=user_dir)
        self.stream: dict | None = None
        self.answered = False
        self.connected = False  # the page reported its peer connection up: talks can be seen
        self.viewer = ""  # the page whose peer answers the current stream

    @property
    def _ids(self) -> tuple[str, str]:
        if self.stream is None:
            raise ValueError("the D-ID stream has not been created")
        return str(self.stream["id"]), str(self.stream["session_id"])

    def _new_stream(self, check: Check) -> None:
        self.api.check_interrupt = check
        try:
            self.stream = self.api.create_stream(self.source_url, bool(self.rules["stream_warmup"]))
        except ApiError as exc:
            self.stream = None
            raise self.explained(exc) from None
        self.answered = self.connected = False

    def open(self, check: Check) -> dict:
        self.api.check_interrupt = check
        if not self.source_url:
            try:
                self.source_url = self.api.upload_image(self.portrait)
            except ApiError as exc:
                raise self.explained(exc) from None
        self._new_stream(check)
        return {"source": "uploaded portrait" if self.portrait else "source_url", "voice": self.voice.get("voice_id", ""),
                "provider_session": self._ids[0]}

    def page_join(self, viewer: str, check: Check) -> dict:
        with self._lock:
            if self.viewer:  # a page already took this offer (a reload, a second page): that page's stream
                sid, lb = self._ids  # goes, this one gets a new stream (one D-ID stream, one peer)
                try:
                    self.api.delete_stream(sid, lb)
                except ApiError as exc:
                    log.info("[DigitalHuman] D-ID: deleting the replaced stream failed: %s", exc)
                self._new_stream(check)
            self.viewer = viewer
            return {"offer": self.stream["offer"], "ice_servers": self.stream.get("ice_servers") or []}

    def page_step(self, step: str, body: dict, check: Check) -> dict:
        if body.get("viewer") is not None and str(body.get("viewer")) != self.viewer:
            return {"ok": False, "stale": "this page's stream was replaced by a newer page's"}
        sid, lb = self._ids
        self.api.check_interrupt = check
        if step == "answer":
            ans = body.get("answer")
            if not isinstance(ans, dict) or ans.get("type") != "answer" or not str(ans.get("sdp", "")).startswith("v=0"):
                raise ValueError("answer must be {type: 'answer', sdp: 'v=0...'}")
            self._call(lambda: self.api.send_answer(sid, lb, {"type": "answer", "sdp": str(ans["sdp"])}))
            self.answered = True
            return {"ok": True}
        if step == "ice":
            cand = body.get("candidate")
            if cand is not None and not isinstance(cand, str):
                raise ValueError("candidate must be the candidate line (a string) or absent (end of candidates)")
            mline = body.get("sdpMLineIndex")
            if mline is not None and not isinstance(mline, int):
                raise ValueError("sdpMLineIndex must be an integer")
            self._call(lambda: self.api.send_ice(sid, lb, {"candidate": cand, "sdpMid": body.get("sdpMid"),
                                                           "sdpMLineIndex": mline} if cand else None))
            return {"ok": True}
        if step == "event":
            name = str(body.get("event") or "").split(":", 1)[0]
            if name == "stream/started":
                self.emit("speaking", source="provider")
            elif name == "stream/done":
                self.emit("spoken", source="provider")
            elif name == "stream/ready":
                self.emit("ready", source="provider")
            elif name == "stream/error":
                self.emit("error", where="D-ID stream", message=str(body.get("event"))[:300])
            elif name == "room":
                data = body.get("data") if isinstance(body.get("data"), dict) else {}
                state = str(data.get("state", ""))
                self.connected = self.answered and state == "connected"
                self.emit("room", state=state)
            return {"ok": True}
        raise ValueError(f"a D-ID session takes the steps join, answer, ice, event, ping and leave, not '{step}'")

    def _call(self, fn):
        try:
            return fn()
        except ApiError as exc:
            if ended_error(exc) or (exc.err_type or "") == "SessionError":
                raise as_ended(exc, "D-ID") from None
            raise

    def _need_page(self) -> None:
        if not self.connected:
            raise NeedsPage("D-ID streams the talk to the page that answered its offer: open this session in the Live "
                            "panel (or its page)")

    def speak_text(self, text: str, mode: str, check: Check) -> dict:
        if mode != "repeat":
            raise ValueError("D-ID Talks Streams have no chat model: use repeat or audio")
        self._need_page()
        sid, lb = self._ids
        self.api.check_interrupt = check
        out = self._call(lambda: self.api.talk(sid, lb, {"type": "text", "input": text, "provider": self.voice}))
        dur = out.get("duration")
        return {"speech_s": float(dur) if isinstance(dur, (int, float)) else None}

    def speak_audio_clip(self, samples: np.ndarray, rate: int, check: Check) -> dict:
        self._need_page()
        sid, lb = self._ids
        self.api.check_interrupt = check
        seconds = len(samples) / float(rate)
        if seconds > float(self.rules["max_audio_s"]):
            raise ValueError(f"the clip is {seconds:.0f} s; D-ID streams take at most {self.rules['max_audio_s']} s")
        url = self._call(lambda: self.api.upload_audio(wav_bytes(samples, rate)))
        out = self._call(lambda: self.api.talk(sid, lb, {"type": "audio", "audio_url": url}))
        dur = out.get("duration")
        return {"speech_s": float(dur) if isinstance(dur, (int, float)) else seconds}

    def speak_pcm(self, chunks: Iterator[tuple[np.ndarray, int]], check: Check) -> dict:
        parts, rate = [], None
        for x, sr in chunks:
            check()
            if rate is not None and sr != rate:
                raise ValueError("the audio changed its sample rate mid-clip")
            rate = sr
            parts.append(np.asarray(x, np.float32).reshape(-1))
        if not parts:
            raise ValueError("no audio to speak")
        return self.speak_audio_clip(np.concatenate(parts), int(rate), check)

    def interrupt(self, check: Check) -> None:
        raise ValueError("D-ID Talks Streams cannot be interrupted: the current sentence plays out")

    def keep_alive(self, check: Check) -> None:
        return None

    def cost(self, seconds: float, speech_seconds: float) -> tuple[float, str, bool]:
        p = streaming_avatar_cost("did", seconds=seconds, speech_seconds=speech_seconds)
        return p.usd, p.basis, p.estimated

    def close(self, reason: str) -> None:
        if self.stream is None:
            return
        self.api.check_interrupt = None
        self.api.retry = RetryPolicy(max_tries=2, base_delay_s=0.5)
        self.api.read_timeout_s = float(rules("session")["stop_timeout_s"])
        try:
            self.api.delete_stream(*self._ids)
        except Exception as exc:  # noqa: BLE001
            log.warning("[DigitalHuman] D-ID: deleting the stream failed: %s", self.api.redact(str(exc)))
