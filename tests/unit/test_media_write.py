"""MP4 writing (engine.media.video_write): round trip, odd sizes, audio fitting, NaN audio, partial files."""
from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from comfyui_digitalhuman.engine.media import video_io
from comfyui_digitalhuman.engine.media.errors import MediaError, MediaWriteError
from comfyui_digitalhuman.engine.media.stream import FrameStream
from comfyui_digitalhuman.engine.media.video_write import fps_fraction, partial_path_for, write_mp4


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def decode(path: Path) -> tuple[np.ndarray, list[float]]:
    """Frames and their timestamps (s), with plain PyAV."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, ts = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            ts.append(float(f.pts * s.time_base))
        return np.stack(frames), ts


def audio_seconds(path: Path) -> tuple[float, np.ndarray, int]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        parts = [f.to_ndarray() for f in c.decode(s)]
        wave = np.concatenate(parts, axis=1)
        return wave.shape[1] / s.codec_context.sample_rate, wave, s.codec_context.sample_rate


@pytest.fixture(scope="module")
def clip(testdata: Path) -> np.ndarray:
    """40 real frames of d20 (480x480)."""
    return video_io.VideoSource(testdata / "d20.mp4", frame_cap=40).read_all()


def test_round_trip_d20_with_audio(testdata: Path, tmp_path: Path) -> None:
    src = testdata / "d20.mp4"
    stream = FrameStream.from_video(src)
    audio = video_io.read_audio_track(src)
    calls: list[tuple[int, int]] = []
    out = tmp_path / "rt.mp4"
    info = write_mp4(out, stream, stream.fps, audio=audio, preset="ultrafast", progress=lambda d, t: calls.append((d, t)))
    assert out.is_file() and not partial_path_for(out).exists()
    assert (info.frame_count, info.width, info.height, info.fps) == (175, 480, 480, 25.0)
    assert info.duration == pytest.approx(7.0) and info.audio_sample_rate == 44100
    assert calls[-1] == (175, 175) and len(calls) == math.ceil(175 / 16)
    probed = video_io.probe(out)
    assert (probed.width, probed.height, probed.frame_count, probed.fps, probed.codec) == (480, 480, 175, 25.0, "h264")
    assert probed.has_audio and probed.audio_sample_rate == 44100 and probed.audio_channels == 2
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.audio[0].codec_context.name == "aac"
    secs, wave, _ = audio_seconds(out)
    assert abs(secs - 7.0) < 1 / 25
    ref = audio[0][:, : wave.shape[1]]
    n = min(ref.shape[1], wave.shape[1])
    # AAC keeps the speech: energy matches and the signals correlate (priming delay is compensated)
    assert np.corrcoef(ref[0, 2000:n - 2000], wave[0, 2000:n - 2000])[0, 1] > 0.9
    got, ts = decode(out)
    want = video_io.VideoSource(src).read_all()
    assert got.shape == want.shape
    assert psnr(got, want) > 30
    np.testing.assert_allclose(ts, np.arange(175) / 25.0, atol=1e-3)


def test_float_images_and_fractional_fps(clip: np.ndarray, tmp_path: Path) -> None:
    images = clip[:12].astype(np.float32) / 255.0  # IMAGE-like batch
    info = write_mp4(tmp_path / "f.mp4", images, 30000 / 1001, preset="ultrafast")
    assert fps_fraction(30000 / 1001) == fps_fraction(29.97002997) and fps_fraction(12.5).denominator == 2
    p = video_io.probe(tmp_path / "f.mp4")
    assert p.frame_count == 12 and p.fps == pytest.approx(30000 / 1001, rel=1e-6)
    assert info.duration == pytest.approx(12 / (30000 / 1001))
    assert psnr(decode(tmp_path / "f.mp4")[0], clip[:12]) > 30


def test_odd_size_is_padded_with_edge_pixels(clip: np.ndarray, tmp_path: Path) -> None:
    frames = clip[:5, 100:175, 50:151]  # 101 x 75
    info = write_mp4(tmp_path / "odd.mp4", [frames[:2], frames[2:]], 25, preset="ultrafast", crf=10)
    assert (info.width, info.height, info.size_padded) == (102, 76, True)
    got, _ = decode(tmp_path / "odd.mp4")
    assert got.shape == (5, 76, 102, 3)
    assert psnr(got[:, :75, :101], frames) > 30
    want = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert psnr(got[:, :, 101], want[:, :, 101]) > 30  # the added column repeats the edge
    assert psnr(got[:, 75], want[:, 75]) > 30


def tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[None], channels, axis=0).astype(np.float32)


def test_pad_or_trim_cuts_longer_audio_and_reports_it(clip: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "trim.mp4"
    info = write_mp4(out, clip[:10], 10, audio=(tone(2.5, 16000), 16000), preset="ultrafast")
    assert info.audio_trimmed_s == pytest.approx(1.5) and info.audio_padded_s == 0 and info.held_frames == 0
    assert info.audio_duration == pytest.approx(1.0)
    secs, _, sr = audio_seconds(out)
    assert sr == 16000 and abs(secs - 1.0) < 1 / 10
    assert video_io.probe(out).frame_count == 10


def test_pad_or_trim_pads_shorter_audio_with_silence(clip: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "pad.mp4"
    info = write_mp4(out, clip[:20], 10, audio=(tone(0.5, 48000, 2), 48000), preset="ultrafast")
    assert info.audio_padded_s == pytest.approx(1.5) and info.audio_trimmed_s == 0
    secs, wave, _ = audio_seconds(out)
    assert abs(secs - 2.0) < 1 / 10
    assert np.sqrt(np.mean(wave[:, 4800:19200] ** 2)) > 0.15  # the tone
    assert np.abs(wave[:, 48000:90000]).max() < 0.01  # the padding is silence


def test_extend_video_holds_last_frame(clip: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "ext.mp4"
    info = write_mp4(out, clip[:10], 10, audio=(tone(2.35, 22050), 22050), audio_fit="extend_video", preset="ultrafast")
    assert info.frame_count == 24 and info.held_frames == 14  # ceil(2.35 * 10)
    assert info.audio_trimmed_s == 0 and info.audio_padded_s == pytest.approx(0.05, abs=1e-3)
    got, _ = decode(out)
    assert len(got) == 24
    for i in range(10, 24):
        assert psnr(got[i], clip[9]) > 30
    assert psnr(got[5], clip[5]) > 30
    secs, _, _ = audio_seconds(out)
    assert abs(secs - 2.4) < 1 / 10


def test_nan_and_inf_audio_become_silence(clip: np.ndarray, tmp_path: Path) -> None:
    wave = tone(1.0, 16000)
    wave[0, 4000:8000] = np.nan
    wave[0, 100] = np.inf
    wave[0, 200] = -np.inf
    wave[0, 12000:12010] = 7.0  # out of range: clipped
    out = tmp_path / "nan.mp4"
    info = write_mp4(out, clip[:10], 10, audio=(wave, 16000), preset="ultrafast")
    assert info.audio_nonfinite == 4002
    _, got, _ = audio_seconds(out)
    assert np.isfinite(got).all() and np.abs(got).max() <= 1.05
    assert np.abs(got[0, 5000:7000]).max() < 0.05  # inside the NaN run (past the AAC delay)
    assert np.sqrt(np.mean(got[0, 9000:11000] ** 2)) > 0.15


def test_audio_odd_rates_and_channels(clip: np.ndarray, tmp_path: Path) -> None:
    info = write_mp4(tmp_path / "r.mp4", clip[:5], 5, audio=(tone(1.0, 37000, 3), 37000), preset="ultrafast")
    assert info.audio_sample_rate == 48000
    # 3 channels are taken as 3.0 (FL FR FC) and downmixed to stereo (tests/unit/test_media_multichannel.py
    # checks the matrix)
    assert (info.audio_channels_in, info.audio_channels) == (3, 2) and "3.0" in info.audio_downmix
    p = video_io.probe(tmp_path / "r.mp4")
    assert p.audio_sample_rate == 48000 and p.audio_channels == 2


def test_error_midway_keeps_partial_and_says_so(clip: np.ndarray, tmp_path: Path) -> None:
    def chunks():
        yield clip[:8]
        yield clip[8:16]
        raise RuntimeError("model exploded")

    out = tmp_path / "broken.mp4"
    with pytest.raises(MediaWriteError, match=r"broken\.mp4.*frame 16.*model exploded.*kept in '.*broken\.partial\.mp4'") as ei:
        write_mp4(out, chunks(), 25, preset="ultrafast")
    assert not out.exists()
    partial = Path(ei.value.partial_path)
    assert partial == tmp_path / "broken.partial.mp4" and video_io.probe(partial).frame_count == 16


def test_interrupt_is_reraised_unchanged(clip: np.ndarray, tmp_path: Path) -> None:
    class Interrupted(Exception):
        pass

    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted()

    out = tmp_path / "stop.mp4"
    with pytest.raises(Interrupted):
        write_mp4(out, FrameStream.from_images(clip, 25), 25, preset="ultrafast", chunk=8, check_interrupt=check)
    assert not out.exists()
    assert video_io.probe(partial_path_for(out)).frame_count == 16


def test_size_change_and_bad_arguments(clip: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(MediaWriteError, match=r"frame 4 is 100x100, but the video started at 480x480"):
        write_mp4(tmp_path / "s.mp4", [clip[:4], clip[4:6, :100, :100]], 25, preset="ultrafast")
    assert not (tmp_path / "s.mp4").exists()
    with pytest.raises(MediaError, match="fps must be a positive number"):
        write_mp4(tmp_path / "x.mp4", clip[:2], 0)
    with pytest.raises(MediaError, match="audio_fit must be one of"):
        write_mp4(tmp_path / "x.mp4", clip[:2], 25, audio=(tone(1, 16000), 16000), audio_fit="stretch")
    with pytest.raises(MediaError, match="no frames to write"):
        write_mp4(tmp_path / "x.mp4", [], 25)
    assert not (tmp_path / "x.mp4").exists() and not partial_path_for(tmp_path / "x.mp4").exists()
    with pytest.raises(MediaError, match=r"frames must be \[n, H, W, 3\]"):
        write_mp4(tmp_path / "x.mp4", [np.zeros((2, 8, 8, 5), np.uint8)], 25)
