"""MuseTalk's audio prompts computed while the audio arrives (engine.musetalk.audio.StreamingAudioWindows)
against the whole-clip computation (AudioWindows of to_mono_16k of the whole clip).

Tolerance: zero. The streaming path runs the same operations on the same numbers: soxr's streaming
resampler returns the one-shot resampler's samples exactly (checked here first, for the rates
voices use), the length is fixed as librosa fixes it, each 30 s segment is encoded by the same
``encode_segment`` call on the same samples, and the same gather picks the windows. Nothing is
summed in a different order, so any difference at all would be a bug, not rounding.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.musetalk import audio as A
from comfyui_digitalhuman.engine.musetalk.random_models import random_models


@pytest.fixture(scope="module")
def whisper():
    torch.manual_seed(0)
    return random_models(tiny=True, seed=3).whisper


def _speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise bursts and tones with pauses: loud and silent stretches, so the log-mel maximum matters."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    env = (np.sin(2 * np.pi * 1.7 * t) > -0.2).astype(np.float32)
    x = 0.2 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t) + 0.05 * rng.standard_normal(n)
    return (x * env).astype(np.float32)


def _chunks(x: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out, pos = [], 0
    while pos < len(x):
        k = int(rng.integers(1, 9000))
        out.append(x[pos:pos + k])
        pos += k
    return out


@pytest.mark.parametrize("rate", [24000, 44100, 22050, 48000, 16000])
def test_streaming_resampler_equals_librosa_one_shot(rate):
    """The premise of exactness: chunked soxr HQ == librosa.resample (soxr_hq) once, length fixed as librosa."""
    import soxr

    x = _speechlike(2.37, rate, 1)
    whole = A.to_mono_16k(x, rate)
    if rate == A.SAMPLE_RATE:
        assert np.array_equal(whole, x)
        return
    st = soxr.ResampleStream(rate, A.SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    parts = [st.resample_chunk(c, last=False) for c in _chunks(x, 2)] + [st.resample_chunk(np.zeros(0, np.float32), last=True)]
    y = np.concatenate(parts)
    want = int(np.ceil(len(x) * (A.SAMPLE_RATE / rate)))
    assert len(whole) == want and len(y) <= want
    np.testing.assert_array_equal(y, whole[:len(y)])
    assert not whole[len(y):].any()  # what librosa adds to reach its length is zeros


@pytest.mark.parametrize("rate,seconds,fps", [(24000, 3.21, 25.0), (16000, 1.0, 25.0), (22050, 2.0, 29.97)])
def test_streamed_windows_equal_whole_clip_windows(whisper, rate, seconds, fps):
    x = _speechlike(seconds, rate, 4)
    ref = A.AudioWindows(A.to_mono_16k(x, rate), whisper, fps)
    st = A.StreamingAudioWindows(whisper, fps, rate)
    got = []
    for c in _chunks(x, 5):
        st.push(c)
        assert st.pending() == 0  # under 30 s nothing is final before the end (the encoder sees all of it)
    st.end()
    assert st.n_frames == len(ref)
    while (b := st.take(3)) is not None:
        got.append(b)
    assert st.done()
    starts = [s for s, _ in got]
    assert starts == list(range(0, len(ref), 3))
    torch.testing.assert_close(torch.cat([w for _, w in got]), ref.windows(0, len(ref)), rtol=0, atol=0)


def test_long_audio_is_released_segment_by_segment_with_bounded_memory(whisper):
    """61 s at 24 kHz: frames of the first segment are final once 30 s (+ the window's 100 ms) are in,
    long before the end; at most two encoded segments are held; every window equals the whole clip's."""
    fps = 25.0
    x = _speechlike(61.3, 24000, 7)
    ref = A.AudioWindows(A.to_mono_16k(x, 24000), whisper, fps)
    st = A.StreamingAudioWindows(whisper, fps, 24000)
    got = []
    first_release_s = None
    held = 0
    for c in _chunks(x, 8):
        st.push(c)
        while (b := st.take(16)) is not None:
            if first_release_s is None:
                first_release_s = st.samples_in / 24000
            got.append(b)
            held = max(held, len(st._segments))
        assert st.received - st._buf_start <= 2 * A.SEGMENT_SAMPLES + 9000  # samples not yet released
    st.end()
    while (b := st.take(16)) is not None:
        got.append(b)
        held = max(held, len(st._segments))
    assert 30.0 <= first_release_s < 31.0
    assert held <= 2
    assert st.n_frames == len(ref) == int(61.3 * 25)
    windows = torch.cat([w for _, w in got])
    assert windows.shape[0] == len(ref)
    for a in range(0, len(ref), 256):  # compare in slices: the reference gathers lazily too
        b = min(a + 256, len(ref))
        torch.testing.assert_close(windows[a:b], ref.windows(a, b), rtol=0, atol=0)


def test_frames_near_a_segment_edge_wait_for_the_next_segment(whisper):
    """A frame whose 10-feature window reaches past 30 s needs segment 2, so it is not final at 30 s."""
    st = A.StreamingAudioWindows(whisper, 25.0, A.SAMPLE_RATE)
    st.push(np.zeros(A.SEGMENT_SAMPLES, np.float32))
    n = st.available()
    # frame i's window is features 2i-4 .. 2i+5; all < 1500 means i <= 747
    assert n == 748
    st.push(np.zeros(10, np.float32))
    st.end()
    assert st.available() == st.n_frames == 750


def test_no_audio_and_too_little_audio(whisper):
    st = A.StreamingAudioWindows(whisper, 25.0, 24000)
    st.end()
    assert st.n_frames == 0 and st.take(8) is None and st.done()
    st = A.StreamingAudioWindows(whisper, 25.0, 24000)
    st.push(np.full(500, np.nan, np.float32))  # 20.8 ms: not one frame; NaN read as silence
    st.end()
    assert st.n_frames == 0 and st.done()
    with pytest.raises(RuntimeError, match="ended"):
        st.push(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="fps"):
        A.StreamingAudioWindows(whisper, 0.0)
