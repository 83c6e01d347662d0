"""The live digital human through a real ComfyUI and a real browser: the shipped workflow starts a
session (tiny MuseTalk weights from the fake hub, the OpenAI live voice against the fake speech
server, the chat model against the fake chat server), then headless Chromium (Debian's, driven
by Playwright) opens the standalone page and the panel inside ComfyUI's own frontend, negotiates
WebRTC on loopback through our routes, and sees frames that stay still while idle and change
while the avatar speaks, with sound; the send-to-first-speaking-frame latency is measured in the
browser. Chat problems (a 500, a stall) show in the panel and the session goes on; a refused
microphone is explained; nothing is loaded from outside ComfyUI."""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest

from browser import PROBE, browser_page
from comfy_helpers import run_prompt, upload
from fakechat import FakeChat
from live_server import http

pytestmark = pytest.mark.integration

API = Path(__file__).resolve().parents[2] / "workflows" / "api"
IDLE, MOVING = 10, 25  # largest 32x32-cell change: VP8 refining a still picture vs a redrawn mouth


@pytest.fixture(scope="module")
def fakes(fake_apis):
    """The server's fake OpenAI (its URL and key are in the server's environment, as a user's would be)
    speaks; a fake chat server on this machine answers (no key needed there)."""
    with FakeChat() as chat:
        chat.token_delay_s = 0.01
        yield fake_apis.openai, chat


@pytest.fixture(scope="module")
def live(comfy, testdata, fakes):
    """The shipped live workflow, pointed at the fakes, queued on the real ComfyUI."""
    speech, chat = fakes
    upload(comfy, testdata / "s6.jpg")
    prompt = json.loads((API / "live_avatar.json").read_text())
    prompt["4"]["inputs"].update(model="tts-1", speed=0.25, instructions="")  # base_url "": OPENAI_BASE_URL
    prompt["5"]["inputs"].update(base_url=chat.url, model="llama3.2")
    prompt["6"]["inputs"].update(max_side=256, record=True, session_name="browser test")
    result = run_prompt(comfy, prompt)
    info = result.outputs["6"]["dh_live"][0]
    assert info["link"].startswith("/digitalhuman/live/page#s=") and info["created"]
    yield info
    http("POST", f"{comfy.url}/digitalhuman/live/s/{info['id']}/close", b"")


def wait_video(page, timeout_ms=120000):
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.readyState >= 2 && v.videoWidth > 0; }",
                           timeout=timeout_ms)
    page.evaluate(PROBE)
    page.wait_for_function("() => window.__dhProbe.count > 25", timeout=60000)


def speak_and_measure(page, text: str, mode_button: str | None = None) -> float:
    """Send ``text``; return ms from the click to the first frame whose mouth differs from the idle picture."""
    if mode_button:
        page.click(mode_button)
    page.evaluate("() => window.__dhProbe.arm()")
    page.wait_for_function("() => window.__dhProbe.frames.length > 10", timeout=30000)
    idle = page.evaluate("() => Math.max(...window.__dhProbe.frames.map(f => f[1]))")
    assert idle < IDLE, idle  # idle: a still picture
    page.fill(".dhl textarea", text)
    t0 = page.evaluate("() => performance.now()")
    page.click(".dhl-send")
    try:
        page.wait_for_function(f"() => window.__dhProbe.frames.some(f => f[1] > {MOVING})", timeout=180000)
    except Exception:
        raise AssertionError(f"no speaking frame: panel says {page.inner_text('.dhl-log')!r} / {page.inner_text('.dhl-msg')!r}, "
                             f"largest change {page.evaluate('() => Math.max(...window.__dhProbe.frames.map(f => f[1]))')}") from None
    t1 = page.evaluate(f"() => window.__dhProbe.frames.find(f => f[1] > {MOVING})[0]")
    page.wait_for_function("() => document.querySelector('.dhl-state').textContent === 'idle'", timeout=180000)
    page.evaluate("() => new Promise(r => setTimeout(r, 1200))")
    moving = page.evaluate(f"() => window.__dhProbe.frames.filter(f => f[1] > {MOVING}).length")
    tail = page.evaluate("() => window.__dhProbe.frames.slice(-8).map(f => f[1])")
    assert moving >= 5, moving  # the mouth moved for several frames
    assert max(tail) < IDLE, tail  # and the picture is back to the avatar's own
    return t1 - t0


OURS = ("/extensions/ComfyUI-DigitalHuman/", "/digitalhuman/live/")


def outside(comfy, log) -> set[str]:
    host = urlsplit(comfy.url).netloc
    return {u for u in log["requests"] if not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != host}


def only_local(comfy, log, before: set[str] = frozenset()) -> None:
    """Nothing was loaded from outside ComfyUI (beyond what the frontend itself asked for before our
    panel opened: today's frontend checks api.comfy.org for releases) and no script error came from
    our files."""
    assert outside(comfy, log) - set(before) == set(), outside(comfy, log)
    ours = [e for e in log["errors"] if any(o in e for o in OURS)]
    assert ours == [], ours


def test_standalone_page_shows_the_live_avatar(comfy, live, fakes):
    speech, chat = fakes
    with browser_page() as (page, log):
        page.goto(comfy.url + live["link"])
        wait_video(page)
        energy0 = page.evaluate("async () => (await window.dhLive.stats()).audioEnergy || 0")
        ms = speak_and_measure(page, "Hello there, how are you today?")
        stats = page.evaluate("async () => await window.dhLive.stats()")
        assert stats["audioEnergy"] > energy0 + 1e-4  # sound arrived with the speech
        assert stats["fps"] >= 15 and stats["state"] == "connected"
        lat = page.inner_text(".dhl-lat")
        assert "first speaking frame" in lat and "ms (server)" in lat
        print(f"browser: send -> first speaking frame shown {ms:.0f} ms; panel: {lat!r}")

        # Stop in mid-sentence: the answer is cut at the next frame; the mouth fades back over 4 frames
        page.evaluate("() => window.__dhProbe.arm()")
        page.wait_for_function("() => window.__dhProbe.frames.length > 10", timeout=30000)
        page.fill(".dhl textarea", "This is a long sentence that goes on and on, so that there is time to stop it half way through.")
        page.click(".dhl-send")
        page.wait_for_function(f"() => window.__dhProbe.frames.some(f => f[1] > {MOVING})", timeout=180000)
        page.wait_for_timeout(400)
        t_stop = page.evaluate("() => performance.now()")
        page.click(".dhl-stop")
        page.wait_for_function(f"() => window.__dhProbe.frames.some(f => f[0] > {t_stop} && f[1] < {IDLE})", timeout=30000)
        back = page.evaluate(f"() => window.__dhProbe.frames.find(f => f[0] > {t_stop} && f[1] < {IDLE})[0]") - t_stop
        # 200 ms for the interrupt itself, 4 fade frames (160 ms), and what is already encoded, on the
        # network and in the page's jitter buffer (about 100 ms on loopback)
        assert back < 200 + 160 + 150, back
        page.wait_for_function("() => document.querySelector('.dhl-log').textContent.includes('stopped (stop)')", timeout=30000)
        print(f"browser: Stop -> mouth back to the avatar's own picture {back:.0f} ms")
        page.wait_for_function("() => document.querySelector('.dhl-state').textContent === 'idle'", timeout=30000)

        # chat mode: the fake model's answer is spoken piece by piece
        chat.reply = lambda msgs: "Sure, I can tell you that. The museum opens at nine."
        ms_chat = speak_and_measure(page, "When do you open?", mode_button=".dhl button[data-mode=chat]")
        page.wait_for_function("() => document.querySelector('.dhl-log').textContent.includes('The museum opens at nine.')",
                               timeout=60000)
        print(f"browser: chat message -> first speaking frame shown {ms_chat:.0f} ms")

        # the chat endpoint fails: the panel says so, and the session goes on
        chat.script = [("status", 500, {})] * 4
        page.fill(".dhl textarea", "Are you there?")
        page.click(".dhl-send")
        page.wait_for_function("() => document.querySelector('.dhl-msg').textContent.includes('Chat API error 500')",
                               timeout=120000)
        chat.script = []
        page.wait_for_function("() => document.querySelector('.dhl-state').textContent === 'idle'", timeout=60000)
        speak_and_measure(page, "Still here after the error.", mode_button=".dhl button[data-mode=repeat]")

        # audio mode without microphone permission: explained, nothing breaks
        page.click(".dhl button[data-mode=audio]")
        page.click(".dhl-record")
        page.wait_for_function("() => /microphone/.test(document.querySelector('.dhl-msg').textContent)", timeout=30000)
        only_local(comfy, log)
        # the voice's key (in the server's environment) is nowhere in the page or what it fetched
        html = page.content()
        answers = [http("GET", f"{comfy.url}/digitalhuman/live/sessions")[1],
                   http("GET", f"{comfy.url}/digitalhuman/live/s/{live['id']}")[1],
                   http("GET", f"{comfy.url}/digitalhuman/live/s/{live['id']}/events?after=0")[1]]
        assert speech.api_key not in html and speech.api_key not in repr(answers) and speech.api_key not in repr(log)
        assert log["errors"] == [], log["errors"]  # our own page: no script error at all


def test_panel_inside_comfyui(comfy, live):
    with browser_page() as (page, log):
        page.goto(comfy.url + "/")
        page.wait_for_function("() => window.app && window.app.graph", timeout=180000)
        page.wait_for_selector(".dh-live-tab-button, .dh-live-toggle", timeout=60000)
        before = outside(comfy, log)
        tab = page.locator(".dh-live-tab-button")
        if tab.count():  # today's frontend: a sidebar tab
            tab.first.click()
        else:  # the 2024 frontend: the floating panel
            page.click(".dh-live-toggle")
        page.wait_for_selector(".dhl-picker option", state="attached", timeout=30000)
        page.select_option(".dhl-picker", live["id"])
        wait_video(page)
        ms = speak_and_measure(page, "This is the panel inside ComfyUI.")
        print(f"panel in ComfyUI ({'sidebar tab' if tab.count() else 'floating panel'}): first speaking frame shown {ms:.0f} ms")
        only_local(comfy, log, before)


def test_a_cosyvoice_live_session(comfy, testdata, fakes):
    """The shipped CosyVoice workflow (a small CosyVoice 2 in the published layout, its built-in voice)
    speaks in the standalone page."""
    speech, chat = fakes
    prompt = json.loads((API / "live_avatar_cosyvoice.json").read_text())
    prompt["7"]["inputs"].update(base_url=chat.url)
    prompt["8"]["inputs"].update(max_side=256)
    info = run_prompt(comfy, prompt).outputs["8"]["dh_live"][0]
    try:
        with browser_page() as (page, log):
            page.goto(comfy.url + info["link"])
            wait_video(page)
            ms = speak_and_measure(page, "Good morning, welcome.")
            print(f"browser, CosyVoice 2 (small, CPU): send -> first speaking frame shown {ms:.0f} ms")
            only_local(comfy, log)
    finally:
        http("POST", f"{comfy.url}/digitalhuman/live/s/{info['id']}/close", b"")


def test_the_recording_holds_the_session(comfy, live):
    st, status = http("GET", f"{comfy.url}/digitalhuman/live/s/{live['id']}")
    assert st == 200 and status["recording"].endswith(".partial.mp4")
    partial = Path(status["recording"])
    http("POST", f"{comfy.url}/digitalhuman/live/s/{live['id']}/close", b"")
    final = partial.with_name(partial.name.replace(".partial.mp4", ".mp4"))
    t0 = time.monotonic()
    while not final.exists() and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert final.exists() and str(final).startswith(str(comfy.output_dir))
    with av.open(str(final)) as c:
        assert c.streams.video[0].codec_context.width == 256 and c.streams.audio
        frames = sum(1 for _ in c.decode(video=0))
    assert frames > 100
    lines = [json.loads(x) for x in final.with_name(final.name.replace(".mp4", ".transcript.jsonl")).read_text().splitlines()]
    assert {"user", "avatar"} <= {x["role"] for x in lines}
