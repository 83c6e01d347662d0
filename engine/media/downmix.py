"""Fit audio with many channels into what an MP4 for everyone carries (stereo or mono).

Why here and not in the loaders: Load Audio and Load Video keep every channel (core AUDIO
``[B, C, T]`` has no channel limit), so only the writer decides. Core AUDIO carries no channel
layout, so the layout is inferred from the channel count by ``mp4_downmix_layouts`` in
``data/media.json``: 3 to 8 channels are taken as the usual surround layouts (5.1, 7.1, ...)
and mixed to stereo by FFmpeg's swresample matrix (ITU-R BS.775: centre and surrounds at
-3 dB, LFE left out); counts without a listed layout (9 and more, in practice separate
microphone tracks) are averaged to mono so no channel is lost. The surround matrix adds up to
three channels into each side, so a loud mix can exceed full scale: it is then scaled down as
a whole (never clipped), and the gain is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from .audio_io import packed_frame, packed_samples
from .settings import media_settings

_BLOCK = 1 << 16  # samples per swresample call (bounds the temporary copies)


@dataclass(frozen=True)
class Downmix:
    """The fitted samples and, when something was done, what (``rule``) and the level change."""

    wave: np.ndarray  # float32 [C_out, T]
    rule: str = ""  # "" when the channels were kept
    gain_db: float = 0.0  # scaling applied after the matrix to stay within full scale


def _matrix_downmix(wave: np.ndarray, sample_rate: int, layout: str) -> np.ndarray:
    """``[C, T]`` in ``layout`` -> stereo ``[2, T]`` with swresample's standard matrix (no resampling)."""
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=int(sample_rate))
    parts: list[np.ndarray] = []
    for i in range(0, wave.shape[1], _BLOCK):
        frame = packed_frame(wave[:, i:i + _BLOCK], sample_rate, layout)
        frame.pts = i
        parts.extend(packed_samples(f) for f in resampler.resample(frame))
    parts.extend(packed_samples(f) for f in resampler.resample(None))
    out = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), np.float32)
    t = wave.shape[1]
    if out.shape[1] != t:  # same rate in and out, so swresample keeps the length; guard anyway
        out = out[:, :t] if out.shape[1] > t else np.pad(out, ((0, 0), (0, t - out.shape[1])))
    return np.ascontiguousarray(out, dtype=np.float32)


def fit_channels(wave: np.ndarray, sample_rate: int, settings: dict | None = None) -> Downmix:
    """``[C, T]`` float32 -> at most ``mp4_max_channels`` channels, by the rules of the module docstring."""
    cfg = settings or media_settings()
    c = int(wave.shape[0])
    if c <= int(cfg["mp4_max_channels"]):
        return Downmix(wave)
    layout = cfg["mp4_downmix_layouts"].get(str(c))
    if layout is None:
        return Downmix(np.ascontiguousarray(wave.mean(axis=0, keepdims=True), dtype=np.float32),
                       f"{c} channels (no speaker layout) averaged to mono")
    out = _matrix_downmix(wave, sample_rate, layout)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    gain_db = 0.0
    if peak > 1.0:
        out *= np.float32(1.0 / peak)
        gain_db = -20.0 * float(np.log10(peak))
    return Downmix(out, f"{c} channels taken as {layout}, downmixed to stereo (ITU-R BS.775)", gain_db)
