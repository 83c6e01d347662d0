"""Video probing and lazy reading (engine.media.video_io) on the real clip d20.mp4."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from comfyui_digitalhuman.engine.media import video_io
from comfyui_digitalhuman.engine.media.errors import MediaError
from comfyui_digitalhuman.engine.media.stream import FrameStream
from comfyui_digitalhuman.nodes.common import resolve_inside
from media_frames import VFR_MS, write_timed


@pytest.fixture(scope="module")
def d20(testdata: Path) -> Path:
    return testdata / "d20.mp4"


@pytest.fixture(scope="module")
def d20_frames(d20: Path) -> np.ndarray:
    """Every frame of d20 decoded with plain PyAV: the independent reference."""
    with av.open(str(d20)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_probe_d20(d20: Path) -> None:
    info = video_io.probe(d20)
    assert (info.width, info.height) == (480, 480)
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == 175
    assert info.duration == pytest.approx(7.0, abs=1e-6)
    assert info.has_audio and info.audio_sample_rate == 44100 and info.audio_channels == 2
    assert info.codec == "h264"


def test_probe_counts_frames_when_container_does_not_store_them(d20: Path, tmp_path: Path) -> None:
    mkv = tmp_path / "d20.mkv"
    with av.open(str(d20)) as src, av.open(str(mkv), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for pkt in src.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            dst.mux(pkt)
    with av.open(str(mkv)) as c:
        assert not c.streams.video[0].frames  # Matroska does not store a count
    info = video_io.probe(mkv)
    assert info.frame_count == 175 and not info.has_audio


def test_all_frames_equal_plain_decode(d20: Path, d20_frames: np.ndarray) -> None:
    src = video_io.VideoSource(d20)
    assert (src.frame_count, src.fps, src.width, src.height) == (175, 25.0, 480, 480)
    got = [c for c in src.iter_chunks(40)]
    assert [len(c) for c in got] == [40, 40, 40, 40, 15]
    assert all(c.dtype == np.uint8 for c in got)
    np.testing.assert_array_equal(np.concatenate(got), d20_frames)


@pytest.mark.parametrize(
    "opts, expect_idx",
    [
        (dict(skip_first=10, select_every_nth=3, frame_cap=20), list(range(10, 175, 3))[:20]),
        (dict(skip_first=170), list(range(170, 175))),
        (dict(frame_cap=7), list(range(7))),
        (dict(select_every_nth=50), [0, 50, 100, 150]),
    ],
)
def test_selection_options(d20: Path, d20_frames: np.ndarray, opts: dict, expect_idx: list[int]) -> None:
    src = video_io.VideoSource(d20, **opts)
    assert src.frame_count == len(expect_idx)
    assert src.fps == pytest.approx(25.0 / opts.get("select_every_nth", 1))
    np.testing.assert_array_equal(src.read_all(), d20_frames[expect_idx])


@pytest.mark.parametrize("fps", [12.5, 30.0])
def test_force_fps_nearest_at_or_before(d20: Path, d20_frames: np.ndarray, fps: float) -> None:
    src = video_io.VideoSource(d20, force_fps=fps)
    expected_count = math.ceil(7.0 * fps - 1e-9)  # output times i/fps inside [0, 7.0)
    assert src.frame_count == expected_count == {12.5: 88, 30.0: 210}[fps]
    assert src.fps == fps
    done = 0
    for chunk in src.iter_chunks(64):
        for k, img in enumerate(chunk):
            i = done + k
            j = math.floor(i / fps * 25.0 + 1e-9)  # latest source frame with j/25 <= i/fps
            np.testing.assert_array_equal(img, d20_frames[j], err_msg=f"output frame {i}")
        done += len(chunk)
    assert done == expected_count


def test_force_fps_with_skip_and_cap(d20: Path, d20_frames: np.ndarray) -> None:
    src = video_io.VideoSource(d20, force_fps=5, skip_first=3, select_every_nth=2, frame_cap=4)
    # at 5 fps frame i shows source frame 5*i; skip 3 -> i = 3, 5, 7, 9
    assert src.frame_count == 4 and src.fps == 2.5
    np.testing.assert_array_equal(src.read_all(), d20_frames[[15, 25, 35, 45]])


def test_stream_from_video_matches_source(d20: Path, d20_frames: np.ndarray) -> None:
    s = FrameStream.from_video(d20, frame_cap=20)
    assert (s.frame_count, s.width, s.height, s.fps) == (20, 480, 480, 25.0)
    np.testing.assert_array_equal(s.read_all(), d20_frames[:20])
    np.testing.assert_array_equal(s.read_all(), d20_frames[:20])  # re-iterable


def test_read_video_helper(d20: Path, d20_frames: np.ndarray) -> None:
    frames, fps = video_io.read_video(d20, skip_first=100, frame_cap=5)
    assert fps == 25.0
    np.testing.assert_array_equal(frames, d20_frames[100:105])


def test_audio_track_of_d20(d20: Path) -> None:
    wave, sr = video_io.read_audio_track(d20)
    assert sr == 44100 and wave.dtype == np.float32 and wave.shape[0] == 2
    assert abs(wave.shape[1] / sr - 7.0) < 1 / 25
    assert 0.001 < float(np.sqrt(np.mean(wave**2))) < 1.0  # real speech, not silence
    assert np.abs(wave).max() <= 1.0


def test_audio_track_of_silent_video_is_empty_but_valid(testdata: Path) -> None:
    wave, sr = video_io.read_audio_track(testdata / "yongen.mp4")
    assert wave.shape == (1, 0) and wave.dtype == np.float32 and sr == 44100


# -- bad input -----------------------------------------------------------------------------

def test_truncated_video_is_named(d20: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(d20.read_bytes()[: d20.stat().st_size // 2])
    src = video_io.VideoSource(bad)  # the header is intact
    with pytest.raises(MediaError, match=r"cut\.mp4.*(truncated|damaged)"):
        src.read_all()


def test_truncated_header_is_named(d20: Path, tmp_path: Path) -> None:
    bad = tmp_path / "head.mp4"
    bad.write_bytes(d20.read_bytes()[:300])
    with pytest.raises(MediaError, match=r"head\.mp4.*(truncated|not a readable video)"):
        video_io.probe(bad)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError, match=r"notes\.mp4.*not a readable video"):
        video_io.VideoSource(bad)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4.*empty"):
        video_io.probe(tmp_path / "empty.mp4")
    with pytest.raises(MediaError, match=r"nope\.mp4.*not found"):
        video_io.probe(tmp_path / "nope.mp4")


def test_audio_only_file(testdata: Path) -> None:
    with pytest.raises(MediaError, match=r"yongen\.wav.*only audio.*DH_LoadAudio"):
        video_io.VideoSource(testdata / "yongen.wav")


def test_image_file(testdata: Path) -> None:
    with pytest.raises(MediaError, match=r"s0\.jpg.*still image"):
        video_io.VideoSource(testdata / "s0.jpg")


def test_zero_frames_after_options(d20: Path) -> None:
    with pytest.raises(MediaError, match=r"d20\.mp4.*no frames left.*skip_first=175"):
        video_io.VideoSource(d20, skip_first=175)
    with pytest.raises(MediaError, match=r"select_every_nth must be >= 1"):
        video_io.VideoSource(d20, select_every_nth=0)


def test_unknown_codec(d20: Path, tmp_path: Path) -> None:
    data = d20.read_bytes()
    at = data.index(b"avc1", data.index(b"stsd"))  # the sample entry's codec tag
    bad = tmp_path / "odd_codec.mp4"
    bad.write_bytes(data[:at] + b"zzzz" + data[at + 4:])
    with pytest.raises(MediaError, match=r"odd_codec\.mp4.*unknown or unsupported video codec"):
        video_io.probe(bad)


def test_paths_outside_the_input_folder(tmp_path: Path, d20: Path) -> None:
    base = tmp_path / "input"
    base.mkdir()
    shutil.copy(d20, base / "clip.mp4")
    assert resolve_inside(base, "clip.mp4") == (base / "clip.mp4").resolve()
    with pytest.raises(ValueError, match=r"no absolute paths, no '\.\.'"):
        resolve_inside(base, "../clip.mp4")
    with pytest.raises(ValueError, match=r"no absolute paths"):
        resolve_inside(base, str(d20))
    (base / "link.mp4").symlink_to(d20)
    with pytest.raises(ValueError, match=r"resolves outside"):
        resolve_inside(base, "link.mp4")


def test_audio_under_selected_frames(d20: Path) -> None:
    full, sr = video_io.read_audio_track(d20)
    src = video_io.VideoSource(d20, force_fps=12.5, skip_first=5, frame_cap=30)
    assert src.time_range() == pytest.approx((0.4, 2.4))
    wave, sr2 = src.read_audio()
    assert sr2 == sr and wave.shape == (2, round(2.4 * sr))
    start = round(0.4 * sr)
    np.testing.assert_array_equal(wave, full[:, start:start + wave.shape[1]])


@pytest.mark.parametrize("claimed, ok", [(177, True), (200, False)])
def test_header_count_a_little_high_is_tolerated(d20: Path, d20_frames: np.ndarray, claimed: int, ok: bool) -> None:
    """Edit lists can hide a frame or two the header counts; many missing frames mean truncation."""
    import dataclasses

    src = video_io.VideoSource(d20, skip_first=170)
    src.info = dataclasses.replace(src.info, frame_count=claimed)
    src.base_count = claimed
    src.frame_count = claimed - 170
    if ok:
        got = src.read_all()
        assert len(got) == 7
        np.testing.assert_array_equal(got[:5], d20_frames[170:])
        np.testing.assert_array_equal(got[5:], d20_frames[[174, 174]])
    else:
        with pytest.raises(MediaError, match=r"d20\.mp4.*ended after 175 of 200 frames"):
            src.read_all()


# -- variable frame rate ---------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate_is_read_by_timestamps(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"vfr.{ext}"
    write_timed(path, VFR_MS)
    src = video_io.VideoSource(path)
    span = (VFR_MS[-1] + 40) / 1000  # 1.4 s: the last frame lasts the median interval
    assert src.timing.variable and src.timing.count == 25
    assert (src.timing.min_interval, src.timing.max_interval) == pytest.approx((0.040, 0.120))
    assert src.fps == pytest.approx(25 / span)  # the average rate (Matroska's header says 25)
    assert src.frame_count == math.ceil(span * src.fps - 1e-9) == 25
    assert src.time_range() == pytest.approx((0.0, span))  # the sound under the frames: all 1.4 s
    got = src.read_all()[:, 0, 0, 0].astype(int)
    # output frame i at i / fps shows the latest source frame starting at or before it
    want = [max(k for k, t in enumerate(VFR_MS) if t / 1000 <= i / src.fps + 1e-9) for i in range(25)]
    assert len(set(want)) < 25  # some frames repeat (in the slow stretch) and some are dropped
    np.testing.assert_allclose(got, 8 * np.array(want), atol=3)  # H.264 at crf 10 on flat gray
    assert src.notes == [
        f"variable frame rate (frame intervals 40.0 to 120.0 ms): loaded as a constant {25 / span:.3f} fps (the "
        "average over 1.40 s), each frame shown at its own time, so frames are repeated or dropped and the picture "
        "stays in sync with the sound; set force_fps for another rate"]
    forced = video_io.VideoSource(path, force_fps=10)
    assert forced.fps == 10 and forced.frame_count == 14
    assert forced.notes == ["variable frame rate (frame intervals 40.0 to 120.0 ms): resampled by timestamps to the "
                            "force_fps of 10 fps"]


def test_rounded_timestamps_of_a_constant_rate_are_not_vfr(tmp_path: Path, d20: Path, d20_frames: np.ndarray) -> None:
    path = tmp_path / "ntsc.mkv"
    write_timed(path, [round(k * 1001 / 30) for k in range(30)])  # 29.97 fps in milliseconds: 33 or 34 ms
    src = video_io.VideoSource(path)
    assert not src.timing.variable and src.notes == [] and src.frame_count == 30
    np.testing.assert_allclose(src.read_all()[:, 0, 0, 0].astype(int), 8 * np.arange(30), atol=3)  # frame by frame
    real = video_io.VideoSource(d20)
    assert not real.timing.variable and real.notes == [] and real.timing.median_interval == pytest.approx(0.04)


def test_read_into_float_is_frames_over_255(d20: Path, d20_frames: np.ndarray) -> None:
    """Frames decoded straight into a float32 IMAGE-like array equal uint8 / 255 in float32
    (one correctly rounded division either way, so exactly equal)."""
    src = video_io.VideoSource(d20, skip_first=3, frame_cap=10)
    out = np.full((10, 480, 480, 3), np.nan, np.float32)
    calls: list[tuple[int, int]] = []
    assert src.read_into(out, progress=lambda d, t: calls.append((d, t))) == 10
    np.testing.assert_array_equal(out, d20_frames[3:13].astype(np.float32) / np.float32(255.0))
    assert calls == [(8, 10), (10, 10)]
    with pytest.raises(ValueError, match=r"out must be \[10, 480, 480, 3\]"):
        src.read_into(np.empty((9, 480, 480, 3), np.float32))


def test_chunks_are_separate_arrays(d20: Path, d20_frames: np.ndarray) -> None:
    """A consumer may keep a chunk while the next is decoded (each is filled into a new array)."""
    chunks = list(video_io.VideoSource(d20, frame_cap=20).iter_chunks(8))
    assert [len(c) for c in chunks] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate(chunks), d20_frames[:20])
