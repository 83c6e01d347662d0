"""``FrameStream``: a lazily evaluated sequence of video frames (the ``DH_VIDEO_STREAM`` type).

Why: an IMAGE batch holds every frame as float32 in RAM (a 10-minute 512x512 25 fps video is
~47 GB). A FrameStream is a *recipe* instead: a source (a video file read on demand, or an
array already in memory) plus an ordered list of per-chunk steps added with
:meth:`FrameStream.map_chunks`. Nothing is decoded until someone iterates
:meth:`FrameStream.iter_chunks`; then one chunk at a time flows from the decoder through every
step to the consumer (usually :func:`engine.media.video_write.write_mp4`), so memory stays at
one chunk per step whatever the length.

Contract for the model nodes of later issues (LivePortrait, MuseTalk, ...): accept either an
IMAGE or a DH_VIDEO_STREAM (``nodes.video.frames_input`` turns either into a stream). For a
stream, return ``stream.map_chunks(fn, "<step name>")``
where ``fn`` takes one batch and returns a batch of the same length (frames in order; a step
may keep state across calls, e.g. the last good face box, because chunks arrive in order). The
node then does no work itself; the work happens while the saver iterates. A stream is
re-iterable: every ``iter_chunks`` call decodes again from the start and re-runs the steps.

Frames between steps are uint8 RGB ``[n, H, W, 3]`` numpy arrays. A step chooses what it
receives with ``as_``: ``"uint8"`` (numpy uint8), ``"float"`` (numpy float32 in 0..1) or
``"image"`` (a torch float tensor in 0..1, ComfyUI's IMAGE layout). It may return any of these
(uint8 or float 0..1, numpy or torch); the result is converted back to uint8.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np

from .errors import MediaError

ChunkFn = Callable[[Any], Any]
InputKind = Literal["uint8", "float", "image"]


def to_uint8_batch(batch: Any, where: str) -> np.ndarray:
    """Any frame batch (numpy/torch, uint8 or float 0..1, ``[n,H,W,C]`` or ``[H,W,C]``) -> uint8 ``[n,H,W,3]``."""
    if hasattr(batch, "detach"):  # a torch tensor, without importing torch here
        batch = batch.detach().cpu().numpy()
    arr = np.asarray(batch)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise MediaError(f"{where}: frames must be [n, H, W, 3] (RGB), got shape {tuple(arr.shape)}")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind not in "fiub":
        raise MediaError(f"{where}: frames of dtype {arr.dtype} are not supported")
    if arr.dtype.kind == "f":
        return _float_to_uint8(arr)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """float 0..1 ``[n,H,W,3]`` -> uint8 (NaN -> 0, +-inf -> 1/0, rounded), one frame at a time.

    Why per frame: whole-batch numpy expressions make three or four float32 temporaries of the
    batch (1.6 GB each for 16 frames of 4K), which doubled Save Video's memory on an IMAGE input.
    """
    out = np.empty(arr.shape, dtype=np.uint8)
    tmp = np.empty(arr.shape[1:], dtype=np.float32)
    for i in range(arr.shape[0]):
        np.copyto(tmp, arr[i], casting="same_kind")
        np.nan_to_num(tmp, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(tmp, 0.0, 1.0, out=tmp)
        tmp *= 255.0
        tmp += 0.5
        np.copyto(out[i], tmp, casting="unsafe")  # truncation: x * 255 + 0.5 rounded down = rounded
    return out


def _as_kind(batch: np.ndarray, kind: InputKind):
    if kind == "uint8":
        return batch
    if kind == "float":
        return batch.astype(np.float32) / 255.0
    import torch

    return torch.from_numpy(batch).float().div_(255.0)


@dataclass(frozen=True)
class _Step:
    fn: ChunkFn
    name: str
    as_: InputKind
    out_size: tuple[int, int] | None


class FrameStream:
    """A lazily evaluated, re-iterable sequence of RGB frames with a known count, size and fps."""

    def __init__(
        self,
        open_chunks: Callable[[int], Iterable[np.ndarray]],
        fps: float,
        frame_count: int,
        width: int,
        height: int,
        name: str = "frames",
        steps: tuple[_Step, ...] = (),
        source_size: tuple[int, int] | None = None,
    ):
        if fps <= 0:
            raise MediaError(f"stream '{name}': fps must be > 0, got {fps}")
        self._open_chunks = open_chunks
        self.fps = float(fps)
        self.frame_count = int(frame_count)
        self.width, self.height = int(width), int(height)
        self.name = name
        self._steps = steps
        self._source_size = source_size or (self.width, self.height)

    # construction -----------------------------------------------------------------------
    @classmethod
    def from_video(cls, path, force_fps: float | None = None, skip_first: int = 0, frame_cap: int = 0,
                   select_every_nth: int = 1) -> "FrameStream":
        """A stream reading ``path`` on demand (options as :class:`engine.media.video_io.VideoSource`)."""
        from .video_io import VideoSource

        src = VideoSource(path, force_fps=force_fps, skip_first=skip_first, frame_cap=frame_cap,
                          select_every_nth=select_every_nth)
        return cls(src.iter_chunks, src.fps, src.frame_count, src.width, src.height, name=f"video '{src.path}'")

    @classmethod
    def from_images(cls, images: Any, fps: float) -> "FrameStream":
        """A stream over frames already in memory (IMAGE tensor, float or uint8 array ``[B,H,W,C]``).

        The frames are converted to uint8 one chunk at a time, so no second full copy is made.
        """
        if hasattr(images, "shape") and len(images.shape) == 3:
            images = images[None]
        if not hasattr(images, "shape") or len(images.shape) != 4:
            raise MediaError(f"images must be a [B, H, W, C] batch, got {getattr(images, 'shape', type(images))}")
        b, h, w = (int(x) for x in images.shape[:3])

        def chunks(chunk: int) -> Iterator[np.ndarray]:
            for i in range(0, b, chunk):
                yield to_uint8_batch(images[i:i + chunk], f"images {i}..{min(i + chunk, b) - 1}")

        return cls(chunks, fps, b, w, h, name="images")

    def map_chunks(self, fn: ChunkFn, name: str, out_size: tuple[int, int] | None = None,
                   as_: InputKind = "uint8") -> "FrameStream":
        """A new stream that applies ``fn`` to every chunk; ``out_size`` = (width, height) if ``fn`` resizes."""
        if as_ not in ("uint8", "float", "image"):
            raise ValueError(f"map_chunks: as_ must be 'uint8', 'float' or 'image', got {as_!r}")
        w, h = out_size if out_size else (self.width, self.height)
        step = _Step(fn, name, as_, (int(w), int(h)))
        return FrameStream(self._open_chunks, self.fps, self.frame_count, w, h, self.name,
                           self._steps + (step,), self._source_size)

    # reading ----------------------------------------------------------------------------
    @property
    def steps(self) -> list[str]:
        """Names of the per-chunk steps, in the order they run."""
        return [s.name for s in self._steps]

    def __len__(self) -> int:
        return self.frame_count

    def __repr__(self) -> str:
        chain = " -> ".join([self.name, *self.steps])
        return f"FrameStream({chain}: {self.frame_count} frames {self.width}x{self.height} @ {self.fps:g} fps)"

    def iter_chunks(self, chunk: int = 16) -> Iterator[np.ndarray]:
        """uint8 ``[n, H, W, 3]`` batches of up to ``chunk`` frames, computed on demand through every step."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        start = 0
        for batch in self._open_chunks(chunk):
            batch = to_uint8_batch(batch, f"stream '{self.name}' frames from {start}")
            n = len(batch)
            for step in self._steps:
                where = f"step '{step.name}' on frames {start}..{start + n - 1}"
                out = to_uint8_batch(step.fn(_as_kind(batch, step.as_)), where)
                if len(out) != n:
                    raise MediaError(f"{where}: returned {len(out)} frames for {n} (a step must keep the frame count)")
                if (out.shape[2], out.shape[1]) != step.out_size:
                    raise MediaError(f"{where}: returned frames of {out.shape[2]}x{out.shape[1]}, "
                                     f"expected {step.out_size[0]}x{step.out_size[1]} (pass out_size= if the step resizes)")
                batch = out
            start += n
            yield batch
            del batch  # not held while the next chunk is decoded (a chunk of 4K frames is 400 MB)

    def read_all(self, progress: Callable[[int, int], None] | None = None, spill_dir: str | None = None,
                 ram_budget: int | None = None) -> np.ndarray:
        """Every frame in one uint8 array ``[N, H, W, 3]``.

        Why ``spill_dir``: a consumer that must revisit frames (MuseTalk's ping-pong) needs them all,
        and a long clip does not fit in RAM (10 min at 704x1216 is 38 GB). When the frames exceed
        ``ram_budget`` bytes they go to an anonymous file in ``spill_dir`` mapped into memory
        (:func:`disk_array`): the OS pages them in and out, and the file vanishes with the array.
        """
        from .video_io import read_chunks_into

        shape = (self.frame_count, self.height, self.width, 3)
        out = None
        if spill_dir is not None and ram_budget is not None and int(np.prod(shape)) > ram_budget:
            out = disk_array(shape, spill_dir)
        return read_chunks_into(self.iter_chunks(32), *shape[:3], progress, out=out)


def chunked(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Single ``[H,W,3]`` frames grouped into ``[n,H,W,3]`` chunks of up to ``size``, as a stream's
    ``open_chunks`` yields them from a generator that makes one frame at a time."""
    buf: list[np.ndarray] = []
    for f in frames:
        buf.append(f)
        if len(buf) == size:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def disk_array(shape: tuple[int, ...], folder: str, dtype=np.uint8) -> np.ndarray:
    """A zero-filled array backed by an unnamed temporary file in ``folder`` (removed when the array
    and its views are gone; on POSIX the file has no name from the start)."""
    import os
    import tempfile

    os.makedirs(folder, exist_ok=True)
    f = tempfile.TemporaryFile(dir=folder, prefix="dh-frames-")
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    f.truncate(max(size, 1))
    arr = np.memmap(f, dtype=dtype, mode="r+", shape=shape)
    arr.backing_file = f  # keeps the file open as long as the array lives
    return arr
