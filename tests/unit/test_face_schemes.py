"""468 -> iBUG-68 mapping, LivePortrait eye/lip ratios, MuseTalk's face box."""
from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer
from comfyui_digitalhuman.engine.face.schemes import (EYE_POINTS, LIP_POINTS, eye_open_ratio, lip_open_ratio,
                                                      musetalk_box, to_ibug68)

# iBUG-68 left/right mirror partner of each point (the published layout's symmetry).
MIRROR = list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31] \
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] \
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]


@functools.lru_cache(maxsize=1)
def s0(testdata_path: str):
    img = cv2.cvtColor(cv2.imread(testdata_path + "/s0.jpg"), cv2.COLOR_BGR2RGB)
    fa = FaceAnalyzer()
    return img, fa.detect(img)[0].landmarks, fa.detect(np.ascontiguousarray(img[:, ::-1]))[0].landmarks


def test_ibug68_layout_on_real_face(testdata):
    img, lm, _ = s0(str(testdata))
    p = to_ibug68(lm)
    assert p.shape == (68, 2) and p.dtype == np.float32
    jaw = p[:17]
    assert np.all(np.diff(jaw[:, 0]) > 0), "jaw must run from the image's left to its right"
    assert np.argmax(jaw[:, 1]) == 8, "point 8 is the chin, the lowest jaw point"
    # the jaw points lie on the outline of the face: on the convex hull of the mesh below the eyes
    below = lm[lm[:, 1] > p[36:48, 1].mean(), :2]
    hull = cv2.convexHull(below.astype(np.float32))
    width = float(np.ptp(jaw[:, 0]))
    d = [abs(cv2.pointPolygonTest(hull, (float(x), float(y)), True)) for x, y in jaw[2:15]]
    assert max(d) < 0.03 * width, d
    # brows above eyes above nose tip above mouth above chin
    assert p[17:27, 1].max() < p[36:48, 1].min()
    assert p[36:48, 1].max() < p[30, 1] < p[48:68, 1].min() < p[8, 1]
    assert np.all(np.diff(p[27:31, 1]) > 0), "nose bridge runs downwards"
    assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]
    assert p[[37, 38], 1].mean() < p[[40, 41], 1].mean() and p[[43, 44], 1].mean() < p[[46, 47], 1].mean()
    assert p[48, 0] < p[51, 0] < p[54, 0] and p[51, 1] < p[62, 1] <= p[66, 1] < p[57, 1]
    assert np.all(np.diff(p[31:36, 0]) > 0) and np.all(np.diff(p[17:22, 0]) > 0) and np.all(np.diff(p[22:27, 0]) > 0)


def test_ibug68_mirror_symmetry(testdata):
    """Landmarks of the mirrored picture, mapped, equal the mirrored mapping with partners swapped."""
    img, lm, lm_flip = s0(str(testdata))
    w = img.shape[1]
    a = to_ibug68(lm)
    b = to_ibug68(lm_flip)
    b[:, 0] = w - b[:, 0]
    iod = np.linalg.norm(a[36] - a[45])
    err = np.linalg.norm(a - b[MIRROR], axis=1)
    assert err.mean() < 0.04 * iod and err.max() < 0.12 * iod, (err.mean(), err.max(), iod)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"expected face-mesh landmarks \[468, 2 or 3\], got shape \(68, 2\)"):
        to_ibug68(np.zeros((68, 2)))


def test_ratios_against_definition():
    rng = np.random.default_rng(1)
    lm = rng.uniform(0, 100, (468, 3))
    (u0, l0, c0, c1), (u1, l1, c2, c3) = EYE_POINTS
    lm[[c0, c1, u0, l0], :2] = [[10, 50], [40, 50], [25, 45], [25, 53]]  # image-left eye: gap 8, width 30
    lm[[c2, c3, u1, l1], :2] = [[60, 50], [90, 56], [75, 50], [75, 52]]  # image-right eye: gap 2, width sqrt(936)
    r = eye_open_ratio(lm)
    assert r.shape == (2,)
    assert r[0] == pytest.approx(8 / 30, rel=1e-5) and r[1] == pytest.approx(2 / np.sqrt(900 + 36), rel=1e-5)
    up, lo, ml, mr = LIP_POINTS
    lm[[up, lo, ml, mr], :2] = [[50, 80], [50, 92], [30, 85], [70, 85]]
    assert lip_open_ratio(lm) == pytest.approx([12 / 40], rel=1e-5)
    # the LivePortrait point pairs: lids/inner lips over corners, eye on the image's left first
    assert EYE_POINTS[0][2:] == (33, 133) and LIP_POINTS == (13, 14, 61, 291)


def test_lip_ratio_open_vs_closed_mouth(testdata):
    import av

    with av.open(str(testdata / "d20.mp4")) as c:
        fr = [f.to_ndarray(format="rgb24") for i, f in zip(range(42), c.decode(video=0))]
    fa = FaceAnalyzer()
    closed, opened = fa.detect_batch(np.stack([fr[0], fr[40]]))
    assert lip_open_ratio(opened[0].landmarks)[0] > 3 * lip_open_ratio(closed[0].landmarks)[0]


def musetalk_reference(p68: np.ndarray, shift: int) -> tuple[int, int, int, int]:
    """MuseTalk's rule written out from its description, on integer points."""
    q = [(int(x), int(y)) for x, y in p68]
    nose_y = q[29][1] + shift
    low = max(y for _, y in q)
    top = nose_y - (low - nose_y)
    if top < 0:
        top = 0
    return min(x for x, _ in q), top, max(x for x, _ in q), low


@pytest.mark.parametrize("shift", [0, -7, 12])
def test_musetalk_box_rule(testdata, shift):
    _, lm, _ = s0(str(testdata))
    got = musetalk_box(lm, bbox_shift=shift)
    assert got == musetalk_reference(to_ibug68(lm), shift)
    base = musetalk_box(lm)
    assert got[1] == base[1] + 2 * shift and got[3] == base[3]  # the top moves twice the shift


def test_musetalk_box_v15_and_errors(testdata):
    _, lm, _ = s0(str(testdata))
    v1 = musetalk_box(lm)
    assert musetalk_box(lm, bbox_shift=9, version="v15") == (v1[0], v1[1], v1[2], v1[3] + 10)
    assert musetalk_box(lm, version="v15", frame_height=v1[3] + 4)[3] == v1[3] + 4
    bad = lm.copy()
    bad[:, 0] -= bad[:, 0].max() - 5  # face runs off the image's left edge
    with pytest.raises(ValueError, match="use the detector box"):
        musetalk_box(bad)
    with pytest.raises(ValueError, match="version must be"):
        musetalk_box(lm, version="v2")


def test_latentsync_points(testdata):
    """The mesh stands in for InsightFace's 106 points: brow centres are the means of the iBUG brow
    points (the 106-point indices the reference averages are its iBUG 17-21 / 22-26), the nose centre
    lies between the lower bridge (iBUG 29) and the nostrils, on the nose's midline."""
    from comfyui_digitalhuman.engine.face.schemes import latentsync_points

    _, lm, _ = s0(str(testdata))
    p68 = np.round(to_ibug68(lm).astype(np.float64))
    q = latentsync_points(lm)
    assert q.shape == (3, 2)
    np.testing.assert_allclose(q[0], p68[17:22].mean(0), atol=1e-4)
    np.testing.assert_allclose(q[1], p68[22:27].mean(0), atol=1e-4)
    assert p68[29, 1] < q[2, 1] < p68[33, 1]  # below the lower bridge, above the nostrils' base
    assert abs(q[2, 0] - p68[30, 0]) < 0.05 * (p68[45, 0] - p68[36, 0])  # on the midline
    assert q[0, 0] < q[2, 0] < q[1, 0]
    assert np.array_equal(q * 20, np.round(q * 20))  # means of whole-pixel points, as the reference's
