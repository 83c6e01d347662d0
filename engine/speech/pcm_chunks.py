"""Our audio as a provider takes it: mono float at any rate -> PCM 16-bit little-endian at one rate,
cut into chunks of a fixed duration (LiveAvatar LITE: 24 kHz, about 600 ms first, then 1 s).

Why resample here and not refuse: a voice at 22.05 or 16 kHz (or a clip at 44.1 kHz) sent as if it
were 24 kHz plays at the wrong speed and pitch and the provider says nothing (its docs: "wrong
format = garbled avatar with NO error"). So every chunk is resampled with soxr's streaming
resampler (the one librosa uses), which keeps its filter state across chunks: the output is the
same whether the audio arrives at once or in pieces.
"""
from __future__ import annotations

import numpy as np


class Pcm16Chunker:
    """Feed mono float chunks at ``in_rate`` (which may change between calls: the resampler restarts);
    get PCM16 byte chunks at ``out_rate``: the first of ``first_s`` seconds, then ``chunk_s``."""

    def __init__(self, out_rate: int = 24000, first_s: float = 0.6, chunk_s: float = 1.0, max_bytes: int = 0):
        if out_rate <= 0 or first_s <= 0 or chunk_s <= 0:
            raise ValueError("out_rate, first_s and chunk_s must be positive")
        self.out_rate = int(out_rate)
        self.first = int(round(first_s * out_rate)) * 2
        self.size = int(round(chunk_s * out_rate)) * 2
        if max_bytes:
            self.first, self.size = min(self.first, max_bytes - max_bytes % 2), min(self.size, max_bytes - max_bytes % 2)
        self._buf = bytearray()
        self._rate: int | None = None
        self._rs = None
        self.sent_chunks = 0
        self.samples_out = 0

    def _resample(self, x: np.ndarray, rate: int, last: bool = False) -> np.ndarray:
        if rate != self._rate:
            tail = self._flush_resampler()
            self._rate = rate
            self._rs = None
            if rate != self.out_rate:
                import soxr

                self._rs = soxr.ResampleStream(rate, self.out_rate, 1, dtype="float32", quality="HQ")
            if tail.size:
                self._push(tail)
        if self._rs is None:
            return x
        return self._rs.resample_chunk(x, last=last)

    def _flush_resampler(self) -> np.ndarray:
        if self._rs is None:
            return np.zeros(0, np.float32)
        out = self._rs.resample_chunk(np.zeros(0, np.float32), last=True)
        self._rs = None
        return out

    def _push(self, y: np.ndarray) -> None:
        if y.size:
            pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype("<i2")
            self._buf += pcm.tobytes()
            self.samples_out += int(pcm.size)

    def _take(self) -> list[bytes]:
        out = []
        while True:
            want = self.first if self.sent_chunks == 0 else self.size
            if len(self._buf) < want:
                return out
            out.append(bytes(self._buf[:want]))
            del self._buf[:want]
            self.sent_chunks += 1

    def feed(self, samples: np.ndarray, rate: int) -> list[bytes]:
        """PCM16 chunks completed by ``samples`` (mono float in [-1, 1] at ``rate``)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(x)):
            raise ValueError("the audio holds NaN or infinite samples; it cannot be sent")
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self._push(self._resample(x, int(rate)))
        return self._take()

    def flush(self) -> list[bytes]:
        """The rest: the resampler's tail and a last, shorter chunk (empty list when nothing is left)."""
        self._push(self._flush_resampler())
        self._rate = None
        out = self._take()
        if self._buf:
            out.append(bytes(self._buf))
            self._buf.clear()
            self.sent_chunks += 1
        return out

    def reset(self) -> None:
        """Drop everything not yet taken (an interrupt) and start a new utterance."""
        self._buf.clear()
        self._rs = None
        self._rate = None
        self.sent_chunks = 0
