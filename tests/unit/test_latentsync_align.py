"""LatentSync's face alignment: the template, the fitted transform, crops and paste-back, and the
mapping of our 468-point mesh onto the points the reference aligns on, checked on real faces."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comfyui_digitalhuman.engine.latentsync import align as A
from comfyui_digitalhuman.engine.latentsync import pipeline as P
from media_frames import read_frames

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "latentsync" / "reference_parity.npz"

# The reference's mouth mask (latentsync/utils/mask.png, 256 x 256; not in this repository), measured:
# the redrawn (black) region spans rows 95..242 and columns 9..247; its top rows 95..127 are two
# cheek blobs (columns 9..77 and 178..246) that leave the nose between them.
MASK_ROWS = (95 / 256, 242 / 256)
MASK_COLS = (9 / 256, 247 / 256)
NOSE_GAP = ((78 / 256, 177 / 256), (95 / 256, 127 / 256))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX))


@pytest.fixture(scope="module")
def analyzer():
    from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer

    return FaceAnalyzer()


def test_template_sizes_follow_the_resolution():
    t = A.template(512)
    assert t.size == (420, 560) and t.fill == 127
    np.testing.assert_allclose(t.points, [[95.2, 112.0], [324.8, 112.0], [210.0, 224.0]])
    assert A.template(256).size == (210, 280)


def test_points_on_the_template_give_the_template_transform():
    """Points already in template position (any similarity of it) are mapped back onto the template."""
    t = A.template(512)
    ang, s, shift = 0.3, 1.7, np.array([40.0, -12.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = (t.points @ rot.T) * s + shift
    m, bias = A.fit_transform(pts, t, smooth=False)
    mapped = pts @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, t.points, atol=2e-3)  # float32 arithmetic on ~300 px coordinates
    assert bias is None
    # smoothing adds the normalised nose offset template - points (zero for a scaled, shifted template),
    # blended with the previous frame's: 0.2 * previous + 0.8 * current
    plain = t.points * s + shift
    m1, _ = A.fit_transform(plain, t, smooth=False)
    m2, b2 = A.fit_transform(plain, t, smooth=True, p_bias=torch.tensor([1.0, -1.0]))
    np.testing.assert_allclose(m2[:, 2] - m1[:, 2], [0.2, -0.2], atol=1e-4)
    np.testing.assert_allclose(b2.numpy(), [0.2, -0.2], atol=1e-5)
    with pytest.raises(ValueError, match="alignment points coincide"):
        A.fit_transform(np.ones((3, 2)), t)


def test_transforms_and_crops_match_the_reference(ref, testdata):
    """Transforms of a 32-frame face track equal the reference's AlignRestore (float32: identical
    arithmetic, so equal to the last bit here; 1e-3 px leaves room for another BLAS); crops are the
    uint8-truncated bilinear warp then Lanczos: fp32 rounding of the sample weights moves a truncated
    value by one step at some pixels (the reference's kornia grid is computed differently), and the
    Lanczos kernel (gain up to ~1.2) turns that into at most 2."""
    frames = read_frames(testdata / "d20.mp4", 32)
    for res in (512, 256):
        pts = [p.astype(np.float64) for p in ref[f"align{res}_points"]]
        al = P.align_points(pts, res)
        np.testing.assert_allclose(al.matrices, ref[f"align{res}_ref_mats"], atol=1e-3 * max(1, res / 256))
        t = A.template(res)
        for k, i in enumerate((0, 16, 31)):
            step = res // 64  # the fixture keeps a 64 x 64 grid of each crop
            crop = A.warp_face(frames[i], al.matrices[i], t, res)[::step, ::step].astype(int)
            d = np.abs(crop - ref[f"align{res}_ref_crops_sub"][k].astype(int))
            assert d.max() <= 2 and (d > 0).mean() < 0.03, (res, i, d.max(), (d > 0).mean())


def test_paste_back_matches_the_reference(ref, testdata):
    frames = read_frames(testdata / "d20.mp4", 32)
    for res in (512, 256):
        g = torch.Generator().manual_seed(3)
        face = torch.rand(3, res, res, generator=g) * 2 - 1  # the reference check draws the same face
        al = P.align_points([p.astype(np.float64) for p in ref[f"align{res}_points"]], res)
        sums = [A.restore(frames[i], face, al.matrices[i], A.template(res)).astype(np.int64).sum() for i in (0, 16, 31)]
        # uint8 truncation flips at most a few pixels by one step (~0.1 % of values in the reference check)
        assert np.all(np.abs(np.array(sums) - ref[f"align{res}_ref_paste_sum"]) < 2e-3 * frames[0].size)


def _naive_restore(frame, face, m, t):
    """The reference's order of operations over the whole frame (no footprint cut), for comparison."""
    h, w = frame.shape[:2]
    cw, ch = t.size
    face = A.resize_face(face, cw, ch)[None]
    grid = A._sample_grid(m, h, w, ch, cw)
    inside = F.grid_sample(torch.ones_like(face[:, :1]), grid, align_corners=True)
    inv = F.grid_sample(face, grid, align_corners=True) + (1 - inside) * t.fill
    inv = (inv[0] / 2 + 0.5).clamp(0, 1) * 255
    er = A._erode2(inside, 2)
    w_edge = int(float(er.sum()) ** 0.5) // 20
    centre = cv2.erode(er[0, 0].numpy(), np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    soft = A._blur(torch.from_numpy(centre)[None, None], 2 * w_edge + 1, 0.3 * ((2 * w_edge) * 0.5 - 1) + 0.8)[0]
    img = torch.from_numpy(frame).permute(2, 0, 1).float()
    return (soft * er[0] * inv + (1 - soft) * img).permute(1, 2, 0).to(torch.uint8).numpy()


def test_paste_back_on_the_footprint_equals_the_whole_frame_computation(testdata):
    frames = read_frames(testdata / "d20.mp4", 1)
    t = A.template(256)
    g = torch.Generator().manual_seed(5)
    face = torch.rand(3, 256, 256, generator=g) * 2 - 1
    for pts in ([[150.0, 180.0], [300.0, 185.0], [228.0, 260.0]], [[-20.0, 10.0], [90.0, 0.0], [40.0, 70.0]]):
        m, _ = A.fit_transform(np.array(pts), t, smooth=False)  # the second face runs off the frame's corner
        fast = A.restore(frames[0], face, m, t)
        slow = _naive_restore(frames[0], face, m, t)
        d = np.abs(fast.astype(int) - slow.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 1e-3  # fp32 grid rounding only
        # the blend reaches at most ~3 px past the crop's corners (bilinear coverage of one crop pixel at
        # this scale, plus the 2x2 erosion's one-pixel shift); the cut's margin of 4 px covers that
        x0, y0, x1, y1 = A._footprint(A.invert(m), *t.size, frames[0].shape[1], frames[0].shape[0], 3)
        outside = np.ones(frames[0].shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(fast[outside], frames[0][outside]) and np.array_equal(slow[outside], frames[0][outside])


@pytest.mark.parametrize("name,frames_at", [("d20.mp4", (0, 60, 120, 170)), ("yongen.mp4", (0, 100, 200)),
                                            ("s0.jpg", (0,))])
def test_mesh_points_put_the_face_where_the_mask_expects_it(testdata, analyzer, name, frames_at):
    """The mapping test: through our three points, real faces land in the reference's template the way
    its mask assumes: eyes above the redrawn region, lips and chin inside it, the nose tip in the kept
    gap between the cheek blobs."""
    from comfyui_digitalhuman.engine.face.schemes import latentsync_points

    if name.endswith(".jpg"):
        imgs = [cv2.cvtColor(cv2.imread(str(testdata / name)), cv2.COLOR_BGR2RGB)]
    else:
        allf = read_frames(testdata / name, max(frames_at) + 1)
        imgs = [allf[i] for i in frames_at]
    t = A.template(512)
    for img in imgs:
        lm = analyzer.detect(img)[0].landmarks[:, :2].astype(np.float64)
        m, _ = A.fit_transform(np.round(latentsync_points(lm).astype(np.float64)), t, smooth=False)
        crop = (lm @ m[:, :2].T + m[:, 2]) / np.array(t.size)
        eyes = crop[[33, 133, 159, 145, 362, 263, 386, 374]]
        lips = crop[[0, 17, 61, 291, 13, 14, 78, 308]]
        assert eyes[:, 1].max() < MASK_ROWS[0] - 0.03, name
        assert MASK_ROWS[0] + 0.1 < lips[:, 1].min() and lips[:, 1].max() < MASK_ROWS[1] - 0.1, name
        assert MASK_COLS[0] + 0.2 < lips[:, 0].min() and lips[:, 0].max() < MASK_COLS[1] - 0.2, name
        assert MASK_ROWS[0] + 0.2 < crop[152, 1] < MASK_ROWS[1], name  # the chin is redrawn with the mouth
        (gx0, gx1), (gy0, _) = NOSE_GAP
        assert gx0 < crop[4, 0] < gx1 and crop[4, 1] > gy0, name  # nose tip between the cheek blobs
