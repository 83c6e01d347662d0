"""Video probing and lazily decoded reading with PyAV (no system ffmpeg needed).

Frame selection, applied in this order:

1. ``force_fps`` (> 0) resamples time: output frame ``i`` shows the source frame whose
   timestamp is the latest one at or before ``i / force_fps`` (timestamps measured from the
   stream's first frame). Output frames exist for every ``i`` with ``i / force_fps`` inside the
   video's duration, so the count is ``ceil(duration * force_fps)`` (e.g. 7.0 s at 12.5 fps ->
   88 frames, at 30 fps -> 210). Without ``force_fps`` every decoded frame is kept.
2. ``skip_first`` drops that many frames from the start.
3. ``select_every_nth`` keeps frames 0, n, 2n, ... of what remains; the fps is divided by n.
4. ``frame_cap`` (> 0) keeps at most that many frames.

Variable frame rate (phones, screen recordings): when the frame intervals differ by more than
``vfr_interval_spread`` of ``data/media.json``, a video without ``force_fps`` is read on the
step-1 timeline at its average rate (frames / span of the timestamps) instead of frame by frame,
so every frame is shown at its own time and the picture stays in sync with the audio (frames
are repeated across long intervals and dropped in bursts). :attr:`VideoSource.notes` says so.

Frames are uint8 RGB ``[n, H, W, 3]``. Decoding happens on demand in :meth:`VideoSource.iter_chunks`,
so a long video needs only one chunk of frames in memory.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from .audio_io import read_audio_track
from .errors import MediaError
from .settings import media_settings

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".gif")
# Containers/codecs FFmpeg uses for still pictures; a video loader must refuse them clearly.
_IMAGE_FORMATS = ("image2", "jpeg_pipe", "png_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")
_IMAGE_CODECS = ("mjpeg", "png", "bmp", "webp", "tiff", "jpeg2000", "targa", "qoi")
_TS_EPS = 1e-6
# A few frames fewer than the header says is normal (edit lists); more missing means truncation.
_SHORT_TOLERANCE = 2
log = logging.getLogger("DigitalHuman")


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reports about a video file."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    has_audio: bool
    codec: str
    audio_sample_rate: int = 0
    audio_channels: int = 0


def _ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading, turning FFmpeg's errors into a :class:`MediaError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"'{p}': file not found")
    if p.stat().st_size == 0:
        raise MediaError(f"'{p}': the file is empty")
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise MediaError(f"'{p}': not a readable video file, it is corrupt or of an unknown format ({_ffmpeg_reason(exc)})") from exc


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first video stream, with clear errors for audio-only, still-image and undecodable files."""
    if not container.streams.video:
        if container.streams.audio:
            raise MediaError(f"'{path}': has only audio, no video stream (load it with DH_LoadAudio)")
        raise MediaError(f"'{path}': no video or audio found; the file is truncated, damaged or not a video")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if cc is None:
        raise MediaError(f"'{path}': unknown or unsupported video codec (FFmpeg has no decoder for it)")
    if container.format.name in _IMAGE_FORMATS or (cc.name in _IMAGE_CODECS and (stream.frames or 0) <= 1):
        raise MediaError(f"'{path}': is a still image ({cc.name}), not a video (load it with LoadImage)")
    return stream


def _stream_duration(container, stream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000.0
    return 0.0


def _count_packets(path: str) -> int:
    """Exact frame count by demuxing (no decoding), for containers that do not store it."""
    with open_video(path) as c:
        s = c.streams.video[0]
        return sum(1 for pkt in c.demux(s) if pkt.size > 0)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, fps, exact frame count, duration, codec and audio presence of a video file."""
    path = str(path)
    with open_video(path) as container:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        frames = int(stream.frames or 0)
        duration = _stream_duration(container, stream)
        audio = container.streams.audio[0] if container.streams.audio else None
        width, height, codec = int(cc.width), int(cc.height), str(cc.name)
        a_rate = int(audio.codec_context.sample_rate or 0) if audio is not None and audio.codec_context else 0
        a_ch = int(audio.codec_context.channels or 0) if audio is not None and audio.codec_context else 0
    if frames <= 0:
        frames = _count_packets(path)
    if fps <= 0:
        fps = frames / duration if duration > 0 else 25.0
    if duration <= 0:
        duration = frames / fps
    if width <= 0 or height <= 0:
        raise MediaError(f"'{path}': the video stream has no frame size (damaged header)")
    return VideoInfo(path, width, height, fps, frames, duration, audio is not None, codec, a_rate, a_ch)


@dataclass(frozen=True)
class FrameTiming:
    """The presentation timestamps of a video's frames, summarised (from demuxing, no decoding)."""

    count: int  # frames with a timestamp
    span: float  # seconds from the first frame to the end of the last (last interval = the median)
    median_interval: float  # seconds
    min_interval: float
    max_interval: float
    variable: bool  # some interval is off the median by more than the vfr_interval_spread rule

    @property
    def average_fps(self) -> float:
        return self.count / self.span if self.span > 0 else 0.0


def frame_timing(path: str | os.PathLike, spread: float | None = None) -> FrameTiming:
    """Frame intervals of the first video stream, and whether the frame rate is variable.

    An interval counts as off when it differs from the median by more than ``spread`` (default:
    ``vfr_interval_spread`` of data/media.json) times the median plus one tick of the time base,
    so the rounding of a constant rate's timestamps (33/34 ms at 29.97 fps in Matroska) is not VFR.
    """
    path = str(path)
    spread = float(media_settings()["vfr_interval_spread"] if spread is None else spread)
    with open_video(path) as container:
        stream = _video_stream(container, path)
        tb = stream.time_base or Fraction(1, 90000)
        stamps = []
        for pkt in container.demux(stream):
            t = pkt.pts if pkt.pts is not None else pkt.dts
            if t is not None and pkt.size > 0:
                stamps.append(t)
    if len(stamps) < 3:
        return FrameTiming(len(stamps), 0.0, 0.0, 0.0, 0.0, False)
    ticks = np.diff(np.sort(np.asarray(stamps, dtype=np.int64)))
    d = ticks.astype(np.float64) * float(tb)
    median = float(np.median(d))
    off = np.abs(d - median) > spread * median + float(tb)
    span = float((max(stamps) - min(stamps)) * tb) + median
    return FrameTiming(len(stamps), span, median, float(d.min()), float(d.max()), bool(median > 0 and off.any()))


def images_peak_bytes(frames: int, width: int, height: int) -> int:
    """Peak memory of decoding ``frames`` into a float32 IMAGE with :meth:`VideoSource.read_into`.

    The IMAGE itself (4 bytes a channel) plus the decoder's frames in flight, counted as
    ``image_decode_overhead_frames`` (data/media.json) uint8 RGB frames.
    """
    frame = width * height * 3
    return frames * frame * 4 + int(media_settings()["image_decode_overhead_frames"]) * frame


def resampled_count(duration: float, fps: float) -> int:
    """Frames at ``fps`` covering ``duration`` seconds: every ``i`` with ``i / fps < duration``."""
    return max(0, math.ceil(duration * fps - _TS_EPS))


def selected_count(base: int, skip_first: int = 0, select_every_nth: int = 1, frame_cap: int = 0) -> int:
    """How many frames remain of ``base`` after skip, every-nth and cap (see the module docstring)."""
    n = max(0, base - max(0, skip_first))
    n = -(-n // max(1, select_every_nth))
    return min(n, frame_cap) if frame_cap > 0 else n


class VideoSource:
    """A video file read lazily, with the frame-selection options of the module docstring.

    Each :meth:`iter_chunks` call opens the file and decodes from the start, so a source can be
    iterated many times and holds no frames between calls.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        force_fps: float | None = None,
        skip_first: int = 0,
        frame_cap: int = 0,
        select_every_nth: int = 1,
    ):
        self.path = str(path)
        if force_fps is not None and force_fps < 0:
            raise MediaError(f"'{self.path}': force_fps must be >= 0 (0 keeps the file's fps), got {force_fps}")
        if skip_first < 0 or frame_cap < 0:
            raise MediaError(f"'{self.path}': skip_first and frame_cap must be >= 0, got {skip_first} and {frame_cap}")
        if select_every_nth < 1:
            raise MediaError(f"'{self.path}': select_every_nth must be >= 1, got {select_every_nth}")
        self.info = probe(self.path)
        self.force_fps = float(force_fps) if force_fps else None
        self.skip_first = int(skip_first)
        self.frame_cap = int(frame_cap)
        self.select_every_nth = int(select_every_nth)
        self.timing = frame_timing(self.path)
        #: what was done that a user should know (variable frame rate made constant), one sentence each
        self.notes: list[str] = []
        # the step-1 timeline: force_fps, else the average rate of a variable-frame-rate video
        self.timeline_fps = self.force_fps
        duration = self.info.duration
        if self.timing.variable:
            ms = f"{self.timing.min_interval * 1000:.1f} to {self.timing.max_interval * 1000:.1f} ms"
            if self.force_fps:
                self.notes.append(f"variable frame rate (frame intervals {ms}): resampled by timestamps to the "
                                  f"force_fps of {self.force_fps:g} fps")
            else:
                self.timeline_fps = self.timing.average_fps
                duration = self.timing.span
                self.notes.append(
                    f"variable frame rate (frame intervals {ms}): loaded as a constant {self.timeline_fps:.3f} fps (the "
                    f"average over {self.timing.span:.2f} s), each frame shown at its own time, so frames are repeated "
                    "or dropped and the picture stays in sync with the sound; set force_fps for another rate")
        base_fps = self.timeline_fps or self.info.fps
        self.base_count = resampled_count(duration, base_fps) if self.timeline_fps else self.info.frame_count
        self.fps = base_fps / self.select_every_nth
        self.frame_count = selected_count(self.base_count, self.skip_first, self.select_every_nth, self.frame_cap)
        self.width, self.height = self.info.width, self.info.height
        if self.frame_count <= 0:
            raise MediaError(
                f"'{self.path}': no frames left to load ({self.base_count} frames, skip_first={self.skip_first}, "
                f"select_every_nth={self.select_every_nth}, frame_cap={self.frame_cap})"
            )

    def __repr__(self) -> str:
        return f"VideoSource('{self.path}', {self.frame_count} frames {self.width}x{self.height} @ {self.fps:g} fps)"

    def _decoded(self) -> Iterator[tuple[float, np.ndarray]]:
        """(timestamp in s from the first frame, RGB frame) for every frame of the file, in order."""
        with open_video(self.path) as container:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"
            tb = stream.time_base or Fraction(1, 90000)
            start = None
            n = 0
            try:
                for frame in container.decode(stream):
                    t = frame.pts if frame.pts is not None else frame.dts
                    if t is None:
                        ts = n / self.info.fps
                    else:
                        start = t if start is None else start
                        ts = float((t - start) * tb)
                    yield ts, frame.to_ndarray(format="rgb24")
                    n += 1
            except av.error.FFmpegError as exc:
                raise MediaError(
                    f"'{self.path}': decoding failed at frame {n} of {self.info.frame_count}; the file is truncated or "
                    f"damaged ({_ffmpeg_reason(exc)})"
                ) from exc
            expected = self.info.frame_count
            if expected - n > max(_SHORT_TOLERANCE, 0.02 * expected):
                raise MediaError(
                    f"'{self.path}': the video ended after {n} of {expected} frames; the file is truncated or damaged"
                )
            if n < expected:  # e.g. an edit list hides a few frames the header counts
                log.warning("[DigitalHuman] %s: %d of %d frames decodable; the last one is repeated", self.path, n, expected)

    def _base_frames(self) -> Iterator[np.ndarray]:
        """Frames before skip/nth/cap: every decoded frame, or the timeline at ``timeline_fps``."""
        fps = self.timeline_fps
        if not fps:
            n, img = 0, None
            for _, img in self._decoded():
                yield img
                n += 1
            while img is not None and n < self.base_count:  # keep the promised count (see _decoded)
                yield img
                n += 1
            return
        i, held = 0, None
        for ts, img in self._decoded():
            # emit output frames whose time lies before this source frame: they show the held one
            while i < self.base_count and held is not None and i / fps + _TS_EPS < ts:
                yield held
                i += 1
            held = img
            if i >= self.base_count:
                break
        while i < self.base_count and held is not None:  # the last source frame covers the tail
            yield held
            i += 1

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Selected frames one by one (uint8 ``[H, W, 3]``)."""
        emitted = 0
        for k, img in enumerate(self._base_frames()):
            if k < self.skip_first or (k - self.skip_first) % self.select_every_nth:
                continue
            yield img
            emitted += 1
            if emitted >= self.frame_count:
                return

    def iter_chunks(
        self, chunk: int = 16, check_interrupt: Callable[[], None] | None = None
    ) -> Iterator[np.ndarray]:
        """Selected frames in batches of up to ``chunk``: uint8 ``[n, H, W, 3]``, decoded on demand.

        Each batch is a new array filled frame by frame (no list of frames stacked afterwards, which
        would hold every frame of a chunk twice: 1.6 GB for 32 frames of 4K).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        buf: np.ndarray | None = None
        n = done = 0
        for img in self.iter_frames():
            if buf is None:
                buf = np.empty((min(chunk, max(self.frame_count - done, 1)), *img.shape), dtype=np.uint8)
            self._check_size(img, done + n)
            buf[n] = img
            n += 1
            if n == len(buf):
                if check_interrupt:
                    check_interrupt()
                yield buf
                done += n
                buf, n = None, 0
        if buf is not None and n:
            yield buf[:n]

    def _check_size(self, img: np.ndarray, index: int) -> None:
        if img.shape != (self.height, self.width, 3):
            raise MediaError(f"'{self.path}': frame {index} is {img.shape[1]}x{img.shape[0]}, but the video is "
                             f"{self.width}x{self.height} (a size change inside the stream is not supported)")

    def read_into(self, out: np.ndarray, progress: Callable[[int, int], None] | None = None,
                  check_interrupt: Callable[[], None] | None = None) -> int:
        """Decode the selected frames straight into ``out`` (``[>= frame_count, H, W, 3]``); returns the count.

        A float ``out`` receives ``frame / 255`` in float32 (ComfyUI's IMAGE values), converted frame
        by frame in place: what an IMAGE batch costs is the output alone, with no full uint8 copy
        beside it (the old path held uint8 frames, a stacked copy and then the float tensor).
        """
        total = self.frame_count
        if out.ndim != 4 or out.shape[0] < total or out.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"out must be [{total}, {self.height}, {self.width}, 3], got {list(out.shape)}")
        as_float = out.dtype.kind == "f"
        scale = out.dtype.type(255.0) if as_float else None
        done = 0
        for img in self.iter_frames():
            self._check_size(img, done)
            if as_float:
                np.divide(img, scale, out=out[done])
            else:
                out[done] = img
            done += 1
            if done % 8 == 0 or done == total:
                if check_interrupt:
                    check_interrupt()
                if progress:
                    progress(done, total)
        return done

    def time_range(self) -> tuple[float, float]:
        """(start s, length s) of the source time the selected frames cover."""
        base_fps = self.timeline_fps or self.info.fps
        return self.skip_first / base_fps, self.frame_count / self.fps

    def read_audio(self, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
        """The audio under the selected frames (same start and length), or an empty-but-valid track."""
        wave, sr = read_audio_track(self.path, sample_rate, mono)
        if wave.shape[1] == 0:
            return wave, sr
        start, length = self.time_range()
        a = int(round(start * sr))
        return np.ascontiguousarray(wave[:, a:a + int(round(length * sr))]), sr

    def read_all(self, progress: Callable[[int, int], None] | None = None,
                 check_interrupt: Callable[[], None] | None = None) -> np.ndarray:
        """All selected frames in one uint8 array (for short clips; long ones should stream)."""
        out = np.empty((self.frame_count, self.height, self.width, 3), dtype=np.uint8)
        return out[:self.read_into(out, progress, check_interrupt)]


def read_chunks_into(chunks, total: int, height: int, width: int,
                     progress: Callable[[int, int], None] | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Fill one preallocated ``[total, H, W, 3]`` array (``out``, or a new one) from chunks (no double copy)."""
    if out is None:
        out = np.empty((total, height, width, 3), dtype=np.uint8)
    elif out.shape != (total, height, width, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {[total, height, width, 3]}, got {out.dtype} {list(out.shape)}")
    done = 0
    for c in chunks:
        n = min(len(c), total - done)
        out[done:done + n] = c[:n]
        done += n
        if progress:
            progress(done, total)
    return out[:done]


def read_video(path: str | os.PathLike, **options) -> tuple[np.ndarray, float]:
    """All frames of a short clip (uint8 ``[N, H, W, 3]``) and their fps; options as :class:`VideoSource`."""
    src = VideoSource(path, **options)
    return src.read_all(), src.fps
