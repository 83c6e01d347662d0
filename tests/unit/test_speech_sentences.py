"""Sentence splitting (Chinese and English punctuation) and packing into pieces under budgets."""
from __future__ import annotations

import time

import pytest

from comfyui_digitalhuman.engine.speech.sentences import (TooLongError, char_budget, cut_to_fit, plan_pieces,
                                                          split_sentences, token_budget)


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def test_english_stops_decimals_abbreviations_and_initials():
    assert texts("Dr. Smith paid $3.50 for it. Then he left! Did he? Yes; he did.") == [
        "Dr. Smith paid $3.50 for it.", "Then he left!", "Did he?", "Yes;", "he did."]
    assert texts("J. K. Rowling lives in the U.S. and writes. Version 2.0 is out at example.com today.") == [
        "J. K. Rowling lives in the U.S. and writes.", "Version 2.0 is out at example.com today."]
    # an abbreviation ends a sentence only before a capital letter; a title never does
    assert texts("We sell apples, pears etc. and more. We sell pears etc. Then we close.") == [
        "We sell apples, pears etc. and more.", "We sell pears etc.", "Then we close."]
    assert texts("See e.g. Fig. 3 for details. Ask Prof. Li.") == ["See e.g. Fig. 3 for details.", "Ask Prof. Li."]
    assert texts("Room No. 5 is free. I said no. Then I left.") == ["Room No. 5 is free.", "I said no.", "Then I left."]
    assert texts("Visit http://a.com/?q=1 now. OK?!") == ["Visit http://a.com/?q=1 now.", "OK?!"]


def test_ellipses_quotes_and_brackets():
    assert texts("I was... thinking. Wait... What? And then… Nothing.") == [
        "I was... thinking.", "Wait...", "What?", "And then…", "Nothing."]
    assert texts('"Stop." Then he went. (Really.) Fine.') == ['"Stop."', "Then he went.", "(Really.)", "Fine."]
    assert texts("他说：“好。”然后走了！真的吗？是的；走了。") == ["他说：“好。”", "然后走了！", "真的吗？", "是的；", "走了。"]
    assert texts("他在想……然后说：“走吧！”《三体》很好看。」") == ["他在想……", "然后说：“走吧！”", "《三体》很好看。」"]


def test_mixed_chinese_english_and_numbers():
    assert texts("价格是3.50元。We pay $3.50.然后OK.好的！") == ["价格是3.50元。", "We pay $3.50.", "然后OK.", "好的！"]


def test_newlines_are_paragraphs_and_unspeakable_parts_fold_or_drop():
    ss = split_sentences("Hello!!! 🎉\r\n\r\n*** \nNew paragraph here… 下一句。\nLast")
    assert [(s.text, s.paragraph) for s in ss] == [("Hello!!! 🎉", 0), ("New paragraph here…", 1), ("下一句。", 1), ("Last", 2)]
    src = "Hello!!! 🎉\n\n*** \nNew paragraph here… 下一句。\nLast"
    assert all(src[s.start:s.end] == s.text for s in ss)  # offsets refer to the \n-normalised text
    assert split_sentences("...!!! 🎉\n  \n") == [] and split_sentences("") == []
    assert texts("!! Hi there.") == ["!! Hi there."]  # a leading mark joins the sentence after it


def test_fill_packs_whole_sentences_under_the_limit():
    sentences = [f"Sentence number {i} is here." for i in range(40)]
    text = " ".join(sentences)
    plan = plan_pieces(text, [char_budget(100)])
    assert all(len(p.text) <= 100 for p in plan.pieces)
    assert " ".join(p.text for p in plan.pieces) == text  # in order, nothing lost, cut only between sentences
    assert all(p.text.endswith(".") for p in plan.pieces)
    assert [p.break_before for p in plan.pieces] == ["start"] + ["sentence"] * (len(plan.pieces) - 1)
    # greedy: no piece could have taken the next sentence as well
    for p, nxt in zip(plan.pieces, plan.pieces[1:]):
        first = plan.sentences[nxt.sentences[0]].text
        assert len(p.text) + 1 + len(first) > 100
    one = plan_pieces(text, [char_budget(100)], mode="sentence")
    assert [p.text for p in one.pieces] == sentences and all(p.sentences == (i,) for i, p in enumerate(one.pieces))


def test_paragraph_boundary_is_recorded_and_may_be_kept():
    plan = plan_pieces("One. Two.\nThree.", [char_budget(100)])
    assert [p.text for p in plan.pieces] == ["One. Two.\nThree."]
    plan = plan_pieces("One. Two.\nThree.", [char_budget(100)], cross_paragraphs=False)
    assert [(p.text, p.break_before) for p in plan.pieces] == [("One. Two.", "start"), ("Three.", "paragraph")]


def test_long_sentence_cut_at_clauses_then_words_never_inside_a_word():
    s = "This is a sentence, with a clause, and another rather long clause here, costing 1,000 dollars."
    plan = plan_pieces(s, [char_budget(30)])
    parts = [p.text for p in plan.pieces]
    assert all(len(t) <= 30 for t in parts)
    assert " ".join(parts) == s
    assert parts[:2] == ["This is a sentence,", "with a clause,"]
    assert "1,000" in " ".join(p for p in parts if "1," in p)  # never cut inside 1,000
    words = set(s.replace(",", " ").replace(".", " ").split())
    assert all(w in words for t in parts for w in t.replace(",", " ").replace(".", " ").split())
    kinds = [p.break_before for p in plan.pieces]
    assert kinds[0] == "start" and set(kinds[1:]) <= {"clause", "word"} and "clause" in kinds


def test_cjk_run_cut_anywhere_but_latin_words_kept():
    text = "长" * 25 + "OpenAI" + "长" * 10
    plan = plan_pieces(text, [char_budget(20)])
    parts = [p.text for p in plan.pieces]
    assert "".join(parts) == text and all(len(t) <= 20 for t in parts)
    assert any("OpenAI" in t for t in parts)  # the Latin word is not cut
    assert [p.break_before for p in plan.pieces][1:] == ["char"] * (len(parts) - 1)
    with pytest.raises(TooLongError, match="cannot be split without breaking the word"):
        plan_pieces("a" * 50, [char_budget(20)])


def test_token_budget_keeps_chinese_pieces_near_its_limit():
    zh = "这是一个用来测试的中文句子。" * 400  # 5600 characters, 14 per sentence
    en = "This is an English test sentence. " * 200
    both = [char_budget(4096), token_budget(2000, 1.0, 4.0)]
    zh_plan = plan_pieces(zh, both)
    assert all(len(p.text) <= 2000 for p in zh_plan.pieces) and max(len(p.text) for p in zh_plan.pieces) > 1950
    en_plan = plan_pieces(en, both)  # 4 characters per token: the 4096 characters bind first
    assert all(len(p.text) <= 4096 for p in en_plan.pieces) and max(len(p.text) for p in en_plan.pieces) > 4000


def test_twenty_thousand_characters_split_quickly_and_completely():
    text = ("第一句话在这里。Second sentence here, with a clause! " * 500)[:20000]
    t0 = time.perf_counter()
    plan = plan_pieces(text, [char_budget(4096)])
    assert time.perf_counter() - t0 < 5.0
    assert all(len(p.text) <= 4096 for p in plan.pieces)
    joined = "".join(plan.source[p.start:p.end] for p in plan.pieces)
    assert joined.replace(" ", "") == text.strip().replace(" ", "")


def test_cut_to_fit_spans():
    t = "Hello there, general Kenobi, you are a bold one."
    spans = cut_to_fit(t, [char_budget(20)])
    assert [t[a:b] for a, b in spans] == ["Hello there,", "general Kenobi,", "you are a bold one."]
    assert cut_to_fit("   ", [char_budget(5)]) == []
