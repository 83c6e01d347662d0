"""Still-portrait editing: eye/lip retargeting and expression sliders.

The sliders are those of the reference's own editor (``gradio_pipeline.execute_image_retargeting``):
each adds fixed offsets to a few expression coefficients of the source, the head pose is changed
relative to the source pose, then eye/lip retargeting and stitching apply. With the pose sliders
at zero the head rotation is exactly the source's, so an expression edit never moves the head.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import keypoints as K
from .animate import PreparedSource, render
from .faces import FaceOps
from .runtime import LivePortraitNets

# slider: (min, max) as the reference's editor offers them
SLIDER_RANGES: dict[str, tuple[float, float]] = {
    "smile": (-0.3, 1.3), "wink": (0.0, 39.0), "blink": (-31.5, 31.5), "eyebrow": (-30.0, 30.0),
    "pupil_x": (-30.0, 30.0), "pupil_y": (-63.0, 63.0), "pout": (-0.09, 0.09), "woo": (-20.0, 15.0),
    "eee": (0.0, 15.0), "aaa": (-90.0, 120.0), "head_pitch": (-15.0, 15.0), "head_yaw": (-25.0, 25.0),
    "head_roll": (-15.0, 15.0), "mov_x": (-0.19, 0.19), "mov_y": (-0.19, 0.19), "mov_z": (0.9, 1.2),
}


@dataclass
class Expression:
    """One expression edit. ``eyes_open``/``lips_open``: target ratios (None keeps the source's)."""

    smile: float = 0.0
    wink: float = 0.0
    blink: float = 0.0  # the eye-closing part of the reference's vertical gaze slider, on its own
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

    def validate(self) -> "Expression":
        for name, (lo, hi) in SLIDER_RANGES.items():
            v = getattr(self, name)
            if not np.isfinite(v) or v < lo - 1e-9 or v > hi + 1e-9:
                raise ValueError(f"expression slider '{name}' = {v} is outside [{lo}, {hi}]")
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


def edited_keypoints(src: PreparedSource, e: Expression, retarget_nets: torch.nn.Module | None,
                     stitching: bool = True) -> torch.Tensor:
    """Driven keypoints ``[1,21,3]`` of one expression edit of the source."""
    e.validate()
    s = src.motion.info
    r_s = s.rotation
    r_d = K.rotation_matrix(s.pitch + e.head_pitch, s.yaw + e.head_yaw, s.roll + e.head_roll)
    rot = (r_d @ r_s.permute(0, 2, 1)) @ r_s
    delta = apply_sliders(s.exp, e)
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
                  stitching: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render each expression of the prepared source: (frames pasted into the portrait, 512 crops)."""
    if not expressions:
        raise ValueError("no expression to render")
    x_d = torch.cat([edited_keypoints(src, e, nets.retarget, stitching) for e in expressions])
    return render(nets, src, x_d, face)
