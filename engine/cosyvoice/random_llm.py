"""Stand-ins for the published LLM files, for tests, parity scripts and benchmarks.

- ``small_llm_config()``: the same architecture with fewer layers and channels;
- ``random_llm_state_dict``: seeded random weights in ``llm.pt``'s exact key layout (the tied
  ``lm_head`` / ``embed_tokens`` pair is one tensor, as in the published file), at any config;
- ``write_tiny_tokenizer``: a tiny byte-level BPE ``vocab.json`` / ``merges.txt`` /
  ``tokenizer_config.json`` in the layout of ``CosyVoice-BlankEN/`` (Qwen2's tokenizer class,
  ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` as added tokens after the vocabulary).

Nothing here reads a file or the network: the point is to run the real code when the published
files are not at hand.
"""
from __future__ import annotations

import collections
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .config import load_config

# Overrides of the published sections for the small test configuration (same architecture).
SMALL_QWEN2: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "num_hidden_layers": 2, "max_window_layers": 2,
                               "vocab_size": 512, "bos_token_id": 511, "eos_token_id": 511}
SMALL_LLM: dict[str, Any] = {"llm_input_size": 64, "llm_output_size": 64, "speech_token_size": 61}


def small_llm_config() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(cfg_llm, qwen2_cfg)`` of the small configuration: 2 layers of width 64, 4 query / 2 key-value
    heads, a 512-token text vocabulary, 61 speech codes (+3 extra tokens)."""
    cfg = load_config()
    return {**cfg["llm"], **SMALL_LLM}, {**cfg["qwen2"], **SMALL_QWEN2}


def _uniform(rs: np.random.RandomState, shape: tuple[int, ...], std: float, mean: float = 0.0) -> torch.Tensor:
    """Uniform values of the given mean and standard deviation. NumPy's legacy ``RandomState`` stream and
    plain double arithmetic make them the same on every machine and version (torch's vectorised
    ``randn`` is not: its AVX2 and scalar paths round differently), so a fixture can keep only the seed."""
    n = int(np.prod(shape)) if shape else 1
    out = np.empty(n, dtype=np.float32)
    block = 1 << 24
    for start in range(0, n, block):
        stop = min(n, start + block)
        out[start:stop] = (rs.random_sample(stop - start) * 2.0 - 1.0) * (math.sqrt(3.0) * std) + mean
    return torch.from_numpy(out).reshape(shape)


def _fill(name: str, shape: tuple[int, ...], rs: np.random.RandomState, decoder_gain: float) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return _uniform(rs, shape, 0.1, 1.0)
    if name.endswith(".bias"):
        return _uniform(rs, shape, 0.1)
    if "embed" in name or name.endswith("embedding.weight"):
        return _uniform(rs, shape, 1.0)
    gain = decoder_gain if name.startswith("llm_decoder.") else 1.0
    return _uniform(rs, shape, gain / math.sqrt(shape[-1]))


def random_llm_state_dict(cfg_llm: Mapping[str, Any] | None = None, qwen2_cfg: Mapping[str, Any] | None = None,
                          seed: int = 0, decoder_gain: float = 1.0, eos_bias: float = 0.0,
                          unused_bias: float = 0.0) -> dict[str, torch.Tensor]:
    """Seeded random float32 weights with exactly the keys and shapes of ``llm.pt`` for this config
    (uniform: norm weights around 1, linear weights of variance 1/fan_in so activations stay O(1),
    embeddings of unit variance), identical on every machine for a seed. ``decoder_gain`` sharpens
    the speech-token distribution; ``eos_bias`` is added to the eos logit's bias (so tests can make
    decoding end early or late) and ``unused_bias`` to that of the token between eos and fill (which
    the reference's bistream decoding refuses)."""
    from .llm import build_llm_on_meta

    model = build_llm_on_meta(cfg_llm, qwen2_cfg)
    rs = np.random.RandomState(seed)
    state: dict[str, torch.Tensor] = {}
    tied = getattr(model.llm.model.config, "tie_word_embeddings", False)
    for name, t in model.state_dict().items():
        if tied and name == "llm.model.lm_head.weight":
            state[name] = state["llm.model.model.embed_tokens.weight"]
            continue
        state[name] = _fill(name, tuple(t.shape), rs, decoder_gain)
    state["llm_decoder.bias"][model.eos_token] += eos_bias
    state["llm_decoder.bias"][model.speech_token_size + 1] += unused_bias
    return state


def random_llm(cfg_llm: Mapping[str, Any] | None = None, qwen2_cfg: Mapping[str, Any] | None = None,
               seed: int = 0, dtype: torch.dtype = torch.float32, **kwargs: Any):
    """A ``Qwen2LM`` with ``random_llm_state_dict`` weights, loaded through the real strict loader."""
    from .llm import load_llm

    state = random_llm_state_dict(cfg_llm, qwen2_cfg, seed, **kwargs)
    return load_llm(state, cfg_llm, qwen2_cfg, dtype=dtype, source=f"random llm (seed {seed})")


# ---------------------------------------------------------------------- tiny tokenizer files

TINY_TOKENIZER_CORPUS = (
    "the quick brown fox jumps over the lazy dog. hello world, this is a test of the text front end. "
    "one two three four five six seven eight nine ten hundred thousand million dollars percent "
    "kilometers per hour december first twenty point and zero "
    "今天天气很好，我们去公园散步。你好，世界！这是一个测试。二零二六年十二月一日，三点五美元，每小时一百公里。")
QWEN2_ADDED_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-printable-character table (what byte-level BPE vocabularies are written in),
    in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def write_tiny_tokenizer(folder: str | Path, n_merges: int = 200,
                         added_tokens: tuple[str, ...] = QWEN2_ADDED_TOKENS) -> int:
    """Write a tiny byte-level BPE tokenizer in ``CosyVoice-BlankEN/``'s layout into ``folder``: the 256
    byte symbols plus ``n_merges`` merges learned (greedily, ties broken by the pair itself, so the
    result never varies) from a fixed English/Chinese corpus; ``added_tokens`` follow the vocabulary
    as Qwen2's do. Returns the size of the vocabulary before the added tokens."""
    alphabet = _byte_alphabet()
    words = collections.Counter(tuple(alphabet[b] for b in w.encode("utf-8"))
                                for w in re.findall(r" ?[^\W\d_]+| ?\d| ?[^\w\s]+|\s+", TINY_TOKENIZER_CORPUS))
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: collections.Counter = collections.Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        merged: collections.Counter = collections.Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    n = len(vocab)
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(n + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                              "single_word": False, "special": True}
                                 for i, t in enumerate(added_tokens)},
        "additional_special_tokens": list(added_tokens[1:]),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return n
