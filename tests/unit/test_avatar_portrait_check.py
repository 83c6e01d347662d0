"""Decision logic of the portrait check on synthetic faces and images."""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from comfyui_digitalhuman.engine.avatar import portrait_check as pc


@dataclass
class FakeFace:
    """Same fields as engine.face.types.Face (the face contract)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    pose: tuple[float, float, float]


def make_face(box, pose=(0.0, 0.0, 0.0), chin=None) -> FakeFace:
    box = np.asarray(box, np.float32)
    lmk = np.zeros((468, 3), np.float32)
    lmk[:, 0] = (box[0] + box[2]) / 2
    lmk[:, 1] = (box[1] + box[3]) / 2
    lmk[pc.CHIN, 1] = box[3] if chin is None else chin
    return FakeFace(box, 0.95, lmk, pose)


def portrait(h=640, w=512, box=(196, 120, 316, 270), bg=200, seed=0) -> np.ndarray:
    """Plain background, textured (sharp) face in ``box``, a darker body below it."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), bg, np.uint8)
    x0, y0, x1, y1 = box
    img[y1:, max(0, x0 - 80):min(w, x1 + 80)] = (60, 60, 90)  # shoulders
    img[y0:y1, x0:x1] = rng.integers(90, 220, size=(y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return img


GOOD_BOX = (196, 120, 316, 270)


def test_good_portrait_passes():
    rep = pc.evaluate_portrait(portrait(), [make_face(GOOD_BOX)])
    assert rep.passed, rep.text()
    assert rep.reasons == [] and rep.num_faces == 1
    assert rep.text().startswith("PASS")
    assert rep.get("face size").value == pytest.approx(150 / 640)
    assert rep.get("face centre x").value == pytest.approx(0.5)
    assert rep.get("shoulders").value == pytest.approx((640 - 270) / 150)


def test_no_face():
    rep = pc.evaluate_portrait(portrait(), [])
    assert not rep.passed
    assert rep.reasons == ["no face found"]
    assert "no face" in rep.text().splitlines()[0]
    assert rep.get("yaw").status == pc.SKIP


def test_two_faces_fail_but_largest_is_checked():
    rep = pc.evaluate_portrait(portrait(), [make_face(GOOD_BOX), make_face((10, 10, 40, 40))])
    assert not rep.passed
    assert rep.reasons == ["2 faces found, expected exactly 1 (the largest was checked)"]
    assert rep.get("face size").status == pc.PASS


@pytest.mark.parametrize("pose,failed,word", [
    ((30.0, 0.0, 0.0), "yaw", "turned sideways"),
    ((-25.0, 0.0, 0.0), "yaw", "turned sideways"),
    ((0.0, 22.0, 0.0), "pitch", "up or down"),
    ((0.0, 0.0, -16.0), "roll", "towards a shoulder"),
])
def test_pose_limits(pose, failed, word):
    rep = pc.evaluate_portrait(portrait(), [make_face(GOOD_BOX, pose=pose)])
    assert not rep.passed
    assert [c.name for c in rep.checks if c.status == pc.FAIL] == [failed]
    assert word in rep.reasons[0]


def test_pose_within_limits_passes():
    rep = pc.evaluate_portrait(portrait(), [make_face(GOOD_BOX, pose=(19.0, -19.0, 14.0))])
    assert rep.passed, rep.text()


def test_full_body_small_face_fails_framing():
    box = (236, 150, 276, 200)  # 50 px face in a 640 px image: a full-body shot
    rep = pc.evaluate_portrait(portrait(box=box), [make_face(box)])
    assert not rep.passed
    assert any("face too small" in r for r in rep.reasons)
    assert all(r.startswith("framing") for r in rep.reasons), rep.reasons


def test_half_body_fails_for_too_much_below_chin():
    box = (196, 100, 316, 230)  # a face big enough, but 3.2 face heights of body below the chin
    rep = pc.evaluate_portrait(portrait(box=box), [make_face(box, chin=228.0)])
    c = rep.get("shoulders")
    assert c.status == pc.FAIL and c.value == pytest.approx((640 - 228) / 130)
    assert rep.reasons == ["framing: too much body below the chin (3.2 face heights); crop to head and shoulders"]


def test_close_up_without_shoulders_fails():
    box = (56, 40, 456, 600)
    rep = pc.evaluate_portrait(portrait(box=box), [make_face(box)])
    names = {c.name for c in rep.checks if c.status == pc.FAIL}
    assert {"face size", "shoulders"} <= names
    assert any("without shoulders" in r for r in rep.reasons)


def test_off_centre_and_low_face():
    box = (20, 440, 140, 590)
    rep = pc.evaluate_portrait(portrait(box=box), [make_face(box)])
    names = {c.name for c in rep.checks if c.status == pc.FAIL}
    assert {"face centre x", "face centre y", "shoulders"} <= names
    assert any("off-centre" in r for r in rep.reasons) and any("too low" in r for r in rep.reasons)


def test_resolution_warn_and_fail():
    box = (110, 60, 190, 150)
    rep = pc.evaluate_portrait(portrait(h=360, w=300, box=box), [make_face(box)])
    assert rep.get("resolution").status == pc.WARN and rep.passed, rep.text()
    assert "512 px or more recommended" in rep.warnings[0]
    box = (80, 40, 120, 90)
    rep = pc.evaluate_portrait(portrait(h=240, w=200, box=box), [make_face(box)])
    assert rep.get("resolution").status == pc.FAIL
    assert any("image too small" in r for r in rep.reasons)


def test_blurred_face_fails():
    img = portrait()
    x0, y0, x1, y1 = GOOD_BOX
    img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), 6)
    rep = pc.evaluate_portrait(img, [make_face(GOOD_BOX)])
    assert rep.get("sharpness").status == pc.FAIL
    assert [r for r in rep.reasons if r.startswith("blur")]


def test_sharpness_matches_analytic_value():
    # alternating 0/255 columns: the 4-neighbour Laplacian is +-510 everywhere, so its variance is 510^2
    img = np.zeros((300, 300, 3), np.uint8)
    img[:, 0::2] = 255
    assert pc.face_sharpness(img, np.array([20, 22, 84, 278.0])) == pytest.approx(510.0 ** 2)
    assert pc.face_sharpness(np.full((300, 300, 3), 77, np.uint8), np.array([20, 22, 84, 278.0])) == 0.0


def test_background_mask_against_hand_built():
    m = pc.background_mask((20, 10), np.array([4, 5, 6, 10.0]), chin=10.0, strip=0.2)
    exp = np.zeros((20, 10), bool)
    exp[:10, :2] = True
    exp[:10, 8:] = True
    exp[:4, :] = True
    exp[4:10, 3:6] = False  # face box grown by 20 %: x 3.6..6.4 -> 3..6, y 4..10
    np.testing.assert_array_equal(m, exp)


def test_busy_background_fails_and_values_match_numpy():
    rng = np.random.default_rng(1)
    img = portrait()
    noise = rng.integers(0, 256, size=img.shape, dtype=np.uint8)
    face = make_face(GOOD_BOX)
    mask = pc.background_mask(img.shape[:2], np.asarray(face.box, float), 270.0, 0.1)
    img[mask] = noise[mask]
    rep = pc.evaluate_portrait(img, [face])
    c = rep.get("background colour spread")
    assert c.status == pc.FAIL
    assert c.value == pytest.approx(img[mask].astype(float).std(axis=0).mean())
    assert any("background not plain" in r for r in rep.reasons)


def test_mild_background_only_warns():
    img = portrait()
    face = make_face(GOOD_BOX)
    mask = pc.background_mask(img.shape[:2], np.asarray(face.box, float), 270.0, 0.1)
    grad = np.zeros(img.shape[:2], np.uint8)
    grad[:, :] = np.linspace(60, 250, img.shape[1]).astype(np.uint8)[None, :]  # smooth: no edges
    img[mask] = np.repeat(grad[..., None], 3, axis=2)[mask]
    rep = pc.evaluate_portrait(img, [face])
    assert rep.get("background colour spread").status == pc.WARN
    assert rep.get("background edges").status == pc.PASS
    assert rep.passed


def test_check_portrait_uses_analyzer_and_cropper():
    img = portrait()
    face = make_face(GOOD_BOX)
    calls = {}

    class Analyzer:
        def detect(self, image):
            calls["detect"] = image.shape
            return [face]

    def cropper(image, lmk, dsize=512):
        calls["crop"] = (lmk.shape, dsize)
        return SimpleNamespace(crop=np.zeros((dsize, dsize, 3), np.uint8), M_o2c=np.eye(3))

    rep = pc.check_portrait(img, Analyzer(), cropper=cropper, crop_size=256)
    assert calls == {"detect": (640, 512, 3), "crop": ((468, 3), 256)}
    assert rep.passed and rep.crop.shape == (256, 256, 3) and rep.crop_info.M_o2c.shape == (3, 3)


def test_check_portrait_without_face_has_no_crop():
    class Analyzer:
        def detect(self, image):
            return []

    rep = pc.check_portrait(portrait(), Analyzer(), cropper=lambda *a, **k: pytest.fail("no crop without a face"))
    assert rep.crop is None and rep.reasons == ["no face found"]
    fb = pc.fallback_crop(portrait(), 128)
    assert fb.shape == (128, 128, 3)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="uint8 \\[H,W,3\\]"):
        pc.evaluate_portrait(np.zeros((10, 10), np.float32), [])
    with pytest.raises(ValueError, match="face box"):
        pc.evaluate_portrait(portrait(), [make_face((50, 50, 40, 60))])


def test_thresholds_file_documents_every_value():
    raw = json.loads(pc.THRESHOLDS_FILE.read_text())
    for k, v in raw.items():
        if not k.startswith("_"):
            assert set(v) == {"value", "meaning"} and v["meaning"], k
    t = pc.load_thresholds()
    assert t["min_side_recommended"] == 512 and t["faces_expected"] == 1


def test_big_image_background_is_measured_downscaled():
    box = (392, 240, 632, 540)
    img = portrait(h=1280, w=1024, box=box)
    rng = np.random.default_rng(3)
    img[:, :60] = rng.integers(150, 250, size=(1280, 60, 3), dtype=np.uint8)
    rep = pc.evaluate_portrait(img, [make_face(box)])
    small = cv2.resize(img, (819, 1024), interpolation=cv2.INTER_AREA)
    k = 1024 / 1280
    exp = pc.background_stats(small, pc.background_mask((1024, 819), np.array(box, float) * k, 540 * k, 0.1))
    assert rep.get("background colour spread").value == pytest.approx(exp[0])
    assert rep.get("background edges").value == pytest.approx(exp[1])
    assert rep.get("background colour spread").value > 1.0  # the noisy strip was seen
