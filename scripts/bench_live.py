#!/usr/bin/env python3
"""Latency budget of a live session, stage by stage, and its steady frame rate.

    python scripts/bench_live.py                      # tiny random MuseTalk on the CPU, an in-process voice
    python scripts/bench_live.py --full --device cuda --dtype fp16
    python scripts/bench_live.py --webrtc             # + a WebRTC peer on loopback receiving the frames
    python scripts/bench_live.py --voice openai --base-url http://127.0.0.1:8880/v1   # a real speech server

Stages of one message (median over ``--runs``), from the moment it is handed to the session:
text -> first piece -> first speech chunk -> the piece's audio complete -> audio prompts (Whisper)
-> first lip-synced batch (UNet + VAE) -> first speaking frame on the media clock -> encoded
(aiortc's VP8 encoder, as a viewer's) [-> received by a WebRTC peer on loopback]. The networks'
time (voice, Whisper, UNet+VAE) is measured inside the pipeline; everything else is the
pipeline's own overhead (text cutting, trimming, resampling, queues, placing the first frame,
waiting for the clock's next tick, encoding), which the issue bounds at 150 ms on a CPU with small
networks. The in-process voice is a tone per character, instant, so it measures the pipeline and
not a TTS model; use ``--voice openai`` with a speech server for a real voice.

Steady state: a long answer is spoken and the renderer's frame rate, the clock's frame rate and
the frames held because rendering fell behind (stalls) are reported. Peak memory: RSS, and CUDA.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

import torch  # noqa: E402

from comfyui_digitalhuman.engine.live.render import MuseTalkRenderer  # noqa: E402
from comfyui_digitalhuman.engine.live.session import LiveOptions, LiveSession  # noqa: E402
from comfyui_digitalhuman.engine.musetalk.pipeline import prepare_avatar  # noqa: E402
from comfyui_digitalhuman.engine.musetalk.random_models import random_models  # noqa: E402
from comfyui_digitalhuman.engine.speech.types import SpeechChunk  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class ToneVoice:
    """An instant in-process voice (a tone per letter, 60 ms each), streamed in 100 ms chunks."""

    name = "tone (in-process)"
    sample_rate = 24000
    cost_usd = 0.0

    def stream(self, text, *, check_interrupt=None):
        n = int(0.06 * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        parts = [(0.3 * np.sin(2 * np.pi * (180 + 7 * (ord(c) % 30)) * t) if c.isalnum() else np.zeros(n)).astype(np.float32)
                 for c in text]
        x = np.concatenate(parts)
        step = self.sample_rate // 10
        for k in range(0, x.size, step):
            if check_interrupt:
                check_interrupt()
            yield SpeechChunk(x[k:k + step], self.sample_rate, 0)


def avatar_frames(n: int, size: int) -> np.ndarray:
    from PIL import Image

    shared = Path(__import__("os").environ.get("DH_SHARED", REPO.parent / "shared"))
    src = shared / "testdata" / "s6.jpg"
    if src.is_file():
        img = np.asarray(Image.open(src).convert("RGB").resize((size, size), Image.BICUBIC)).astype(np.int16)
    else:  # no test media: a synthetic face-sized gradient (the networks are random anyway)
        y, x = np.mgrid[0:size, 0:size]
        img = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], -1).astype(np.int16)
    return np.stack([np.clip(img + 6 * k, 0, 255).astype(np.uint8) for k in range(n)])


class Encoded:
    """A sink that VP8-encodes every frame as a viewer would, noting when the first speaking frame is done."""

    def __init__(self, fps: float):
        from aiortc.codecs import get_encoder
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        self.enc = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
        self.fps = fps
        self.q: list = []
        self.first_speech: float | None = None
        self.turn = None
        self.lock = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.encode_ms: list[float] = []

    def __call__(self, frame) -> None:
        with self.lock:
            self.q.append(frame)
            self.lock.notify()

    def _run(self) -> None:
        import av

        while True:
            with self.lock:
                while not self.q and not self.stop:
                    self.lock.wait(0.1)
                if self.stop:
                    return
                f = self.q.pop(0)
            vf = av.VideoFrame.from_ndarray(f.video, format="rgb24")
            vf.pts = f.index * 3600
            from fractions import Fraction

            vf.time_base = Fraction(1, 90000)
            t0 = time.monotonic()
            self.enc.encode(vf)
            self.encode_ms.append((time.monotonic() - t0) * 1000)
            if f.speaking and not f.held and self.first_speech is None and f.turn == self.turn:
                self.first_speech = time.monotonic()

    def arm(self, turn: int) -> None:
        self.turn, self.first_speech = turn, None


def one_message(session: LiveSession, enc: Encoded, text: str, timeout: float = 600.0) -> dict:
    enc.arm(session._turn_id + 1)
    t0 = time.monotonic()
    tid = session.say(text)
    turn = session.turn
    while time.monotonic() - t0 < timeout:
        if enc.first_speech is not None and "first_frame" in turn.marks:
            break
        time.sleep(0.005)
    else:
        raise TimeoutError(f"no speaking frame in {timeout:.0f} s")
    marks = {k: (v - turn.t_submit) * 1000 for k, v in turn.marks.items()}
    marks["encoded"] = (enc.first_speech - turn.t_submit) * 1000
    marks.update(turn.net)
    while not turn.done and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    session.interrupt()
    time.sleep(0.3)
    return marks | {"turn": tid}


def stages(r: dict) -> list[tuple[str, float, str]]:
    """The budget rows of one message (ms)."""
    voice = r["first_piece_audio"] - r["first_piece"]
    return [
        ("text -> first piece", r["first_piece"], "pipeline"),
        ("first piece -> first speech chunk", r["first_audio"] - r["first_piece"], "voice"),
        ("first chunk -> the piece's audio complete", r["first_piece_audio"] - r["first_audio"], "voice"),
        ("audio -> prompts (Whisper encoder)", r["whisper_ms"], "network"),
        ("prompts -> first batch (UNet + VAE + paste)", r["lipsync_ms"], "network"),
        ("hand-offs between audio complete and first batch",
         r["first_batch"] - r["first_piece_audio"] - r["whisper_ms"] - r["lipsync_ms"], "pipeline"),
        ("first batch -> on the media clock", r["first_frame"] - r["first_batch"], "pipeline"),
        ("on the clock -> encoded (VP8)", r["encoded"] - r["first_frame"], "pipeline"),
        ("send -> first speaking frame encoded", r["encoded"], "total"),
        ("pipeline overhead (total - voice - networks)", r["encoded"] - voice - r["whisper_ms"] - r["lipsync_ms"], "overhead"),
    ]


def budget(runs: list[dict]) -> list[tuple[str, float, str]]:
    """Each row's median over the messages."""
    per = [stages(r) for r in runs]
    return [(name, statistics.median(p[i][1] for p in per), kind) for i, (name, _, kind) in enumerate(per[0])]


async def webrtc_receive(session: LiveSession, text: str, reg) -> float:
    """ms from send to the first changed frame received by an aiortc peer through the live routes."""
    from aiohttp import web
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from comfyui_digitalhuman.server.live_routes import LiveRoutes

    routes = LiveRoutes(reg)
    app = web.Application()
    app.add_routes(routes.table())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    frames: list = []

    async def consume(track):
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                f = await track.recv()
                if track.kind == "video":
                    frames.append((time.monotonic(), f.to_ndarray(format="rgb24")))
        except MediaStreamError:  # the connection closed
            return

    pc.on("track", lambda t: asyncio.ensure_future(consume(t)))
    await pc.setLocalDescription(await pc.createOffer())
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/digitalhuman/live/s/{session.id}/connect",
                          json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
            ans = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(ans["sdp"], ans["type"]))
    while len(frames) < 20:
        await asyncio.sleep(0.05)
    ref = frames[-1][1].astype(np.int16)
    n0 = len(frames)
    t0 = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, session.say, text)
    got = None
    while got is None and time.monotonic() - t0 < 600:
        for t, f in frames[n0:]:
            if np.abs(f.astype(np.int16) - ref).max() > 25:
                got = t
                break
        await asyncio.sleep(0.01)
    session.interrupt()
    await pc.close()
    await routes.close_all_viewers()
    await runner.cleanup()
    return (got - t0) * 1000 if got else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size MuseTalk networks (random weights) instead of tiny ones")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=256, help="avatar frame size (square)")
    ap.add_argument("--frames", type=int, default=1, help="avatar frames (1 = a still portrait; more: an idle video)")
    ap.add_argument("--voice", choices=["tone", "openai"], default="tone")
    ap.add_argument("--base-url", default="", help="speech server for --voice openai")
    ap.add_argument("--text", default="Hello there, how are you today?")
    ap.add_argument("--steady", type=float, default=10.0, help="seconds of speech for the steady-state figures (0: skip)")
    ap.add_argument("--webrtc", action="store_true", help="also receive the frames over WebRTC on loopback")
    args = ap.parse_args()

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    models = random_models(tiny=not args.full, dtype=dtype)
    dev = torch.device(args.device)
    for m in (models.unet, models.vae, models.whisper, models.parser):
        torch.nn.Module.to(m, device=dev)
    frames = avatar_frames(args.frames, args.size)
    s = args.size
    box = (int(s * 0.25), int(s * 0.2), int(s * 0.75), int(s * 0.8))
    cache = prepare_avatar(models, frames, [box] * len(frames))
    if args.voice == "openai":
        from comfyui_digitalhuman.providers.streaming_voices import OpenAIStreamingVoice

        voice = OpenAIStreamingVoice("tts-1", "alloy", base_url=args.base_url)
    else:
        voice = ToneVoice()
    opts = LiveOptions.from_data(max_side=0)
    session = LiveSession(MuseTalkRenderer(lambda: models, cache, opts.fps), voice, options=opts, name="bench")
    enc = Encoded(opts.fps)
    session.add_sink(enc)
    print(f"MuseTalk {'full' if args.full else 'tiny'} {args.dtype} on {args.device}; avatar {len(frames)} x {s}x{s}; "
          f"voice {voice.name}; warm-up render {session.warmup_s * 1000:.0f} ms/frame; torch threads {torch.get_num_threads()}")
    try:
        one_message(session, enc, "Warm up.")
        runs = [one_message(session, enc, args.text) for _ in range(args.runs)]
        print(f"\nlatency budget, median of {len(runs)} messages ('{args.text}'):")
        for name, ms, kind in budget(runs):
            print(f"  {name:<52} {ms:8.1f} ms   [{kind}]")
        over = budget(runs)[-1][1]
        print(f"  -> pipeline overhead {over:.0f} ms ({'within' if over < 150 else 'OVER'} the 150 ms budget); "
              f"VP8 encode {statistics.median(enc.encode_ms):.1f} ms/frame")
        if args.webrtc:
            from comfyui_digitalhuman.engine.live.registry import Registry

            reg = Registry()
            reg.sessions[session.id or "x" * 32] = session
            session.id = session.id or "x" * 32
            ms = asyncio.run(webrtc_receive(session, args.text, reg))
            print(f"  send -> first speaking frame received by a WebRTC peer on loopback: {ms:.0f} ms")
        if args.steady > 0:
            words = "This is a long answer that keeps the avatar speaking for a while, sentence after sentence. "
            text = words * max(1, int(args.steady / (len(words) * 0.06)) + 1)
            st0 = dict(session.timeline.stats)
            t0 = time.monotonic()
            session.say(text)
            time.sleep(args.steady)
            st1 = dict(session.timeline.stats)
            session.interrupt()
            dt = time.monotonic() - t0
            shown = st1["speech_frames"] - st0["speech_frames"]
            stalls = st1["stalls"] - st0["stalls"]
            print(f"\nsteady state over {dt:.1f} s of a long answer: {shown / dt:.1f} speaking frames/s shown "
                  f"(clock {session.ticker.fps():.1f} fps, target {opts.fps:g}); frames held because rendering fell behind: "
                  f"{stalls}; render {session.renderer.s_per_frame * 1000:.1f} ms/frame")
    finally:
        enc.stop = True
        session.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = f", CUDA peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if dev.type == "cuda" else ""
    print(f"peak RSS {rss:.0f} MB{extra}")


if __name__ == "__main__":
    main()
