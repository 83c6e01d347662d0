"""The portrait check on the real test media with the pack's face engine (runs once engine/face is present)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from comfyui_digitalhuman.engine.avatar.portrait_check import check_portrait

analyzer_mod = pytest.importorskip("comfyui_digitalhuman.engine.face.analyzer", reason="engine/face is not merged into this branch yet")


@pytest.fixture(scope="module")
def analyzer():
    return analyzer_mod.FaceAnalyzer()


def _load(testdata, name: str) -> np.ndarray:
    return np.asarray(Image.open(testdata / name).convert("RGB"))


def test_no_face(testdata, analyzer):
    rep = check_portrait(_load(testdata, "no_face.jpg"), analyzer)
    assert not rep.passed and rep.reasons == ["no face found"] and rep.crop is None
    assert rep.text().startswith("FAIL: no face found")


def test_full_body_fails_for_framing(testdata, analyzer):
    rep = check_portrait(_load(testdata, "sit.jpeg"), analyzer)
    assert not rep.passed
    assert rep.get("faces").status == "pass"
    assert any(r.startswith("framing") for r in rep.reasons), rep.text()
    assert rep.crop.shape == (512, 512, 3)


def test_s0_gets_a_verdict_with_reasons(testdata, analyzer):
    rep = check_portrait(_load(testdata, "s0.jpg"), analyzer)
    assert rep.num_faces == 1 and rep.crop.shape == (512, 512, 3)
    assert rep.passed or rep.reasons, rep.text()
    for name in ("yaw", "pitch", "roll"):
        assert rep.get(name).status == "pass", rep.text()  # s0 is frontal


def test_head_and_shoulders_statue_passes(testdata, analyzer):
    rep = check_portrait(_load(testdata, "s6.jpg"), analyzer)
    assert rep.passed, rep.text()


# -- counting faces: every face the check cares about, whichever BlazeFace model sees it ----------
def _side_by_side(testdata) -> np.ndarray:
    """s0 (painted portrait) and s6 (statue) next to each other at s0's height."""
    import cv2

    s0, s6 = _load(testdata, "s0.jpg"), _load(testdata, "s6.jpg")
    h = s0.shape[0]
    s6 = cv2.resize(s6, (round(s6.shape[1] * h / s6.shape[0]), h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([s0, s6], axis=1))


INSET_FRAC = 0.33  # s0 at a third of s6's width: its face (about 37 px) is too small for the short-range model


def _inset(testdata) -> np.ndarray:
    """s6 with a small s0 pasted into its bottom-right corner (a picture-in-picture second face)."""
    import cv2

    s0, out = _load(testdata, "s0.jpg"), _load(testdata, "s6.jpg").copy()
    w = int(out.shape[1] * INSET_FRAC)
    small = cv2.resize(s0, (w, round(s0.shape[0] * w / s0.shape[1])), interpolation=cv2.INTER_AREA)
    out[-small.shape[0]:, -w:] = small
    return out


@pytest.fixture(scope="module")
def one_model():
    return {k: analyzer_mod.FaceAnalyzer(detector=k) for k in ("short", "full")}


@pytest.mark.parametrize("build", [_side_by_side, _inset], ids=["side_by_side", "inset"])
def test_premise_the_default_pass_sees_one_face_the_full_range_model_two(build, testdata, analyzer, one_model):
    """Why the check needs its own counting pass: the short-range model finds one face (so the
    default pass never tries the full-range model), the full-range model finds both."""
    img = build(testdata)
    assert len(one_model["short"].detect(img)) == 1
    assert len(one_model["full"].detect(img)) == 2
    assert len(analyzer.detect(img)) == 1


@pytest.mark.parametrize("build", [_side_by_side, _inset], ids=["side_by_side", "inset"])
def test_two_faces_fail_exactly_one_face_and_the_picked_face_is_unchanged(build, testdata, analyzer):
    img = build(testdata)
    rep = check_portrait(img, analyzer)
    assert rep.get("faces").status == "fail" and rep.num_faces == 2, rep.text()
    assert any(r.startswith("2 faces found") for r in rep.reasons), rep.text()
    picked = analyzer.detect(img)[0]  # what LivePortrait / MuseTalk would take as the face
    np.testing.assert_array_equal(rep.face.box, picked.box)


@pytest.mark.parametrize("name", ["s0.jpg", "s6.jpg", "sit.jpeg"])
def test_one_face_is_counted_once_by_both_models(name, testdata, analyzer):
    """Both models see the single face of each portrait; merged, it counts once."""
    rep = check_portrait(_load(testdata, name), analyzer)
    assert rep.num_faces == 1 and rep.get("faces").status == "pass", rep.text()
