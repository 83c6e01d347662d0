"""Benchmark CosyVoice 2's HiFT vocoder (full size, seeded random weights in the published layout).

    python scripts/bench_cosyvoice_hift.py [--seconds 4] [--rounds 3] [--threads N] [--device cpu|cuda]
                                           [--dtype float32|bfloat16|float16] [--chunk-frames 50]
                                           [--reference DIR]

Prints ms per call and per second of audio (real-time factor = compute time / audio time) for a
whole-utterance call and for a stream of chunks (each chunk carrying the 8-frame mel cache and the
3840-sample source cache, as the reference's ``token2wav`` does), plus the F0 predictor alone and
the process's peak RSS (and peak CUDA memory on a GPU). With ``--reference DIR`` (a
FunAudioLLM/CosyVoice checkout; run with a Python that has its dependencies) the reference's
HiFTGenerator runs on the same weights and mel, rounds alternating with ours, and the ratio is
printed.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import _pack  # noqa: F401  (registers comfyui_digitalhuman; scripts/ is on sys.path)
from comfyui_digitalhuman.engine.cosyvoice import random_hift as R

FRAMES_PER_SECOND = 50
MEL_CACHE, SOURCE_CACHE = 8, 8 * 480


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def streamed(infer, mel: torch.Tensor, chunk: int) -> None:
    cache_mel = cache_src = None
    for a in range(0, mel.shape[2], chunk):
        m = mel[:, :, a:a + chunk]
        if cache_mel is not None:
            m = torch.cat([cache_mel, m], dim=2)
        _, s = infer(m, cache_src)
        cache_mel, cache_src = m[:, :, -MEL_CACHE:], s[:, :, -SOURCE_CACHE:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--chunk-frames", type=int, default=50, help="mel frames per streamed chunk (50 = 1 s)")
    ap.add_argument("--reference", type=Path, help="a FunAudioLLM/CosyVoice checkout to time against")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cfg = R.published_config()
    rss0 = peak_rss_mb()
    ours = R.random_hift(cfg, seed=0).to(device).set_precision(dtype)
    print(f"HiFT full size on {device} ({args.dtype}), {torch.get_num_threads()} CPU threads; "
          f"{args.seconds:g} s of audio per call, {args.rounds} rounds")
    frames = int(args.seconds * FRAMES_PER_SECOND)
    mel = (torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(0)) * 1.5 - 5.0).to(device)
    sides = {"ours": lambda m, c=None: ours.inference(m, c, generator=None)}
    if args.reference:
        import cosyvoice_reference_hift as CR

        ref = CR.import_reference(args.reference.resolve())
        with tempfile.TemporaryDirectory() as tmp:
            path = R.write_random_hift(Path(tmp) / "hift.pt", cfg, seed=0)
            theirs = CR.reference_load(CR.reference_hift_from_yaml(ref, args.reference.resolve()), path).to(device)
        sides["reference"] = lambda m, c=None: theirs.inference(
            speech_feat=m, cache_source=c if c is not None else torch.zeros(1, 1, 0, device=m.device))
    for fn in sides.values():  # warm-up
        fn(mel[:, :, :FRAMES_PER_SECOND])
    times: dict[str, dict[str, list[float]]] = {k: {"whole": [], "stream": []} for k in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            times[name]["whole"].append(timed(lambda: fn(mel), device))
            times[name]["stream"].append(timed(lambda: streamed(fn, mel, args.chunk_frames), device))
    with torch.inference_mode():
        f0_t = statistics.median(timed(lambda: ours.predict_f0(mel), device) for _ in range(args.rounds))
    for name, t in times.items():
        w, s = statistics.median(t["whole"]), statistics.median(t["stream"])
        print(f"  {name:9s} whole call {w * 1e3:8.1f} ms = {w / args.seconds * 1e3:7.1f} ms per s of audio (RTF {w / args.seconds:.3f}); "
              f"streamed in {args.chunk_frames}-frame chunks {s / args.seconds * 1e3:7.1f} ms per s (RTF {s / args.seconds:.3f})")
    if "reference" in times:
        r = statistics.median(times["ours"]["whole"]) / statistics.median(times["reference"]["whole"])
        rs = statistics.median(times["ours"]["stream"]) / statistics.median(times["reference"]["stream"])
        print(f"  ours / reference: whole {r:.2f}, streamed {rs:.2f} (one run; < 1 means ours is faster)")
    print(f"  F0 predictor alone: {f0_t * 1e3:.1f} ms per call")
    print(f"  peak RSS {peak_rss_mb():.0f} MB (before building the model {rss0:.0f} MB)")
    if device.type == "cuda":
        print(f"  peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
