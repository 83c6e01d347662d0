"""FrameStream (engine.media.stream): lazy steps, conversions, errors and bounded memory."""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.media import video_io
from comfyui_digitalhuman.engine.media.errors import MediaError
from comfyui_digitalhuman.engine.media.stream import FrameStream, chunked
from comfyui_digitalhuman.engine.media.video_write import write_mp4
from comfyui_digitalhuman.nodes.common import image_to_uint8


def ramp(n: int, h: int = 6, w: int = 8) -> np.ndarray:
    return (np.arange(n * h * w * 3) % 251).reshape(n, h, w, 3).astype(np.uint8)


def test_from_images_tensor_matches_core_conversion() -> None:
    images = torch.rand(10, 6, 8, 3)
    s = FrameStream.from_images(images, 12.0)
    assert (s.frame_count, s.width, s.height, s.fps, len(s)) == (10, 8, 6, 12.0, 10)
    chunks = list(s.iter_chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), image_to_uint8(images))


def test_map_chunks_is_lazy_and_ordered() -> None:
    seen: list[int] = []

    def invert(batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8
        seen.append(len(batch))
        return 255 - batch

    frames = ramp(7)
    s = FrameStream.from_images(frames, 25).map_chunks(invert, "invert")
    assert seen == [] and s.steps == ["invert"]  # nothing runs until iterated
    np.testing.assert_array_equal(s.read_all(), 255 - frames)
    assert seen == [7]
    assert "invert" in repr(s) and "7 frames" in repr(s)


@pytest.mark.parametrize("as_", ["float", "image"])
def test_float_and_image_steps(as_: str) -> None:
    frames = ramp(5)
    kinds = []

    def half(batch):
        kinds.append(type(batch).__name__)
        assert float(batch.max()) <= 1.0
        return batch * 0.5

    got = FrameStream.from_images(frames, 25).map_chunks(half, "half", as_=as_).read_all()
    assert kinds == (["ndarray"] if as_ == "float" else ["Tensor"])
    np.testing.assert_allclose(got.astype(int), (frames.astype(np.float32) / 2 + 0.5).astype(int), atol=1)


def test_steps_chain_with_resize() -> None:
    frames = ramp(4, 6, 8)
    s = (FrameStream.from_images(frames, 25)
         .map_chunks(lambda b: b[:, ::2, ::2], "half size", out_size=(4, 3))
         .map_chunks(lambda b: np.clip(b.astype(int) + 1, 0, 255), "brighten"))
    assert (s.width, s.height, s.steps) == (4, 3, ["half size", "brighten"])
    np.testing.assert_array_equal(s.read_all(), np.clip(frames[:, ::2, ::2].astype(int) + 1, 0, 255))


def test_step_errors_name_the_step_and_frames() -> None:
    s = FrameStream.from_images(ramp(6), 25)
    with pytest.raises(MediaError, match=r"step 'drop' on frames 4\.\.5: returned 1 frames for 2"):
        list(s.map_chunks(lambda b: b[:1] if len(b) == 2 else b, "drop").iter_chunks(4))
    with pytest.raises(MediaError, match=r"step 'crop' on frames 0\.\.3: returned frames of 4x6, expected 8x6"):
        list(s.map_chunks(lambda b: b[:, :, :4], "crop").iter_chunks(4))
    with pytest.raises(MediaError, match=r"must be a \[B, H, W, C\] batch"):
        FrameStream.from_images(np.zeros((4, 4)), 25)
    with pytest.raises(MediaError, match="fps must be > 0"):
        FrameStream.from_images(ramp(2), 0)


def test_video_stream_step_sees_decoded_frames(testdata: Path) -> None:
    s = FrameStream.from_video(testdata / "d20.mp4", skip_first=50, frame_cap=6)
    means = []
    got = s.map_chunks(lambda b: (means.append(b.mean()), b[:, ::-1])[1], "flip").read_all()
    ref = video_io.VideoSource(testdata / "d20.mp4", skip_first=50, frame_cap=6).read_all()
    np.testing.assert_array_equal(got, ref[:, ::-1])
    assert means and abs(means[0] - ref[: len(ref)].mean()) < 100


def test_file_to_stream_to_mp4_holds_one_chunk_at_a_time(tmp_path: Path) -> None:
    """Bounded memory: every chunk the source made is freed before the next few are made."""
    alive = [0]
    max_alive = [0]
    chunk = 8

    class Tracked(np.ndarray):
        pass

    def source(n: int):
        for i in range(0, 96, n):
            gc.collect()
            arr = np.full((n, 32, 32, 3), i % 255, np.uint8).view(Tracked)
            alive[0] += 1
            weakref.finalize(arr, lambda: alive.__setitem__(0, alive[0] - 1))
            max_alive[0] = max(max_alive[0], alive[0])
            yield arr

    s = FrameStream(source, 25, 96, 32, 32, name="tracked").map_chunks(lambda b: 255 - b, "invert")
    info = write_mp4(tmp_path / "b.mp4", s, 25, preset="ultrafast", chunk=chunk)
    assert info.frame_count == 96
    assert max_alive[0] <= 2  # the chunk being made, and at most the previous one still referenced


def test_read_all_spills_a_clip_over_budget_to_an_unnamed_file(tmp_path: Path) -> None:
    frames = ramp(9)
    stream = FrameStream.from_images(torch.from_numpy(frames).float() / 255.0, 25.0).map_chunks(
        lambda b: 255 - b, "invert")
    in_ram = stream.read_all(spill_dir=str(tmp_path), ram_budget=frames.nbytes)  # fits: plain array
    assert type(in_ram) is np.ndarray
    spilled = stream.read_all(spill_dir=str(tmp_path), ram_budget=frames.nbytes - 1)
    assert isinstance(spilled, np.memmap) and spilled.shape == frames.shape
    np.testing.assert_array_equal(spilled, 255 - frames)
    np.testing.assert_array_equal(spilled, in_ram)
    assert list(tmp_path.iterdir()) == []  # no named file left behind, even while the array lives
    spilled[0] = 0  # writable like an array (pasting works on it)
    assert spilled[0].max() == 0
    assert type(stream.read_all()) is np.ndarray  # without a folder nothing spills


def test_chunked_groups_single_frames_in_order_with_a_short_last_chunk():
    frames = [np.full((2, 3, 3), i, np.uint8) for i in range(7)]
    got = list(chunked(iter(frames), 3))
    assert [c.shape for c in got] == [(3, 2, 3, 3), (3, 2, 3, 3), (1, 2, 3, 3)]
    assert [int(v) for c in got for v in c[:, 0, 0, 0]] == list(range(7))
    assert list(chunked(iter(()), 3)) == []
