"""Commercial streaming avatars through a real ComfyUI and a real browser, against the local fakes of
LiveAvatar, HeyGen and D-ID (their URLs and keys are in the server's environment, as a user's keys
would be).

- D-ID: the shipped workflow (Step 1's portrait, from the fake OpenAI, -> D-ID live session) runs;
  headless Chromium opens the standalone page and then the Live panel inside ComfyUI's frontend;
  our page answers the fake D-ID's real WebRTC offer (an aiortc peer sending a moving test video),
  the video shows moving frames, the workflow's greeting and a typed message are spoken (the data
  channel's stream/started and stream/done come back through the page); the D-ID key (and the
  OpenAI key) appear nowhere in the page, its network log, our routes' answers, ComfyUI's history
  or its log.
- LiveAvatar FULL: the page loads the vendored LiveKit client from our routes and tries to join the
  room with the client token our server minted; the fake's LiveKit endpoint records that join.
  The LiveKit media path itself cannot be faked here, so this stops at the room join.
- LiveAvatar LITE: the shipped workflow speaks with a (small) CosyVoice 2 voice; its audio reaches
  the fake's socket as 24 kHz PCM chunks as documented, after "connected".
- A prompt cancelled while it waits stops its session; ComfyUI stopping stops every session.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from browser import PROBE, browser_page
from comfy_helpers import run_prompt
from live_server import http

pytestmark = pytest.mark.integration

API = Path(__file__).resolve().parents[2] / "workflows" / "api"
ROUTES = "/digitalhuman/live"


def wait_for(pred, timeout=120, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def session_named(comfy, name):
    st, body = http("GET", f"{comfy.url}{ROUTES}/sessions")
    return next((s for s in body.get("sessions", []) if s["name"] == name and s["state"] != "closed"), None)


def events(comfy, sid):
    st, body = http("GET", f"{comfy.url}{ROUTES}/s/{sid}/events?after=0")
    return body.get("events", [])


def in_background(fn):
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def outside(comfy, log) -> set[str]:
    host = urlsplit(comfy.url).netloc
    return {u for u in log["requests"] if not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != host}


def assert_no_key(comfy, page, log, *keys):
    """No form of ``keys`` in the page, what it fetched, our routes' answers, ComfyUI's history or log."""
    html = page.content()
    answers = [http("GET", f"{comfy.url}{ROUTES}/sessions")[1]]
    for s in answers[0]["sessions"]:
        answers += [http("GET", f"{comfy.url}{ROUTES}/s/{s['id']}")[1], events(comfy, s["id"])]
    history = http("GET", f"{comfy.url}/history")[1]
    server_log = Path(comfy.log_path).read_text(errors="replace")
    for key in keys:
        for piece in (key, key[:12], key[-12:]):
            assert piece not in html, "key in the page"
            assert piece not in json.dumps(log), "key in the page's requests or console"
            assert piece not in json.dumps(answers), "key in a route's answer"
            assert piece not in json.dumps(history), "key in ComfyUI's history"
            assert piece not in server_log, "key in ComfyUI's log"


def wait_video(page, timeout_ms=60000):
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.readyState >= 2 && v.videoWidth > 0; }",
                           timeout=timeout_ms)
    page.evaluate(PROBE)
    page.wait_for_function("() => window.__dhProbe.count > 25", timeout=60000)


def test_did_portrait_session_plays_in_the_page_and_the_panel(comfy, fake_apis):
    did, openai = fake_apis.did, fake_apis.openai
    prompt = json.loads((API / "did_live_portrait.json").read_text())
    worker, box = in_background(lambda: run_prompt(comfy, prompt))
    sess = wait_for(lambda: session_named(comfy, "d-id portrait"), 180)
    assert sess, f"the session did not appear: {box}"
    assert sess["kind"] == "D-ID" and sess["transport"] == "did-webrtc" and sess["modes"] == ["repeat", "audio"]
    stream = did.one()
    assert stream.source_url in did.images  # the generated portrait was uploaded first
    with browser_page() as (page, log):
        page.goto(comfy.url + sess["link"])
        wait_video(page)
        page.wait_for_function("() => window.__dhProbe.frames.some(f => f[1] > 60)", timeout=30000)  # the test video moves
        assert page.evaluate("() => document.querySelector('video').videoWidth") == 320
        worker.join(120)  # the workflow's greeting waited for this page, then was spoken
        assert not worker.is_alive() and "error" not in box, box
        out = box["result"].outputs
        assert "Hello! I am the portrait" in stream.talks[0]["script"]["input"]
        greeting_s = 0.06 * len(stream.talks[0]["script"]["input"])
        total = out["5"]["text"][0] if "text" in out["5"] else ""
        assert "total:" in total
        # type in the panel: D-ID says it; the data channel's events come back through the page
        page.fill(".dhl textarea", "Typed in the panel.")
        page.click(".dhl-send")
        assert wait_for(lambda: len(stream.talks) == 2, 30)
        assert stream.talks[1]["script"]["input"] == "Typed in the panel." and stream.talks[1]["session_id"] == stream.session_id
        assert wait_for(lambda: [e for e in events(comfy, sess["id"]) if e["type"] == "spoken"], 30)
        kinds = [e["type"] for e in events(comfy, sess["id"])]
        assert "speaking" in kinds and "spoken" in kinds
        st = http("GET", f"{comfy.url}{ROUTES}/s/{sess['id']}")[1]
        assert st["speech_s"] == pytest.approx(greeting_s + 0.06 * len("Typed in the panel."), rel=1e-6)
        assert st["cost_estimated"] and st["cost_usd"] == pytest.approx(st["speech_s"] / 60 * 0.08, abs=1e-6)
        assert outside(comfy, log) == set()
        assert_no_key(comfy, page, log, did.api_key, openai.api_key)
    # the page went away: its viewer left (the session stops after the grace period; here we close it)
    assert wait_for(lambda: any(e["type"] == "viewer" and e.get("left") for e in events(comfy, sess["id"])), 30)
    http("POST", f"{comfy.url}{ROUTES}/s/{sess['id']}/close", b"")
    assert wait_for(lambda: stream.deleted or all(s.deleted for s in did.streams.values()), 30)


def test_the_live_panel_inside_comfyui_shows_a_did_session(comfy, fake_apis, testdata):
    did = fake_apis.did
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "s6.jpg"}},
              "2": {"class_type": "DH_AvatarSessionStart", "inputs": {
                  "provider": "D-ID", "avatar": "", "voice": "", "quality": "high", "language": "en", "max_minutes": 5.0,
                  "sandbox": False, "session_name": "panel d-id", "portrait": ["1", 0], "source_url": "", "context_id": "",
                  "knowledge": ""}}}
    from comfy_helpers import upload

    upload(comfy, testdata / "s6.jpg")
    info = run_prompt(comfy, prompt).outputs["2"]["dh_live"][0]
    try:
        with browser_page() as (page, log):
            page.goto(comfy.url + "/")
            page.wait_for_function("() => window.app && window.app.graph", timeout=180000)
            page.wait_for_selector(".dh-live-tab-button, .dh-live-toggle", timeout=60000)
            before = outside(comfy, log)
            tab = page.locator(".dh-live-tab-button")
            if tab.count():
                tab.first.click()
            else:
                page.click(".dh-live-toggle")
            page.wait_for_selector(".dhl-picker option", state="attached", timeout=30000)
            page.select_option(".dhl-picker", info["id"])
            wait_video(page)
            page.wait_for_function("() => window.__dhProbe.frames.some(f => f[1] > 60)", timeout=30000)
            assert outside(comfy, log) - before == set()
            assert_no_key(comfy, page, log, did.api_key)
    finally:
        http("POST", f"{comfy.url}{ROUTES}/s/{info['id']}/close", b"")


def test_liveavatar_full_joins_the_room_with_the_minted_token_only(comfy, fake_apis):
    la = fake_apis.liveavatar
    prompt = json.loads((API / "liveavatar_full_script.json").read_text())
    start = {"1": prompt["1"]}  # the script's Speak needs the LiveKit media path, which cannot be faked here
    result = run_prompt(comfy, start)
    info = result.outputs["1"]["dh_live"][0]
    s = next(x for x in la.sessions.values() if x.state == "started" and x.mode == "FULL")
    assert s.avatar_id == "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a" and s.body["is_sandbox"] is True
    joins0 = len(la.livekit_joins)
    try:
        with browser_page() as (page, log):
            page.goto(comfy.url + info["link"])
            page.wait_for_function("() => /LiveKit room/.test(document.querySelector('.dhl-msg').textContent)", timeout=60000)
            assert "could not join the provider's LiveKit room" in page.inner_text(".dhl-msg")
            joins = la.livekit_joins[joins0:]
            assert joins and all(j["query"].get("access_token") == s.client_token for j in joins if "access_token" in j["query"])
            assert any(j["path"].startswith("/livekit/rtc") for j in joins)
            vendored = [u for u in log["requests"] if u.endswith("/static/vendor/livekit-client.esm.mjs")]
            assert vendored and all(urlsplit(u).netloc == urlsplit(comfy.url).netloc for u in vendored)
            assert outside(comfy, log) - {u for u in log["requests"] if urlsplit(u).port == la.port} == set()
            assert_no_key(comfy, page, log, la.api_key, s.token)
    finally:
        http("POST", f"{comfy.url}{ROUTES}/s/{info['id']}/close", b"")
    assert wait_for(lambda: s.state == "stopped", 30) and s.stop_reason == "USER_CLOSED"


def test_liveavatar_lite_speaks_with_a_cosyvoice_voice(comfy, fake_apis):
    la = fake_apis.liveavatar
    before = set(la.sessions)
    prompt = json.loads((API / "liveavatar_lite_cosyvoice.json").read_text())
    prompt["5"]["inputs"]["text"] = "Good morning, welcome."
    result = run_prompt(comfy, prompt)
    sid_ours = result.outputs["4"]["dh_live"][0]["id"]
    try:
        s = next(la.sessions[k] for k in set(la.sessions) - before)
        assert s.mode == "LITE" and s.dropped == []  # nothing sent before "connected"
        eid, u = next(iter(s.utterances.items()))
        sizes = [len(c) for c in u["chunks"]]
        assert u["ended"] and sizes[0] == 28800 and all(n == 48000 for n in sizes[1:-1])  # 600 ms, then 1 s at 24 kHz
        assert [k for k, e in s.order if e == eid][-1] == "agent.speak_end"
        audio = la.audio(s.id, eid)
        assert len(audio) > 4800 and float(abs(audio).max()) > 0.01  # a real voice's samples, not silence
        cost = result.outputs["6"]["text"][0]
        assert "total: $0.000" in cost  # sandbox: free
    finally:
        http("POST", f"{comfy.url}{ROUTES}/s/{sid_ours}/close", b"")


def test_cancelling_the_prompt_stops_its_session(comfy, fake_apis):
    la = fake_apis.liveavatar
    prompt = json.loads((API / "liveavatar_full_script.json").read_text())
    prompt["1"]["inputs"]["session_name"] = "cancelled"
    before = set(la.sessions)
    worker, box = in_background(lambda: run_prompt(comfy, prompt))
    sess = wait_for(lambda: session_named(comfy, "cancelled"), 120)  # the Speak now waits for a page
    assert sess
    time.sleep(1.0)
    http("POST", f"{comfy.url}/interrupt", {})
    worker.join(60)
    s = next(la.sessions[k] for k in set(la.sessions) - before)
    assert wait_for(lambda: s.state == "stopped", 30) and s.stop_reason == "USER_CLOSED"
    def closed():  # the session reports "closed" just after the provider's stop call returns
        return [e for e in events(comfy, sess["id"]) if e["type"] == "state" and e["state"] == "closed"]

    assert wait_for(closed, 10), events(comfy, sess["id"])
    assert "cancel" in closed()[-1]["reason"]


def test_comfyui_stopping_stops_every_session(comfy, fake_apis, tmp_path):
    from comfy_server import ComfyServer, find_comfyui

    la = fake_apis.liveavatar
    server = ComfyServer(comfyui=find_comfyui(), workdir=tmp_path / "second", env=comfy.env)
    server.start(timeout=300)
    try:
        prompt = json.loads((API / "liveavatar_full_script.json").read_text())
        before = set(la.sessions)
        run_prompt(server, {"1": prompt["1"]})
        s = next(la.sessions[k] for k in set(la.sessions) - before)
        assert s.state == "started"
    finally:
        server.stop()
    assert wait_for(lambda: s.state == "stopped", 30), "ComfyUI exited without stopping the provider's session"
    assert s.stop_reason == "USER_CLOSED"
