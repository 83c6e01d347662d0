"""CosyVoice 2 end to end with a small model in the published file layout: loading through the real
loaders, cloning a voice from real speech, the three modes, seeds, streaming, long scripts, the
saved-voice format and the bad inputs of the issue."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.cosyvoice import pipeline as P
from comfyui_digitalhuman.engine.cosyvoice import voice as V
from comfyui_digitalhuman.engine.cosyvoice.token2wav import StreamSchedule
from comfyui_digitalhuman.model_loaders import cosyvoice as loader
from tiny_cosyvoice import small_config, write_model_folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("cosyvoice"), small_config())


@pytest.fixture(scope="module")
def model(files):
    paths = {role: files[mid] for role, mid in loader.CATALOG_IDS.items()}
    return loader.load_cosyvoice(paths, cfg=small_config())


@pytest.fixture(scope="module")
def cloner(files):
    return loader.load_cloner({role: files[mid] for role, mid in loader.CLONE_IDS.items()})


@pytest.fixture(scope="module")
def clip(testdata):
    wave, sr = sf.read(str(testdata / "eng.wav"), dtype="float32", always_2d=True)
    return wave.T[:, : 4 * sr].copy(), sr  # 4 s of English speech, [C, T]


@pytest.fixture(scope="module")
def voice(clip, cloner):
    v, report = P.clone_voice(clip[0], clip[1], "and the transcript of the clip", *cloner, cfg=small_config())
    assert report.warnings == []
    return v


def test_clone_voice_gives_two_mel_frames_per_token_from_any_rate(clip, cloner):
    wave, sr = clip
    v, rep = P.clone_voice(wave, sr, "words", *cloner, cfg=small_config())
    # the tiny tokenizer yields 25 tokens a second (stride 4 over 100 mel frames a second); the
    # 24 kHz mel has 50 frames a second: the clone keeps min(frames // 2, tokens) of each
    assert abs(v.speech_tokens.shape[0] - 4 * 25) <= 1
    assert v.speech_feat.shape == (2 * v.speech_tokens.shape[0], 80)
    assert v.embedding.shape == (192,) and np.isfinite(v.embedding).all()
    assert rep.seconds == pytest.approx(4.0)
    # a 48 kHz stereo copy of the same clip gives the same voice up to resampling
    import torchaudio

    up = torchaudio.functional.resample(torch.from_numpy(wave), sr, 48000).numpy()
    v48, _ = P.clone_voice(np.repeat(up, 2, axis=0), 48000, "words", *cloner, cfg=small_config())
    assert v48.speech_tokens.shape == v.speech_tokens.shape
    assert np.mean(v48.speech_tokens == v.speech_tokens) > 0.9


@pytest.mark.parametrize("seconds,level,expect", [
    (0.5, 0.3, "at least 1 s"),
    (31.0, 0.3, "at most 30 s"),
    (3.0, 0.0, "silent"),
])
def test_clone_refuses_unusable_clips_naming_the_input(cloner, seconds, level, expect):
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    wave = (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with pytest.raises(P.SpeechInputError, match="reference audio") as e:
        P.clone_voice(wave, sr, "x", *cloner, cfg=small_config())
    assert expect in str(e.value)


def test_clipped_clip_and_missing_transcript_are_reported_not_refused(clip, cloner):
    wave, sr = clip
    loud = np.clip(wave * 50.0, -1.0, 1.0)
    v, rep = P.clone_voice(loud, sr, "", *cloner, cfg=small_config())
    assert any("clipped" in w for w in rep.warnings)
    assert any("no transcript" in w for w in rep.warnings)
    assert v.transcript == ""


def _speak(model, voice, text, **kw):
    return P.synthesize(model, text, voice, P.SpeakOptions(**kw))


def test_same_seed_same_speech_other_seed_other_speech(model, voice):
    a = _speak(model, voice, "hello world, this is a test.", seed=7)
    b = _speak(model, voice, "hello world, this is a test.", seed=7)
    c = _speak(model, voice, "hello world, this is a test.", seed=8)
    assert a.sample_rate == 24000 and a.samples.dtype == np.float32
    assert np.isfinite(a.samples).all() and np.abs(a.samples).max() <= 0.99 + 1e-6
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.samples.shape != c.samples.shape or not np.array_equal(a.samples, c.samples)
    # speech length is 480 samples per mel frame, 2 frames per speech token
    assert len(a.samples) % 960 == 0


def test_modes_use_the_prompts_the_reference_uses(model, voice):
    zs = _speak(model, voice, "the quick brown fox.", mode="zero_shot", seed=1)
    xl = _speak(model, voice, "the quick brown fox.", mode="cross_lingual", seed=1)
    ins = _speak(model, voice, "the quick brown fox.", mode="instruct", instruct="speak happily", seed=1)
    assert len({zs.samples.tobytes(), xl.samples.tobytes(), ins.samples.tobytes()}) == 3
    with pytest.raises(P.SpeechInputError, match="instruct"):
        _speak(model, voice, "x y z.", mode="instruct", instruct="  ")
    no_text = V.Voice(voice.speech_tokens, voice.speech_feat, voice.embedding, transcript="")
    with pytest.raises(P.SpeechInputError, match="zero_shot mode needs the transcript"):
        _speak(model, no_text, "hello.", mode="zero_shot")
    _speak(model, no_text, "hello.", mode="cross_lingual")  # fine without a transcript
    with pytest.raises(P.SpeechInputError, match="mode"):
        _speak(model, voice, "hello.", mode="sing")


@pytest.mark.parametrize("text", ["", "   \n ", "。，！？...", "!!!"])
def test_nothing_to_say_is_a_clear_error(model, voice, text):
    with pytest.raises(P.SpeechInputError, match="nothing to say"):
        _speak(model, voice, text)


def test_speed_stretches_the_whole_utterance(model, voice):
    base = _speak(model, voice, "one two three four.", seed=3)
    fast = _speak(model, voice, "one two three four.", seed=3, speed=2.0)
    # the mel is interpolated to int(T / speed) frames, each 480 samples
    assert len(fast.samples) == (len(base.samples) // 480 // 2) * 480
    with pytest.raises(P.SpeechInputError, match="speed"):
        _speak(model, voice, "x.", speed=3.0)
    with pytest.raises(P.SpeechInputError, match="stream off"):
        list(P.speak_pieces(model, P.plan_script("x y.", model.cfg), voice, P.SpeakOptions(speed=1.5, stream=True)))


def test_long_script_is_spoken_piece_by_piece_with_pauses_and_timings(model, voice):
    text = "First paragraph, one sentence. And a second one!\n\nSecond paragraph: " + "more words here, " * 30 + "the end."
    plan = P.plan_script(text, model.cfg)
    assert len(plan.pieces) >= 3
    seen = []
    res = P.synthesize(model, text, voice, P.SpeakOptions(seed=0), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(plan.pieces), len(plan.pieces)) and len(seen) == len(plan.pieces)
    assert [s.text for s in res.sentences] == [s.text for s in plan.sentences]
    starts = [s.start_s for s in res.sentences]
    assert starts == sorted(starts) and res.sentences[-1].end_s <= res.duration_s + 1e-6
    # each piece on its own gives the same audio as inside the script (seeded per piece)
    chunks = list(P.speak_pieces(model, plan, voice, P.SpeakOptions(seed=0)))
    assert [c.kind for c in chunks].count("pause") == len(plan.pieces) - 1


def test_a_stop_after_some_pieces_keeps_what_was_spoken(model, voice):
    text = "First paragraph here.\n\nSecond paragraph here.\n\nThird paragraph here."
    plan = P.plan_script(text, model.cfg)
    assert len(plan.pieces) == 3
    done = []

    class Stop(Exception):
        pass

    def interrupt():
        if len(done) == 2:
            raise Stop("cancelled")

    with pytest.raises(P.IncompleteSpeech) as e:
        P.synthesize(model, text, voice, P.SpeakOptions(seed=2), progress=lambda d, t: done.append(d), check_interrupt=interrupt)
    err = e.value
    assert isinstance(err.cause, Stop) and err.done == 2 and err.total == 3
    assert "piece 3 of 3" in str(err)
    whole = P.synthesize(model, "First paragraph here.\n\nSecond paragraph here.", voice, P.SpeakOptions(seed=2))
    np.testing.assert_array_equal(err.partial.samples, whole.samples)  # the two finished pieces, as spoken
    assert [s.text for s in err.partial.sentences] == ["First paragraph here.", "Second paragraph here."]


def test_twenty_thousand_characters_are_planned_whole_in_bounded_pieces(model):
    import time

    text = ("Our teacher explains the lesson slowly, with 3 examples and a summary. " * 150
            + "老师慢慢地讲解这一课，举了三个例子并做了总结。" * 200)[:20000]
    t = time.perf_counter()
    plan = P.plan_script(text, model.cfg)
    assert time.perf_counter() - t < 10
    joined = "".join(plan.source[p.start:p.end] for p in plan.pieces)
    assert joined.replace(" ", "") == text.strip().replace(" ", "")  # nothing dropped
    # each piece within the plan's estimate of the reference's piece size (the reference's own split
    # then cuts by real token counts; the tiny test tokenizer spends 3 tokens on a CJK character)
    from comfyui_digitalhuman.engine.speech.sentences import token_budget

    fe = model.cfg["frontend"]
    budget = token_budget(fe["split_token_max_n"], fe["plan_cjk_tokens_per_char"], fe["plan_other_chars_per_token"])
    assert max(sum(budget.weight(ch) for ch in p.text) for p in plan.pieces) <= budget.limit
    assert len(plan.pieces) > 100


def test_cancel_inside_a_piece_stops_and_keeps_nothing_half_made(model, voice):
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def interrupt():
        calls["n"] += 1
        if calls["n"] > 5:
            raise Stop

    with pytest.raises(Stop):
        _ = P.synthesize(model, "hello world, this is a test.", voice, P.SpeakOptions(), check_interrupt=interrupt)
    assert calls["n"] == 6


def test_streaming_hops_follow_the_reference_schedule(model, voice):
    """First hop: token_hop_len + the pad that fills the prompt's last chunk; then doubling to the
    maximum; a final chunk with the rest. Audio per hop = hop tokens * 2 frames * 480 samples, the
    first hop minus the vocoder's cached 3840-sample tail, each later hop shifted by the same."""
    sched = StreamSchedule.from_config(model.cfg)
    plan = P.plan_script("hello world, this is a test of the text front end.", model.cfg)
    chunks = [c for c in P.speak_pieces(model, plan, voice, P.SpeakOptions(stream=True, seed=4)) if c.kind == "speech"]
    whole = P.speak_pieces(model, plan, voice, P.SpeakOptions(stream=False, seed=4))
    total = sum(len(c.samples) for c in [c for c in whole if c.kind == "speech"])
    n_prompt = voice.speech_tokens.shape[0]
    hop = sched.token_hop_len
    pad = -n_prompt % hop
    expect, first = [], True
    remaining_tokens = total // 960
    h = hop
    while True:
        this = h + pad if first else h
        if remaining_tokens < this + 3:  # pre_lookahead_len
            break
        expect.append(this)
        remaining_tokens -= this
        first = False
        h = min(sched.token_max_hop_len, h * sched.stream_scale_factor)
    # the same seed drives the same tokens whether streamed or not, so the hop plan is known
    got = [len(c.samples) for c in chunks]
    assert len(got) == len(expect) + 1
    cache = sched.source_cache_len
    for i, (n, tokens) in enumerate(zip(got, expect)):
        assert n == tokens * 960 - (cache if i == 0 else 0), (i, got, expect)
    assert sum(got) == total


def test_saved_voice_round_trips_and_bad_files_are_named(tmp_path, voice):
    path = V.save_voice(voice, tmp_path / "voices" / "anna.safetensors")
    back = V.load_voice(path)
    np.testing.assert_array_equal(back.speech_tokens, voice.speech_tokens)
    np.testing.assert_array_equal(back.speech_feat, voice.speech_feat)
    np.testing.assert_array_equal(back.embedding, voice.embedding)
    assert back.transcript == voice.transcript
    # small: the three arrays as stored plus a header of a few kB (metadata), no pickled extras
    payload = voice.speech_tokens.nbytes + voice.speech_feat.nbytes + voice.embedding.nbytes
    assert payload < path.stat().st_size < payload + 4096
    (tmp_path / "junk.safetensors").write_bytes(b"not a voice")
    with pytest.raises(V.VoiceError, match="junk.safetensors"):
        V.load_voice(tmp_path / "junk.safetensors")
    with pytest.raises(V.VoiceError, match="not found"):
        V.load_voice(tmp_path / "nope.safetensors")
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65):
        with pytest.raises(V.VoiceError):
            V.check_voice_name(bad)
    assert V.check_voice_name(" Anna 2 ") == "Anna 2"


def test_loader_refuses_another_qwen_configuration(files, tmp_path):
    import json

    paths = {role: files[mid] for role, mid in loader.CATALOG_IDS.items()}
    cfg = json.loads(paths["qwen_config"].read_text())
    cfg["num_hidden_layers"] = 3
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_hidden_layers=3"):
        loader.load_cosyvoice({**paths, "qwen_config": bad}, cfg=small_config())


def test_building_the_language_model_on_meta_leaves_torchaudio_usable():
    """Regression: transformers imports torchaudio, whose Kaldi module makes a tensor at import;
    imported inside the meta-device build it had no data and every later fbank failed."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _pack, torch\n"
        "from comfyui_digitalhuman.engine.cosyvoice.llm import build_llm_on_meta\n"
        "from comfyui_digitalhuman.engine.cosyvoice.random_llm import small_llm_config\n"
        "build_llm_on_meta(*small_llm_config())\n"
        "from comfyui_digitalhuman.engine.cosyvoice import features\n"
        "f = features.campplus_fbank(torch.randn(16000) * 0.1)\n"
        "print(tuple(f.shape), f.is_meta)\n")
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    out = subprocess.run([sys.executable, "-c", code, str(scripts)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("False")
    # the same through MuseTalk's loader (its whisper encoder is transformers', built on meta), and when
    # something else poisoned torchaudio first (another pack importing it inside a meta block)
    code2 = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _pack, torch\n"
        "from comfyui_digitalhuman.model_loaders.musetalk import _on_meta\n"
        "_on_meta(lambda: torch.nn.Linear(2, 2))\n"
        "import torchaudio.compliance.kaldi as k\n"
        "assert not k.EPSILON.is_meta\n"
        "k.EPSILON = torch.empty((), device='meta')\n"
        "from comfyui_digitalhuman.engine.cosyvoice import features\n"
        "print(features.campplus_fbank(torch.randn(16000) * 0.1).shape)\n")
    out = subprocess.run([sys.executable, "-c", code2, str(scripts)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
