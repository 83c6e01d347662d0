"""LivePortrait through a real ComfyUI: the five networks downloaded (full-size layouts, random
weights) and loaded strictly inside the server, the shipped workflows run on the real media."""
from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_helpers import run_prompt, upload
from test_video_roundtrip import media_facts

pytestmark = pytest.mark.integration

API = Path(__file__).resolve().parents[2] / "workflows" / "api"


def test_liveportrait_workflow_animates_s0_with_d20(comfy, testdata):
    for name in ("s0.jpg", "d20.mp4"):
        upload(comfy, testdata / name)
    prompt = json.loads((API / "liveportrait_animate.json").read_text())
    prompt["2"]["inputs"]["frame_load_cap"] = 3  # full-size networks on a CPU: a few frames
    prompt["5"]["inputs"]["preset"] = "ultrafast"
    prompt["5"]["inputs"]["audio_fit"] = "pad_or_trim"
    events: list = []
    result = run_prompt(comfy, prompt, events)
    (item,) = [f for f in result.files if f["filename"].endswith(".mp4")]
    out = media_facts(comfy.output_dir / item["subfolder"] / item["filename"])
    assert out["frames"] == 3 and out["fps"] == pytest.approx(25.0)
    assert out["size"] == (600, 704)  # the paste-back resolution: the portrait's own
    assert out["audio_s"] == pytest.approx(3 / 25, abs=1 / 25)  # the driving clip's sound under those frames
    assert any(t == "progress" and d.get("node") == "4" for t, d in events)
    assert len(list((comfy.workdir / "models" / "liveportrait").rglob("*.pth"))) == 5


def test_expression_edit_workflow_changes_only_the_face(comfy, testdata):
    upload(comfy, testdata / "s0.jpg")
    prompt = json.loads((API / "expression_edit.json").read_text())
    result = run_prompt(comfy, prompt)
    pngs = [f for f in result.files if f["filename"].endswith(".png")]
    (item,) = [f for f in pngs if f.get("type", "output") == "output"]
    out = np.asarray(Image.open(comfy.output_dir / item["subfolder"] / item["filename"]).convert("RGB")).astype(int)
    src = np.asarray(Image.open(testdata / "s0.jpg").convert("RGB")).astype(int)
    assert out.shape == src.shape
    diff = np.abs(out - src).sum(-1) > 0
    assert diff.any() and diff.mean() < 0.5  # something changed, and not the whole picture
    assert np.all(np.abs(out[-40:] - src[-40:]) == 0)  # the bottom rows (far from the face) are untouched
    # the editor is an output node: its face-crop preview is served from the temp folder, as the frontend reads it
    (preview,) = [f for f in pngs if f.get("type") == "temp"]
    assert preview["node"] == "3"
    query = urllib.parse.urlencode({k: preview[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{comfy.url}/view?{query}", timeout=60) as r:
        assert Image.open(io.BytesIO(r.read())).size == (512, 512)
    # a sample face (s6, found by the pack's face engine inside the server) lends its mouth
    upload(comfy, testdata / "s6.jpg")
    prompt["6"] = {"class_type": "LoadImage", "inputs": {"image": "s6.jpg"}}
    prompt["3"]["inputs"].update(sample_image=["6", 0], sample_parts="mouth", smile=0.0, eyebrow=0.0)
    (item,) = [f for f in run_prompt(comfy, prompt).files if f.get("type", "output") == "output"]
    mouth = np.asarray(Image.open(comfy.output_dir / item["subfolder"] / item["filename"]).convert("RGB")).astype(int)
    assert mouth.shape == src.shape and np.abs(mouth - src).sum(-1).astype(bool).any()
    assert np.all(mouth[-40:] == src[-40:])


def test_streamed_chain_load_animate_save(comfy, testdata):
    """DH_LoadVideo (no IMAGE decode) -> DH_LivePortraitAnimate (stream output, output_images off) ->
    DH_SaveVideo(stream=...): the frames are animated while the MP4 is written, inside the save node."""
    from comfyui_digitalhuman.nodes.motion import LivePortraitAnimate

    for name in ("s0.jpg", "d20.mp4"):
        upload(comfy, testdata / name)
    options = {k: v[1]["default"] for k, v in LivePortraitAnimate.INPUT_TYPES()["required"].items()
               if k not in ("liveportrait", "portrait", "fps")}
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "s0.jpg"}},
        "2": {"class_type": "DH_LoadVideo", "inputs": {"video": "d20.mp4", "force_fps": 0.0, "skip_first_frames": 0,
                                                       "frame_load_cap": 4, "select_every_nth": 1,
                                                       "decode_images": False}},
        "3": {"class_type": "DH_LoadLivePortrait", "inputs": {"precision": "auto", "device": "auto"}},
        "4": {"class_type": "DH_LivePortraitAnimate", "inputs": {
            **options, "output_images": False, "chunk_size": 2, "liveportrait": ["3", 0], "portrait": ["1", 0],
            "fps": 25.0, "driving_video": ["2", 4]}},
        "5": {"class_type": "DH_SaveVideo", "inputs": {"fps": 0.0, "filename_prefix": "DigitalHuman/lp_stream",
                                                       "audio_fit": "pad_or_trim", "crf": 19, "preset": "ultrafast",
                                                       "stream": ["4", 4], "audio": ["2", 1]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    events: list = []
    result = run_prompt(comfy, prompt, events)
    mp4s = [f for f in result.files if f["filename"].endswith(".mp4")]
    pngs = [f for f in result.files if f["filename"].endswith(".png")]
    assert len(mp4s) == 1 and len(pngs) == 1  # the IMAGE output holds only the first frame
    out = media_facts(comfy.output_dir / mp4s[0]["subfolder"] / mp4s[0]["filename"])
    assert out["frames"] == 4 and out["fps"] == pytest.approx(25.0) and out["size"] == (600, 704)
    assert out["audio_s"] == pytest.approx(4 / 25, abs=1 / 25)
    # the animation ran inside the save node: its progress (2 chunks of 2) is reported there
    save_progress = [d["value"] for t, d in events if t == "progress" and d.get("node") == "5"]
    assert save_progress and max(save_progress) == 4
