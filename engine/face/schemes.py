"""Map the 468 MediaPipe face-mesh points onto what the reference models use.

* :func:`to_ibug68` - the 68-point iBUG/Multi-PIE layout (jaw 0-16 from the image's left to its
  right, brows 17-26, nose bridge 27-30, nostrils 31-35, eyes 36-47, lips 48-67), chosen
  point by point as the mesh vertex at the same anatomical place.
* :func:`eye_open_ratio`, :func:`lip_open_ratio` - LivePortrait's ``calc_eye_close_ratio`` /
  ``calc_lip_close_ratio`` semantics: lid gap / eye width per eye (eye on the image's left
  first, as LivePortrait's landmark order), inner-lip gap / mouth width. Bigger = more open.
* :func:`musetalk_box` - MuseTalk's ``get_landmark_and_bbox`` rule on the 68 points.
* :func:`latentsync_points` - the three points LatentSync aligns on (brow centres, nose
  centre), which it takes from InsightFace's 106 points; here from the same places on the mesh.
"""
from __future__ import annotations

import numpy as np

# iBUG-68 index -> face-mesh index.
IBUG68_FROM_MESH = np.array([
    # jaw, image left -> chin -> image right
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,
    # brows: subject's right (image left) outer -> inner, then left inner -> outer
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge (top -> tip), nostrils (image left -> right)
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # eye on the image's left: outer corner, upper lid (2), inner corner, lower lid (2)
    33, 160, 158, 133, 153, 144,
    # eye on the image's right: inner corner, upper lid (2), outer corner, lower lid (2)
    362, 385, 387, 263, 373, 380,
    # outer lip from the left corner, clockwise on screen
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # inner lip
    78, 82, 13, 312, 308, 317, 14, 87,
], dtype=np.int64)

# (upper lid, lower lid, corner, corner) per eye, image-left eye first.
EYE_POINTS = ((159, 145, 33, 133), (386, 374, 362, 263))
# (upper inner lip, lower inner lip, left corner, right corner)
LIP_POINTS = (13, 14, 61, 291)


def _check(lmk: np.ndarray) -> np.ndarray:
    a = np.asarray(lmk)
    if a.ndim != 2 or a.shape[0] != 468 or a.shape[1] < 2:
        raise ValueError(f"expected face-mesh landmarks [468, 2 or 3], got shape {a.shape}")
    return a


def to_ibug68(lmk468: np.ndarray) -> np.ndarray:
    """The 68 iBUG points [68, 2] (x, y) from face-mesh landmarks."""
    return _check(lmk468)[IBUG68_FROM_MESH, :2].astype(np.float32)


def _ratio(p: np.ndarray, a: int, b: int, c: int, d: int, eps: float = 1e-6) -> float:
    return float(np.linalg.norm(p[a] - p[b]) / (np.linalg.norm(p[c] - p[d]) + eps))


def eye_open_ratio(lmk468: np.ndarray) -> np.ndarray:
    """[2] lid gap / eye width for the eye on the image's left, then on its right."""
    p = _check(lmk468)[:, :2].astype(np.float64)
    return np.array([_ratio(p, *e) for e in EYE_POINTS], np.float32)


def lip_open_ratio(lmk468: np.ndarray) -> np.ndarray:
    """[1] inner-lip gap / mouth width."""
    p = _check(lmk468)[:, :2].astype(np.float64)
    return np.array([_ratio(p, *LIP_POINTS)], np.float32)


def musetalk_box(lmk468: np.ndarray, bbox_shift: int = 0, version: str = "v1", extra_margin: int = 10,
                 frame_height: int | None = None) -> tuple[int, int, int, int]:
    """MuseTalk's face box (x0, y0, x1, y1) from the landmarks.

    On integer 68 points: the box spans the points horizontally and down to the lowest point;
    its top lies as far above the nose point 29 (moved down by ``bbox_shift`` px) as the lowest
    point lies below it, clamped at 0. ``version='v15'`` follows MuseTalk 1.5's inference: the
    shift is fixed to 0 and the bottom is extended by ``extra_margin`` px (clamped to
    ``frame_height`` when given). Raises ValueError where MuseTalk would fall back to the
    detector box (empty box or a point left of the image).
    """
    if version not in ("v1", "v15"):
        raise ValueError(f"version must be 'v1' or 'v15', got '{version}'")
    p = to_ibug68(lmk468).astype(np.int32)
    shift = 0 if version == "v15" else int(bbox_shift)
    mid_y = int(p[29, 1]) + shift
    bottom = int(p[:, 1].max())
    top = max(0, mid_y - (bottom - mid_y))
    x0, x1 = int(p[:, 0].min()), int(p[:, 0].max())
    if bottom - top <= 0 or x1 - x0 <= 0 or x0 < 0:
        raise ValueError(f"landmark box ({x0}, {top}, {x1}, {bottom}) is unusable; use the detector box")
    if version == "v15":
        bottom += int(extra_margin)
        if frame_height is not None:
            bottom = min(bottom, int(frame_height))
    return x0, top, x1, bottom


# LatentSync's alignment points are means of InsightFace 106-point landmarks (its
# ImageProcessor.affine_transform): brows [43, 48, 49, 51, 50] and [101..105], which its own
# 106 -> 68 table puts at iBUG 17-21 and 22-26 (the upper brow contour, end to end), and the nose
# [74, 77, 83, 86]: iBUG 29 and 30 (lower bridge, tip) plus the lowest side point of each nostril
# wing (77, 83 lie on the nose's sides between the bridge points and the nostrils, 78-85). Here
# the same anatomy on the mesh: the iBUG brow points of IBUG68_FROM_MESH, mesh 5 and 4 (iBUG 29,
# 30) and the alae's outermost points 129 / 358.
BROW_POINTS = ((70, 63, 105, 66, 107), (336, 296, 334, 293, 300))
NOSE_POINTS = (5, 4, 129, 358)


def latentsync_points(lmk468: np.ndarray) -> np.ndarray:
    """[3, 2]: centre of the brow on the image's left, of the one on its right, and of the nose
    (LatentSync's alignment points, in the order of its face template). As the reference, each
    landmark is rounded to whole pixels before the means (InsightFace's points are integers there)."""
    p = np.round(_check(lmk468)[:, :2].astype(np.float64))
    pts = [p[list(BROW_POINTS[0])].mean(0), p[list(BROW_POINTS[1])].mean(0), p[list(NOSE_POINTS)].mean(0)]
    return np.array(pts, np.float32)
