"""What the live-session tests share: a deterministic in-process voice, a small real avatar, and
helpers that drive a session frame by frame.

The voice is an input generator (like the fake servers' voice, tests/fakespeech.py), not a mock of
our code: it follows the streaming-voice protocol, speaks a tone per character at a slow rate so
answers last several frames, yields its audio in chunks with an optional delay, and polls the
interrupt check while it "thinks", as a network voice does.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

import fakespeech

TINY_FPS = 25.0


class ToneVoice:
    """A streaming voice: ``fakespeech.render`` at ``speed`` (0.1: 40 ms per character), in chunks."""

    def __init__(self, sample_rate: int = 24000, speed: float = 0.1, chunk_s: float = 0.1, delay_s: float = 0.0,
                 first_delay_s: float = 0.0, fail_after: int | None = None):
        self.name = "tone voice"
        self.sample_rate = sample_rate
        self.speed = speed
        self.chunk_s = chunk_s
        self.delay_s = delay_s
        self.first_delay_s = first_delay_s
        self.fail_after = fail_after
        self.cost_usd = 0.0
        self.texts: list[str] = []
        self.open_streams = 0
        self.closed_at: list[float] = []
        self.lock = threading.Lock()

    def audio(self, text: str) -> np.ndarray:
        return fakespeech.render(text, self.sample_rate, self.speed).astype(np.float32) / 32768.0

    def _wait(self, seconds: float, check) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if check:
                check()
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))

    def stream(self, text, *, check_interrupt=None):
        from comfyui_digitalhuman.engine.speech.types import SpeechChunk

        with self.lock:
            self.texts.append(text)
            self.open_streams += 1
        try:
            x = self.audio(text)
            step = max(1, int(self.chunk_s * self.sample_rate))
            self._wait(self.first_delay_s, check_interrupt)
            for n, k in enumerate(range(0, x.size, step)):
                if self.fail_after is not None and n >= self.fail_after:
                    raise RuntimeError("tone voice: the synthesis server went away")
                if check_interrupt:
                    check_interrupt()
                yield SpeechChunk(x[k:k + step], self.sample_rate, 0)
                self._wait(self.delay_s, check_interrupt)
            self.cost_usd += 0.001
        finally:
            with self.lock:
                self.open_streams -= 1
                self.closed_at.append(time.monotonic())


def avatar_frames(testdata: Path, n: int = 3, size: int = 160) -> np.ndarray:
    """``n`` frames of a real portrait (s6.jpg), each a little brighter, so ping-pong order is visible."""
    from PIL import Image

    img = np.asarray(Image.open(testdata / "s6.jpg").convert("RGB").resize((size, size), Image.BICUBIC)).astype(np.int16)
    return np.stack([np.clip(img + 12 * k, 0, 255).astype(np.uint8) for k in range(n)])


def make_avatar(models, testdata: Path, n: int = 3, size: int = 160):
    """A prepared MuseTalk avatar of the portrait with a fixed face box (the face engine is not the subject)."""
    from comfyui_digitalhuman.engine.musetalk.pipeline import prepare_avatar

    frames = avatar_frames(testdata, n, size)
    box = (int(size * 0.25), int(size * 0.2), int(size * 0.75), int(size * 0.8))
    return prepare_avatar(models, frames, [box] * n)


def run_frames(session, until, timeout: float = 120.0, pace_s: float = 0.0) -> list:
    """Step ``session`` (made with ``start_clock=False``) until ``until(frames)`` is true; returns the frames.
    Between idle frames it waits a little so the render thread gets the processor."""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = session.step()
        frames.append(f)
        if until(frames):
            return frames
        if pace_s:
            time.sleep(pace_s)
        elif f.held or not f.speaking:
            time.sleep(0.005)
    raise AssertionError(f"condition not reached in {timeout:.0f} s ({len(frames)} frames, state {session.state}, "
                         f"events {[e['type'] for e in session.events.since(0)[0]][-12:]})")


def turn_ended(session, turn_id: int):
    def cond(frames) -> bool:
        return any(e["type"] == "turn_end" and e.get("turn") == turn_id for e in session.events.since(0)[0])

    return cond
