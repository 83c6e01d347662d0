"""The two video-level operations behind the face nodes: track + crop, and paste back.

Both stream over frames in chunks (bounded memory per chunk), report ``progress(done, total)``
and poll ``check_interrupt()``. Frames without a usable face (see :mod:`.tracking`) get a black
crop and a zero mask, and are passed through unchanged by :func:`paste_back_track`.
"""
from __future__ import annotations

from typing import Callable, Iterator

import cv2
import numpy as np

from .align import crop_transform, make_paste_mask, paste_back, warp_to_crop
from .schemes import to_ibug68
from .tracking import FaceTrack, track_faces

CHUNK = 16


def _chunks(frames: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(frames), size):
        yield frames[s : s + size]


def detect_and_crop(frames: np.ndarray, analyzer, dsize: int = 512, scale: float = 2.3, vx_ratio: float = 0.0,
                    vy_ratio: float = -0.125, flag_do_rot: bool = True, pick: str | int = "largest",
                    smoothing: float = 0.5, missing: str = "pass",
                    progress: Callable[[int, int], None] | None = None,
                    check_interrupt: Callable[[], None] | None = None) -> tuple[np.ndarray, FaceTrack, np.ndarray]:
    """Track one face through uint8 ``frames`` [N,H,W,3] and crop it LivePortrait-style.

    Returns crops uint8 [N,dsize,dsize,3], the :class:`FaceTrack` (with ``M_o2c`` and
    ``crop_size`` set) and frame-space soft masks float32 [N,H,W] of the pasted region.
    Detection counts for the first half of ``progress``, cropping for the second.
    """
    n = len(frames)
    half = (lambda d, t: progress(d, 2 * n)) if progress else None
    track = track_faces(_chunks(frames, CHUNK), analyzer, smoothing=smoothing, pick=pick, missing=missing,
                        progress=half, check_interrupt=check_interrupt, total=n)
    crops = np.zeros((n, dsize, dsize, 3), np.uint8)
    masks = np.zeros(frames.shape[:3], np.float32)
    mats = np.tile(np.eye(3), (n, 1, 1))
    base_mask = make_paste_mask(dsize)
    for i in range(n):
        if check_interrupt and i % CHUNK == 0:
            check_interrupt()
        if track.usable[i]:
            m = crop_transform(to_ibug68(track.landmarks[i]), dsize, scale, vx_ratio, vy_ratio, flag_do_rot)
            mats[i] = m
            crops[i] = warp_to_crop(frames[i], m, dsize)
            h, w = frames.shape[1:3]
            masks[i] = cv2.warpAffine(base_mask, np.linalg.inv(m)[:2], (w, h), flags=cv2.INTER_LINEAR)
        if progress:
            progress(n + i + 1, 2 * n)
    track.M_o2c = mats
    track.crop_size = int(dsize)
    return crops, track, masks


def paste_back_track(frames: np.ndarray, crops: np.ndarray, track: FaceTrack, feather: int = 0,
                     progress: Callable[[int, int], None] | None = None,
                     check_interrupt: Callable[[], None] | None = None) -> np.ndarray:
    """Paste processed ``crops`` [N,S,S,3] back into ``frames`` [N,H,W,3] along ``track``.

    The crops may have another size than the one cropped (e.g. 256 -> 512): the transform is
    rescaled. A single frame or a single crop is broadcast over the other's count.
    """
    if track.M_o2c is None or track.crop_size is None:
        raise ValueError("this face track has no crop transforms; make it with the Face Detect & Crop node")
    n = max(len(frames), len(crops))
    for name, arr in (("images", frames), ("crops", crops)):
        if len(arr) not in (1, n):
            raise ValueError(f"{name}: {len(arr)} frames, but the other input has {n}")
    if n > len(track):
        raise ValueError(f"the face track covers {len(track)} frames, but {n} were given")
    hw = tuple(frames.shape[1:3])
    if track.frame_sizes.size and tuple(track.frame_sizes[0]) != hw:
        raise ValueError(f"images are {hw[1]}x{hw[0]} but the face track was made on "
                         f"{track.frame_sizes[0][1]}x{track.frame_sizes[0][0]} frames")
    size = crops.shape[1]
    if crops.ndim != 4 or crops.shape[2] != size:
        raise ValueError(f"crops must be square [N,S,S,3], got {tuple(crops.shape)}")
    rescale = np.diag([track.crop_size / size, track.crop_size / size, 1.0])
    mask = make_paste_mask(size)
    out = np.empty((n,) + frames.shape[1:], np.uint8)
    for i in range(n):
        if check_interrupt and i % CHUNK == 0:
            check_interrupt()
        frame = frames[min(i, len(frames) - 1)]
        if track.usable[i]:
            m_c2o = np.linalg.inv(track.M_o2c[i]) @ rescale
            out[i] = paste_back(frame, crops[min(i, len(crops) - 1)], m_c2o, mask, feather)
        else:
            out[i] = frame
        if progress:
            progress(i + 1, n)
    return out
