"""Face boxes for MuseTalk from this pack's face-analysis engine (no mmpose, no DWPose, no S3FD).

The face engine tracks the 468 face-mesh points; ``engine.face.schemes.musetalk_box`` maps them
onto the 68 points MuseTalk's box rule uses. Where the rule gives an unusable box, MuseTalk falls
back to the detector's box; here the tracked face box is used the same way.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

Box = tuple[int, int, int, int]


def boxes_from_landmarks(landmarks: np.ndarray, present: Sequence[bool], fallback: np.ndarray | None = None,
                         bbox_shift: int = 0, box_rule: Callable[..., Box] | None = None) -> list[Box | None]:
    """MuseTalk box per frame (None where no face) from ``landmarks [N,468,3]``; ``box_rule`` defaults to
    ``engine.face.schemes.musetalk_box`` (v1 rule with ``bbox_shift``; the 10 px margin is added later)."""
    if box_rule is None:
        from ..face.schemes import musetalk_box as box_rule
    out: list[Box | None] = []
    for i, ok in enumerate(present):
        if not ok:
            out.append(None)
            continue
        try:
            out.append(tuple(int(v) for v in box_rule(landmarks[i], bbox_shift)))
        except ValueError:
            out.append(None if fallback is None else tuple(int(v) for v in fallback[i]))
    return out


def track_boxes(frames: np.ndarray, bbox_shift: int = 0, analyzer=None, chunk: int = 16,
                progress: Callable[[int, int], None] | None = None,
                check_interrupt: Callable[[], None] | None = None) -> list[Box | None]:
    """Detect and track the face in uint8 ``frames [N,H,W,3]`` and return MuseTalk boxes (None = no face)."""
    from ..face.analyzer import FaceAnalyzer
    from ..face.tracking import track_faces

    analyzer = analyzer or FaceAnalyzer()
    chunks: Iterable[np.ndarray] = (frames[i:i + chunk] for i in range(0, len(frames), chunk))
    track = track_faces(chunks, analyzer, missing="pass", progress=progress, check_interrupt=check_interrupt)
    return boxes_from_landmarks(track.landmarks, track.present, track.boxes, bbox_shift)
