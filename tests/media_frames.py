"""Test videos: reading the first frames of one, writing one with chosen timestamps (shared by the unit tests)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def read_frames(path: Path, n: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The first ``n`` frames as uint8 RGB ``[n,H,W,3]``; ``size`` (width, height) resizes them with INTER_AREA."""
    frames = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            f = frame.to_ndarray(format="rgb24")
            frames.append(f if size is None else cv2.resize(f, size, interpolation=cv2.INTER_AREA))
            if len(frames) == n:
                break
    return np.stack(frames)


def write_timed(path: Path, pts_ms: list[int]) -> None:
    """An H.264 video whose frame k (brightness 8 k, k < 30) starts at ``pts_ms[k]`` milliseconds."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.options = {"preset": "ultrafast", "bf": "0", "crf": "10"}
        v.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for pkt in v.encode(frame):
                out.mux(pkt)
        for pkt in v.encode(None):
            out.mux(pkt)


#: 25 frame start times (ms) of a variable-frame-rate clip: 25 fps, a stretch at 8.3 fps, 25 fps again
VFR_MS = [int(t) for t in np.cumsum([0] + [40] * 10 + [120] * 5 + [40] * 9)]
