"""Options of a LivePortrait animation, with the reference command line's defaults.

Names follow the reference's ``argument_config.py`` without the ``flag_`` prefix. The only
default that differs in the pack is the node's expression strength (``driving_multiplier`` 0.8
in the node; the engine keeps the reference's 1.0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

DRIVING_OPTIONS = ("expression-friendly", "pose-friendly")
ANIMATION_REGIONS = ("all", "exp", "pose", "lip", "eyes")


@dataclass
class AnimateOptions:
    relative_motion: bool = True
    driving_option: str = "expression-friendly"
    driving_multiplier: float = 1.0
    animation_region: str = "all"
    stitching: bool = True
    eye_retargeting: bool = False
    lip_retargeting: bool = False
    normalize_lip: bool = False
    source_video_eye_retargeting: bool = False  # source video: keep every frame's eye openness at frame 0's
    driving_smooth_observation_variance: float = 3e-7  # source video: Kalman smoothing of the motion
    pasteback: bool = True
    do_crop: bool = True
    crop_driving_video: bool = False
    # source crop
    det_thresh: float = 0.15
    scale: float = 2.3
    vx_ratio: float = 0.0
    vy_ratio: float = -0.125
    do_rot: bool = True
    source_max_dim: int = 1280
    source_division: int = 2
    # driving crop
    scale_crop_driving_video: float = 2.2
    vx_ratio_crop_driving_video: float = 0.0
    vy_ratio_crop_driving_video: float = -0.1
    # not on the reference's command line, fixed there
    lip_normalize_threshold: float = 0.03
    source_video_eye_retargeting_threshold: float = 0.18
    # pack additions
    missing_face: str = "pass"  # driving frame without a face: "pass" (source unchanged) or "hold" (last motion)
    chunk_size: int = 8

    def __post_init__(self) -> None:
        if self.driving_option not in DRIVING_OPTIONS:
            raise ValueError(f"driving_option '{self.driving_option}' is not one of {DRIVING_OPTIONS}")
        if self.animation_region not in ANIMATION_REGIONS:
            raise ValueError(f"animation_region '{self.animation_region}' is not one of {ANIMATION_REGIONS}")
        if self.missing_face not in ("pass", "hold"):
            raise ValueError(f"missing_face '{self.missing_face}' must be 'pass' or 'hold'")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.source_max_dim < 64 or self.source_division < 1:
            raise ValueError("source_max_dim must be >= 64 and source_division >= 1")

    @classmethod
    def from_dict(cls, values: dict) -> "AnimateOptions":
        """Build from a dict (unknown keys are an error naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LivePortrait option(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)
