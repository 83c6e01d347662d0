"""Check our speech-token -> waveform path (engine/cosyvoice/token2wav.py) against the reference's
own ``CosyVoice2Model.tts`` (``cosyvoice/cli/model.py``), streamed and not, on the same networks.

The reference's ``tts`` is driven through its voice-conversion entry (``source_speech_token``), which
hands it a fixed token list instead of running the language model, so the comparison isolates the
hop schedule, the flow calls, the mel and source caches, the cross-fades and the speed change. Both
sides get the same flow and HiFT weights (our seeded random weights in the published layout,
loaded into the reference's modules by its own loading rule) and the same random numbers: the
reference draws HiFT's noise from torch's global generator seeded with ``--seed``, ours from a
``torch.Generator`` seeded the same way, in the same order.

Run with a Python that has the reference's dependencies, from the repository root::

    python scripts/cosyvoice_reference.py --reference /path/to/CosyVoice [--size small|full]
    python scripts/cosyvoice_reference.py --reference /path/to/CosyVoice --write-fixture

Nothing of the reference is copied; ``--write-fixture`` stores only the small configuration's
inputs, seed and the reference's output chunks (``tests/fixtures/cosyvoice/token2wav_reference.npz``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _pack  # noqa: E402,F401
import cosyvoice_reference_flow as ref_flow  # noqa: E402
import cosyvoice_reference_hift as ref_hift  # noqa: E402

from comfyui_digitalhuman.engine.cosyvoice import flow as FL  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice import hift as HF  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.config import published_config  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.random_flow import random_flow_state_dict  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.random_hift import random_hift_state_dict  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.token2wav import FlowPrompt, StreamSchedule, Token2Wav, tokens_to_speech  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cosyvoice" / "token2wav_reference.npz"
CASES = {  # name: (stream, speed)
    "offline": (False, 1.0),
    "offline_speed": (False, 1.25),
    "stream": (True, 1.0),
}


def configs(size: str) -> dict:
    if size == "full":
        return published_config()
    from tiny_cosyvoice import small_config

    return small_config()


def make_inputs(cfg: dict, n_prompt: int, n_tokens: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = int(cfg["flow"]["vocab_size"])
    return {
        "prompt_tokens": rng.integers(0, vocab, (1, n_prompt)).astype(np.int32),
        "prompt_feat": rng.uniform(-11.0, 2.0, (1, 2 * n_prompt, 80)).astype(np.float32),
        "embedding": rng.normal(0.0, 1.0, (1, 192)).astype(np.float32),
        "tokens": rng.integers(0, vocab, (1, n_tokens)).astype(np.int32),
    }


def ours(cfg: dict, flow_state: dict, hift_state: dict, x: dict, stream: bool, speed: float, seed: int) -> list[np.ndarray]:
    flow = FL.load_flow_weights(FL.build_flow(cfg["flow"]), flow_state, "flow (random)")
    hift = HF.build_hift(cfg["hift"], hift_state, source="hift (random)")
    prompt = FlowPrompt(torch.from_numpy(x["prompt_tokens"]), torch.from_numpy(x["prompt_feat"]),
                        torch.from_numpy(x["embedding"]))
    gen = torch.Generator()
    gen.manual_seed(seed)
    conv = Token2Wav(flow, hift, prompt, StreamSchedule.from_config(cfg), generator=gen)
    tokens = [int(t) for t in x["tokens"][0]]
    return [c[0].numpy() for c in tokens_to_speech(iter(tokens), conv, stream=stream, speed=speed)]


def reference(ref_dir: Path, cfg: dict, flow_state: dict, hift_state: dict, x: dict, stream: bool, speed: float,
              seed: int) -> list[np.ndarray]:
    rflow = ref_flow.build_reference(ref_flow.import_reference(ref_dir), cfg["flow"])
    rflow.load_state_dict(flow_state, strict=True)
    rhift = ref_hift.reference_hift_direct(ref_hift.import_reference(ref_dir), cfg["hift"])
    rhift.load_state_dict({k.replace("generator.", ""): v for k, v in hift_state.items()}, strict=True)
    from cosyvoice.cli.model import CosyVoice2Model

    model = CosyVoice2Model(torch.nn.Identity(), rflow.eval(), rhift.eval(), fp16=False)
    s = cfg["streaming"]
    model.token_hop_len, model.token_max_hop_len = int(s["token_hop_len"]), int(s["token_max_hop_len"])
    model.stream_scale_factor = int(s["stream_scale_factor"])
    torch.manual_seed(seed)
    out = model.tts(source_speech_token=torch.from_numpy(x["tokens"]),
                    flow_prompt_speech_token=torch.from_numpy(x["prompt_tokens"]),
                    prompt_speech_feat=torch.from_numpy(x["prompt_feat"]),
                    flow_embedding=torch.from_numpy(x["embedding"]), stream=stream, speed=speed)
    return [o["tts_speech"][0].numpy() for o in out]


def compare(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    if [len(x) for x in a] != [len(x) for x in b]:
        return f"chunk lengths differ: ours {[len(x) for x in a]}, reference {[len(x) for x in b]}"
    d = max((float(np.abs(x - y).max()) if len(x) else 0.0) for x, y in zip(a, b))
    return f"{len(a)} chunk(s) {[len(x) for x in a]}, max abs diff {d:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="a FunAudioLLM/CosyVoice checkout with its Matcha-TTS submodule")
    ap.add_argument("--size", choices=["small", "full"], default="small")
    ap.add_argument("--prompt-tokens", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--write-fixture", action="store_true", help="store the small case's reference outputs for the unit test")
    args = ap.parse_args()
    cfg = configs("small" if args.write_fixture else args.size)
    hop = int(cfg["streaming"]["token_hop_len"])
    n_prompt = args.prompt_tokens or (hop + 3)  # not a whole number of chunks: exercises the first hop's pad
    n_tokens = args.tokens or (7 * hop + 2)  # several growing hops and a final remainder
    x = make_inputs(cfg, n_prompt, n_tokens, args.seed)
    flow_state = random_flow_state_dict(cfg["flow"], args.seed)
    hift_state = random_hift_state_dict(cfg["hift"], args.seed)
    record = {k: v for k, v in x.items()}
    record["seed"] = np.array(args.seed)
    for name, (stream, speed) in CASES.items():
        t0 = time.perf_counter()
        mine = ours(cfg, flow_state, hift_state, x, stream, speed, args.seed)
        t1 = time.perf_counter()
        theirs = reference(args.reference, cfg, flow_state, hift_state, x, stream, speed, args.seed)
        t2 = time.perf_counter()
        print(f"{args.size} {name:14s} {compare(mine, theirs)}  (ours {t1 - t0:.1f} s, reference {t2 - t1:.1f} s)")
        for i, c in enumerate(theirs):
            record[f"{name}.{i}"] = c
        record[f"{name}.chunks"] = np.array(len(theirs))
    if args.write_fixture:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, **record)
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
