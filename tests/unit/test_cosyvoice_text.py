"""CosyVoice 2's text front end: the Qwen2 tokenizer's special tokens, text normalisation and splitting.

``tests/fixtures/cosyvoice/text_reference.json`` was recorded by
``scripts/cosyvoice_reference_text.py --reference DIR``: the reference's ``get_qwen_tokenizer`` and
``CosyVoiceFrontEnd.text_normalize`` (wetext branch) on tiny tokenizer files that
``random_llm.write_tiny_tokenizer`` writes, plus ``inflect.number_to_words`` (what its
``spell_out_number`` uses). The reference code itself is not part of this repository.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from comfyui_digitalhuman.engine.cosyvoice import random_llm as R
from comfyui_digitalhuman.engine.cosyvoice import text as T
from comfyui_digitalhuman.engine.cosyvoice.config import load_config

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cosyvoice" / "text_reference.json"
QWEN25_LIKE_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                     "<|box_start|>", "<|box_end|>")
FE = load_config()["frontend"]
PIECE_BOUND = FE["split_token_min_n"] + FE["split_token_max_n"] + FE["split_merge_len"]


@pytest.fixture(scope="module")
def rec() -> dict:
    return json.loads(FIX.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tok")
    R.write_tiny_tokenizer(root / "qwen2")
    R.write_tiny_tokenizer(root / "qwen25_like", added_tokens=QWEN25_LIKE_ADDED)
    return {"qwen2": root / "qwen2", "qwen25_like": root / "qwen25_like"}


@pytest.fixture(scope="module")
def tok(tok_dirs) -> T.QwenTextTokenizer:
    return T.QwenTextTokenizer(tok_dirs["qwen2"])


@pytest.fixture(scope="module")
def fe(tok) -> T.TextFrontend:
    return T.TextFrontend(tok)


# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("variant", ["qwen2", "qwen25_like"])
def test_special_tokens_get_the_reference_ids(rec, tok_dirs, variant):
    """Ids, encodings and decodings equal the reference's on the same files; independently, the
    tokens CosyVoice adds follow the folder's own added tokens in the listed order."""
    tok = T.QwenTextTokenizer(tok_dirs[variant])
    want = rec["tokenizers"][variant]
    names = [FE["tokenizer_special_tokens"]["eos_token"], *FE["tokenizer_special_tokens"]["additional_special_tokens"]]
    assert {n: tok.token_id(n) for n in names} == want["special_token_ids"]
    assert len(tok) == want["size"]
    base = len(json.loads((tok_dirs[variant] / "vocab.json").read_text(encoding="utf-8")))
    existing = {t: base + i for i, t in enumerate(QWEN25_LIKE_ADDED if variant != "qwen2" else R.QWEN2_ADDED_TOKENS)}
    new = [n for n in names if n not in existing]
    assert [tok.token_id(n) for n in new] == list(range(base + len(existing), base + len(existing) + len(new)))
    encoded = [tok.encode(s) for s in rec["encode_samples"]]
    assert encoded == want["encode"]
    assert [tok.decode(ids) for ids in encoded] == want["decode"]


def test_special_tokens_are_single_tokens_and_skipped_on_decode(tok):
    ids = tok.encode("你好<|endofprompt|>[breath]hello")
    assert tok.token_id("<|endofprompt|>") in ids and tok.token_id("[breath]") in ids
    assert tok.decode(ids) == "你好hello"
    t = tok.text_tokens("hello")
    assert t.shape == (1, len(tok.encode("hello"))) and str(t.dtype) == "torch.int32"


def test_missing_tokenizer_files_are_named(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"missing merges\.txt, tokenizer_config\.json"):
        T.QwenTextTokenizer(tmp_path)


def test_wetext_takes_the_reference_constructor_arguments():
    """The reference builds ``Normalizer(remove_erhua=False)`` and ``Normalizer()``; we also pass ``lang``.
    The installed wetext must accept both as configuration fields."""
    from wetext import Normalizer

    fields = {f.name for f in dataclasses.fields(Normalizer(remove_erhua=False).config)}
    assert {"remove_erhua", "lang"} <= fields
    assert Normalizer(lang="en").config.lang == "en" and Normalizer(remove_erhua=False).config.remove_erhua is False


# ----------------------------------------------------------------------------- numbers


def test_number_words_are_inflects(rec):
    got = {n: T.number_to_words(n) for n in rec["number_to_words"]}
    assert got == rec["number_to_words"]


def test_number_words_beyond_inflects_range_and_unicode_digits():
    assert T.number_to_words("1" + "0" * 36) == " ".join(["one"] + ["zero"] * 36)  # inflect raises here
    assert T.number_to_words("٣") == "three"  # Arabic-Indic digit
    assert T.spell_out_number("x² and 12") == "xtwo and twelve"  # inflect would say "xzero"


# ----------------------------------------------------------------------------- against the reference

# Texts where we differ on purpose (see engine/cosyvoice/text.py); each is checked below instead.
DIFFERENT = {"", "a٣b and x²", "#1 hit", "123", 'He said "hi." Then he left.', 'She said "I have 2 cats."'}


def _long_sentences(text: str) -> bool:
    return text.startswith(("On 2026-12-01", "this is a very long"))


def test_text_normalize_matches_the_reference(rec, fe):
    """Every recorded text but the documented differences. The TN itself is wetext's: a wetext other
    than the recorded one may read some texts differently (re-record with the script then)."""
    from importlib.metadata import version

    note = f"(recorded with wetext {rec['versions']['wetext']}, running {version('wetext')})"
    compared = 0
    for case in rec["text_normalize"]:
        text = case["text"]
        if text in DIFFERENT or _long_sentences(text):
            continue
        assert fe.normalize(text, split=True) == case["split"], f"{text!r} {note}"
        assert fe.normalize(text, split=False) == case["joined"], f"{text!r} {note}"
        compared += 1
    assert compared >= 25


def test_documented_differences(rec, fe, tok):
    ref = {c["text"]: c for c in rec["text_normalize"]}
    assert ref[""]["split"] == [""] and fe.normalize("") == [] and fe.normalize("", split=False) == ""
    assert ref["#1 hit"]["split"] == {"error": "AssertionError"}  # wetext raises; we go word by word
    assert fe.normalize("#1 hit") == ["#one hit."]
    assert ref["123"]["split"] == ["一百二十三."] and fe.normalize("123") == ["one hundred and twenty three."]
    assert ref["a٣b and x²"]["split"] == ["athreeb and xzero."] and fe.normalize("a٣b and x²") == ["athreeb and xtwo."]
    for text in ('He said "hi." Then he left.', 'She said "I have 2 cats."'):  # wetext's \" escaping undone
        assert fe.normalize(text, split=False) == ref[text]["joined"].replace('\\"', '"')
        assert "\\" not in "".join(fe.normalize(text))
    # sentences longer than split_token_max_n tokens (the tiny tokenizer spends several per word): cut,
    # nothing lost, every piece within the bound; the reference keeps them whole
    for text, case in ref.items():
        if _long_sentences(text):
            ours = fe.normalize(text)
            assert "".join(ours) == "".join(case["split"])
            assert max(len(tok.encode(p)) for p in case["split"]) > FE["split_token_max_n"]
            assert max(len(tok.encode(p)) for p in ours) <= PIECE_BOUND


# ----------------------------------------------------------------------------- the bad inputs


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "！？。", "...", "?!;:", "——", "😀🎉", "【】（）"])
def test_empty_punctuation_or_symbol_only_text_gives_no_pieces(fe, text):
    assert fe.normalize(text) == []


def test_numbers_dates_currency_and_units_read_as_words(fe):
    assert fe.normalize("2026年12月1日") == ["二零二六年十二月一日。"]
    assert fe.normalize("价格是$3.50，速度100km/h。") == ["价格是三点五零美元，速度每小时一百公里。"]
    # wetext's English grammar reads "$3.50" as "three point five dollars" (the reference's reading too)
    assert fe.normalize("It costs $3.50 at 100km/h on 2026-12-01.") == [
        "It costs three point five dollars at one hundred kilometers per hour on the first of december twenty twenty six."]
    mixed = fe.normalize("我有3个apple和2.5公斤香蕉，打了20%的折。")
    assert mixed == ["我有三个apple和二点五公斤香蕉，打了百分之二十的折。"]
    for pieces in (mixed, fe.normalize("Dr. Lee paid €20 for 3kg of apples at 9:45pm.")):
        assert not re.search(r"\d", "".join(pieces))


def test_emoji_are_kept_harmlessly(fe, tok):
    pieces = fe.normalize("Hello 😀 world 🎉!")
    assert pieces == ["Hello 😀 world 🎉!"]
    assert tok.decode(tok.encode(pieces[0])) == pieces[0]
    assert fe.normalize("😀你好🎉") == ["😀你好🎉。"]


def test_markup_skips_normalisation(fe):
    text = "<|endofprompt|>今天 2026年 [breath] 123"
    assert fe.normalize(text) == [text] and fe.normalize(text, split=False) == text
    assert fe.normalize("一百 123", text_frontend=False) == ["一百 123"]


def test_non_string_input_is_refused_and_a_text_stream_passes(fe):
    with pytest.raises(TypeError, match="text: expected a string, got int"):
        fe.normalize(123)
    stream = iter(["你好", "world"])
    assert fe.normalize(stream) == [stream]


def _words(s: str) -> list[str]:
    return re.findall(r"[^\W_]+", s)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_twenty_thousand_characters_are_kept_in_bounded_pieces(fe, lang):
    """20,000 characters: wetext sees blocks of at most tn_block_chars (its cost grows faster than
    linearly), every word of the normalised text is in the pieces in order, and every piece stays
    within split_token_min_n + split_token_max_n + split_merge_len (characters for Chinese, tokens
    otherwise), including a 3,000-character run without any punctuation."""
    if lang == "zh":
        unit = "今天是2026年12月1日，价格是$3.50，速度100km/h。我们走了3.5公里，花了20%的时间！"
        run = "很长的句子没有标点" * 334
    else:
        unit = "On 2026-12-01 the car drove at 100km/h and cost $3.50 per mile, 12% more than in 1999. "
        run = " ".join(["word"] * 600)
    text = (unit * (17000 // len(unit) + 1))[:17000]
    text = text[:text.rindex("。" if lang == "zh" else ".") + 1] + run
    text = (text + unit * 10)[:20000]
    seen = []
    zh, en = fe._normalizers()
    normalizer = zh if lang == "zh" else en
    real = normalizer.normalize

    def spy(s, *a, **k):
        seen.append(len(s))
        return real(s, *a, **k)

    normalizer.normalize = spy
    try:
        start = time.perf_counter()
        pieces = fe.normalize(text)
        elapsed = time.perf_counter() - start
        joined = fe.normalize(text, split=False)
    finally:
        del normalizer.normalize
    assert max(seen) <= FE["tn_block_chars"]
    assert _words("".join(pieces)) == _words(joined)
    assert sum(map(len, _words(joined))) > 15000
    measure = len if lang == "zh" else (lambda p: len(fe.tokenize(p)))
    assert max(measure(p) for p in pieces) <= PIECE_BOUND
    print(f"{lang}: 20,000 characters -> {len(pieces)} pieces in {elapsed:.1f} s")


# ----------------------------------------------------------------------------- splitting rules


def test_split_paragraph_merges_and_closes_pieces_like_the_reference():
    """Measured in words here: sentences are merged until a piece passes token_min_n and the next
    sentence would pass token_max_n; a tail under merge_len joins the last piece."""
    words = lambda s: s.split()  # noqa: E731
    sentence = "a b c d e f g h i j. "  # 10 words
    text = sentence * 13 + "x y."
    pieces = T.split_paragraph(text, words, "en", token_max_n=80, token_min_n=60, merge_len=20)
    # 8 sentences make 80 (not more than 80); the 9th would pass it with 80 > 60: closed; the rest
    # (5 sentences + "x y.") is 52 words, not under merge_len, so it stays a piece of its own
    assert [len(words(p)) for p in pieces] == [80, 52]
    assert "".join(pieces) == text
    short_tail = T.split_paragraph(sentence * 8 + "x y.", words, "en", token_max_n=80, token_min_n=60, merge_len=20)
    assert [len(words(p)) for p in short_tail] == [82]  # "x y." (2 < 20) joins the last piece
    assert T.split_paragraph("没有标点", words, "zh") == ["没有标点。"]
    assert T.split_paragraph('他说："好。"走了', words, "zh", token_max_n=4, token_min_n=1, merge_len=0) == [
        '他说："', '好。"', "走了。"]  # a quote right after a stop goes with that sentence
    assert T.split_paragraph('."x', words, "en") == ['"x.']  # the reference raises IndexError here


def test_replace_blank_keeps_spaces_only_between_ascii_words():
    assert T.replace_blank("中文 English 混合 text 测试 a b") == "中文English混合text测试a b"
    assert T.replace_blank(" a b ") == "a b"  # the reference would raise on the trailing space
