"""Benchmark MuseTalk 1.5 stages on random weights of the published shapes (or tiny ones).

Reports ms per frame for: prepare (crop + VAE encode + face parsing, once per video frame),
audio features (whisper-tiny, 30 s segments), UNet, VAE decode, blend (resize + paste); the
real-time speak() loop end to end (frames/s and time to the first frame); peak memory.

    python scripts/bench_musetalk.py --size tiny
    python scripts/bench_musetalk.py --size full --dtype bf16 --batch 1 --frames 4
    python scripts/bench_musetalk.py --size full --full-only vae,whisper,parser   # UNet tiny, the rest full
    python scripts/bench_musetalk.py --size full --device cuda --dtype fp16 --batch 16 --frames 200
    python scripts/bench_musetalk.py --size tiny --stream-seconds 600   # 10 min speech -> MP4 via the lazy stream
    python scripts/bench_musetalk.py --size full --reference /path/to/MuseTalk   # against the reference, same machine

With ``--reference DIR`` (a checkout of TMElyralab/MuseTalk, imported at run time only) it instead
times the real-time path of both implementations on the same random weights, avatar and audio
(see musetalk_reference.py) and prints one JSON row: ms per output frame per stage and side, and
the ratio reference / ours.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.musetalk import audio as A  # noqa: E402
from comfyui_digitalhuman.engine.musetalk import blend as B  # noqa: E402
from comfyui_digitalhuman.engine.musetalk import pipeline as P  # noqa: E402
from comfyui_digitalhuman.engine.musetalk.random_models import random_models  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
YONGEN_BOX = (250, 380, 470, 640)  # the face of yongen.mp4 (704x1216)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def _frames(n: int, video: Path) -> np.ndarray:
    """The first ``n`` frames (the engine's own reader, as the nodes read them)."""
    from comfyui_digitalhuman.engine.media.video_io import read_video

    return read_video(video, frame_cap=n)[0]


def _log(msg: str) -> None:
    print(f"[bench] {msg} (rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB)", file=sys.stderr)


def _mixed_models(full: list[str], dtype: torch.dtype) -> P.MuseTalkModels:
    """Tiny networks except the ones named in ``full``."""
    tiny = random_models(tiny=True, seed=0, dtype=dtype)
    if not set(full) <= {"unet", "vae", "whisper", "parser"}:
        raise SystemExit(f"--full-only: unknown network in {full}")
    from comfyui_digitalhuman.engine.musetalk import networks as N

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if "unet" in full:
            tiny.unet = N.randomize_(N.build_unet(), 0)
        if "vae" in full:
            tiny.vae = N.randomize_(N.build_vae(), 1)
        if "whisper" in full:
            tiny.whisper = N.randomize_(N.build_whisper_encoder(), 2)
    finally:
        torch.set_default_dtype(previous)
    return tiny  # the parser is always the full BiSeNet


def _long_audio(models: P.MuseTalkModels, wav: np.ndarray, sr: int, seconds: float, batch: int,
                device: torch.device) -> dict:
    """Stream every frame's audio window over a long signal; memory must not grow with its length."""
    base = A.to_mono_16k(wav.T, sr)
    samples = np.resize(base, int(seconds * A.SAMPLE_RATE))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w = A.AudioWindows(samples, models.whisper, 25)
    t = time.perf_counter()
    for _ in w.batches(max(batch, 25)):
        pass
    _sync(device)
    dt = time.perf_counter() - t
    return {"seconds": seconds, "frames": len(w), "features_ms_per_frame": round(1000 * dt / len(w), 3),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
            "audio_buffer_mb": round(samples.nbytes / 2**20, 1)}


def _stream_to_mp4(models: P.MuseTalkModels, cache: P.AvatarCache, wav: np.ndarray, sr: int, seconds: float,
                   batch: int) -> dict:
    """Speech of ``seconds`` (the track looped) -> MP4 through ``speak_stream`` and ``write_mp4``, as
    Lip Sync's stream output feeds Save Video: peak RSS growth must not follow the length."""
    import tempfile

    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    base = A.to_mono_16k(wav.T, sr)
    samples = np.resize(base, int(seconds * A.SAMPLE_RATE))
    stream = P.speak_stream(lambda: models, cache, samples, 25.0, batch)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        info = write_mp4(Path(tmp) / "speech.mp4", stream, 25.0, audio=(samples[None], A.SAMPLE_RATE), preset="ultrafast")
        dt = time.perf_counter() - t
    frame_mb = cache.frames[0].nbytes / 2**20
    return {"seconds": seconds, "frames": info.frame_count, "ms_per_frame": round(1000 * dt / info.frame_count, 2),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
            "all_frames_uint8_mb": round(frame_mb * info.frame_count, 1)}


def _compare_with_reference(args: argparse.Namespace) -> None:
    """``--reference``: the side-by-side run of musetalk_reference.py, one JSON row on stdout."""
    if args.device != "cpu" or args.dtype != "fp32":
        raise SystemExit("--reference compares fp32 on the CPU: pass --device cpu --dtype fp32")
    import musetalk_reference as R

    row = R.compare(args.reference, _frames(args.video_frames, args.video), YONGEN_BOX,
                    args.audio or TESTDATA / "yongen.wav", args.frames, args.batch, tiny=args.size == "tiny",
                    rounds=args.rounds, weights_dir=args.reference_weights, log=_log)
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8, help="output frames to time")
    ap.add_argument("--video-frames", type=int, default=4, help="face video frames to prepare")
    ap.add_argument("--full-only", default="", help="with --size full: comma list of the networks built full size "
                    "(unet,vae,whisper,parser); the others stay tiny. Lets a small machine time each full network.")
    ap.add_argument("--long-audio-seconds", type=float, default=0.0,
                    help="also stream audio features over this much audio (eng.wav tiled) and report peak memory")
    ap.add_argument("--stream-seconds", type=float, default=0.0,
                    help="also run speech of this length -> MP4 through the lazy stream (peak RSS growth)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--video", type=Path, default=TESTDATA / "yongen.mp4")
    ap.add_argument("--audio", type=Path, default=None,
                    help="speech (default eng.wav; yongen.wav with --reference, the first --frames/25 s of it)")
    ap.add_argument("--reference", type=Path, default=None, metavar="DIR",
                    help="a TMElyralab/MuseTalk checkout: compare its real-time path with ours (fp32, CPU)")
    ap.add_argument("--reference-weights", type=Path, default=None, metavar="DIR",
                    help="with --reference: folder for the random published-layout files (kept, reused on the "
                    "next run); default a temporary folder")
    ap.add_argument("--rounds", type=int, default=2, help="with --reference: timed rounds per side, alternating")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.reference is not None:
        _compare_with_reference(args)
        return
    args.audio = args.audio or TESTDATA / "eng.wav"

    models, t_build = _timed(lambda: random_models(tiny=args.size == "tiny", seed=0, dtype=dtype), device) \
        if not args.full_only else _timed(lambda: _mixed_models(args.full_only.split(","), dtype), device)
    _log(f"built models in {t_build:.1f} s")
    models.unet.to(device)
    models.vae.to(device)
    models.whisper.to(device)
    models.parser.to(device)

    frames = _frames(args.video_frames, args.video)
    box = YONGEN_BOX
    cache, t_prep = _timed(lambda: P.prepare_avatar(models, frames, [box] * len(frames), batch_size=args.batch), device)
    _log(f"prepared {len(frames)} frames in {t_prep:.1f} s")

    import soundfile as sf

    wav, sr = sf.read(str(args.audio), dtype="float32", always_2d=True)
    seconds = args.frames / 25
    samples = A.to_mono_16k(wav[: int(sr * seconds) + 1].T, sr)
    windows = A.AudioWindows(samples, models.whisper, 25)
    feats, t_audio = _timed(lambda: windows.windows(0, len(windows)), device)
    n = len(windows)
    _log(f"audio features of {n} frames in {t_audio:.1f} s")

    lat = cache.latents[[P.pingpong_index(i, len(cache)) for i in range(n)]]
    t_unet = t_dec = 0.0
    faces = []
    P.predict_latents(models.unet, lat[:1], feats[:1])  # warm-up
    for s in range(0, n, args.batch):
        pred, dt = _timed(lambda: P.predict_latents(models.unet, lat[s:s + args.batch], feats[s:s + args.batch]), device)
        t_unet += dt
        dec, dt = _timed(lambda: P.decode_faces(models.vae, pred), device)
        t_dec += dt
        faces.extend(dec)
    _log(f"unet {t_unet:.1f} s, vae decode {t_dec:.1f} s")
    import cv2

    x0, y0, x1, y1 = (int(v) for v in cache.boxes[0])
    t = time.perf_counter()
    for i, f in enumerate(faces):
        j = P.pingpong_index(i, len(cache))
        B.paste(cache.frames[j], cv2.resize(f, (x1 - x0, y1 - y0)), (x0, y0, x1, y1), cache.masks[j],
                tuple(int(v) for v in cache.regions[j]))
    t_blend = time.perf_counter() - t

    t0 = time.perf_counter()
    gen = P.speak(models, cache, samples, A.SAMPLE_RATE, 25, args.batch)
    next(gen)
    _sync(device)
    first = time.perf_counter() - t0
    rest = sum(1 for _ in gen)
    _sync(device)
    total = time.perf_counter() - t0

    ms = lambda sec, k: round(1000 * sec / max(k, 1), 2)  # noqa: E731
    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "size": args.size, "dtype": args.dtype, "batch": args.batch, "frames": n,
        "frame_size": list(frames.shape[1:3]), "build_s": round(t_build, 2),
        "ms_per_frame": {"prepare": ms(t_prep, len(frames)), "audio_features": ms(t_audio, n), "unet": ms(t_unet, n),
                         "vae_decode": ms(t_dec, n), "blend": ms(t_blend, n)},
        "speak": {"fps": round((rest + 1) / total, 2), "first_frame_ms": round(1000 * first, 1)},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if args.long_audio_seconds > 0:
        report["long_audio"] = _long_audio(models, wav, sr, args.long_audio_seconds, args.batch, device)
    if args.stream_seconds > 0:
        report["stream_to_mp4"] = _stream_to_mp4(models, cache, wav, sr, args.stream_seconds, args.batch)
    if device.type == "cuda":
        report["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
