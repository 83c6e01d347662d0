"""WebRTC viewers of a self-hosted live session, through aiortc (video VP8/H.264, audio Opus).

A viewer is one browser's peer connection. The session's media clock (a thread) hands every frame
to each viewer's sink, which passes it into the event loop; the two tracks give it to aiortc's
senders. Timestamps are media time, counted from the first frame after the connection is up: the
picture of output frame ``i`` gets ``pts = (i - i0) * 90000 / fps`` and its sound the samples
``a(i0) .. `` of the same frames, so the browser, which lines the two up through RTCP sender
reports, shows each frame with its own sound. A viewer that cannot keep up loses picture frames
(their timestamps leave a gap; the sound never gaps), never sync.

Viewers end when their connection fails or closes, when the page stops sending keep-alives, when
negotiation never completes, or when the session ends; each end removes the sink, stops the tracks
and closes the peer connection, so nothing of a vanished browser stays in memory.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from fractions import Fraction

import numpy as np

log = logging.getLogger("DigitalHuman.live")

VIDEO_CLOCK = 90000
AUDIO_CHUNK_S = 0.02  # Opus frames are 20 ms


def ice_servers() -> list:
    """STUN/TURN servers for the server side, from ``DH_LIVE_ICE_SERVERS`` (JSON list of
    ``{"urls", "username"?, "credential"?}``); none by default: host candidates only, which is what
    a browser on the same machine or network needs, and no request leaves the machine."""
    from aiortc import RTCIceServer

    raw = os.environ.get("DH_LIVE_ICE_SERVERS", "").strip()
    if not raw:
        return []
    try:
        items = json.loads(raw)
        return [RTCIceServer(urls=i["urls"], username=i.get("username"), credential=i.get("credential")) for i in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"DH_LIVE_ICE_SERVERS must be a JSON list of {{\"urls\": ...}} objects ({exc})") from None


def _tracks():
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    class VideoTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, fps: float):
            super().__init__()
            self.fps = float(fps)
            self.q: asyncio.Queue = asyncio.Queue()
            self.dropped = 0

        def put(self, rel_index: int, img: np.ndarray) -> None:
            self.q.put_nowait((rel_index, img))
            while self.q.qsize() > 6:  # the encoder is behind: drop the oldest picture, keep the sound
                self.q.get_nowait()
                self.dropped += 1

        async def recv(self):
            import av

            item = await self.q.get()
            if item is None or self.readyState != "live":
                raise MediaStreamError
            k, img = item
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = int(round(k * VIDEO_CLOCK / self.fps))
            f.time_base = Fraction(1, VIDEO_CLOCK)
            return f

        def stop(self) -> None:
            self.q.put_nowait(None)
            super().stop()

    class AudioTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, rate: int):
            super().__init__()
            self.rate = int(rate)
            self.chunk = int(round(self.rate * AUDIO_CHUNK_S))
            self.q: asyncio.Queue = asyncio.Queue()
            self.buf = np.zeros(0, np.int16)
            self.pos = 0

        def put(self, samples: np.ndarray) -> None:
            pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
            self.buf = np.concatenate([self.buf, pcm]) if self.buf.size else pcm
            while self.buf.size >= self.chunk:
                self.q.put_nowait((self.pos, self.buf[:self.chunk]))
                self.pos += self.chunk
                self.buf = self.buf[self.chunk:]

        async def recv(self):
            import av

            item = await self.q.get()
            if item is None or self.readyState != "live":
                raise MediaStreamError
            pts, pcm = item
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono")
            f.sample_rate = self.rate
            f.pts = pts
            f.time_base = Fraction(1, self.rate)
            return f

        def stop(self) -> None:
            self.q.put_nowait(None)
            super().stop()

    return VideoTrack, AudioTrack


class Viewer:
    """One browser watching a session (see the module docstring)."""

    def __init__(self, session, loop: asyncio.AbstractEventLoop, on_end=None, negotiate_timeout_s: float = 20.0):
        from aiortc import RTCConfiguration, RTCPeerConnection

        VideoTrack, AudioTrack = _tracks()
        self.id = secrets.token_urlsafe(12)
        self.session = session
        self.loop = loop
        self.on_end = on_end
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers()))
        self.video = VideoTrack(session.options.fps)
        self.audio = AudioTrack(session.options.out_sample_rate)
        self.created = time.monotonic()
        self.last_ping = self.created
        self.connected = False
        self.closed = False
        self.i0: int | None = None
        self.frames_sent = 0
        self.negotiate_timeout_s = negotiate_timeout_s

        @self.pc.on("connectionstatechange")
        async def _state() -> None:
            st = self.pc.connectionState
            if st == "connected":
                self.connected = True
            elif st in ("failed", "closed"):
                await self.close(f"connection {st}")

    async def answer(self, sdp: str) -> dict:
        """Take the browser's offer; answer with our tracks (ICE candidates included: no trickle)."""
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        kinds = [t.kind for t in self.pc.getTransceivers()]
        if "video" not in kinds:
            raise ValueError("the offer has no video section: add a video transceiver (recvonly) to the offer")
        for t in self.pc.getTransceivers():
            if t.kind == "video" and t.sender.track is None:
                self.pc.addTrack(self.video)
            elif t.kind == "audio" and t.sender.track is None:
                self.pc.addTrack(self.audio)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.session.add_sink(self.sink)
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    # -- frames (called by the session's clock thread) ---------------------------------------
    def sink(self, frame) -> None:
        if not self.closed:
            try:
                self.loop.call_soon_threadsafe(self._push, frame)
            except RuntimeError:  # the loop is closing
                pass

    def _push(self, frame) -> None:
        if self.closed or not self.connected:
            return  # before the connection is up nothing is sent, so nothing is queued
        if self.i0 is None:
            self.i0 = frame.index
        self.video.put(frame.index - self.i0, frame.video)
        self.audio.put(frame.audio)
        self.frames_sent += 1

    # -- life --------------------------------------------------------------------------------
    def expired(self, now: float, ping_timeout_s: float) -> str | None:
        """Why this viewer should end now, or None."""
        if not self.connected and now - self.created > self.negotiate_timeout_s:
            return "negotiation did not complete"
        if now - self.last_ping > ping_timeout_s:
            return "the page stopped sending keep-alives"
        return None

    async def close(self, why: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.session.remove_sink(self.sink)
        except Exception:
            pass
        self.video.stop()
        self.audio.stop()
        try:
            await self.pc.close()
        except Exception:
            log.debug("[DigitalHuman] live: closing a peer connection failed", exc_info=True)
        log.info("[DigitalHuman] live viewer %s of session %s ended: %s", self.id[:6], getattr(self.session, "id", "")[:6], why)
        if self.on_end is not None:
            self.on_end(self, why)

    def stats(self) -> dict:
        return {"viewer": self.id, "connected": self.connected, "frames_sent": self.frames_sent,
                "video_dropped": self.video.dropped}
