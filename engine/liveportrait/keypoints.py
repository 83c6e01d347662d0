"""Implicit-keypoint math of LivePortrait: pose bins, rotation convention, keypoint transform, stitching.

All functions take and return batched tensors ``[B,...]``; keypoints are ``[B,21,3]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

NUM_KP = 21
# Expression coefficients driven in "exp"/"all" modes when the source is a video, and the lip
# and eye subsets used by the "lip"/"eyes" animation regions (keypoint indices of the model).
LIP_KP = (6, 12, 14, 17, 19, 20)
EYE_KP = (11, 13, 15, 16, 18)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """66 pose-bin logits -> angle in degrees: softmax expectation over bins of 3 degrees, centred at 97.5."""
    if logits.ndim > 1 and logits.shape[1] == 66:
        idx = torch.arange(66, dtype=torch.float32, device=logits.device)
        return torch.sum(F.softmax(logits, dim=1) * idx, dim=1) * 3 - 97.5
    return logits


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation ``[B,3,3]`` for angles in degrees, in the row-vector convention (``kp @ R``).

    ``R = (Rz(roll) @ Ry(yaw) @ Rx(pitch))^T``, so ``kp @ R`` rotates the column vectors by
    ``Rz Ry Rx``.
    """
    def col(a: torch.Tensor) -> torch.Tensor:
        a = a.float() / 180 * math.pi
        return a.reshape(a.shape[0], 1)

    x, y, z = col(pitch), col(yaw), col(roll)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.cat([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], 1).view(-1, 3, 3)
    ry = torch.cat([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rz = torch.cat([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return (rz @ ry @ rx).permute(0, 2, 1)


@dataclass
class KeypointInfo:
    """Motion-extractor output, refined: angles in degrees ``[B,1]``, ``kp``/``exp`` ``[B,21,3]``, ``t`` ``[B,3]``, ``scale`` ``[B,1]``."""

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor

    @property
    def rotation(self) -> torch.Tensor:
        return rotation_matrix(self.pitch, self.yaw, self.roll)

    def select(self, index: slice | int | torch.Tensor) -> "KeypointInfo":
        """A subset of the batch (an int keeps the batch axis)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return KeypointInfo(*(getattr(self, f)[index] for f in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")))

    def to(self, **kw) -> "KeypointInfo":
        return replace(self, **{f: getattr(self, f).to(**kw) for f in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")})

    @staticmethod
    def cat(items: list["KeypointInfo"]) -> "KeypointInfo":
        fields = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
        return KeypointInfo(*(torch.cat([getattr(i, f) for i in items]) for f in fields))


def refine(raw: dict[str, torch.Tensor]) -> KeypointInfo:
    """Raw motion-extractor outputs -> :class:`KeypointInfo` (fp32, degrees, keypoints reshaped)."""
    b = raw["kp"].shape[0]
    f = {k: v.float() for k, v in raw.items()}
    return KeypointInfo(pitch=bins_to_degrees(f["pitch"])[:, None], yaw=bins_to_degrees(f["yaw"])[:, None],
                        roll=bins_to_degrees(f["roll"])[:, None], t=f["t"], exp=f["exp"].reshape(b, -1, 3),
                        scale=f["scale"], kp=f["kp"].reshape(b, -1, 3))


def transform_keypoint(info: KeypointInfo) -> torch.Tensor:
    """``x = s * (x_c @ R + exp) + t`` with only tx, ty applied (the paper's Eqn. 2)."""
    b = info.kp.shape[0]
    kp = info.kp.reshape(b, -1, 3)
    x = (kp @ info.rotation + info.exp.reshape(b, -1, 3)) * info.scale[..., None]
    x[:, :, 0:2] += info.t[:, None, 0:2]
    return x


def compose(kp_canonical: torch.Tensor, rotation: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor,
            t: torch.Tensor) -> torch.Tensor:
    """Driven keypoints ``scale * (x_c @ R + exp) + t`` with tz zeroed (the pipeline's composition)."""
    t = t.clone()
    t[..., 2] = 0
    return scale[..., None] * (kp_canonical @ rotation + exp) + t[:, None, :]


def stitch(stitching_mlp: torch.nn.Module, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Stitching: the MLP predicts a keypoint offset and a tx, ty shift that keep the crop border still."""
    b, k = x_s.shape[:2]
    delta = stitching_mlp(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], dim=1).to(_dtype(stitching_mlp))).float()
    out = x_d + delta[:, :3 * k].reshape(b, k, 3)
    out[..., :2] += delta[:, 3 * k:3 * k + 2].reshape(b, 1, 2)
    return out


def retarget(mlp: torch.nn.Module, x_s: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """Eye or lip retargeting: keypoint offsets ``[B,21,3]`` from ``x_s`` and ``[c_source..., c_target]``."""
    b, k = x_s.shape[:2]
    feat = torch.cat([x_s.reshape(b, -1), ratios.reshape(b, -1).to(x_s)], dim=1)
    return mlp(feat.to(_dtype(mlp))).float().reshape(b, k, 3)


def motion_multiplier(x_s: torch.Tensor, x_d0: torch.Tensor) -> float:
    """sqrt of the ratio of the convex-hull volumes of source and first driving keypoints (expression-friendly mode)."""
    from scipy.spatial import ConvexHull

    src = ConvexHull(np.asarray(x_s.detach().float().cpu().numpy()).reshape(-1, 3)).volume
    drv = ConvexHull(np.asarray(x_d0.detach().float().cpu().numpy()).reshape(-1, 3)).volume
    return float(np.sqrt(src) / np.sqrt(drv))


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
