"""The engine's panel session for a provider's avatar (engine/live/remote.py) driving the real
backends against the fake LiveAvatar and HeyGen APIs, with real streaming voices against the fake
speech APIs: our voice fed to LITE (resampled), the queue and Stop, and every way a session ends
(its max minutes, the panel closing, no page at all, the provider ending it, the network
dropping, Cancel while starting), each with its reason, its provider stop call and its cost."""
from __future__ import annotations

import time

import numpy as np
import pytest

from fakeelevenlabs import FakeElevenLabs
from fakeheygen import FakeHeyGen
from fakeliveavatar import FakeLiveAvatar
from comfyui_digitalhuman.engine.live.remote import RemoteSession
from comfyui_digitalhuman.engine.live.session import SessionClosedError
from comfyui_digitalhuman.providers.heygen_streaming import HeyGenBackend
from comfyui_digitalhuman.providers.http import RetryPolicy
from comfyui_digitalhuman.providers.liveavatar import LiveAvatarBackend, LiveAvatarConfig

AVATAR = "6e0a1b2c-0000-4000-8000-00000000a001"
FAST = {"tick_s": 0.05, "grace_s": 0.4, "viewer_timeout_s": 0.4, "unwatched_s": 300, "cost_event_s": 0.2, "page_wait_s": 0.5}


@pytest.fixture()
def la(monkeypatch):
    with FakeLiveAvatar() as f:
        monkeypatch.setenv("LIVEAVATAR_API_KEY", f.api_key)
        monkeypatch.setenv("LIVEAVATAR_BASE_URL", f.url)
        yield f


@pytest.fixture()
def eleven(monkeypatch):
    with FakeElevenLabs() as f:
        monkeypatch.setenv("ELEVENLABS_API_KEY", f.api_key)
        monkeypatch.setenv("ELEVENLABS_BASE_URL", f.url)
        yield f


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def wait(pred, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def events(s, type_):
    items, _ = s.events.since(0)
    return [e for e in items if e["type"] == type_]


def lite(la, voice=None, **kw) -> RemoteSession:
    b = LiveAvatarBackend(LiveAvatarConfig(mode="LITE", avatar_id=AVATAR))
    return RemoteSession(b, name="t", voice=voice, settings={**FAST, **kw.pop("settings", {})}, **kw).start()


def test_lite_speaks_our_voice_resampled_to_24k_and_stops_with_its_cost(la, eleven):
    from comfyui_digitalhuman.providers.elevenlabs import ElevenLabs, ElevenLabsOptions
    from comfyui_digitalhuman.providers.streaming_voices import ElevenLabsStreamingVoice

    voice = ElevenLabsStreamingVoice(output_format="pcm_16000")  # a voice that is not at 24 kHz
    s = lite(la, voice)
    assert s.modes == ["repeat", "audio"] and s.state == "idle"  # no chat model: no chat mode
    text = "Hello there. This is our own voice."
    turn = s.wait_turn(s.say(text), timeout_s=30)
    assert turn.error is None and not turn.dropped
    fs = la.one()
    eid = turn.info["event_id"]
    got = la.audio(fs.id, eid)
    # the same text through the same voice, straight from the API: 16 kHz; ours reached LiveAvatar at 24 kHz
    ref = sum(len(c.samples) for c in ElevenLabs().stream(text, ElevenLabsOptions(output_format="pcm_16000")))
    assert abs(len(got) / 24000 - ref / 16000) < 2 / 16000 + 1e-9  # same length in seconds (resampler rounding)
    assert turn.speech_s == pytest.approx(len(got) / 24000)
    # a 44.1 kHz clip too
    clip = (0.4 * np.sin(2 * np.pi * 300 * np.arange(44100) / 44100)).astype(np.float32)
    t2 = s.wait_turn(s.play(clip, 44100), timeout_s=30)
    assert len(la.audio(fs.id, t2.info["event_id"])) == pytest.approx(24000, abs=2)
    st = s.status()
    assert st["provider"] == "liveavatar" and st["kind"] == "LiveAvatar LITE" and st["transport"] == "livekit"
    assert la.api_key not in repr(st) and fs.token not in repr(st) and fs.ws_token not in repr(st)
    s.close("test over")
    assert fs.stop_reason == "USER_CLOSED" and s.state == "closed" and s.ended_reason == "test over"
    final = events(s, "cost")[-1]
    assert final["final"] and final["usd"] == pytest.approx(1 * 0.10)  # LITE: 1 credit/min, the first minute billed
    with pytest.raises(SessionClosedError, match=r"has ended \(test over\) after 0\.0 min, cost \$0\.100"):
        s.say("Anyone?")
    s.close("again")  # once only
    assert len(la.requests_to("/v1/sessions/stop")) == 1


def test_the_max_minutes_cap_stops_the_session_after_a_warning(la):
    clock = Clock()
    s = lite(la, max_minutes=2, clock=clock, settings={"warn_before_end_s": 60})
    clock.t += 61
    assert wait(lambda: events(s, "ending"))
    assert s.state == "idle" and events(s, "ending")[0]["in_s"] == pytest.approx(59, abs=0.1)
    clock.t += 59  # 120 s: the cap
    assert wait(lambda: s.state == "closed")
    assert s.ended_reason == "it reached its limit of 2 minutes (max_minutes)" and la.one().stop_reason == "USER_CLOSED"
    assert events(s, "cost")[-1]["usd"] == pytest.approx(2 * 0.10)


def test_a_panel_that_leaves_stops_the_session_after_the_grace(la):
    s = lite(la)
    v = s.page({"step": "join"})["viewer"]
    assert s.page({"step": "ping", "viewer": v})["ok"]
    s.page({"step": "leave", "viewer": v})
    t0 = time.monotonic()
    assert wait(lambda: s.state == "closed", 5)
    assert time.monotonic() - t0 >= 0.4 - 0.06 and s.ended_reason.startswith("the panel closed")
    with pytest.raises(ValueError, match="no such viewer"):
        s2 = lite(la)
        s2.page({"step": "ping", "viewer": "nobody"})
    s2.close("test")


def test_a_page_that_vanishes_without_leaving_counts_as_gone(la):
    s = lite(la)
    s.page({"step": "join"})  # then no keep-alives: a killed tab
    assert wait(lambda: s.state == "closed", 5) and s.ended_reason.startswith("the panel closed")


def test_a_reload_within_the_grace_keeps_the_session(la):
    s = lite(la, settings={"grace_s": 1.0})
    v = s.page({"step": "join"})["viewer"]
    s.page({"step": "leave", "viewer": v})
    time.sleep(0.3)
    v2 = s.page({"step": "join"})["viewer"]
    for _ in range(8):
        time.sleep(0.2)
        s.page({"step": "ping", "viewer": v2})
    assert s.state == "idle"
    s.close("test")


def test_a_session_no_page_opens_is_stopped(la):
    clock = Clock()
    s = lite(la, clock=clock, settings={"unwatched_s": 120})
    clock.t += 121
    assert wait(lambda: s.state == "closed") and s.ended_reason == "no page opened it within 120 s"


def test_a_provider_side_end_stops_ours_and_says_why(la):
    s = lite(la)
    la.end_session(la.one().id)
    assert wait(lambda: s.state == "closed", 5)
    assert "LiveAvatar ended the session" in s.ended_reason
    with pytest.raises(SessionClosedError, match="LiveAvatar ended the session"):
        s.play(np.zeros(2400, np.float32), 24000)


def test_the_network_dropping_stops_the_session_after_three_failed_keep_alives(la):
    s = RemoteSession(LiveAvatarBackend(LiveAvatarConfig(mode="FULL", avatar_id=AVATAR)), name="n",
                      settings={**FAST, "keep_alive_failures": 3}).start()
    s.backend.keep_alive_s = 0.1
    s.backend.session.retry = RetryPolicy(max_tries=1)
    la.down()
    try:
        assert wait(lambda: s.state == "closed", 30)
    finally:
        la.up()
    assert "could not be reached 3 times in a row (the network dropped?)" in s.ended_reason
    errs = events(s, "error")
    assert len(errs) == 3 and all(e["where"] == "keep-alive" and "connection failed" in e["message"] for e in errs)
    assert str(la.port) in errs[0]["message"] and "127.0.0.1" in errs[0]["message"]  # readable: where it failed
    assert events(s, "cost")[-1]["final"]


def test_the_network_dropping_under_a_lite_socket_stops_the_session_at_once(la):
    s = lite(la)
    la.down()
    try:
        assert wait(lambda: s.state == "closed", 10)
    finally:
        la.up()
    assert "LiveAvatar socket" in s.ended_reason or "LiveAvatar ended" in s.ended_reason


def test_keep_alives_reach_the_provider(la):
    s = lite(la)
    s.backend.keep_alive_s = 0.1
    assert wait(lambda: la.one().keep_alives >= 2, 10)
    s.close("test")


def test_stop_drops_the_queue_and_interrupts_the_provider(la, eleven):
    from comfyui_digitalhuman.providers.streaming_voices import ElevenLabsStreamingVoice

    eleven.chunk_delay_s = 0.05  # a voice slow enough to be interrupted
    s = lite(la, ElevenLabsStreamingVoice(output_format="pcm_24000"))
    t1 = s.say("One. " * 40)
    t2 = s.say("Two.")
    assert wait(lambda: s.state == "speaking", 10)
    assert s.interrupt() is True
    for t in (t1, t2):
        assert s.wait_turn(t, timeout_s=10).dropped
    assert wait(lambda: la.one().interrupts == 1, 5) and events(s, "interrupted")
    assert s.interrupt() is False  # nothing left
    s.close("test")


def test_bad_input_is_refused_clearly(la):
    s = lite(la)
    with pytest.raises(ValueError, match="connect a voice to the session node"):
        s.say("Hello")
    with pytest.raises(ValueError, match="the clip is empty"):
        s.play(np.zeros(0, np.float32), 24000)
    with pytest.raises(ValueError, match="NaN"):
        s.play(np.full(10, np.nan, np.float32), 24000)
    s.close("test")
    with pytest.raises(ValueError, match="max_minutes must be more than 0 and at most 120"):
        RemoteSession(LiveAvatarBackend(LiveAvatarConfig(mode="FULL", avatar_id=AVATAR)), max_minutes=500)


def test_full_mode_without_a_page_reports_it_and_goes_on(la):
    s = RemoteSession(LiveAvatarBackend(LiveAvatarConfig(mode="FULL", avatar_id=AVATAR)), name="f", settings=FAST).start()
    turn = s.wait_turn(s.say("Hello"), timeout_s=5)
    assert "open this session in the Live panel" in turn.error and "(waited 0.5 s)" in turn.error and s.state == "idle"
    assert events(s, "waiting")  # the panel was told the turn waits for a page
    join = s.page({"step": "join"})
    assert join["relay"] and join["token"] == la.one().client_token and join["transport"] == "livekit"
    s.page({"step": "event", "viewer": join["viewer"], "event": "room", "data": {"state": "connected"}})
    turn = s.wait_turn(s.say("Now with a page."), spoken=False, timeout_s=5)
    assert turn.error is None
    cmd = events(s, "command")[-1]
    assert cmd["viewer"] == join["viewer"] and cmd["payload"]["text"] == "Now with a page."
    # the page relays the avatar's report: the turn counts as spoken
    s.page({"step": "event", "viewer": join["viewer"], "event": "avatar.speak_ended", "data": {}})
    assert events(s, "spoken")
    s.close("test")
    assert la.one().stop_reason == "USER_CLOSED" and events(s, "cost")[-1]["usd"] == pytest.approx(2 * 0.10)


def test_cancel_while_starting_stops_what_was_started(la):
    la.connect_delay_s = 30
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt("cancel")

    s = RemoteSession(LiveAvatarBackend(LiveAvatarConfig(mode="LITE", avatar_id=AVATAR)), name="c", settings=FAST)
    with pytest.raises(KeyboardInterrupt):
        s.start(check)
    assert la.one().state == "stopped" and s.state == "closed" and s.ended_reason.startswith("start failed")
    with pytest.raises(SessionClosedError):
        s.say("x")


def test_a_heygen_session_speaks_queues_and_prices(monkeypatch):
    with FakeHeyGen() as hg:
        monkeypatch.setenv("HEYGEN_API_KEY", hg.api_key)
        monkeypatch.setenv("HEYGEN_BASE_URL", hg.url)
        s = RemoteSession(HeyGenBackend(), name="h", settings=FAST).start()
        assert s.modes == ["repeat", "chat"]
        t1, t2 = s.say("First sentence."), s.ask("And a question?")
        a = s.wait_turn(t1, spoken=False, timeout_s=10)
        b = s.wait_turn(t2, spoken=True, timeout_s=10)  # HeyGen gave the length: waits about that long
        assert a.speech_s == pytest.approx(0.06 * 15) and b.error is None
        assert [t["task_type"] for t in hg.one().tasks] == ["repeat", "chat"]  # in order
        with pytest.raises(ValueError, match="does not take audio"):
            s.play(np.zeros(100, np.float32), 24000)
        s.close("test")
        assert hg.one().state == "stopped"
