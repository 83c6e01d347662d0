"""Normalise user images to what the face networks take: uint8 RGB [H, W, 3].

Accepted (documented behaviour, tested):
* grayscale [H, W] or [H, W, 1] -> replicated to three channels;
* RGBA [H, W, 4] -> alpha dropped (not composited);
* uint16 -> scaled to 8 bit (value / 257); float -> taken as 0..1, clipped, scaled to 0..255;
* anything else (other channel counts, rank, empty) -> ValueError naming the frame.
Images whose shorter side is below :data:`MIN_IMAGE_SIDE` px cannot hold a detectable face:
the analyzer returns no face for them (it does not raise).
"""
from __future__ import annotations

import numpy as np

MIN_IMAGE_SIDE = 64


def to_rgb_uint8(image: np.ndarray, where: str = "image") -> np.ndarray:
    """``image`` as contiguous uint8 RGB [H, W, 3]; a clear ValueError for unusable input."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{where}: expected an image [H, W, C], got shape {tuple(np.shape(image))}")
    c = a.shape[2]
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    elif c == 4:
        a = a[..., :3]
    elif c != 3:
        raise ValueError(f"{where}: expected 1, 3 or 4 channels, got {c}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return np.ascontiguousarray((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    raise ValueError(f"{where}: unsupported pixel type {a.dtype} (use uint8, uint16 or float 0..1)")
