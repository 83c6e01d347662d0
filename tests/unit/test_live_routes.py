"""The live routes (server/live_routes.py) and WebRTC (server/webrtc.py) on loopback, with a Python
aiortc viewer: media negotiated through our routes, idle frames that stay idle, speech frames that
change and carry sound, interrupt, three sessions at once, a viewer that vanishes, and every bad
request the issue lists. The browser tests (tests/integration/test_live_browser.py) do the same
through Chromium and a real ComfyUI."""
from __future__ import annotations

import asyncio
import gc
import io
import textwrap
import threading
import time
import wave

import numpy as np
import pytest
import torch

from live_helpers import ToneVoice, make_avatar
from live_server import PyViewer, RouteServer, http, mouth_change
from comfyui_digitalhuman.engine.live.config import limits as data_limits
from comfyui_digitalhuman.engine.live.registry import Registry
from comfyui_digitalhuman.engine.live.render import MuseTalkRenderer
from comfyui_digitalhuman.engine.live.session import LiveOptions, LiveSession
from comfyui_digitalhuman.engine.musetalk.random_models import random_models

pytest.importorskip("aiortc")  # a requirement (requirements.txt); a missing one is a broken install
from comfyui_digitalhuman.server.live_routes import LiveRoutes  # noqa: E402


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return random_models(tiny=True, seed=21)


@pytest.fixture(scope="module")
def avatar(models, testdata):
    return make_avatar(models, testdata, n=1, size=128)  # one frame: an idle picture is exactly still


@pytest.fixture()
def server():
    reg = Registry({**data_limits(), "max_sessions": 4, "max_viewers": 2, "viewer_timeout_s": 6.0,
                    "negotiate_timeout_s": 3.0})
    srv = RouteServer(LiveRoutes(reg))
    srv.reg = reg
    yield srv
    reg.close_all()
    srv.stop()


def start(srv, models, avatar, name="s1", voice=None, **opts):
    o = LiveOptions.from_data(**{"max_side": 0, **opts})
    session, created = srv.reg.start(name, lambda: LiveSession(MuseTalkRenderer(lambda: models, avatar), voice or ToneVoice(),
                                                               options=o, name=name))
    assert created
    return session


def api(srv, sid, path=""):
    return f"{srv.url}/digitalhuman/live/s/{sid}{path}"


def test_a_python_viewer_gets_idle_then_speech_with_sound_then_idle(server, models, avatar):
    s = start(server, models, avatar)
    status, listing = http("GET", f"{server.url}/digitalhuman/live/sessions")
    assert status == 200 and [x["id"] for x in listing["sessions"]] == [s.id]
    assert listing["sessions"][0]["transport"] == "webrtc-offer" and listing["sessions"][0]["link"].endswith(f"#s={s.id}")

    async def run():
        v = PyViewer(server.url, s.id)
        await v.connect()
        await v.wait(lambda: len(v.video) >= 20, 60)
        idle = v.video[5:]
        ref = idle[-1][1]
        assert ref.shape == (128, 128, 3)
        assert max(mouth_change(idle, ref)) < 3.0  # idle: the same picture (up to VP8's refinement)
        n_before = len(v.video)
        t_send = time.monotonic()
        st, body = http("POST", api(server, s.id, "/say"), {"text": "Hello there, how are you today?", "mode": "repeat"})
        assert st == 200 and body["turn"] == 1
        await v.wait(lambda: any(d > 6 for d in mouth_change(v.video[n_before:], ref)), 120)
        first = next(t for (t, _), d in zip(v.video[n_before:], mouth_change(v.video[n_before:], ref)) if d > 6)
        latency = first - t_send
        await v.wait(lambda: s.state == "idle", 120)
        await v.idle(1.0)
        frames = v.video[n_before:]
        d = mouth_change(frames, ref)
        speaking = [x for x in d if x > 6]
        assert len(speaking) >= 10  # the mouth moved during the answer
        assert max(d[-10:]) < 3.0  # and is back to the avatar's own picture afterwards
        loud = [t for t, a in v.audio if np.abs(a).max() > 0.05]
        assert loud and all(t > t_send for t in loud)  # sound only while speaking
        assert abs(loud[0] - first) < 0.5  # ... and it starts with the moving mouth
        lat = next(e for e in s.events.since(0)[0] if e["type"] == "latency")
        print(f"send -> first speaking frame at the Python viewer: {latency * 1000:.0f} ms (server: {lat})")
        await v.close()

    asyncio.run(run())


def test_stop_mid_sentence_stops_the_mouth_within_200_ms(server, models, avatar):
    s = start(server, models, avatar, voice=ToneVoice(speed=0.05))

    async def run():
        v = PyViewer(server.url, s.id)
        await v.connect()
        await v.wait(lambda: len(v.video) >= 10, 60)
        ref = v.video[-1][1]
        n0 = len(v.video)
        http("POST", api(server, s.id, "/say"), {"text": "A long sentence that goes on and on so there is time to stop it."})
        await v.wait(lambda: any(d > 6 for d in mouth_change(v.video[n0:], ref)), 120)
        await v.idle(0.3)
        t_stop = time.monotonic()
        st, body = http("POST", api(server, s.id, "/stop"), b"", ctype="application/octet-stream")
        assert st == 200 and body["stopped"] is True
        await v.idle(1.5)
        after = [(t, f) for t, f in v.video if t > t_stop]
        d = mouth_change(after, ref)
        # frames already in flight (encoder, network, this viewer's decoder) may still show speech;
        # with 4 fade frames the mouth is back within 200 ms + 4 frames of Stop
        back = next(t for (t, _), x in zip(after, d) if x < 3.0)
        assert back - t_stop < 0.2 + 4 / 25 + 0.15, back - t_stop
        assert max(d[-10:]) < 3.0 and s.state in ("idle", "interrupted")
        await v.close()

    asyncio.run(run())


def test_three_sessions_at_once(server, models, avatar):
    ss = [start(server, models, avatar, name=f"s{k}", voice=ToneVoice()) for k in range(3)]

    async def run():
        vs = [PyViewer(server.url, s.id) for s in ss]
        for v in vs:
            await v.connect()
        await asyncio.gather(*(v.wait(lambda v=v: len(v.video) >= 10, 60) for v in vs))
        refs = [v.video[-1][1] for v in vs]
        marks = [len(v.video) for v in vs]
        for k, s in enumerate(ss):
            assert http("POST", api(server, s.id, "/say"), {"text": f"Session number {k} speaks now."})[0] == 200
        await asyncio.gather(*(v.wait(lambda v=v, r=r, m=m: any(d > 6 for d in mouth_change(v.video[m:], r)), 240)
                               for v, r, m in zip(vs, refs, marks)))
        await asyncio.gather(*(v.wait(lambda s=s: s.state == "idle", 240) for v, s in zip(vs, ss)))
        for k, s in enumerate(ss):
            said = [e["text"] for e in s.events.since(0)[0] if e["type"] == "said"]
            assert said and said[0].startswith(f"Session number {k}")
        for v in vs:
            await v.close()

    asyncio.run(run())
    st, listing = http("GET", f"{server.url}/digitalhuman/live/sessions")
    assert len(listing["sessions"]) == 3


VANISHING = textwrap.dedent("""
    import asyncio, sys, time
    sys.path.insert(0, sys.argv[3])
    from live_server import PyViewer
    async def main():
        v = PyViewer(sys.argv[1], sys.argv[2])
        await v.connect()
        await v.wait(lambda: len(v.video) >= 10, 60)
        print("receiving", flush=True)
        await asyncio.sleep(600)
    asyncio.run(main())
""")


def test_a_viewer_that_vanishes_mid_answer_is_cleaned_up(server, models, avatar, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    s = start(server, models, avatar, voice=ToneVoice(speed=0.05))
    script = tmp_path / "vanish.py"
    script.write_text(VANISHING)
    tests_dir = str(Path(__file__).resolve().parents[1])
    def threads():  # the event loop's executor is a bounded pool that aiortc's encoders reuse: not a leak
        return sorted(t.name for t in threading.enumerate() if not t.name.startswith(("ThreadPoolExecutor", "asyncio_")))

    threads_before = threads()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, str(Path(tests_dir).parent / "scripts")])}
    proc = subprocess.Popen([sys.executable, str(script), server.url, s.id, tests_dir], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "receiving" in line
        assert len(server.routes.viewers.get(s.id, {})) == 1 and len(s._sinks) == 1
        viewer = next(iter(server.routes.viewers[s.id].values()))
        http("POST", api(server, s.id, "/say"), {"text": "An answer the vanished viewer will never see the end of."})
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # no goodbye: no close route, no DTLS close
        proc.wait(10)
        t0 = time.monotonic()
        while server.routes.viewers.get(s.id) and time.monotonic() - t0 < 20:
            time.sleep(0.2)
        assert not server.routes.viewers.get(s.id), "the vanished viewer was not cleaned up"
        assert time.monotonic() - t0 < 6.0 + 2.5  # keep-alive timeout (6 s here) + the watcher's period
        assert s._sinks == [] and viewer.closed and viewer.pc.connectionState == "closed"
        assert server.reg.viewers[s.id] == 0
        t1 = time.monotonic()
        while s.state != "idle" and time.monotonic() - t1 < 120:
            time.sleep(0.2)
        assert s.state == "idle"  # the answer went on to its end; the session is ready for the next
        pending = server.call(_leftover_media_tasks())
        assert pending == [], pending
        del viewer
        gc.collect()
        assert threads() == threads_before, (threads(), threads_before)
    finally:
        if proc.poll() is None:
            proc.kill()


async def _leftover_media_tasks() -> list[str]:
    await asyncio.sleep(0.5)
    me = asyncio.current_task()
    names = [(t, repr(t.get_coro())) for t in asyncio.all_tasks() if t is not me]
    return [n for t, n in names if "RTC" in n or "aioice" in n or "Track" in n or "Viewer" in n]


def test_bad_requests_get_clear_answers(server, models, avatar):
    s = start(server, models, avatar)
    c = api(server, s.id, "/connect")
    assert http("POST", c, {"sdp": "hello", "type": "offer"}) == (400, {"error": "bad SDP: an offer starts with 'v=0' and has at least one 'm=' section"})
    st, body = http("POST", c, {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nnonsense\r\n", "type": "offer"})
    assert st == 400 and body["error"].startswith("bad SDP:")
    assert http("POST", c, {"sdp": "v=0 m=", "type": "answer"})[0] == 400
    assert http("POST", c, {"sdp": "v=0", "type": "offer", "extra": 1})[1]["error"].startswith("unknown field 'extra'")
    assert http("POST", c, b"{not json")[1]["error"] == "the body is not valid JSON"
    assert http("POST", c, {"sdp": "v=0\nm=" + "x" * 70000, "type": "offer"})[0] == 413
    assert http("POST", c, b"x" * 200000)[0] == 413  # over the JSON cap, refused before it is parsed
    assert not server.routes.viewers.get(s.id)  # no viewer was left behind by a failed offer
    say = api(server, s.id, "/say")
    assert http("POST", say, {"text": "hi", "mode": "sing"})[1]["error"].startswith("mode must be")
    assert http("POST", say, {"text": 5})[1]["error"] == "field 'text' must be str"
    assert http("POST", say, {"text": "hi", "mode": "chat"})[1]["error"].startswith("this session cannot chat")
    assert http("POST", say, {"text": "   "})[1]["error"].startswith("text: nothing to say")
    big = ("A sentence of a long text. " * 800)[:20000]
    st, body = http("POST", say, {"text": big})
    assert st == 200 and body["state"] == "speaking"  # 20,000 characters are taken (and spoken piece by piece)
    st, body = http("POST", say, {"text": big + "x"})
    assert st in (413, 400) and "at most 20000" in body["error"]
    audio = api(server, s.id, "/audio")
    assert http("POST", audio, b"RIFFnonsense", ctype="text/plain")[0] == 415
    st, body = http("POST", audio, b"\x00\x01garbage" * 100, ctype="audio/webm")
    assert st == 400 and "not readable audio" in body["error"]
    assert http("POST", api(server, s.id, "/stop"), b"")[0] == 200


def test_an_uploaded_clip_is_lip_synced(server, models, avatar):
    s = start(server, models, avatar)
    sr = 16000
    t = np.arange(int(0.6 * sr)) / sr
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 200 * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    st, body = http("POST", api(server, s.id, "/audio"), buf.getvalue(), ctype="audio/wav")
    assert st == 200 and body["seconds"] == pytest.approx(0.6)
    t0 = time.monotonic()
    while s.state != "idle" and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    assert s.timeline.stats["speech_frames"] == 15  # floor(0.6 s x 25 fps)


def test_unknown_sessions_and_viewers(server):
    fake = "A" * 32
    for method, path in [("GET", ""), ("GET", "/events"), ("POST", "/connect"), ("POST", "/say"), ("POST", "/stop"),
                         ("POST", "/close"), ("POST", "/viewers/x/ping")]:
        st, body = http(method, api(server, fake, path), {} if method == "POST" else None)
        assert st == 404 and "no live session with this id" in body["error"], (path, st, body)
    assert http("GET", api(server, "../../etc", ""))[0] == 404
    assert http("GET", f"{server.url}/digitalhuman/live/static/../../__init__.py")[0] == 404
    assert http("GET", f"{server.url}/digitalhuman/live/static/secret.txt")[0] == 404


def test_viewers_per_session_are_bounded_and_events_long_poll(server, models, avatar):
    s = start(server, models, avatar)

    async def run():
        vs = [PyViewer(server.url, s.id) for _ in range(2)]
        for v in vs:
            await v.connect()
        extra = PyViewer(server.url, s.id)
        with pytest.raises(AssertionError, match="viewers, the most allowed"):
            await extra.connect()
        await extra.close()
        for v in vs:
            await v.close()

    asyncio.run(run())
    st, ev = http("GET", api(server, s.id, "/events?after=0"))
    last = ev["next"]
    t0 = time.monotonic()
    threading.Timer(0.5, lambda: http("POST", api(server, s.id, "/say"), {"text": "Ping."})).start()
    st, ev = http("GET", api(server, s.id, f"/events?after={last}&wait=5"))
    assert st == 200 and ev["events"] and 0.4 < time.monotonic() - t0 < 4.5
    assert ev["events"][0]["type"] in ("state", "turn")


def test_no_key_in_any_answer(server, models, avatar, monkeypatch):
    from fakeopenai import FakeOpenAI, fake_key
    from comfyui_digitalhuman.providers.streaming_voices import OpenAIStreamingVoice

    key = fake_key("routes")
    with FakeOpenAI(api_key=key) as fake:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        voice = OpenAIStreamingVoice(base_url=fake.url.replace("127.0.0.1", "localhost"))
        s = start(server, models, avatar, voice=voice)
        http("POST", api(server, s.id, "/say"), {"text": "Hi."})
        fake.script = [("status", 401, {})]
        http("POST", api(server, s.id, "/say"), {"text": "Again."})
        time.sleep(2)
        texts = [http("GET", f"{server.url}/digitalhuman/live/sessions")[1], http("GET", api(server, s.id))[1],
                 http("GET", api(server, s.id, "/events?after=0"))[1]]
        blob = repr(texts)
        assert key not in blob and "fake-routes" not in blob


def test_a_page_closed_mid_negotiation_leaves_nothing(server, models, avatar):
    """The page sent its offer and went away before using the answer: the viewer never connects and is
    dropped after the negotiation timeout (3 s here)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    s = start(server, models, avatar)

    async def run():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        st, body = http("POST", api(server, s.id, "/connect"), {"sdp": pc.localDescription.sdp, "type": "offer"})
        assert st == 200 and body["type"] == "answer"
        await pc.close()  # gone before setRemoteDescription: no ICE check ever reaches the server

    asyncio.run(run())
    assert len(server.routes.viewers.get(s.id, {})) == 1
    t0 = time.monotonic()
    while server.routes.viewers.get(s.id) and time.monotonic() - t0 < 15:
        time.sleep(0.2)
    assert not server.routes.viewers.get(s.id) and s._sinks == []
    assert 2.5 < time.monotonic() - t0 < 3.0 + 2.5
