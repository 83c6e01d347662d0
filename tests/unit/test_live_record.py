"""Recording a live session (engine/live/record.py): the MP4 holds every frame shown with its sound,
the transcript and subtitles sit beside it, and a recording cut by a killed process keeps what
was recorded."""
from __future__ import annotations

import json
import textwrap

import av
import numpy as np
import pytest
import torch

from isolated import exit_reason, run_python
from live_helpers import ToneVoice, make_avatar, run_frames, turn_ended
from comfyui_digitalhuman.engine.live.record import Recorder
from comfyui_digitalhuman.engine.live.render import MuseTalkRenderer
from comfyui_digitalhuman.engine.live.session import LiveOptions, LiveSession
from comfyui_digitalhuman.engine.musetalk.random_models import random_models

FPS = 25.0


def read_back(path):
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].codec_context.sample_rate
    return frames, audio, rate


def test_a_session_recording_holds_what_was_shown_and_said(testdata, tmp_path):
    torch.manual_seed(0)
    models = random_models(tiny=True, seed=5)
    avatar = make_avatar(models, testdata)
    opts = LiveOptions.from_data(max_side=0, transition_frames=2)
    rec = Recorder(tmp_path / "live" / "session1", FPS, (160, 160), 48000)
    s = LiveSession(MuseTalkRenderer(lambda: models, avatar), ToneVoice(), options=opts, recorder=rec, start_clock=False)
    try:
        idle = [s.step() for _ in range(10)]
        tid = s.say("Hello there.")
        frames = idle + run_frames(s, turn_ended(s, tid), pace_s=0.02)
        frames += [s.step() for _ in range(10)]
    finally:
        s.close()
    assert not rec.partial.exists() and rec.final.exists()  # closed normally: renamed from .partial.mp4
    n, audio, rate = read_back(rec.final)
    assert rec.dropped == 0 and n == len(frames) and rate == 48000
    # AAC adds its encoder delay (1024 samples) in front at most; the length is the frames' time otherwise
    assert abs(audio.size - len(frames) * 1920) <= 2048
    first = next(f.index for f in frames if f.speaking and not f.held)
    loud = np.flatnonzero(np.abs(audio) > 0.05)
    assert abs(loud[0] / 48000 - first / FPS) < 0.05  # the sound starts with the first speaking frame
    lines = [json.loads(x) for x in rec.transcript_path.read_text(encoding="utf-8").splitlines()]
    assert [x["role"] for x in lines] == ["user", "avatar"] and lines[0]["text"] == "Hello there."
    assert lines[1]["t"] == pytest.approx(first / FPS)
    srt = rec.srt_path.read_text(encoding="utf-8")
    assert srt.startswith("1\n") and "Hello there." in srt


CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import _pack
    from comfyui_digitalhuman.engine.live.record import Recorder
    from comfyui_digitalhuman.engine.live.timeline import AVFrame
    rec = Recorder(sys.argv[1], 25.0, (96, 64), 48000)
    rec.note("user", "before the stop", 0.0)
    t = np.arange(1920) / 48000
    for i in range(100):  # 4 s
        v = np.full((64, 96, 3), (i * 2) % 256, np.uint8)
        rec.write(AVFrame(i, v, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), i, True))
        time.sleep(0.04)
    time.sleep(0.5)
    print("written", rec.frames, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # as a server killed mid-session: no clean-up at all
""")


def test_a_recording_cut_by_a_killed_server_keeps_what_was_recorded(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    base = tmp_path / "cut"
    proc = run_python([script, base], timeout=120)
    assert "SIGKILL" in exit_reason(proc), proc.stdout + proc.stderr
    written = int(proc.stdout.split("written")[-1].strip())
    partial = tmp_path / "cut.partial.mp4"
    assert partial.exists() and not (tmp_path / "cut.mp4").exists()
    n, audio, rate = read_back(partial)
    # fragments are cut at every keyframe (1 s): at most the last second, plus frames still in the
    # encoder, can be missing
    assert written >= 99 and n >= written - 25 - 5, (n, written)
    assert audio.size >= (n - 25) * 1920
    lines = (tmp_path / "cut.transcript.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["text"] == "before the stop"
