"""Tracking rules (pick, identity, missing frames), smoothing, and a real run on d20.mp4."""
from __future__ import annotations


import av
import numpy as np
import pytest

from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer
from comfyui_digitalhuman.engine.face.smoothing import OneEuroFace
from comfyui_digitalhuman.engine.face.tracking import FaceTrack, pick_face, track_faces
from comfyui_digitalhuman.engine.face.types import Face

RNG = np.random.default_rng(0)
TEMPLATE = RNG.uniform(-1, 1, (468, 3)).astype(np.float32)
TEMPLATE[33] = (-0.5, 0, 0)
TEMPLATE[263] = (0.5, 0, 0)


def face_at(cx: float, cy: float, size: float, jitter: float = 0.0) -> Face:
    lm = TEMPLATE * size / 2 + np.array([cx, cy, 0], np.float32)
    lm[:, :2] += RNG.normal(0, jitter, (468, 2)).astype(np.float32)
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], np.float32)
    return Face(box=box, score=0.9, landmarks=lm, pose=(0.0, 0.0, 0.0))


class ScriptedAnalyzer:
    """Returns pre-set faces per frame; the frame's pixel [0,0,0] is its index."""

    def __init__(self, script):
        self.script = script

    def detect_batch(self, chunk):
        return [list(self.script[int(np.asarray(f)[0, 0, 0])]) for f in chunk]


def chunks(n: int, size: int = 4, hw=(100, 200)):
    for s in range(0, n, size):
        c = np.zeros((min(size, n - s),) + hw + (3,), np.uint8)
        c[:, 0, 0, 0] = np.arange(s, s + len(c))
        yield c


def test_pick_rules():
    a, b = face_at(30, 50, 40), face_at(110, 50, 30)  # a larger, b nearer the centre (100, 50)
    assert pick_face([a, b], "largest", (100, 200)) is a
    assert pick_face([a, b], "center", (100, 200)) is b
    assert pick_face([a, b], 1, (100, 200)) is b
    assert pick_face([a, b], 5, (100, 200)) is None
    with pytest.raises(ValueError, match="pick must be"):
        pick_face([a], "smallest", (100, 200))


def test_identity_kept_when_other_face_grows():
    # person A (left) is picked first; B (right) becomes larger later: A must stay tracked
    script = []
    for i in range(8):
        a, b = face_at(40 + i, 50, 40), face_at(150, 50, 20 + 5 * i)
        script.append(sorted([a, b], key=lambda f: -f.area))
    tr = track_faces(chunks(8), ScriptedAnalyzer(script), smoothing=0.0)
    assert tr.present.all() and tr.missing_frames == []
    assert np.all(tr.boxes[:, 0] < 100)  # always the left face


@pytest.mark.parametrize("mode", ["pass", "hold"])
def test_missing_frames(mode):
    script = [[face_at(50, 50, 40)] if i not in (0, 3, 4) else [] for i in range(7)]
    done = []
    tr = track_faces(chunks(7, 3), ScriptedAnalyzer(script), smoothing=0.0, missing=mode,
                     progress=lambda d, t: done.append((d, t)), total=7)
    assert tr.missing_frames == [0, 3, 4]
    assert tr.present.tolist() == [False, True, True, False, False, True, True]
    assert done == [(3, 7), (6, 7), (7, 7)]
    if mode == "pass":
        assert not tr.held.any() and np.all(tr.landmarks[3] == 0)
    else:
        assert tr.held.tolist() == [True, False, False, True, True, False, False]
        assert np.array_equal(tr.landmarks[3], tr.landmarks[2])
        assert np.array_equal(tr.landmarks[0], tr.landmarks[1])  # leading gap: first good frame
        assert tr.usable.all()


def test_all_missing_hold_does_not_fail():
    tr = track_faces(chunks(3), ScriptedAnalyzer([[]] * 3), missing="hold")
    assert tr.missing_frames == [0, 1, 2] and not tr.usable.any()


def test_interrupt_is_polled():
    class Stop(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        track_faces(chunks(12), ScriptedAnalyzer([[face_at(50, 50, 40)]] * 12), check_interrupt=check)


def test_bad_options():
    with pytest.raises(ValueError, match="missing must be"):
        track_faces(chunks(1), ScriptedAnalyzer([[]]), missing="drop")
    with pytest.raises(ValueError, match=r"smoothing strength must be in \[0, 1\]"):
        OneEuroFace(1.5)


def test_smoothing_removes_jitter_and_follows_motion():
    n = 60
    still = [[face_at(100, 100, 80, jitter=1.5)] for _ in range(n)]
    raw = np.stack([s[0].landmarks for s in still])
    tr = track_faces(chunks(n, 10, (200, 200)), ScriptedAnalyzer(still), smoothing=0.5)
    jit_raw = raw[10:, :, :2].std(0).mean()
    jit_s = tr.landmarks[10:, :, :2].std(0).mean()
    assert jit_s < 0.5 * jit_raw, (jit_s, jit_raw)
    # steady motion of 3 px/frame: after settling, the lag stays under 3 frames of motion
    moving = [[face_at(50 + 3 * i, 100, 80)] for i in range(n)]
    tr = track_faces(chunks(n, 10, (200, 400)), ScriptedAnalyzer(moving), smoothing=0.5)
    lag = (50 + 3 * np.arange(n)) - (tr.boxes[:, 0] + tr.boxes[:, 2]) / 2
    assert np.all(lag[20:] < 9) and np.all(lag >= -1e-3)
    # strength 0 is the identity
    tr0 = track_faces(chunks(n, 10, (200, 200)), ScriptedAnalyzer(still), smoothing=0.0)
    assert np.allclose(tr0.landmarks, raw)


def test_real_video_track_with_blank_frame(testdata):
    with av.open(str(testdata / "d20.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(12), c.decode(video=0))]
    frames[5] = np.zeros_like(frames[5])
    fa = FaceAnalyzer()
    tr = track_faces([np.stack(frames[:6]), np.stack(frames[6:])], fa, smoothing=0.5, missing="hold")
    assert isinstance(tr, FaceTrack) and len(tr) == 12
    assert tr.missing_frames == [5]
    assert tr.held[5] and np.array_equal(tr.landmarks[5], tr.landmarks[4])
    assert tr.frame_sizes.tolist() == [[480, 480]] * 12
    # landmarks lie on the detected face
    for i in (0, 11):
        b = tr.boxes[i]
        lm = tr.landmarks[i]
        assert b[0] - 40 < lm[1, 0] < b[2] + 40 and b[1] - 40 < lm[1, 1] < b[3] + 40
