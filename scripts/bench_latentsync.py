"""Benchmark LatentSync stages on random weights of the published architecture (tiny or full size).

Prints one JSON row: ms per output frame for audio features, face tracking + alignment, crop warp,
VAE encode (masked + reference), UNet (all steps, guidance batch included), VAE decode, paste-back and
end to end (everything after tracking), plus peak RSS and, on CUDA, peak allocated GPU memory.

    python scripts/bench_latentsync.py --size tiny --frames 32
    python scripts/bench_latentsync.py --size full --version 1.5 --frames 2 --window 2 --steps 1   # a CPU can do this
    python scripts/bench_latentsync.py --size full --version 1.6 --device cuda --dtype fp16 --frames 64 --feature-reuse
    python scripts/bench_latentsync.py --size tiny --stream-seconds 600   # 10 min of speech -> MP4 through the stream
    python scripts/bench_latentsync.py --size tiny --reference /path/to/LatentSync   # against the reference, same CPU

With ``--reference DIR`` (a checkout of bytedance/LatentSync, imported at run time only; see
latentsync_reference.py) the reference's ``LipsyncPipeline`` runs on the same weights, frames, points
and audio (fp32, CPU) and the row holds both sides' stage times and the ratio reference / ours.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.latentsync import align as A  # noqa: E402
from comfyui_digitalhuman.engine.latentsync import pipeline as P  # noqa: E402
from comfyui_digitalhuman.engine.latentsync import random_models as R  # noqa: E402
from comfyui_digitalhuman.engine.latentsync.audio import AudioFeatures  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TESTDATA = Path(os.environ.get("DH_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "testdata"
STAGES = ("audio_features", "tracking", "warp", "vae_encode", "unet", "vae_decode", "paste_back", "end_to_end")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _log(msg: str) -> None:
    print(f"[bench] {msg} (peak rss {_rss_gb():.2f} GB)", file=sys.stderr)


class Timers:
    """Accumulated seconds per stage, by wrapping the engine's functions (the engine is not changed)."""

    def __init__(self, device: torch.device):
        self.device, self.t = device, {s: 0.0 for s in STAGES}

    def wrap(self, owner, name: str, stage: str):
        real = getattr(owner, name)

        @functools.wraps(real)
        def timed(*a, **k):
            _sync(self.device)
            t0 = time.perf_counter()
            out = real(*a, **k)
            _sync(self.device)
            self.t[stage] += time.perf_counter() - t0
            return out

        setattr(owner, name, timed)
        return real

    @contextlib.contextmanager
    def installed(self, models: P.LatentSyncModels):
        saved = [(P.A, "warp_face", self.wrap(P.A, "warp_face", "warp")),
                 (P.A, "restore", self.wrap(P.A, "restore", "paste_back")),
                 (P, "_sample_latents", self.wrap(P, "_sample_latents", "vae_encode")),
                 (P, "_decode", self.wrap(P, "_decode", "vae_decode"))]
        unet_forward = models.unet.forward
        self.wrap(models.unet, "forward", "unet")
        try:
            yield
        finally:
            for owner, name, real in saved:
                setattr(owner, name, real)
            models.unet.forward = unet_forward


def build(size: str, version: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> P.LatentSyncModels:
    models = R.random_models(tiny=size == "tiny", seed=seed, version=version, dtype=dtype)
    for name in ("unet", "vae", "whisper"):
        torch.nn.Module.to(getattr(models, name), device=device)
    return models


def speech(seconds: float) -> np.ndarray:
    from comfyui_digitalhuman.engine.media.audio_io import load_audio

    wave, _ = load_audio(TESTDATA / "eng.wav", sample_rate=16000, mono=True)
    return np.resize(wave[0].astype(np.float32), int(round(seconds * 16000)))


def frames_of(video: Path, n: int) -> np.ndarray:
    """The first ``n`` frames (the engine's own reader, as the nodes read them)."""
    from comfyui_digitalhuman.engine.media.video_io import read_video

    return read_video(video, frame_cap=n)[0]


def run_ours(models: P.LatentSyncModels, frames: np.ndarray, samples: np.ndarray, opts: P.SyncOptions,
             device: torch.device, align: P.FaceAlignment | None = None) -> tuple[dict, np.ndarray]:
    timers = Timers(device)
    t0 = time.perf_counter()
    if align is None:
        align = P.track_alignment(frames, models.resolution)
    timers.t["tracking"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = AudioFeatures(samples, models.whisper, 25.0)
    feats.windows(0, len(feats))
    _sync(device)
    timers.t["audio_features"] = time.perf_counter() - t0
    with timers.installed(models):
        t0 = time.perf_counter()
        out = np.stack(list(P.lip_sync(models, frames, align, samples, opts)))
        _sync(device)
        timers.t["end_to_end"] = time.perf_counter() - t0
    n = len(out)
    per_frame = {k: round(1000 * v / n, 2) for k, v in timers.t.items()}
    per_frame["tracking"] = round(1000 * timers.t["tracking"] / len(frames), 2)
    return per_frame, out


def run_reference(ref_dir: Path, models: P.LatentSyncModels, frames: np.ndarray, points: list, samples: np.ndarray,
                  opts: P.SyncOptions, size: str) -> tuple[dict, np.ndarray]:
    """The reference's LipsyncPipeline on the same inputs, its stages timed the same way."""
    import latentsync_reference as LR

    LR.import_reference(ref_dir)
    from latentsync.utils.affine_transform import AlignRestore

    work = Path(tempfile.mkdtemp(prefix="ls-bench-"))
    ckpt = work / "tiny.pt"
    torch.save(R.whisper_checkpoint(seed=2), str(ckpt))
    import cv2

    from comfyui_digitalhuman.engine.latentsync.mask import lower_face_mask, read_mask

    mask = work / "mask.png"  # the stand-in mask, read by each side's own code
    cv2.imwrite(str(mask), (lower_face_mask(256) * 255).astype(np.uint8))
    models.mask = read_mask(mask, models.resolution)
    timers = Timers(torch.device("cpu"))
    t = timers.t
    vae = models.vae
    vae.config.scaling_factor, vae.config.shift_factor = 0.18215, 0
    real_enc, real_dec = vae.encode, vae.decode
    real_restore, real_warp = AlignRestore.restore_img, AlignRestore.align_warp_face

    def enc(*a, **k):
        t0 = time.perf_counter()
        r = real_enc(*a, **k)
        t["vae_encode"] += time.perf_counter() - t0
        return r

    def dec(*a, **k):
        t0 = time.perf_counter()
        r = real_dec(*a, **k)
        t["vae_decode"] += time.perf_counter() - t0
        return r

    def restore(self, *a, **k):
        t0 = time.perf_counter()
        r = real_restore(self, *a, **k)
        t["paste_back"] += time.perf_counter() - t0
        return r

    def warp(self, *a, **k):
        t0 = time.perf_counter()
        r = real_warp(self, *a, **k)
        t["warp"] += time.perf_counter() - t0
        return r

    vae.encode, vae.decode = enc, dec
    AlignRestore.restore_img, AlignRestore.align_warp_face = restore, warp
    unet_cfg = LR.C.unet_config(tiny=size == "tiny")
    state = models.unet.state_dict()
    try:
        from latentsync.models.unet import UNet3DConditionModel as Ref

        with torch.device("meta"):
            ref_unet = Ref.from_config(unet_cfg)
        torch.nn.Module.load_state_dict(ref_unet, state, strict=True, assign=True)
        real_fwd = ref_unet.forward

        def fwd(*a, **k):
            t0 = time.perf_counter()
            r = real_fwd(*a, **k)
            t["unet"] += time.perf_counter() - t0
            return r

        ref_unet.forward = fwd
        t0 = time.perf_counter()
        out = LR.run_reference_pipeline(ref_dir, frames, points, samples, state, vae, ckpt, mask, models.resolution,
                                        opts.seed, opts.steps, opts.guidance, unet=ref_unet, num_frames=opts.window)
        t["end_to_end"] = time.perf_counter() - t0
    finally:
        vae.encode, vae.decode = real_enc, real_dec
        AlignRestore.restore_img, AlignRestore.align_warp_face = real_restore, real_warp
        shutil.rmtree(work, ignore_errors=True)
    n = len(out)
    return {k: round(1000 * v / n, 2) for k, v in t.items() if k not in ("tracking", "audio_features")}, out


def stream_to_mp4(models: P.LatentSyncModels, frames: np.ndarray, seconds: float, opts: P.SyncOptions) -> dict:
    """Speech of ``seconds`` -> MP4 through a lazy stream (as the node's stream output feeds Save Video):
    peak RSS growth must not follow the length."""
    from comfyui_digitalhuman.engine.media.stream import FrameStream, chunked
    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    samples = speech(seconds)
    align = P.track_alignment(frames, models.resolution)
    n = int(seconds * 25)
    h, w = frames.shape[1:3]

    def chunks(size: int):
        yield from chunked(P.lip_sync(models, frames, align, samples, opts), size)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = write_mp4(Path(tmp) / "s.mp4", FrameStream(chunks, 25.0, n, w, h), 25.0, audio=(samples[None], 16000),
                         preset="ultrafast")
        dt = time.perf_counter() - t0
    return {"seconds": seconds, "frames": info.frame_count, "ms_per_frame": round(1000 * dt / info.frame_count, 2),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
            "all_frames_uint8_mb": round(frames[0].nbytes * info.frame_count / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--version", choices=["1.6", "1.5"], default="1.6")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--frames", type=int, default=16, help="output frames (audio = frames / 25 s)")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--feature-reuse", action="store_true")
    ap.add_argument("--vae-batch", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--video", type=Path, default=TESTDATA / "d20.mp4")
    ap.add_argument("--stream-seconds", type=float, default=0.0, help="also stream this much speech to an MP4")
    ap.add_argument("--reference", type=Path, default=None, metavar="DIR", help="a bytedance/LatentSync checkout")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    models = build(args.size, args.version, dtype, device)
    _log(f"built {args.size} LatentSync {args.version} ({args.dtype}, {device}) in {time.perf_counter() - t0:.1f} s")
    frames = frames_of(args.video, args.frames)
    samples = speech(args.frames / 25)
    opts = P.SyncOptions(steps=args.steps, guidance=args.guidance, feature_reuse=args.feature_reuse,
                         window=args.window, vae_batch=args.vae_batch)
    row: dict = {"size": args.size, "version": args.version, "device": str(device), "dtype": args.dtype,
                 "frames": args.frames, "window": args.window, "steps": args.steps, "guidance": args.guidance,
                 "feature_reuse": args.feature_reuse, "threads": torch.get_num_threads()}
    if args.reference is not None:
        if device.type != "cpu" or dtype != torch.float32:
            raise SystemExit("--reference compares fp32 on the CPU: pass --device cpu --dtype fp32")
        import latentsync_reference as LR

        LR.import_reference(args.reference)
        points = LR.face_points(frames)
        align = P.align_points(points, models.resolution)
        ref, ref_out = run_reference(args.reference, models, frames, points, samples, opts, args.size)
        ours, out = run_ours(models, frames, samples, opts, device, align)
        row.update(ours=ours, reference=ref,
                   ratio_ref_over_ours={k: round(ref[k] / ours[k], 2) for k in ref if ours.get(k)},
                   max_frame_diff=int(np.abs(out.astype(int) - ref_out[: len(out)].astype(int)).max()))
    else:
        row["ms_per_frame"], _ = run_ours(models, frames, samples, opts, device)
    if args.stream_seconds:
        row["stream"] = stream_to_mp4(models, frames[: max(args.window, 16)], args.stream_seconds, opts)
    row["peak_rss_gb"] = round(_rss_gb(), 2)
    if device.type == "cuda":
        row["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
