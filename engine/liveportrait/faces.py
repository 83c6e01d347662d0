"""The face operations the animation needs, behind a small interface.

The pipeline only needs landmarks, a crop transform, paste-back and the eye/lip ratios. The
default implementation uses the pack's face engine (``engine/face``); tests and other callers
can pass any object with the same methods.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class FaceOps(Protocol):
    def landmarks(self, frames: np.ndarray) -> list[np.ndarray | None]:
        """Face-mesh landmarks ``[468,3]`` (image pixels) of the picked face in each frame, None without a face."""

    def crop(self, image: np.ndarray, lmk: np.ndarray, dsize: int, scale: float, vx_ratio: float,
             vy_ratio: float, do_rot: bool) -> tuple[np.ndarray, np.ndarray]:
        """LivePortrait crop: (crop uint8 ``[dsize,dsize,3]``, ``M_o2c`` 3x3 original->crop)."""

    def warp_to_crop(self, image: np.ndarray, M_o2c: np.ndarray, dsize: int) -> np.ndarray:
        """Apply a crop transform."""

    def paste_mask(self, dsize: int) -> np.ndarray:
        """Soft paste-back mask ``[dsize,dsize]`` float 0..1 in crop space."""

    def paste_back(self, frame: np.ndarray, crop: np.ndarray, M_c2o: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Blend ``crop`` back into ``frame`` through ``mask``."""

    def eye_ratio(self, lmk: np.ndarray) -> np.ndarray:
        """Eye-open ratios ``[2]`` (LivePortrait's definition)."""

    def lip_ratio(self, lmk: np.ndarray) -> np.ndarray:
        """Lip-open ratio ``[1]``."""


class EngineFaceOps:
    """:class:`FaceOps` on the pack's face engine (``engine.face``), imported on first use."""

    def __init__(self, analyzer=None, device: str = "cpu", det_thresh: float = 0.0):
        from ..face import align, schemes

        self._align, self._schemes = align, schemes
        self.det_thresh = float(det_thresh)
        if analyzer is None:
            from ..face.analyzer import FaceAnalyzer

            analyzer = FaceAnalyzer(device=device)
        self.analyzer = analyzer

    def landmarks(self, frames: np.ndarray) -> list[np.ndarray | None]:
        found = self.analyzer.detect_batch(np.ascontiguousarray(frames))
        picked = [[f for f in faces if f.score >= self.det_thresh] for faces in found]
        return [faces[0].landmarks if faces else None for faces in picked]

    def crop(self, image, lmk, dsize, scale, vx_ratio, vy_ratio, do_rot):
        info = self._align.crop_liveportrait(image, lmk, dsize=dsize, scale=scale, vx_ratio=vx_ratio,
                                             vy_ratio=vy_ratio, flag_do_rot=do_rot)
        return info.crop, np.asarray(info.M_o2c, np.float64)

    def warp_to_crop(self, image, M_o2c, dsize):
        return self._align.warp_to_crop(image, M_o2c, dsize)

    def paste_mask(self, dsize):
        return self._align.make_paste_mask(dsize)

    def paste_back(self, frame, crop, M_c2o, mask):
        return self._align.paste_back(frame, crop, M_c2o, mask_crop=mask)

    def eye_ratio(self, lmk):
        return np.asarray(self._schemes.eye_open_ratio(lmk), np.float32).reshape(2)

    def lip_ratio(self, lmk):
        return np.asarray(self._schemes.lip_open_ratio(lmk), np.float32).reshape(1)
