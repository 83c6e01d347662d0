"""CosyVoice 2 nodes on the real ComfyUI modules and the real download code: a small CosyVoice in the
published layout is fetched from a fake hub into ComfyUI's (temporary) models folder, a voice is
cloned from real speech, saved, listed, loaded and spoken with."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from fakehub import FakeHub, serve_model
from tiny_cosyvoice import model_files, small_config, write_config


def serve_url_model(store, model_id: str, data: bytes, monkeypatch):
    """Serve ``data`` where catalogue entry ``model_id``'s first URL points, on the loopback
    ``store``, and patch the entry (URL, size, sha256) for the test's duration."""
    import dataclasses
    import hashlib

    from comfyui_digitalhuman.model_loaders import catalog

    entry = catalog.get_model(model_id)
    store.add_url(entry.urls[0], data)
    local = dataclasses.replace(entry, urls=(store.rebase(entry.urls[0]),), size=len(data),
                                sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(catalog._default_catalog(), model_id, local)
    return local


@pytest.fixture()
def cv_env(comfy_env, monkeypatch, tmp_path):
    files = model_files(small_config())
    monkeypatch.delenv("DH_MODELS_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("DH_COSYVOICE_CONFIG", str(write_config(tmp_path / "small.json")))
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        for mid, data in files.items():
            serve_model(hub, mid, data, monkeypatch)
        from comfyui_digitalhuman.nodes import speech_cosyvoice

        yield speech_cosyvoice, hub, comfy_env


@pytest.fixture(scope="module")
def reference(testdata):
    wav, sr = sf.read(str(testdata / "yongen.wav"), dtype="float32", always_2d=True, frames=48000 * 3)
    return {"waveform": torch.from_numpy(wav.T.copy())[None], "sample_rate": sr}  # 3 s, 48 kHz stereo


def test_node_declarations():
    from comfyui_digitalhuman.nodes import speech_cosyvoice as N
    from comfyui_digitalhuman.nodes.common import CAT_SPEECH

    assert set(N.NODE_CLASS_MAPPINGS) == {"DH_LoadCosyVoice", "DH_CosyVoiceClone", "DH_CosyVoiceLoadVoice", "DH_CosyVoiceSpeak"}
    for node_id, cls in N.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == CAT_SPEECH and cls.DESCRIPTION, node_id
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for group in cls.INPUT_TYPES().values():
            for name, (typ, *opts) in group.items():
                assert opts and opts[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert callable(getattr(cls, cls.FUNCTION))


def test_load_clone_save_list_load_speak(cv_env, reference):
    N, hub, env = cv_env
    (model,) = N.DH_LoadCosyVoice().load("fp32", "cpu")
    models = env.dirs["models"] / "cosyvoice" / "CosyVoice2-0.5B"
    assert (models / "llm.pt").is_file() and (models / "CosyVoice-BlankEN" / "vocab.json").is_file()
    assert not (models / "campplus.onnx").exists()  # cloning files come only when cloning
    out = N.DH_CosyVoiceClone().clone(reference, "a few words of the clip", "Anna")
    voice, report = out["result"]
    assert (env.dirs["models"] / "cosyvoice" / "voices" / "Anna.safetensors").is_file()
    assert "3.0 s" in report and "saved as" in report and out["ui"]["text"]
    assert "Anna" in N.DH_CosyVoiceLoadVoice.INPUT_TYPES()["required"]["voice_name"][0]
    (again,) = N.DH_CosyVoiceLoadVoice().load("Anna")
    np.testing.assert_array_equal(again.speech_tokens, voice.speech_tokens)
    with pytest.raises(ValueError, match="exists"):
        N.DH_CosyVoiceClone().clone(reference, "x", "Anna")
    env.progress.clear()
    res = N.DH_CosyVoiceSpeak().speak(model, again, "Hello world.\n\nA second paragraph here.", "zero_shot", 1.0, 3,
                                      save_subtitles=True, filename_prefix="tts/cv")
    audio, cost, srt, srt_path = res["result"]
    assert audio["sample_rate"] == 24000 and audio["waveform"].shape[:2] == (1, 1)
    assert audio["waveform"].shape[2] > 0 and torch.isfinite(audio["waveform"]).all()
    assert cost == 0.0 and srt.count("-->") == 2 and srt_path.endswith(".srt")
    assert env.progress and env.progress[-1] == (2, 2)
    # same seed, same speech, also through a saved-and-reloaded voice
    res2 = N.DH_CosyVoiceSpeak().speak(model, voice, "Hello world.\n\nA second paragraph here.", "zero_shot", 1.0, 3)
    assert torch.equal(res2["result"][0]["waveform"], audio["waveform"])


def test_bad_inputs_fail_before_work(cv_env, reference):
    N, hub, env = cv_env
    for bad in ("../escape", "a/b"):
        with pytest.raises(ValueError, match="voice name"):
            N.DH_CosyVoiceClone().clone(reference, "x", bad)
    assert hub.count("GET", "campplus") == 0  # refused before any download
    short = {"waveform": reference["waveform"][:, :, :2000], "sample_rate": reference["sample_rate"]}
    with pytest.raises(ValueError, match="at least 1 s"):
        N.DH_CosyVoiceClone().clone(short, "x", "")
    with pytest.raises(ValueError, match="no saved voice 'Nobody'"):
        N.DH_CosyVoiceLoadVoice().load("Nobody")
    (model,) = N.DH_LoadCosyVoice().load("fp32", "cpu")
    voice = N.DH_CosyVoiceClone().clone(reference, "", "")["result"][0]
    with pytest.raises(ValueError, match="nothing to say"):
        N.DH_CosyVoiceSpeak().speak(model, voice, "  ...  ", "cross_lingual", 1.0, 0)
    with pytest.raises(ValueError, match="zero_shot mode needs the transcript"):
        N.DH_CosyVoiceSpeak().speak(model, voice, "hello.", "zero_shot", 1.0, 0)


def test_cancel_stops_speaking(cv_env, reference):
    N, hub, env = cv_env
    import comfy.model_management as mm

    (model,) = N.DH_LoadCosyVoice().load("fp32", "cpu")
    voice = N.DH_CosyVoiceClone().clone(reference, "words", "")["result"][0]
    env.interrupt()
    with pytest.raises(mm.InterruptProcessingException):
        N.DH_CosyVoiceSpeak().speak(model, voice, "hello world, a sentence to cancel.", "zero_shot", 1.0, 0)


def test_builtin_default_voice_is_cloned_once_from_its_published_clip(cv_env, testdata, monkeypatch):
    """'default' comes from the reference's example clip (a catalogue URL file; here a real speech clip
    stands in for it), cloned with its transcript on first use and then loaded from the saved file."""
    import io

    from fakestorage import FakeStorage  # loopback stand-in for the clip's web host

    N, hub, env = cv_env
    wav, sr = sf.read(str(testdata / "yongen.wav"), dtype="float32", frames=48000 * 3)
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV")
    with FakeStorage() as store:
        serve_url_model(store, "cosyvoice.example_voice_zh", buf.getvalue(), monkeypatch)
        spec = N.DH_CosyVoiceLoadVoice.INPUT_TYPES()["required"]["voice_name"]
        assert spec[0][0] == "default" and spec[1]["default"] == "default"
        (voice,) = N.DH_CosyVoiceLoadVoice().load("default")
        assert voice.transcript == N.builtin_voices()["default"]["transcript"]
        saved = env.dirs["models"] / "cosyvoice" / "voices" / "default.safetensors"
        assert saved.is_file()
        fetched = store.count("zero_shot_prompt")
        (again,) = N.DH_CosyVoiceLoadVoice().load("default")
        assert store.count("zero_shot_prompt") == fetched  # the saved clone is used, nothing fetched again
        np.testing.assert_array_equal(again.speech_tokens, voice.speech_tokens)
