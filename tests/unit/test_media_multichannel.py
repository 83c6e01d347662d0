"""Audio with any channel count, layout, sample format and rate loads without crashing.

Why: PyAV's planar-frame conversion walks past the end of FFmpeg's plane pointers for 8 or
more channels, which killed the whole ComfyUI server on a 7.1 WAV or a 7.1 AAC track (see
engine/media/audio_io.py). The files are written and decoded in a child process
(tests/audio_cases.py), so a regression fails these tests instead of killing pytest. The
expected samples are computed from the integers written (tests/audio_cases.py), not by the
decoder under test.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from audio_cases import FORMATS, Case, cases_json, expected, frequencies, middle, pcm16, tone_level, tones
from isolated import TESTS, exit_reason, last_line, run_python

RATES = (8000, 16000, 22050, 44100, 48000, 96000)
EXACT = (
    [Case(n, 48000, f) for n in range(1, 17) for f in FORMATS]
    + [Case(n, 48000, f, named=False) for n in (2, 6, 8, 12, 16) for f in ("s16", "s16p")]
    + [Case(n, r, f) for r in RATES if r != 48000 for n in (1, 2, 7, 8, 12, 16) for f in ("s16", "fltp")]
)
RESAMPLED = [Case(n, r, "s16", read_rate=o) for n in (8, 12, 16) for r, o in ((96000, 16000), (44100, 16000), (8000, 48000))]
MONO = [Case(8, 48000, "fltp", mono=True), Case(16, 22050, "s32", named=False, mono=True)]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> tuple[Path, object]:
    """Every case written and decoded by ``load_audio`` in one child process."""
    folder = tmp_path_factory.mktemp("multichannel")
    spec = folder / "cases.json"
    spec.write_text(cases_json(EXACT + RESAMPLED + MONO))
    proc = run_python([TESTS / "audio_cases.py", "decode", spec, folder], timeout=900)
    return folder, proc


def load_result(decoded, case: Case) -> tuple[np.ndarray, dict]:
    folder, proc = decoded
    arr = folder / f"{case.id}.npy"
    if not arr.exists():
        pytest.fail(f"the decoding process {exit_reason(proc)} during '{last_line(proc, 'case ')}', before it "
                    f"wrote {case.id}:\n{proc.stderr[-3000:]}")
    return np.load(arr), json.loads((folder / f"{case.id}.json").read_text())


@pytest.mark.parametrize("case", EXACT, ids=lambda c: c.id)
def test_every_channel_is_decoded_exactly(decoded, case: Case) -> None:
    got, meta = load_result(decoded, case)
    assert meta["codec_format"] == case.fmt and meta["channels"] == case.channels  # the case tests what it says
    if not case.named:
        assert meta["layout"] == f"{case.channels} channels"
    want = expected(case)
    assert meta["sr"] == case.rate and got.dtype == np.float32 and got.shape == want.shape
    # Exact: s16/u8 values and float32 samples convert to float32 without rounding; s32 and
    # doubles round once to float32, so they may differ by half an ulp of values below 1 (2**-25).
    tol = 2.0**-25 if case.fmt in ("s32", "s32p", "dbl") else 0.0
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("case", RESAMPLED, ids=lambda c: c.id)
def test_resampled_on_read_keeps_every_channel(decoded, case: Case) -> None:
    got, meta = load_result(decoded, case)
    src = expected(case)
    assert meta["sr"] == case.read_rate and got.shape[0] == case.channels
    from math import gcd

    g = gcd(case.read_rate, case.rate)
    ref = resample_poly(src.astype(np.float64), case.read_rate // g, case.rate // g, axis=1)
    assert abs(got.shape[1] - ref.shape[1]) <= 2
    n = min(got.shape[1], ref.shape[1])
    edge = n // 10  # filter start-up at both ends
    for ch in range(case.channels):  # each channel is its own tone in its own place
        a, b = ref[ch, edge:n - edge], got[ch, edge:n - edge]
        assert np.corrcoef(a, b)[0, 1] > 0.99, f"channel {ch}"
        assert np.sqrt(np.mean(b**2)) == pytest.approx(np.sqrt(np.mean(a**2)), rel=0.03)


@pytest.mark.parametrize("case", MONO, ids=lambda c: c.id)
def test_mono_averages_all_channels(decoded, case: Case) -> None:
    got, _ = load_result(decoded, case)
    want = expected(case).mean(axis=0, keepdims=True)
    # the mean of C float32 values: C additions, each rounding by at most half an ulp of a sum below C
    np.testing.assert_allclose(got, want, rtol=0, atol=case.channels * 2.0**-24)


# -- through the nodes (real ComfyUI modules, in a child process) ----------------------------

S = 2**-0.5  # -3 dB
ITU_71 = [(1, 0), (0, 1), (S, S), (0, 0), (S, 0), (0, S), (S, 0), (0, S)]  # FL FR FC LFE BL BR SL SR: ITU-R BS.775


@pytest.fixture(scope="module")
def through_nodes(tmp_path_factory) -> tuple[Path, object]:
    work = tmp_path_factory.mktemp("nodes")
    return work, run_python([TESTS / "audio_cases.py", "nodes", work], timeout=900)


def node_result(run, name: str) -> tuple[np.ndarray, dict]:
    work, proc = run
    if not (work / f"{name}.json").exists():
        pytest.fail(f"the node process {exit_reason(proc)} during '{last_line(proc, 'case ')}':\n{proc.stderr[-3000:]}")
    return json.loads((work / f"{name}.json").read_text())


def test_load_audio_node_keeps_7_1(through_nodes) -> None:
    meta = node_result(through_nodes, "load_audio_7.1")
    got = np.load(through_nodes[0] / "load_audio_7.1.npy")
    assert meta["sr"] == 48000
    np.testing.assert_array_equal(got, expected(Case(8, 48000, "s16"))[None])  # AUDIO [1, 8, T], exact


def test_load_video_node_7_1_aac_track_and_save(through_nodes) -> None:
    meta = node_result(through_nodes, "aac71.mp4")
    loaded = np.load(through_nodes[0] / "aac71.mp4.load.npy")
    assert (meta["fps"], meta["count"], meta["sr"]) == (10.0, 10, 48000)
    assert loaded.shape == (1, 8, 48000)  # the audio under the 10 frames (1 s)
    seg, hz = middle(loaded[0], 48000), frequencies(8)
    for ch in range(8):
        if ch == 3:  # AAC codes the LFE channel only up to ~120 Hz; its 750 Hz tone is gone by design
            continue
        # AAC at 64 kb/s a channel keeps these tones within a few per cent; no tone leaks into another channel
        assert tone_level(seg[ch], 48000, hz[ch]) == pytest.approx(0.2, abs=0.02), f"channel {ch}"
        assert max(tone_level(seg[ch], 48000, f) for k, f in enumerate(hz) if k != ch) < 0.01, f"channel {ch}"
    saved = middle(np.load(through_nodes[0] / "aac71.mp4.save.npy"), 48000)
    assert meta["saved_channels"] == 2 and meta["notes"] == ["audio: 8 channels taken as 7.1, downmixed to stereo (ITU-R BS.775)"]
    for ch, (left, right) in enumerate(ITU_71):
        if ch == 3:
            continue
        level = tone_level(seg[ch], 48000, hz[ch])  # what was loaded; a second AAC generation follows
        assert tone_level(saved[0], 48000, hz[ch]) == pytest.approx(level * left, abs=0.02), f"L, channel {ch}"
        assert tone_level(saved[1], 48000, hz[ch]) == pytest.approx(level * right, abs=0.02), f"R, channel {ch}"


@pytest.mark.parametrize("name, channels, sr", [("pcm12.mkv", 12, 48000), ("pcm16.mov", 16, 44100)])
def test_load_video_node_many_unnamed_channels_and_save(through_nodes, name: str, channels: int, sr: int) -> None:
    meta = node_result(through_nodes, name)
    loaded = np.load(through_nodes[0] / f"{name}.load.npy")
    want = pcm16(tones(channels, sr, 1.0)).astype(np.float32) / np.float32(2**15)
    assert meta["sr"] == sr and meta["count"] == 10
    np.testing.assert_array_equal(loaded, want[None])  # PCM: exact, every channel in its place
    saved = middle(np.load(through_nodes[0] / f"{name}.save.npy"), sr)
    assert meta["saved_channels"] == 1 and meta["notes"] == [f"audio: {channels} channels (no speaker layout) averaged to mono"]
    for ch, f in enumerate(frequencies(channels)):  # each tone at 0.2 / C in the AAC mono mix (within ~15 %)
        assert tone_level(saved[0], sr, f) == pytest.approx(0.2 / channels, rel=0.15), f"channel {ch}"
