"""CosyVoice 2's language model (Qwen2LM), ours against the reference implementation on one machine.

    python scripts/cosyvoice_reference_llm.py --reference DIR [--size small|full] [--out FILE.npz]
    python scripts/cosyvoice_reference_llm.py --against FILE.npz

DIR is a checkout of FunAudioLLM/CosyVoice that the user provides (run with a Python that has its
dependencies, e.g. transformers 4.51); it is imported at run time only and nothing of it is part
of this repository. ``--against`` needs no reference: it repeats our side of a recorded run (for
instance under another transformers version) and compares with the recorded reference outputs.

Both sides get the same seeded random weights in ``llm.pt``'s published layout, written once as a
flat state dict with ``torch.save`` and read by each side's own loading code, and the same token
inputs (int32, as the reference's front end makes them). Checked:

1. the prefix: the embeddings the reference feeds its first step vs ``Qwen2LM.build_prefix``;
2. logits for the prefix: the reference's ``Qwen2Encoder.forward_one_step`` + ``llm_decoder`` at
   every prefix position (captured during its own ``inference``) vs ``logits_for_prefix``;
3. sampling alone: the reference's per-step logits replayed through our ``sampling_ids`` with a
   ``torch.Generator`` seeded like the reference's global generator (``torch.manual_seed``) must
   give exactly its tokens (same scores, same draws);
4. generation: the reference's ``inference`` after ``torch.manual_seed(s)`` vs our ``inference``
   with ``Generator().manual_seed(s)``; the case is called stable when the reference's own tokens do
   not change with its logits perturbed by +-delta (several draws of the perturbation), so equal
   tokens follow whenever our logits are within delta of its.

Differences from running the reference as shipped, none in the arithmetic: ``Qwen2Encoder``'s
``Qwen2ForCausalLM.from_pretrained(CosyVoice-BlankEN)`` is replaced by a build from the same
``config.json`` (its weights would be overwritten by ``llm.pt`` anyway); at full size that build is
on the meta device and the memory-mapped file is assigned instead of copied, and the rotary
``inv_freq`` buffer (not in the file) is computed afterwards, so 2 GB of weights are held once.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import _pack  # noqa: F401  (registers comfyui_digitalhuman; scripts/ is on sys.path)
from comfyui_digitalhuman.engine.cosyvoice import llm as L
from comfyui_digitalhuman.engine.cosyvoice import random_llm as R
from comfyui_digitalhuman.engine.cosyvoice.config import load_config

CASES: dict[str, dict[str, Any]] = {
    # decoder_gain / eos_bias make the small model's distributions peaked and let eos end decoding
    # between min_len and max_len, so the eos rules are exercised; unused_bias keeps the one token the
    # reference's bistream decoding refuses (speech_token_size + 1) from being drawn.
    "small": {"weight_seed": 7, "decoder_gain": 4.0, "eos_bias": 2.5, "unused_bias": -30.0, "input_seed": 3,
              "sample_seed": 1234, "bistream": True,
              "n_prompt_text": 5, "n_text": 6, "n_prompt_speech": 17, "min_ratio": 2.0, "max_ratio": 20.0},
    "full": {"weight_seed": 11, "decoder_gain": 1.0, "eos_bias": 0.0, "unused_bias": 0.0, "input_seed": 5,
             "sample_seed": 4321, "bistream": False,
             "n_prompt_text": 7, "n_text": 5, "n_prompt_speech": 30, "min_ratio": 2.0, "max_ratio": 8.0},
}
DELTA = 1e-4
PERTURB_TRIALS = 3


def configs(size: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if size == "small":
        return R.small_llm_config()
    cfg = load_config()
    return cfg["llm"], cfg["qwen2"]


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the float32 bytes of every tensor in key order (the tied pair hashed twice)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def random_state(case: dict[str, Any], cfg_llm: dict, qwen2_cfg: dict) -> dict[str, torch.Tensor]:
    return R.random_llm_state_dict(cfg_llm, qwen2_cfg, seed=case["weight_seed"], decoder_gain=case["decoder_gain"],
                                   eos_bias=case["eos_bias"], unused_bias=case.get("unused_bias", 0.0))


def make_inputs(case: dict[str, Any], cfg_llm: dict, qwen2_cfg: dict) -> dict[str, np.ndarray]:
    rs = np.random.RandomState(case["input_seed"])
    vocab, speech = int(qwen2_cfg["vocab_size"]), int(cfg_llm["speech_token_size"])
    return {"prompt_text": rs.randint(0, vocab, (1, case["n_prompt_text"])).astype(np.int32),
            "text": rs.randint(0, vocab, (1, case["n_text"])).astype(np.int32),
            "prompt_speech": rs.randint(0, speech, (1, case["n_prompt_speech"])).astype(np.int32)}


# ----------------------------------------------------------------------------- the reference, in process

def _import_reference(ref_dir: Path):
    ref_dir = ref_dir.resolve()
    if not (ref_dir / "cosyvoice" / "llm" / "llm.py").is_file():
        raise SystemExit(f"--reference {ref_dir}: not a CosyVoice checkout (cosyvoice/llm/llm.py missing)")
    for p in (ref_dir / "third_party" / "Matcha-TTS", ref_dir):
        sys.path.insert(0, str(p))
    from cosyvoice.llm import llm as ref_llm
    from cosyvoice.utils import common as ref_common

    return ref_llm, ref_common


@contextlib.contextmanager
def _from_config(ref_llm_module, on_meta: bool):
    """While the reference builds its ``Qwen2Encoder``: ``Qwen2ForCausalLM.from_pretrained(path)`` makes
    the network from ``path/config.json`` alone (on ``meta`` if asked)."""
    import transformers

    real = ref_llm_module.Qwen2ForCausalLM

    class FromConfig:
        @staticmethod
        def from_pretrained(path, *args, **kwargs):
            config = transformers.AutoConfig.from_pretrained(path)
            with torch.device("meta") if on_meta else contextlib.nullcontext():
                return real(config)

    ref_llm_module.Qwen2ForCausalLM = FromConfig
    try:
        yield
    finally:
        ref_llm_module.Qwen2ForCausalLM = real


def build_reference(ref_dir: Path, weights: Path, cfg_llm: dict, qwen2_cfg: dict, full: bool):
    ref_llm, ref_common = _import_reference(ref_dir)
    blank = weights.parent / "CosyVoice-BlankEN"
    blank.mkdir(exist_ok=True)
    (blank / "config.json").write_text(json.dumps({k: v for k, v in qwen2_cfg.items() if not k.startswith("_")}))
    s = cfg_llm["sampling"]
    sampling = functools.partial(ref_common.ras_sampling, top_p=s["top_p"], top_k=s["top_k"],
                                 win_size=s["win_size"], tau_r=s["tau_r"])
    with _from_config(ref_llm, on_meta=full):
        ref = ref_llm.Qwen2LM(llm_input_size=cfg_llm["llm_input_size"], llm_output_size=cfg_llm["llm_output_size"],
                              speech_token_size=cfg_llm["speech_token_size"], llm=ref_llm.Qwen2Encoder(str(blank)),
                              sampling=sampling, length_normalized_loss=True, lsm_weight=0,
                              mix_ratio=cfg_llm["mix_ratio"])
    if full:
        ref.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True, mmap=True),
                            strict=True, assign=True)
        inner = ref.llm.model.model
        with torch.device("cpu"):
            inner.rotary_emb = type(inner.rotary_emb)(inner.config)
    else:  # exactly CosyVoiceModel.load
        ref.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True), strict=True)
    return ref.to("cpu").eval()


class Recorder:
    """Captures the reference's first step (its prefix and hidden states) and every step's decoder
    output; optionally perturbs those outputs by +-delta (its own generator, not torch's global one)."""

    def __init__(self, ref):
        self.ref, self.first = ref, None
        self.step_logits: list[torch.Tensor] = []
        self.delta, self.noise = 0.0, None
        orig = ref.llm.forward_one_step

        def forward_one_step(xs, masks, cache=None):
            y, new_cache = orig(xs, masks, cache=cache)
            if self.first is None:
                self.first = (xs.detach().clone(), y.detach().clone())
            return y, new_cache

        ref.llm.forward_one_step = forward_one_step
        ref.llm_decoder.register_forward_hook(self._hook)
        self.active = False

    def _hook(self, module, inputs, output):
        if not self.active:
            return None
        self.step_logits.append(output.detach().clone())
        if self.delta:
            u = torch.rand(output.shape, generator=self.noise) * 2 - 1
            return output + self.delta * u
        return None

    def run(self, inputs: dict[str, np.ndarray], case: dict[str, Any], seed: int, delta: float = 0.0,
            noise_seed: int = 0) -> list[int]:
        self.first, self.step_logits, self.delta = None, [], delta
        self.noise = torch.Generator().manual_seed(noise_seed)
        t = {k: torch.from_numpy(v) for k, v in inputs.items()}
        lens = {k: torch.tensor([v.shape[1]], dtype=torch.int32) for k, v in t.items()}
        torch.manual_seed(seed)
        self.active = True
        try:
            with contextlib.redirect_stdout(sys.stderr):
                tokens = [int(x) for x in self.ref.inference(
                    t["text"], lens["text"], t["prompt_text"], lens["prompt_text"], t["prompt_speech"],
                    lens["prompt_speech"], torch.zeros(0, 192), sampling=25, max_token_text_ratio=case["max_ratio"],
                    min_token_text_ratio=case["min_ratio"])]
        finally:
            self.active = False
        return tokens

    def run_bistream(self, inputs: dict[str, np.ndarray], seed: int, delta: float = 0.0, noise_seed: int = 0) -> list[int]:
        """The reference's ``inference_bistream`` with the text arriving one token at a time, as its
        front end feeds a text generator."""
        t = {k: torch.from_numpy(v) for k, v in inputs.items()}
        chunks = (t["text"][:, i:i + 1] for i in range(t["text"].shape[1]))
        self.step_logits, self.delta = [], delta
        self.noise = torch.Generator().manual_seed(noise_seed)
        torch.manual_seed(seed)
        self.active = True
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return [int(x) for x in self.ref.inference_bistream(
                    chunks, t["prompt_text"], torch.tensor([t["prompt_text"].shape[1]], dtype=torch.int32),
                    t["prompt_speech"], torch.tensor([t["prompt_speech"].shape[1]], dtype=torch.int32),
                    torch.zeros(0, 192))]
        finally:
            self.active = False


def run_ours_bistream(ours: L.Qwen2LM, inputs: dict[str, np.ndarray], seed: int) -> list[int]:
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    chunks = (t["text"][:, i:i + 1] for i in range(t["text"].shape[1]))
    return list(ours.inference_bistream(chunks, t["prompt_text"], t["prompt_speech"],
                                        generator=torch.Generator().manual_seed(seed)))


# ----------------------------------------------------------------------------- comparisons

def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.double(), b.double()
    d = (a - b).abs()
    return float(d.max()), float((d / b.abs().clamp_min(1e-6)).max())


def replay_sampling(ours: L.Qwen2LM, step_logits: list[torch.Tensor], seed: int, min_len: int,
                    sampling: dict) -> list[int]:
    """Our sampler on the reference's logits, step by step, with the reference's seed."""
    g = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for i, logits in enumerate(step_logits):
        token = ours.sampling_ids(logits.float().reshape(-1).log_softmax(dim=-1), out, sampling, i < min_len, g)
        if token in ours.stop_token_ids:
            break
        out.append(token)
    return out


def run_ours(ours: L.Qwen2LM, inputs: dict[str, np.ndarray], case: dict[str, Any]) -> tuple[torch.Tensor, list[int], float]:
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    logits = ours.logits_for_prefix(t["text"], t["prompt_text"], t["prompt_speech"])
    g = torch.Generator().manual_seed(case["sample_seed"])
    start = time.perf_counter()
    tokens = list(ours.inference(t["text"], t["prompt_text"], t["prompt_speech"], generator=g,
                                 min_ratio=case["min_ratio"], max_ratio=case["max_ratio"]))
    return logits, tokens, (time.perf_counter() - start) / max(len(tokens), 1)


def with_reference(args: argparse.Namespace) -> None:
    case = CASES[args.size]
    cfg_llm, qwen2_cfg = configs(args.size)
    work = Path(tempfile.mkdtemp(prefix="cosyvoice-llm-"))
    weights = work / "llm.pt"
    t0 = time.perf_counter()
    state = random_state(case, cfg_llm, qwen2_cfg)
    digest = weights_digest(state)
    torch.save(state, str(weights))
    del state
    print(f"[llm] {args.size}: random weights written to {weights} ({weights.stat().st_size / 1e6:.1f} MB, "
          f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    ref = build_reference(Path(args.reference), weights, cfg_llm, qwen2_cfg, full=args.size == "full")
    ours = L.load_llm(weights, cfg_llm, qwen2_cfg)
    inputs = make_inputs(case, cfg_llm, qwen2_cfg)
    rec = Recorder(ref)

    start = time.perf_counter()
    ref_tokens = rec.run(inputs, case, case["sample_seed"])
    ref_ms = (time.perf_counter() - start) / max(len(ref_tokens), 1) * 1e3
    ref_prefix, ref_hidden = rec.first
    ref_steps = list(rec.step_logits)
    with torch.inference_mode():
        ref_logits = ref.llm_decoder(ref_hidden[0]).float()

    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        our_prefix = ours.build_prefix(t["text"], t["prompt_text"], t["prompt_speech"])
    our_logits, our_tokens, our_s = run_ours(ours, inputs, case)
    n_text = inputs["text"].shape[1]
    replayed = replay_sampling(ours, ref_steps, case["sample_seed"], int(n_text * case["min_ratio"]), cfg_llm["sampling"])

    ref_bi = our_bi = None
    bi_stable = False
    if case.get("bistream"):
        ref_bi = rec.run_bistream(inputs, case["sample_seed"])
        our_bi = run_ours_bistream(ours, inputs, case["sample_seed"])
        bi_stable = all(rec.run_bistream(inputs, case["sample_seed"], DELTA, 200 + trial) == ref_bi
                        for trial in range(PERTURB_TRIALS))
    stable = True
    for trial in range(PERTURB_TRIALS):
        if rec.run(inputs, case, case["sample_seed"], delta=DELTA, noise_seed=100 + trial) != ref_tokens:
            stable = False
    pa, pr = diff(our_prefix[0], ref_prefix[0])
    la, lr = diff(our_logits, ref_logits)
    import transformers

    print(f"[llm] {args.size} config, transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"  prefix embeddings [{ref_prefix.shape[1]}, {ref_prefix.shape[2]}]: max abs diff {pa:.3g}")
    print(f"  prefix logits [{ref_logits.shape[0]}, {ref_logits.shape[1]}]: max abs diff {la:.3g}, max rel {lr:.3g} "
          f"(|logits| up to {float(ref_logits.abs().max()):.3g})")
    print(f"  sampler on the reference's logits, same seed: {'same tokens' if replayed == ref_tokens else 'DIFFERENT'} "
          f"({len(ref_tokens)} tokens)")
    print(f"  generation, same seed: reference {len(ref_tokens)} tokens, ours {len(our_tokens)}: "
          f"{'identical' if our_tokens == ref_tokens else 'DIFFERENT'}; reference stable under +-{DELTA:g} logit "
          f"perturbation ({PERTURB_TRIALS} trials): {stable}")
    if ref_bi is not None:
        print(f"  bistream (text one token at a time), same seed: reference {len(ref_bi)} tokens, ours {len(our_bi)}: "
              f"{'identical' if ref_bi == our_bi else 'DIFFERENT'}; stable under the perturbation: {bi_stable}")
    print(f"  ms per token (CPU, one run): reference {ref_ms:.1f}, ours {our_s * 1e3:.1f}")

    if args.out:
        meta = {"size": args.size, "case": case, "cfg_llm": cfg_llm, "qwen2_cfg": qwen2_cfg, "weights_sha256": digest,
                "delta": DELTA, "perturb_trials": PERTURB_TRIALS, "stable": stable, "bistream_stable": bi_stable,
                "reference_transformers": transformers.__version__, "reference_torch": torch.__version__,
                "prefix_max_abs_diff": pa, "logits_max_abs_diff": la}
        np.savez_compressed(args.out, meta=np.array(json.dumps(meta)), **inputs,
                            ref_prefix=ref_prefix[0].numpy(), ref_logits=ref_logits.numpy(),
                            ref_step_logits=torch.cat(ref_steps).float().numpy(),
                            ref_tokens=np.array(ref_tokens, dtype=np.int64),
                            ref_bistream_tokens=np.array(ref_bi or [], dtype=np.int64))
        print(f"  recorded in {args.out}")
    shutil.rmtree(work, ignore_errors=True)


def against(args: argparse.Namespace) -> None:
    rec = np.load(args.against)
    meta = json.loads(str(rec["meta"]))
    case, cfg_llm, qwen2_cfg = meta["case"], meta["cfg_llm"], meta["qwen2_cfg"]
    state = random_state(case, cfg_llm, qwen2_cfg)
    if weights_digest(state) != meta["weights_sha256"]:
        raise SystemExit("the regenerated random weights differ from the recorded run's")
    ours = L.load_llm(state, cfg_llm, qwen2_cfg)
    del state
    inputs = {k: rec[k] for k in ("prompt_text", "text", "prompt_speech")}
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        prefix = ours.build_prefix(t["text"], t["prompt_text"], t["prompt_speech"])
    logits, tokens, per_token = run_ours(ours, inputs, case)
    ref_tokens = rec["ref_tokens"].tolist()
    import transformers

    la, lr = diff(logits, torch.from_numpy(rec["ref_logits"]))
    print(f"[llm] {meta['size']} config: ours with transformers {transformers.__version__} against the reference "
          f"recorded with transformers {meta['reference_transformers']}")
    print(f"  prefix embeddings: max abs diff {diff(prefix[0], torch.from_numpy(rec['ref_prefix']))[0]:.3g}")
    print(f"  prefix logits: max abs diff {la:.3g}, max rel {lr:.3g}")
    print(f"  generation, same seed: reference {len(ref_tokens)} tokens, ours {len(tokens)}: "
          f"{'identical' if tokens == ref_tokens else 'DIFFERENT'} (reference stable: {meta['stable']})")
    if case.get("bistream"):
        bi = run_ours_bistream(ours, inputs, case["sample_seed"])
        print(f"  bistream, same seed: {'identical' if bi == rec['ref_bistream_tokens'].tolist() else 'DIFFERENT'}")
    print(f"  ms per token (CPU): ours {per_token * 1e3:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", help="a FunAudioLLM/CosyVoice checkout (with third_party/Matcha-TTS)")
    src.add_argument("--against", help="a file recorded with --out: compare ours with it, no reference needed")
    ap.add_argument("--size", choices=sorted(CASES), default="small")
    ap.add_argument("--out", help="record inputs and the reference's outputs in this .npz")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    with_reference(args) if args.reference else against(args)


if __name__ == "__main__":
    main()
