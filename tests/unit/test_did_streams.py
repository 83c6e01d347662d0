"""D-ID Talks Streams through our client and backend against the fake D-ID (tests/fakedid.py), whose
streams are real aiortc peers: the portrait uploaded first, the session_id cookie echoed on every
call, Basic auth as issued, ``{kind, description}`` errors, and a real WebRTC answer (here from an
aiortc viewer standing in for the page) that receives the moving test video and the data-channel
events of a talk."""
from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from fakedid import FakeDID
from comfyui_digitalhuman.engine.live.backend import NeedsPage, ProviderSessionEnded
from comfyui_digitalhuman.providers.did_streams import DIDBackend
from comfyui_digitalhuman.providers.http import ApiError

NOCHECK = lambda: None  # noqa: E731


def png(color=(200, 150, 120)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def fake():
    with FakeDID() as f:
        yield f


@pytest.fixture(autouse=True)
def _env(monkeypatch, fake):
    monkeypatch.setenv("DID_API_KEY", fake.api_key)
    monkeypatch.setenv("DID_BASE_URL", fake.url)


class Events:
    def __init__(self):
        self.items = []

    def emit(self, type_, **data):
        self.items.append((type_, data))
        return len(self.items)

    def of(self, type_):
        return [d for t, d in self.items if t == type_]


class Viewer:
    """An aiortc peer in its own loop, doing what our page does with D-ID's offer."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.frames: list[np.ndarray] = []
        self.messages: list[str] = []
        self.tasks: list = []

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _answer(self, offer: dict) -> dict:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = RTCPeerConnection()

        @self.pc.on("track")
        def on_track(track):
            if track.kind == "video":
                async def pull():
                    while len(self.frames) < 400:
                        try:
                            f = await track.recv()
                        except Exception:
                            return
                        self.frames.append(f.to_ndarray(format="rgb24"))
                self.tasks.append(asyncio.ensure_future(pull()))

        @self.pc.on("datachannel")
        def on_channel(ch):
            ch.on("message", lambda m: self.messages.append(m))

        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return {"type": "answer", "sdp": self.pc.localDescription.sdp}

    def answer(self, offer):
        return self.run(self._answer(offer))

    def close(self):
        async def down():
            for t in self.tasks:
                t.cancel()
            await self.pc.close()

        self.run(down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def wait(pred, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_stream_from_an_uploaded_portrait_plays_real_webrtc_video(fake):
    ev = Events()
    b = DIDBackend(portrait_png=png())
    b.bind(ev.emit, lambda why: None)
    info = b.open(NOCHECK)
    up = fake.requests_to("/images")[0]
    assert up.headers["Authorization"] == f"Basic {fake.api_key}"  # the key as D-ID issues it, not re-encoded
    assert up.form["image"][1] == "image/png" and up.form["image"][2] == png()
    st = fake.one()
    assert st.source_url in fake.images and info["provider_session"] == st.id
    create = fake.requests_to("/talks/streams", "POST")[0]
    assert create.json == {"source_url": st.source_url, "stream_warmup": False}
    page = b.page_join("page-1", NOCHECK)
    assert page["offer"]["type"] == "offer" and page["offer"]["sdp"].startswith("v=0") and page["ice_servers"] == []
    assert fake.api_key not in json.dumps(page) and st.session_id not in json.dumps(page)
    viewer = Viewer()
    try:
        answer = viewer.answer(page["offer"])
        b.page_step("answer", {"answer": answer}, NOCHECK)
        cand = next(line[2:] for line in answer["sdp"].splitlines() if line.startswith("a=candidate:"))
        b.page_step("ice", {"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}, NOCHECK)
        b.page_step("ice", {}, NOCHECK)  # end of candidates
        assert st.answered and st.candidates[0]["candidate"] == cand and st.end_of_candidates
        for r in fake.requests[2:]:  # every call after the create echoes the load-balancer cookie
            assert r.json["session_id"] == st.session_id, r.path
        assert wait(lambda: len(viewer.frames) > 10), "no video frames arrived"
        with pytest.raises(NeedsPage, match="open this session in the Live panel"):
            b.speak_text("Too early.", "repeat", NOCHECK)  # the page has not said its connection is up
        b.page_step("event", {"event": "room", "data": {"state": "connected"}}, NOCHECK)
        a, z = viewer.frames[1], viewer.frames[-1]
        assert a.shape == (240, 320, 3) and np.abs(a.astype(int) - z.astype(int)).max() > 100  # the bar moved
        out = b.speak_text("Hello from the portrait.", "repeat", NOCHECK)
        assert out["speech_s"] == pytest.approx(0.06 * 24)
        talk = st.talks[0]
        assert talk["script"] == {"type": "text", "input": "Hello from the portrait.",
                                  "provider": {"type": "microsoft", "voice_id": "en-US-JennyNeural"}}
        assert talk["config"] == {"stitch": True}
        assert wait(lambda: any(m.startswith("stream/done") for m in viewer.messages), 10)
        assert [m.split(":")[0] for m in viewer.messages] == ["stream/started", "stream/done"]
        for m in viewer.messages:  # what the page relays
            b.page_step("event", {"event": m}, NOCHECK)
        assert ev.of("speaking") and ev.of("spoken")
    finally:
        viewer.close()
    b.close("test")
    assert st.deleted and fake.requests_to("/talks/streams/", "DELETE")[0].json == {"session_id": st.session_id}


def test_audio_is_uploaded_as_wav_and_spoken(fake):
    b = DIDBackend(source_url="https://example.org/presenter.jpg")
    b.bind(lambda *a, **k: 0, lambda why: None)
    b.open(NOCHECK)
    viewer = Viewer()
    try:
        b.page_step("answer", {"answer": viewer.answer(b.page_join("page-1", NOCHECK)["offer"])}, NOCHECK)
        b.page_step("event", {"event": "room", "data": {"state": "connected"}}, NOCHECK)
        rate = 22050
        clip = (0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
        out = b.speak_pcm(iter([(clip[:10000], rate), (clip[10000:], rate)]), NOCHECK)
        wav = fake.requests_to("/audios")[0].form["audio"][2]
        import wave
        with wave.open(io.BytesIO(wav)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (rate, 1, rate)
        assert out["speech_s"] == pytest.approx(1.0)
        assert fake.one().talks[0]["script"]["type"] == "audio"
    finally:
        viewer.close()
    b.close("test")


def test_did_errors_are_readable(fake, monkeypatch):
    monkeypatch.setenv("DID_API_KEY", fake.api_key[:-3] + "xyz")
    with pytest.raises(ApiError, match=r"D-ID API error 401.*user unauthenticated.*check DID_API_KEY") as ei:
        DIDBackend(portrait_png=png()).open(NOCHECK)
    assert ei.value.err_type == "AuthorizationError" and fake.api_key[:10] not in str(ei.value)
    monkeypatch.setenv("DID_API_KEY", fake.api_key)
    fake.credits = False
    with pytest.raises(ApiError, match=r"402.*not enough credits.*no credits left") as ei:
        DIDBackend(portrait_png=png()).open(NOCHECK)
    assert ei.value.err_type == "InsufficientCreditsError"
    with pytest.raises(ApiError, match="image must be a JPEG or PNG"):
        DIDBackend(portrait_png=b"GIF89a not an image").open(NOCHECK)
    with pytest.raises(ValueError, match="D-ID needs a portrait"):
        DIDBackend()


def test_a_stream_ended_on_did_side_ends_the_session(fake):
    b = DIDBackend(source_url="https://example.org/p.jpg")
    b.open(NOCHECK)
    b.answered = b.connected = True  # as after a page connected
    fake.expire(fake.one().id)
    with pytest.raises(ProviderSessionEnded, match="D-ID ended the session: stream not found"):
        b.speak_text("Hello?", "repeat", NOCHECK)


def test_a_second_page_gets_a_fresh_stream(fake):
    b = DIDBackend(source_url="https://example.org/p.jpg")
    b.open(NOCHECK)
    viewer = Viewer()
    try:
        b.page_step("answer", {"answer": viewer.answer(b.page_join("page-1", NOCHECK)["offer"])}, NOCHECK)
        first = b.stream["id"]
        again = b.page_join("page-2", NOCHECK)
        assert b.stream["id"] != first and fake.streams[first].deleted and again["offer"]["type"] == "offer"
        # the first page's late candidates and events are dropped, not sent to its deleted stream (which
        # D-ID would answer 404, and a 404 would end the session)
        late = b.page_step("ice", {"viewer": "page-1", "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}, NOCHECK)
        assert late["ok"] is False and "replaced" in late["stale"]
        assert fake.streams[b.stream["id"]].candidates == []
    finally:
        viewer.close()
    b.close("test")


def test_bad_page_steps_are_refused(fake):
    b = DIDBackend(source_url="https://example.org/p.jpg")
    b.open(NOCHECK)
    with pytest.raises(ValueError, match="answer must be"):
        b.page_step("answer", {"answer": {"type": "offer", "sdp": "v=0"}}, NOCHECK)
    with pytest.raises(ValueError, match="sdpMLineIndex must be an integer"):
        b.page_step("ice", {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMLineIndex": "0"}, NOCHECK)
    with pytest.raises(ValueError, match="not 'bogus'"):
        b.page_step("bogus", {}, NOCHECK)
    with pytest.raises(ValueError, match="cannot be interrupted"):
        b.interrupt(NOCHECK)
    b.close("test")


def test_cost_is_per_minute_of_speech_and_flagged_as_an_estimate():
    b = DIDBackend(source_url="https://example.org/p.jpg")
    assert b.cost(600, 90) == (pytest.approx(1.5 * 0.08), "speech minutes", True)
