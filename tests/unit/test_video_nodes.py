"""DH_LoadVideo / DH_SaveVideo against the real ComfyUI modules: what the node tells the user.

A retimed save or an audio track that does not fit the video is not only logged: the node's UI
output (``ui.text``, shown under the node by web/js/dh_media.js) says what happened.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from media_frames import VFR_MS, write_timed


@pytest.fixture()
def video_nodes(comfy_env, testdata: Path):
    from comfyui_digitalhuman.nodes import video

    shutil.copy(testdata / "d20.mp4", comfy_env.dirs["input"] / "d20.mp4")  # 25 fps, 7 s, speech
    return video, comfy_env


def file_facts(path: str) -> tuple[int, float, float]:
    """(frames, video seconds, audio seconds) of a written MP4, decoded with plain PyAV."""
    with av.open(path) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        fps = float(v.average_rate)
    with av.open(path) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
        rate = a.codec_context.sample_rate
    return frames, frames / fps, samples / rate


@pytest.mark.parametrize("save_fps, speed, change", [(50.0, "2x faster", "cut"), (20.0, "1.25x slower", "padded")])
def test_save_at_another_fps_than_the_stream_says_so(video_nodes, save_fps: float, speed: str, change: str) -> None:
    video, _ = video_nodes
    loaded = video.DH_LoadVideo().load("d20.mp4", 0.0, 0, 25, 1, False)
    assert loaded["ui"] == {"text": []}  # a constant-rate video: nothing to report
    _, audio, fps, count, stream = loaded["result"]  # 1 s: 25 frames
    assert (fps, count) == (25.0, 25) and audio["waveform"].shape[-1] == 44100
    out = video.DH_SaveVideo().save(save_fps, "dh/retimed", "pad_or_trim", 23, "ultrafast", stream=stream, audio=audio)
    notes = out["ui"]["text"]
    video_s = 25 / save_fps  # 0.5 s at 50 fps, 1.25 s at 20 fps
    assert notes[0] == (f"saved at {save_fps:g} fps, but the frames are 25 fps: the video plays {speed} than its "
                        f"source ({video_s:.2f} s instead of 1.00 s)")
    if change == "cut":
        assert notes[1] == ("the audio was 0.50 s longer than the 0.50 s of video (25 frames at 50 fps): its last "
                            "0.50 s were cut (audio_fit=extend_video keeps it)")
    else:
        assert notes[1] == "the audio was 0.25 s shorter than the 1.25 s of video: 0.25 s of silence were added at the end"
    assert len(notes) == 2
    frames, v_s, a_s = file_facts(out["result"][0])
    assert frames == 25 and v_s == pytest.approx(video_s)
    assert a_s == pytest.approx(video_s, abs=2048 / 44100)  # fitted to the video (AAC frames of 1024 samples)


def test_images_at_the_source_fps_have_no_notes_and_a_cut_is_reported(video_nodes) -> None:
    video, _ = video_nodes
    images, audio, fps, _, _ = video.DH_LoadVideo().load("d20.mp4", 0.0, 0, 25, 1, True)["result"]
    with av.open(str(video_nodes[1].dirs["input"] / "d20.mp4")) as c:  # IMAGE = the decoded frames / 255
        want = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(25), c.decode(video=0))])
    np.testing.assert_array_equal(images.numpy(), want.astype(np.float32) / np.float32(255.0))
    same = video.DH_SaveVideo().save(fps, "dh/same", "pad_or_trim", 23, "ultrafast", images=images, audio=audio)
    assert same["ui"]["text"] == []
    long_audio = dict(audio, waveform=audio["waveform"].repeat(1, 1, 3))  # 3 s of sound under 1 s of frames
    cut = video.DH_SaveVideo().save(fps, "dh/cut", "pad_or_trim", 23, "ultrafast", images=images, audio=long_audio)
    assert cut["ui"]["text"] == ["the audio was 2.00 s longer than the 1.00 s of video (25 frames at 25 fps): its "
                                 "last 2.00 s were cut (audio_fit=extend_video keeps it)"]
    held = video.DH_SaveVideo().save(fps, "dh/held", "extend_video", 23, "ultrafast", images=images, audio=long_audio)
    assert held["ui"]["text"] == ["the last frame is held 50 times (2.00 s) to cover the audio"]
    assert file_facts(held["result"][0])[0] == 75


def test_load_variable_frame_rate_video_says_what_it_did(video_nodes, tmp_path: Path) -> None:
    video, env = video_nodes
    write_timed(env.dirs["input"] / "phone.mp4", VFR_MS)
    out = video.DH_LoadVideo().load("phone.mp4", 0.0, 0, 0, 1, True)
    images, _, fps, count, _ = out["result"]
    assert fps == pytest.approx(25 / 1.4) and count == 25 and tuple(images.shape) == (25, 48, 64, 3)
    (note,) = out["ui"]["text"]
    assert note.startswith("variable frame rate (frame intervals 40.0 to 120.0 ms): loaded as a constant 17.857 fps")
