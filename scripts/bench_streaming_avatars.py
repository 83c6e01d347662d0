#!/usr/bin/env python3
"""Benchmark of what the pack itself computes for a commercial streaming avatar: LiveAvatar LITE's
audio path (our voice's float audio -> soxr resampling to 24 kHz -> PCM16 -> 600 ms / 1 s chunks ->
base64 JSON messages), per input rate, and a LITE session against the local fake LiveAvatar (token,
start, socket "connected", one utterance sent, stop).

    python scripts/bench_streaming_avatars.py [--seconds 30] [--chunk-ms 40]

Prints ms of work per second of audio (real-time factor = that / 1000), the time until the first
message could leave (audio needed for 600 ms is what it waits for, not compute), peak Python memory,
and the session's wall-clock timings on loopback. The provider's rendering is not ours to measure.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.speech.pcm_chunks import Pcm16Chunker  # noqa: E402


def bench_chunker(rate: int, seconds: float, chunk_ms: float) -> dict:
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    step = max(1, int(rate * chunk_ms / 1000))
    tracemalloc.start()
    t0 = time.perf_counter()
    ch = Pcm16Chunker(24000, 0.6, 1.0)
    first = None
    n = 0
    for i in range(0, len(x), step):
        for pcm in ch.feed(x[i:i + step], rate):
            json.dumps({"type": "agent.speak", "event_id": "e", "audio": base64.b64encode(pcm).decode("ascii")})
            n += 1
            if first is None:
                first = (i + step) / rate  # seconds of audio that had to arrive
    for pcm in ch.flush():
        json.dumps({"type": "agent.speak", "event_id": "e", "audio": base64.b64encode(pcm).decode("ascii")})
        n += 1
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rate": rate, "ms_per_audio_s": 1000 * dt / seconds, "messages": n, "first_after_audio_s": first,
            "peak_mb": peak / 1e6, "out_s": ch.samples_out / 24000}


def bench_session() -> dict:
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fakeliveavatar import FakeLiveAvatar

    from comfyui_digitalhuman.providers.liveavatar import LiveAvatarBackend, LiveAvatarConfig

    with FakeLiveAvatar() as la:
        la.connect_delay_s = 0.0
        os.environ["LIVEAVATAR_API_KEY"], os.environ["LIVEAVATAR_BASE_URL"] = la.api_key, la.url
        b = LiveAvatarBackend(LiveAvatarConfig(mode="LITE", sandbox=True))
        b.bind(lambda *a, **k: 0, lambda why: None)
        t0 = time.perf_counter()
        b.open(lambda: None)
        t_open = time.perf_counter() - t0
        audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(24000 * 5) / 24000)).astype(np.float32)
        t1 = time.perf_counter()
        out = b.speak_pcm(iter([(audio[i:i + 960], 24000) for i in range(0, len(audio), 960)]), lambda: None)
        t_send = time.perf_counter() - t1
        t2 = time.perf_counter()
        b.close("bench")
        t_stop = time.perf_counter() - t2
    return {"open_ms": 1000 * t_open, "send_5s_ms": 1000 * t_send, "stop_ms": 1000 * t_stop, "speech_s": out["speech_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--chunk-ms", type=float, default=40.0, help="size of the pieces the voice delivers")
    args = ap.parse_args()
    print(f"LITE audio path, {args.seconds:g} s of audio in {args.chunk_ms:g} ms pieces (CPU; no GPU involved)")
    print(f"{'input':>8} {'ms/s audio':>11} {'RTF':>8} {'messages':>9} {'1st after':>10} {'peak MB':>8}")
    for rate in (16000, 22050, 24000, 44100, 48000):
        r = bench_chunker(rate, args.seconds, args.chunk_ms)
        print(f"{rate:>8} {r['ms_per_audio_s']:>11.2f} {r['ms_per_audio_s'] / 1000:>8.4f} {r['messages']:>9} "
              f"{r['first_after_audio_s']:>9.2f}s {r['peak_mb']:>8.2f}")
    s = bench_session()
    print(f"LITE session on loopback (fake LiveAvatar): token+start+socket connected {s['open_ms']:.0f} ms, "
          f"5 s of audio sent {s['send_5s_ms']:.0f} ms, stop {s['stop_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
