"""MuseTalk's DH_VIDEO_STREAM output: lazy frames made while the consumer iterates, equal to the
IMAGE output, with progress and Cancel inside the consumer's loop and memory bounded for long audio."""
from __future__ import annotations

import tracemalloc

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.media.stream import FrameStream
from test_musetalk_nodes import audio, images, musetalk_env  # noqa: F401  (shared fixtures)


def _consume(stream: FrameStream, chunk: int = 4) -> np.ndarray:
    return np.concatenate(list(stream.iter_chunks(chunk)))


def _u8(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().to(torch.uint8).numpy()


def test_stream_output_equals_images_and_reports_progress_while_consumed(musetalk_env, images, audio):
    lipsync, _, env = musetalk_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    full, _, _, eager, _ = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=images)
    np.testing.assert_array_equal(_consume(eager), _u8(full))  # output_images on: the stream replays IMAGE

    env.progress.clear()
    first, aud, fps, stream, _ = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", output_images=False,
                                                               images=images)
    assert isinstance(stream, FrameStream) and aud is audio and fps == 25.0
    assert (stream.frame_count, stream.width, stream.height, stream.fps) == (5, 176, 304, 25.0)
    assert first.shape == (1, 304, 176, 3)  # only the first frame as IMAGE
    assert np.abs(_u8(first)[0].astype(int) - _u8(full)[0].astype(int)).max() <= 1  # batch of 1 vs 4
    assert env.progress[-1] == (2, 2)  # the node itself only prepared the 2 frames with a face
    env.progress.clear()
    got = _consume(stream, 2)
    np.testing.assert_array_equal(got, _u8(full))  # the same frames as the IMAGE output
    assert env.progress and env.progress[-1] == (5, 5)  # speak's progress, reported inside the consumer's loop
    np.testing.assert_array_equal(_consume(stream, 3), got)  # re-iterable: a second consumer gets the same

    avatar, _ = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "", images=images)
    one, _, _, spoken, _ = lipsync.DH_MuseTalkSpeak().speak(handle, avatar, audio, 25.0, 4, output_images=False)
    assert one.shape == (1, 304, 176, 3)
    np.testing.assert_array_equal(_consume(spoken), _u8(full))

    from comfyui_digitalhuman.nodes.video import DH_SaveVideo

    (path,) = DH_SaveVideo().save(25.0, "unit/lipsync_stream", preset="ultrafast", stream=stream, audio=aud)["result"]
    with av.open(path) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_cancel_inside_the_consumer_stops_the_stream(musetalk_env, images, audio):
    lipsync, _, env = musetalk_env
    import comfy.model_management as mm

    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    _, _, _, stream, _ = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 1, 0, "jaw", output_images=False,
                                                       images=images)
    chunks = stream.iter_chunks(1)
    assert next(chunks).shape == (1, 304, 176, 3)
    env.interrupt()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            next(chunks)
    finally:
        mm.interrupt_current_processing(False)


def test_long_audio_stream_keeps_memory_bounded(musetalk_env, images, testdata):
    """6 s of speech over a 3-frame face clip: 150 output frames pass through the stream while only a
    chunk's worth is alive at any time (the 60 s / 1500-frame run is the integration test's; tiny
    networks still cost ~50 ms a frame on CPU). The fixed part of the peak (~9 MB) is whisper's
    log-mel of one 30 s segment, whatever the audio length."""
    lipsync, _, env = musetalk_env
    info = sf.info(str(testdata / "eng.wav"))
    wav, sr = sf.read(str(testdata / "eng.wav"), dtype="float32", always_2d=True, frames=6 * info.samplerate)
    speech = {"waveform": torch.from_numpy(wav.T.copy())[None], "sample_rate": sr}
    n_expected = int(wav.shape[0] / sr * 25)
    assert n_expected == 150
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    frame_bytes = 304 * 176 * 3

    tracemalloc.start()
    try:
        first, _, _, stream, _ = lipsync.DH_MuseTalkLipSync().run(handle, speech, 25.0, 8, 0, "jaw",
                                                               output_images=False, images=images)
        assert first.shape[0] == 1 and stream.frame_count == n_expected
        _, node_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count, checksum = 0, 0
        for chunk in stream.iter_chunks(16):
            count += len(chunk)
            checksum += int(chunk[:, ::37, ::37].sum())
        _, consume_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n_expected and checksum > 0
    assert env.progress[-1] == (n_expected, n_expected)
    print(f"peak {node_peak / frame_bytes:.1f} frames in the node, {consume_peak / frame_bytes:.1f} while consuming")
    # All output frames held would be >= 150 frames (24 MB) on top of that; measured ~60 frames' worth.
    assert consume_peak < 100 * frame_bytes, f"peak {consume_peak / 2**20:.1f} MiB while consuming"
    assert node_peak < 100 * frame_bytes, f"peak {node_peak / 2**20:.1f} MiB in the node"
