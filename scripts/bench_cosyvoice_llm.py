"""Benchmark CosyVoice 2's language model: first-token latency, ms per speech token, peak memory.

Weights are seeded random tensors in ``llm.pt``'s layout (speed does not depend on the values; the
extra tokens are made impossible so every run decodes the asked number of tokens), or the real
file with ``--weights llm.pt``. Examples::

    python scripts/bench_cosyvoice_llm.py --device cpu --tokens 50
    python scripts/bench_cosyvoice_llm.py --device cuda --dtype bf16 --tokens 200
    python scripts/bench_cosyvoice_llm.py --small --tokens 200
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.cosyvoice import llm as L  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice import random_llm as R  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.config import load_config  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--small", action="store_true", help="the small test configuration instead of the full size")
    ap.add_argument("--weights", help="a real llm.pt instead of random weights")
    ap.add_argument("--text-tokens", type=int, default=20)
    ap.add_argument("--prompt-text-tokens", type=int, default=15)
    ap.add_argument("--prompt-speech-tokens", type=int, default=150, help="6 s of voice prompt at 25 tokens/s")
    ap.add_argument("--tokens", type=int, default=100, help="speech tokens to decode per run")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cfg_llm, qwen2_cfg = R.small_llm_config() if args.small else (load_config()["llm"], load_config()["qwen2"])

    t0 = time.perf_counter()
    if args.weights:
        state = L.load_llm_state_dict(args.weights)
    else:
        state = R.random_llm_state_dict(cfg_llm, qwen2_cfg, seed=0)
        n = int(cfg_llm["speech_token_size"])
        state["llm_decoder.bias"][n:] -= 50.0  # no stop token: decode exactly --tokens
    model = L.load_llm(state, cfg_llm, qwen2_cfg, device=device, dtype=dtype)
    del state
    load_s = time.perf_counter() - t0

    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, int(qwen2_cfg["vocab_size"]), (1, args.text_tokens), generator=g)
    prompt_text = torch.randint(0, int(qwen2_cfg["vocab_size"]), (1, args.prompt_text_tokens), generator=g)
    prompt_speech = torch.randint(0, int(cfg_llm["speech_token_size"]), (1, args.prompt_speech_tokens), generator=g)
    ratio = max(args.tokens / args.text_tokens, 0.0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for run in range(args.runs + 1):  # the first run warms up
        sync(device)
        start = time.perf_counter()
        first = None
        count = 0
        for _ in model.inference(text, prompt_text, prompt_speech, generator=torch.Generator().manual_seed(run),
                                 min_ratio=ratio, max_ratio=ratio):
            count += 1
            if first is None:
                sync(device)
                first = time.perf_counter() - start
        sync(device)
        total = time.perf_counter() - start
        if run:
            rows.append((first, (total - first) / max(count - 1, 1), count))
    first_ms = min(r[0] for r in rows) * 1e3
    step_ms = min(r[1] for r in rows) * 1e3
    report = {"config": "small" if args.small else "full", "device": str(device), "dtype": args.dtype,
              "threads": torch.get_num_threads(), "load_s": round(load_s, 1),
              "prefix_tokens": 2 + args.prompt_text_tokens + args.text_tokens + args.prompt_speech_tokens,
              "tokens": rows[0][2], "first_token_ms": round(first_ms, 1), "ms_per_token": round(step_ms, 2),
              "tokens_per_s": round(1e3 / step_ms, 1),
              "speech_s_per_s": round(1e3 / step_ms / int(load_config()["token_frame_rate"]), 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
