"""The live session's GPU goals with full-size MuseTalk networks (random weights in the published
layout, fp16): under 1 s from send to the first speaking frame on the media clock with an instant
voice (CosyVoice 2's own first-chunk time comes on top, see scripts/bench_cosyvoice.py), and
rendering faster than 25 fps so a long answer plays without held frames. Needs CUDA; skipped on
CPU (the CPU figures are scripts/bench_live.py's)."""
from __future__ import annotations

import time

import pytest
import torch

from live_helpers import ToneVoice, make_avatar
from comfyui_digitalhuman.engine.live.render import MuseTalkRenderer
from comfyui_digitalhuman.engine.live.session import LiveOptions, LiveSession
from comfyui_digitalhuman.engine.musetalk.random_models import random_models

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_full_size_first_frame_under_a_second_and_steady_25_fps(testdata):
    models = random_models(tiny=False, dtype=torch.float16)
    for m in (models.unet, models.vae, models.whisper, models.parser):
        torch.nn.Module.to(m, device="cuda")
    avatar = make_avatar(models, testdata, n=1, size=512)
    opts = LiveOptions.from_data(max_side=512)
    s = LiveSession(MuseTalkRenderer(lambda: models, avatar), ToneVoice(speed=0.05), options=opts)
    try:
        firsts = []
        for _ in range(3):
            tid = s.say("Hello there, how are you today?")
            t0 = time.monotonic()
            while "first_frame" not in s.turn.marks and time.monotonic() - t0 < 30:
                time.sleep(0.005)
            firsts.append((s.turn.marks["first_frame"] - s.turn.t_submit) * 1000)
            s.interrupt()
            time.sleep(0.5)
        assert sorted(firsts)[1] < 1000, firsts
        before = dict(s.timeline.stats)
        s.say("This is a long answer that goes on for a while, sentence after sentence. " * 6)
        time.sleep(12)
        after = dict(s.timeline.stats)
        assert after["speech_frames"] - before["speech_frames"] > 200
        assert after["stalls"] - before["stalls"] <= 2  # rendering keeps ahead of the clock
        assert s.renderer.s_per_frame < 1 / 25
    finally:
        s.close()
