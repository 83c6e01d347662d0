"""HeyGen's legacy streaming API through our client and backend, against the fake HeyGen
(tests/fakeheygen.py): the token is the only use of the key, the documented bodies, the ``data``
envelope, "Session is not in correct state", a refused key, quota, retries."""
from __future__ import annotations

import json

import pytest

from fakeheygen import FakeHeyGen
from comfyui_digitalhuman.engine.live.backend import ProviderSessionEnded
from comfyui_digitalhuman.providers.heygen_streaming import HeyGenBackend
from comfyui_digitalhuman.providers.http import ApiError

NOCHECK = lambda: None  # noqa: E731


@pytest.fixture()
def fake():
    with FakeHeyGen() as f:
        yield f


@pytest.fixture(autouse=True)
def _env(monkeypatch, fake):
    monkeypatch.setenv("HEYGEN_API_KEY", fake.api_key)
    monkeypatch.setenv("HEYGEN_BASE_URL", fake.url)


def opened(fake, **kw) -> HeyGenBackend:
    b = HeyGenBackend(**kw)
    b.bind(lambda *a, **k: 0, lambda why: None)
    b.open(NOCHECK)
    return b


def test_a_session_follows_the_documented_calls(fake):
    b = opened(fake, avatar="Anna_public_3_20240108", quality="medium", voice_id="v1", language="zh",
               knowledge_base="You sell tea.", idle_timeout_s=300)
    s = fake.one()
    tok = fake.requests_to("/v1/streaming.create_token")[0]
    assert tok.headers["X-Api-Key"] == fake.api_key
    for r in fake.requests[1:]:  # everything after the token: Bearer, never the key
        assert r.headers["Authorization"] == f"Bearer {s.token}" and "X-Api-Key" not in r.headers
    assert s.body == {"quality": "medium", "avatar_id": "Anna_public_3_20240108", "avatar_name": "Anna_public_3_20240108",
                      "version": "v2", "video_encoding": "H264", "activity_idle_timeout": 300, "voice": {"voice_id": "v1"},
                      "language": "zh", "knowledge_base": "You sell tea."}
    assert s.state == "started"
    page = b.page_join("page-1", NOCHECK)
    assert page == {"livekit_url": f"ws://127.0.0.1:{fake.port}/livekit", "token": s.access_token, "relay": False}
    assert fake.api_key not in json.dumps(page) and s.token not in json.dumps(page)
    out = b.speak_text("Hello there!", "repeat", NOCHECK)
    assert out["speech_s"] == pytest.approx(0.06 * 12)
    b.speak_text("What do you sell?", "chat", NOCHECK)
    assert [(t["task_type"], t["task_mode"], t["text"]) for t in s.tasks] == [
        ("repeat", "async", "Hello there!"), ("chat", "async", "What do you sell?")]
    b.interrupt(NOCHECK)
    b.keep_alive(NOCHECK)
    assert s.interrupts == 1 and s.keep_alives == 1
    b.close("test")
    assert s.state == "stopped"
    # a stopped session: HeyGen's "not in correct state" means the session is over
    with pytest.raises(ProviderSessionEnded, match="Session is not in correct state"):
        b.speak_text("Still there?", "repeat", NOCHECK)


def test_cost_is_credits_per_ten_minutes(fake):
    b = HeyGenBackend()
    # 1 API credit per 10 minutes of streaming; Scale plan: $330 for 660 credits = $0.50 per credit
    assert b.cost(20 * 60, 0)[0] == pytest.approx(2 * 0.5)
    assert HeyGenBackend(plan="pro").cost(10 * 60, 0)[0] == pytest.approx(0.99)


def test_a_wrong_key_an_unknown_avatar_and_no_quota(fake, monkeypatch):
    monkeypatch.setenv("HEYGEN_API_KEY", fake.api_key[:-4] + "0000")
    with pytest.raises(ApiError, match=r"HeyGen API error 401.*Unauthorized.*check HEYGEN_API_KEY") as ei:
        opened(fake)
    assert fake.api_key[:10] not in str(ei.value)
    monkeypatch.setenv("HEYGEN_API_KEY", fake.api_key)
    with pytest.raises(ApiError, match=r"400.*Avatar not found - no such avatar"):
        opened(fake, avatar="Nobody")
    fake.quota = False
    with pytest.raises(ApiError, match=r"Insufficient credits.*no credits left"):
        opened(fake)


def test_bad_settings_are_refused_before_any_session(fake):
    with pytest.raises(ValueError, match="quality must be one of high, medium, low"):
        opened(fake, quality="ultra")
    with pytest.raises(ValueError, match="idle timeout must be 30-3599 s"):
        opened(fake, idle_timeout_s=5)
    assert fake.sessions == {}


def test_server_errors_are_retried(fake):
    fake.fail("/v1/streaming.new", 503)
    fake.fail("/v1/streaming.task", 500)
    b = opened(fake)
    b.speak_text("Hi", "repeat", NOCHECK)
    assert len(fake.requests_to("/v1/streaming.new")) == 2 and len(fake.one().tasks) == 1
    b.close("test")
