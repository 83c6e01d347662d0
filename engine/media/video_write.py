"""Write frames (+ audio) to an H.264/AAC MP4 with PyAV, one chunk at a time.

Rules, so nothing surprising happens to a user's media:

* **Odd frame sizes**: H.264 in yuv420p needs even width and height. An odd size is padded by
  one pixel on the right and/or bottom, repeating the edge pixels (nothing is cropped away).
* **Audio fitting** (``audio_fit``):
  ``"pad_or_trim"`` (default): the audio is fitted to the video's duration ``frames / fps``:
  silence is appended when it is shorter, the tail is cut when it is longer, and
  :class:`WrittenInfo` reports the seconds padded/trimmed (nodes log a warning on a trim).
  ``"extend_video"``: when the audio is longer, the last frame is held until the audio ends
  (``ceil(audio_seconds * fps)`` frames in all); a shorter audio is padded with silence.
* **Audio samples**: NaN and +-inf become 0, everything is clipped to [-1, 1] (the number of
  non-finite samples is reported). More than two channels are downmixed by the rules of
  :mod:`engine.media.downmix` (3-8 channels: the surround layout's ITU stereo downmix; more:
  averaged to mono), and :class:`WrittenInfo` says what was done; a sample rate AAC cannot
  store is resampled to 48 kHz. Frames go to PyAV packed (interleaved), never planar, because
  PyAV mishandles planar frames of 8 or more channels (see :mod:`engine.media.audio_io`).
* **Files**: frames go to ``<name>.partial.mp4`` beside the target, which is renamed to the
  final name only when everything is written. If an error stops the writing, the partial file
  is closed properly (playable up to the last chunk written), kept, and the error names it; the
  final name never holds a half-written file. An interrupt (from ``check_interrupt``) is re-raised
  unchanged after the partial file is closed.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

from .audio_io import clean_audio, packed_frame, packed_samples
from .downmix import fit_channels
from .errors import MediaError, MediaWriteError
from .stream import FrameStream, to_uint8_batch

log = logging.getLogger("DigitalHuman")

AUDIO_FIT_MODES = ("pad_or_trim", "extend_video")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AUDIO_BLOCK = 1024 * 16  # samples handed to the encoder at a time


@dataclass(frozen=True)
class WrittenInfo:
    """What :func:`write_mp4` wrote."""

    path: str
    frame_count: int  # frames in the file, held frames included
    fps: float
    width: int  # size in the file (even)
    height: int
    duration: float  # frame_count / fps
    has_audio: bool
    audio_sample_rate: int = 0
    audio_duration: float = 0.0  # seconds of audio in the file (after fitting)
    audio_trimmed_s: float = 0.0  # seconds of input audio cut off (pad_or_trim)
    audio_padded_s: float = 0.0  # seconds of silence added
    held_frames: int = 0  # copies of the last frame added (extend_video)
    audio_nonfinite: int = 0  # NaN/inf samples replaced by 0
    size_padded: bool = False  # an odd input size was padded to even
    audio_channels_in: int = 0  # channels of the audio given
    audio_channels: int = 0  # channels in the file
    audio_downmix: str = ""  # what was done to fit the channels ("" = kept)
    audio_gain_db: float = 0.0  # level change of the downmix to stay within full scale

    def notes(self, source_fps: float | None = None) -> list[str]:
        """What the writer changed about the user's media, one sentence each, for a node's UI.

        ``source_fps``: the rate the frames were made for (a stream's own fps), if known; writing at
        another rate changes the playback speed. A cut or padding shorter than half a frame is the
        normal rounding of the audio to whole frames and is not mentioned.
        """
        out: list[str] = []
        if source_fps and abs(source_fps - self.fps) > 1e-6:
            speed = "slower" if self.fps < source_fps else "faster"
            out.append(f"saved at {self.fps:g} fps, but the frames are {source_fps:g} fps: the video plays "
                       f"{max(source_fps, self.fps) / min(source_fps, self.fps):.3g}x {speed} than its source "
                       f"({self.duration:.2f} s instead of {self.frame_count / source_fps:.2f} s)")
        half_frame = 0.5 / self.fps
        if self.audio_trimmed_s >= half_frame:
            out.append(f"the audio was {self.audio_trimmed_s:.2f} s longer than the {self.duration:.2f} s of video "
                       f"({self.frame_count} frames at {self.fps:g} fps): its last {self.audio_trimmed_s:.2f} s were cut "
                       "(audio_fit=extend_video keeps it)")
        if self.audio_padded_s >= half_frame:
            out.append(f"the audio was {self.audio_padded_s:.2f} s shorter than the {self.duration:.2f} s of video: "
                       f"{self.audio_padded_s:.2f} s of silence were added at the end")
        if self.held_frames:
            out.append(f"the last frame is held {self.held_frames} times ({self.held_frames / self.fps:.2f} s) "
                       "to cover the audio")
        if self.audio_downmix:
            gain = f", scaled by {self.audio_gain_db:.1f} dB so it does not clip" if self.audio_gain_db else ""
            out.append(f"audio: {self.audio_downmix}{gain}")
        if self.audio_nonfinite:
            out.append(f"audio: {self.audio_nonfinite} NaN/inf samples were replaced by silence")
        return out


def partial_path_for(path: str | os.PathLike) -> Path:
    """Where the in-progress file lives: ``name.mp4`` -> ``name.partial.mp4``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.partial{p.suffix or '.mp4'}")


def fps_fraction(fps: float) -> Fraction:
    """A frame rate as an exact fraction (29.97002997 -> 30000/1001, 12.5 -> 25/2)."""
    return Fraction(float(fps)).limit_denominator(1001)


@dataclass(frozen=True)
class _Audio:
    """Audio ready for the AAC encoder."""

    wave: np.ndarray  # float32 [1 or 2, T]
    sr: int
    nonfinite: int
    channels_in: int
    downmix: str
    gain_db: float


def _prepare_audio(audio: Any, where: str) -> _Audio:
    """Clean float32 ``[C<=2, T]`` at an AAC-compatible rate from ``(wave, sr)``, and what was done to it."""
    try:
        wave, sr = audio
    except (TypeError, ValueError):
        raise MediaError(f"{where}: audio must be a (samples [C, T], sample_rate) pair") from None
    wave = np.asarray(wave.detach().cpu().numpy() if hasattr(wave, "detach") else wave)
    if wave.ndim == 3 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2 or wave.dtype.kind not in "fiu":
        raise MediaError(f"{where}: audio samples must be [channels, samples] numbers, got shape {wave.shape} {wave.dtype}")
    sr = int(sr)
    if sr <= 0:
        raise MediaError(f"{where}: audio sample rate must be > 0, got {sr}")
    if wave.dtype.kind in "iu":
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    nonfinite = int(np.size(wave) - np.count_nonzero(np.isfinite(wave)))
    wave = clean_audio(wave)
    channels_in = int(wave.shape[0])
    if wave.shape[0] == 0:
        wave = np.zeros((1, wave.shape[1]), dtype=np.float32)
    fitted = fit_channels(wave, sr)
    wave = fitted.wave
    if sr not in _AAC_RATES and wave.shape[1] > 0:
        wave, sr = _resample(wave, sr, 48000), 48000
    return _Audio(np.ascontiguousarray(wave), sr, nonfinite, channels_in, fitted.rule, fitted.gain_db)


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def _resample(wave: np.ndarray, sr: int, out_sr: int) -> np.ndarray:
    layout = _layout(wave.shape[0])
    rs = av.AudioResampler(format="flt", layout=layout, rate=out_sr)
    frame = packed_frame(wave, sr, layout)
    out = [packed_samples(f) for f in rs.resample(frame)] + [packed_samples(f) for f in rs.resample(None)]
    return np.concatenate(out, axis=1) if out else np.zeros((wave.shape[0], 0), np.float32)


def _chunks_of(frames: Any, fps: float, chunk: int) -> tuple[Iterator[np.ndarray], int]:
    """(chunk iterator, known total or 0) for a FrameStream, an IMAGE-like batch or an iterable of chunks."""
    if isinstance(frames, FrameStream):
        return iter(frames.iter_chunks(chunk)), frames.frame_count
    if hasattr(frames, "shape") and len(frames.shape) in (3, 4):
        s = FrameStream.from_images(frames, fps)
        return iter(s.iter_chunks(chunk)), s.frame_count
    return iter(frames), 0


class _Mp4Writer:
    """The open container and its streams; audio is interleaved with video as frames arrive."""

    def __init__(self, path: Path, fps: float, crf: int, preset: str, audio: tuple[np.ndarray, int] | None):
        self.path = path
        self.rate = fps_fraction(fps)
        self.crf, self.preset = crf, preset
        self.container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        self.vstream = None
        self.astream = None
        self.wave, self.sr = audio if audio is not None else (None, 0)
        self.frames = 0
        self.audio_pos = 0  # samples written
        self.size: tuple[int, int] | None = None

    def _open_streams(self, width: int, height: int) -> None:
        vs = self.container.add_stream("libx264", rate=self.rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": str(self.crf), "preset": self.preset}
        vs.codec_context.time_base = 1 / self.rate
        self.vstream = vs
        if self.wave is not None:
            layout = _layout(self.wave.shape[0])
            a = self.container.add_stream("aac", rate=self.sr)
            a.layout = layout
            self.astream, self.layout = a, layout

    def add(self, batch: np.ndarray) -> None:
        """Encode one uint8 [n, H, W, 3] batch of even size."""
        if self.vstream is None:
            self._open_streams(batch.shape[2], batch.shape[1])
        for img in batch:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = self.frames
            frame.time_base = 1 / self.rate
            for pkt in self.vstream.encode(frame):
                self.container.mux(pkt)
            self.frames += 1
        self.write_audio_until(self.frames)

    def _encode_audio(self, samples: np.ndarray) -> None:
        for i in range(0, samples.shape[1], _AUDIO_BLOCK):
            part = samples[:, i:i + _AUDIO_BLOCK]
            frame = packed_frame(part, self.sr, self.layout)
            frame.pts = self.audio_pos
            frame.time_base = Fraction(1, self.sr)
            for pkt in self.astream.encode(frame):
                self.container.mux(pkt)
            self.audio_pos += part.shape[1]

    def samples_at(self, frames: int) -> int:
        return int(round(frames / self.rate * self.sr))

    def write_audio_until(self, frames: int, pad: bool = False) -> None:
        """Write input audio up to the time of ``frames`` video frames (silence past its end if ``pad``)."""
        if self.astream is None:
            return
        target = self.samples_at(frames)
        avail = min(target, self.wave.shape[1])
        if avail > self.audio_pos:
            self._encode_audio(self.wave[:, self.audio_pos:avail])
        if pad and target > self.audio_pos:
            self._encode_audio(np.zeros((self.wave.shape[0], target - self.audio_pos), dtype=np.float32))

    def finish(self) -> None:
        if self.vstream is not None:
            for pkt in self.vstream.encode(None):
                self.container.mux(pkt)
        if self.astream is not None:
            for pkt in self.astream.encode(None):
                self.container.mux(pkt)
        self.container.close()


def write_mp4(
    path: str | os.PathLike,
    frames: FrameStream | Iterable[Any] | Any,
    fps: float,
    audio: tuple[Any, int] | None = None,
    audio_fit: str = "pad_or_trim",
    crf: int = 19,
    preset: str = "medium",
    chunk: int = 16,
    progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> WrittenInfo:
    """Encode ``frames`` (a FrameStream, an IMAGE-like batch, or an iterable of ``[n,H,W,3]`` chunks,
    uint8 or float 0..1) at ``fps`` to an H.264 (yuv420p) + AAC MP4 at ``path``; see the module rules.
    """
    final = Path(path)
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise MediaError(f"'{final}': fps must be a positive number, got {fps}")
    if audio_fit not in AUDIO_FIT_MODES:
        raise MediaError(f"'{final}': audio_fit must be one of {AUDIO_FIT_MODES}, got {audio_fit!r}")
    if not 0 <= int(crf) <= 51:
        raise MediaError(f"'{final}': crf must be in 0..51, got {crf}")
    if preset not in X264_PRESETS:
        raise MediaError(f"'{final}': preset must be one of {X264_PRESETS}, got {preset!r}")
    prepared = None
    fitted: _Audio | None = None
    if audio is not None:
        fitted = _prepare_audio(audio, f"'{final}'")
        prepared = (fitted.wave, fitted.sr)
        if fitted.nonfinite:
            log.warning("[DigitalHuman] %s: %d NaN/inf audio samples replaced by silence", final.name, fitted.nonfinite)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path_for(final)
    partial.unlink(missing_ok=True)
    chunks, total = _chunks_of(frames, fps, chunk)
    w = _Mp4Writer(partial, fps, int(crf), preset, prepared)
    in_size: tuple[int, int] | None = None
    last: np.ndarray | None = None
    held = 0
    try:
        for batch in chunks:
            if check_interrupt:
                check_interrupt()
            batch = to_uint8_batch(batch, f"'{final}': frames {w.frames}..")
            h, wd = batch.shape[1:3]
            if in_size is None:
                in_size = (wd, h)
            elif in_size != (wd, h):
                raise MediaError(f"'{final}': frame {w.frames} is {wd}x{h}, but the video started at {in_size[0]}x{in_size[1]}")
            if h % 2 or wd % 2:
                batch = np.pad(batch, ((0, 0), (0, h % 2), (0, wd % 2), (0, 0)), mode="edge")
            w.add(batch)
            last = batch[-1:].copy()  # one frame, not a view that keeps the whole chunk alive
            del batch
            if progress:
                progress(w.frames, max(total, w.frames))
        if w.frames == 0:
            raise MediaError(f"'{final}': no frames to write")
        video_frames = w.frames
        if prepared is not None and audio_fit == "extend_video":
            need = max(0, math.ceil(prepared[0].shape[1] / prepared[1] * float(w.rate) - 1e-6) - video_frames)
            for i in range(0, need, chunk):
                if check_interrupt:
                    check_interrupt()
                w.add(np.repeat(last, min(chunk, need - i), axis=0))
                if progress:
                    progress(w.frames, video_frames + need)
            held = need
        w.write_audio_until(w.frames, pad=True)
        w.finish()
    except BaseException as exc:
        kept = _close_partial(w, partial)
        if isinstance(exc, (MediaError, ValueError, TypeError, RuntimeError, OSError, av.error.FFmpegError)):
            where = f"the {w.frames} frames written so far are kept in '{kept}'" if kept else "nothing was kept"
            raise MediaWriteError(f"writing '{final}' failed at frame {w.frames}: {exc}; {where}", str(kept) if kept else None) from exc
        if kept:
            log.warning("[DigitalHuman] writing %s stopped at frame %d; frames so far kept in %s", final, w.frames, kept)
        raise
    os.replace(partial, final)
    n = w.frames
    trimmed = padded = 0.0
    a_dur = 0.0
    if prepared is not None:
        t_in = prepared[0].shape[1]
        t_out = w.samples_at(n)
        trimmed = max(0, t_in - t_out) / prepared[1]
        padded = max(0, t_out - t_in) / prepared[1]
        a_dur = t_out / prepared[1]
        if trimmed > 0:
            log.info("[DigitalHuman] %s: audio is %.3f s longer than the video; the tail was cut (audio_fit=pad_or_trim)", final.name, trimmed)
    assert in_size is not None
    return WrittenInfo(
        str(final), n, float(fps), in_size[0] + in_size[0] % 2, in_size[1] + in_size[1] % 2, n / float(w.rate),
        prepared is not None, prepared[1] if prepared else 0, a_dur, trimmed, padded, held,
        fitted.nonfinite if fitted else 0, bool(in_size[0] % 2 or in_size[1] % 2),
        fitted.channels_in if fitted else 0, int(prepared[0].shape[0]) if prepared else 0,
        fitted.downmix if fitted else "", fitted.gain_db if fitted else 0.0,
    )


def _close_partial(w: _Mp4Writer, partial: Path) -> Path | None:
    """Finish the partial file after an error; keep it when it has frames, else remove it."""
    try:
        if w.frames > 0:
            w.finish()
        else:
            w.container.close()
    except Exception:  # the container may be unusable after the original error
        pass
    if w.frames > 0 and partial.is_file() and partial.stat().st_size > 0:
        return partial
    partial.unlink(missing_ok=True)
    return None
