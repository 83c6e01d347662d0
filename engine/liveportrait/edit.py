"""Still-portrait editing: eye/lip retargeting, expression sliders, and an expression copied from a sample.

The sliders are those of the reference's own editor (``gradio_pipeline.execute_image_retargeting``):
each adds fixed offsets to a few expression coefficients of the source, the head pose is changed
relative to the source pose, then eye/lip retargeting and stitching apply. The driven keypoints
keep that editor's formulation ``mov_z * scale * (kp @ R + exp') + t``.

What AdvancedLivePortrait's editor adds is here too, with its numbers: ``src_ratio`` scales the
source's own expression (0: neutral) but keeps keypoint 5, the global offset; a sample face adds
its expression coefficients (all, or only the mouth or eye keypoints) and/or its head angles,
times ``sample_ratio``. Where we differ on purpose: AdvancedLivePortrait also turns the head when
``wink`` (roll and yaw) or ``aaa`` (pitch) move; here only the pose sliders and a sample's
rotation move the head, so with them at zero the head rotation is exactly the source's and an
expression edit never moves the head.

Sign of ``blink``: keypoint y grows downwards in the crop (the warp reads keypoints in
``grid_sample``'s convention), and the offsets move keypoints 11 and 15 by ``-0.001 * blink`` and
13 and 16 by ``+0.0003 * blink`` in y; a negative value therefore moves the upper and lower lid
points towards each other and closes the eyes, a positive one opens them wider.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import keypoints as K
from .animate import PreparedSource, crop_face, prepare_source, render
from .faces import FaceOps
from .options import AnimateOptions
from .runtime import LivePortraitNets

# slider: (min, max) as the reference's editor offers them
SLIDER_RANGES: dict[str, tuple[float, float]] = {
    "smile": (-0.3, 1.3), "wink": (0.0, 39.0), "blink": (-31.5, 31.5), "eyebrow": (-30.0, 30.0),
    "pupil_x": (-30.0, 30.0), "pupil_y": (-63.0, 63.0), "pout": (-0.09, 0.09), "woo": (-20.0, 15.0),
    "eee": (0.0, 15.0), "aaa": (-90.0, 120.0), "head_pitch": (-15.0, 15.0), "head_yaw": (-25.0, 25.0),
    "head_roll": (-15.0, 15.0), "mov_x": (-0.19, 0.19), "mov_y": (-0.19, 0.19), "mov_z": (0.9, 1.2),
}
# how much of the source's own expression, and of the sample's, is used (AdvancedLivePortrait's ranges)
RATIO_RANGES: dict[str, tuple[float, float]] = {"src_ratio": (0.0, 1.0), "sample_ratio": (-0.2, 1.2)}
# what a sample image contributes: its whole expression, its head angles, the mouth or eye keypoints only, or all
SAMPLE_PARTS = ("expression", "rotation", "mouth", "eyes", "all")
MOUTH_KP = (14, 17, 19, 20)
EYES_KP = (1, 2, 11, 13, 15, 16)
GLOBAL_KP = 5  # the expression keypoint that carries the global offset (kept by src_ratio, zeroed in a sample)


@dataclass
class Expression:
    """One expression edit. ``eyes_open``/``lips_open``: target ratios (None keeps the source's)."""

    smile: float = 0.0
    wink: float = 0.0
    blink: float = 0.0  # the eyelid part of the reference's vertical gaze slider, on its own: < 0 closes the eyes
    eyebrow: float = 0.0
    pupil_x: float = 0.0
    pupil_y: float = 0.0
    pout: float = 0.0  # reference "pouting"
    woo: float = 0.0  # reference "pursing"
    eee: float = 0.0  # reference "grin"
    aaa: float = 0.0  # reference "lip close <-> open"
    head_pitch: float = 0.0
    head_yaw: float = 0.0
    head_roll: float = 0.0
    mov_x: float = 0.0
    mov_y: float = 0.0
    mov_z: float = 1.0
    eyes_open: float | None = None
    lips_open: float | None = None
    src_ratio: float = 1.0  # share of the source's own expression (keypoint 5 always kept)
    sample_ratio: float = 1.0  # weight of the sample image's contribution (when one is given)
    sample_parts: str = "expression"  # one of SAMPLE_PARTS

    def validate(self) -> "Expression":
        for name, (lo, hi) in {**SLIDER_RANGES, **RATIO_RANGES}.items():
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) or v < lo - 1e-9 or v > hi + 1e-9:
                raise ValueError(f"expression slider '{name}' = {v} is outside [{lo}, {hi}]")
        if self.sample_parts not in SAMPLE_PARTS:
            raise ValueError(f"'sample_parts' = {self.sample_parts!r}: expected one of {list(SAMPLE_PARTS)}")
        for name in ("eyes_open", "lips_open"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 0.8:
                raise ValueError(f"'{name}' target {v} is outside [0, 0.8]")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "preset") -> "Expression":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object of slider values")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown expression field(s) {unknown}")
        return cls(**data).validate()


def save_preset(expr: Expression, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(expr.validate().to_json(), encoding="utf-8")
    return path


def load_preset(path: str | Path) -> Expression:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expression preset not found: {path}")
    return Expression.from_json(path.read_text(encoding="utf-8"), str(path))


def _gaze(d: torch.Tensor, x: float, y: float, blink: float) -> None:
    if x > 0:
        d[0, 11, 0] += x * 0.0007
        d[0, 15, 0] += x * 0.001
    else:
        d[0, 11, 0] += x * 0.001
        d[0, 15, 0] += x * 0.0007
    d[0, 11, 1] += y * -0.001
    d[0, 15, 1] += y * -0.001
    d[0, 11, 1] += blink * -0.001
    d[0, 13, 1] += blink * 0.0003
    d[0, 15, 1] += blink * -0.001
    d[0, 16, 1] += blink * 0.0003


def apply_sliders(exp: torch.Tensor, e: Expression) -> torch.Tensor:
    """Source expression ``[1,21,3]`` with the slider offsets added, in the reference's order."""
    d = exp.clone()
    if e.pupil_x or e.pupil_y or e.blink:
        _gaze(d, e.pupil_x, e.pupil_y, -e.pupil_y / 2.0 + e.blink)
    if e.smile:
        for (k, c), w in (((20, 1), -0.01), ((14, 1), -0.02), ((17, 1), 0.0065), ((17, 2), 0.003),
                          ((13, 1), -0.00275), ((16, 1), -0.00275), ((3, 1), -0.0035), ((7, 1), -0.0035)):
            d[0, k, c] += e.smile * w
    if e.wink:
        for (k, c), w in (((11, 1), 0.001), ((13, 1), -0.0003), ((17, 0), 0.0003), ((17, 1), 0.0003),
                          ((3, 1), -0.0003)):
            d[0, k, c] += e.wink * w
    if e.eyebrow > 0:
        d[0, 1, 1] += e.eyebrow * 0.001
        d[0, 2, 1] += e.eyebrow * -0.001
    elif e.eyebrow < 0:
        d[0, 1, 0] += e.eyebrow * -0.001
        d[0, 2, 0] += e.eyebrow * 0.001
        d[0, 1, 1] += e.eyebrow * 0.0003
        d[0, 2, 1] += e.eyebrow * -0.0003
    if e.pout:
        d[0, 19, 0] += e.pout
    if e.woo:
        for (k, c), w in (((14, 1), 0.001), ((3, 1), -0.0005), ((7, 1), -0.0005), ((17, 2), -0.0005)):
            d[0, k, c] += e.woo * w
    if e.eee:
        for (k, c), w in (((20, 2), -0.001), ((20, 1), -0.001), ((14, 1), -0.001)):
            d[0, k, c] += e.eee * w
    if e.aaa:
        for (k, c), w in (((19, 1), 0.001), ((19, 2), 0.0001), ((17, 1), -0.0001)):
            d[0, k, c] += e.aaa * w
    if e.mov_x:
        d[0, 5, 0] += -e.mov_x
    if e.mov_y:
        d[0, 5, 1] += e.mov_y
    return d


def sample_keypoints(nets: LivePortraitNets, image: np.ndarray, face: FaceOps,
                     opts: AnimateOptions | None = None) -> K.KeypointInfo:
    """Pose and expression of a sample face, found and cropped exactly as the source portrait is.

    Only the motion extractor runs (no appearance volume). No face: :class:`NoFaceError` naming ``sample_image``.
    """
    _, crop, _, _ = crop_face(image, face, opts or AnimateOptions(), "sample_image")
    return nets.keypoint_info(nets.to_input(crop, area=True))


def mixed_expression(info: K.KeypointInfo, e: Expression, sample: K.KeypointInfo | None = None
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Expression ``[1,21,3]`` before the slider offsets, and the target head angles (pitch, yaw, roll) in degrees.

    The source's expression times ``src_ratio`` (keypoint 5 kept whole), plus the sample's part times
    ``sample_ratio``, as AdvancedLivePortrait adds them: "expression" and "all" add the sample's
    coefficients with keypoint 5's x/y zeroed, "mouth"/"eyes" those of :data:`MOUTH_KP`/:data:`EYES_KP`
    only; "rotation" and "all" add the sample's head angles to the pose (a frontal sample turns nothing).
    """
    exp = info.exp * e.src_ratio
    exp[:, GLOBAL_KP] = info.exp[:, GLOBAL_KP]
    pitch, yaw, roll = info.pitch + e.head_pitch, info.yaw + e.head_yaw, info.roll + e.head_roll
    if sample is not None:
        r, part = e.sample_ratio, e.sample_parts
        s_exp = sample.exp.to(exp)
        if part in ("expression", "all"):
            s_exp = s_exp.clone()
            s_exp[:, GLOBAL_KP, :2] = 0
            exp = exp + s_exp * r
        elif part in ("mouth", "eyes"):
            idx = list(MOUTH_KP if part == "mouth" else EYES_KP)
            exp[:, idx] += s_exp[:, idx] * r
        if part in ("rotation", "all"):
            pitch, yaw, roll = (pitch + sample.pitch.to(pitch) * r, yaw + sample.yaw.to(yaw) * r,
                                roll + sample.roll.to(roll) * r)
    return exp, (pitch, yaw, roll)


def edited_keypoints(src: PreparedSource, e: Expression, retarget_nets: torch.nn.Module | None,
                     stitching: bool = True, sample: K.KeypointInfo | None = None) -> torch.Tensor:
    """Driven keypoints ``[1,21,3]`` of one expression edit of the source (``sample``: see :func:`mixed_expression`)."""
    e.validate()
    s = src.motion.info
    exp, (pitch, yaw, roll) = mixed_expression(s, e, sample)
    r_s = s.rotation
    r_d = K.rotation_matrix(pitch, yaw, roll)
    rot = (r_d @ r_s.permute(0, 2, 1)) @ r_s
    delta = apply_sliders(exp, e)
    x = e.mov_z * s.scale[..., None] * (s.kp @ rot + delta) + s.t[:, None, :]
    x_s = src.motion.x_s
    if retarget_nets is not None and e.eyes_open is not None:
        ratio = torch.cat([src.motion.eye_ratio, torch.tensor([[float(e.eyes_open)]], device=x.device)], 1)
        x = x + K.retarget(retarget_nets.eye, x_s, ratio)
    if retarget_nets is not None and e.lips_open is not None:
        ratio = torch.cat([src.motion.lip_ratio, torch.tensor([[float(e.lips_open)]], device=x.device)], 1)
        x = x + K.retarget(retarget_nets.lip, x_s, ratio)
    if stitching and retarget_nets is not None:
        x = K.stitch(retarget_nets.stitching, x_s, x)
    return x


def edit_portrait(nets: LivePortraitNets, src: PreparedSource, expressions: list[Expression], face: FaceOps,
                  stitching: bool = True, sample: K.KeypointInfo | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render each expression of the prepared source: (frames pasted into the portrait, 512 crops)."""
    if not expressions:
        raise ValueError("no expression to render")
    x_d = torch.cat([edited_keypoints(src, e, nets.retarget, stitching, sample) for e in expressions])
    return render(nets, src, x_d, face)


def edit_image(nets: LivePortraitNets, image: np.ndarray, expressions: list[Expression], face: FaceOps,
               opts: AnimateOptions | None = None, stitching: bool = True,
               sample_image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Edit a still portrait in one call: (frames pasted into the portrait, 512 crops).

    The sample (if any) is analysed first, so a sample without a face fails before the portrait's
    appearance volume is computed.
    """
    opts = opts or AnimateOptions()
    sample = sample_keypoints(nets, sample_image, face, opts) if sample_image is not None else None
    src = prepare_source(nets, image, face, opts)
    return edit_portrait(nets, src, expressions, face, stitching, sample)
