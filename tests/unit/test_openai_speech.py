"""The OpenAI speech client against the local fake server (tests/fakeopenai.py speech route)."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

import fakespeech
from fakeopenai import FakeOpenAI, fake_key
from comfyui_digitalhuman.engine.speech.config import section
from comfyui_digitalhuman.providers.http import ApiError, RetryPolicy
from comfyui_digitalhuman.providers.openai_speech import OpenAISpeech, OpenAISpeechOptions as Opts
from comfyui_digitalhuman.providers.speech_base import PartialSpeechError

KEY = fake_key("speech")
FAST = RetryPolicy(max_tries=4, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0.3)
SR = 24000


def usd(x: float):
    """Costs are kept to 1e-9 USD (providers/prices.py)."""
    return pytest.approx(x, abs=1e-9)


@pytest.fixture()
def server():
    with FakeOpenAI(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def client(server, key=KEY, **kw) -> OpenAISpeech:
    kw.setdefault("retry", FAST)
    return OpenAISpeech(api_key=key, base_url=server.url, **kw)


def voice(text: str, speed: float = 1.0) -> np.ndarray:
    """What the fake voice says for one request, as float32 (independent of the client)."""
    return fakespeech.render(text, SR, speed).astype(np.float32) / 32768.0




def test_request_fields_as_sent_and_pcm_decoded_exactly(server):
    text = "Hello there. How are you today?"
    res = client(server).synthesize(text, Opts(model="gpt-4o-mini-tts", voice="ash", response_format="pcm",
                                               speed=1.25, instructions="Speak warmly."))
    req = server.requests[0]
    assert req.path == "/v1/audio/speech" and req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.json == {"model": "gpt-4o-mini-tts", "input": text, "voice": "ash", "response_format": "pcm",
                        "speed": 1.25, "instructions": "Speak warmly."}
    assert res.sample_rate == SR
    np.testing.assert_array_equal(res.samples, voice(text, 1.25))
    assert [t.text for t in res.sentences] == ["Hello there.", "How are you today?"]
    assert res.sentences[0].start_s == 0.0 and res.sentences[-1].end_s == pytest.approx(res.duration_s, abs=1e-6)  # timings kept to 1 us
    # gpt-4o-mini-tts without usage: OpenAI's per-minute estimate on the audio received
    assert res.cost_usd == usd(res.duration_s / 60 * 0.015)
    assert res.info["cost_basis"] == "minutes" and res.info["cost_estimated"] is True


def test_wav_and_mp3_answers_are_decoded(server):
    text = "A short line for the decoder."
    wav = client(server).synthesize(text, Opts(response_format="wav"))
    np.testing.assert_array_equal(wav.samples, voice(text))
    mp3 = client(server).synthesize(text, Opts(response_format="mp3"))
    ref = voice(text)
    assert mp3.sample_rate == SR and abs(len(mp3.samples) - len(ref)) <= 1152  # one MP3 frame of padding at most
    n = min(len(ref), len(mp3.samples))
    corr = float(np.dot(ref[:n], mp3.samples[:n]) / (np.linalg.norm(ref[:n]) * np.linalg.norm(mp3.samples[:n])))
    assert corr > 0.9  # lossy, but the same signal


def test_tts1_gets_no_instructions_and_is_priced_per_character(server, caplog):
    text = "Plain voice, please."
    res = client(server).synthesize(text, Opts(model="tts-1", voice="nova", response_format="wav", instructions="whisper"))
    assert "instructions" not in server.requests[0].json
    assert any("does not take instructions" in r.getMessage() for r in caplog.records)
    assert res.cost_usd == usd(len(text) * 15 / 1e6) and res.info["cost_basis"] == "characters"
    hd = client(server).synthesize(text, Opts(model="tts-1-hd", response_format="wav"))
    assert hd.cost_usd == usd(len(text) * 30 / 1e6)


def test_custom_voice_is_sent_as_an_id_object(server):
    client(server).synthesize("Hi there.", Opts(voice="voice_abc123", response_format="pcm"))
    assert server.requests[0].json["voice"] == {"id": "voice_abc123"}


def test_bad_options_fail_before_sending(server):
    c = client(server)
    with pytest.raises(ValueError, match="speed must be between 0.25 and 4.0"):
        c.synthesize("Hi.", Opts(speed=5.0))
    with pytest.raises(ValueError, match="format 'ogg' is not one of"):
        c.synthesize("Hi.", Opts(response_format="ogg"))
    with pytest.raises(ValueError, match="nothing to speak"):
        c.synthesize(" ... !!! \n", Opts())
    with pytest.raises(ValueError, match="voice: give one of"):
        c.synthesize("Hi.", Opts(voice=" "))
    assert server.requests == []


def test_api_errors_pass_through_unchanged(server):
    with pytest.raises(ApiError) as ei:
        client(server).synthesize("Hello.", Opts(voice="nobody", response_format="pcm"))
    assert ei.value.status == 400 and "Invalid value for 'voice'" in str(ei.value) and len(server.requests) == 1


def test_wrong_key_401_is_redacted_everywhere(server, caplog):
    wrong = fake_key("wrongspeech")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ApiError) as ei:
        client(server, key=wrong).synthesize("Hello.", Opts(response_format="pcm"))
    text = str(ei.value)
    assert ei.value.status == 401 and "Incorrect API key provided" in text and "[REDACTED]" in text
    assert wrong not in text and wrong not in repr(ei.value.args) and ei.value.__cause__ is None
    assert all(wrong not in r.getMessage() for r in caplog.records)
    assert any("401" in r.getMessage() for r in caplog.records)


def test_429_retry_after_honoured_on_a_fake_clock(server, monkeypatch):
    server.script = [("status", 429, {"Retry-After": "2"}), ("status", 429, {"Retry-After": "3"})]
    clock = fakespeech.FakeClock().install(monkeypatch)
    pol = RetryPolicy(max_tries=4, base_delay_s=1.0, max_retry_after_s=120)
    t0 = time.monotonic()
    res = OpenAISpeech(api_key=KEY, base_url=server.url, retry=pol, sleep=clock.sleep).synthesize(
        "Hello.", Opts(response_format="pcm"))
    assert time.monotonic() - t0 < 2.0  # no real waiting
    assert sum(clock.sleeps) == pytest.approx(5.0) and clock.t == pytest.approx(5.0)
    assert len(server.requests) == 3 and len(res.samples) == len(voice("Hello."))


def test_500_then_success_and_bounded_tries(server):
    server.script = [("status", 500), ("status", 503)]
    client(server).synthesize("Hello.", Opts(response_format="pcm"))
    assert len(server.requests) == 3
    server.requests.clear()
    server.script = [("status", 500)] * 10
    with pytest.raises(ApiError) as ei:
        client(server).synthesize("Hello.", Opts(response_format="pcm"))
    assert ei.value.status == 500 and ei.value.attempts == 4 and len(server.requests) == 4


def test_read_timeout_is_reported_not_retried(server):
    server.script = [("hang", 2.0)]
    t0 = time.monotonic()
    with pytest.raises(ApiError) as ei:
        client(server, read_timeout_s=0.3).synthesize("Hello.", Opts(response_format="pcm"))
    assert time.monotonic() - t0 < 1.5 and ei.value.status == 0 and "read timeout of 0.3 s" in str(ei.value)
    assert len(server.requests) == 1


def test_too_long_input_is_split_at_sentences_and_joined_in_order_with_pauses(server):
    sentences = [f"This is sentence number {i}, which says something about item {i}." for i in range(150)]
    text = " ".join(sentences)
    assert len(text) > 2 * 4096
    res = client(server).synthesize(text, Opts(model="tts-1", response_format="pcm"))
    inputs = [r.json["input"] for r in server.requests]
    assert len(inputs) == 3 and all(len(t) <= 4096 for t in inputs)
    assert " ".join(inputs) == text  # every sentence sent once, in order, cut only between sentences
    assert all(t.endswith(".") for t in inputs)
    gap = np.zeros(int(round(section("pauses")["sentence"] * SR)), np.float32)
    expected = np.concatenate([voice(inputs[0]), gap, voice(inputs[1]), gap, voice(inputs[2])])
    np.testing.assert_array_equal(res.samples, expected)
    assert [t.text for t in res.sentences] == sentences
    assert res.cost_usd == usd(sum(len(t) for t in inputs) * 15 / 1e6)
    # the first sentence of the second request starts right after the pause
    first_of_second = next(t for t in res.sentences if inputs[1].startswith(t.text))
    assert first_of_second.start_s == pytest.approx((len(voice(inputs[0])) + len(gap)) / SR, abs=1e-6)


def test_chinese_pieces_respect_the_token_estimate_of_gpt_4o_mini_tts(server):
    text = "这是一个用来测试长文本的中文句子。" * 300  # 5100 characters
    client(server).synthesize(text, Opts(response_format="pcm"))
    lens = [len(r.json["input"]) for r in server.requests]
    assert len(lens) == 3 and max(lens) <= 2000 and "".join(r.json["input"] for r in server.requests) == text
    server.requests.clear()
    client(server).synthesize(text, Opts(model="tts-1", response_format="pcm"))
    assert [len(r.json["input"]) for r in server.requests] == [4080, 1020]


def test_streaming_chunks_straddle_samples_and_arrive_before_the_end(server):
    server.chunk_bytes = 1001  # odd: every other chunk ends in the middle of a 16-bit sample
    server.chunk_delay_s = 0.05  # 15 chunks over 0.75 s: the first must be here long before the last is sent
    text = "Streaming speech arrives in pieces long before the whole answer is sent."
    total = -(-len(voice(text)) * 2 // 1001)
    st = client(server).stream(text, Opts(model="tts-1", response_format="pcm"))
    chunks, sent_at_first = [], None
    for ch in st:
        if sent_at_first is None:
            sent_at_first = server.chunks_sent
        chunks.append(ch)
    assert sent_at_first is not None and sent_at_first < total
    assert len(chunks) >= total - 1 and all(c.sample_rate == SR and c.kind == "speech" for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), voice(text))
    assert st.done and st.cost_usd == usd(len(text) * 15 / 1e6)
    assert "stream_format" not in server.requests[0].json


def test_sse_stream_gives_usage_and_per_token_cost(server):
    text = "Tell me a story. Make it short!"
    st = client(server).stream(text, Opts(response_format="pcm"), stream_format="sse", split="sentence")
    chunks = list(st)
    reqs = [r.json for r in server.requests]
    assert [r["stream_format"] for r in reqs] == ["sse", "sse"] and [r["input"] for r in reqs] == ["Tell me a story.", "Make it short!"]
    speech = [c for c in chunks if c.kind == "speech"]
    pauses = [c for c in chunks if c.kind == "pause"]
    assert len(pauses) == 1 and len(pauses[0].samples) == round(section("pauses")["sentence"] * SR)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in speech]),
                                  np.concatenate([voice("Tell me a story."), voice("Make it short!")]))
    # the fake's usage: ceil(chars / 4) input tokens, one output token per 20 ms
    inp = sum(-(-len(r["input"]) // 4) for r in reqs)
    out = sum(-(-len(voice(r["input"])) // 480) for r in reqs)
    assert st.usage == {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    assert st.cost_usd == usd((inp * 0.6 + out * 12.0) / 1e6)
    with pytest.raises(ValueError, match="'sse' is not supported by tts-1"):
        client(server).stream(text, Opts(model="tts-1", response_format="pcm"), stream_format="sse")
    with pytest.raises(ValueError, match="streaming needs format 'pcm'"):
        client(server).stream(text, Opts(response_format="wav"))


def test_a_stalled_stream_is_an_error_naming_the_bytes(server):
    server.chunk_bytes = 1000
    server.script = [("stall", 3000, 2.0)]
    st = client(server, read_timeout_s=0.3).stream("A stream that stops halfway through its words.", Opts(model="tts-1", response_format="pcm"))
    got = []
    with pytest.raises(ApiError, match="stopped after 3000 bytes: no data within the read timeout of 0.3 s"):
        for ch in st:
            got.append(ch)
    assert sum(len(c.samples) for c in got) == 1500  # what came before the stall was delivered


def test_cancel_while_waiting_for_an_answer(server):
    class Stop(Exception):
        pass

    server.script = [("hang", 3.0)]
    t_end = time.monotonic() + 0.3

    def check():
        if time.monotonic() > t_end:
            raise Stop("cancelled")

    t0 = time.monotonic()
    with pytest.raises(Stop):
        client(server, check_interrupt=check).synthesize("Hello.", Opts(response_format="pcm"))
    assert time.monotonic() - t0 < 1.5


def test_cancel_during_a_stream_and_between_pieces(server):
    class Stop(Exception):
        pass

    server.chunk_bytes = 500
    server.chunk_delay_s = 0.05
    flag = threading.Event()

    def check():
        if flag.is_set():
            raise Stop()

    st = client(server, check_interrupt=check).stream("One long sentence for a stream that we stop.", Opts(model="tts-1", response_format="pcm"))
    t0 = time.monotonic()
    with pytest.raises(Stop):
        for i, _ in enumerate(st):
            if i == 1:
                flag.set()
    assert time.monotonic() - t0 < 1.5
    # between pieces: stop after the first request completes
    server.requests.clear()
    server.chunk_delay_s = 0.0
    done = []
    flag.clear()
    with pytest.raises(Stop):
        client(server, check_interrupt=check).synthesize("First. Second. Third.", Opts(model="tts-1", response_format="pcm"),
                                                         split="sentence", progress=lambda d, t: (done.append(d), flag.set()))
    assert done == [1] and len(server.requests) == 1


def test_failure_after_some_pieces_keeps_what_was_made(server):
    server.script = [("ok",), ("status", 400)]
    with pytest.raises(PartialSpeechError) as ei:
        client(server).synthesize("First one. Second one. Third one.", Opts(model="tts-1", response_format="pcm"), split="sentence")
    e = ei.value
    assert e.done == 1 and e.total == 3 and isinstance(e.cause, ApiError)
    np.testing.assert_array_equal(e.partial.samples, voice("First one."))
    assert e.partial.cost_usd == usd(len("First one.") * 15 / 1e6)
    assert "stopped at piece 2 of 3" in str(e) and "are kept" in str(e)


def test_key_from_the_key_file(tmp_path, server, monkeypatch):
    (tmp_path / "digitalhuman").mkdir()
    (tmp_path / "digitalhuman" / "keys.json").write_text('{"OPENAI_API_KEY": "%s"}' % KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    OpenAISpeech(user_dir=tmp_path, retry=FAST).synthesize("Hi there.", Opts(response_format="pcm"))
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"
