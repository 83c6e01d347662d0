"""Aligned face crops and seamless paste-back (LivePortrait's crop transform).

:func:`crop_liveportrait` reproduces LivePortrait's ``crop_image``: from the landmarks, the
'up' axis runs from the mid-point of the two eye centres to the mouth centre; all points are
rotated into that frame, their box (made square, times ``scale``) is centred on the box centre
shifted by ``vx_ratio``/``vy_ratio`` times its size, and the similarity maps that square onto
``dsize`` x ``dsize``. LivePortrait computes it on InsightFace's 106 points; we use the 68
iBUG points from :func:`schemes.to_ibug68` (same face outline: jaw, brows, eyes, nose, mouth),
with the 68-point eye and mouth centres LivePortrait itself uses for 68-point input.
Presets: source ``scale=2.3, vy_ratio=-0.125``; driving ``scale=2.2, vy_ratio=-0.1``.

:func:`paste_back` inverse-warps a crop with a soft mask that is zero at the crop border, so
the pasted region blends into the frame without a seam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .schemes import to_ibug68

PRESETS = {
    "liveportrait_source": dict(scale=2.3, vx_ratio=0.0, vy_ratio=-0.125),
    "liveportrait_driving": dict(scale=2.2, vx_ratio=0.0, vy_ratio=-0.1),
    "generic": dict(scale=1.6, vx_ratio=0.0, vy_ratio=-0.05),
}


@dataclass
class CropInfo:
    """An aligned crop with its transforms (3x3, float64) and the landmarks in crop pixels."""

    crop: np.ndarray
    M_o2c: np.ndarray
    M_c2o: np.ndarray
    lmk_crop: np.ndarray


def crop_transform(pts: np.ndarray, dsize: int, scale: float, vx_ratio: float, vy_ratio: float,
                   flag_do_rot: bool = True) -> np.ndarray:
    """Original -> crop similarity [3,3] from 68 iBUG points (LivePortrait's rule)."""
    p = np.asarray(pts, np.float64)[:, :2]
    eyes = (p[[36, 39]].mean(0) + p[[42, 45]].mean(0)) / 2
    lip = (p[48] + p[54]) / 2
    uy = lip - eyes
    n = np.linalg.norm(uy)
    uy = np.array([0.0, 1.0]) if n <= 1e-3 else uy / n
    ux = np.array([uy[1], -uy[0]])
    angle = math.acos(max(-1.0, min(1.0, ux[0])))
    if ux[1] < 0:
        angle = -angle
    c0 = p.mean(0)
    r = (p - c0) @ np.stack([ux, uy]).T
    lo, hi = r.min(0), r.max(0)
    c1 = (lo + hi) / 2
    size = float(max(hi - lo)) * scale
    center = c0 + ux * c1[0] + uy * c1[1] + ux * (vx_ratio * size) + uy * (vy_ratio * size)
    s = dsize / max(size, 1e-6)
    ca, sa = (math.cos(angle), math.sin(angle)) if flag_do_rot else (1.0, 0.0)
    m = np.array([[s * ca, s * sa, 0.0], [-s * sa, s * ca, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] = dsize / 2 - m[:2, :2] @ center
    return m


def warp_to_crop(image: np.ndarray, M_o2c: np.ndarray, dsize: int) -> np.ndarray:
    """Bilinear warp of ``image`` into the ``dsize`` x ``dsize`` crop (black outside the image)."""
    return cv2.warpAffine(image, np.asarray(M_o2c, np.float64)[:2], (int(dsize), int(dsize)),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_liveportrait(image: np.ndarray, lmk468: np.ndarray, dsize: int = 512, scale: float = 2.3,
                      vx_ratio: float = 0.0, vy_ratio: float = -0.125, flag_do_rot: bool = True) -> CropInfo:
    """LivePortrait-aligned crop of ``image`` (uint8 [H,W,3]) around the face of ``lmk468``."""
    m = crop_transform(to_ibug68(lmk468), dsize, scale, vx_ratio, vy_ratio, flag_do_rot)
    crop = warp_to_crop(image, m, dsize)
    lmk = np.asarray(lmk468, np.float64)[:, :2] @ m[:2, :2].T + m[:2, 2]
    return CropInfo(crop=crop, M_o2c=m, M_c2o=np.linalg.inv(m), lmk_crop=lmk.astype(np.float32))


def make_paste_mask(dsize: int, margin: float = 0.04, feather: float = 0.14) -> np.ndarray:
    """Soft mask [S,S] float32: 0 within ``margin`` of the crop border, rising smoothly over
    ``feather`` (fractions of the size) to 1 inside, with rounded corners (LivePortrait-style)."""
    t = (np.arange(dsize, dtype=np.float32) + 0.5) / dsize
    d = np.minimum(t, 1.0 - t)  # distance to the nearest border, per axis
    dx, dy = np.meshgrid(d, d)
    inner = margin + feather
    # distance into the rounded square: corners use the Euclidean distance to the inner square
    ox, oy = np.clip(inner - dx, 0, None), np.clip(inner - dy, 0, None)
    depth = inner - np.sqrt(ox * ox + oy * oy)
    x = np.clip((depth - margin) / max(feather, 1e-6), 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)  # smoothstep


def paste_back(frame: np.ndarray, crop: np.ndarray, M_c2o: np.ndarray, mask_crop: np.ndarray | None = None,
               feather: int = 0) -> np.ndarray:
    """Blend a (processed) crop back into ``frame`` (uint8 [H,W,3]) through ``M_c2o``.

    ``crop`` is uint8 or float 0..1 [S,S,3]; ``mask_crop`` float [S,S] (default
    :func:`make_paste_mask`); ``feather`` > 0 further blurs the warped mask by that many pixels.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"paste_back: frame must be uint8 [H,W,3], got {frame.dtype} {frame.shape}")
    c = np.asarray(crop)
    if c.ndim != 3 or c.shape[0] != c.shape[1] or c.shape[2] != 3:
        raise ValueError(f"paste_back: crop must be square [S,S,3], got {c.shape}")
    c = c.astype(np.float32) * (255.0 if np.issubdtype(c.dtype, np.floating) else 1.0)
    size = c.shape[0]
    mask = make_paste_mask(size) if mask_crop is None else np.asarray(mask_crop, np.float32)
    if mask.shape != (size, size):
        raise ValueError(f"paste_back: mask shape {mask.shape} does not match the crop size {size}")
    h, w = frame.shape[:2]
    m = np.asarray(M_c2o, np.float64)[:2]
    warped = cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mk = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if feather > 0:
        k = 2 * int(feather) + 1
        mk = cv2.GaussianBlur(mk, (k, k), feather / 2.0)
    mk = np.clip(mk, 0.0, 1.0)[..., None]
    out = mk * warped + (1.0 - mk) * frame.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
