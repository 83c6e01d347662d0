"""The speech result every voice of the pack returns, and the chunk a streaming voice yields.

Why one type: nodes, subtitles, lip sync and the real-time session must not care which voice
spoke. Samples are always mono float32 in -1..1 as a 1-D array; the sample rate travels with
them because voices differ (CosyVoice 2 and OpenAI speak at 24 kHz, ElevenLabs at the rate its
``output_format`` names). Times are seconds from the start of ``samples``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np


class SentenceTiming(NamedTuple):
    """When one sentence is heard: ``(text, start_s, end_s)``."""

    text: str
    start_s: float
    end_s: float


@dataclass
class CharTimestamps:
    """Per-character times (what ElevenLabs' ``/with-timestamps`` answers): three lists of equal length."""

    characters: list[str]
    start_s: list[float]
    end_s: list[float]

    def __post_init__(self) -> None:
        n = len(self.characters)
        if len(self.start_s) != n or len(self.end_s) != n:
            raise ValueError(f"character timestamps: {n} characters but {len(self.start_s)} start and "
                             f"{len(self.end_s)} end times")
        self.characters = [str(c) for c in self.characters]
        self.start_s = [float(t) for t in self.start_s]
        self.end_s = [float(t) for t in self.end_s]

    def __len__(self) -> int:
        return len(self.characters)

    @property
    def text(self) -> str:
        return "".join(self.characters)

    def shifted(self, offset_s: float, lo: float = -np.inf, hi: float = np.inf) -> "CharTimestamps":
        """Every time moved by ``offset_s`` and clipped to ``[lo, hi]``."""
        clip = lambda t: float(min(max(t + offset_s, lo), hi))  # noqa: E731
        return CharTimestamps(list(self.characters), [clip(t) for t in self.start_s], [clip(t) for t in self.end_s])

    @staticmethod
    def concat(parts: Sequence["CharTimestamps"]) -> "CharTimestamps":
        """The parts one after the other (their times must already be on one clock)."""
        chars: list[str] = []
        starts: list[float] = []
        ends: list[float] = []
        for p in parts:
            chars += p.characters
            starts += p.start_s
            ends += p.end_s
        return CharTimestamps(chars, starts, ends)


def as_mono_float32(samples: Any, where: str = "samples") -> np.ndarray:
    """A contiguous float32 1-D copy-if-needed of ``samples`` (``[T]`` or ``[1, T]``)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"{where}: speech must be mono samples [T], got shape {tuple(x.shape)}")
    return np.ascontiguousarray(x)


@dataclass
class SpeechResult:
    """A whole utterance.

    ``samples`` mono float32 ``[T]``; ``sample_rate`` in Hz; ``sentences`` the per-sentence timings
    in order; ``chars`` character timestamps when the voice gave them; ``cost_usd`` the estimated
    price of making it (0 for local voices); ``info`` provider details (usage, request ids, model).
    """

    samples: np.ndarray
    sample_rate: int
    sentences: list[SentenceTiming] = field(default_factory=list)
    chars: CharTimestamps | None = None
    cost_usd: float = 0.0
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.samples = as_mono_float32(self.samples)
        self.sample_rate = int(self.sample_rate)
        if self.sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate}")
        self.sentences = [SentenceTiming(*t) for t in self.sentences]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass
class SpeechChunk:
    """A piece of streamed speech, playable as soon as it arrives.

    ``piece`` is the index of the text piece it belongs to (``Plan.pieces``), ``kind`` is
    ``"speech"`` or ``"pause"`` (silence inserted between pieces).
    """

    samples: np.ndarray
    sample_rate: int
    piece: int
    kind: str = "speech"

    def __post_init__(self) -> None:
        self.samples = as_mono_float32(self.samples, "chunk")
        self.sample_rate = int(self.sample_rate)
