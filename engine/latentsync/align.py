"""LatentSync's face alignment and paste-back (the reference's ``AlignRestore``, 3 points), in float32.

* :func:`fit_transform` - the similarity that maps the three alignment points (brow centres, nose
  centre; see ``engine.face.schemes.latentsync_points``) onto the face template, fitted in
  normalised coordinates by SVD (Umeyama without reflection), plus the reference's temporal
  smoothing: the nose's normalised offset ``template - points`` is blended with the previous
  frame's (``0.2 * previous + 0.8 * current``) and added to the translation.
* :func:`warp_face` - the face crop: a bilinear warp with the pixel-centre convention
  (``align_corners=True`` grid sampling, as kornia's ``warp_affine``), grey (127) outside the
  frame, truncated to uint8, then Lanczos-resized to the square model resolution.
* :func:`restore` - the paste-back: the generated face (in -1..1) is resized back to the crop's
  size (bicubic, antialiased), warped into the frame with the inverse transform, and blended
  through the warped crop rectangle eroded by 2x2, eroded again by ``2 * w_edge`` and
  Gaussian-blurred (``w_edge = sqrt(mask area) // 20``); the result is truncated to uint8.

The reference computes the warps over the whole frame; here they run on the face's footprint
(its bounding box plus a margin) and the rest of the frame is copied. That is exact: outside the
footprint the blend mask is zero, and the margin keeps every filter's border handling away from
the cut. The template and constants are data (``latentsync.json``, ``alignment``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .config import section

FOOTPRINT_MARGIN = 4  # px around the warped crop: > the 2x2 erosion reach and the samples' bilinear support


@dataclass(frozen=True)
class Template:
    """The face template for a model resolution: points ``[3, 2]``, crop size (width, height)."""

    points: np.ndarray
    size: tuple[int, int]
    fill: float
    bias_previous: float
    bias_current: float
    erosion: int
    edge_divisor: int


def template(resolution: int) -> Template:
    """The reference's template scaled to ``resolution`` (512: crop 420 x 560; 256: 210 x 280)."""
    a = section("alignment")
    ratio = resolution / 256 * a["ratio_per_256"]
    pts = np.asarray(a["template"], np.float64) * ratio
    w, h = (int(v * ratio) for v in a["face_size"])
    r = a["restore"]
    return Template(pts, (w, h), float(a["fill_value"]), float(a["bias_previous"]), float(a["bias_current"]),
                    int(r["erosion_kernel"]), int(r["edge_divisor"]))


def fit_transform(points: np.ndarray, tmpl: Template, smooth: bool = True,
                  p_bias: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor | None]:
    """Frame -> crop similarity ``[2, 3]`` (float32) for alignment ``points [3, 2]``, and the new bias state."""
    p1 = torch.tensor(np.asarray(points, np.float64), dtype=torch.float32)
    p2 = torch.tensor(tmpl.points, dtype=torch.float32)
    if p1.shape != (3, 2) or not torch.isfinite(p1).all():
        raise ValueError(f"alignment points must be 3 finite (x, y) pairs, got {np.asarray(points).tolist()}")
    c1, c2 = p1.mean(0), p2.mean(0)
    q1, q2 = p1 - c1, p2 - c2
    s1, s2 = torch.std(q1), torch.std(q2)
    if not float(s1) > 0:
        raise ValueError("alignment points coincide; the face is degenerate")
    n1, n2 = q1 / s1, q2 / s2
    u, _, v = torch.svd(n1.T @ n2)
    r = v @ u.T
    if torch.det(r) < 0:
        v[:, -1] = -v[:, -1]
        r = v @ u.T
    sr = (s2 / s1) * r
    t = c2.reshape(2, 1) - (s2 / s1) * (r @ c1.reshape(2, 1))
    m = torch.cat((sr, t), dim=1)
    if smooth:
        bias = n2[2] - n1[2]
        if p_bias is not None:
            bias = p_bias * tmpl.bias_previous + bias * tmpl.bias_current
        p_bias = bias
        m[:, 2] = m[:, 2] + bias
    return m.numpy(), p_bias


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of an affine ``[2, 3]`` (float32 arithmetic, closed form)."""
    a = torch.as_tensor(np.asarray(m, np.float32))
    full = torch.cat([a, torch.tensor([[0.0, 0.0, 1.0]])], dim=0)
    return torch.linalg.inv(full)[:2].numpy()


def _sample_grid(m_dst_to_src: np.ndarray, out_h: int, out_w: int, src_h: int, src_w: int,
                 x0: int = 0, y0: int = 0) -> torch.Tensor:
    """``grid_sample`` grid (align_corners=True) of output pixels ``(x0.., y0..)`` mapped into the source."""
    m = torch.as_tensor(np.asarray(m_dst_to_src, np.float32))
    xs = torch.arange(x0, x0 + out_w, dtype=torch.float32)
    ys = torch.arange(y0, y0 + out_h, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    sx = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
    sy = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
    nx = sx * (2.0 / max(src_w - 1, 1)) - 1.0
    ny = sy * (2.0 / max(src_h - 1, 1)) - 1.0
    return torch.stack([nx, ny], dim=-1)[None]


def _footprint(m_src_to_dst: np.ndarray, src_w: int, src_h: int, dst_w: int, dst_h: int,
               margin: int) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) of the destination covered by the source rectangle, plus ``margin``."""
    m = np.asarray(m_src_to_dst, np.float64)
    corners = np.array([[0, 0, 1], [src_w - 1, 0, 1], [0, src_h - 1, 1], [src_w - 1, src_h - 1, 1]], np.float64)
    pts = corners @ m.T
    x0 = max(int(np.floor(pts[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + margin + 1, dst_w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + margin + 1, dst_h)
    return x0, y0, max(x1, x0), max(y1, y0)


def warp_face(frame: np.ndarray, m: np.ndarray, tmpl: Template, resolution: int) -> np.ndarray:
    """The aligned face, uint8 ``[resolution, resolution, 3]``, of uint8 RGB ``frame [H, W, 3]``."""
    h, w = frame.shape[:2]
    cw, ch = tmpl.size
    inv = invert(m)  # crop -> frame
    # only the frame region the crop samples from (plus the bilinear neighbour) takes part
    x0, y0, x1, y1 = _footprint(inv, cw, ch, w, h, 2)
    crop_src = np.ascontiguousarray(frame[y0:y1, x0:x1]) if x1 > x0 and y1 > y0 else np.zeros((1, 1, 3), np.uint8)
    src = torch.from_numpy(crop_src).permute(2, 0, 1)[None].float()
    shift = np.array([[1, 0, -x0], [0, 1, -y0]], np.float32)
    m_crop_to_src = np.concatenate([shift @ np.vstack([inv, [0, 0, 1]])], 0)
    # sample positions in the original frame decide what lies outside it (fill), not the cut
    grid = _sample_grid(m_crop_to_src, ch, cw, src.shape[2], src.shape[3])
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = F.grid_sample(torch.ones_like(src[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if x1 <= x0 or y1 <= y0:
        inside = torch.zeros_like(inside)
        warped = torch.zeros_like(warped)
    out = warped + (1 - inside) * tmpl.fill
    face = out[0].permute(1, 2, 0).numpy().astype(np.uint8)
    return cv2.resize(face, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-x.pow(2.0) / (2 * sigma ** 2))
    return g / g.sum()


def _blur(mask: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[1, 1, H, W]`` with reflected borders (kornia's ``gaussian_blur2d``)."""
    k = _gaussian_kernel(size, sigma)
    p = size // 2
    x = F.conv2d(F.pad(mask, (p, p, 0, 0), mode="reflect"), k.view(1, 1, 1, size))
    return F.conv2d(F.pad(x, (0, 0, p, p), mode="reflect"), k.view(1, 1, size, 1))


def _erode2(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Erosion by a ``k x k`` square anchored at ``(k // 2, k // 2)``; pixels outside the image are ignored."""
    a = k // 2
    padded = F.pad(mask, (a, k - a - 1, a, k - a - 1), value=float("inf"))
    return -F.max_pool2d(-padded, k, stride=1)


def resize_face(face: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[3, S, S]`` float -> ``[3, height, width]`` (bicubic, antialiased: torchvision's tensor resize)."""
    return F.interpolate(face[None].float(), size=(height, width), mode="bicubic", align_corners=False,
                         antialias=True)[0]


def restore(frame: np.ndarray, face: torch.Tensor, m: np.ndarray, tmpl: Template) -> np.ndarray:
    """Paste a generated face (``[3, S, S]`` float in -1..1, the model's crop) back into uint8 ``frame``."""
    h, w = frame.shape[:2]
    cw, ch = tmpl.size
    face = resize_face(face, cw, ch)
    x0, y0, x1, y1 = _footprint(m_src_to_dst=invert(m), src_w=cw, src_h=ch, dst_w=w, dst_h=h, margin=FOOTPRINT_MARGIN)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    rw, rh = x1 - x0, y1 - y0
    inv = invert(m)  # crop -> frame: the region samples the crop at m @ (x, y)
    m_region_to_crop = np.asarray(m, np.float32)
    grid = _sample_grid(m_region_to_crop, rh, rw, ch, cw, x0, y0)
    del inv
    src = face[None]
    inside = F.grid_sample(torch.ones_like(src[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inv_face = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + (1 - inside) * tmpl.fill
    inv_face = (inv_face[0] / 2 + 0.5).clamp(0, 1) * 255
    mask = inside  # the warped crop rectangle ([1,1,rh,rw])
    eroded = _erode2(mask, tmpl.erosion)
    pasted = eroded[0] * inv_face
    area = torch.sum(eroded.float())
    w_edge = int(float(area) ** 0.5) // tmpl.edge_divisor
    radius = w_edge * 2
    centre = eroded[0, 0].numpy().astype(np.float32)
    if radius > 0:
        centre = cv2.erode(centre, np.ones((radius, radius), np.uint8))
    blur = w_edge * 2 + 1
    sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
    soft = _blur(torch.from_numpy(centre)[None, None], blur, sigma)[0]
    region = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).permute(2, 0, 1).float()
    back = soft * pasted + (1 - soft) * region
    out[y0:y1, x0:x1] = back.permute(1, 2, 0).to(torch.uint8).numpy()
    return out
