"""The live session in the engine (engine/live), without ComfyUI and without a browser: frames are
stepped by hand (``start_clock=False``) except where real time is the point.

Networks: MuseTalk with tiny random weights in the published layouts; voice: tests/live_helpers.py
ToneVoice (deterministic), or the OpenAI adapter against the fake server; chat: the fake
chat-completions server.
"""
from __future__ import annotations

import threading
import time

import librosa
import numpy as np
import pytest
import torch

from fakechat import FakeChat, default_reply
from live_helpers import ToneVoice, make_avatar, run_frames, turn_ended
from comfyui_digitalhuman.engine.live.render import AvatarMismatchError, MuseTalkRenderer
from comfyui_digitalhuman.engine.live.session import LiveOptions, LiveSession, SessionClosedError
from comfyui_digitalhuman.engine.live.text import TextAggregator
from comfyui_digitalhuman.engine.musetalk import pipeline
from comfyui_digitalhuman.engine.musetalk.random_models import random_models
from comfyui_digitalhuman.engine.speech.config import section as speech_section
from comfyui_digitalhuman.engine.speech.join import trim_bounds
from comfyui_digitalhuman.providers.chat import ChatSettings, OpenAICompatibleChat
from comfyui_digitalhuman.providers.http import RetryPolicy

FPS = 25.0
SPF = 1920  # 48 kHz / 25 fps


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return random_models(tiny=True, seed=11)


@pytest.fixture(scope="module")
def avatar(models, testdata):
    return make_avatar(models, testdata)


def new_session(models, avatar, voice=None, chat=None, **opts) -> LiveSession:
    o = LiveOptions.from_data(**{"transition_frames": 0, "max_side": 0, **opts})
    return LiveSession(MuseTalkRenderer(lambda: models, avatar, o.fps), voice, chat, options=o, start_clock=False)


def pieces_of(text: str) -> list[str]:
    agg = TextAggregator()
    return [p.text for p in agg.feed(text) + agg.flush()]


def speech(frames):
    return [f for f in frames if f.speaking and not f.held]


def trimmed(voice: ToneVoice, text: str) -> np.ndarray:
    x = voice.audio(text)
    t = speech_section("trim")
    a, b = trim_bounds(x, voice.sample_rate, t["threshold_dbfs"], t["keep_s"])
    return x[a:b]


def test_idle_loop_plays_the_avatar_forwards_and_backwards(models, avatar):
    s = new_session(models, avatar)
    try:
        frames = [s.step() for _ in range(10)]
        assert [f.pos for f in frames] == list(range(10))
        shown = [pipeline.pingpong_index(f.pos, 3) for f in frames]
        assert shown == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
        for f in frames:
            np.testing.assert_array_equal(f.video, avatar.frames[pipeline.pingpong_index(f.pos, 3)])
            assert f.audio.shape == (SPF,) and not f.audio.any() and not f.speaking
        assert s.state == "idle"
    finally:
        s.close()


def test_repeat_turn_frames_carry_their_own_audio_and_match_offline_lip_sync(models, avatar):
    voice = ToneVoice()
    s = new_session(models, avatar, voice)
    try:
        text = "Hello there."
        idle = [s.step() for _ in range(3)]
        tid = s.say(text)
        assert s.state == "speaking"
        frames = idle + run_frames(s, turn_ended(s, tid))
        frames += [s.step() for _ in range(3)]
        spk = speech(frames)
        x = trimmed(voice, text)
        n16 = int(np.ceil(x.size * 16000 / 24000))
        n = int(n16 / 16000 * FPS)
        assert len(spk) == n  # floor(seconds x fps) frames, as the offline Speak node makes
        # sound: frame k carries samples k*1920 .. (k+1)*1920 of the piece at 48 kHz, nothing else
        out48 = librosa.resample(x, orig_sr=24000, target_sr=48000)
        want = np.zeros(n * SPF, np.float32)
        want[:min(out48.size, want.size)] = out48[:want.size]
        np.testing.assert_allclose(np.concatenate([f.audio for f in spk]), want, rtol=0, atol=1e-6)
        # picture: positions continue the idle loop without a jump, and the frames are MuseTalk's
        pos = [f.pos for f in frames]
        assert all(b - a in (0, 1) for a, b in zip(pos, pos[1:])) and s.timeline.stats["skips"] == 0
        offline = list(pipeline.speak(models, avatar, x, 24000, FPS, batch_size=8, start_frame=spk[0].pos))
        assert len(offline) == n
        for f, ref in zip(spk, offline):
            # the live path renders a first batch of 2 then 8; a different batch shape may change the
            # fp32 summation order, which moves a value across a rounding boundary by at most 1 level
            assert np.abs(f.video.astype(int) - ref.astype(int)).max() <= 1
        assert not any(f.speaking for f in frames[-3:]) and s.state == "idle"
        types = [e["type"] for e in s.events.since(0)[0]]
        assert types.index("turn") < types.index("latency") < types.index("said") < types.index("turn_end")
        lat = next(e for e in s.events.since(0)[0] if e["type"] == "latency")
        assert 0 <= lat["first_audio_ms"] <= lat["first_batch_ms"] <= lat["first_frame_ms"]
    finally:
        s.close()


def test_pieces_of_a_long_text_follow_each_other_with_the_pause_between_them(models, avatar):
    voice = ToneVoice()
    s = new_session(models, avatar, voice, first_batch=2, batch_size=8)
    try:
        text = "Good morning, everyone. Welcome."
        tid = s.say(text)
        frames = run_frames(s, turn_ended(s, tid))
        assert voice.texts == pieces_of(text) == ["Good morning,", "everyone.", "Welcome."]
        said = [e["text"] for e in s.events.since(0)[0] if e["type"] == "said"]
        assert said == voice.texts
        # between the pieces: either the pause (silent speaking frames) or idle; never a position jump
        pos = [f.pos for f in frames]
        assert all(b - a in (0, 1) for a, b in zip(pos, pos[1:]))
    finally:
        s.close()


def test_mouth_fades_in_and_out(models, avatar):
    voice = ToneVoice()
    s = new_session(models, avatar, voice, transition_frames=4)
    try:
        tid = s.say("Hi there.")
        frames = run_frames(s, turn_ended(s, tid))
        frames += [s.step() for _ in range(6)]
        spk = speech(frames)
        raw0 = avatar.frames[pipeline.pingpong_index(spk[0].pos, 3)].astype(np.float32)
        # the first speaking frame is 1/5 of the way from the avatar's own frame to the redrawn one
        d0 = np.abs(spk[0].video.astype(np.float32) - raw0).max()
        d_full = max(np.abs(f.video.astype(np.float32) - avatar.frames[pipeline.pingpong_index(f.pos, 3)]).max() for f in spk[4:])
        assert 0 < d0 < 0.45 * d_full
        after = [f for f in frames if not f.speaking and f.index > spk[-1].index][:5]
        diffs = [np.abs(f.video.astype(int) - avatar.frames[pipeline.pingpong_index(f.pos, 3)]).max() for f in after]
        assert diffs[0] > 0 and diffs[-1] == 0 and diffs == sorted(diffs, reverse=True)  # decays to the avatar itself
    finally:
        s.close()


def test_interrupt_mid_sentence_stops_within_200_ms(models, avatar):
    voice = ToneVoice(delay_s=0.05)  # a voice that streams slowly: Stop must end its request too
    o = LiveOptions.from_data(transition_frames=0, max_side=0)
    s = LiveSession(MuseTalkRenderer(lambda: models, avatar, FPS), voice, options=o)  # the real clock
    seen: list = []
    got_speech = threading.Event()

    def sink(f):
        seen.append((time.monotonic(), f.speaking))
        if f.speaking and not f.held:
            got_speech.set()

    s.add_sink(sink)
    try:
        tid = s.say("This is a long sentence that keeps going, so that we can stop it in the middle of speaking it.")
        assert got_speech.wait(120), s.status()
        t_stop = time.monotonic()
        assert s.interrupt()
        assert s.state == "interrupted"
        time.sleep(0.4)
        after = [(t, sp) for t, sp in seen if t > t_stop]
        assert after and not any(sp for _, sp in after)  # no speaking frame was shown after Stop
        assert after[0][0] - t_stop < 0.2
        assert voice.open_streams == 0 and voice.closed_at[-1] - t_stop < 0.2  # the voice's request ended too
        ev = [e for e in s.events.since(0)[0] if e["type"] == "interrupted"]
        assert ev and ev[0]["turn"] == tid
        time.sleep(0.3)
        assert s.state == "idle"
    finally:
        s.close()


def test_a_new_message_replaces_the_current_answer(models, avatar):
    voice = ToneVoice(first_delay_s=0.3)
    s = new_session(models, avatar, voice)
    try:
        a = s.say("First message that will never be heard at all.")
        b = s.say("Second.")
        frames = run_frames(s, turn_ended(s, b))
        assert {f.turn for f in speech(frames)} == {b}
        said = [e for e in s.events.since(0)[0] if e["type"] == "said"]
        assert [e["turn"] for e in said] == [b]
        assert any(e["type"] == "interrupted" and e["turn"] == a for e in s.events.since(0)[0])
    finally:
        s.close()


def chat_model(srv, **kw) -> OpenAICompatibleChat:
    return OpenAICompatibleChat(srv.url, ChatSettings("llama3.2"), system_prompt="You are Ada.", knowledge="Open 9-17.",
                                retry=RetryPolicy(max_tries=1), read_timeout_s=kw.get("timeout", 5.0))


def test_chat_mode_speaks_the_streamed_answer_and_keeps_the_conversation(models, avatar):
    voice = ToneVoice()
    with FakeChat() as srv:
        srv.token_delay_s = 0.02
        s = new_session(models, avatar, voice, chat_model(srv))
        try:
            t1 = s.ask("hello")
            run_frames(s, turn_ended(s, t1))
            reply = default_reply([{"role": "user", "content": "hello"}])
            assert voice.texts == pieces_of(reply)
            answer = "".join(e["delta"] for e in s.events.since(0)[0] if e["type"] == "answer")
            assert answer == reply
            lat = next(e for e in s.events.since(0)[0] if e["type"] == "latency")
            assert lat["first_token_ms"] <= lat["first_piece_ms"] <= lat["first_audio_ms"]
            t2 = s.ask("and then?")
            run_frames(s, turn_ended(s, t2))
            msgs = srv.requests[-1]["messages"]
            assert msgs[0]["role"] == "system" and "Open 9-17." in msgs[0]["content"]
            assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "user"]
            assert msgs[1]["content"] == "hello" and msgs[2]["content"] == " ".join(pieces_of(reply))  # what it said
            assert msgs[-1]["content"] == "and then?"
        finally:
            s.close()


@pytest.mark.parametrize("step,match", [(("status", 500, {}), "Chat API error 500"),
                                        (("stall", 4, 3.0), "stream stopped"),
                                        (("garbage",), "not a chat-completions stream"),
                                        (("status", 429, {"Retry-After": "0"}), "Chat API error 429")])
def test_chat_failures_are_reported_and_the_session_goes_on(models, avatar, step, match):
    voice = ToneVoice()
    with FakeChat() as srv:
        s = new_session(models, avatar, voice, chat_model(srv, timeout=0.5))
        try:
            srv.script = [step]
            t1 = s.ask("hello")
            run_frames(s, turn_ended(s, t1), timeout=60)
            err = [e for e in s.events.since(0)[0] if e["type"] == "error"]
            assert err and err[0]["where"] == "chat" and err[0]["turn"] == t1
            assert __import__("re").search(match, err[0]["message"]), err[0]["message"]
            if step[0] == "stall":
                assert voice.texts  # the words before the stall were still spoken
            t2 = s.say("Still here.")
            frames = run_frames(s, turn_ended(s, t2))
            assert speech(frames) and s.state == "idle"
        finally:
            s.close()


def test_a_chat_endpoint_that_is_down(models, avatar):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chat = OpenAICompatibleChat(f"http://127.0.0.1:{port}/v1", ChatSettings("m"), retry=RetryPolicy(max_tries=1))
    s = new_session(models, avatar, ToneVoice(), chat)
    try:
        t1 = s.ask("hello?")
        run_frames(s, turn_ended(s, t1), timeout=60)
        err = [e for e in s.events.since(0)[0] if e["type"] == "error"]
        assert err and err[0]["where"] == "chat" and "connection failed" in err[0]["message"]
        assert s.state == "idle"
    finally:
        s.close()


def test_a_failing_voice_shows_what_arrived_and_reports(models, avatar):
    voice = ToneVoice(chunk_s=0.1, fail_after=3)
    s = new_session(models, avatar, voice)
    try:
        tid = s.say("A sentence long enough for several chunks of audio to arrive first.")
        frames = run_frames(s, turn_ended(s, tid))
        assert len(speech(frames)) >= 5  # about 0.3 s arrived before the failure: it is shown
        err = [e for e in s.events.since(0)[0] if e["type"] == "error"]
        assert err and err[0]["where"] == "voice" and "went away" in err[0]["message"]
    finally:
        s.close()


def test_audio_mode_lip_syncs_a_clip_as_it_is(models, avatar):
    s = new_session(models, avatar)
    try:
        sr = 22050
        t = np.arange(int(0.7 * sr)) / sr
        clip = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        tid = s.play(np.stack([clip, clip]), sr)  # stereo [2, T]
        frames = run_frames(s, turn_ended(s, tid))
        spk = speech(frames)
        n16 = int(np.ceil(clip.size * 16000 / sr))
        assert len(spk) == int(n16 / 16000 * FPS)
        want = librosa.resample(clip, orig_sr=sr, target_sr=48000)[:len(spk) * SPF]
        got = np.concatenate([f.audio for f in spk])[:want.size]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        with pytest.raises(ValueError, match="shorter than one video frame"):
            s.play(np.zeros(100, np.float32), 16000)
        with pytest.raises(ValueError, match="at most 300"):
            s.play(np.zeros(16000 * 301, np.float32), 16000)
    finally:
        s.close()


def test_bad_input_is_refused_clearly(models, avatar):
    s = new_session(models, avatar)  # no voice, no chat
    try:
        with pytest.raises(ValueError, match="no voice"):
            s.say("hello")
        with pytest.raises(ValueError, match="chat model"):
            s.ask("hello")
    finally:
        s.close()
    s = new_session(models, avatar, ToneVoice())
    try:
        with pytest.raises(ValueError, match="empty"):
            s.say("   ")
        with pytest.raises(ValueError, match="at most 20000"):
            s.say("x" * 20001)
        tid = s.say(("This is a sentence of a very long text. " * 500)[:20000])  # 20,000 characters are fine
        frames = run_frames(s, lambda fr: len(speech(fr)) >= 3)
        assert s.state == "speaking" and s.interrupt()
        assert len(s.voice.texts) <= 3  # spoken piece by piece, not synthesised all at once
    finally:
        s.close()
    with pytest.raises(SessionClosedError):
        s.say("after close")
    assert s.state == "closed" and s.renderer is None
    assert not any(t.is_alive() for t in s._threads) and not s.ticker.thread.is_alive()


def test_an_avatar_for_other_networks_is_refused(models, avatar):
    import dataclasses

    other = dataclasses.replace(avatar, latents=torch.zeros(len(avatar), 4, 32, 32))
    with pytest.raises(AvatarMismatchError, match="prepared for another model"):
        MuseTalkRenderer(lambda: models, other).check()
    noface = dataclasses.replace(avatar, present=np.zeros(len(avatar), bool))
    with pytest.raises(AvatarMismatchError, match="no frame of it has a face"):
        MuseTalkRenderer(lambda: models, noface).check()
    with pytest.raises(TypeError, match="prepared MuseTalk avatar"):
        MuseTalkRenderer(lambda: models, "not an avatar")


def test_the_clock_keeps_real_time(models, avatar):
    s = LiveSession(MuseTalkRenderer(lambda: models, avatar), None, options=LiveOptions.from_data(max_side=0))
    try:
        got = []
        s.add_sink(lambda f: got.append(time.monotonic()))
        time.sleep(1.2)
        n = len(got)
        assert 25 <= n <= 33, n  # 25 fps from the first frame (0.2 s of slack for a loaded machine)
        assert s.status()["clock_fps"] == pytest.approx(25, abs=3)
    finally:
        s.close()
