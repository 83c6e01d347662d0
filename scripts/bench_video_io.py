"""Benchmark the bounded-memory video path: file -> FrameStream (+ a per-frame step) -> MP4.

Makes 512x512 25 fps inputs of 1, 5 and 10 minutes by looping ``shared/testdata`` clips (written
with the pack's own writer), then, for each length in a fresh subprocess, times three passes:

* decode:  read every frame through ``FrameStream.from_video``
* process: the same plus a per-frame step added with ``map_chunks`` (5x5 Gaussian blur)
* encode:  the same plus ``write_mp4`` (H.264)

Throughputs are frames/s of each stage alone (stage time = pass time minus the previous pass);
peak RSS is the subprocess's maximum resident size (VmHWM). It must stay flat as
the length grows. Prints a markdown table.

``--image W H N`` measures the IMAGE path instead, for an N-frame W x H clip in a fresh process:
decoding into a float32 IMAGE batch (what Load Video does with decode_images on) and writing
that batch to MP4 (Save Video with IMAGE input), each as time and rise of the peak resident size
(Linux: VmHWM reset before each step) against the IMAGE's own size and the RAM check's budget.

    python scripts/bench_video_io.py [--minutes 1 5 10] [--preset ultrafast] [--workdir DIR]
    python scripts/bench_video_io.py --image 3840 2160 24
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (the ``comfyui_digitalhuman`` alias)

SIZE, FPS = 512, 25
TESTDATA = Path(os.environ.get("DH_SHARED", _pack.ROOT.parent / "shared")) / "testdata"


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's VmHWM is reset by exec; ``ru_maxrss`` is not (a child started by a big parent would
    report the parent's size), so it is only the fallback on other systems.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def make_input(path: Path, minutes: float, preset: str) -> None:
    """A ``minutes`` long 512x512 25 fps MP4 looping the test clips (d20 then yongen, resized)."""
    import cv2
    import numpy as np

    from comfyui_digitalhuman.engine.media.video_io import VideoSource
    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    def square(frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        return np.stack([cv2.resize(f[y:y + s, x:x + s], (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in frames])

    loop = np.concatenate([
        square(VideoSource(TESTDATA / "d20.mp4").read_all()),
        square(VideoSource(TESTDATA / "yongen.mp4", frame_cap=100).read_all()),
    ])
    total = int(minutes * 60 * FPS)

    def chunks():
        for i in range(0, total, 25):
            idx = np.arange(i, min(i + 25, total)) % len(loop)
            yield loop[idx]

    write_mp4(path, chunks(), FPS, preset=preset, crf=23)


def measure(path: Path, preset: str, chunk: int) -> dict:
    """The three timed passes over ``path`` (run in a fresh process so peak RSS is this length's)."""
    import cv2

    from comfyui_digitalhuman.engine.media.stream import FrameStream
    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    cv2.setNumThreads(1)
    base_rss = peak_rss_mb()
    src = FrameStream.from_video(path)
    n = src.frame_count

    def blur(batch):
        return [cv2.GaussianBlur(f, (5, 5), 0) for f in batch]

    t0 = time.perf_counter()
    got = sum(len(c) for c in src.iter_chunks(chunk))
    t_dec = time.perf_counter() - t0
    processed = src.map_chunks(blur, "blur")
    t0 = time.perf_counter()
    got2 = sum(len(c) for c in processed.iter_chunks(chunk))
    t_proc = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = write_mp4(Path(tmp) / "out.mp4", processed, src.fps, preset=preset, chunk=chunk)
        t_all = time.perf_counter() - t0
    assert got == got2 == info.frame_count == n, (got, got2, info.frame_count, n)
    return {
        "frames": n, "t_decode": t_dec, "t_process": t_proc, "t_full": t_all,
        "rss_after_import_mb": base_rss, "peak_rss_mb": peak_rss_mb(),
    }


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return peak_rss_mb()


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
    except OSError:
        pass


def measure_image(path: Path, preset: str) -> dict:
    """Decode ``path`` into a float32 IMAGE tensor, then write it to MP4; time and peak RSS rise of each."""
    import torch

    from comfyui_digitalhuman.engine.media.stream import FrameStream
    from comfyui_digitalhuman.engine.media.video_io import VideoSource
    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    VideoSource(path, frame_cap=2).read_all()  # warm up the decoder
    src = VideoSource(path)
    before = rss_now_mb()
    reset_peak()
    t0 = time.perf_counter()
    images = torch.empty((src.frame_count, src.height, src.width, 3), dtype=torch.float32)
    n = src.read_into(images.numpy())
    t_dec = time.perf_counter() - t0
    dec_peak = peak_rss_mb() - before
    with tempfile.TemporaryDirectory() as tmp:
        before = rss_now_mb()
        reset_peak()
        t0 = time.perf_counter()
        write_mp4(Path(tmp) / "out.mp4", FrameStream.from_images(images, src.fps), src.fps, preset=preset)
        t_enc = time.perf_counter() - t0
        enc_peak = peak_rss_mb() - before
    return {"frames": n, "width": src.width, "height": src.height, "t_decode": t_dec, "decode_peak_mb": dec_peak,
            "t_save": t_enc, "save_peak_mb": enc_peak}


def image_table(args) -> None:
    import numpy as np

    from comfyui_digitalhuman.engine.media.video_io import images_peak_bytes
    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    w, h, n = args.image
    with tempfile.TemporaryDirectory(prefix="dh-bench-") as tmp:
        path = Path(tmp) / "clip.mp4"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        write_mp4(path, (np.roll(base, 8 * i, axis=1)[None] for i in range(n)), FPS, preset="ultrafast")
        out = subprocess.run([sys.executable, __file__, "--measure-image", str(path), "--preset", args.preset],
                             check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    image_mb = n * w * h * 3 * 4 / 2**20
    print(f"\nIMAGE path, {w}x{h}, {n} frames, x264 preset {args.preset}, {os.cpu_count()} CPUs\n")
    print("| step | ms per frame | peak RSS rise (MB) | float32 IMAGE (MB) | RAM check budget (MB) |")
    print("|---|---|---|---|---|")
    print(f"| decode into IMAGE | {1000 * r['t_decode'] / n:.1f} | {r['decode_peak_mb']:.0f} | {image_mb:.0f} | "
          f"{images_peak_bytes(n, w, h) / 2**20:.0f} |")
    print(f"| save IMAGE to MP4 | {1000 * r['t_save'] / n:.1f} | {r['save_peak_mb']:.0f} | (held) | - |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    ap.add_argument("--preset", default="ultrafast", help="x264 preset for input making and the encode pass")
    ap.add_argument("--chunk", type=int, default=16, help="frames per chunk")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the inputs here (default: a temp dir, removed)")
    ap.add_argument("--image", type=int, nargs=3, metavar=("W", "H", "N"), help="measure the IMAGE path instead")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--measure-image", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.preset, args.chunk)))
        return
    if args.measure_image:
        print(json.dumps(measure_image(args.measure_image, args.preset)))
        return
    if args.image:
        image_table(args)
        return
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dh-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for m in args.minutes:
            path = workdir / f"bench_{m:g}min.mp4"
            if not path.is_file():
                t0 = time.perf_counter()
                make_input(path, m, args.preset)
                print(f"made {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            out = subprocess.run([sys.executable, __file__, "--measure", str(path), "--preset", args.preset,
                                  "--chunk", str(args.chunk)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["minutes"] = m
            rows.append(r)
            print(f"measured {path.name}: {r}", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"\n512x512 @ {FPS} fps, chunk {args.chunk}, x264 preset {args.preset}, {os.cpu_count()} CPUs\n")
    print("| length | frames | decode fps | process fps | encode fps | end-to-end fps | RSS after import (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["frames"]
        dec = n / r["t_decode"]
        proc = n / max(r["t_process"] - r["t_decode"], 1e-9)
        enc = n / max(r["t_full"] - r["t_process"], 1e-9)
        print(f"| {r['minutes']:g} min | {n} | {dec:.0f} | {proc:.0f} | {enc:.0f} | {n / r['t_full']:.0f} | "
              f"{r['rss_after_import_mb']:.0f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
