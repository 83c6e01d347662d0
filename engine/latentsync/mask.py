"""LatentSync's fixed mouth mask (the reference's ``latentsync/utils/mask.png``, 256 x 256).

The image is not part of this repository: the model catalogue fetches it from the reference's
repository at a pinned commit (``latentsync.mask``). White (1) keeps the face, black (0) is the
region the UNet redraws: the lower face from below the eyes to the chin. It is read as the
reference does (OpenCV, BGR -> RGB), Lanczos-resized to the model resolution and divided by 255 in
float64; its first channel is the mask the latents and the paste-back use.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MASK_SIZE = 256


def read_mask(path: str | Path, resolution: int) -> np.ndarray:
    """float64 ``[resolution, resolution, 3]`` in 0..1 from the mask image at ``path``."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None:
        raise FileNotFoundError(f"LatentSync mouth mask: cannot read an image at {path}")
    if img.shape[:2] != (MASK_SIZE, MASK_SIZE):
        raise ValueError(f"LatentSync mouth mask {path}: expected {MASK_SIZE}x{MASK_SIZE}, got "
                         f"{img.shape[1]}x{img.shape[0]}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return check_mask(cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) / 255.0, str(path))


def check_mask(mask: np.ndarray, where: str = "mask") -> np.ndarray:
    """A usable mask: float ``[S, S, 3]`` in 0..1 with both a kept and a redrawn part."""
    m = np.asarray(mask, np.float64)
    if m.ndim != 3 or m.shape[2] != 3 or m.shape[0] != m.shape[1]:
        raise ValueError(f"LatentSync mouth mask {where}: expected [S, S, 3], got {list(m.shape)}")
    if not (m.min() >= 0 and m.max() <= 1) or not (m[..., 0] < 0.5).any() or not (m[..., 0] > 0.5).any():
        raise ValueError(f"LatentSync mouth mask {where}: needs values in 0..1 with both kept (1) and redrawn (0) parts")
    return m


def lower_face_mask(resolution: int) -> np.ndarray:
    """A stand-in of the same kind for tests (not the reference's shape): the lower 5/8 redrawn."""
    m = np.ones((resolution, resolution, 3), np.float64)
    m[int(resolution * 3 / 8):, int(resolution / 16):resolution - int(resolution / 16)] = 0.0
    return m
