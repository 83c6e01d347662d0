"""Sentences of a script (Chinese and English punctuation) and pieces under a provider's limit.

Why here and not per voice: every voice (CosyVoice sentence by sentence, the APIs up to their
request limits) and the subtitles need the same sentence boundaries, so a script is split once.

Rules (the punctuation sets and abbreviation lists live in ``data/speech.json``, section
``sentences``):

- a line break ends a sentence and starts a new paragraph (blank lines are skipped);
- ``。！？；`` (and full-width ``．``) end a sentence wherever they stand; ``! ? ;`` and a single
  ``.`` end one only when whitespace, a CJK character or the end follows (so ``3.50``,
  ``example.com`` and ``U.S.A`` stay whole); a ``.`` after a title (``Dr.``, ``e.g.``) or a
  single-letter initial never ends one, after ``No.``/``Fig.``-like words not before a digit,
  after an abbreviation (``etc.``, ``Inc.``) only when a capital letter follows;
- an ellipsis (``...``, ``…``, ``……``) ends a sentence unless a lowercase word follows it;
- closing quotes and brackets right after the stop belong to the sentence (``他说：“好。”``);
- a sentence with nothing to say (punctuation or emoji only) joins the sentence before it in its
  paragraph (or the one after it when it opens the paragraph), and is dropped when it is alone on
  its line.

:func:`plan_pieces` packs sentences into pieces whose cost stays within one or more
:class:`Budget` (characters, estimated tokens, ...). A sentence over a budget is cut at clause
marks (``, ，、：: —``, not inside ``1,000`` or ``10:30``), then at spaces, never inside a Latin
word; a CJK run can be cut between any two characters as a last resort. Every piece records the
kind of boundary before it, so the join can insert the right pause. Offsets refer to
``Plan.source`` (the text with ``\\r\\n`` turned into ``\\n``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .config import section

#: Kinds of boundary before a piece, from the strongest; the first piece has "start".
BREAK_KINDS = ("start", "paragraph", "sentence", "clause", "word", "char")


def is_cjk(ch: str) -> bool:
    """True for CJK ideographs, kana and hangul (scripts written without spaces between words)."""
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F
            or 0xF900 <= o <= 0xFAFF or 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF
            or 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF)


def is_wide(ch: str) -> bool:
    """CJK characters and the full-width marks written with them (。，「」...): a token each, roughly."""
    o = ord(ch)
    return is_cjk(ch) or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF


def speakable(ch: str) -> bool:
    """A character a voice reads out (letters, digits, CJK), as opposed to punctuation, spaces, emoji."""
    return ch.isalnum()


def _wordish(ch: str) -> bool:
    """Part of a space-separated word (Latin, Cyrillic, digits...): never cut inside a run of these."""
    return ch.isalnum() and not is_cjk(ch)


@dataclass(frozen=True)
class Sentence:
    """One sentence: its text (stripped), where it lies in ``Plan.source``, and its paragraph."""

    text: str
    start: int
    end: int
    paragraph: int


@dataclass(frozen=True)
class Piece:
    """Text sent to a voice in one go: one or more whole sentences, or part of a long one."""

    text: str
    start: int
    end: int
    break_before: str  # one of BREAK_KINDS: the boundary between the previous piece and this one
    sentences: tuple[int, ...]  # indices of the sentences this piece holds (whole or in part)


@dataclass(frozen=True)
class Budget:
    """A limit on a piece: the sum of ``weight(ch)`` over its characters must not exceed ``limit``."""

    limit: float
    weight: Callable[[str], float] = field(default=lambda ch: 1.0)
    unit: str = "characters"


@dataclass(frozen=True)
class Plan:
    """The split script: the normalised source, its sentences, and the pieces to synthesise."""

    source: str
    sentences: list[Sentence]
    pieces: list[Piece]


class TooLongError(ValueError):
    """A Latin word longer than a budget: it cannot be cut without breaking the word."""


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` -> ``\\n`` (offsets of every result refer to this form)."""
    return str(text or "").replace("\r\n", "\n").replace("\r", "\n")


class _Rules:
    def __init__(self, rules: dict | None):
        r = rules or section("sentences")
        self.terminators = set(r["terminators"])
        self.cjk_terminators = {c for c in self.terminators if ord(c) > 0x7F}
        self.ellipsis = set(r["ellipsis"])
        self.closers = set(r["closers"])
        self.clause_marks = set(r["clause_marks"])
        self.titles = {a.lower() for a in r["titles"]}
        self.before_numbers = {a.lower() for a in r.get("before_numbers", [])}
        self.abbreviations = {a.lower() for a in r["abbreviations"]}


def _next_visible(src: str, k: int) -> str | None:
    """The first non-space character at or after ``k`` on the same line (None at a line end)."""
    n = len(src)
    while k < n and src[k] != "\n" and src[k].isspace():
        k += 1
    if k >= n or src[k] == "\n":
        return None
    return src[k]


def _boundary_follows(src: str, k: int, r: _Rules) -> bool:
    """Whether position ``k`` (after a stop and its closers) can end a sentence."""
    if k >= len(src):
        return True
    c = src[k]
    return c.isspace() or is_cjk(c) or c in r.terminators or c in r.ellipsis


def _word_before(src: str, i: int) -> str:
    """The letters-and-dots word that ends right before position ``i`` (``e.g`` in ``e.g.``)."""
    j = i
    while j > 0 and (src[j - 1].isalpha() or src[j - 1] == "."):
        j -= 1
    return src[j:i].strip(".")


def _sentence_end(src: str, i: int, r: _Rules) -> int | None:
    """If a sentence ends with the character at ``i``, the index just after it (stops and closers)."""
    n = len(src)
    ch = src[i]
    if ch in r.terminators:
        j = i + 1
        while j < n and (src[j] in r.terminators or src[j] in r.ellipsis or src[j] == "."):
            j += 1
        while j < n and src[j] in r.closers:
            j += 1
        if ch in r.cjk_terminators or _boundary_follows(src, j, r):
            return j
        return None
    if ch == "." or ch in r.ellipsis:
        j = i
        while j < n and (src[j] == "." or src[j] in r.ellipsis):
            j += 1
        is_ellipsis = (j - i) >= 2 or ch in r.ellipsis
        k = j
        while k < n and src[k] in r.closers:
            k += 1
        if is_ellipsis:
            nxt = _next_visible(src, k)
            if nxt is not None and nxt.isalpha() and nxt.islower() and not is_cjk(nxt):
                return None  # "I was... thinking": the sentence goes on
            return k
        if not _boundary_follows(src, k, r):
            return None  # 3.50, example.com, U.S.A
        word = _word_before(src, i)
        low = word.lower()
        if low in r.titles or (len(word) == 1 and word.isalpha()) or ("." in word and all(len(p) == 1 for p in word.split("."))):
            return None  # Dr. Smith, J. K. Rowling, U.S.
        if low in r.before_numbers:
            nxt = _next_visible(src, k)
            if nxt is not None and (nxt.isdigit() or nxt in "(#"):
                return None  # No. 5, Fig. 3
            return k
        if low in r.abbreviations:
            nxt = _next_visible(src, k)
            return k if (nxt is None or nxt.isupper() or is_cjk(nxt)) else None
        return k
    return None


def split_sentences(text: str, rules: dict | None = None) -> list[Sentence]:
    """The sentences of ``text`` in order (offsets into :func:`normalise_newlines` of it)."""
    r = _Rules(rules)
    src = normalise_newlines(text)
    n = len(src)
    raw: list[Sentence] = []
    para = 0
    para_has_content = False
    seg_start: int | None = None

    def emit(end: int) -> None:
        nonlocal seg_start, para_has_content
        if seg_start is not None:
            s = src[seg_start:end].rstrip()
            if s:
                raw.append(Sentence(s, seg_start, seg_start + len(s), para))
                para_has_content = True
        seg_start = None

    i = 0
    while i < n:
        ch = src[i]
        if ch == "\n":
            emit(i)
            if para_has_content:
                para += 1
                para_has_content = False
            i += 1
            continue
        if seg_start is None:
            if ch.isspace():
                i += 1
                continue
            seg_start = i
        end = _sentence_end(src, i, r)
        if end is not None:
            emit(end)
            i = end
            continue
        if ch == "." or ch in r.ellipsis:  # a run of dots that does not end the sentence is passed whole
            while i < n and (src[i] == "." or src[i] in r.ellipsis):
                i += 1
            continue
        i += 1
    emit(n)
    merged = _merge_unspeakable(src, raw)
    numbers = {p: k for k, p in enumerate(sorted({s.paragraph for s in merged}))}
    return [Sentence(s.text, s.start, s.end, numbers[s.paragraph]) for s in merged]


def _merge_unspeakable(src: str, sentences: list[Sentence]) -> list[Sentence]:
    """Fold sentences with nothing to say into a neighbour of the same paragraph (or drop them when alone)."""
    out: list[Sentence] = []
    pending: Sentence | None = None  # opens a paragraph; waits for the next speakable sentence there
    for s in sentences:
        if not any(speakable(c) for c in s.text):
            if pending is None and out and out[-1].paragraph == s.paragraph:
                prev = out.pop()
                out.append(Sentence(src[prev.start:s.end], prev.start, s.end, prev.paragraph))
            elif pending is not None and pending.paragraph == s.paragraph:
                pending = Sentence(src[pending.start:s.end], pending.start, s.end, s.paragraph)
            else:
                pending = s
            continue
        if pending is not None and pending.paragraph == s.paragraph:
            s = Sentence(src[pending.start:s.end], pending.start, s.end, s.paragraph)
        pending = None
        out.append(s)
    return out


# -- packing under budgets ------------------------------------------------------------------------

class _Meter:
    """Prefix sums of each budget's weights over the source: cost of any span in O(1)."""

    def __init__(self, src: str, budgets: Sequence[Budget]):
        self.src = src
        self.budgets = list(budgets)
        self.prefix = []
        for b in self.budgets:
            w = np.fromiter((float(b.weight(c)) for c in src), dtype=np.float64, count=len(src))
            self.prefix.append(np.concatenate([[0.0], np.cumsum(w)]))

    def strip(self, a: int, b: int) -> tuple[int, int]:
        while a < b and self.src[a].isspace():
            a += 1
        while b > a and self.src[b - 1].isspace():
            b -= 1
        return a, b

    def cost(self, a: int, b: int, k: int) -> float:
        a, b = self.strip(a, b)
        return float(self.prefix[k][b] - self.prefix[k][a])

    def fits(self, a: int, b: int) -> bool:
        # a small tolerance for the float sums of fractional weights (1/4 token per character)
        return all(self.cost(a, b, k) <= bud.limit + 1e-9 for k, bud in enumerate(self.budgets))

    def over(self, a: int, b: int) -> str:
        for k, bud in enumerate(self.budgets):
            c = self.cost(a, b, k)
            if c > bud.limit + 1e-9:
                return f"{c:g} {bud.unit} (limit {bud.limit:g})"
        return ""


def _atoms(src: str, a: int, b: int, level: str, r: _Rules) -> list[tuple[int, int]]:
    """``src[a:b]`` cut into consecutive spans at the cut points of ``level``."""
    cuts = [a]
    if level == "clause":
        for p in range(a, b - 1):
            c = src[p]
            if c in r.clause_marks:
                if c in ",:" and p > a and src[p - 1].isdigit() and src[p + 1].isdigit():
                    continue  # 1,000 and 10:30
                q = p + 1
                while q < b and src[q] in r.closers:
                    q += 1
                if q < b:
                    cuts.append(q)
    elif level == "word":
        for p in range(a + 1, b):
            if src[p - 1].isspace() and not src[p].isspace():
                cuts.append(p)
    else:  # char: between any two characters except inside a Latin word (a run of _wordish)
        for p in range(a + 1, b):
            if not (_wordish(src[p - 1]) and _wordish(src[p])) and not src[p].isspace():
                cuts.append(p)
    cuts = sorted(set(cuts))
    return [(cuts[k], cuts[k + 1] if k + 1 < len(cuts) else b) for k in range(len(cuts))]


_LEVELS = ("clause", "word", "char")


def _fit(meter: _Meter, a: int, b: int, level_idx: int, r: _Rules) -> list[tuple[int, int, str | None]]:
    """``src[a:b]`` as spans within every budget: ``(start, end, kind before it)``, the first kind None."""
    if meter.fits(a, b):
        return [(a, b, None)]
    for li in range(level_idx, len(_LEVELS)):
        spans = _atoms(meter.src, a, b, _LEVELS[li], r)
        if len(spans) < 2:
            continue
        groups: list[tuple[int, int]] = []
        cur: tuple[int, int] | None = None
        for s, e in spans:
            if cur is None:
                cur = (s, e)
            elif meter.fits(cur[0], e):
                cur = (cur[0], e)
            else:
                groups.append(cur)
                cur = (s, e)
        groups.append(cur)
        out: list[tuple[int, int, str | None]] = []
        for g, (s, e) in enumerate(groups):
            sub = _fit(meter, s, e, li + 1, r) if not meter.fits(s, e) else [(s, e, None)]
            first = sub[0]
            sub[0] = (first[0], first[1], None if g == 0 else _LEVELS[li])
            out.extend(sub)
        return out
    s, e = meter.strip(a, b)
    raise TooLongError(f"the word '{meter.src[s:s + 40]}{'...' if e - s > 40 else ''}' at character {s} is "
                       f"{meter.over(a, b)}: it cannot be split without breaking the word")


def plan_pieces(text: str, budgets: Sequence[Budget] = (), mode: str = "fill", *,
                cross_paragraphs: bool = True, rules: dict | None = None) -> Plan:
    """Split ``text`` into sentences and pieces within ``budgets``.

    ``mode`` "fill" packs whole sentences into as few pieces as the budgets allow (fewest requests;
    the voice phrases the sentences of one piece itself); "sentence" gives every sentence its own
    piece (exact per-sentence timings; our pauses between all of them). Either way a sentence over
    a budget is cut as the module docstring says. No budget means no limit.
    """
    if mode not in ("fill", "sentence"):
        raise ValueError(f"split mode must be 'fill' or 'sentence', got '{mode}'")
    r = _Rules(rules)
    src = normalise_newlines(text)
    sentences = split_sentences(src, rules)
    meter = _Meter(src, budgets)
    units: list[tuple[int, int, str]] = []
    for si, s in enumerate(sentences):
        kind = "start" if si == 0 else ("paragraph" if s.paragraph != sentences[si - 1].paragraph else "sentence")
        for k, (a, b, sub_kind) in enumerate(_fit(meter, s.start, s.end, 0, r)):
            a, b = meter.strip(a, b)
            units.append((a, b, kind if k == 0 else sub_kind))
    spans: list[tuple[int, int, str]] = []
    for a, b, kind in units:
        if (mode == "fill" and spans and kind in ("sentence", "paragraph")
                and (cross_paragraphs or kind == "sentence") and meter.fits(spans[-1][0], b)):
            spans[-1] = (spans[-1][0], b, spans[-1][2])
        else:
            spans.append((a, b, kind))
    pieces = []
    for a, b, kind in spans:
        idx = tuple(i for i, s in enumerate(sentences) if s.start < b and s.end > a)
        pieces.append(Piece(src[a:b], a, b, kind, idx))
    return Plan(src, sentences, pieces)


def char_budget(limit: int) -> Budget:
    """At most ``limit`` characters (code points) per piece."""
    return Budget(float(limit), lambda ch: 1.0, "characters")


def token_budget(limit: int, cjk_tokens_per_char: float = 1.0, other_chars_per_token: float = 4.0) -> Budget:
    """At most ``limit`` tokens per piece by a conservative estimate: CJK characters and full-width
    marks cost ``cjk_tokens_per_char`` each, other characters ``1 / other_chars_per_token``."""
    other = 1.0 / float(other_chars_per_token)
    cjk = float(cjk_tokens_per_char)
    return Budget(float(limit), lambda ch: cjk if is_wide(ch) else other, "estimated tokens")


def cut_to_fit(text: str, budgets: Sequence[Budget], rules: dict | None = None) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of ``text`` (whitespace stripped), each within ``budgets``, cut at clause
    marks, then spaces, then between CJK characters; :class:`TooLongError` for an over-long word."""
    r = _Rules(rules)
    meter = _Meter(text, budgets)
    a, b = meter.strip(0, len(text))
    if a >= b:
        return []
    return [meter.strip(s, e) for s, e, _ in _fit(meter, a, b, 0, r)]


def cut_points(text: str, level: str, rules: dict | None = None) -> list[int]:
    """Offsets inside ``text`` where it may be cut at ``level`` ("clause": after a clause mark and its
    closers, not inside ``1,000``/``10:30``; "word": before a word; "char": between CJK characters), in
    order, excluding 0. A mark at the very end is not a cut (what follows decides)."""
    if level not in _LEVELS:
        raise ValueError(f"cut level must be one of {_LEVELS}, got '{level}'")
    return [s for s, _ in _atoms(text, 0, len(text), level, _Rules(rules))][1:]
