"""Animating a source video (video-to-video), as the reference pipeline does it.

Per source frame: its own crop, keypoints and appearance volume. The driving motion is applied
relative to driving frame 0 (or absolutely), then the per-frame expression and rotation are
Kalman-smoothed over the whole clip (``driving_smooth_observation_variance``). Only small
per-frame arrays are kept between passes: the source and driving frames are read again in chunks.
The output has ``min(source frames, driving frames)`` frames (a single driving image drives every
source frame). Frames without a face (source or driving, ``missing_face``) pass through.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from . import keypoints as K
from .animate import (CROP_SIZE, AnimatedChunk, DrivingSource, Replayable, ReplayFn, analyse_driving, as_rgb_uint8,
                      iter_driving,
                      resize_to_limit, warp_mask)
from .faces import FaceOps
from .motion import _ABS_EXP_KP, finish_keypoints, lip_array
from .options import AnimateOptions
from .runtime import LivePortraitNets, check_callbacks
from .smoothing import kalman_smooth


@dataclass
class SourceTrack:
    present: np.ndarray  # bool [N]
    M_o2c: list[np.ndarray | None]
    info: K.KeypointInfo  # [N] (zeros where no face)
    eye: torch.Tensor  # [N,2]
    lip: torch.Tensor  # [N,1]
    hw: tuple[int, int]


def _prepared(frame: np.ndarray, opts: AnimateOptions, where: str) -> np.ndarray:
    return resize_to_limit(as_rgb_uint8(frame, where), opts.source_max_dim, opts.source_division)


def analyse_source(nets: LivePortraitNets, source: DrivingSource, face: FaceOps, opts: AnimateOptions,
                   limit: int | None, interrupt: Callable[[], None]) -> SourceTrack:
    """First pass over the source video: crops, motion-extractor outputs and ratios per frame."""
    present, mats, infos, eyes, lips = [], [], [], [], []
    hw = None
    for chunk in iter_driving(source, opts.chunk_size):
        interrupt()
        frames = [_prepared(f, opts, f"source frame {len(present) + i}") for i, f in enumerate(chunk)]
        if limit is not None:
            frames = frames[: max(limit - len(present), 0)]
        if not frames:
            break
        hw = hw or frames[0].shape[:2]
        for i, f in enumerate(frames):
            if f.shape[:2] != hw:
                raise ValueError(f"source frame {len(present) + i}: size {f.shape[1]}x{f.shape[0]} differs from "
                                 f"the first frame's {hw[1]}x{hw[0]}")
        crops = []
        for f, lmk in zip(frames, face.landmarks(np.stack(frames))):
            present.append(lmk is not None)
            if lmk is None:
                mats.append(None)
                eyes.append(np.zeros(2, np.float32))
                lips.append(np.zeros(1, np.float32))
                crops.append(np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8))
                continue
            crop, m = face.crop(f, lmk, CROP_SIZE, opts.scale, opts.vx_ratio, opts.vy_ratio, opts.do_rot)
            mats.append(np.asarray(m, np.float64))
            eyes.append(face.eye_ratio(lmk))
            lips.append(face.lip_ratio(lmk))
            crops.append(crop)
        infos.append(nets.keypoint_info(nets.to_input(np.stack(crops), area=True), interrupt))
        if limit is not None and len(present) >= limit:
            break
    if not present:
        raise ValueError("the source video has no frames")
    if not any(present):
        raise ValueError(f"no face found in any of the {len(present)} source frames")
    dev = nets.device
    return SourceTrack(np.array(present), mats, K.KeypointInfo.cat(infos),
                       torch.tensor(np.array(eyes), device=dev).reshape(-1, 2),
                       torch.tensor(np.array(lips), device=dev).reshape(-1, 1), hw)


def driving_infos(nets: LivePortraitNets, driving: DrivingSource, track, face: FaceOps, opts: AnimateOptions,
                  interrupt: Callable[[], None]) -> K.KeypointInfo:
    """Motion-extractor outputs of every driving frame (frames without a face hold the previous good one)."""
    infos, done = [], 0
    for chunk in iter_driving(driving, opts.chunk_size):
        interrupt()
        crops = []
        for j, frame in enumerate(chunk):
            frame = as_rgb_uint8(frame, f"driving frame {done + j}")
            if track.M_o2c is not None:
                frame = face.warp_to_crop(frame, track.M_o2c, CROP_SIZE)
            crops.append(cv2.resize(frame, (256, 256)) if frame.shape[:2] != (256, 256) else frame)
        info = nets.keypoint_info(nets.to_input(np.stack(crops)), interrupt)
        infos.append(info)
        done += len(chunk)
    info = K.KeypointInfo.cat(infos)
    good = np.flatnonzero(track.present)
    hold = np.maximum.accumulate(np.where(track.present, np.arange(track.n), -1))
    hold[hold < 0] = good[0]
    return info.select(torch.as_tensor(hold, device=info.kp.device))


def target_motion(src: K.KeypointInfo, drv: K.KeypointInfo, opts: AnimateOptions, driving_is_video: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-frame target expression ``[n,21,3]`` and rotation ``[n,3,3]`` (None: keep the source's), smoothed."""
    n = src.kp.shape[0]
    pose = opts.animation_region in ("all", "pose")
    var = opts.driving_smooth_observation_variance
    d0 = drv.select(0)
    if driving_is_video:
        exp = src.exp + drv.exp[:n] - d0.exp if opts.relative_motion else drv.exp[:n]
        rot = None
        if pose:
            r_d = drv.rotation[:n]
            rot = (r_d @ d0.rotation.permute(0, 2, 1)) @ src.rotation if opts.relative_motion else r_d
        smooth = lambda t: torch.from_numpy(kalman_smooth(t.cpu().numpy(), var)).to(t.device)  # noqa: E731
        return smooth(exp), (smooth(rot) if rot is not None else None)
    if opts.relative_motion:
        lip = lip_array(torch.float64).to(src.exp.device)
        exp = (src.exp.double() + (d0.exp.double() - lip)).float()
        return exp, (src.rotation if pose else None)
    return d0.exp.expand(n, -1, -1), (d0.rotation.expand(n, -1, -1) if pose else None)


def compose_video(src: K.KeypointInfo, drv: K.KeypointInfo, exp_t: torch.Tensor, rot_t: torch.Tensor | None,
                  opts: AnimateOptions) -> torch.Tensor:
    """Driven keypoints of source frames ``src`` (batch n) from their smoothed targets."""
    region = opts.animation_region
    rot = rot_t if rot_t is not None else src.rotation
    delta = src.exp.clone()
    if region in ("all", "exp"):
        delta[:, _ABS_EXP_KP] = exp_t[:, _ABS_EXP_KP]
        delta[:, 3:5, 1] = exp_t[:, 3:5, 1]
        delta[:, 5, 2] = exp_t[:, 5, 2]
        delta[:, 8, 2] = exp_t[:, 8, 2]
        delta[:, 9, 1:] = exp_t[:, 9, 1:]
    elif region == "lip":
        delta[:, K.LIP_KP] = exp_t[:, K.LIP_KP]
    elif region == "eyes":
        delta[:, K.EYE_KP] = exp_t[:, K.EYE_KP]
    if not opts.relative_motion and region in ("all", "pose"):
        t = drv.t
    else:
        t = src.t
    return K.compose(src.kp, rot, delta, src.scale, t)


def animate_video(nets: LivePortraitNets, source: DrivingSource, driving: DrivingSource, face: FaceOps,
                  opts: AnimateOptions | None = None, progress: Callable[[int, int], None] | None = None,
                  check_interrupt: Callable[[], None] | None = None) -> "VideoAnimation":
    """Analyse source and driving videos; the returned object yields the animated chunks (source-frame size)."""
    opts = opts or AnimateOptions()
    report, interrupt = check_callbacks(progress, check_interrupt)
    dtrack = analyse_driving(driving, face, opts, lambda d: None, interrupt)
    is_video = dtrack.n > 1
    strack = analyse_source(nets, source, face, opts, dtrack.n if is_video else None, interrupt)
    n = len(strack.present)
    drv = driving_infos(nets, driving, dtrack, face, opts, interrupt)
    drv_n = drv if not is_video else drv.select(slice(0, n))
    exp_t, rot_t = target_motion(strack.info, drv_n if is_video else drv, opts, is_video)
    x_d_all = compose_video(strack.info, drv_n if is_video else drv.select(0).select(torch.zeros(n, dtype=torch.long)),
                            exp_t, rot_t, opts)
    x_s_all = K.transform_keypoint(strack.info)
    lip_before = eye_before = None
    if nets.retarget is not None and opts.normalize_lip and opts.relative_motion:
        combined = torch.cat([strack.lip, torch.zeros_like(strack.lip)], 1)
        lip_before = K.retarget(nets.retarget.lip, x_s_all, combined)
        lip_before = lip_before * (combined[:, :1, None] >= opts.lip_normalize_threshold)
    if nets.retarget is not None and opts.source_video_eye_retargeting:
        target = float(strack.eye[0, :2].mean())
        target = 0.39 if target < opts.source_video_eye_retargeting_threshold else target
        combined = torch.cat([strack.eye, torch.full_like(strack.eye[:, :1], target)], 1)
        eye_before = K.retarget(nets.retarget.eye, x_s_all, combined)
    d_eye = dtrack.eye[:n] if is_video else np.repeat(dtrack.eye[:1], n, 0)
    d_lip = dtrack.lip[:n] if is_video else np.repeat(dtrack.lip[:1], n, 0)
    x_d_all = finish_keypoints(x_d_all, x_s_all, opts, nets.retarget, strack.eye, strack.lip, lip_before, eye_before,
                               d_eye, d_lip)
    missing_src = {int(i) for i in np.flatnonzero(~strack.present)}
    missing_drv = {i for i in dtrack.missing if i < n} if is_video else set()
    paste = opts.pasteback and opts.do_crop and opts.stitching
    mask_crop = np.asarray(face.paste_mask(CROP_SIZE), np.float32) if paste else None
    def replay_fn(rep: Callable[[int, int], None], intr: Callable[[], None], chunk_size: int) -> Iterator[AnimatedChunk]:
        o = replace(opts, chunk_size=chunk_size) if chunk_size > 0 else opts
        return _video_pass(nets, source, face, o, strack, dtrack, x_s_all, x_d_all, n, is_video, rep, intr, mask_crop)

    return VideoAnimation(n, sorted(missing_src | missing_drv), strack, mask_crop,
                          replay_fn(report, interrupt, 0), replay_fn)


@dataclass
class VideoAnimation(Replayable):
    """Lazy result of :func:`animate_video`: ``n`` output frames, frames passed through, the chunks."""

    n: int
    missing: list[int]
    source: SourceTrack
    mask_crop: np.ndarray | None
    chunks: Iterator[AnimatedChunk]
    replay_fn: ReplayFn | None = None

    def __iter__(self) -> Iterator[AnimatedChunk]:
        return self.chunks

    def face_mask(self, i: int) -> np.ndarray:
        """Paste-back mask of output frame ``i`` in image space (zeros without a face, ones for crops)."""
        m = self.source.M_o2c[i]
        if self.mask_crop is None:
            return np.ones((CROP_SIZE, CROP_SIZE), np.float32)
        if m is None:
            return np.zeros(self.source.hw, np.float32)
        return warp_mask(self.mask_crop, np.linalg.inv(m), self.source.hw)


def _video_pass(nets, source, face, opts, strack, dtrack, x_s_all, x_d_all, n, is_video, report, interrupt, mask_crop):
    paste = mask_crop is not None
    done = 0
    for chunk in iter_driving(source, opts.chunk_size):
        interrupt()
        frames = [_prepared(f, opts, f"source frame {done + i}") for i, f in enumerate(chunk)][: n - done]
        if not frames:
            break
        idx = list(range(done, done + len(frames)))
        use = [j for j, i in enumerate(idx) if strack.present[i] and (dtrack.present[i] if is_video else True)
               or (strack.present[i] and opts.missing_face == "hold")]
        out = np.stack(frames) if paste else np.stack([cv2.resize(f, (CROP_SIZE, CROP_SIZE)) for f in frames])
        crops = np.stack([cv2.resize(f, (CROP_SIZE, CROP_SIZE)) for f in frames])
        if use:
            sel = [idx[j] for j in use]
            src_crops = np.stack([face.warp_to_crop(frames[j], strack.M_o2c[i], CROP_SIZE) for j, i in zip(use, sel)])
            f_s = nets.appearance_feature(nets.to_input(src_crops, area=True), interrupt)
            sel_t = torch.as_tensor(sel, device=x_d_all.device)
            res = nets.to_uint8(nets.warp_decode(f_s, x_s_all[sel_t], x_d_all[sel_t], interrupt))
            if res.shape[1:3] != (CROP_SIZE, CROP_SIZE):
                res = np.stack([cv2.resize(r, (CROP_SIZE, CROP_SIZE)) for r in res])
            for k, (j, i) in enumerate(zip(use, sel)):
                crops[j] = res[k]
                if paste:
                    m_c2o = np.linalg.inv(strack.M_o2c[i])
                    out[j] = face.paste_back(frames[j], res[k], m_c2o, mask_crop)
                else:
                    out[j] = res[k]
        done += len(frames)
        report(done, n)
        yield AnimatedChunk(idx[0], out, crops)
        if done >= n:
            break
