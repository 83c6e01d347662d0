"""Benchmark the CosyVoice 2 flow (tokens -> mel) at full size on seeded random weights.

Prints one JSON row per (token count, mode): ms per ``inference`` call, the real-time factor
(seconds of compute per second of mel produced, 50 mel frames per second), the share of the
encoder, and peak memory (process RSS; CUDA peak allocation on a GPU).

    python scripts/bench_cosyvoice_flow.py                                # CPU fp32, 100 and 300 tokens
    python scripts/bench_cosyvoice_flow.py --tokens 100 --dtype bf16 --rounds 2
    python scripts/bench_cosyvoice_flow.py --device cuda --dtype fp16 --tokens 25,100,300
    python scripts/bench_cosyvoice_flow.py --reference /path/to/CosyVoice # also the reference, same inputs

With ``--reference DIR`` (a CosyVoice checkout with Matcha-TTS, imported at run time only; run with
a Python that has its dependencies) the reference's ``CausalMaskedDiffWithXvec`` gets the same
weights and inputs and is timed alternately with ours; each row then carries its ms and the ratio
reference / ours. (Under ``--dtype fp16`` the reference runs fp32 weights under autocast, as its
runtime does; ours runs fp16 weights.)
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.cosyvoice import flow as FL  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.random_flow import random_flow, random_flow_state_dict  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = {"offline": dict(streaming=False, finalize=True), "stream": dict(streaming=True, finalize=False)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="100,300", help="new speech tokens per call (25 per second), comma-separated")
    ap.add_argument("--prompt-tokens", type=int, default=75, help="voice-prompt tokens (3 s)")
    ap.add_argument("--modes", default="offline,stream")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--rounds", type=int, default=1, help="timed calls per row (after one warm-up call)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--reference", type=Path, default=None, help="CosyVoice checkout to time against")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cfg = FL.flow_config()

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    flow = random_flow(cfg, seed=0, dtype=dtype).to(device)
    print(f"[bench] built full-size flow in {time.perf_counter() - t0:.1f} s, {torch.get_num_threads()} CPU threads",
          file=sys.stderr)
    reference = None
    if args.reference:
        import cosyvoice_reference_flow as R

        reference = R.build_reference(R.import_reference(args.reference.resolve()), cfg)
        reference.load_state_dict(random_flow_state_dict(cfg, seed=0), strict=True)
        reference.to(device)

    g = torch.Generator().manual_seed(1)
    prompt_token = torch.randint(0, cfg["vocab_size"], (1, args.prompt_tokens), generator=g)
    prompt_feat = torch.rand(1, 2 * args.prompt_tokens, 80, generator=g) * 13 - 11
    embedding = torch.randn(1, 192, generator=g)

    def ours(token, kw):
        return flow.inference(token, prompt_token, prompt_feat, embedding, **kw)

    def theirs(token, kw):
        n = lambda t: torch.tensor([t.size(1)], dtype=torch.int32, device=device)  # noqa: E731
        with torch.autocast(device.type, dtype=torch.float16, enabled=dtype == torch.float16 and device.type == "cuda"):
            return reference.inference(token=token.to(device, torch.int32), token_len=n(token),
                                       prompt_token=prompt_token.to(device), prompt_token_len=n(prompt_token),
                                       prompt_feat=prompt_feat.to(device), prompt_feat_len=n(prompt_feat),
                                       embedding=embedding.to(device), **kw)[0]

    for n_tokens in (int(t) for t in args.tokens.split(",")):
        token = torch.randint(0, cfg["vocab_size"], (1, n_tokens), generator=g)
        for mode in args.modes.split(","):
            kw = MODES[mode]
            sides = {"ours": ours} if reference is None else {"ours": ours, "reference": theirs}
            times: dict[str, list[float]] = {s: [] for s in sides}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for side, fn in sides.items():  # warm-up
                fn(token, kw)
            for _ in range(args.rounds):
                for side, fn in sides.items():
                    _sync(device)
                    t = time.perf_counter()
                    mel = fn(token, kw)
                    _sync(device)
                    times[side].append(time.perf_counter() - t)
            frames = mel.shape[2]
            with torch.inference_mode():
                _sync(device)
                t = time.perf_counter()
                tokens = torch.cat([prompt_token, token], 1).to(device)
                flow.encode(tokens, **kw)
                _sync(device)
                encoder_s = time.perf_counter() - t
            ms = 1000 * statistics.median(times["ours"])
            row = dict(tokens=n_tokens, prompt_tokens=args.prompt_tokens, mode=mode, device=str(device),
                       dtype=args.dtype, threads=torch.get_num_threads(), mel_frames=frames,
                       ms_per_call=round(ms, 1), rtf=round(ms / 1000 / (frames / 50), 3),
                       encoder_ms=round(1000 * encoder_s, 1), peak_rss_growth_mb=round(_rss_mb() - rss0, 1))
            if device.type == "cuda":
                row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if reference is not None:
                ref_ms = 1000 * statistics.median(times["reference"])
                row.update(reference_ms_per_call=round(ref_ms, 1), ratio_reference_over_ours=round(ref_ms / ms, 2))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
