"""Benchmark face analysis: ms per frame for detection + landmarks (two mesh passes).

Usage: python scripts/bench_face.py [--device cpu|cuda] [--batch 16] [--frames 64] [--dtype fp32|fp16]
Frames are real: d20.mp4 placed on 512x512 and 1280x720 canvases (one face per frame).
CPU time (all threads) is printed beside wall time: on a shared machine it is the steadier figure.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer  # noqa: E402

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


def load_frames(n: int) -> list[np.ndarray]:
    with av.open(str(TESTDATA / "d20.mp4")) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0))]


def canvas(frames: list[np.ndarray], w: int, h: int) -> np.ndarray:
    out = np.zeros((len(frames), h, w, 3), np.uint8)
    for i, f in enumerate(frames):
        s = min(w, h) / max(f.shape[:2])
        r = cv2.resize(f, (int(f.shape[1] * s), int(f.shape[0] * s)))
        y, x = (h - r.shape[0]) // 2, (w - r.shape[1]) // 2
        out[i, y : y + r.shape[0], x : x + r.shape[1]] = r
    return out


def bench(fa: FaceAnalyzer, frames: np.ndarray, batch: int, sync) -> tuple[float, float, int]:
    """(wall ms/frame, process CPU ms/frame summed over threads, frames with a face)."""
    fa.detect_batch(frames[:batch])  # warm-up
    sync()
    t, c = time.perf_counter(), time.process_time()
    found = 0
    for s in range(0, len(frames), batch):
        found += sum(bool(r) for r in fa.detect_batch(frames[s : s + batch]))
    sync()
    n = len(frames)
    return (time.perf_counter() - t) * 1000 / n, (time.process_time() - c) * 1000 / n, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = torch.float16 if a.dtype == "fp16" else torch.float32
    fa = FaceAnalyzer(device=a.device, dtype=dtype)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    src = load_frames(a.frames)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype {a.dtype}, batch {a.batch}, {a.frames} frames")
    for w, h in ((512, 512), (1280, 720)):
        ms, cpu, found = bench(fa, canvas(src, w, h), a.batch, sync)
        print(f"{w}x{h}: {ms:7.1f} ms/frame wall ({1000 / ms:6.1f} fps), {cpu:7.1f} ms CPU time/frame, "
              f"face found in {found}/{a.frames}")
    # network forward passes alone (batched), to tell compute from pre/post-processing
    for label, net, size in (("short-range detector", fa._short.net, 128), ("face mesh (x2 per face)", fa._mesh.net, 192)):
        x = torch.rand(a.batch, size, size, 3, device=a.device, dtype=dtype)
        with torch.inference_mode():
            net(x)
            sync()
            t = time.perf_counter()
            for _ in range(3):
                net(x)
            sync()
        print(f"{label}: {(time.perf_counter() - t) * 1000 / (3 * a.batch):6.2f} ms/image forward")


if __name__ == "__main__":
    main()
