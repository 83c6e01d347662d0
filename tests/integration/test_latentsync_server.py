"""LatentSync through a real ComfyUI: weights downloaded from the fake hub (small random weights in the
published layouts), both shipped workflows run end to end on real media, the MP4 checked independently
(PyAV), and the frames before encoding compared with the input outside the mouth mask.

CPU cost is kept small: version 1.5 (256 px), one or two denoising steps, the speech cut to a few
seconds (written from the real recordings at test time), short face clips."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from comfy_helpers import run_prompt, upload
from media_frames import read_frames
from test_video_roundtrip import media_facts

pytestmark = pytest.mark.integration

API = Path(__file__).resolve().parents[2] / "workflows" / "api"


def _cut(testdata: Path, name: str, seconds: float, tmp_path: Path) -> tuple[Path, float]:
    """The first ``seconds`` of a real recording (its own rate and channels), as a WAV to upload."""
    wav, sr = sf.read(str(testdata / name), dtype="float32", always_2d=True)
    n = int(round(seconds * sr))
    assert n <= len(wav)
    out = tmp_path / f"{Path(name).stem}_{seconds:g}s.wav"
    sf.write(str(out), wav[:n], sr, subtype="FLOAT")
    return out, n / sr


def _mp4(comfy, result) -> dict:
    (item,) = [f for f in result.files if f["filename"].endswith(".mp4")]
    return media_facts(comfy.output_dir / item["subfolder"] / item["filename"])


def _pngs(comfy, result) -> list[np.ndarray]:
    items = sorted((f for f in result.files if f["filename"].endswith(".png") and f.get("type", "output") == "output"),
                   key=lambda f: f["filename"])
    return [np.asarray(Image.open(comfy.output_dir / f["subfolder"] / f["filename"]).convert("RGB")) for f in items]


def _mouth_mask(resolution: int, tmp_path: Path) -> np.ndarray:
    """The mask the server downloaded (the fake host serves tiny_models' stand-in), read as the engine reads it."""
    from tiny_models import latentsync_files

    from comfyui_digitalhuman.engine.latentsync.mask import read_mask

    path = tmp_path / "mask.png"
    path.write_bytes(latentsync_files()["latentsync.mask"])
    return read_mask(path, resolution)[..., 0]


def test_latentsync_workflow_on_yongen(comfy, testdata, tmp_path):
    """yongen.mp4 (704x1216, anime face) + 1.03 s of yongen.wav (48 kHz stereo): floor(1.03 x 25) = 25 frames at
    25 fps with the audio. Four frames before encoding (PNG, lossless): outside the face's footprint every pixel
    is the input's, inside it the face the mouth mask keeps differs only by resampling, the mouth is redrawn."""
    from comfyui_digitalhuman.engine.latentsync import align as A
    from comfyui_digitalhuman.engine.latentsync import pipeline as P

    upload(comfy, testdata / "yongen.mp4")
    wav, seconds = _cut(testdata, "yongen.wav", 1.03, tmp_path)
    prompt = json.loads((API / "latentsync_video.json").read_text())
    prompt["1"]["inputs"]["frame_load_cap"] = 30  # longer than the speech: its first 25 frames are used
    prompt["2"]["inputs"]["audio"] = upload(comfy, wav)
    prompt["3"]["inputs"]["version"] = "1.5"
    prompt["4"]["inputs"].update(steps=2, output_images=True)  # tiny random networks: the run, not the look
    prompt["5"]["inputs"]["preset"] = "ultrafast"
    prompt["10"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["4", 0], "batch_index": 20, "length": 4}}
    prompt["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "latentsync_check"}}
    events: list = []
    result = run_prompt(comfy, prompt, events)
    out = _mp4(comfy, result)
    assert out["frames"] == int(seconds * 25) == 25
    assert out["fps"] == pytest.approx(25.0) and out["size"] == (704, 1216)
    assert out["audio_s"] == pytest.approx(seconds, abs=1 / 25)
    assert any(t == "progress" and d.get("node") == "4" for t, d in events)
    models = comfy.workdir / "models"
    assert list((models / "latentsync").rglob("latentsync_unet.pt")) and list((models / "latentsync").rglob("tiny.pt"))

    got = _pngs(comfy, result)
    assert len(got) == 4
    src = read_frames(testdata / "yongen.mp4", 24)[20:24]
    align = P.track_alignment(src, 256)
    assert align.faces == 4
    t = A.template(256)
    cw, ch = t.size
    keep = cv2.resize(_mouth_mask(256, tmp_path), (cw, ch), interpolation=cv2.INTER_NEAREST).astype(np.uint8)
    h, w = src.shape[1:3]
    for i in range(4):
        assert got[i].shape == src[i].shape and got[i].any()  # no black (NaN) frame
        inv = A.invert(align.matrices[i])
        region = cv2.warpAffine(np.ones((ch, cw), np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST)
        region = cv2.dilate(region, np.ones((9, 9), np.uint8)) > 0
        outside = np.abs(got[i].astype(int) - src[i].astype(int))[~region]
        assert outside.max() == 0, f"frame {20 + i}: {np.count_nonzero(outside)} values changed outside the face"
        kept = cv2.warpAffine(cv2.erode(keep, np.ones((15, 15), np.uint8)), inv, (w, h), flags=cv2.INTER_NEAREST) > 0
        redrawn = cv2.warpAffine(cv2.erode(1 - keep, np.ones((15, 15), np.uint8)), inv, (w, h),
                                 flags=cv2.INTER_NEAREST) > 0
        d = np.abs(got[i].astype(int) - src[i].astype(int)).mean(axis=2)
        # resampling only where the mask keeps the face (warp, resize, paste back): a few levels of 255
        assert d[kept & region].mean() < 4.0, i
        assert d[redrawn].mean() > 5 * d[kept & region].mean(), i


def test_speech_longer_than_the_video_plays_it_back_and_forth(comfy, testdata, tmp_path):
    """d20.mp4 cut to 12 frames (0.48 s) + 2.41 s of eng.wav (16 kHz mono): floor(2.41 x 25) = 60 frames, the
    clip played forwards and backwards, through the stream (one step, no guidance: the length is tested)."""
    upload(comfy, testdata / "d20.mp4")
    wav, seconds = _cut(testdata, "eng.wav", 2.41, tmp_path)
    prompt = json.loads((API / "latentsync_video.json").read_text())
    prompt["1"]["inputs"].update(video="d20.mp4", frame_load_cap=12)
    prompt["2"]["inputs"]["audio"] = upload(comfy, wav)
    prompt["3"]["inputs"]["version"] = "1.5"
    prompt["4"]["inputs"].update(steps=1, guidance=1.0)
    prompt["5"]["inputs"].update(preset="ultrafast", crf=30, filename_prefix="DigitalHuman/latentsync_long")
    events: list = []
    out = _mp4(comfy, run_prompt(comfy, prompt, events))
    assert out["frames"] == int(seconds * 25) == 60
    assert out["size"] == (480, 480) and out["audio_s"] == pytest.approx(seconds, abs=1 / 25)
    saver = [d for t, d in events if t == "progress" and d.get("node") == "5"]
    assert saver and max(d["value"] for d in saver) == 60  # generated inside the saver's loop (stream)


def test_high_quality_digital_human_workflow(comfy, testdata, tmp_path):
    """Portrait s0.jpg driven by 2 frames of d20.mp4 (LivePortrait), then LatentSync under 2.01 s of eng.wav.

    The fake hub's LivePortrait weights are random (published layout), so the animated frames hold no face:
    the run must get through the motion step and stop at LatentSync's face check with the error naming the
    input, before any LatentSync network runs, and write no MP4. (The chain's LatentSync half on real faces
    is the two tests above; this one proves the shipped graph runs and where it stops.)"""
    from comfyui_digitalhuman.client.api import ExecutionFailed

    for name in ("s0.jpg", "d20.mp4"):
        upload(comfy, testdata / name)
    wav, _ = _cut(testdata, "eng.wav", 2.01, tmp_path)
    prompt = json.loads((API / "digital_human_hq.json").read_text())
    prompt["2"]["inputs"]["frame_load_cap"] = 2  # full-size LivePortrait on a CPU: two frames
    prompt["3"]["inputs"]["audio"] = upload(comfy, wav)
    prompt["6"]["inputs"]["version"] = "1.5"
    prompt["7"]["inputs"].update(steps=1, guidance=1.0)
    prompt["8"]["inputs"].update(preset="ultrafast", filename_prefix="DigitalHuman/latentsync_hq")
    events: list = []
    with pytest.raises(ExecutionFailed) as err:
        run_prompt(comfy, prompt, events)
    msg = str(err.value)
    assert "node 7 (DH_LatentSyncLipSync)" in msg
    assert "no face found in any of the 2 frames of the 'images' input" in msg
    assert any(t == "progress" and d.get("node") == "5" for t, d in events)  # LivePortrait ran first
    assert not list((comfy.output_dir / "DigitalHuman").glob("latentsync_hq*"))
