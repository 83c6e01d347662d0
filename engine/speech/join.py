"""Separately synthesised pieces -> one utterance with natural pauses and per-sentence timings.

Why trim first: each request comes back with whatever lead-in and tail silence the voice adds,
so the gap heard between two pieces would vary. The edges are cut down to ``trim.keep_s`` and
then exactly the pause of ``data/speech.json`` (by boundary kind: paragraph, sentence, clause,
word, char) is inserted.

Sentence timings: with character timestamps that match a piece's text, a sentence runs from
the start of its first character to the end of its last; otherwise a piece's kept (non-silent)
span is shared among its sentences in proportion to their speakable characters (letters,
digits, CJK), which is an estimate. A sentence cut into several pieces spans all of them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import section
from .sentences import Plan, speakable
from .types import CharTimestamps, SentenceTiming, SpeechResult, as_mono_float32

log = logging.getLogger("DigitalHuman.speech")


@dataclass
class PieceAudio:
    """What a voice returned for one piece: mono samples, rate, and character times if it gave them."""

    samples: np.ndarray
    sample_rate: int
    chars: CharTimestamps | None = None

    def __post_init__(self) -> None:
        self.samples = as_mono_float32(self.samples, "piece audio")
        self.sample_rate = int(self.sample_rate)


def pause_seconds(kind: str, pauses: dict | None = None) -> float:
    """Seconds of silence before a piece whose boundary is ``kind`` ("start" has none)."""
    if kind == "start":
        return 0.0
    table = pauses if pauses is not None else section("pauses")
    if kind not in table:
        raise KeyError(f"no pause for boundary '{kind}' in the pause table (has {', '.join(k for k in table if not k.startswith('_'))})")
    return max(0.0, float(table[kind]))


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    return np.zeros(int(round(max(0.0, seconds) * sample_rate)), dtype=np.float32)


def trim_bounds(samples: np.ndarray, sample_rate: int, threshold_dbfs: float, keep_s: float) -> tuple[int, int]:
    """``(a, b)``: the span of ``samples`` to keep, with at most ``keep_s`` of silence on each side.

    A sample is loud when ``|x| >= 10 ** (threshold_dbfs / 20)``. All-silent audio is kept whole
    (nothing tells where its speech would be).
    """
    x = np.abs(np.asarray(samples, dtype=np.float32))
    n = len(x)
    if n == 0:
        return 0, 0
    loud = np.flatnonzero(x >= 10.0 ** (float(threshold_dbfs) / 20.0))
    if loud.size == 0:
        return 0, n
    keep = int(round(max(0.0, keep_s) * sample_rate))
    return max(0, int(loud[0]) - keep), min(n, int(loud[-1]) + 1 + keep)


def _weights(text: str) -> np.ndarray:
    """Prefix count of speakable characters: ``w[k]`` = speakable characters in ``text[:k]``."""
    return np.concatenate([[0], np.cumsum([1 if speakable(c) else 0 for c in text])]).astype(np.float64)


def _span_times(piece_text: str, x0: int, x1: int, t0: float, t1: float, chars: CharTimestamps | None,
                w: np.ndarray) -> tuple[float, float]:
    """Local times of ``piece_text[x0:x1]`` in a piece whose speech spans ``[t0, t1]`` (``w`` its
    :func:`_weights`)."""
    if chars is not None and chars.text == piece_text and len(chars):
        a, b = x0, x1
        while a < b - 1 and piece_text[a].isspace():
            a += 1
        while b > a + 1 and piece_text[b - 1].isspace():
            b -= 1
        a, b = min(a, len(chars) - 1), min(max(b - 1, a), len(chars) - 1)
        return chars.start_s[a], chars.end_s[b]
    total = w[-1]
    if total <= 0:
        return t0, t1
    return t0 + (t1 - t0) * w[x0] / total, t0 + (t1 - t0) * w[x1] / total


def assemble(plan: Plan, audios: Sequence[PieceAudio], *, pauses: dict | None = None,
             trim: dict | None = None, trim_outer: bool = True) -> SpeechResult:
    """Join ``audios`` (one per ``plan.pieces``) with pauses; sentence timings and character times
    are put on the clock of the joined samples. ``trim_outer`` False keeps the lead-in of the first
    piece and the tail of the last as the voice made them (only the joins are trimmed)."""
    if len(audios) != len(plan.pieces):
        raise ValueError(f"{len(plan.pieces)} pieces but {len(audios)} audio parts")
    if not audios:
        raise ValueError("nothing to join: no pieces")
    sr = audios[0].sample_rate
    for i, a in enumerate(audios):
        if a.sample_rate != sr:
            raise ValueError(f"piece {i} is at {a.sample_rate} Hz, piece 0 at {sr} Hz: cannot join different rates")
    pauses = pauses if pauses is not None else section("pauses")
    trim = trim if trim is not None else section("trim")
    parts: list[np.ndarray] = []
    pos = 0  # samples written so far
    spans: dict[int, list[float]] = {}
    char_parts: list[CharTimestamps] = []
    any_chars = any(a.chars is not None for a in audios)
    for i, (piece, audio) in enumerate(zip(plan.pieces, audios)):
        if i > 0:
            gap = silence(pause_seconds(piece.break_before, pauses), sr)
            parts.append(gap)
            pos += len(gap)
        n = len(audio.samples)
        a, b = (trim_bounds(audio.samples, sr, trim["threshold_dbfs"], trim["keep_s"])
                if trim.get("enabled", True) else (0, n))
        if not trim_outer:
            a = 0 if i == 0 else a
            b = n if i == len(audios) - 1 else b
        seg = audio.samples[a:b]
        offset = pos / sr - a / sr  # local time t -> t + offset on the joined clock
        lo, hi = pos / sr, (pos + len(seg)) / sr
        parts.append(seg)
        pos += len(seg)
        if audio.chars is not None:
            char_parts.append(audio.chars.shifted(offset, lo, hi))
        elif any_chars:
            log.info("[DigitalHuman] piece %d has no character timestamps; its sentences are timed by estimate", i)
        w = _weights(piece.text)
        for si in piece.sentences:
            s = plan.sentences[si]
            x0, x1 = max(piece.start, s.start) - piece.start, min(piece.end, s.end) - piece.start
            t_a, t_b = _span_times(piece.text, x0, x1, a / sr, b / sr, audio.chars, w)
            t_a, t_b = min(max(t_a + offset, lo), hi), min(max(t_b + offset, lo), hi)
            cur = spans.setdefault(si, [t_a, t_b])
            cur[0], cur[1] = min(cur[0], t_a), max(cur[1], t_b)
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    timings = [SentenceTiming(plan.sentences[si].text, round(float(v[0]), 6), round(float(v[1]), 6)) for si, v in sorted(spans.items())]
    chars = CharTimestamps.concat(char_parts) if char_parts else None
    return SpeechResult(samples, sr, timings, chars)


class StreamTrimmer:
    """:func:`trim_bounds` for audio that arrives in chunks: silence at the start is dropped down to
    ``keep_s`` before the first loud sample, a run of silence is held back until a loud sample shows
    it was inside the speech, and at :meth:`end` at most ``keep_s`` of the held tail is let out. The
    output equals ``samples[a:b]`` of :func:`trim_bounds` on the whole (all-silent audio is kept whole)."""

    def __init__(self, sample_rate: int, threshold_dbfs: float, keep_s: float):
        self.level = 10.0 ** (float(threshold_dbfs) / 20.0)
        self.keep = int(round(max(0.0, keep_s) * int(sample_rate)))
        self.started = False
        self.held: list[np.ndarray] = []  # quiet samples not yet let out (before speech: the lead-in)
        self.held_n = 0

    def _hold(self, x: np.ndarray) -> None:
        if x.size:
            self.held.append(x)
            self.held_n += x.size

    def _take_held(self, last: int | None = None) -> np.ndarray:
        h = np.concatenate(self.held) if self.held else np.zeros(0, np.float32)
        self.held, self.held_n = [], 0
        return h if last is None else h[h.size - min(last, h.size):]

    def feed(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        loud = np.flatnonzero(np.abs(x) >= self.level)
        if loud.size == 0:
            self._hold(x)
            return np.zeros(0, np.float32)
        first, last = int(loud[0]), int(loud[-1])
        if not self.started:
            lead = np.concatenate([self._take_held(), x[:first]])
            head = lead[lead.size - min(self.keep, lead.size):]
            self.started = True
        else:
            head = np.concatenate([self._take_held(), x[:first]])
        out = np.concatenate([head, x[first:last + 1]])
        self._hold(x[last + 1:])
        return out

    def end(self) -> np.ndarray:
        """The rest: ``keep_s`` of the held tail, or everything when no sample was loud."""
        if not self.started:
            return self._take_held()
        h = self._take_held()
        return h[:min(self.keep, h.size)]
