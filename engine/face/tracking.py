"""Follow one face through a video: pick, track by overlap, smooth, handle missing frames.

* ``pick`` chooses the face on the first frame that has one: ``"largest"`` (the analyzer's
  order: largest box, equal sizes left to right), ``"center"`` (box centre nearest the image
  centre) or an int (index in the analyzer's order). Later frames keep the face that overlaps
  the previous box most (IoU >= :data:`TRACK_IOU`); if none overlaps, the pick rule is applied
  again.
* ``missing``: a frame without a face is listed in ``missing_frames`` and either passed
  through (``"pass"``: ``present`` False, no landmarks - zeros - and ``held`` False) or held
  (``"hold"``: the last good landmarks and box are reused and ``held`` is True; frames before
  the first detection take the first good one). It never stops the run.
* ``smoothing``: strength of the one-euro filter in :mod:`.smoothing` (0 = off); the filter
  restarts after a gap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .smoothing import OneEuroFace
from .types import Face

TRACK_IOU = 0.3


@dataclass
class FaceTrack:
    """Per-frame face data of one person through a video (N frames)."""

    present: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    missing_frames: list[int]
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    frame_sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    # set by the crop node: original -> crop transforms [N,3,3] and the crop size
    M_o2c: np.ndarray | None = None
    crop_size: int | None = None

    def __len__(self) -> int:
        return int(self.present.shape[0])

    @property
    def usable(self) -> np.ndarray:
        """Frames with landmarks to crop from (detected or held)."""
        return self.present | self.held


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def pick_face(faces: list[Face], pick: str | int, frame_hw: tuple[int, int]) -> Face | None:
    """The face chosen by ``pick`` among ``faces`` (in the analyzer's order)."""
    if not faces:
        return None
    if pick == "largest":
        return faces[0]
    if pick == "center":
        c = np.array([frame_hw[1] / 2, frame_hw[0] / 2])
        return min(faces, key=lambda f: float(np.linalg.norm(f.center - c)))
    if isinstance(pick, (int, np.integer)) and not isinstance(pick, bool):
        return faces[int(pick)] if 0 <= int(pick) < len(faces) else None
    raise ValueError(f"pick must be 'largest', 'center' or a face index, got {pick!r}")


def track_faces(frames: Iterable[np.ndarray], analyzer, smoothing: float = 0.5, pick: str | int = "largest",
                missing: str = "pass", progress: Callable[[int, int], None] | None = None,
                check_interrupt: Callable[[], None] | None = None, total: int | None = None) -> FaceTrack:
    """Track one face through ``frames`` (an iterable of chunks [n,H,W,C] or lists of images)."""
    if missing not in ("pass", "hold"):
        raise ValueError(f"missing must be 'pass' or 'hold', got '{missing}'")
    pick_face([], pick, (1, 1))  # validates ``pick``
    flt = OneEuroFace(smoothing)
    present, boxes, lmks, poses, sizes = [], [], [], [], []
    prev_box = None
    done = 0
    for chunk in frames:
        if check_interrupt:
            check_interrupt()
        results = analyzer.detect_batch(chunk)
        for img, faces in zip(chunk, results):
            hw = np.asarray(img).shape[:2]
            face = None
            if faces and prev_box is not None:
                best = max(faces, key=lambda f: _iou(f.box, prev_box))
                if _iou(best.box, prev_box) >= TRACK_IOU:
                    face = best
            if face is None:
                face = pick_face(faces, pick, hw)
            sizes.append(hw)
            if face is None:
                present.append(False)
                boxes.append(np.zeros(4, np.float32))
                lmks.append(np.zeros((468, 3), np.float32))
                poses.append(np.zeros(3, np.float32))
                flt.reset()
                continue
            lm, bx = flt(face.landmarks, face.box)
            prev_box = face.box
            present.append(True)
            boxes.append(bx)
            lmks.append(lm)
            poses.append(np.asarray(face.pose, np.float32))
        done += len(results)
        if progress:
            progress(done, max(total or done, done))
    n = len(present)
    track = FaceTrack(
        present=np.array(present, bool),
        boxes=np.array(boxes, np.float32).reshape(n, 4),
        landmarks=np.array(lmks, np.float32).reshape(n, 468, 3),
        missing_frames=[i for i, p in enumerate(present) if not p],
        held=np.zeros(n, bool),
        poses=np.array(poses, np.float32).reshape(n, 3),
        frame_sizes=np.array(sizes, np.int64).reshape(n, 2),
    )
    if missing == "hold" and track.present.any():
        _hold(track)
    return track


def _hold(track: FaceTrack) -> None:
    """Fill missing frames from the last good frame (leading ones from the first good one)."""
    good = np.nonzero(track.present)[0]
    for i in track.missing_frames:
        src = good[good < i][-1] if (good < i).any() else good[0]
        track.boxes[i] = track.boxes[src]
        track.landmarks[i] = track.landmarks[src]
        track.poses[i] = track.poses[src]
        track.held[i] = True
