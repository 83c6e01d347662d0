"""The API voices as streaming voices for live sessions (providers/streaming_voices.py), against the
local fake OpenAI and ElevenLabs servers."""
from __future__ import annotations

import numpy as np
import pytest

import fakespeech
from fakeelevenlabs import FakeElevenLabs, fake_key as el_key
from fakeopenai import FakeOpenAI, fake_key
from comfyui_digitalhuman.engine.speech.voice import StreamingVoice, check_voice
from comfyui_digitalhuman.providers.http import ApiError
from comfyui_digitalhuman.providers.keys import MissingKeyError, is_local_url
from comfyui_digitalhuman.providers.streaming_voices import ElevenLabsStreamingVoice, OpenAIStreamingVoice

KEY = fake_key("live")


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ELEVENLABS_API_KEY", "ELEVENLABS_BASE_URL"):
        monkeypatch.delenv(v, raising=False)


def _pcm(text: str, rate: int = 24000) -> np.ndarray:
    return fakespeech.render(text, rate).astype(np.float32) / 32768.0


def test_openai_voice_streams_chunks_equal_to_the_spoken_text(monkeypatch):
    with FakeOpenAI(api_key=KEY) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        voice = OpenAIStreamingVoice("gpt-4o-mini-tts", "coral", base_url=srv.url)
        assert isinstance(voice, StreamingVoice) and check_voice(voice) is voice
        assert voice.sample_rate == 24000 and KEY not in repr(voice)
        text = "Hello there, how are you today?"
        chunks = list(voice.stream(text))
        assert len(chunks) > 1  # the body arrives in several HTTP chunks and is yielded as it comes
        got = np.concatenate([c.samples for c in chunks])
        np.testing.assert_allclose(got, _pcm(text), atol=1 / 32768)
        body = srv.requests[-1].json
        assert body["response_format"] == "pcm" and body["input"] == text
        assert voice.cost_usd > 0
        first = voice.cost_usd
        list(voice.stream("Again."))
        assert voice.cost_usd > first  # the running cost of the session's speech


def test_openai_voice_without_a_key_works_only_with_a_local_server(monkeypatch):
    with FakeOpenAI(api_key=KEY) as srv:
        srv.no_auth = True
        voice = OpenAIStreamingVoice("tts-1", "alloy", base_url=srv.url)  # 127.0.0.1: no key needed
        list(voice.stream("Hi."))
        assert "Authorization" not in srv.requests[-1].headers
    assert is_local_url("http://localhost:11434/v1") and is_local_url("http://192.168.1.5:8000/v1")
    assert not is_local_url("https://api.openai.com/v1")
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        OpenAIStreamingVoice(base_url="https://api.openai.com/v1")


def test_openai_voice_bad_options_fail_when_made(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(ValueError, match="speed"):
        OpenAIStreamingVoice(speed=9.0, base_url="http://127.0.0.1:9/v1")


def test_openai_voice_stop_ends_the_request_and_errors_name_the_provider(monkeypatch):
    with FakeOpenAI(api_key=KEY) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        voice = OpenAIStreamingVoice(base_url=srv.url)
        srv.chunk_delay_s = 0.05
        calls = {"n": 0}

        class Stop(Exception):
            pass

        def check():
            calls["n"] += 1
            if calls["n"] > 3:
                raise Stop()

        with pytest.raises(Stop):
            for _ in voice.stream("A long sentence that takes a while to arrive in many chunks.", check_interrupt=check):
                pass
        srv.script.append(("status", 500, {}))
        srv.script.append(("status", 500, {}))
        srv.script.append(("status", 500, {}))
        srv.script.append(("status", 500, {}))
        voice._clients.get().retry.base_delay_s = 0.01
        with pytest.raises(ApiError, match="OpenAI API error 500"):
            list(voice.stream("Hi."))


def test_elevenlabs_voice_streams_pcm(monkeypatch):
    key = el_key("live")
    with FakeElevenLabs(api_key=key) as srv:
        monkeypatch.setenv("ELEVENLABS_API_KEY", key)
        monkeypatch.setenv("ELEVENLABS_BASE_URL", srv.url)
        voice = ElevenLabsStreamingVoice("JBFqnCBsd6RMkjVDRZzb", output_format="pcm_16000")
        assert voice.sample_rate == 16000 and key not in repr(voice)
        text = "Good morning."
        got = np.concatenate([c.samples for c in voice.stream(text)])
        np.testing.assert_allclose(got, _pcm(text, 16000), atol=1 / 32768)
    with pytest.raises(ValueError, match="pcm_<rate>"):
        ElevenLabsStreamingVoice(output_format="mp3_44100_128")


def test_check_voice_names_what_is_missing():
    with pytest.raises(TypeError, match="not a streaming voice"):
        check_voice(object())
