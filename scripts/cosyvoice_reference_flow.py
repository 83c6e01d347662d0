"""Our CosyVoice 2 flow against the reference implementation, on one machine.

    python scripts/cosyvoice_reference_flow.py --reference DIR            # full size, ~2 min on 2 cores
    python scripts/cosyvoice_reference_flow.py --reference DIR --size small --write-fixture tests/fixtures/cosyvoice/flow_reference.npz

DIR is a checkout of FunAudioLLM/CosyVoice with ``third_party/Matcha-TTS``; it is imported at run
time only and nothing of it is part of this repository. Run with a Python that has the
reference's dependencies (diffusers, einops, omegaconf, onnxruntime, torchaudio, matcha's).

Both sides are built from the ``flow`` section of our ``cosyvoice2.json`` (or the small test
configuration) and get the same seeded random weights (``random_flow_state_dict``, loaded into the
reference with ``strict=True``), the same tokens, prompt mel, speaker embedding and noise (the
reference's ``decoder.rand_noise`` is replaced by ours). Compared, in the non-streaming mode
(``streaming=False, finalize=True``) and the mid-stream mode (``streaming=True, finalize=False``):

- the encoder output (before ``encoder_proj``),
- one call of the decoder's estimator on a guided batch of two,
- the mel of ``inference``,

then, as the reference's own streaming check (``flow.py``'s ``__main__``) and ``token2wav`` call
it, ``inference`` on growing prefixes of the new tokens (one encoder chunk more each time, plus the
look-ahead tokens, ``finalize`` only for the last), and, once, the default noise buffer each side
builds at construction. Printed per comparison: the max abs difference and that difference
relative to the reference's peak magnitude.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401

from comfyui_digitalhuman.engine.cosyvoice import flow as FL  # noqa: E402
from comfyui_digitalhuman.engine.cosyvoice.random_flow import random_flow, random_flow_state_dict, state_digest  # noqa: E402

MODES = {"offline": dict(streaming=False, finalize=True), "stream": dict(streaming=True, finalize=False)}


def import_reference(ref_dir: Path) -> dict[str, Any]:
    if not (ref_dir / "cosyvoice" / "flow" / "flow.py").is_file():
        raise SystemExit(f"--reference {ref_dir}: not a CosyVoice checkout (cosyvoice/flow/flow.py missing)")
    matcha = ref_dir / "third_party" / "Matcha-TTS"
    if not (matcha / "matcha").is_dir():
        raise SystemExit(f"--reference {ref_dir}: third_party/Matcha-TTS is missing (git submodule update --init)")
    sys.path[:0] = [str(ref_dir), str(matcha)]
    from omegaconf import DictConfig
    from cosyvoice.flow.decoder import CausalConditionalDecoder
    from cosyvoice.flow.flow import CausalMaskedDiffWithXvec
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.transformer.upsample_encoder import UpsampleConformerEncoder
    return dict(DictConfig=DictConfig, Decoder=CausalConditionalDecoder, Flow=CausalMaskedDiffWithXvec,
                CFM=CausalConditionalCFM, Encoder=UpsampleConformerEncoder)


def build_reference(ref: dict[str, Any], cfg: dict[str, Any]) -> torch.nn.Module:
    """The reference flow from the reference's own classes, with the constructor arguments of the
    published yaml (our JSON uses its names; keys we added for constants of its code are dropped)."""
    enc = {k: v for k, v in cfg["encoder"].items() if k not in ("num_up_blocks", "upsample_stride")}
    dec = cfg["decoder"]
    estimator = ref["Decoder"](**dec["estimator"])
    decoder = ref["CFM"](in_channels=dec["in_channels"], cfm_params=ref["DictConfig"](dec["cfm_params"]),
                         n_spks=dec["n_spks"], spk_emb_dim=dec["spk_emb_dim"], estimator=estimator)
    flow = ref["Flow"](input_size=cfg["input_size"], output_size=cfg["output_size"], spk_embed_dim=cfg["spk_embed_dim"],
                       output_type=cfg["output_type"], vocab_size=cfg["vocab_size"],
                       input_frame_rate=cfg["input_frame_rate"], only_mask_loss=True,
                       token_mel_ratio=cfg["token_mel_ratio"], pre_lookahead_len=cfg["pre_lookahead_len"],
                       encoder=ref["Encoder"](**enc), decoder=decoder)
    return flow.eval()


def make_inputs(cfg: dict[str, Any], n_prompt: int, n_tokens: int, seed: int) -> dict[str, np.ndarray]:
    """Tokens, a mel-like prompt (log-mel values in [-11, 2]), a speaker embedding, noise for all frames,
    and a guided estimator batch (row 1 unconditioned, as the sampler builds it)."""
    rng = np.random.default_rng(seed)
    frames = (n_prompt + n_tokens) * cfg["token_mel_ratio"]
    mel = cfg["output_size"]
    est_mu = rng.standard_normal((1, mel, frames)).astype(np.float32)
    est_spks = rng.standard_normal((1, mel)).astype(np.float32)
    est_cond = np.zeros((1, mel, frames), np.float32)
    est_cond[:, :, :n_prompt * 2] = rng.uniform(-11, 2, (1, mel, n_prompt * 2))
    zeros = np.zeros_like
    return dict(
        token=rng.integers(0, cfg["vocab_size"], (1, n_tokens)).astype(np.int64),
        prompt_token=rng.integers(0, cfg["vocab_size"], (1, n_prompt)).astype(np.int64),
        prompt_feat=rng.uniform(-11, 2, (1, n_prompt * cfg["token_mel_ratio"], mel)).astype(np.float32),
        embedding=rng.standard_normal((1, cfg["spk_embed_dim"])).astype(np.float32),
        noise=rng.standard_normal((1, mel, frames)).astype(np.float32),
        est_x=np.repeat(rng.standard_normal((1, mel, frames)).astype(np.float32), 2, axis=0),
        est_mu=np.concatenate([est_mu, zeros(est_mu)]),
        est_t=np.full((2,), 0.3, np.float32),
        est_spks=np.concatenate([est_spks, zeros(est_spks)]),
        est_cond=np.concatenate([est_cond, zeros(est_cond)]),
    )


def prefix_calls(cfg: dict[str, Any], n_prompt: int, n_tokens: int) -> list[tuple[int, bool]]:
    """(new tokens passed, finalize) of each streaming call: one encoder chunk more each time plus the
    look-ahead tokens, the first hop padded so that every call ends on a chunk boundary of the whole
    sequence (prompt included), as the reference's ``token2wav`` streaming pads it; the last call
    passes everything with ``finalize``."""
    chunk, lookahead = cfg["encoder"]["static_chunk_size"], cfg["pre_lookahead_len"]
    pad = -n_prompt % chunk
    ends = list(range(pad + chunk, n_tokens - lookahead, chunk))
    return [(end + lookahead, False) for end in ends] + [(n_tokens, True)]


def reference_outputs(flow: torch.nn.Module, x: dict[str, np.ndarray], calls: list[tuple[int, bool]]) -> dict[str, np.ndarray]:
    """The reference's encoder output, estimator output and mel for both modes."""
    T = {k: torch.from_numpy(v) for k, v in x.items()}
    tokens = torch.cat([T["prompt_token"], T["token"]], dim=1)
    n = flow.pre_lookahead_len
    out: dict[str, np.ndarray] = {}
    flow.decoder.rand_noise = T["noise"]
    mask = torch.ones(2, 1, T["est_x"].size(2))
    with torch.inference_mode():
        emb = flow.input_embedding(tokens)
        length = torch.tensor([tokens.size(1)], dtype=torch.int32)
        for mode, kw in MODES.items():
            if kw["finalize"]:
                h, _ = flow.encoder(emb, length, streaming=kw["streaming"])
            else:
                h, _ = flow.encoder(emb[:, :-n], length, context=emb[:, -n:], streaming=kw["streaming"])
            out[f"encoder_{mode}"] = h.numpy()
            out[f"estimator_{mode}"] = flow.decoder.estimator(T["est_x"], mask, T["est_mu"], T["est_t"], T["est_spks"],
                                                              T["est_cond"], streaming=kw["streaming"]).numpy()
            t0 = time.perf_counter()
            mel, _ = flow.inference(token=T["token"].int(), token_len=torch.tensor([T["token"].size(1)], dtype=torch.int32),
                                    prompt_token=T["prompt_token"].int(),
                                    prompt_token_len=torch.tensor([T["prompt_token"].size(1)], dtype=torch.int32),
                                    prompt_feat=T["prompt_feat"],
                                    prompt_feat_len=torch.tensor([T["prompt_feat"].size(1)], dtype=torch.int32),
                                    embedding=T["embedding"], **kw)
            print(f"reference inference {mode}: {1000 * (time.perf_counter() - t0):.0f} ms")
            out[f"mel_{mode}"] = mel.numpy()
        for k, (n_new, finalize) in enumerate(calls):
            tok = T["token"][:, :n_new].int()
            mel, _ = flow.inference(token=tok, token_len=torch.tensor([n_new], dtype=torch.int32),
                                    prompt_token=T["prompt_token"].int(),
                                    prompt_token_len=torch.tensor([T["prompt_token"].size(1)], dtype=torch.int32),
                                    prompt_feat=T["prompt_feat"],
                                    prompt_feat_len=torch.tensor([T["prompt_feat"].size(1)], dtype=torch.int32),
                                    embedding=T["embedding"], streaming=True, finalize=finalize)
            out[f"mel_prefix{k}"] = mel.numpy()
    return out


def our_outputs(flow: FL.CausalMaskedDiffWithXvec, x: dict[str, np.ndarray],
                calls: list[tuple[int, bool]]) -> dict[str, np.ndarray]:
    T = {k: torch.from_numpy(v) for k, v in x.items()}
    tokens = torch.cat([T["prompt_token"], T["token"]], dim=1)
    mask = torch.ones(2, 1, T["est_x"].size(2))
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for mode, kw in MODES.items():
            out[f"encoder_{mode}"] = flow.encode(tokens, **kw).numpy()
            out[f"estimator_{mode}"] = flow.decoder.estimator(T["est_x"], mask, T["est_mu"], T["est_t"], T["est_spks"],
                                                              T["est_cond"], streaming=kw["streaming"]).numpy()
            t0 = time.perf_counter()
            out[f"mel_{mode}"] = flow.inference(T["token"], T["prompt_token"], T["prompt_feat"], T["embedding"],
                                                noise=T["noise"], **kw).numpy()
            print(f"ours      inference {mode}: {1000 * (time.perf_counter() - t0):.0f} ms")
        for k, (n_new, finalize) in enumerate(calls):
            out[f"mel_prefix{k}"] = flow.inference(T["token"][:, :n_new], T["prompt_token"], T["prompt_feat"],
                                                   T["embedding"], streaming=True, finalize=finalize,
                                                   noise=T["noise"]).numpy()
    return out


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    rows = {}
    for key in ref:
        a, b = ours[key].astype(np.float64), ref[key].astype(np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"{key}: shape {a.shape} (ours) != {b.shape} (reference)")
        diff = float(np.abs(a - b).max())
        peak = float(np.abs(b).max())
        rows[key] = dict(shape=list(b.shape), max_abs=diff, ref_peak=peak, max_rel=diff / peak if peak else float("nan"))
        print(f"{key:20s} {str(list(b.shape)):16s} max abs {diff:.3e}  max rel (to peak {peak:.3g}) {diff / peak:.3e}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="CosyVoice checkout with third_party/Matcha-TTS")
    ap.add_argument("--size", choices=("full", "small"), default="full")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="default: 25 (full), 6 (small)")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens; default: 60 (full), 14 (small)")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (inputs use seed + 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-fixture", type=Path, default=None, help="write the npz fixture the unit test reads")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    small = args.size == "small"
    cfg = FL.small_flow_config() if small else FL.flow_config()
    n_prompt = args.prompt_tokens if args.prompt_tokens is not None else (6 if small else 25)
    n_tokens = args.tokens if args.tokens is not None else (14 if small else 60)

    ref_mod = import_reference(args.reference.resolve())
    reference = build_reference(ref_mod, cfg)
    ours = random_flow(cfg, seed=args.seed)
    state = random_flow_state_dict(cfg, seed=args.seed)
    reference.load_state_dict(state, strict=True)
    same_noise = torch.equal(reference.decoder.rand_noise, ours.decoder.rand_noise)
    print(f"size {args.size}: {sum(t.numel() for t in state.values()):,} parameters, {len(state)} keys; "
          f"{n_prompt} prompt + {n_tokens} new tokens; default noise buffers identical: {same_noise}")
    inputs = make_inputs(cfg, n_prompt, n_tokens, args.seed + 1)
    calls = prefix_calls(cfg, n_prompt, n_tokens)
    ref_out = reference_outputs(reference, inputs, calls)
    our_out = our_outputs(ours, inputs, calls)
    rows = compare(our_out, ref_out)
    # the reference's own streaming property, on each side: every mid-stream call reproduces the
    # final call's mel for the chunk it adds (the frames of later chunks do not exist yet)
    ratio, lookahead = cfg["token_mel_ratio"], cfg["pre_lookahead_len"]
    whole = {}
    for side, out in (("reference", ref_out), ("ours", our_out)):
        final, start, worst = out[f"mel_prefix{len(calls) - 1}"], 0, 0.0
        for k, (n_new, _) in enumerate(calls[:-1]):
            end = (n_new - lookahead) * ratio
            worst = max(worst, float(np.abs(out[f"mel_prefix{k}"][:, :, start:end] - final[:, :, start:end]).max()))
            start = end
        whole[side] = worst
        print(f"{side:9s} {len(calls) - 1} mid-stream calls vs the final call, the chunk each adds: max abs {worst:.3e}")
    if args.json:
        args.json.write_text(json.dumps(dict(size=args.size, same_default_noise=same_noise, rows=rows,
                                             prefix_consistency=whole), indent=1))
    if args.write_fixture:
        if not small:
            raise SystemExit("--write-fixture: only the small configuration makes a fixture small enough to commit")
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.write_fixture, config=np.array(json.dumps(cfg)), seed=np.array(args.seed),
                            weights_sha256=np.array(state_digest(state)), **inputs,
                            **{f"ref_{k}": v for k, v in ref_out.items()})
        print(f"wrote {args.write_fixture} ({args.write_fixture.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
