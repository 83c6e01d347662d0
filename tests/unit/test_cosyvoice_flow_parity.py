"""Our CosyVoice 2 flow against outputs of the reference implementation (FunAudioLLM/CosyVoice).

``tests/fixtures/cosyvoice/flow_reference.npz`` was written by
``scripts/cosyvoice_reference_flow.py --size small --write-fixture ...``: the reference's own
``CausalMaskedDiffWithXvec`` (its ``UpsampleConformerEncoder``, ``CausalConditionalCFM`` and
``CausalConditionalDecoder`` on Matcha-TTS / diffusers blocks), built from the small configuration
stored in the fixture, loaded with the seeded random weights of ``random_flow_state_dict`` (the
fixture keeps the seed and the SHA-256 of the weights, not the weights), and run on the stored
tokens, prompt mel, speaker embedding and noise. The reference code is not part of this repository.
On the machine that wrote it ours matched bit for bit; the tolerance below is for other machines.

Tolerance, from fp32 rounding (unit roundoff u = 2**-24). Another CPU (other SIMD width, oneDNN /
BLAS blocking, vectorised exp/erf/tanh/sin) rounds each operation differently: a K-term dot
product by up to ~u * sqrt(K / 2) of its magnitude (random-walk of the partial sums' roundings),
K <= 2560 here (the 5 x 512 up-sampling conv). LayerNorms keep every stage at order one, so the
independent errors of D sequential GEMM stages add in quadrature: ~u * sqrt(K / 2) * sqrt(D) of the
output's peak, taken at four sigma. D counts GEMM stages on the longest path: 6 per conformer or
transformer block (projections, scores, softmax x values, output, two feed-forward layers), 2 per
resnet block, 1 per other linear/conv. The mel also sees all Euler steps in sequence (10 estimator
calls after the encoder), and classifier-free guidance scales a velocity error by up to
1 + 2 * 0.7. A wrong weight mapping or formula moves outputs by a sizeable fraction of their peak
(``test_tolerance_rejects_a_wrong_mapping``), orders of magnitude above these bounds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.cosyvoice.random_flow import random_flow, random_flow_state_dict, state_digest

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cosyvoice" / "flow_reference.npz"
U = 2.0 ** -24
ESTIMATOR_INPUTS = ("est_x", "est_mu", "est_t", "est_spks", "est_cond")
MODES = {"offline": dict(streaming=False, finalize=True), "stream": dict(streaming=True, finalize=False)}


@pytest.fixture(scope="module")
def fix() -> dict:
    return dict(np.load(FIX))


@pytest.fixture(scope="module")
def cfg(fix) -> dict:
    return json.loads(str(fix["config"]))


@pytest.fixture(scope="module")
def flow(fix, cfg):
    return random_flow(cfg, seed=int(fix["seed"]))


def depths(cfg: dict) -> dict[str, int]:
    enc, est = cfg["encoder"], cfg["decoder"]["estimator"]
    encoder = 1 + 2 + 6 * enc["num_blocks"] + 1 + 1 + 6 * enc["num_up_blocks"]
    estimator = 2 + (est["num_mid_blocks"] + 2) * (2 + 6 * est["n_blocks"]) + 2 + 2
    return dict(encoder=encoder, estimator=estimator, mel=encoder + 1 + cfg["n_timesteps"] * estimator)


def bound(cfg: dict, what: str, peak: float) -> float:
    """Max abs difference allowed for ``what`` (encoder / estimator / mel) of the given peak."""
    k_max = max(cfg["encoder"]["output_size"] * (2 * cfg["encoder"]["upsample_stride"] + 1),
                cfg["encoder"]["output_size"] * (cfg["pre_lookahead_len"] + 1),
                cfg["encoder"]["linear_units"], cfg["decoder"]["estimator"]["in_channels"] * 3)
    gain = 1 + 2 * cfg["decoder"]["cfm_params"]["inference_cfg_rate"] if what == "mel" else 1.0
    return 4 * U * math.sqrt(k_max / 2) * math.sqrt(depths(cfg)[what]) * gain * peak


def ours(flow, fix: dict, mode: str, device: str = "cpu") -> dict[str, np.ndarray]:
    """Our encoder output, one estimator call and the mel on the fixture's inputs, as float32 NumPy."""
    dt = flow.dtype
    x, mu, t, spks, cond = (torch.from_numpy(fix[k]).to(device, dt) for k in ESTIMATOR_INPUTS)
    kw = MODES[mode]
    with torch.inference_mode():
        tokens = torch.from_numpy(np.concatenate([fix["prompt_token"], fix["token"]], axis=1)).to(device)
        est = flow.decoder.estimator(x, torch.ones(2, 1, x.size(2), device=device, dtype=dt), mu, t, spks, cond,
                                     streaming=kw["streaming"])
        mel = flow.inference(*(torch.from_numpy(fix[k]) for k in ("token", "prompt_token", "prompt_feat", "embedding")),
                             noise=torch.from_numpy(fix["noise"]), **kw)
        return dict(encoder=flow.encode(tokens, **kw).float().cpu().numpy(), estimator=est.float().cpu().numpy(),
                    mel=mel.cpu().numpy())


def test_fixture_weights_regenerate_bit_for_bit(fix, cfg):
    assert state_digest(random_flow_state_dict(cfg, seed=int(fix["seed"]))) == str(fix["weights_sha256"])
    assert cfg["encoder"]["static_chunk_size"] > 0 and cfg["n_timesteps"] == 10


def test_bounds_are_what_the_docstring_says(cfg):
    assert depths(cfg) == dict(encoder=35, estimator=38, mel=416)
    assert bound(cfg, "mel", 1.0) == pytest.approx(4.2e-4, rel=0.02)


@pytest.mark.parametrize("mode", list(MODES))
def test_encoder_estimator_and_mel_match_reference(flow, fix, cfg, mode):
    got = ours(flow, fix, mode)
    for what, value in got.items():
        ref = fix[f"ref_{what}_{mode}"]
        assert value.shape == ref.shape, what
        peak = float(np.abs(ref).max())
        assert peak > 1.0, what  # order-one outputs: the relative bound is meaningful
        diff = float(np.abs(value.astype(np.float64) - ref).max())
        assert diff <= bound(cfg, what, peak), (what, mode, diff, bound(cfg, what, peak))


@pytest.mark.parametrize("first, second", [
    ("encoder.encoders.0.self_attn.pos_bias_u", "encoder.encoders.0.self_attn.pos_bias_v"),
    ("decoder.estimator.mid_blocks.0.1.0.attn1.to_q.weight", "decoder.estimator.mid_blocks.0.1.0.attn1.to_k.weight"),
])
def test_tolerance_rejects_a_wrong_mapping(fix, cfg, first, second):
    """Two keys swapped (plausible mix-ups, one in the encoder, one in the estimator): some compared
    output moves far beyond its bound, so the parity test can fail. (Locally, ten such swaps and sign
    flips moved the encoder or estimator output by 35x to 18000x its bound.)"""
    state = random_flow_state_dict(cfg, seed=int(fix["seed"]))
    state[first], state[second] = state[second], state[first]
    wrong = random_flow(cfg, seed=int(fix["seed"]))
    wrong.load_state_dict(state)
    ratios = {}
    for what, value in ours(wrong, fix, "offline").items():
        ref = fix[f"ref_{what}_offline"]
        ratios[what] = float(np.abs(value - ref).max()) / bound(cfg, what, float(np.abs(ref).max()))
    assert max(ratios.values()) > 10, ratios


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_matches_reference_and_fp16_stays_close(fix, cfg):
    """On CUDA with TF32 off (TF32 keeps 10 mantissa bits, not fp32's 23) the same fp32 bound holds;
    fp16 weights give a float32 mel that follows the fp32 one."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        flow = random_flow(cfg, seed=int(fix["seed"])).cuda()
        for mode in MODES:
            got = ours(flow, fix, mode, "cuda")
            for what, value in got.items():
                ref = fix[f"ref_{what}_{mode}"]
                diff = float(np.abs(value.astype(np.float64) - ref).max())
                assert diff <= bound(cfg, what, float(np.abs(ref).max())), (what, mode, diff)
        half = random_flow(cfg, seed=int(fix["seed"]), dtype=torch.float16).cuda()
        mel16 = ours(half, fix, "stream", "cuda")["mel"]
        ref = fix["ref_mel_stream"]
        assert mel16.dtype == np.float32 and np.isfinite(mel16).all()
        assert np.corrcoef(mel16.ravel(), ref.ravel())[0, 1] > 0.98
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

