"""SubRip subtitles (``.srt``) from sentence timings, and reading them back.

Cues follow sentences; a sentence too long for ``max_lines`` lines becomes several cues (see the
``srt`` section of ``data/speech.json``). Lines are balanced, broken at spaces or between CJK
characters (never before a closing mark); reading joins wrapped lines with a space, or with
nothing next to CJK, so text written here reads back as it was.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .config import section
from .sentences import TooLongError, char_budget, cut_to_fit, is_cjk, speakable
from .types import SentenceTiming


@dataclass(frozen=True)
class Cue:
    """One subtitle: number (from 1), start and end in seconds, and its text lines."""

    index: int
    start_s: float
    end_s: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return join_lines(self.lines)


def _mostly_cjk(text: str) -> bool:
    sp = [c for c in text if speakable(c)]
    return bool(sp) and sum(is_cjk(c) for c in sp) * 2 > len(sp)


def _cjk_side(ch: str) -> bool:
    """CJK characters and CJK punctuation (full-width marks) join without a space."""
    return is_cjk(ch) or 0x3000 <= ord(ch) <= 0x303F or 0xFF00 <= ord(ch) <= 0xFFEF


def join_lines(lines: Sequence[str]) -> str:
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if out and not (_cjk_side(out[-1]) or _cjk_side(line[0])):
            out += " "
        out += line
    return out


def format_timestamp(seconds: float) -> str:
    """Seconds -> ``HH:MM:SS,mmm`` (rounded to the millisecond; negatives as 0)."""
    ms = max(0, int(math.floor(float(seconds) * 1000.0 + 0.5)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def parse_timestamp(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+):(\d{2}):(\d{2})[,.](\d{1,3})\s*", text)
    if not m:
        raise ValueError(f"'{text}' is not an SRT time (HH:MM:SS,mmm)")
    h, mi, s, ms = m.groups()
    return ((int(h) * 3600 + int(mi) * 60 + int(s)) * 1000 + int(ms.ljust(3, "0"))) / 1000.0


def _break_points(text: str) -> list[tuple[int, int]]:
    """Where a line may break: ``(end of this line, start of the next)``: at spaces (the space is
    dropped), or between two characters next to CJK (never inside a Latin word)."""
    pts = []
    for p in range(1, len(text)):
        if text[p] == " " and text[p - 1] != " ":
            q = p
            while q < len(text) and text[q] == " ":
                q += 1
            if q < len(text):
                pts.append((p, q))
        elif text[p - 1] != " " and text[p] != " " and (_cjk_side(text[p - 1]) or _cjk_side(text[p])) \
                and not _cjk_closing(text[p]):
            pts.append((p, p))
    return pts


def _cjk_closing(ch: str) -> bool:
    """Marks that must not start a line (。，、！？ and closing quotes/brackets)."""
    return ch in "。，、．！？；：”’」』）》】〉〕…" or ch in ",.!?;:)]}"


def wrap(text: str, max_chars: int, max_lines: int) -> tuple[str, ...]:
    """``text`` as lines of balanced length, each at most ``max_chars`` where a break allows it,
    as few as fit (at most ``max_lines`` unless the text is longer than they hold)."""
    text = text.strip() if _mostly_cjk(text) else " ".join(text.split())
    if len(text) <= max_chars or max_lines <= 1:
        return (text,)
    pts = _break_points(text)
    lines = []
    start = 0
    n_lines = max(2, -(-len(text) // max_chars))
    for k in range(n_lines - 1):
        rest = len(text) - start
        if rest <= max_chars:
            break
        target = start + rest / (n_lines - k)
        cands = [bp for bp in pts if start < bp[0] <= start + max_chars]
        if not cands:
            cands = [bp for bp in pts if bp[0] > start][:1]
            if not cands:
                break
        end, nxt = min(cands, key=lambda bp: abs(bp[0] - target))
        lines.append(text[start:end])
        start = nxt
    lines.append(text[start:])
    return tuple(lines)


def cues_from_timings(timings: Sequence[SentenceTiming], rule: dict | None = None) -> list[Cue]:
    """One cue per sentence, long sentences cut into several, lines wrapped, short cues lengthened."""
    rule = rule or section("srt")
    rough: list[tuple[float, float, str]] = []
    for text, t0, t1 in timings:
        text = " ".join(str(text).split()) if not _mostly_cjk(str(text)) else str(text).strip()
        if not text:
            continue
        line = int(rule["max_line_chars_cjk"] if _mostly_cjk(text) else rule["max_line_chars"])
        cue_chars = line * int(rule["max_lines"])
        try:
            spans = cut_to_fit(text, [char_budget(cue_chars)]) if len(text) > cue_chars else [(0, len(text))]
        except TooLongError:
            spans = [(0, len(text))]
        weights = [max(1, sum(speakable(c) for c in text[a:b])) for a, b in spans]
        total = float(sum(weights))
        acc = 0.0
        for (a, b), w in zip(spans, weights):
            s0 = t0 + (t1 - t0) * acc / total
            acc += w
            rough.append((s0, t0 + (t1 - t0) * acc / total, text[a:b]))
    cues = []
    min_s = float(rule["min_cue_s"])
    for k, (s0, s1, text) in enumerate(rough):
        nxt = rough[k + 1][0] if k + 1 < len(rough) else None
        if s1 - s0 < min_s:
            s1 = s0 + min_s if nxt is None else max(s1, min(s0 + min_s, nxt))
        line = int(rule["max_line_chars_cjk"] if _mostly_cjk(text) else rule["max_line_chars"])
        cues.append(Cue(k + 1, s0, s1, wrap(text, line, int(rule["max_lines"]))))
    return cues


def format_srt(cues: Sequence[Cue]) -> str:
    """Cues as SRT text: number, ``start --> end``, lines, a blank line."""
    blocks = [f"{c.index}\n{format_timestamp(c.start_s)} --> {format_timestamp(c.end_s)}\n" + "\n".join(c.lines) + "\n"
              for c in cues]
    return "\n".join(blocks)


def to_srt(timings: Sequence[SentenceTiming], rule: dict | None = None) -> str:
    return format_srt(cues_from_timings(timings, rule))


def write_srt(path: str | Path, timings: Sequence[SentenceTiming], rule: dict | None = None) -> Path:
    """Write the subtitles of ``timings`` to ``path`` (UTF-8, no BOM) and return the path."""
    p = Path(path)
    p.write_text(to_srt(timings, rule), encoding="utf-8", newline="\n")
    return p


def parse_srt(text: str) -> list[Cue]:
    """SRT text -> cues (a BOM, CRLF line ends and missing blank lines at the end are tolerated)."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.split("\n")
        if len(lines) < 2:
            raise ValueError(f"SRT block '{block[:40]}' has no time line")
        try:
            index = int(lines[0].strip())
        except ValueError:
            raise ValueError(f"SRT block '{block[:40]}' does not start with a cue number") from None
        if "-->" not in lines[1]:
            raise ValueError(f"SRT cue {index}: '{lines[1]}' is not a 'start --> end' line")
        a, b = lines[1].split("-->", 1)
        cues.append(Cue(index, parse_timestamp(a), parse_timestamp(b.split()[0] if b.split() else b), tuple(lines[2:])))
    return cues


def read_srt(path: str | Path) -> list[Cue]:
    return parse_srt(Path(path).read_text(encoding="utf-8"))
