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


def window_indices(start: int, stop: int, step: float, lead: int) -> np.ndarray:
    """``[stop - start, WINDOW]`` unpadded feature indices of frames ``start..stop-1`` (step 3. and 4.
    of the module docstring: frame ``i`` starts at ``floor(i * step) - lead``)."""
    if stop <= start:
        return np.zeros((0, WINDOW), np.int64)
    first = np.array([math.floor(i * step) for i in range(start, stop)], np.int64) - lead
    return first[:, None] + np.arange(WINDOW)[None, :]


def gather_windows(idx: np.ndarray, n_features: int, segment: Callable[[int], torch.Tensor],
                   encoder: torch.nn.Module) -> torch.Tensor:
    """``[n, 50, 384]`` audio prompts for feature indices ``idx [n, WINDOW]``: entries outside
    ``0..n_features-1`` are zeros, the others read from ``segment(k)`` (``[1500, 5, 384]``)."""
    p = next(encoder.parameters())
    out = torch.zeros(idx.shape[0], WINDOW, N_STATES, D_MODEL, dtype=p.dtype, device=p.device)
    valid = (idx >= 0) & (idx < n_features)
    if valid.any():
        for k in np.unique(idx[valid] // SEGMENT_FEATURES):
            sel = valid & (idx // SEGMENT_FEATURES == k)
            rows, cols = np.nonzero(sel)
            seg = segment(int(k))
            out[torch.from_numpy(rows), torch.from_numpy(cols)] = seg[torch.from_numpy(idx[sel] - k * SEGMENT_FEATURES)]
    return out.reshape(idx.shape[0], WINDOW * N_STATES, D_MODEL)


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
        return window_indices(i, i + 1, self.step, self.lead)[0]

    def windows(self, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"frames {start}..{stop} outside 0..{self.n_frames}")
        idx = window_indices(start, stop, self.step, self.lead)
        return gather_windows(idx, self.n_features, self._segment, self.encoder)

    def batches(self, batch_size: int, check_interrupt: Callable[[], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first_frame, windows)`` for consecutive batches covering every frame."""
        for s in range(0, self.n_frames, batch_size):
            if check_interrupt:
                check_interrupt()
            yield s, self.windows(s, min(s + batch_size, self.n_frames))


class StreamingAudioWindows:
    """The per-frame audio prompts of audio that arrives in chunks (a voice speaking, a clip
    uploading), equal to :class:`AudioWindows` of the whole clip, handed out as soon as they are final.

    Why frames cannot be final earlier: Whisper's encoder attends over its whole 30 s input, and
    its log-mel is normalised by the segment's maximum, so every feature of a segment depends on
    all the audio of that segment. A segment is therefore encoded once, when it is complete
    (30 s received, or :meth:`end`), and a frame is final when every feature of its window lies in
    encoded segments. Speech of a live session comes sentence by sentence, so in practice the
    frames of a piece are final when its audio ends; a clip longer than 30 s is released segment by
    segment.

    Exactness: chunks at another rate go through soxr's streaming resampler at the quality
    librosa uses (whose output is the one-shot resampler's, sample for sample), the length is then
    fixed to ``ceil(n * 16000 / rate)`` as librosa fixes it, and the encoder and the window gather
    are the very functions :class:`AudioWindows` calls; so the windows are bit-identical to
    ``AudioWindows(to_mono_16k(whole, rate), encoder, fps)``.

    Memory: the 16 kHz samples of segments not yet encoded and the encoded segments frames still
    need (at most two), whatever the length.
    """

    def __init__(self, encoder: torch.nn.Module, fps: float = 25.0, sample_rate: int = SAMPLE_RATE):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if int(sample_rate) <= 0:
            raise ValueError(f"audio sample rate must be positive, got {sample_rate}")
        self.encoder = encoder
        self.fps = float(fps)
        self.sample_rate = int(sample_rate)
        self.step = FEATURE_RATE / self.fps
        self.lead = math.ceil(self.step) * PAD_LEFT
        self._resampler = None
        if self.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        self.samples_in = 0  # input samples pushed (at sample_rate)
        self.received = 0  # 16 kHz samples so far
        self._buf: list[np.ndarray] = []  # 16 kHz samples from _buf_start on (segments not yet encoded)
        self._buf_start = 0
        self._segments: dict[int, torch.Tensor] = {}
        self.ended = False
        self.next_frame = 0
        self.encode_s = 0.0  # time spent in the encoder (for the latency budget)

    # -- input -------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> None:
        """Append mono float samples at ``sample_rate`` (NaN/inf become 0, as :func:`to_mono_16k` does)."""
        if self.ended:
            raise RuntimeError("audio already ended")
        x = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
        self.samples_in += x.size
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        self._append(x)

    def end(self) -> None:
        """No more audio: flush the resampler, fix the length as librosa does, encode the last segment."""
        if self.ended:
            return
        if self._resampler is not None:
            self._append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            if self.samples_in:
                want = int(np.ceil(self.samples_in * (float(SAMPLE_RATE) / self.sample_rate)))
                if want > self.received:
                    self._append(np.zeros(want - self.received, np.float32))
                elif want < self.received:  # never seen from soxr; trimmed like librosa's fix_length would
                    self._trim_to(want)
        self.ended = True

    def _append(self, x: np.ndarray) -> None:
        if x.size:
            self._buf.append(np.ascontiguousarray(x, dtype=np.float32))
            self.received += x.size

    def _trim_to(self, n: int) -> None:
        data = self._buffered()
        keep = max(0, n - self._buf_start)
        self._buf = [data[:keep]]
        self.received = n

    def _buffered(self) -> np.ndarray:
        if len(self._buf) != 1:
            self._buf = [np.concatenate(self._buf) if self._buf else np.zeros(0, np.float32)]
        return self._buf[0]

    # -- what is known -----------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Seconds of audio received so far (16 kHz samples / 16000)."""
        return self.received / SAMPLE_RATE

    @property
    def n_frames(self) -> int | None:
        """Total frames, ``floor(seconds * fps)``, once the audio has ended (None before)."""
        return math.floor((self.received / SAMPLE_RATE) * self.fps) if self.ended else None

    @property
    def n_features(self) -> int:
        return math.floor((self.received / SAMPLE_RATE) * FEATURE_RATE)

    def available(self) -> int:
        """Frames ``0..available()-1`` have final windows (some may already be taken)."""
        if self.ended:
            return self.n_frames or 0
        complete = self.received // SEGMENT_SAMPLES  # segments fully received
        limit = complete * SEGMENT_FEATURES  # feature indices below this are final
        # the last window index of frame i is floor(i * step) - lead + WINDOW - 1 < limit
        i = max(self.next_frame, 0)
        n_known = math.floor((self.received / SAMPLE_RATE) * self.fps)
        while i < n_known and math.floor(i * self.step) - self.lead + WINDOW - 1 < limit:
            i += 1
        return i

    def pending(self) -> int:
        """Final frames not yet taken."""
        return max(0, self.available() - self.next_frame)

    def done(self) -> bool:
        """The audio ended and every frame was taken."""
        return self.ended and self.next_frame >= (self.n_frames or 0)

    # -- output ------------------------------------------------------------------------------
    def _segment(self, k: int) -> torch.Tensor:
        if k not in self._segments:
            a, b = k * SEGMENT_SAMPLES, (k + 1) * SEGMENT_SAMPLES
            data = self._buffered()
            if a < self._buf_start:
                raise RuntimeError(f"audio segment {k} was already released")
            import time

            t0 = time.perf_counter()
            self._segments[k] = encode_segment(self.encoder, data[a - self._buf_start:b - self._buf_start])
            self.encode_s += time.perf_counter() - t0
        return self._segments[k]

    def _release(self) -> None:
        """Forget encoded segments and samples no frame from ``next_frame`` on needs."""
        first_needed = max(0, math.floor(self.next_frame * self.step) - self.lead) // SEGMENT_FEATURES
        for k in [k for k in self._segments if k < first_needed]:
            del self._segments[k]
        cut = first_needed * SEGMENT_SAMPLES
        if cut > self._buf_start:
            data = self._buffered()
            self._buf = [data[cut - self._buf_start:]]
            self._buf_start = cut

    def take(self, max_frames: int) -> tuple[int, torch.Tensor] | None:
        """``(first_frame, windows [n, 50, 384])`` of up to ``max_frames`` next final frames, or None."""
        n = min(int(max_frames), self.pending())
        if n <= 0:
            return None
        start = self.next_frame
        idx = window_indices(start, start + n, self.step, self.lead)
        out = gather_windows(idx, self.n_features, self._segment, self.encoder)
        self.next_frame = start + n
        self._release()
        return start, out
