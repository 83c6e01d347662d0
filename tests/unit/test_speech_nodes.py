"""Speech node classes run against the real ComfyUI modules and the fake OpenAI / ElevenLabs servers."""
from __future__ import annotations

import logging
import re
import threading
import time

import numpy as np
import pytest
import torch

import fakespeech
from fakeelevenlabs import FakeElevenLabs, fake_key as el_key
from fakeopenai import FakeOpenAI, fake_key
from comfyui_digitalhuman.engine.speech.srt import parse_srt, read_srt

OA_KEY = fake_key("nodespeech")
EL_KEY = el_key("nodespeech")
SECRET_NAME = re.compile(r"key|token|secret|auth|password|credential", re.I)


@pytest.fixture()
def nodes(comfy_env):
    from comfyui_digitalhuman.nodes import speech

    return speech


@pytest.fixture()
def openai_server(monkeypatch):
    with FakeOpenAI(api_key=OA_KEY) as s:
        monkeypatch.setenv("OPENAI_API_KEY", OA_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        yield s


@pytest.fixture()
def el_server(monkeypatch):
    with FakeElevenLabs(api_key=EL_KEY) as s:
        monkeypatch.setenv("ELEVENLABS_API_KEY", EL_KEY)
        monkeypatch.setenv("ELEVENLABS_BASE_URL", s.url)
        yield s


def voice(text: str, rate: int = 24000) -> np.ndarray:
    return fakespeech.render(text, rate).astype(np.float32) / 32768.0


def test_node_declarations(nodes):
    assert set(nodes.NODE_CLASS_MAPPINGS) == {"DH_OpenAISpeech", "DH_ElevenLabsSpeech"}
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "DigitalHuman/Speech" and cls.DESCRIPTION, node_id
        assert cls.RETURN_TYPES == ("AUDIO", "FLOAT", "STRING", "STRING")
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (typ, *opts) in section.items():
                assert opts and opts[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert not SECRET_NAME.search(name), f"{node_id}.{name} looks like a secret input"
                default = opts[0].get("default")
                assert not (isinstance(default, str) and default.startswith("sk")), f"{node_id}.{name}"
        import inspect
        params = list(inspect.signature(getattr(cls, cls.FUNCTION)).parameters)[1:]
        assert params == [n for s in spec.values() for n in s], node_id  # every input reaches the function


def test_openai_node_returns_core_audio_cost_and_saved_srt(nodes, openai_server, comfy_env, caplog):
    caplog.set_level(logging.DEBUG)
    text = "Welcome to the course. Today we learn about speech.\nLet us begin."
    out = nodes.DH_OpenAISpeech().speak(text, "tts-1", "nova", "", 1.0, "wav", "sentence", 3,
                                        save_subtitles=True, filename_prefix="lessons/intro")
    audio, cost, srt_text, srt_path = out["result"]
    wf = audio["waveform"]
    assert isinstance(wf, torch.Tensor) and wf.dtype == torch.float32 and wf.shape[:2] == (1, 1)
    assert audio["sample_rate"] == 24000
    inputs = [r.json["input"] for r in openai_server.requests]
    assert inputs == ["Welcome to the course.", "Today we learn about speech.", "Let us begin."]
    assert "run_id" not in openai_server.requests[0].json
    speech_len = sum(len(voice(t)) for t in inputs)
    assert wf.shape[2] > speech_len  # the speech plus the pauses between sentences
    assert cost == pytest.approx(sum(len(t) for t in inputs) * 15 / 1e6, abs=1e-9)
    assert srt_path.startswith(str(comfy_env.dirs["output"] / "lessons")) and srt_path.endswith("_.srt")
    cues = read_srt(srt_path)
    assert [c.text for c in cues] == inputs and cues[0].start_s == 0.0
    last_start = (wf.shape[2] - len(voice(inputs[-1]))) / 24000  # the last piece ends the audio
    assert cues[-1].start_s == pytest.approx(last_start, abs=1e-3)
    assert cues[-1].end_s >= wf.shape[2] / 24000 - 1e-3  # at least to the end (the fake voice is fast: min_cue_s)
    assert parse_srt(srt_text) == cues
    assert comfy_env.progress[-1][0] == comfy_env.progress[-1][1] == 3
    assert all(OA_KEY not in r.getMessage() for r in caplog.records)
    assert "OpenAI speech" in out["ui"]["text"][0]


def test_openai_node_custom_voice_and_no_srt_by_default(nodes, openai_server):
    out = nodes.DH_OpenAISpeech().speak("Hi.", "gpt-4o-mini-tts", "coral", "Cheerful.", 1.0, "pcm", "fill", 0,
                                        custom_voice="voice_x1")
    assert openai_server.requests[0].json["voice"] == {"id": "voice_x1"}
    assert openai_server.requests[0].json["instructions"] == "Cheerful."
    audio, cost, srt_text, srt_path = out["result"]
    torch.testing.assert_close(audio["waveform"][0, 0], torch.from_numpy(voice("Hi.")))
    assert srt_path == "" and srt_text.startswith("1\n00:00:00,000 --> ")


def test_openai_node_cancel_while_waiting(nodes, openai_server, comfy_env):
    openai_server.script = [("hang", 3.0)]
    threading.Timer(0.3, comfy_env.interrupt).start()
    t0 = time.monotonic()
    with pytest.raises(comfy_env.modules.mm.InterruptProcessingException):
        nodes.DH_OpenAISpeech().speak("Hello.", "tts-1", "nova", "", 1.0, "pcm", "fill", 0)
    assert time.monotonic() - t0 < 2.0


def test_openai_node_failure_saves_the_speech_made_so_far(nodes, openai_server, comfy_env):
    openai_server.script = [("ok",), ("status", 400)]
    with pytest.raises(RuntimeError, match=r"stopped at piece 2 of 2 .* Saved to .*partial_00001_\.wav") as ei:
        nodes.DH_OpenAISpeech().speak("First part. Second part.", "tts-1", "nova", "", 1.0, "pcm", "sentence", 0,
                                      filename_prefix="DigitalHuman/speech")
    wav = re.search(r"Saved to (\S+\.wav)", str(ei.value)).group(1)
    from comfyui_digitalhuman.engine.speech.pcm import decode_audio

    with open(wav, "rb") as f:
        got, sr = decode_audio(f.read(), "wav")
    assert sr == 24000 and np.max(np.abs(got - voice("First part."))) <= 1.0 / 32767  # 16-bit WAV round trip
    assert [c.text for c in read_srt(wav[:-4] + ".srt")] == ["First part."]


def test_missing_key_is_a_clear_error(nodes, comfy_env, monkeypatch):
    from comfyui_digitalhuman.providers.keys import MissingKeyError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY.*keys.json"):
        nodes.DH_OpenAISpeech().speak("Hi.", "tts-1", "nova", "", 1.0, "pcm", "fill", 0)
    with pytest.raises(MissingKeyError, match="ELEVENLABS_API_KEY"):
        nodes.DH_ElevenLabsSpeech().speak("Hi.", "JBFqnCBsd6RMkjVDRZzb", "eleven_multilingual_v2", "pcm_24000", True, "fill", 0)


def test_key_file_in_the_comfy_user_folder_is_used(nodes, comfy_env, monkeypatch):
    with FakeOpenAI(api_key=OA_KEY) as s:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        folder = comfy_env.dirs["user"] / "digitalhuman"
        folder.mkdir(parents=True)
        (folder / "keys.json").write_text('{"OPENAI_API_KEY": "%s"}' % OA_KEY)
        nodes.DH_OpenAISpeech().speak("Hi.", "tts-1", "nova", "", 1.0, "pcm", "fill", 0)
        assert s.requests[0].headers["Authorization"] == f"Bearer {OA_KEY}"


def test_elevenlabs_node_with_timestamps_and_settings(nodes, el_server, comfy_env):
    text = "Hello from ElevenLabs. Subtitles come from character times."
    out = nodes.DH_ElevenLabsSpeech().speak(text, "George", "eleven_flash_v2_5", "pcm_16000", True, "fill", 0,
                                            override_voice_settings=True, stability=0.3, similarity_boost=0.9,
                                            style=0.0, use_speaker_boost=False, speed=1.0, seed=7, save_subtitles=True)
    audio, cost, srt_text, srt_path = out["result"]
    assert audio["sample_rate"] == 16000 and audio["waveform"].shape == (1, 1, len(voice(text, 16000)))
    req = el_server.requests[-1]
    assert req.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/with-timestamps" and req.query == {"output_format": "pcm_16000"}
    assert req.json == {"text": text, "model_id": "eleven_flash_v2_5", "seed": 7,
                        "voice_settings": {"stability": 0.3, "similarity_boost": 0.9, "style": 0.0,
                                           "use_speaker_boost": False, "speed": 1.0}}
    assert cost == pytest.approx(round(len(text) * 0.5) * 0.0001, abs=1e-9)
    dt = fakespeech.samples_per_char(16000) / 16000
    cues = read_srt(srt_path)
    n1 = len("Hello from ElevenLabs.")
    assert [c.text for c in cues] == ["Hello from ElevenLabs.", "Subtitles come from character times."]
    assert cues[0].start_s == 0.0 and cues[1].start_s == pytest.approx(round((n1 + 1) * dt, 3))
    # sentence one lasts n1 * dt = 88 ms, under min_cue_s: its cue is lengthened up to the next cue
    assert n1 * dt < 0.2 and cues[0].end_s == cues[1].start_s


def test_elevenlabs_node_defaults_keep_the_voice_settings(nodes, el_server):
    nodes.DH_ElevenLabsSpeech().speak("Hi there.", "JBFqnCBsd6RMkjVDRZzb", "eleven_multilingual_v2", "pcm_24000", False, "fill", 0)
    assert el_server.requests[0].json == {"text": "Hi there.", "model_id": "eleven_multilingual_v2"}
    assert el_server.requests[0].path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb"


def test_speech_nodes_are_registered_in_the_pack(comfy_env):
    from comfyui_digitalhuman import nodes as pack_nodes

    assert "speech" not in pack_nodes.DISABLED
    assert pack_nodes.NODE_DISPLAY_NAME_MAPPINGS["DH_OpenAISpeech"] == "OpenAI Speech (DigitalHuman)"
    assert pack_nodes.NODE_DISPLAY_NAME_MAPPINGS["DH_ElevenLabsSpeech"] == "ElevenLabs Speech (DigitalHuman)"


def test_empty_or_punctuation_only_text_is_a_clear_error_before_any_request(nodes, openai_server, el_server):
    with pytest.raises(ValueError, match="text: nothing to speak"):
        nodes.DH_OpenAISpeech().speak("  ...\n!!! ", "tts-1", "nova", "", 1.0, "pcm", "fill", 0)
    with pytest.raises(ValueError, match="text: nothing to speak"):
        nodes.DH_ElevenLabsSpeech().speak("", "JBFqnCBsd6RMkjVDRZzb", "eleven_multilingual_v2", "pcm_24000", True, "fill", 0)
    assert openai_server.requests == [] and el_server.requests == []
