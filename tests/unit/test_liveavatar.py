"""LiveAvatar's client and backend against the fake LiveAvatar API (tests/fakeliveavatar.py): the
documented bodies and envelopes, error codes with their hints, retries, and the LITE WebSocket fed
by our own audio (resampled to 24 kHz, chunked 600 ms then 1 s, one event id, speak_end last)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from fakeliveavatar import SANDBOX_AVATAR, FakeLiveAvatar
from comfyui_digitalhuman.engine.live.backend import NeedsPage, ProviderSessionEnded
from comfyui_digitalhuman.providers.http import ApiError, RetryPolicy
from comfyui_digitalhuman.providers.liveavatar import LiveAvatar, LiveAvatarBackend, LiveAvatarConfig

AVATAR = "6e0a1b2c-0000-4000-8000-00000000a001"
NOCHECK = lambda: None  # noqa: E731


@pytest.fixture()
def fake():
    with FakeLiveAvatar() as f:
        yield f


@pytest.fixture(autouse=True)
def _env(monkeypatch, fake):
    monkeypatch.setenv("LIVEAVATAR_API_KEY", fake.api_key)
    monkeypatch.setenv("LIVEAVATAR_BASE_URL", fake.url)


class Events:
    def __init__(self):
        self.items: list[tuple[str, dict]] = []
        self.ended: list[str] = []

    def emit(self, type_, **data):
        self.items.append((type_, data))
        return len(self.items)

    def end(self, why):
        self.ended.append(why)

    def of(self, type_):
        return [d for t, d in self.items if t == type_]


def backend(fake, ev=None, **cfg) -> LiveAvatarBackend:
    b = LiveAvatarBackend(LiveAvatarConfig(**{"avatar_id": AVATAR, **cfg}))
    ev = ev or Events()
    b.bind(ev.emit, ev.end)
    return b


def test_full_session_token_start_keep_alive_stop_follow_the_contract(fake):
    b = backend(fake, mode="FULL", voice_id="v-ana", context_id="ctx-1", language="zh", quality="medium", encoding="H264")
    info = b.open(NOCHECK)
    tok = fake.requests_to("/v1/sessions/token")[0]
    assert tok.headers["X-API-KEY"] == fake.api_key
    assert tok.json == {"mode": "FULL", "avatar_id": AVATAR, "is_sandbox": False,
                        "video_settings": {"quality": "medium", "encoding": "H264"},
                        "avatar_persona": {"language": "zh", "voice_id": "v-ana", "context_id": "ctx-1"}}
    s = fake.one()
    start = fake.requests_to("/v1/sessions/start")[0]
    assert start.headers["Authorization"] == f"Bearer {s.token}" and "X-API-KEY" not in start.headers
    assert info == {"avatar_id": AVATAR, "mode": "FULL", "sandbox": False, "quality": "medium", "provider_session": s.id}
    page = b.page_join("page-1", NOCHECK)
    assert page["livekit_url"].endswith("/livekit") and page["token"] == s.client_token and page["relay"] is True
    assert fake.api_key not in json.dumps(page) and s.token not in json.dumps(page)
    b.keep_alive(NOCHECK)
    assert s.keep_alives == 1
    b.close("test")
    assert s.state == "stopped" and s.stop_reason == "USER_CLOSED"
    stop = fake.requests_to("/v1/sessions/stop")[0]
    assert stop.json == {"session_id": s.id, "reason": "USER_CLOSED"}


def test_the_openapi_success_code_100_is_accepted_too(fake):
    fake.success_code = 100
    b = backend(fake, mode="FULL")
    assert b.open(NOCHECK)["provider_session"] == fake.one().id
    b.close("test")


def test_an_error_code_inside_a_200_envelope_is_an_error(fake):
    fake.fail("/v1/sessions/token", 200, body={"code": 4001, "data": {"message": "Avatar is not ready"}, "message": "failed"})
    with pytest.raises(ApiError, match="session token request: failed") as ei:
        backend(fake).open(NOCHECK)
    assert ei.value.code == "4001"


def test_a_wrong_key_is_refused_with_a_hint_and_never_shown(fake, monkeypatch):
    wrong = fake.api_key[:-6] + "zzzzzz"
    monkeypatch.setenv("LIVEAVATAR_API_KEY", wrong)
    with pytest.raises(ApiError) as ei:
        backend(fake).open(NOCHECK)
    msg = str(ei.value)
    assert ei.value.status == 401 and "Invalid API key" in msg and "LIVEAVATAR_API_KEY" in msg
    assert wrong not in msg and wrong[:12] not in msg and fake.api_key[:12] not in msg


def test_a_missing_key_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.delenv("LIVEAVATAR_API_KEY")
    with pytest.raises(Exception, match="LIVEAVATAR_API_KEY"):
        LiveAvatar(user_dir=tmp_path)


def test_an_avatar_that_does_not_exist_is_a_clear_error(fake):
    with pytest.raises(ApiError, match=r"404.*Avatar nope not found - no such avatar"):
        backend(fake, avatar_id="nope").open(NOCHECK)


def test_no_credits_is_a_clear_error_and_nothing_stays_open(fake):
    fake.credits = 0
    with pytest.raises(ApiError, match=r"402.*Insufficient credits.*no credits left"):
        backend(fake).open(NOCHECK)
    assert fake.one().state == "created"


def test_sandbox_uses_the_documented_avatar_and_costs_nothing(fake):
    fake.credits = 0
    b = LiveAvatarBackend(LiveAvatarConfig(mode="FULL", sandbox=True))
    b.bind(Events().emit, Events().end)
    b.open(NOCHECK)
    assert fake.one().avatar_id == SANDBOX_AVATAR and fake.one().body["is_sandbox"] is True
    assert b.cost(600, 0) == (0.0, "sandbox", False)
    b.close("test")


def test_cost_follows_the_price_table():
    full = LiveAvatarBackend.__new__(LiveAvatarBackend)
    full.config, full.plan = LiveAvatarConfig(mode="FULL", avatar_id="a").checked(), None
    lite = LiveAvatarBackend.__new__(LiveAvatarBackend)
    lite.config, lite.plan = LiveAvatarConfig(mode="LITE", avatar_id="a").checked(), None
    # 2 credits/min (FULL), 1 credit/min (LITE) at $0.10 per credit (Pro plan); the escrowed first minute is billed
    assert full.cost(90, 0)[0] == pytest.approx(1.5 * 2 * 0.10) and lite.cost(90, 0)[0] == pytest.approx(1.5 * 0.10)
    assert full.cost(10, 0)[0] == pytest.approx(1 * 2 * 0.10)


def test_429_with_retry_after_and_a_503_are_retried(fake):
    fake.fail("/v1/sessions/token", 429, headers={"Retry-After": "1"})
    fake.fail("/v1/sessions/start", 503)
    api = LiveAvatar(retry=RetryPolicy(max_tries=3, base_delay_s=0.01))
    t0 = time.monotonic()
    sid, token = api.create_session_token(LiveAvatarConfig(avatar_id=AVATAR))
    waited = time.monotonic() - t0
    api.session_api(token).start()  # its own policy: the default backoff of 1-1.25 s before the second try
    assert len(fake.requests_to("/v1/sessions/token")) == 2 and len(fake.requests_to("/v1/sessions/start")) == 2
    assert 1.0 <= waited < 1.0 + 0.5  # Retry-After: 1 honoured (not the 10 ms backoff), plus two local round trips
    assert fake.sessions[sid].state == "started"


def test_a_session_ended_by_the_provider_makes_keep_alive_say_so(fake):
    b = backend(fake, mode="FULL")
    b.open(NOCHECK)
    fake.one().state = "stopped"
    with pytest.raises(ProviderSessionEnded, match="Session is not in correct state"):
        b.keep_alive(NOCHECK)


def test_full_mode_commands_travel_through_the_page(fake):
    ev = Events()
    b = backend(fake, ev, mode="FULL")
    b.open(NOCHECK)
    with pytest.raises(NeedsPage, match="open this session in the Live panel"):
        b.speak_text("Hello", "repeat", NOCHECK)
    b.page_step("event", {"event": "room", "viewer": "page-1", "data": {"state": "connected"}}, NOCHECK)
    b.speak_text("Hello there", "repeat", NOCHECK)
    b.speak_text("What is new?", "chat", NOCHECK)
    b.interrupt(NOCHECK)
    cmds = ev.of("command")
    assert [c["payload"]["event_type"] for c in cmds] == ["avatar.speak_text", "avatar.speak_response", "avatar.interrupt"]
    assert cmds[0]["topic"] == "agent-control" and cmds[0]["payload"]["text"] == "Hello there"
    assert {c["viewer"] for c in cmds} == {"page-1"}  # addressed to the page in the room: one page publishes it
    assert cmds[0]["payload"]["session_id"] == fake.one().id and cmds[0]["payload"]["event_id"]
    b.page_step("event", {"event": "session.stopped", "data": {"end_reason": "IDLE_TIMEOUT"}}, NOCHECK)
    assert ev.ended == ["LiveAvatar stopped the session (IDLE_TIMEOUT)"]
    b.close("test")


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_lite_sends_our_audio_resampled_to_24k_in_documented_chunks(fake):
    fake.connect_delay_s = 0.3
    ev = Events()
    b = backend(fake, ev, mode="LITE")
    b.open(NOCHECK)  # returns only once the socket reported "connected"
    s = fake.one()
    assert s.body == {"mode": "LITE", "avatar_id": AVATAR, "is_sandbox": False,
                      "video_settings": {"quality": "high", "encoding": "VP8"}}
    # 2.5 s of a 440 Hz tone at 16 kHz (a voice that is not at 24 kHz), fed in uneven pieces
    rate, seconds = 16000, 2.5
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    pieces = [(tone[i:i + 3001], rate) for i in range(0, len(tone), 3001)]
    out = b.speak_pcm(iter(pieces), NOCHECK)
    assert b.wait_spoken(out["event_id"], 10, NOCHECK)
    assert s.dropped == []  # nothing was sent before "connected"
    kinds = [k for k, _ in s.order]
    assert kinds[-1] == "agent.speak_end" and set(kinds[:-1]) == {"agent.speak"}
    assert {e for _, e in s.order} == {out["event_id"]}  # one event id for the whole utterance
    sizes = [len(c) for c in s.utterances[out["event_id"]]["chunks"]]
    assert sizes[0] == 0.6 * 24000 * 2 and all(n == 48000 for n in sizes[1:-1]) and 0 < sizes[-1] <= 48000
    got = fake.audio(s.id, out["event_id"])
    # soxr keeps the length (within its filter's rounding) and the pitch: the same tone at 24 kHz
    assert abs(len(got) - seconds * 24000) <= 2 and out["speech_s"] == pytest.approx(len(got) / 24000)
    assert dominant_hz(got[2400:-2400], 24000) == pytest.approx(440, abs=24000 / len(got[2400:-2400]) * 1.01)
    assert np.max(np.abs(got[2400:-2400])) == pytest.approx(0.5, abs=0.01)
    assert ev.of("spoken") and ev.of("speaking")
    b.close("test")
    assert s.stop_reason == "USER_CLOSED"


def test_lite_interrupt_and_a_provider_side_end(fake):
    ev = Events()
    b = backend(fake, ev, mode="LITE")
    b.open(NOCHECK)
    s = fake.one()
    b.interrupt(NOCHECK)
    b.keep_alive(NOCHECK)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (s.interrupts < 1 or s.ws_keep_alives < 1):
        time.sleep(0.05)
    assert s.interrupts == 1 and s.ws_keep_alives == 1 and s.keep_alives == 1
    fake.end_session(s.id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not ev.ended:
        time.sleep(0.05)
    assert ev.ended and "LiveAvatar ended the session" in ev.ended[0]
    with pytest.raises(ProviderSessionEnded, match="not connected"):
        b.speak_pcm(iter([(np.zeros(2400, np.float32), 24000)]), NOCHECK)
    b.close("test")


def test_lite_socket_that_never_connects_times_out_and_stops_the_session(fake, monkeypatch):
    fake.connect_delay_s = 30
    b = backend(fake, mode="LITE")
    b.rules["lite"]["connect_timeout_s"] = 0.5
    with pytest.raises(ApiError, match="did not report 'connected' within 0.5 s"):
        b.open(NOCHECK)
    assert fake.one().state == "stopped"  # the started session was stopped, not left to bill


def test_cancel_while_waiting_for_the_socket(fake):
    fake.connect_delay_s = 30
    b = backend(fake, mode="LITE")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()

    def check():
        if stop.is_set():
            raise KeyboardInterrupt("cancel")

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        b.open(check)
    assert time.monotonic() - t0 < 3 and fake.one().state == "stopped"


def test_lists_of_avatars_and_voices(fake):
    api = LiveAvatar()
    assert {a["id"] for a in api.list_avatars()} == {SANDBOX_AVATAR, AVATAR}
    assert [v["id"] for v in api.list_voices()] == ["v-ana", "v-li"]
    assert fake.requests_to("/v1/avatars")[0].query == {"page": "1", "page_size": "100"}
