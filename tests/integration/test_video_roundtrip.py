"""Load video -> save video through a real ComfyUI: frames, fps and audio survive; bad files fail clearly."""
from __future__ import annotations

from pathlib import Path

import av
import pytest

from comfy_client import ExecutionFailed
from comfy_helpers import run_prompt, upload

pytestmark = pytest.mark.integration


def media_facts(path: Path) -> dict:
    """Frame count, fps and audio duration read independently with PyAV (decoding every packet)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        fps = float(v.average_rate)
    with av.open(str(path)) as c:
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            n = sum(f.samples for f in c.decode(audio=0))
            audio = n / a.codec_context.sample_rate
    return {"frames": frames, "fps": fps, "audio_s": audio, "size": (v.codec_context.width, v.codec_context.height)}


def _saved(comfy, result) -> Path:
    (item,) = [f for f in result.files if f["filename"].endswith(".mp4")]
    return comfy.output_dir / item.get("subfolder", "") / item["filename"]


@pytest.fixture(scope="module")
def d20(comfy, testdata) -> dict:
    assert upload(comfy, testdata / "d20.mp4") == "d20.mp4"
    return media_facts(testdata / "d20.mp4")


@pytest.mark.parametrize("mode", ["images", "stream"])
def test_load_save_keeps_frames_fps_and_audio(comfy, d20, mode):
    prompt = {
        "1": {"class_type": "DH_LoadVideo", "inputs": {"video": "d20.mp4", "force_fps": 0.0, "skip_first_frames": 0,
                                                      "frame_load_cap": 0, "select_every_nth": 1,
                                                      "decode_images": mode == "images"}},
        "2": {"class_type": "DH_SaveVideo", "inputs": {
            "fps": ["1", 2], "filename_prefix": f"roundtrip_{mode}", "audio_fit": "pad_or_trim", "crf": 23,
            "preset": "ultrafast", ("images" if mode == "images" else "stream"): ["1", 0 if mode == "images" else 4],
            "audio": ["1", 1]}},
    }
    events: list = []
    result = run_prompt(comfy, prompt, events)
    out = media_facts(_saved(comfy, result))
    assert out["frames"] == d20["frames"] == 175
    assert out["fps"] == pytest.approx(25.0)
    assert out["size"] == d20["size"]
    assert out["audio_s"] == pytest.approx(d20["audio_s"], abs=1 / 25)
    types = [t for t, _ in events]
    assert "executing" in types and "executed" in types  # followed over the WebSocket
    ui = result.outputs["2"]
    assert ui["video"][0]["filename"].endswith(".mp4")


def test_capped_and_resampled_load(comfy, d20):
    prompt = {
        "1": {"class_type": "DH_LoadVideo", "inputs": {"video": "d20.mp4", "force_fps": 12.5, "skip_first_frames": 5,
                                                      "frame_load_cap": 40, "select_every_nth": 1, "decode_images": True}},
        "2": {"class_type": "DH_SaveVideo", "inputs": {"fps": ["1", 2], "filename_prefix": "capped", "audio_fit": "pad_or_trim",
                                                      "crf": 23, "preset": "ultrafast", "images": ["1", 0]}},
    }
    out = media_facts(_saved(comfy, run_prompt(comfy, prompt)))
    assert out["frames"] == 40 and out["fps"] == pytest.approx(12.5)
    assert out["audio_s"] is None


def test_corrupt_video_fails_with_its_name(comfy, testdata, tmp_path):
    bad = tmp_path / "broken_clip.mp4"
    data = (testdata / "d20.mp4").read_bytes()
    bad.write_bytes(data[: len(data) // 50])
    assert upload(comfy, bad) == "broken_clip.mp4"
    prompt = {
        "1": {"class_type": "DH_LoadVideo", "inputs": {"video": "broken_clip.mp4", "force_fps": 0.0, "skip_first_frames": 0,
                                                      "frame_load_cap": 0, "select_every_nth": 1, "decode_images": True}},
        "2": {"class_type": "DH_SaveVideo", "inputs": {"fps": ["1", 2], "filename_prefix": "never", "audio_fit": "pad_or_trim",
                                                      "crf": 23, "preset": "ultrafast", "images": ["1", 0]}},
    }
    with pytest.raises(ExecutionFailed) as err:
        run_prompt(comfy, prompt)
    assert "broken_clip.mp4" in str(err.value)
    assert not list(comfy.output_dir.rglob("never*.mp4"))


def test_surround_audio_does_not_kill_the_server(comfy, tmp_path):
    """A 7.1 WAV into Load Audio and an MP4 with a 7.1 AAC track into Load Video used to segfault
    the server (PyAV's planar conversion at 8+ channels). Now both load with every channel, Save
    Video downmixes to stereo and says so under the node, and the server keeps serving."""
    import json
    import urllib.request

    from audio_cases import Case, tones, write_case, write_video

    wav = write_case(Case(8, 48000, "s16"), tmp_path)  # 0.2 s of 7.1
    write_video(tmp_path / "film71.mp4", "aac", tones(8, 48000, 1.0), 48000, "7.1")  # 10 frames, 1 s
    assert upload(comfy, wav) == wav.name and upload(comfy, tmp_path / "film71.mp4") == "film71.mp4"
    load = {"video": "film71.mp4", "force_fps": 0.0, "skip_first_frames": 0, "frame_load_cap": 0,
            "select_every_nth": 1, "decode_images": True}
    save = {"fps": ["1", 2], "audio_fit": "pad_or_trim", "crf": 23, "preset": "ultrafast", "images": ["1", 0]}
    prompt = {
        "1": {"class_type": "DH_LoadVideo", "inputs": load},
        "2": {"class_type": "DH_LoadAudio", "inputs": {"audio": wav.name, "sample_rate": 0, "mono": False}},
        "3": {"class_type": "DH_SaveVideo", "inputs": dict(save, filename_prefix="surround_track", audio=["1", 1])},
        "4": {"class_type": "DH_SaveVideo", "inputs": dict(save, filename_prefix="surround_wav", audio=["2", 0])},
    }
    result = run_prompt(comfy, prompt)
    downmix = "audio: 8 channels taken as 7.1, downmixed to stereo (ITU-R BS.775)"
    assert result.outputs["3"]["text"] == [downmix]
    # the WAV's eight tones (0.3 to 0.51 each) add up past full scale on each side: scaled down, not clipped
    assert result.outputs["4"]["text"] == [
        "the audio was 0.80 s shorter than the 1.00 s of video: 0.80 s of silence were added at the end",
        f"{downmix}, scaled by -1.9 dB so it does not clip"]
    for prefix in ("surround_track", "surround_wav"):
        (item,) = [f for f in result.files if f["filename"].startswith(prefix)]
        out = comfy.output_dir / item.get("subfolder", "") / item["filename"]
        with av.open(str(out)) as c:
            assert c.streams.audio[0].codec_context.channels == 2
        assert media_facts(out)["frames"] == 10
    with urllib.request.urlopen(f"{comfy.url}/system_stats", timeout=30) as r:  # still alive
        assert json.loads(r.read())["system"]
