"""Cutting streamed text into pieces for the voice (engine/live/text.py)."""
from __future__ import annotations

import re
import time

import pytest

from comfyui_digitalhuman.engine.live.text import TextAggregator, TextPiece
from comfyui_digitalhuman.engine.speech.sentences import speakable

RULES = {"first_min": 12, "first_max": 60, "max": 180, "cjk_weight": 3.0}


def pieces_of(deltas, rules=RULES) -> list[TextPiece]:
    agg = TextAggregator(rules)
    out = []
    for d in deltas:
        out += agg.feed(d)
    return out + agg.flush()


def tokens(text: str) -> list[str]:
    """Chat-model-like deltas: words with their leading space, punctuation on its own sometimes."""
    return re.findall(r"\s*\S+?(?=[\s,.!?]|$)|[,.!?]", text) or [text]


def speakable_chars(s: str) -> str:
    return "".join(c for c in s if speakable(c))


ANSWER = ("Sure, I can help with that. The ticket costs $3.50 per person, and Dr. Smith said the museum "
          "opens at 10:30 on weekdays. Anything else?")


def test_first_piece_is_cut_early_then_whole_sentences():
    got = pieces_of(tokens(ANSWER))
    assert [p.text for p in got] == [
        "Sure, I can help with that.",  # "Sure," is under first_min (12), the sentence ends before another mark
        "The ticket costs $3.50 per person, and Dr. Smith said the museum opens at 10:30 on weekdays.",
        "Anything else?"]
    assert [p.break_before for p in got] == ["start", "sentence", "sentence"]
    long_start = pieces_of(tokens("Well, to be honest with you, that is a question many people ask. Yes."))
    assert long_start[0] == TextPiece("Well, to be honest with you,", "start")  # first clause mark past 12 characters
    assert long_start[1] == TextPiece("that is a question many people ask.", "clause")
    assert long_start[2] == TextPiece("Yes.", "sentence")


def test_pieces_do_not_depend_on_how_the_text_arrives():
    texts = [ANSWER, "Hello!\n\nA new paragraph starts here. And it goes on, and on, and on without end for a while, "
             "which is long enough to need a cut somewhere because it has no full stop for a very long time indeed and "
             "keeps going past the limit of one piece, finally.",
             "你好，今天天气很好。我们去公园散步吧！好的", "No. 5 is here. Fig. 3 shows it... and more. U.S.A. is big."]
    for text in texts:
        whole = pieces_of([text])
        by_char = pieces_of(list(text))
        by_token = pieces_of(tokens(text))
        assert by_char == whole == by_token, text
        assert speakable_chars("".join(p.text for p in whole)) == speakable_chars(text)  # nothing lost


def test_a_sentence_end_waits_for_the_next_character():
    agg = TextAggregator(RULES)
    assert agg.feed("It costs 3.") == []  # "3." could be "3.50"
    assert agg.feed("50 dollars. Dr.") == [TextPiece("It costs 3.50 dollars.", "start")]
    assert agg.feed(" Smith is in.") == []  # "Dr." is a title: not a sentence end
    assert agg.flush() == [TextPiece("Dr. Smith is in.", "sentence")]


def test_paragraphs_chinese_and_long_sentences():
    got = pieces_of(["First line here.\n\nSecond paragraph."])
    assert [p.break_before for p in got] == ["start", "paragraph"]
    zh = pieces_of(list("你好，今天天气很好。我们去公园散步吧！"))
    assert [p.text for p in zh] == ["你好，今天天气很好。", "我们去公园散步吧！"]
    long = "word " * 100 + "end."
    got = pieces_of(tokens(long), {**RULES, "max": 50})
    assert all(len(p.text) <= 60 for p in got)  # the first piece within first_max, the rest within max
    assert [p.break_before for p in got[1:]] == ["word"] * (len(got) - 1)
    run = pieces_of(["x" * 130 + "."], {**RULES, "max": 50})  # one unbreakable run: cut at the limit
    assert "".join(p.text for p in run) == "x" * 130 + "."


def test_nothing_speakable_is_dropped_and_crlf_split_across_deltas():
    assert pieces_of(["... ", "!!! ", "?"]) == []
    got = pieces_of(["Line one.\r", "\nLine two."])
    assert got == [TextPiece("Line one.", "start"), TextPiece("Line two.", "paragraph")]


def test_twenty_thousand_characters_at_once_are_cut_quickly():
    sentence = "This is sentence number {}, and it has a clause or two in it. "
    text = "".join(sentence.format(i) for i in range(400))[:20000]
    t0 = time.perf_counter()
    got = pieces_of([text])
    dt = time.perf_counter() - t0
    assert dt < 5.0, f"{dt:.2f} s"
    assert speakable_chars("".join(p.text for p in got)) == speakable_chars(text)
    assert max(len(p.text) for p in got) <= 180


def test_bad_rules():
    with pytest.raises(ValueError, match="first_min"):
        TextAggregator({**RULES, "first_min": 80})
