"""Audio loading (engine.media.audio_io) for wav and for mp3/flac/ogg/m4a made from yongen.wav."""
from __future__ import annotations

from pathlib import Path

import av
import wave as wavmod

import numpy as np
import pytest
from scipy.signal import resample_poly

from comfyui_digitalhuman.engine.media.audio_io import clean_audio, load_audio, read_audio_track
from comfyui_digitalhuman.engine.media.errors import MediaError


@pytest.fixture(scope="module")
def yongen(testdata: Path) -> Path:
    return testdata / "yongen.wav"


@pytest.fixture(scope="module")
def yongen_ref(yongen: Path) -> tuple[np.ndarray, int]:
    """The wav's samples read with the standard library (an independent decoder), float32 [C, T]."""
    with wavmod.open(str(yongen)) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
        return (raw.T.astype(np.float32) / 32768.0), w.getframerate()


def encode(path: Path, wave: np.ndarray, sr: int, codec: str) -> Path:
    """Write ``wave`` [2, T] with a PyAV encoder (the test's own way of making compressed files)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=sr)
        s.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout="stereo")
        frame.sample_rate = sr
        frame.pts = 0
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def best_corr(a: np.ndarray, b: np.ndarray, max_lag: int = 3000) -> float:
    """Peak normalised correlation of two mono signals over lags up to ``max_lag`` (codec delay)."""
    n = min(len(a), len(b)) - 2 * max_lag
    ref = a[max_lag:max_lag + n]
    best = 0.0
    for lag in range(0, 2 * max_lag + 1, 1):
        seg = b[lag:lag + n]
        c = float(np.dot(ref, seg) / (np.linalg.norm(ref) * np.linalg.norm(seg) + 1e-9))
        best = max(best, c)
        if best > 0.999:
            break
    return best


def test_wav_native(yongen: Path, yongen_ref) -> None:
    wave, sr = load_audio(yongen)
    ref, ref_sr = yongen_ref
    assert sr == 48000 == ref_sr
    assert wave.dtype == np.float32 and wave.shape == (2, 384000) == ref.shape
    np.testing.assert_allclose(wave, ref, atol=1e-6)


def test_wav_resampled_to_16k_mono(yongen: Path, yongen_ref) -> None:
    wave, sr = load_audio(yongen, sample_rate=16000, mono=True)
    assert sr == 16000 and wave.shape == (1, 128000) and wave.dtype == np.float32
    ref = resample_poly(yongen_ref[0].mean(axis=0), 1, 3)
    assert abs(len(ref) - wave.shape[1]) <= 1
    n = min(len(ref), wave.shape[1])
    corr = np.corrcoef(ref[1000:n - 1000], wave[0, 1000:n - 1000])[0, 1]
    assert corr > 0.99
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(np.sqrt(np.mean(ref**2)), rel=0.05)


def test_mono_is_channel_mean(yongen: Path, yongen_ref) -> None:
    wave, _ = load_audio(yongen, mono=True)
    np.testing.assert_allclose(wave[0], yongen_ref[0].mean(axis=0), atol=1e-6)


@pytest.mark.parametrize(
    "name, codec, lossless",
    [("a.flac", "flac", True), ("a.mp3", "libmp3lame", False), ("a.m4a", "aac", False), ("a.ogg", "libopus", False)],
)
def test_compressed_formats(tmp_path: Path, yongen_ref, name: str, codec: str, lossless: bool) -> None:
    src = yongen_ref[0][:, 48000:48000 * 3]  # 2 s keeps the encoders fast
    path = encode(tmp_path / name, src, 48000, codec)
    wave, sr = load_audio(path)
    assert sr == 48000 and wave.shape[0] == 2 and wave.dtype == np.float32
    assert abs(wave.shape[1] - src.shape[1]) < 4096  # codec padding only
    if lossless:
        np.testing.assert_allclose(wave[:, : src.shape[1]], src, atol=1.0 / 32768 + 1e-6)
    else:
        assert best_corr(src.mean(axis=0), wave.mean(axis=0)) > 0.9
    mono16, sr16 = load_audio(path, sample_rate=16000, mono=True)
    assert sr16 == 16000 and mono16.shape[0] == 1
    assert abs(mono16.shape[1] - wave.shape[1] / 3) <= 2


def test_video_without_audio_is_an_error_for_load_audio(testdata: Path) -> None:
    with pytest.raises(MediaError, match=r"yongen\.mp4.*no audio stream.*video"):
        load_audio(testdata / "yongen.mp4")
    wave, sr = read_audio_track(testdata / "yongen.mp4")
    assert wave.shape == (1, 0) and sr == 44100


def test_bad_audio_files(tmp_path: Path) -> None:
    bad = tmp_path / "speech.wav"
    bad.write_text("not audio at all")
    with pytest.raises(MediaError, match=r"speech\.wav.*not a readable media file"):
        load_audio(bad)
    with pytest.raises(MediaError, match=r"gone\.mp3.*not found"):
        load_audio(tmp_path / "gone.mp3")
    with pytest.raises(MediaError, match=r"sample_rate must be >= 0"):
        load_audio(bad, sample_rate=-1)


def test_clean_audio() -> None:
    x = np.array([[np.nan, np.inf, -np.inf, 2.0, -3.0, 0.25]], dtype=np.float64)
    y = clean_audio(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.array([[0, 0, 0, 1, -1, 0.25]], dtype=np.float32))


def _adts(path: Path, wave: np.ndarray, sr: int, layout: str) -> bytes:
    """Raw AAC (ADTS) of ``wave`` [C, T]: every frame header carries its channel configuration."""
    with av.open(str(path), "w", format="adts") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = layout
        s.bit_rate = 96000 * wave.shape[0]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T).reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate, frame.pts = sr, 0
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path.read_bytes()


def _tone_power(x: np.ndarray, sr: int, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(round(hz * len(x) / sr))
    return float(spec[k - 2:k + 3].max() / (spec.max() + 1e-12))


def test_layout_change_midstream_is_converted_to_the_first_layout(tmp_path: Path) -> None:
    """Broadcast AAC may switch from stereo to 5.1 mid-stream; the rest is rematrixed to stereo
    (FFmpeg's ITU matrix: L = FL + 0.707 FC + 0.707 BL, LFE left out), not an error."""
    sr, n = 48000, 48000
    t = np.arange(n) / sr
    st = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 500 * t)]).astype(np.float32)
    hz51 = [700, 900, 1100, 1300, 1500, 1700]  # FL FR FC LFE BL BR
    s51 = np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in hz51]).astype(np.float32)
    data = _adts(tmp_path / "a.aac", st, sr, "stereo") + _adts(tmp_path / "b.aac", s51, sr, "5.1")
    mixed = tmp_path / "switch.aac"
    mixed.write_bytes(data)
    wave, got_sr = load_audio(mixed)
    assert got_sr == sr and wave.shape[0] == 2
    assert abs(wave.shape[1] - 2 * n) <= 3 * 1024  # both parts (AAC adds up to ~2 frames of padding each)
    head, tail = wave[:, 4096:n - 4096], wave[:, n + 8192:2 * n - 4096]
    assert _tone_power(head[0], sr, 300) > 0.5 and _tone_power(head[1], sr, 500) > 0.5
    for hz in (700, 1100, 1500):  # FL, FC, BL reach the left side
        assert _tone_power(tail[0], sr, hz) > 0.3, hz
    for hz in (900, 1700):  # FR, BR do not
        assert _tone_power(tail[0], sr, hz) < 0.05, hz
    assert _tone_power(tail[0], sr, 1300) < 0.05 and _tone_power(tail[1], sr, 1300) < 0.05  # LFE left out
