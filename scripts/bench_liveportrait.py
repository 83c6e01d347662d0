"""Benchmark the LivePortrait networks and the end-to-end animation (ms per frame, peak memory).

Weights are seeded random tensors in the published layout (speed does not depend on the values),
or the real files with ``--weights DIR``. Examples::

    python scripts/bench_liveportrait.py --device cpu --batch 1 --frames 2
    python scripts/bench_liveportrait.py --device cuda --dtype fp16 --batch 1 8 --compile --channels-last
    python scripts/bench_liveportrait.py --device cuda --dtype fp16 --batch 16 --long-minutes 1 5 10   # bounded memory
    python scripts/bench_liveportrait.py --device cpu --small --stand-in-networks --batch 8 --long-minutes 1 5 10
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

from comfyui_digitalhuman.engine.liveportrait import animate as A  # noqa: E402
from comfyui_digitalhuman.engine.liveportrait import keypoints as K  # noqa: E402
from comfyui_digitalhuman.engine.liveportrait.motion import drive_keypoints  # noqa: E402
from comfyui_digitalhuman.engine.liveportrait.options import AnimateOptions  # noqa: E402
from comfyui_digitalhuman.model_loaders import liveportrait as lp  # noqa: E402

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class BoxFace:
    """Face stand-in for timing: a fixed central face box; paste-back with OpenCV like the real one."""

    def landmarks(self, frames):
        out = []
        for f in frames:
            h, w = f.shape[:2]
            lmk = np.zeros((468, 3), np.float32)
            lmk[0, :2], lmk[1, :2] = (w * 0.35, h * 0.3), (w * 0.65, h * 0.6)
            out.append(lmk)
        return out

    def crop(self, image, lmk, dsize, scale, vx, vy, rot):
        (x0, y0), (x1, y1) = lmk[0, :2], lmk[1, :2]
        side = (x1 - x0) * scale / 2
        s = dsize / side
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - vy * side
        m = np.array([[s, 0, dsize / 2 - s * cx], [0, s, dsize / 2 - s * cy], [0, 0, 1]])
        return self.warp_to_crop(image, m, dsize), m

    def warp_to_crop(self, image, m, dsize):
        import cv2

        return cv2.warpAffine(image, m[:2], (dsize, dsize))

    def paste_mask(self, dsize):
        return np.ones((dsize, dsize), np.float32)

    def paste_back(self, frame, crop, m_c2o, mask):
        import cv2

        h, w = frame.shape[:2]
        warped = cv2.warpAffine(crop, m_c2o[:2], (w, h)).astype(np.float32)
        mk = cv2.warpAffine(mask, m_c2o[:2], (w, h))[..., None]
        return (mk * warped + (1 - mk) * frame).astype(np.uint8)

    def eye_ratio(self, lmk):
        return np.array([0.3, 0.3], np.float32)

    def lip_ratio(self, lmk):
        return np.array([0.1], np.float32)


def build(args, device, dtype) -> "lp.LivePortraitNets":
    if args.weights:
        folder = Path(args.weights)
        paths = {}
        for name in lp.NETWORK_NAMES:
            cands = [folder / f"{name}.safetensors", folder / f"{name}.pth"]
            found = next((c for c in cands if c.is_file()), None)
            if found is None:
                raise SystemExit(f"no weights for {name} in {folder}")
            paths[name] = found
        return lp.load_liveportrait(paths, device, dtype)
    from comfyui_digitalhuman.engine.liveportrait.networks import small_config

    return lp.synthetic_liveportrait(small_config() if args.small else None, seed=0, device=device, dtype=dtype)


def optimise(nets, args) -> None:
    if args.channels_last:
        nets.channels_last()
    if args.compile:
        nets.warping = torch.compile(nets.warping, mode=args.compile_mode)
        nets.generator = torch.compile(nets.generator, mode=args.compile_mode)


def bench_networks(nets, device, batch: int, reps: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(batch, 3, 256, 256, generator=g).to(device)
    res = {}
    res["F"] = timeit(lambda: nets.appearance_feature(img), device, reps)
    res["M"] = timeit(lambda: nets.keypoint_info(img), device, reps)
    f_s = nets.appearance_feature(img[:1])
    kp = (torch.rand(batch, 21, 3, generator=g) - 0.5).to(device)
    res["W"] = timeit(lambda: nets.guarded("warping", f_s.expand(batch, -1, -1, -1, -1), kp * 0.95, kp), device, reps)
    feat = nets.guarded("warping", f_s.expand(batch, -1, -1, -1, -1), kp * 0.95, kp)["out"]
    res["G"] = timeit(lambda: nets.guarded("generator", feat), device, reps)
    if nets.retarget is not None:
        res["S"] = timeit(lambda: K.stitch(nets.retarget.stitching, kp, kp * 0.95), device, reps)
    return {k: 1000 * v / batch for k, v in res.items()}


def bench_end_to_end(nets, device, batch: int, frames: int, reps: int) -> float:
    """ms per frame of the per-frame work: driving crop resize, M, composition, stitching, W, G, paste-back."""
    face = BoxFace()
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 255, (720, 720, 3), np.uint8)
    driving = rng.integers(0, 255, (max(frames, batch), 512, 512, 3), np.uint8)
    opts = AnimateOptions(chunk_size=batch)
    nets.render_batch = batch  # W and G at this batch even on a CPU (where the pipeline's default is 1)
    src = A.prepare_source(nets, portrait, face, opts)

    def one_pass():
        first = None
        for i in range(0, len(driving), batch):
            info = nets.keypoint_info(nets.to_input(driving[i:i + batch]))
            first = first or info.select(0)
            x_d = drive_keypoints(src.motion, info, first, opts, nets.retarget)
            A.render(nets, src, x_d, face)

    return 1000 * timeit(one_pass, device, reps) / len(driving)


def stand_in_networks(nets) -> None:
    """Replace M and W+G by constant-time stand-ins with the same outputs (the first real result repeated).

    Why: on a shared 2-core CPU even the reduced networks take ~0.3 s per frame, so 10 minutes of video
    would take hours. Their memory is per chunk and does not depend on the video length; what can grow
    with the length is the pipeline around them (decode, first-pass track, paste-back, MP4 encode),
    which this keeps real.
    """
    real_kp, real_wd = nets.keypoint_info, nets.warp_decode
    cache: dict[str, object] = {}

    def keypoint_info(x, interrupt=None):
        cache.setdefault("kp", real_kp(x[:1]))
        return cache["kp"].select(torch.zeros(x.shape[0], dtype=torch.long))

    def warp_decode(f_s, x_s, x_d, interrupt=None):
        cache.setdefault("wd", real_wd(f_s, x_s, x_d[:1]))
        return cache["wd"].expand(x_d.shape[0], -1, -1, -1)

    nets.keypoint_info, nets.warp_decode = keypoint_info, warp_decode


def looped_video(path: Path, n: int):
    """A FrameStream of ``n`` frames: the video at ``path`` played again and again (read on demand)."""
    from comfyui_digitalhuman.engine.media.stream import FrameStream

    one = FrameStream.from_video(path)

    def chunks(size: int):
        left = n
        while left > 0:
            for chunk in one.iter_chunks(size):
                yield chunk[:left]
                left -= len(chunk[:left])
                if left <= 0:
                    return

    return FrameStream(chunks, one.fps, n, one.width, one.height, name=f"{path.name} looped")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def bench_long_one(nets, device, batch: int, minutes: float, portrait: Path, driving: Path, preset: str) -> dict:
    """One length: stream ``minutes`` of the looped driving video through the animation into an MP4."""
    import tempfile

    import cv2

    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    face = BoxFace()
    src = cv2.cvtColor(cv2.imread(str(portrait)), cv2.COLOR_BGR2RGB)
    drv = looped_video(driving, int(round(minutes * 60 * 25)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = current_rss_mb()
    t = time.perf_counter()
    anim = A.animate(nets, src, drv, face, AnimateOptions(chunk_size=batch))
    stream = A.animation_stream(anim, drv.fps, anim.source.image.shape[1], anim.source.image.shape[0], anim.n)
    with tempfile.TemporaryDirectory() as tmp:
        info = write_mp4(Path(tmp) / "long.mp4", stream, drv.fps, preset=preset)
    return {"minutes": minutes, "frames": info.frame_count, "size": f"{info.width}x{info.height}",
            "s": round(time.perf_counter() - t, 1), "rss_before_mb": round(before), "peak_rss_mb": round(peak_rss_mb()),
            "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None}


def bench_long(argv: list[str], minutes: list[float]) -> list[dict]:
    """Each length in a fresh subprocess, so every peak RSS is that run's own."""
    import subprocess

    rows = []
    for m in minutes:
        cmd = [sys.executable, __file__, *argv, "--long-one", str(m)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(json.dumps({f"long_{m:g}min": row}), flush=True)
        rows.append(row)
    print("\n| minutes | frames | output | wall s | RSS before MB | peak RSS MB | peak VRAM MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} | {r['frames']} | {r['size']} | {r['s']} | {r['rss_before_mb']} | {r['peak_rss_mb']} | "
              f"{r['peak_vram_mb'] if r['peak_vram_mb'] is not None else '-'} |")
    return rows


def _without_long_minutes(argv: list[str]) -> list[str]:
    """The command line minus ``--long-minutes`` and its values (passed on to each child run)."""
    out, skipping = [], False
    for a in argv:
        if a == "--long-minutes":
            skipping = True
            continue
        if skipping:
            try:
                float(a)
                continue
            except ValueError:
                skipping = False
        out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--frames", type=int, default=8, help="driving frames per end-to-end pass")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--compile", action="store_true", help="torch.compile W and G")
    ap.add_argument("--compile-mode", default="max-autotune")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--weights", help="folder with the real weight files (default: seeded random weights)")
    ap.add_argument("--long-minutes", type=float, nargs="*", default=[], help="stream this many minutes of the "
                    "looped driving video through the animation into an MP4, each length in a fresh process; "
                    "prints the peak-RSS table and exits")
    ap.add_argument("--long-one", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--portrait", default=str(TESTDATA / "s0.jpg"))
    ap.add_argument("--driving", default=str(TESTDATA / "d20.mp4"), help="looped to the requested length")
    ap.add_argument("--preset", default="veryfast", help="x264 preset of the long-run MP4")
    ap.add_argument("--stand-in-networks", action="store_true", help="long runs: M, W and G replaced by "
                    "constant-time stand-ins (see stand_in_networks); the rest of the pipeline is real")
    ap.add_argument("--skip-networks", action="store_true")
    ap.add_argument("--small", action="store_true", help="reduced network configuration (memory checks on a CPU)")
    args = ap.parse_args()
    if args.long_minutes:
        bench_long(_without_long_minutes(sys.argv[1:]), args.long_minutes)
        return
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    nets = build(args, device, dtype)
    optimise(nets, args)
    report = {"config": "small" if args.small else "published", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
              "dtype": args.dtype, "compile": args.compile, "channels_last": args.channels_last, "results": {}}
    if args.long_one:
        if args.stand_in_networks:
            stand_in_networks(nets)
        with torch.inference_mode():
            row = bench_long_one(nets, device, max(args.batch), args.long_one, Path(args.portrait), Path(args.driving),
                                 args.preset)
        row.update(config=report["config"] + (" + stand-in M/W/G" if args.stand_in_networks else ""),
                   device=report["device"], dtype=args.dtype)
        print(json.dumps(row))
        return
    with torch.inference_mode():
        for b in args.batch:
            r = {} if args.skip_networks else bench_networks(nets, device, b, args.reps)
            r["end_to_end"] = bench_end_to_end(nets, device, b, args.frames, args.reps)
            r = {k: round(v, 2) for k, v in r.items()}
            r["fps"] = round(1000 / r["end_to_end"], 3)
            report["results"][f"batch{b}"] = r
            print(json.dumps({f"batch{b}_ms_per_frame": r}), flush=True)
    report["peak_rss_mb"] = round(peak_rss_mb())
    if device.type == "cuda":
        report["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    report["fp32_fallbacks"] = sorted(nets.fell_back)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
