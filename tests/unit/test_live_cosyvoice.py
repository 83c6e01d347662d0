"""CosyVoice 2 as a live voice (engine/cosyvoice/live_voice.py): a small model in the published layout
streams chunks that are exactly the whole-run speech, and drives a live session end to end."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from live_helpers import make_avatar, run_frames, turn_ended
from comfyui_digitalhuman.engine.cosyvoice import pipeline as P
from comfyui_digitalhuman.engine.cosyvoice.live_voice import CosyVoiceStreamingVoice
from comfyui_digitalhuman.engine.live.render import MuseTalkRenderer
from comfyui_digitalhuman.engine.live.session import LiveOptions, LiveSession
from comfyui_digitalhuman.engine.musetalk.random_models import random_models
from comfyui_digitalhuman.engine.speech.voice import check_voice
from comfyui_digitalhuman.model_loaders import cosyvoice as loader
from tiny_cosyvoice import small_config, write_model_folder


@pytest.fixture(scope="module")
def cv(tmp_path_factory, testdata):
    files = write_model_folder(tmp_path_factory.mktemp("cosyvoice"), small_config())
    model = loader.load_cosyvoice({r: files[m] for r, m in loader.CATALOG_IDS.items()}, cfg=small_config())
    cloner = loader.load_cloner({r: files[m] for r, m in loader.CLONE_IDS.items()})
    wave, sr = sf.read(str(testdata / "eng.wav"), dtype="float32", always_2d=True)
    voice, _ = P.clone_voice(wave.T[0, : 4 * sr], sr, "and the transcript of the clip", *cloner, cfg=small_config())
    return model, voice


def test_streamed_chunks_are_the_streamed_synthesis(cv):
    model, voice = cv
    v = check_voice(CosyVoiceStreamingVoice(lambda: model, voice, seed=3))
    text = "Hello there, this is a test."
    got = list(v.stream(text))
    assert len([c for c in got if c.kind == "speech"]) >= 1 and all(c.sample_rate == 24000 for c in got)
    ref = [c for c in P.speak_pieces(model, P.plan_script(text, model.cfg), voice, P.SpeakOptions(stream=True, seed=3))]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in got]), np.concatenate([c.samples for c in ref]))


def test_bad_options_fail_when_made(cv):
    model, voice = cv
    with pytest.raises(P.SpeechInputError, match="style instruction"):
        CosyVoiceStreamingVoice(lambda: model, voice, mode="instruct")
    with pytest.raises(P.SpeechInputError, match="mode"):
        CosyVoiceStreamingVoice(lambda: model, voice, mode="sing")


def test_a_session_speaks_with_cosyvoice(cv, testdata):
    model, voice = cv
    mt = random_models(tiny=True, seed=4)
    s = LiveSession(MuseTalkRenderer(lambda: mt, make_avatar(mt, testdata, n=1, size=128)),
                    CosyVoiceStreamingVoice(lambda: model, voice), options=LiveOptions.from_data(max_side=0),
                    start_clock=False)
    try:
        tid = s.say("Good morning.")
        frames = run_frames(s, turn_ended(s, tid), timeout=300)
        assert sum(1 for f in frames if f.speaking and not f.held) >= 1
        assert not [e for e in s.events.since(0)[0] if e["type"] == "error"]
    finally:
        s.close()
