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
