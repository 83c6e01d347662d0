"""MuseTalk's audio features: whisper-tiny hidden states at 50 Hz, windowed per video frame.

The order of operations follows the reference:

1. audio -> 16 kHz mono (librosa's default soxr resampler, as ``librosa.load(sr=16000)`` does);
2. cut into 30 s segments; each becomes a Whisper log-mel input ``[80, 3000]`` (the segment is
   zero-padded to 30 s by the feature extractor) and runs through the encoder on its own;
3. all 5 hidden states (the embedding output and the outputs of the 4 layers, the last one after
   the final layer norm) are stacked: ``[1500, 5, 384]`` per segment, 50 feature frames per
   second; the concatenation is cut to ``floor(seconds * 50)`` frames;
4. ``p = ceil(50 / fps)`` : ``2p`` zero frames are put in front (and enough behind);
5. video frame ``i`` takes the 10 feature frames starting at ``floor(i * 50 / fps)`` of the padded
   sequence (at 25 fps: frames 2i-4 .. 2i+5, i.e. 200 ms centred on the video frame), flattened
   time-major to ``[50, 384]``.

The number of video frames is ``floor(seconds * fps)``. The reference rounds fps to an integer;
here fractional rates (29.97) are used as given, so the windows stay in sync over long clips.
Segments are encoded on demand and at most two are held, so memory does not grow with the
audio's length.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

SAMPLE_RATE = 16000
FEATURE_RATE = 50  # whisper encoder frames per second
SEGMENT_SECONDS = 30
SEGMENT_SAMPLES = SEGMENT_SECONDS * SAMPLE_RATE
SEGMENT_FEATURES = SEGMENT_SECONDS * FEATURE_RATE
PAD_LEFT = 2  # the reference's audio_padding_length_left / _right
PAD_RIGHT = 2
WINDOW = 2 * (PAD_LEFT + PAD_RIGHT + 1)  # 10 feature frames per video frame
N_STATES = 5  # whisper-tiny: embeddings + 4 encoder layers
D_MODEL = 384


def to_mono_16k(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Any of ``[T]``, ``[C,T]``, ``[B,C,T]`` (first item of a batch) at any rate -> float32 mono 16 kHz.

    Channels are averaged (as librosa.load does); NaN/inf become 0. Clipped audio is left as is.
    """
    x = waveform.detach().float().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if x.ndim == 3:
        x = x[0]
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"audio waveform must be [T], [C,T] or [B,C,T]; got shape {list(np.shape(waveform))}")
    if int(sample_rate) <= 0:
        raise ValueError(f"audio sample rate must be positive, got {sample_rate}")
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if int(sample_rate) != SAMPLE_RATE and x.size:
        import librosa

        x = librosa.resample(x, orig_sr=int(sample_rate), target_sr=SAMPLE_RATE).astype(np.float32)
    return x


def frame_count(n_samples: int, fps: float) -> int:
    """Video frames the audio covers, ``floor(seconds * fps)``; a clear error when not even one."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = math.floor((n_samples / SAMPLE_RATE) * fps)
    if n < 1:
        raise ValueError(f"audio is {n_samples / SAMPLE_RATE * 1000:.1f} ms long, shorter than one video frame "
                         f"at {fps:g} fps ({1000 / fps:.1f} ms); give at least one frame's worth of audio")
    return n


_EXTRACTOR = None


def log_mel(segment: np.ndarray) -> torch.Tensor:
    """Whisper's log-mel input ``[1, 80, 3000]`` of up to 30 s of 16 kHz audio (transformers' extractor,
    built from its default parameters, which are whisper-tiny's)."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        from transformers import WhisperFeatureExtractor

        _EXTRACTOR = WhisperFeatureExtractor()
    return _EXTRACTOR(segment, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


@torch.no_grad()
def encode_segment(encoder: torch.nn.Module, segment: np.ndarray) -> torch.Tensor:
    """``[1500, 5, 384]``: all hidden states of the Whisper encoder for one (<= 30 s) segment."""
    p = next(encoder.parameters())
    mel = log_mel(segment).to(device=p.device, dtype=p.dtype)
    states = encoder(mel, output_hidden_states=True).hidden_states
    return torch.stack(states, dim=2)[0]


class AudioWindows:
    """Per-frame audio prompts ``[50, 384]`` of a 16 kHz signal, computed lazily in 30 s segments.

    ``windows(start, stop)`` returns frames ``start..stop-1`` as ``[n, 50, 384]`` (encoder dtype and
    device); the two most recent segments are cached, so sequential access encodes each segment once.
    """

    def __init__(self, samples: np.ndarray, encoder: torch.nn.Module, fps: float = 25.0):
        self.samples = np.asarray(samples, dtype=np.float32)
        self.encoder = encoder
        self.fps = float(fps)
        self.n_frames = frame_count(self.samples.size, self.fps)
        self.step = FEATURE_RATE / self.fps
        self.n_features = math.floor((self.samples.size / SAMPLE_RATE) * FEATURE_RATE)
        self.lead = math.ceil(self.step) * PAD_LEFT
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.n_frames

    def _segment(self, k: int) -> torch.Tensor:
        if k not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[k] = encode_segment(self.encoder, self.samples[k * SEGMENT_SAMPLES:(k + 1) * SEGMENT_SAMPLES])
        return self._cache[k]

    def frame_feature_index(self, i: int) -> np.ndarray:
        """Unpadded feature indices of frame ``i``'s window (entries outside 0..n_features-1 read as zeros)."""
        start = math.floor(i * self.step) - self.lead
        return np.arange(start, start + WINDOW)

    def windows(self, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"frames {start}..{stop} outside 0..{self.n_frames}")
        idx = np.stack([self.frame_feature_index(i) for i in range(start, stop)]) if stop > start else np.zeros((0, WINDOW), int)
        p = next(self.encoder.parameters())
        out = torch.zeros(idx.shape[0], WINDOW, N_STATES, D_MODEL, dtype=p.dtype, device=p.device)
        valid = (idx >= 0) & (idx < self.n_features)
        if valid.any():
            for k in np.unique(idx[valid] // SEGMENT_FEATURES):
                sel = valid & (idx // SEGMENT_FEATURES == k)
                rows, cols = np.nonzero(sel)
                seg = self._segment(int(k))
                out[torch.from_numpy(rows), torch.from_numpy(cols)] = seg[torch.from_numpy(idx[sel] - k * SEGMENT_FEATURES)]
        return out.reshape(idx.shape[0], WINDOW * N_STATES, D_MODEL)

    def batches(self, batch_size: int, check_interrupt: Callable[[], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first_frame, windows)`` for consecutive batches covering every frame."""
        for s in range(0, self.n_frames, batch_size):
            if check_interrupt:
                check_interrupt()
            yield s, self.windows(s, min(s + batch_size, self.n_frames))
