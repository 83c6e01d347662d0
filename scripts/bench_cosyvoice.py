"""Benchmark CosyVoice 2 end to end: the time to the first streamed chunk, the real-time factor and
where the time goes (language model, flow, vocoder), with peak memory, on the CPU or a GPU.

The networks get seeded random weights in the published layouts (speed does not depend on the
values); the language model's end-of-speech token is suppressed so every run speaks exactly
``--tokens`` speech tokens (25 per second). Per-stage times come from timing each network call of
the real pipeline (``engine/cosyvoice/pipeline.speak_pieces``). Examples::

    python scripts/bench_cosyvoice.py --size small
    python scripts/bench_cosyvoice.py --size full --tokens 125 --device cpu
    python scripts/bench_cosyvoice.py --size full --tokens 250 --device cuda --dtype bf16

The per-network benchmarks (bench_cosyvoice_llm/flow/hift.py) time one network at a time and
against the reference implementation (``--reference``).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.cosyvoice import pipeline as P  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.voice import Voice  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Timed:
    """Wraps a network's ``inference`` and adds up its time (synchronising CUDA)."""

    def __init__(self, net, device: torch.device):
        self.net, self.device, self.seconds, self.calls = net, device, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.net, name)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def inference(self, *args, **kwargs):
        self._sync()
        t = time.perf_counter()
        out = self.net.inference(*args, **kwargs)
        if hasattr(out, "__next__"):  # the language model yields tokens: time each step
            return self._timed_iter(out, t)
        self._sync()
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def _timed_iter(self, it, t):
        self.seconds += time.perf_counter() - t
        while True:
            t = time.perf_counter()
            try:
                tok = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - t
                return
            self._sync()
            self.seconds += time.perf_counter() - t
            self.calls += 1
            yield tok


def build(size: str, device: torch.device, dtype: torch.dtype, tmp: Path):
    from tiny_cosyvoice import small_config, write_model_folder

    from comfyui_digitalhuman.engine.cosyvoice.config import published_config
    from comfyui_digitalhuman.model_loaders import cosyvoice as loader

    cfg = small_config() if size == "small" else published_config()
    if size == "full":  # the tiny tokenizer's ids index the full vocabulary too
        cfg["qwen2"] = published_config()["qwen2"]
    t = time.perf_counter()
    files = write_model_folder(tmp, cfg)
    paths = {role: files[mid] for role, mid in loader.CATALOG_IDS.items()}
    t_write = time.perf_counter() - t
    t = time.perf_counter()
    model = loader.load_cosyvoice(paths, device=device, dtype=dtype, cfg=cfg)
    t_load = time.perf_counter() - t
    with torch.no_grad():  # never end early: the run speaks exactly the asked number of tokens
        model.llm.llm_decoder.bias[model.llm.speech_token_size:] = -1e4
    return model, cfg, t_write, t_load


def voice_of(cfg: dict, seconds: float, seed: int = 0) -> Voice:
    rng = np.random.default_rng(seed)
    n = int(seconds * 25)
    vocab = min(int(cfg["flow"]["vocab_size"]), int(cfg["llm"]["speech_token_size"]))
    return Voice(rng.integers(0, vocab, n), rng.uniform(-10, 1, (2 * n, 80)).astype(np.float32),
                 rng.normal(0, 1, 192).astype(np.float32), transcript="this is the prompt text")


def run(model, voice: Voice, text: str, tokens: int, stream: bool, device: torch.device) -> dict:
    text_tokens = model.tokenizer.text_tokens(model.frontend.normalize(text, split=False)).shape[1]
    model.cfg["inference"].update(min_token_text_ratio=tokens / text_tokens, max_token_text_ratio=(tokens + 0.5) / text_tokens)
    llm, flow, hift = Timed(model.llm, device), Timed(model.flow, device), Timed(model.hift, device)
    timed = P.CosyVoiceModel(llm=llm, flow=flow, hift=hift, tokenizer=model.tokenizer, frontend=model.frontend,
                             cfg=model.cfg, sample_rate=model.sample_rate)
    plan = P.plan_script(text, model.cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    first, samples = None, 0
    with torch.inference_mode():
        for chunk in P.speak_pieces(timed, plan, voice, P.SpeakOptions(mode="zero_shot", stream=stream, seed=0)):
            if chunk.kind == "speech" and len(chunk.samples) and first is None:
                first = time.perf_counter() - t0
            samples += len(chunk.samples)
    total = time.perf_counter() - t0
    audio_s = samples / model.sample_rate
    return {"first_chunk_s": first, "total_s": total, "audio_s": audio_s, "rtf": total / audio_s,
            "llm_s": llm.seconds, "llm_tokens": llm.calls, "flow_s": flow.seconds, "flow_calls": flow.calls,
            "hift_s": hift.seconds, "hift_calls": hift.calls,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["small", "full"], default="small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--tokens", type=int, default=125, help="speech tokens to speak (25 per second; 125 = 5 s)")
    ap.add_argument("--prompt-seconds", type=float, default=4.0, help="length of the voice prompt")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    text = "the quick brown fox jumps over the lazy dog, one two three."
    with tempfile.TemporaryDirectory() as d:
        model, cfg, t_write, t_load = build(args.size, device, DTYPES[args.dtype], Path(d))
        voice = voice_of(cfg, args.prompt_seconds)
        print(f"CosyVoice 2 {args.size}, {args.device} {args.dtype}, {torch.get_num_threads()} threads; "
              f"weights written in {t_write:.1f} s, loaded in {t_load:.1f} s")
        run(model, voice, text, min(args.tokens, 30), True, device)  # warm-up
        for r in range(args.rounds):
            for stream in (True, False):
                m = run(model, voice, text, args.tokens, stream, device)
                print(f"{'stream ' if stream else 'offline'} {m['audio_s']:.2f} s of speech: first chunk {m['first_chunk_s']:.3f} s, "
                      f"total {m['total_s']:.2f} s, RTF {m['rtf']:.3f} | LM {m['llm_tokens']} tokens "
                      f"{1000 * m['llm_s'] / max(m['llm_tokens'], 1):.1f} ms/token ({m['llm_tokens'] / max(m['llm_s'], 1e-9):.1f} tokens/s), "
                      f"flow {m['flow_calls']} calls {m['flow_s']:.2f} s, HiFT {m['hift_calls']} calls {m['hift_s']:.2f} s"
                      + (f", CUDA peak {m['cuda_peak_mb']:.0f} MB" if m["cuda_peak_mb"] is not None else ""))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
