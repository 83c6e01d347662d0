"""Driven keypoints for each frame: the reference pipeline's per-frame composition, batched over frames.

Source is one image; the driving is a video (``driving_is_video``) or a single image. Every
branch follows the reference's ``LivePortraitPipeline.execute`` in the same order of operations.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import keypoints as K
from .options import AnimateOptions

# keypoint coefficients that absolute ("exp"/"all") motion copies from the driving expression
_ABS_EXP_KP = (1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)


@lru_cache(maxsize=2)
def lip_array(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The reference's neutral closed-lip expression ``[1,21,3]`` (stored in float64)."""
    with open(Path(__file__).with_name("lip_array.json"), encoding="utf-8") as f:
        return torch.tensor(json.load(f)["lip_array"], dtype=torch.float64).to(dtype)[None]


@dataclass
class SourceMotion:
    """What the animation needs from the source portrait (batch 1)."""

    info: K.KeypointInfo
    x_s: torch.Tensor  # [1,21,3] transformed source keypoints
    eye_ratio: torch.Tensor  # [1,2] source eye-open ratios (left, right)
    lip_ratio: torch.Tensor  # [1,1] source lip-open ratio
    lip_delta_before: torch.Tensor | None = None  # lip-closing offset (normalize_lip)

    @property
    def rotation(self) -> torch.Tensor:
        return self.info.rotation


def prepare_source_motion(info: K.KeypointInfo, eye_ratio: np.ndarray, lip_ratio: np.ndarray,
                          opts: AnimateOptions, lip_mlp: torch.nn.Module | None) -> SourceMotion:
    """Source keypoints, ratios and, with ``normalize_lip``, the offset that closes an open mouth first."""
    x_s = K.transform_keypoint(info)
    eye = torch.as_tensor(np.asarray(eye_ratio, np.float32).reshape(1, 2), device=x_s.device)
    lip = torch.as_tensor(np.asarray(lip_ratio, np.float32).reshape(1, 1), device=x_s.device)
    src = SourceMotion(info, x_s, eye, lip)
    if opts.normalize_lip and opts.relative_motion and lip_mlp is not None:
        combined = torch.cat([lip, torch.zeros_like(lip)], dim=1)
        if combined[0, 0] >= opts.lip_normalize_threshold:
            src.lip_delta_before = K.retarget(lip_mlp, x_s, combined)
    return src


def _expression(src: SourceMotion, drv: K.KeypointInfo, first: K.KeypointInfo, opts: AnimateOptions,
                driving_is_video: bool) -> torch.Tensor:
    n = drv.kp.shape[0]
    s_exp = src.info.exp.expand(n, -1, -1)
    delta = s_exp.clone()
    region = opts.animation_region
    if opts.relative_motion:
        base = first.exp if driving_is_video else lip_array().to(drv.exp.device)
        rel = s_exp + (drv.exp - base)
        if region in ("all", "exp"):
            delta = rel
        elif region == "lip":
            delta[:, K.LIP_KP] = rel[:, K.LIP_KP]
        elif region == "eyes":
            eyes = rel if driving_is_video else s_exp + (drv.exp - 0)
            delta[:, K.EYE_KP] = eyes[:, K.EYE_KP]
        return delta
    if region in ("all", "exp"):
        delta[:, _ABS_EXP_KP] = drv.exp[:, _ABS_EXP_KP]
        delta[:, 3:5, 1] = drv.exp[:, 3:5, 1]
        delta[:, 5, 2] = drv.exp[:, 5, 2]
        delta[:, 8, 2] = drv.exp[:, 8, 2]
        delta[:, 9, 1:] = drv.exp[:, 9, 1:]
    elif region == "lip":
        delta[:, K.LIP_KP] = drv.exp[:, K.LIP_KP]
    elif region == "eyes":
        delta[:, K.EYE_KP] = drv.exp[:, K.EYE_KP]
    return delta


def compose_driving(src: SourceMotion, drv: K.KeypointInfo, first: K.KeypointInfo, opts: AnimateOptions,
                    driving_is_video: bool = True) -> torch.Tensor:
    """``scale * (x_c @ R + delta) + t`` for each driving frame, before stitching/retargeting ``[n,21,3]``."""
    n = drv.kp.shape[0]
    region, s = opts.animation_region, src.info
    pose = region in ("all", "pose")
    if opts.relative_motion:
        rot = (drv.rotation @ first.rotation.permute(0, 2, 1)) @ src.rotation if pose else src.rotation
        scale = s.scale * (drv.scale / first.scale) if region == "all" else s.scale
        t = s.t + (drv.t - first.t) if pose else s.t
    else:
        rot = drv.rotation if pose else src.rotation
        scale = s.scale
        t = drv.t if pose else s.t
    delta = _expression(src, drv, first, opts, driving_is_video)
    return K.compose(s.kp.expand(n, -1, -1), rot.expand(n, -1, -1), delta, scale.expand(n, -1),
                     t.expand(n, -1))


def drive_keypoints(src: SourceMotion, drv: K.KeypointInfo, first: K.KeypointInfo, opts: AnimateOptions,
                    retarget_nets: torch.nn.Module | None, driving_eye_ratio: np.ndarray | None = None,
                    driving_lip_ratio: np.ndarray | None = None, driving_is_video: bool = True) -> torch.Tensor:
    """The final driving keypoints ``x_d`` ``[n,21,3]`` fed to the warping module.

    ``first`` is driving frame 0 (the relative-motion anchor); ``driving_eye_ratio`` ``[n,2]``
    and ``driving_lip_ratio`` ``[n,1]`` are needed only for eye/lip retargeting.
    """
    n = drv.kp.shape[0]
    x_s = src.x_s.expand(n, -1, -1)
    x = compose_driving(src, drv, first, opts, driving_is_video)
    if opts.relative_motion and opts.driving_option == "expression-friendly" and driving_is_video:
        x0 = compose_driving(src, first, first, opts, driving_is_video)
        mult = K.motion_multiplier(src.x_s, x0)
        x = (x - x0) * mult + x_s
    return finish_keypoints(x, x_s, opts, retarget_nets, src.eye_ratio.expand(n, -1), src.lip_ratio.expand(n, -1),
                            src.lip_delta_before, None, driving_eye_ratio, driving_lip_ratio)


def finish_keypoints(x: torch.Tensor, x_s: torch.Tensor, opts: AnimateOptions, retarget_nets: torch.nn.Module | None,
                     src_eye: torch.Tensor, src_lip: torch.Tensor, lip_delta_before: torch.Tensor | None,
                     eye_delta_before: torch.Tensor | None, driving_eye_ratio: np.ndarray | None,
                     driving_lip_ratio: np.ndarray | None) -> torch.Tensor:
    """Stitching, eye/lip retargeting and the driving multiplier (the reference's Algorithm 1 tail)."""
    n = x.shape[0]
    stitching = opts.stitching and retarget_nets is not None
    eye_rt = opts.eye_retargeting and retarget_nets is not None
    lip_rt = opts.lip_retargeting and retarget_nets is not None
    if not stitching and not eye_rt and not lip_rt:
        if opts.normalize_lip and lip_delta_before is not None:
            x = x + lip_delta_before
        if opts.source_video_eye_retargeting and eye_delta_before is not None:
            x = x + eye_delta_before
    elif stitching and not eye_rt and not lip_rt:
        x = K.stitch(retarget_nets.stitching, x_s, x)
        if opts.normalize_lip and lip_delta_before is not None:
            x = x + lip_delta_before
        if opts.source_video_eye_retargeting and eye_delta_before is not None:
            x = x + eye_delta_before
    else:
        x = x_s if opts.relative_motion else x
        if eye_rt:
            if driving_eye_ratio is None:
                raise ValueError("eye retargeting needs the driving frames' eye-open ratios")
            d_eye = torch.as_tensor(np.asarray(driving_eye_ratio, np.float32).reshape(n, -1)[:, :1], device=x.device)
            x = x + K.retarget(retarget_nets.eye, x_s, torch.cat([src_eye, d_eye], 1))
        if lip_rt:
            if driving_lip_ratio is None:
                raise ValueError("lip retargeting needs the driving frames' lip-open ratios")
            d_lip = torch.as_tensor(np.asarray(driving_lip_ratio, np.float32).reshape(n, -1)[:, :1], device=x.device)
            x = x + K.retarget(retarget_nets.lip, x_s, torch.cat([src_lip, d_lip], 1))
        if stitching:
            x = K.stitch(retarget_nets.stitching, x_s, x)
    return x_s + (x - x_s) * opts.driving_multiplier
