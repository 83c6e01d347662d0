"""CosyVoice 2's text front end: normalisation, splitting and the Qwen2 text tokenizer.

Follows the reference's ``CosyVoiceFrontEnd.text_normalize`` (``cosyvoice/cli/frontend.py``, the
wetext branch, no ttsfrd) and ``cosyvoice/utils/frontend_utils.py``:

- text with ``<|...|>`` markup, or ``text_frontend=False``, passes through untouched;
- Chinese (any character in U+4E00..U+9FFF): wetext TN, newlines removed, spaces kept only between
  two ASCII characters, ``²``/``³`` spelled, ``.`` -> ``。``, `` - `` -> ``，``, brackets dropped, a
  trailing comma run -> ``。``; pieces measured in characters;
- otherwise: wetext TN, then any digits left spelled the way ``inflect.number_to_words`` spells
  them; pieces measured in tokens;
- ``split_paragraph`` (cut after sentence punctuation, pieces of ``split_token_min_n`` ..
  ``split_token_max_n``, a short tail merged), punctuation-only pieces dropped.

Where this differs from the reference (each only where the reference would crash, lose text or
read oddly):

- empty or whitespace-only text gives no pieces (the reference returns ``['']`` for ``''`` and
  raises IndexError for whitespace);
- wetext writes ``"`` as ``\\"`` and ``\\`` as ``\\\\`` whenever its grammar runs; that escaping is undone
  (the reference passes the backslashes on to the tokenizer);
- wetext raises on some inputs (e.g. ``"#1"``); the text is then normalised word by word, and a word
  that still fails has its digit runs normalised alone (the reference fails the whole request);
- non-Chinese text is normalised with wetext's English grammar explicitly; the reference's
  ``lang='auto'`` sends a digits-only text such as ``"123"`` to the Chinese grammar ("一百二十三");
- texts longer than ``tn_block_chars`` are normalised in blocks cut after sentence ends (wetext's
  time grows faster than linearly with length);
- a sentence longer than ``split_token_max_n`` is cut at commas, then spaces, then anywhere, so no
  piece is longer than ``split_token_min_n + split_token_max_n + split_merge_len`` (the reference
  keeps such a sentence whole);
- numbers left after English TN are spelled by our own ``number_to_words`` (inflect's wording;
  inflect is not a dependency); beyond 10**36 - 1, where inflect raises, digit by digit; digits
  that are not decimal digits (``²``, ``①``) by their digit value (inflect reads them as "zero");
- the reference drops the quote in ``."`` at the very start of a text by raising; it is kept here.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from .config import load_config

_CHINESE = re.compile(r"[\u4e00-\u9fff]+")
_ZH_STOPS = ("。", "？", "！", "；", "：", "、", ".", "?", "!", ";")
_EN_STOPS = (".", "?", "!", ";", ":")
_COMMAS = ("，", ",")
_QUOTES = ('"', "”")
_SOFT_BREAKS = ("，", ",", "、", "；", ";", "：", ":")
_WETEXT_ESCAPE = re.compile(r'\\(["\\])')
_SENTENCE_END = re.compile(r"[。！？!?；;\n]+|[.](?=\s)")


# ---------------------------------------------------------------------- the tokenizer


class QwenTextTokenizer:
    """The ``CosyVoice-BlankEN/`` Qwen2 tokenizer (``vocab.json``, ``merges.txt``,
    ``tokenizer_config.json``) with CosyVoice 2's special tokens added in the reference's order, so
    each gets the id the reference gives it. Special tokens in a text are single tokens
    (``allowed_special='all'``); ``decode`` skips them (``skip_special_tokens``)."""

    def __init__(self, folder: str | Path, special_tokens: Mapping[str, Any] | None = None,
                 skip_special_tokens: bool | None = None):
        folder = Path(folder)
        missing = [n for n in ("vocab.json", "merges.txt", "tokenizer_config.json") if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"CosyVoice tokenizer folder {folder}: missing {', '.join(missing)}")
        from transformers import AutoTokenizer

        fe = load_config()["frontend"]
        self.special_tokens = {k: (list(v) if isinstance(v, list) else v)
                               for k, v in (special_tokens or fe["tokenizer_special_tokens"]).items()}
        self.skip_special_tokens = fe["skip_special_tokens"] if skip_special_tokens is None else skip_special_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer.add_special_tokens({k: (list(v) if isinstance(v, list) else v)
                                           for k, v in self.special_tokens.items()})

    def __len__(self) -> int:
        return len(self.tokenizer)

    def token_id(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS is added: Qwen2 has none)."""
        return [int(i) for i in self.tokenizer([text])["input_ids"][0]]

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.batch_decode([list(map(int, tokens))], skip_special_tokens=self.skip_special_tokens)[0]

    def text_tokens(self, text: str) -> torch.Tensor:
        """``[1, N]`` int32 ids, as the reference's front end hands them to the model."""
        return torch.tensor([self.encode(text)], dtype=torch.int32)


# ---------------------------------------------------------------------- the reference's string rules


def contains_chinese(text: str) -> bool:
    return bool(_CHINESE.search(text))


def replace_corner_mark(text: str) -> str:
    return text.replace("²", "平方").replace("³", "立方")


def remove_bracket(text: str) -> str:
    for mark in ("（", "）", "【", "】", "`"):
        text = text.replace(mark, "")
    return text.replace("——", " ")


def replace_blank(text: str) -> str:
    """Drop every space that does not sit between two non-space ASCII characters (a space at either end
    is dropped)."""
    def ascii_word(c: str) -> bool:
        return c.isascii() and c != " "

    out = []
    for i, c in enumerate(text):
        if c != " ":
            out.append(c)
        elif 0 < i < len(text) - 1 and ascii_word(text[i + 1]) and ascii_word(text[i - 1]):
            out.append(c)
    return "".join(out)


def is_only_punctuation(text: str) -> bool:
    """True for text made only of Unicode punctuation (P*) and symbols (S*), or empty."""
    import regex

    return regex.fullmatch(r"[\p{P}\p{S}]*", text) is not None


_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion",
           "septillion", "octillion", "nonillion", "decillion")


def _under_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if rest < 20:
        tail = _ONES[rest]
    else:
        tail = _TENS[rest // 10] + ("-" + _ONES[rest % 10] if rest % 10 else "")
    if not hundreds:
        return tail
    return f"{_ONES[hundreds]} hundred" + (f" and {tail}" if rest else "")


def number_to_words(digits: str) -> str:
    """English words for a run of digits, worded as ``inflect.number_to_words`` (its defaults) words
    them: "one thousand, two hundred and thirty-four", "one million and one". Runs too long for
    its scale words (10**36 and up) are read digit by digit."""
    values = [unicodedata.digit(c) for c in digits]
    n = int("".join(map(str, values))) if values else 0
    if n >= 1000 ** len(_SCALES):
        return " ".join(_ONES[v] for v in values)
    if n == 0:
        return "zero"
    groups = []
    while n:
        n, g = divmod(n, 1000)
        groups.append(g)
    words = []
    for scale in range(len(groups) - 1, -1, -1):
        g = groups[scale]
        if not g:
            continue
        part = _under_thousand(g) + (f" {_SCALES[scale]}" if scale else "")
        if not words:
            words.append(part)
        elif scale == 0 and g < 100:
            words.append(f" and {part}")
        else:
            words.append(f", {part}")
    return "".join(words)


def spell_out_number(text: str) -> str:
    """Every run of digit characters replaced by its English words (no spaces added, as the reference)."""
    out, start = [], None
    for i, c in enumerate(text):
        if c.isdigit():
            if start is None:
                start = i
            continue
        if start is not None:
            out.append(number_to_words(text[start:i]))
            start = None
        out.append(c)
    if start is not None:
        out.append(number_to_words(text[start:]))
    return "".join(out)


# ---------------------------------------------------------------------- splitting


def _cut_long(utt: str, measure: Callable[[str], int], limit: int) -> list[str]:
    """``utt`` in consecutive parts each measuring at most ``limit``: cut after commas, else before
    spaces, else wherever the limit falls."""
    if measure(utt) <= limit:
        return [utt]
    for pattern in (r"(?<=[，,、；;：:])", r"(?=\s)"):
        atoms = [a for a in re.split(pattern, utt) if a]
        if len(atoms) > 1:
            parts, cur = [], ""
            for atom in atoms:
                if cur and measure(cur + atom) > limit:
                    parts.append(cur)
                    cur = ""
                cur += atom
            parts.append(cur)
            return [p for part in parts for p in _cut_long(part, measure, limit)]
    parts, rest = [], utt
    while rest:
        n = min(len(rest), limit)
        while n > 1 and measure(rest[:n]) > limit:
            n = max(1, min(n - 1, n * limit // max(measure(rest[:n]), 1)))
        parts.append(rest[:n])
        rest = rest[n:]
    return parts


def split_paragraph(text: str, tokenize: Callable[[str], Sequence[int]], lang: str = "zh", token_max_n: int = 80,
                    token_min_n: int = 60, merge_len: int = 20, comma_split: bool = False) -> list[str]:
    """Sentences (cut after sentence punctuation, a closing quote kept with its sentence) merged into
    pieces: a piece is closed once it measures more than ``token_min_n`` and the next sentence would
    take it past ``token_max_n``; a tail shorter than ``merge_len`` joins the last piece. Chinese is
    measured in characters, other text in tokens."""
    def measure(s: str) -> int:
        return len(s) if lang == "zh" else len(tokenize(s))

    if not text:
        return []
    stops = list(_ZH_STOPS if lang == "zh" else _EN_STOPS)
    if comma_split:
        stops.extend(_COMMAS)
    if text[-1] not in stops:
        text += "。" if lang == "zh" else "."

    utts: list[str] = []
    start = 0
    for i, c in enumerate(text):
        if c not in stops:
            continue
        if i > start:
            utts.append(text[start:i] + c)
        if i + 1 < len(text) and text[i + 1] in _QUOTES and utts:
            utts[-1] += text[i + 1]
            start = i + 2
        else:
            start = i + 1
    utts = [part for utt in utts for part in _cut_long(utt, measure, token_max_n)]

    pieces: list[str] = []
    cur = ""
    for utt in utts:
        if measure(cur + utt) > token_max_n and measure(cur) > token_min_n:
            pieces.append(cur)
            cur = ""
        cur += utt
    if cur:
        if measure(cur) < merge_len and pieces:
            pieces[-1] += cur
        else:
            pieces.append(cur)
    return pieces


# ---------------------------------------------------------------------- normalisation


def _blocks(text: str, size: int) -> list[str]:
    """``text`` in consecutive blocks of at most ``size`` characters, cut after the last sentence end in
    reach (else after a comma, else before a space, else at ``size``); joined they give ``text``."""
    blocks = []
    while len(text) > size:
        window = text[:size]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        soft = [i + 1 for i, c in enumerate(window) if c in _SOFT_BREAKS]
        spaces = [i for i, c in enumerate(window) if c.isspace() and i > 0]
        cut = (ends or soft or spaces or [size])[-1]
        blocks.append(text[:cut])
        text = text[cut:]
    return blocks + [text]


class TextFrontend:
    """The reference's ``text_normalize`` with its tokenizer; wetext's grammars are built on first use."""

    def __init__(self, tokenizer: QwenTextTokenizer | Callable[[str], Sequence[int]],
                 cfg_frontend: Mapping[str, Any] | None = None):
        self.cfg = dict(load_config()["frontend"] if cfg_frontend is None else cfg_frontend)
        self.tokenize = tokenizer.encode if isinstance(tokenizer, QwenTextTokenizer) else tokenizer
        self._zh = self._en = None

    def _normalizers(self):
        if self._zh is None:
            try:
                from wetext import Normalizer
            except ImportError as exc:
                raise RuntimeError("CosyVoice text normalisation needs the package wetext (pip install 'wetext>=0.1.8'); "
                                   "or call with text_frontend=False") from exc
            # the reference's ZhNormalizer(remove_erhua=False) / EnNormalizer() are wetext's auto-detecting
            # Normalizer; the language is fixed here (see the module notes)
            self._zh, self._en = Normalizer(lang="zh", remove_erhua=False), Normalizer(lang="en")
        return self._zh, self._en

    @staticmethod
    def _wetext(normalizer, text: str, **kwargs: Any) -> str:
        """wetext's output with its escaping undone: whenever its grammar runs it writes ``"`` as ``\\"``
        and ``\\`` as ``\\\\``."""
        out = normalizer.normalize(text, **kwargs)
        return _WETEXT_ESCAPE.sub(r"\1", out) if out != text else out

    @classmethod
    def _tn_safe(cls, normalizer, text: str, lang: str) -> str:
        """wetext's normalisation of ``text``; where wetext fails, word by word, and a failing word's
        digit runs alone (its other characters unchanged)."""
        try:
            return cls._wetext(normalizer, text)
        except Exception:  # noqa: BLE001 - wetext raises AssertionError/IndexError on some inputs
            pass
        out = []
        for word in re.split(r"(\s+)", text):
            if not word or word.isspace():
                out.append(word)
                continue
            try:
                out.append(cls._wetext(normalizer, word))
                continue
            except Exception:  # noqa: BLE001
                pass
            for run in re.findall(r"\d+|\D+", word):
                if run[0].isdigit():
                    try:
                        run = cls._wetext(normalizer, run, lang=lang)
                    except Exception:  # noqa: BLE001
                        pass
                out.append(run)
        return "".join(out)

    def _tn(self, normalizer, text: str, lang: str) -> str:
        """TN block by block; wetext strips its input, so each block's outer whitespace is put back."""
        out = []
        for block in _blocks(text, int(self.cfg["tn_block_chars"])):
            core = block.strip()
            if not core:
                out.append(block)
                continue
            start = block.index(core)
            out.append(block[:start] + self._tn_safe(normalizer, core, lang) + block[start + len(core):])
        return "".join(out)

    def normalize(self, text: str, split: bool = True, text_frontend: bool = True) -> list[str] | str:
        """The pieces to synthesise one by one (``split``), or the normalised text. A text that is still
        arriving (an iterator of strings, for bistream synthesis) passes through as ``[text]``, as in
        the reference."""
        if isinstance(text, Iterator):
            return [text]
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string, got {type(text).__name__}")
        if "<|" in text and "|>" in text:
            text_frontend = False
        if not text_frontend:
            return [text] if split else text
        text = text.strip()
        if not text:
            return [] if split else ""
        cfg = self.cfg
        limits = dict(token_max_n=int(cfg["split_token_max_n"]), token_min_n=int(cfg["split_token_min_n"]),
                      merge_len=int(cfg["split_merge_len"]), comma_split=bool(cfg["split_comma"]))
        zh, en = self._normalizers()
        if contains_chinese(text):
            text = self._tn(zh, text, "zh")
            text = text.replace("\n", "")
            text = replace_blank(text)
            text = replace_corner_mark(text)
            text = text.replace(".", "。")
            text = text.replace(" - ", "，")
            text = remove_bracket(text)
            text = re.sub(r"[，,、]+$", "。", text)
            pieces = split_paragraph(text, self.tokenize, "zh", **limits)
        else:
            text = self._tn(en, text, "en")
            text = spell_out_number(text)
            pieces = split_paragraph(text, self.tokenize, "en", **limits)
        pieces = [p for p in pieces if not is_only_punctuation(p)]
        return pieces if split else text
