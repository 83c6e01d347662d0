"""Face nodes and the portrait check through a real ComfyUI, on the real test photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from comfy_helpers import run_prompt, upload

pytestmark = pytest.mark.integration


def load(name: str, node: str = "1") -> dict:
    return {node: {"class_type": "LoadImage", "inputs": {"image": name}}}


def test_detect_crop_paste_back_reproduces_the_portrait(comfy, testdata):
    upload(comfy, testdata / "s0.jpg")
    prompt = {
        **load("s0.jpg"),
        "2": {"class_type": "DH_FaceDetectCrop", "inputs": {
            "images": ["1", 0], "preset": "liveportrait_source", "crop_size": 512, "pick": "largest",
            "face_index": 0, "smoothing": 0.0, "missing_face": "pass"}},
        "3": {"class_type": "DH_FacePasteBack", "inputs": {"images": ["1", 0], "crops": ["2", 0], "face_track": ["2", 1],
                                                          "feather": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "pasted"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "crop"}},
    }
    result = run_prompt(comfy, prompt)
    files = {f["filename"].split("_")[0]: comfy.output_dir / f.get("subfolder", "") / f["filename"] for f in result.files}
    crop = np.asarray(Image.open(files["crop"]))
    assert crop.shape == (512, 512, 3) and crop.std() > 20
    src = np.asarray(Image.open(testdata / "s0.jpg").convert("RGB")).astype(np.float64)
    out = np.asarray(Image.open(files["pasted"])).astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / max(((out - src) ** 2).mean(), 1e-9))
    assert psnr > 40, psnr


@pytest.mark.parametrize("name, passed, reason", [
    ("no_face.jpg", False, "no face"),
    ("sit.jpeg", False, "framing"),
    ("s6.jpg", True, "PASS"),
])
def test_portrait_check_verdicts(comfy, testdata, name, passed, reason):
    upload(comfy, testdata / name)
    prompt = {**load(name), "2": {"class_type": "DH_PortraitCheck", "inputs": {"images": ["1", 0], "crop_size": 256}}}
    result = run_prompt(comfy, prompt)
    text = " ".join(result.outputs["2"]["text"])
    assert reason.lower() in text.lower(), text
    assert text.startswith("PASS") == passed, text


def test_portrait_check_counts_a_second_face_only_the_full_range_model_sees(comfy, testdata, tmp_path):
    """Two portraits side by side (s0 | s6): the default detector pass sees one face, the check two."""
    import cv2

    s0 = np.asarray(Image.open(testdata / "s0.jpg").convert("RGB"))
    s6 = np.asarray(Image.open(testdata / "s6.jpg").convert("RGB"))
    s6 = cv2.resize(s6, (round(s6.shape[1] * s0.shape[0] / s6.shape[0]), s0.shape[0]), interpolation=cv2.INTER_AREA)
    path = tmp_path / "two_portraits.png"
    Image.fromarray(np.concatenate([s0, s6], axis=1)).save(path)
    upload(comfy, path)
    prompt = {**load(path.name), "2": {"class_type": "DH_PortraitCheck", "inputs": {"images": ["1", 0], "crop_size": 256}}}
    try:
        text = " ".join(run_prompt(comfy, prompt).outputs["2"]["text"])
    finally:
        (comfy.input_dir / path.name).unlink()  # the input folder's file list is part of other tests' node schemas
    assert text.startswith("FAIL") and "2 faces found" in text, text
