"""The ElevenLabs client against the local fake server (tests/fakeelevenlabs.py)."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

import fakespeech
from fakeelevenlabs import FakeElevenLabs, fake_key
from comfyui_digitalhuman.engine.speech.config import section
from comfyui_digitalhuman.providers.elevenlabs import ElevenLabs, ElevenLabsOptions as Opts, VoiceSettings
from comfyui_digitalhuman.providers.http import ApiError, RetryPolicy

KEY = fake_key("el")
FAST = RetryPolicy(max_tries=4, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0.3)
GEORGE = "JBFqnCBsd6RMkjVDRZzb"


def usd(x: float):
    """Costs are kept to 1e-9 USD (providers/prices.py)."""
    return pytest.approx(x, abs=1e-9)


@pytest.fixture()
def server():
    with FakeElevenLabs(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.delenv("ELEVENLABS_BASE_URL", raising=False)


def client(server, key=KEY, **kw) -> ElevenLabs:
    kw.setdefault("retry", FAST)
    return ElevenLabs(api_key=key, base_url=server.url, **kw)


def voice(text: str, rate: int = 24000, speed: float = 1.0) -> np.ndarray:
    return fakespeech.render(text, rate, speed).astype(np.float32) / 32768.0




def test_request_as_sent_and_pcm_decoded(server):
    text = "Good morning. Welcome to the show."
    vs = VoiceSettings(stability=0.4, similarity_boost=0.8, style=0.1, use_speaker_boost=True, speed=1.1)
    res = client(server).synthesize(text, Opts(voice_id=GEORGE, model_id="eleven_multilingual_v2", output_format="pcm_16000",
                                               voice_settings=vs, seed=42))
    req = server.requests[0]
    assert req.method == "POST" and req.path == f"/v1/text-to-speech/{GEORGE}" and req.query == {"output_format": "pcm_16000"}
    assert req.headers["xi-api-key"] == KEY and "Authorization" not in req.headers
    assert req.json == {"text": text, "model_id": "eleven_multilingual_v2", "seed": 42,
                        "voice_settings": {"stability": 0.4, "similarity_boost": 0.8, "style": 0.1,
                                           "use_speaker_boost": True, "speed": 1.1}}
    assert res.sample_rate == 16000
    np.testing.assert_array_equal(res.samples, voice(text, 16000, 1.1))
    # credits from the character-cost header x the API rate per credit
    assert res.info["credits"] == len(text) and res.cost_usd == usd(len(text) * 0.0001)
    assert res.info["cost_estimated"] is False and res.info["request_ids"] == ["req0001"]


def test_unset_options_are_not_sent(server):
    client(server).synthesize("Hi there.")
    assert server.requests[0].json == {"text": "Hi there.", "model_id": "eleven_multilingual_v2"}
    assert server.requests[0].query == {"output_format": "pcm_24000"}


def test_character_timestamps_time_each_sentence_exactly(server):
    text = "First sentence here. And a second one."
    res = client(server).synthesize(text, Opts(timestamps=True, output_format="pcm_24000"))
    assert server.requests[0].path == f"/v1/text-to-speech/{GEORGE}/with-timestamps"
    np.testing.assert_array_equal(res.samples, voice(text))
    dt = fakespeech.samples_per_char(24000) / 24000  # every character lasts this long in the fake voice
    n1 = len("First sentence here.")
    assert res.sentences[0] == ("First sentence here.", 0.0, pytest.approx(n1 * dt, abs=1e-6))
    assert res.sentences[1] == ("And a second one.", pytest.approx((n1 + 1) * dt, abs=1e-6), pytest.approx(len(text) * dt, abs=1e-6))
    assert res.chars.text == text and len(res.chars) == len(text)


def test_timestamps_across_pieces_include_the_pause(server):
    text = "One two three.\nFour five six."
    res = client(server).synthesize(text, Opts(timestamps=True), split="sentence")
    dt = fakespeech.samples_per_char(24000) / 24000
    gap = round(section("pauses")["paragraph"] * 24000) / 24000
    first = len("One two three.") * dt
    assert res.sentences[1].start_s == pytest.approx(first + gap, abs=1e-6)
    assert res.chars.start_s[len("One two three.")] == pytest.approx(first + gap, abs=1e-6)  # "F" of Four


def test_voice_by_name_is_looked_up_once(server):
    c = client(server)
    c.synthesize("Hello.", Opts(voice_id="rachel"))
    c.synthesize("Hello.", Opts(voice_id="Alice"))
    paths = [(r.method, r.path) for r in server.requests]
    assert paths == [("GET", "/v1/voices"), ("POST", "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"),
                     ("POST", "/v1/text-to-speech/Xb7hH8MSUJpSbSDYk0k2")]
    with pytest.raises(ValueError, match="voice 'Nobody' is neither a voice id nor the name of one of your voices"):
        c.synthesize("Hello.", Opts(voice_id="Nobody"))


def test_long_text_split_under_the_model_limit_and_stitched(server):
    sentences = [f"Part {i} of a long script, told slowly." for i in range(100)]
    text = " ".join(sentences)  # about 4,000 characters
    res = client(server).synthesize(text, Opts(model_id="eleven_v3"))  # 3,000 per request
    inputs = [r.json["text"] for r in server.requests]
    assert len(inputs) == 2 and all(len(t) <= 3000 for t in inputs) and " ".join(inputs) == text
    assert all("previous_request_ids" not in r.json for r in server.requests)  # not available on v3
    gap = np.zeros(round(section("pauses")["sentence"] * 24000), np.float32)
    np.testing.assert_array_equal(res.samples, np.concatenate([voice(inputs[0]), gap, voice(inputs[1])]))
    server.requests.clear()
    text2 = " ".join(sentences * 3)  # about 12,000 characters: 2 requests on multilingual v2 (10,000)
    client(server).synthesize(text2, Opts(model_id="eleven_multilingual_v2"))
    assert [len(r.json["text"]) <= 10000 for r in server.requests] == [True, True]
    assert "previous_request_ids" not in server.requests[0].json
    assert server.requests[1].json["previous_request_ids"] == ["req0001"]


def test_stitching_sends_at_most_three_previous_ids(server):
    client(server).synthesize("A one. B two. C three. D four. E five.", Opts(), split="sentence")
    ids = [r.json.get("previous_request_ids") for r in server.requests]
    assert ids == [None, ["req0001"], ["req0001", "req0002"], ["req0001", "req0002", "req0003"],
                   ["req0002", "req0003", "req0004"]]


def test_flash_costs_half_a_credit_and_missing_header_falls_back(server):
    text = "Quick and cheap."
    res = client(server).synthesize(text, Opts(model_id="eleven_flash_v2_5"))
    assert res.info["credits"] == round(len(text) * 0.5) and res.cost_usd == usd(round(len(text) * 0.5) * 0.0001)
    server.send_character_cost = False
    res = client(server).synthesize(text, Opts(model_id="eleven_flash_v2_5"))
    assert res.info["credits"] is None and res.info["cost_estimated"] is True
    assert res.cost_usd == usd(len(text) * 0.5 * 0.0001)


def test_mp3_output_format_decoded_at_its_rate(server):
    text = "Compressed speech decodes too."
    res = client(server).synthesize(text, Opts(output_format="mp3_44100_128"))
    ref = voice(text, 44100)
    assert res.sample_rate == 44100 and abs(len(res.samples) - len(ref)) <= 1152
    n = min(len(ref), len(res.samples))
    assert float(np.dot(ref[:n], res.samples[:n]) / (np.linalg.norm(ref[:n]) * np.linalg.norm(res.samples[:n]))) > 0.9


def test_errors_carry_the_documented_status_and_message(server, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = fake_key("wrong")
    with pytest.raises(ApiError) as ei:
        client(server, key=wrong).synthesize("Hello.")
    assert ei.value.status == 401 and ei.value.code == "invalid_api_key" and "Invalid API key" in str(ei.value)
    assert all(wrong not in r.getMessage() for r in caplog.records) and wrong not in str(ei.value)
    with pytest.raises(ApiError) as ei:
        client(server).synthesize("Hello.", Opts(voice_id="AAAAAAAAAAAAAAAAAAAA"))
    assert ei.value.status == 400 and ei.value.code == "voice_not_found"
    with pytest.raises(ApiError) as ei:
        client(server).synthesize("Hello.", Opts(extra={"made_up_field": 1}))
    assert ei.value.status == 422 and "made_up_field: Extra inputs are not permitted" in str(ei.value)
    with pytest.raises(ValueError, match="output_format 'wav' is not supported here"):
        client(server).synthesize("Hello.", Opts(output_format="wav"))
    with pytest.raises(ValueError, match="speed must be between 0.7 and 1.2"):
        client(server).synthesize("Hello.", Opts(voice_settings=VoiceSettings(speed=2.0)))


def test_429_retry_after_on_a_fake_clock_then_500_then_success(server, monkeypatch):
    server.script = [("status", 429, {"Retry-After": "4"}), ("status", 500)]
    clock = fakespeech.FakeClock().install(monkeypatch)
    pol = RetryPolicy(max_tries=4, base_delay_s=1.0, jitter=0.0, max_retry_after_s=120)
    t0 = time.monotonic()
    res = ElevenLabs(api_key=KEY, base_url=server.url, retry=pol, sleep=clock.sleep).synthesize("Hello.")
    assert time.monotonic() - t0 < 2.0
    # 4 s as asked after the 429, then the policy's backoff for try 2 (base 1 s x 2, no jitter) after the 500
    assert clock.t == pytest.approx(4.0 + 2.0)
    assert len(server.requests) == 3 and len(res.samples) == len(voice("Hello."))


def test_read_timeout(server):
    server.script = [("hang", 2.0)]
    with pytest.raises(ApiError, match="read timeout of 0.3 s"):
        client(server, read_timeout_s=0.3).synthesize("Hello.")
    assert len(server.requests) == 1


def test_stream_endpoint_yields_chunks_with_odd_boundaries(server):
    server.chunk_bytes = 777
    server.chunk_delay_s = 0.01
    text = "Streaming from the stream endpoint. Two sentences."
    st = client(server).stream(text, Opts(output_format="pcm_22050"), split="sentence")
    chunks = list(st)
    assert [r.path for r in server.requests] == [f"/v1/text-to-speech/{GEORGE}/stream"] * 2
    assert all(r.query == {"output_format": "pcm_22050"} for r in server.requests)
    speech = [c.samples for c in chunks if c.kind == "speech"]
    assert len(speech) > 4 and all(c.sample_rate == 22050 for c in chunks)
    s1, s2 = "Streaming from the stream endpoint.", "Two sentences."
    np.testing.assert_array_equal(np.concatenate(speech), np.concatenate([voice(s1, 22050), voice(s2, 22050)]))
    assert server.requests[1].json["previous_request_ids"] == ["req0001"]
    assert st.cost_usd == usd((len(s1) + len(s2)) * 0.0001)
    with pytest.raises(ValueError, match="streaming needs a pcm_<rate> output format"):
        client(server).stream(text, Opts(output_format="mp3_44100_128"))


def test_key_from_env_or_file_only(tmp_path, server, monkeypatch):
    from comfyui_digitalhuman.providers.keys import MissingKeyError

    with pytest.raises(MissingKeyError, match="ELEVENLABS_API_KEY"):
        ElevenLabs(user_dir=tmp_path, base_url=server.url)
    monkeypatch.setenv("ELEVENLABS_API_KEY", KEY)
    monkeypatch.setenv("ELEVENLABS_BASE_URL", server.url)
    ElevenLabs(retry=FAST).synthesize("Hello.")
    assert server.requests[0].headers["xi-api-key"] == KEY
