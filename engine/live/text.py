"""Cutting a streamed text (typed, or a chat model's tokens as they arrive) into pieces for the voice.

Why pieces: a voice needs whole phrases to sound natural, but waiting for a whole answer would
delay speaking by the model's whole answer time. So a piece is handed over as soon as it is
complete: a sentence once the character after its stop is known (the sentence rules of
``engine/speech/sentences.py``, shared with every voice, decide; ``3.`` or ``Dr.`` at the end of
what arrived so far is not yet a sentence end), and the *first* piece of an answer earlier still,
at its first clause mark past ``first_min`` characters (or at a word past ``first_max``), so the
first words are spoken while the model is still writing. Later pieces are whole sentences, cut at
clause marks, then words, only when longer than ``max``. Lengths weigh a CJK character as
``cjk_weight`` Latin characters (it carries about a syllable). Rules: ``data/live.json`` ``text``.

Each piece records the boundary before it (``start``, ``paragraph``, ``sentence``, ``clause``,
``word``, ``char``), the kinds of ``data/speech.json``'s pause table, so the session inserts the
same pauses as the offline voices.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..speech.sentences import cut_points, is_wide, normalise_newlines, speakable, split_sentences
from .config import section


@dataclass(frozen=True)
class TextPiece:
    """Text handed to the voice in one request, and the kind of boundary before it."""

    text: str
    break_before: str


class TextAggregator:
    """Feed text as it arrives (:meth:`feed`), take the pieces that are complete; :meth:`flush` at the end."""

    def __init__(self, rules: dict | None = None, sentence_rules: dict | None = None):
        r = rules or section("text")
        self.first_min = float(r["first_min"])
        self.first_max = float(r["first_max"])
        self.max = float(r["max"])
        self.cjk_weight = float(r["cjk_weight"])
        if not 0 < self.first_min <= self.first_max and self.max > 0:
            raise ValueError(f"live text rules need 0 < first_min <= first_max and max > 0, got {r}")
        self.sentence_rules = sentence_rules
        self.rest = ""  # text not yet handed out (starts after the last piece)
        self.count = 0  # pieces handed out
        self.chars_in = 0
        self._cr = False
        self._carry: str | None = None  # boundary kind of a kept sentence remainder

    def _wlen(self, s: str) -> float:
        return sum(self.cjk_weight if is_wide(c) else 1.0 for c in s)

    def _norm(self, delta: str) -> str:
        s = str(delta or "")
        if self._cr and s.startswith("\n"):  # a \r\n split across two deltas
            s = s[1:]
        self._cr = s.endswith("\r")
        return normalise_newlines(s)

    def feed(self, delta: str) -> list[TextPiece]:
        """Add ``delta``; return the pieces now complete."""
        s = self._norm(delta)
        self.chars_in += len(s)
        self.rest += s
        return self._cut(final=False)

    def flush(self) -> list[TextPiece]:
        """The text ended: everything left, as pieces."""
        return self._cut(final=True)

    # -- cutting -----------------------------------------------------------------------------
    def _cut(self, final: bool) -> list[TextPiece]:
        out: list[TextPiece] = []
        rest = self.rest
        sents = split_sentences(rest, self.sentence_rules)
        consumed = 0  # rest[:consumed] is handed out (or was only space before a sentence)
        for k, s in enumerate(sents):
            is_open = (k == len(sents) - 1) and not final
            if self.count == 0 and not out:
                kind = "start"
            elif k == 0 and self._carry is not None:
                kind = self._carry  # the rest of a sentence whose start went out as a piece
            else:
                kind = "paragraph" if "\n" in rest[consumed:s.start] else "sentence"
            parts = self._split(s.text, first=(self.count == 0 and not out), kind=kind)
            if is_open:
                # the last part of an open sentence may still grow; the parts before it are final
                for text, kd in parts[:-1]:
                    self._emit(out, text, kd)
                if len(parts) > 1:
                    keep_text, keep_kind = parts[-1]
                    consumed = s.start + len(s.text) - len(keep_text)  # parts are suffixes of s.text
                    self._carry = keep_kind
                elif k == 0 and self._carry is not None:
                    consumed = s.start
                # else: keep the space before the sentence too (it tells a paragraph from a sentence)
                self.rest = rest[consumed:]
                return out
            for text, kd in parts:
                self._emit(out, text, kd)
            consumed = s.end
            self._carry = None
        self.rest = "" if final else rest[consumed:]
        return out

    def _emit(self, out: list[TextPiece], text: str, kind: str) -> None:
        text = text.strip()
        if not text or not any(speakable(c) for c in text):
            return
        out.append(TextPiece(text, kind))
        self.count += 1

    def _split(self, text: str, first: bool, kind: str) -> list[tuple[str, str]]:
        """``text`` (one sentence, or its start) as ``(piece, kind)`` parts under the rules."""
        parts: list[tuple[str, str]] = []
        while True:
            cut = self._first_cut(text) if first else self._long_cut(text)
            if cut is None:
                parts.append((text, kind))
                return parts
            c, level = cut
            head, text = text[:c].rstrip(), text[c:].lstrip()
            parts.append((head, kind))
            kind, first = level, False
            if not text:
                return parts

    def _first_cut(self, text: str) -> tuple[int, str] | None:
        """Where the first piece of an answer ends: first clause mark past first_min, else a word
        past first_max (the last word start within first_max)."""
        for c in cut_points(text, "clause", self.sentence_rules):
            if self._wlen(text[:c].strip()) >= self.first_min:
                if self._wlen(text[c:].strip()) > 0:
                    return c, "clause"
                break
        if self._wlen(text) > self.first_max:
            return self._within(text, self.first_max)
        return None

    def _long_cut(self, text: str) -> tuple[int, str] | None:
        if self._wlen(text) <= self.max:
            return None
        return self._within(text, self.max)

    def _within(self, text: str, limit: float) -> tuple[int, str] | None:
        """The last cut (clause, else word, else char) whose head is within ``limit``."""
        for level in ("clause", "word", "char"):
            best = None
            for c in cut_points(text, level, self.sentence_rules):
                head = text[:c].strip()
                if head and self._wlen(head) <= limit:
                    best = c
                elif head:
                    break
            if best is not None:
                return best, level
        # one unbreakable run (a long URL or a made-up word): cut it at the limit
        acc, i = 0.0, 0
        while i < len(text) and acc + self._wlen(text[i]) <= limit:
            acc += self._wlen(text[i])
            i += 1
        return (max(i, 1), "char") if i < len(text) else None
