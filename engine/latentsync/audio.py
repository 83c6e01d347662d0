"""LatentSync's audio features: Whisper tiny states at 50 Hz, a 10-frame window per video frame.

The order of operations follows the reference (``latentsync/whisper``: ``transcribe`` and
``Audio2Feature``), which differs from MuseTalk's in three ways that change the numbers:

1. the log-mel spectrogram is taken over the *whole* 16 kHz signal at once (Hann window of 400,
   hop 160, the last STFT frame dropped, mel filters of ``librosa.filters.mel(16000, 400, 80)``),
   and its dynamic range is clipped 8 (log10) below the maximum of the whole signal;
2. it is then cut into 3000-frame (30 s) segments, each padded with zeros *in the log-mel domain*
   to 3000 frames, encoded on its own, and the states of a segment of ``m`` mel frames are cut to
   ``m // 2`` feature frames (the encoder halves the rate); the states are the input stage and the
   outputs of all 4 blocks, before the final layer norm;
3. video frame ``i`` (at 25 fps) takes feature frames ``c-4 .. c+5`` with ``c = int(i * 50 / fps)``,
   each index clamped into ``0 .. L-1`` (the edge frame repeats), flattened to ``[50, 384]``.

The reference makes ``floor(L / 2) + 2`` video frames of ``L`` feature frames (two past the end of
the audio); here the count is ``floor(seconds * fps)`` (see :func:`frame_count`): the windows of
those frames are the reference's. Segments are encoded on demand (two kept), so memory grows only
with the log-mel itself (32 KB per second of audio).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch

from .config import section


def _cfg() -> dict:
    return section("audio")


def frame_count(n_samples: int, fps: float, sample_rate: int | None = None) -> int:
    """Video frames ``n_samples`` of audio cover: ``floor(seconds * fps)``; an error below one frame."""
    sr = sample_rate or _cfg()["sample_rate"]
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = math.floor(n_samples / sr * fps + 1e-9)
    if n < 1:
        raise ValueError(f"audio is {n_samples / sr * 1000:.1f} ms long, shorter than one video frame at {fps:g} fps "
                         f"({1000 / fps:.1f} ms); give at least one frame's worth of audio")
    return n


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, n_fft: int = 400, sample_rate: int = 16000) -> torch.Tensor:
    """The mel filter bank ``[n_mels, n_fft // 2 + 1]`` (librosa's Slaney filters, what Whisper ships)."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32))


def log_mel(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel ``[80, n // 160]`` of a whole 16 kHz float signal, normalised to its own maximum."""
    c = _cfg()
    audio = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if audio.ndim != 1:
        raise ValueError(f"log_mel: expected mono samples [T], got shape {list(audio.shape)}")
    if audio.numel() < c["n_fft"] // 2 + 1:  # reflect padding needs more than n_fft / 2 samples
        audio = torch.nn.functional.pad(audio, (0, c["n_fft"] // 2 + 1 - audio.numel()))
    window = torch.hann_window(c["n_fft"])
    stft = torch.stft(audio, c["n_fft"], c["hop_length"], window=window, return_complex=True)
    power = stft[:, :-1].abs() ** 2
    spec = mel_filters(c["n_mels"], c["n_fft"], c["sample_rate"]) @ power
    logs = torch.clamp(spec, min=c["log_floor"]).log10()
    logs = torch.maximum(logs, logs.max() - c["dynamic_range_log10"])
    return (logs + 4.0) / 4.0


class AudioFeatures:
    """Per-frame audio tokens ``[50, 384]`` of a 16 kHz mono signal, computed lazily per 30 s segment.

    ``window(i)`` / ``windows(start, stop)`` give frame ``i``'s tokens; ``n_frames`` is
    ``floor(seconds * fps)``. Indices past the audio read its last feature frame, as in the
    reference, so a padded last window (or extra frames) is well defined.
    """

    def __init__(self, samples: np.ndarray, encoder, fps: float = 25.0, feat_length: tuple[int, int] = (2, 2)):
        c = _cfg()
        self.samples = np.asarray(samples, dtype=np.float32)
        self.encoder = encoder
        self.fps = float(fps)
        self.n_frames = frame_count(self.samples.size, self.fps, c["sample_rate"])
        self.mel = log_mel(self.samples)
        self.seg = int(c["segment_mel_frames"])
        m = self.mel.shape[1]
        self.n_features = (m // self.seg) * (self.seg // 2) + (m % self.seg) // 2
        if self.n_features < 1:
            raise ValueError("audio too short for one Whisper feature frame (20 ms)")
        self.rate = float(c["feature_rate"])
        self.left, self.right = int(feat_length[0]), int(feat_length[1])
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.n_frames

    @property
    def width(self) -> int:
        return 2 * (self.left + self.right + 1)

    def _segment(self, k: int) -> torch.Tensor:
        """States ``[seg_len // 2, n_states, d]`` of segment ``k`` (float32, on the encoder's device)."""
        if k not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            part = self.mel[:, k * self.seg:(k + 1) * self.seg]
            keep = part.shape[1] // 2
            part = torch.nn.functional.pad(part, (0, self.seg - part.shape[1]))
            with torch.no_grad():
                states = self.encoder.states(part[None])[0]
            self._cache[k] = states[:keep].float()
        return self._cache[k]

    def feature_indices(self, i: int) -> np.ndarray:
        """Clamped feature-frame indices of video frame ``i``'s window (the reference's ``get_sliced_feature``)."""
        centre = int(i * self.rate / self.fps)
        idx = np.arange(centre - 2 * self.left, centre + 2 * (self.right + 1))
        return np.clip(idx, 0, self.n_features - 1)

    def windows(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``start .. stop-1`` as ``[n, 50, 384]`` float32 (frames past the audio allowed)."""
        if start < 0 or stop < start:
            raise IndexError(f"frames {start}..{stop} out of range")
        idx = np.stack([self.feature_indices(i) for i in range(start, stop)]) if stop > start \
            else np.zeros((0, self.width), np.int64)
        half = self.seg // 2
        seg_of = idx // half
        parts = {int(k): self._segment(int(k)) for k in np.unique(seg_of)}
        any_seg = next(iter(parts.values())) if parts else self._segment(0)
        out = torch.empty((idx.shape[0], idx.shape[1]) + tuple(any_seg.shape[1:]), dtype=torch.float32,
                          device=any_seg.device)
        for k, states in parts.items():
            rows, cols = np.nonzero(seg_of == k)
            out[torch.from_numpy(rows), torch.from_numpy(cols)] = states[torch.from_numpy(idx[rows, cols] - k * half)]
        return out.reshape(idx.shape[0], -1, out.shape[-1])

    def window(self, i: int) -> torch.Tensor:
        return self.windows(i, i + 1)[0]

    def iter_windows(self, size: int) -> Iterator[tuple[int, torch.Tensor]]:
        for s in range(0, self.n_frames, size):
            yield s, self.windows(s, min(s + size, self.n_frames))
