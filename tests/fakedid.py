"""A fake D-ID Talks Streams API on 127.0.0.1 whose streams are real WebRTC: every stream is an
aiortc peer that offers a moving test video (and silent audio) and a data channel, as D-ID's
servers do; a browser (or an aiortc viewer) answering the offer receives real frames.

Contract followed (see ``providers/did_streams.py``):

- ``Authorization: Basic <key>`` exactly as issued, else 401 ``{kind: "AuthorizationError",
  description: "user unauthenticated"}``;
- ``POST /images`` / ``POST /audios`` (multipart ``image`` / ``audio``; PNG or JPEG / WAV, else 400
  ``ValidationError``) -> ``{id, url}`` (``s3://`` URLs);
- ``POST /talks/streams`` ``{source_url, stream_warmup?}``: the source must be an uploaded image or
  an https URL (400 ``ValidationError``); no credits -> 402 ``InsufficientCreditsError``; answers
  201 ``{id, offer: {type: "offer", sdp}, ice_servers: [], session_id}`` where ``session_id`` is
  a load-balancer cookie string that every later call must echo in its body (else 400
  ``SessionError``);
- ``/sdp`` sets the answer; ``/ice`` adds a trickled candidate (none = end of candidates);
- ``POST /talks/streams/{id}`` with a text (``input`` + ``provider``) or audio (``audio_url`` of an
  upload) script: the data channel says ``stream/started:...``, the video switches to its
  "talking" pattern for the talk's length (60 ms per character, or the audio's length), then
  ``stream/done:...``; answers ``{status: "started", duration, session_id}``;
- ``DELETE /talks/streams/{id}`` ``{session_id}`` closes the peer; ``expire(stream_id)`` plays a
  stream that ended on D-ID's side (later calls: 404 ``NotFoundError``).
"""
from __future__ import annotations

import asyncio
import io
import json
import secrets
import wave
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from fakeaio import CAP, FakeAio, fake_secret

W, H, FPS = 320, 240, 25


def did_key(tag: str) -> str:
    """A D-ID-shaped key (base64-looking user part, ':' and a secret), built at run time."""
    return fake_secret("", tag)[:24] + ":" + secrets.token_urlsafe(18)


def _video_track(stream: "Stream"):
    from aiortc import VideoStreamTrack
    import av

    class Moving(VideoStreamTrack):
        """A bar that sweeps across a gradient (always moving); while talking, a pulsing block where a
        mouth would be."""

        def __init__(self):
            super().__init__()
            self.n = 0
            x = np.linspace(0, 255, W, dtype=np.float32)
            self.base = np.repeat(np.stack([x, np.full(W, 90, np.float32), 255 - x], -1)[None], H, 0).astype(np.uint8)

        async def recv(self):
            pts, time_base = await self.next_timestamp()
            img = self.base.copy()
            bar = (self.n * 6) % W
            img[:, bar:bar + 12] = 255
            if stream.talking:
                h = 20 + int(30 * abs(np.sin(self.n / 3)))
                img[150:150 + h, 120:200] = (200, 30, 30)
            self.n += 1
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = pts, time_base
            return f

    return Moving()


@dataclass
class Stream:
    id: str
    session_id: str
    source_url: str
    pc: object = None
    channel: object = None
    answered: bool = False
    candidates: list = field(default_factory=list)
    end_of_candidates: bool = False
    talks: list = field(default_factory=list)
    talking: bool = False
    deleted: bool = False
    expired: bool = False
    channel_sent: list = field(default_factory=list)


class FakeDID(FakeAio):
    def __init__(self, api_key: str | None = None):
        super().__init__()
        self.api_key = api_key or did_key("test")
        self.images: dict[str, bytes] = {}
        self.audios: dict[str, float] = {}
        self.streams: dict[str, Stream] = {}
        self.credits = True
        self.talk_speed = 1.0  # 1.0: a talk lasts as long as its speech

    def error_body(self, status: int, message: str) -> dict:
        kinds = {401: "AuthorizationError", 402: "InsufficientCreditsError", 404: "NotFoundError", 429: "TooManyRequestsError"}
        return {"kind": kinds.get(status, "InternalServerError" if status >= 500 else "ValidationError"), "description": message}

    @staticmethod
    def _err(status: int, kind: str, description: str) -> web.Response:
        return web.json_response({"kind": kind, "description": description}, status=status)

    def routes(self) -> list:
        return [web.post("/images", self.upload_image), web.post("/audios", self.upload_audio),
                web.post("/talks/streams", self.create), web.post("/talks/streams/{id}/sdp", self.sdp),
                web.post("/talks/streams/{id}/ice", self.ice), web.post("/talks/streams/{id}", self.talk),
                web.delete("/talks/streams/{id}", self.delete)]

    def _authorised(self, request) -> bool:
        return request.headers.get("Authorization", "") == f"Basic {self.api_key}"

    def _denied(self) -> web.Response:
        return self._err(401, "AuthorizationError", "user unauthenticated")

    async def upload_image(self, request):
        if not self._authorised(request):
            return self._denied()
        f = request[CAP].form.get("image")
        if not f or not (f[2][:8] == b"\x89PNG\r\n\x1a\n" or f[2][:3] == b"\xff\xd8\xff"):
            return self._err(400, "ValidationError", "image must be a JPEG or PNG file in the field 'image'")
        iid = "img_" + secrets.token_urlsafe(8)
        url = f"s3://d-id-images-prod/fake/{iid}/image.png"
        self.images[url] = f[2]
        return web.json_response({"id": iid, "url": url}, status=201)

    async def upload_audio(self, request):
        if not self._authorised(request):
            return self._denied()
        f = request[CAP].form.get("audio")
        if not f or f[2][:4] != b"RIFF":
            return self._err(400, "ValidationError", "audio must be a WAV file in the field 'audio'")
        with wave.open(io.BytesIO(f[2])) as w:
            seconds = w.getnframes() / w.getframerate()
        aid = "aud_" + secrets.token_urlsafe(8)
        url = f"s3://d-id-audios-prod/fake/{aid}/speech.wav"
        self.audios[url] = seconds
        return web.json_response({"id": aid, "url": url}, status=201)

    async def create(self, request):
        from aiortc import RTCPeerConnection
        from aiortc.mediastreams import AudioStreamTrack

        if not self._authorised(request):
            return self._denied()
        body = request[CAP].json or {}
        src = str(body.get("source_url", ""))
        if src not in self.images and not src.startswith("https://"):
            return self._err(400, "ValidationError", "source_url is not a valid image url")
        if not self.credits:
            return self._err(402, "InsufficientCreditsError", "not enough credits")
        sid = "strm_" + secrets.token_urlsafe(12)
        lb = (f"AWSALB={secrets.token_urlsafe(48)}; Expires=Thu, 15 Aug 2030 21:04:53 GMT; Path=/; "
              f"AWSALBCORS={secrets.token_urlsafe(48)}; Expires=Thu, 15 Aug 2030 21:04:53 GMT; Path=/; SameSite=None; Secure")
        st = Stream(sid, lb, src)
        pc = RTCPeerConnection()
        st.pc = pc
        st.channel = pc.createDataChannel("JanusDataChannel")
        pc.addTrack(_video_track(st))
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        self.streams[sid] = st
        return web.json_response({"id": sid, "offer": {"type": "offer", "sdp": pc.localDescription.sdp},
                                  "ice_servers": [], "session_id": lb}, status=201)

    def _stream(self, request) -> tuple[Stream | None, web.Response | None]:
        if not self._authorised(request):
            return None, self._denied()
        st = self.streams.get(request.match_info["id"])
        if st is None or st.deleted or st.expired:
            return None, self._err(404, "NotFoundError", "stream not found")
        body = request[CAP].json or {}
        if body.get("session_id") != st.session_id:
            return None, self._err(400, "SessionError", "missing or invalid session_id (it must be echoed on every call)")
        return st, None

    async def sdp(self, request):
        from aiortc import RTCSessionDescription

        st, err = self._stream(request)
        if err is not None:
            return err
        ans = request[CAP].json.get("answer") or {}
        if ans.get("type") != "answer":
            return self._err(400, "ValidationError", "answer.type must be 'answer'")
        await st.pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type="answer"))
        st.answered = True
        return web.json_response({"status": "success"})

    async def ice(self, request):
        from aiortc.sdp import candidate_from_sdp

        st, err = self._stream(request)
        if err is not None:
            return err
        body = request[CAP].json
        if not body.get("candidate"):
            st.end_of_candidates = True
            return web.json_response({"status": "success"})
        line = body["candidate"].split(":", 1)[1] if body["candidate"].startswith("candidate:") else body["candidate"]
        cand = candidate_from_sdp(line)
        cand.sdpMid = body.get("sdpMid")
        cand.sdpMLineIndex = body.get("sdpMLineIndex")
        st.candidates.append(body)
        try:
            await st.pc.addIceCandidate(cand)
        except Exception as exc:  # noqa: BLE001 (a browser's mDNS or TCP candidate aiortc cannot use)
            st.candidates[-1] = {**body, "unused": str(exc)}
        return web.json_response({"status": "success"})

    async def talk(self, request):
        st, err = self._stream(request)
        if err is not None:
            return err
        body = request[CAP].json
        script = body.get("script") or {}
        if script.get("type") == "text":
            if not str(script.get("input", "")).strip() or not isinstance(script.get("provider"), dict):
                return self._err(400, "ValidationError", "a text script needs input and provider")
            dur = 0.06 * len(script["input"])
        elif script.get("type") == "audio":
            if script.get("audio_url") not in self.audios:
                return self._err(400, "ValidationError", "audio_url is not a valid audio url")
            dur = self.audios[script["audio_url"]]
        else:
            return self._err(400, "ValidationError", "script.type must be text or audio")
        if not st.answered:
            return self._err(400, "SessionError", "the stream is not connected yet")
        st.talks.append(body)
        asyncio.ensure_future(self._play(st, dur))
        return web.json_response({"status": "started", "duration": dur, "session_id": st.session_id})

    async def _play(self, st: Stream, dur: float) -> None:
        def say(msg: str) -> None:
            st.channel_sent.append(msg)
            if st.channel is not None and st.channel.readyState == "open":
                st.channel.send(msg)

        st.talking = True
        say("stream/started:" + json.dumps({"video": {"duration": dur}}))
        await asyncio.sleep(dur * self.talk_speed)
        st.talking = False
        say("stream/done:" + json.dumps({"video": {"duration": dur}}))

    async def delete(self, request):
        st, err = self._stream(request)
        if err is not None:
            return err
        st.deleted = True
        await st.pc.close()
        return web.json_response({"status": "success"})

    def expire(self, stream_id: str) -> None:
        st = self.streams[stream_id]
        st.expired = True
        self.call(st.pc.close())

    async def shutdown(self) -> None:
        for st in self.streams.values():
            await st.pc.close()

    def one(self) -> Stream:
        live = [s for s in self.streams.values()]
        assert len(live) == 1, list(self.streams)
        return live[0]
