"""LivePortrait crop transform, warp, paste-back (PSNR, no seam) and the soft mask."""
from __future__ import annotations

import functools

import av
import cv2
import numpy as np
import pytest

from comfyui_digitalhuman.engine.face.align import (PRESETS, crop_liveportrait, make_paste_mask, paste_back,
                                                    warp_to_crop)
from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer
from comfyui_digitalhuman.engine.face.schemes import to_ibug68


@functools.lru_cache(maxsize=1)
def fa():
    return FaceAnalyzer()


def load(testdata, name):
    return cv2.cvtColor(cv2.imread(str(testdata / name)), cv2.COLOR_BGR2RGB)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("preset,dsize", [("liveportrait_source", 512), ("liveportrait_driving", 256)])
def test_crop_follows_liveportrait_rule(testdata, preset, dsize):
    img = load(testdata, "s0.jpg")
    lm = fa().detect(img)[0].landmarks
    p = PRESETS[preset]
    ci = crop_liveportrait(img, lm, dsize=dsize, **p)
    assert ci.crop.shape == (dsize, dsize, 3) and ci.crop.dtype == np.uint8
    assert np.allclose(ci.M_o2c @ ci.M_c2o, np.eye(3), atol=1e-9)
    assert ci.lmk_crop.shape == (468, 2)
    # the 68 points in the crop: 'up' axis (eye centre -> mouth centre) vertical,
    q = to_ibug68(lm).astype(np.float64) @ ci.M_o2c[:2, :2].T + ci.M_o2c[:2, 2]
    eyes = (q[[36, 39]].mean(0) + q[[42, 45]].mean(0)) / 2
    mouth = (q[48] + q[54]) / 2
    assert abs(mouth[0] - eyes[0]) < 1e-6 * dsize
    # their square box has side dsize/scale, and its centre sits vy_ratio*dsize below the crop centre
    lo, hi = q.min(0), q.max(0)
    assert max(hi - lo) == pytest.approx(dsize / p["scale"], rel=1e-6)
    centre = (lo + hi) / 2
    assert centre[0] == pytest.approx(dsize / 2, abs=1e-6)
    assert centre[1] == pytest.approx(dsize / 2 - p["vy_ratio"] * dsize, abs=1e-6)
    # crop pixels are the warp of the image, and landmarks follow the same transform
    assert np.array_equal(ci.crop, warp_to_crop(img, ci.M_o2c, dsize))
    assert np.allclose(ci.lmk_crop, lm[:, :2] @ ci.M_o2c[:2, :2].T + ci.M_o2c[:2, 2], atol=1e-3)


def test_crop_cancels_rotation(testdata):
    img = load(testdata, "s0.jpg")
    m = cv2.getRotationMatrix2D((320, 140), 25, 1.0)
    rot = cv2.warpAffine(img, m, (600, 704))
    a = crop_liveportrait(img, fa().detect(img)[0].landmarks, dsize=256)
    b = crop_liveportrait(rot, fa().detect(rot)[0].landmarks, dsize=256)
    core = (slice(64, 192), slice(64, 192))
    assert psnr(a.crop[core], b.crop[core]) > 24
    flat = crop_liveportrait(rot, fa().detect(rot)[0].landmarks, dsize=256, flag_do_rot=False)
    assert abs(np.degrees(np.arctan2(flat.M_o2c[1, 0], flat.M_o2c[0, 0]))) < 1e-9
    assert abs(np.degrees(np.arctan2(b.M_o2c[1, 0], b.M_o2c[0, 0]))) == pytest.approx(25, abs=3)


@pytest.mark.parametrize("source", ["s0.jpg", "d20.mp4"])
def test_paste_back_of_unmodified_crop_reproduces_frame(testdata, source):
    if source.endswith(".mp4"):
        with av.open(str(testdata / source)) as c:
            img = next(c.decode(video=0)).to_ndarray(format="rgb24")
        p = PRESETS["liveportrait_driving"]
    else:
        img = load(testdata, source)
        p = PRESETS["liveportrait_source"]
    f = fa().detect(img)[0]
    ci = crop_liveportrait(img, f.landmarks, dsize=512, **p)
    out = paste_back(img, ci.crop, ci.M_c2o)
    x0, y0, x1, y1 = f.box.astype(int)
    assert psnr(out[y0:y1, x0:x1], img[y0:y1, x0:x1]) > 40
    assert psnr(out, img) > 40
    # float crops (ComfyUI IMAGE) give the same result
    out_f = paste_back(img, ci.crop.astype(np.float32) / 255.0, ci.M_c2o)
    assert np.abs(out_f.astype(int) - out.astype(int)).max() <= 1


def test_paste_back_changes_only_inside_and_has_no_seam(testdata):
    img = load(testdata, "s0.jpg")
    ci = crop_liveportrait(img, fa().detect(img)[0].landmarks, dsize=256)
    grey = np.full_like(ci.crop, 128)
    out = paste_back(img, grey, ci.M_c2o)
    # footprint of the crop in the frame
    foot = cv2.warpAffine(np.ones((256, 256), np.float32), ci.M_c2o[:2], (600, 704)) > 0
    assert np.array_equal(out[~foot], img[~foot])
    centre = ci.M_c2o[:2] @ np.array([128, 128, 1.0])
    assert np.all(out[int(centre[1]), int(centre[0])] == 128)
    # along the crop border (just inside) the mask is ~0: the frame is untouched -> no seam
    t = np.linspace(2, 253, 200)
    border = np.concatenate([np.stack([t, np.full_like(t, 2)], 1), np.stack([np.full_like(t, 253), t], 1)])
    pts = border @ ci.M_c2o[:2, :2].T + ci.M_c2o[:2, 2]
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < 599) & (pts[:, 1] >= 0) & (pts[:, 1] < 703)].astype(int)
    diff = np.abs(out[pts[:, 1], pts[:, 0]].astype(int) - img[pts[:, 1], pts[:, 0]].astype(int))
    assert diff.max() <= 2
    # feathering blurs the mask further but keeps the centre
    out2 = paste_back(img, grey, ci.M_c2o, feather=8)
    assert np.all(out2[int(centre[1]), int(centre[0])] == 128)


def test_paste_mask_shape():
    m = make_paste_mask(128)
    assert m.shape == (128, 128) and m.dtype == np.float32
    assert m[0].max() == 0 and m[:, -1].max() == 0 and m[64, 64] == 1.0
    row = m[64, :64]
    assert np.all(np.diff(row) >= 0)
    assert m[10, 10] < m[10, 64]  # rounded corners


def test_paste_back_bad_input():
    with pytest.raises(ValueError, match="crop must be square"):
        paste_back(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), np.eye(3))
    with pytest.raises(ValueError, match="mask shape"):
        paste_back(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), np.eye(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="frame must be uint8"):
        paste_back(np.zeros((10, 10), np.uint8), np.zeros((4, 4, 3), np.uint8), np.eye(3))


# M_o2c[:2] computed by LivePortrait's own crop_image (src/utils/crop.py, run once offline) on the
# 68 points that to_ibug68 picks from these seeded points; rounded to 5 decimals (it works in float32).
LP_REFERENCE = {
    (2.3, -0.125, 512): [[-0.05048, -1.11142, 487.75671], [1.11142, -0.05048, 110.31198]],
    (2.2, -0.1, 256): [[-0.02639, -0.58097, 249.14555], [0.58097, -0.02639, 43.99036]],
}


@pytest.mark.parametrize("key", list(LP_REFERENCE))
def test_crop_transform_matches_liveportrait_output(key):
    scale, vy, dsize = key
    pts = np.random.default_rng(7).uniform(100, 300, (468, 3))
    ci = crop_liveportrait(np.zeros((400, 400, 3), np.uint8), pts, dsize=dsize, scale=scale, vy_ratio=vy)
    assert np.allclose(ci.M_o2c[:2], LP_REFERENCE[key], atol=2e-3)
