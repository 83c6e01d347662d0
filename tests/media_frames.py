"""Reading the first frames of a test video (shared by the unit tests)."""
from __future__ import annotations

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
