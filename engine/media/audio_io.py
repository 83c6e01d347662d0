"""Audio decoding with PyAV (wav, mp3, flac, m4a/aac, ogg/vorbis/opus, and audio tracks of videos).

Samples come back as float32 ``[C, T]`` in -1..1 with their sample rate, every channel of the
file kept in its order (any count: 7.1, 7.1.4, 16 unnamed channels). Resampling uses FFmpeg's
swresample through PyAV (streamed, so only the decoded result is held in memory); ``mono``
averages the channels, so a stereo file with one silent side gets half the level, which is the
neutral choice (no channel is preferred).

Why every frame is converted to *packed* float before it becomes an array: PyAV (18.x)
finds the planes of a planar frame by walking ``AVFrame.extended_data`` until a NULL pointer.
That array has no NULL terminator: up to 8 channels it is ``AVFrame.data[8]`` (the walk runs
on into ``linesize`` when all 8 are set), above 8 it is a heap array of exactly C pointers, so
``to_ndarray()``/``from_ndarray()`` of a planar frame with 8 or more channels read and write
through garbage pointers and kill the process. A packed frame has a single plane
(``data[1]`` is NULL), so the walk stops correctly for every channel count and layout.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np

from .errors import MediaError

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus", ".oga", ".webm", ".mka")
EMPTY_SAMPLE_RATE = 44100
log = logging.getLogger("DigitalHuman")


def empty_audio(sample_rate: int = EMPTY_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """A valid, zero-length mono track: what a video without sound has."""
    return np.zeros((1, 0), dtype=np.float32), int(sample_rate)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"'{p}': file not found")
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise MediaError(f"'{p}': not a readable media file ({exc.strerror or exc})") from exc


def channel_count(layout: av.AudioLayout) -> int:
    """Channels of a layout (``nb_channels`` from PyAV 13 on, ``len(channels)`` before)."""
    n = getattr(layout, "nb_channels", None)
    return int(n) if n is not None else len(layout.channels)


def packed_samples(frame: av.AudioFrame) -> np.ndarray:
    """A packed (interleaved) audio frame as a ``[C, n]`` view; planar frames are refused (see the module note)."""
    if frame.format.is_planar:
        raise ValueError(f"packed_samples needs a packed frame, got {frame.format.name}")
    return frame.to_ndarray().reshape(-1, channel_count(frame.layout)).T


def packed_frame(wave: np.ndarray, sample_rate: int, layout: str | av.AudioLayout) -> av.AudioFrame:
    """A packed float frame from ``[C, T]`` samples (safe for any channel count, see the module note)."""
    wave = np.asarray(wave, dtype=np.float32)
    inter = np.ascontiguousarray(wave.T).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(inter, format="flt", layout=layout)
    frame.sample_rate = int(sample_rate)
    return frame


def decode_audio_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    path: str,
    sample_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode one audio stream to float32 ``[C, T]``, resampled to ``sample_rate`` if given.

    Every channel is kept. If the stream changes its layout or rate part-way (broadcast AAC
    does), later frames are converted to the first frame's layout and the output rate.
    """
    cc = stream.codec_context
    if cc is None:
        raise MediaError(f"'{path}': no decoder for its audio codec")
    src_rate = int(cc.sample_rate or 0)
    out_rate = int(sample_rate) if sample_rate else src_rate
    if out_rate <= 0:
        raise MediaError(f"'{path}': the audio stream has no sample rate")
    parts: list[np.ndarray] = []
    resampler: av.AudioResampler | None = None
    layout: av.AudioLayout | None = None
    source: tuple[str, str, int] | None = None  # (format, layout, rate) the resampler was set up for
    decoded_s = 0.0

    def take(frames) -> None:
        for fr in frames:
            parts.append(packed_samples(fr))

    try:
        for frame in container.decode(stream):
            key = (frame.format.name, frame.layout.name, int(frame.sample_rate))
            if key != source:
                if resampler is not None:
                    take(resampler.resample(None))  # the old setup's buffered tail
                if layout is None:
                    layout = frame.layout
                elif frame.layout.name != layout.name:
                    log.warning("[DigitalHuman] %s: the audio changes from %s to %s at %.2f s; the rest is "
                                "converted to %s", path, layout.name, frame.layout.name, decoded_s, layout.name)
                try:
                    resampler = av.AudioResampler(format="flt", layout=layout, rate=out_rate)
                    take(resampler.resample(frame))
                except (ValueError, av.error.FFmpegError) as exc:
                    raise MediaError(
                        f"'{path}': cannot convert its audio ({frame.layout.name}, {frame.format.name}, "
                        f"{frame.sample_rate} Hz) to {layout.name} at {out_rate} Hz ({exc})") from exc
                source = key
            else:
                take(resampler.resample(frame))
            decoded_s += frame.samples / max(int(frame.sample_rate), 1)
        if resampler is not None:
            take(resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise MediaError(f"'{path}': audio is damaged or truncated ({exc.strerror or exc})") from exc
    n_ch = channel_count(layout) if layout is not None else int(cc.channels or 1)
    if not parts:
        return np.zeros((max(n_ch, 1), 0), dtype=np.float32), out_rate
    wave = np.concatenate(parts, axis=1)  # one copy, C-contiguous [C, T]
    return np.ascontiguousarray(wave, dtype=np.float32), out_rate


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """Load the first audio stream of ``path`` as float32 ``[C, T]`` and its sample rate.

    ``sample_rate`` None or 0 keeps the file's rate; ``mono`` averages all channels into one.
    A file without an audio stream is an error (use :func:`read_audio_track` for videos).
    """
    if sample_rate is not None and sample_rate < 0:
        raise MediaError(f"'{path}': sample_rate must be >= 0, got {sample_rate}")
    with _open(path) as container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise MediaError(f"'{path}': has no audio stream (it contains {', '.join(kinds)})")
        wave, sr = decode_audio_stream(container, container.streams.audio[0], str(path), sample_rate or None)
    if mono and wave.shape[0] > 1:
        wave = wave.mean(axis=0, keepdims=True)
    return wave, sr


def read_audio_track(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """The audio of a video file, or an empty-but-valid ``[1, 0]`` track at 44100 Hz if it has none."""
    with _open(path) as container:
        if not container.streams.audio:
            return empty_audio(sample_rate or EMPTY_SAMPLE_RATE)
    return load_audio(path, sample_rate, mono)


def clean_audio(wave: np.ndarray) -> np.ndarray:
    """float32 copy with NaN/inf set to 0 and samples clipped to [-1, 1] (what an encoder may safely take)."""
    out = np.nan_to_num(np.asarray(wave, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(out, -1.0, 1.0, out=out)
