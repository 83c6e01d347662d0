"""CosyVoice 2's text front end, ours against the reference's, on the same tiny tokenizer files.

    python scripts/cosyvoice_reference_text.py --reference DIR [--out FILE.json]

DIR is a checkout of FunAudioLLM/CosyVoice (run with a Python that has its dependencies: wetext,
inflect, transformers); it is imported at run time only and nothing of it is part of this
repository. The published tokenizer files are not needed: both sides read tiny byte-level BPE
files in ``CosyVoice-BlankEN/``'s layout, written by ``random_llm.write_tiny_tokenizer`` (once with
Qwen2's three added tokens, once with seven, as Qwen2.5's folder would have more).

Recorded, for the tests: the ids the reference's ``get_qwen_tokenizer`` gives every special token
on those files, its encodings and decodings of a few strings, ``inflect.number_to_words`` (which
the reference's ``spell_out_number`` uses) on a list of numbers, and
``CosyVoiceFrontEnd.text_normalize`` (split and not split) on a list of texts, or the error it
raises. The reference's front end is constructed by its own ``__init__`` with ONNX Runtime's session
replaced by a stand-in (its speaker and speech-token models are not used by ``text_normalize``).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import _pack  # noqa: F401  (registers comfyui_digitalhuman; scripts/ is on sys.path)
from comfyui_digitalhuman.engine.cosyvoice import random_llm as R

QWEN25_LIKE_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                     "<|box_start|>", "<|box_end|>")
ENCODE_SAMPLES = ["hello world, the quick brown fox.", "今天天气很好<|endofprompt|>[breath]你好",
                  "<strong>x</strong> 😀 [laughter]", "", "  two  spaces\nnew line", "<|im_start|><|object_ref_start|>a"]
NUMBERS = ["0", "00", "007", "5", "10", "13", "20", "21", "45", "99", "100", "101", "110", "115", "342", "999", "1000",
           "1001", "1010", "1100", "1234", "2026", "10000", "12345", "100000", "100001", "1000000", "1000001", "1000100",
           "1050000", "1234567", "2000010", "100100100", "1000000000", "123456789012", "999999999999999999999999999999999999"]
_LONG_ZH = ("今天是2026年12月1日，天气很好，我们一起去公园散步。公园里有很多人，有的在跑步，有的在打太极拳。"
            "我买了3.5公斤苹果，花了$3.50，还看到一辆车以100km/h的速度开过去！你知道吗？")
_LONG_EN = ("On 2026-12-01 the car drove at 100km/h and cost $3.50 per mile, which was 12% more than in 1999. "
            "Mr. Smith said it was fine; the others did not agree! Did they ever? ")
TEXTS = [
    "", "你好。", "Hello world.", "！？。", "...", "😀🎉", "😀你好🎉", "Hello 😀 world 🎉!",
    "2026年12月1日", "今天是2026年12月1日，价格是$3.50，速度100km/h。",
    "It costs $3.50 and drives at 100km/h on 2026-12-01.", "我有3个apple和2.5公斤香蕉，打了20%的折。",
    "<|endofprompt|>你好 123", "[breath]Hello 12 world.", '他说："你好。"然后走了。', 'He said "hi." Then he left.',
    "（注意）【重要】这是`代码`——结束", "面积是5m²，体积3m³。", "北京 - 上海", "你好，", "第一行\n第二行。",
    "中文 English 混合 text 测试", "Version 3.11.2 released, call 555-1234 at 10:30am.", "a٣b and x²",
    "#1 hit", "123", "Hi!! Really?? Yes...", 'She said "I have 2 cats."', "It's 5 o'clock, isn't it?",
    "我在2026年花了¥1,234.56元。", "Dr. Lee paid €20 for 3kg of apples at 9:45pm.", "“引号”和‘单引号’。", "温度是-3℃，湿度50%。",
    _LONG_ZH * 4, _LONG_EN * 4,
    "this is a very long English sentence without any punctuation that goes on and on " * 4,
]


def _import_reference(ref_dir: Path):
    ref_dir = ref_dir.resolve()
    if not (ref_dir / "cosyvoice" / "cli" / "frontend.py").is_file():
        raise SystemExit(f"--reference {ref_dir}: not a CosyVoice checkout (cosyvoice/cli/frontend.py missing)")
    for p in (ref_dir / "third_party" / "Matcha-TTS", ref_dir):
        sys.path.insert(0, str(p))
    from cosyvoice.cli import frontend as ref_frontend
    from cosyvoice.tokenizer import tokenizer as ref_tokenizer

    return ref_frontend, ref_tokenizer


def reference_frontend(ref_frontend, ref_tokenizer, token_dir: Path):
    """``CosyVoiceFrontEnd`` built by its own ``__init__`` (no ONNX model is opened)."""
    real = ref_frontend.onnxruntime.InferenceSession
    ref_frontend.onnxruntime.InferenceSession = lambda *a, **k: None
    try:
        get_tokenizer = functools.partial(ref_tokenizer.get_qwen_tokenizer, token_path=str(token_dir),
                                          skip_special_tokens=True)
        with contextlib.redirect_stdout(sys.stderr):
            return ref_frontend.CosyVoiceFrontEnd(get_tokenizer, None, "", "", "", "all")
    finally:
        ref_frontend.onnxruntime.InferenceSession = real


def tokenizer_record(ref_tokenizer, token_dir: Path) -> dict:
    tok = ref_tokenizer.get_qwen_tokenizer(str(token_dir), skip_special_tokens=True)
    sp = tok.special_tokens
    names = [sp["eos_token"], *sp["additional_special_tokens"]]
    encoded = [tok.encode(s, allowed_special="all") for s in ENCODE_SAMPLES]
    return {"special_token_ids": {n: int(tok.tokenizer.convert_tokens_to_ids(n)) for n in names},
            "size": len(tok.tokenizer), "encode": encoded, "decode": [tok.decode(ids) for ids in encoded]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="a FunAudioLLM/CosyVoice checkout")
    ap.add_argument("--out", help="write the record as JSON here (else print it)")
    args = ap.parse_args()
    ref_frontend, ref_tokenizer = _import_reference(Path(args.reference))
    import inflect

    work = Path(tempfile.mkdtemp(prefix="cosyvoice-text-"))
    qwen2, qwen25 = work / "qwen2", work / "qwen25"
    R.write_tiny_tokenizer(qwen2)
    R.write_tiny_tokenizer(qwen25, added_tokens=QWEN25_LIKE_ADDED)
    from importlib.metadata import version

    record = {"versions": {n: version(n) for n in ("wetext", "inflect", "transformers", "tokenizers")},
              "encode_samples": ENCODE_SAMPLES, "tokenizers": {"qwen2": tokenizer_record(ref_tokenizer, qwen2),
                                                                "qwen25_like": tokenizer_record(ref_tokenizer, qwen25)}}
    engine = inflect.engine()
    record["number_to_words"] = {n: engine.number_to_words(n) for n in NUMBERS}
    fe = reference_frontend(ref_frontend, ref_tokenizer, qwen2)
    shutil.rmtree(work, ignore_errors=True)  # both tokenizers are in memory now
    cases = []
    for text in TEXTS:
        case = {"text": text}
        for split in (True, False):
            key = "split" if split else "joined"
            try:
                case[key] = fe.text_normalize(text, split=split)
            except Exception as exc:  # noqa: BLE001 - the reference's failures are recorded, not hidden
                case[key] = {"error": type(exc).__name__}
        cases.append(case)
    record["text_normalize"] = cases
    text = json.dumps(record, ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"recorded {len(cases)} texts in {args.out}", file=sys.stderr)
    else:
        print(text)


if __name__ == "__main__":
    main()
