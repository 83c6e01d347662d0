"""The CosyVoice 2 flow: published layout, strict loader, inference semantics, streaming causality.

Networks use seeded random weights in the published key layout (``random_flow``), loaded through
the real strict loader; the full-size checks run on the meta device or on a zero-filled file.
Reference parity is in ``test_cosyvoice_flow_parity.py``.
"""
from __future__ import annotations

import json
import math
import re
import time
import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.cosyvoice import flow as FL
from comfyui_digitalhuman.engine.cosyvoice import masks as M
from comfyui_digitalhuman.engine.cosyvoice.conformer import RelPositionAttention
from comfyui_digitalhuman.engine.cosyvoice.flow_decoder import cosine_time_grid
from comfyui_digitalhuman.engine.cosyvoice.random_flow import (random_flow, random_flow_state_dict, save_random_flow,
                                                                 state_digest)


# Same-machine comparisons of runs whose matrix shapes differ (a truncated sequence against the
# full one) may round differently: 2**-24 per operation, ~sqrt(K/2) for a K-term dot product
# (K <= 2560: the 5 x 512 up-sampling conv), errors adding in quadrature over ~420 sequential
# GEMM stages (encoder + 10 estimator calls), times the CFG gain 1 + 2 * 0.7, four sigma:
# 4 * 6e-8 * 36 * sqrt(420) * 2.4 = 4e-4 of the mel's peak. A leak of a later chunk changes the
# output by a sizeable fraction of the peak (the negative controls below show it).
SAME_MACHINE_REL = 4e-4
# Euler steps where their number does not matter to what a test checks (keeps the tests quick).
STEPS = 3


@pytest.fixture(scope="module")
def small_cfg() -> dict:
    return FL.small_flow_config()


@pytest.fixture(scope="module")
def small_flow(small_cfg):
    return random_flow(small_cfg, seed=3)


def _inputs(cfg: dict, n_prompt: int, n_new: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(token=torch.randint(0, cfg["vocab_size"], (1, n_new), generator=g),
                prompt_token=torch.randint(0, cfg["vocab_size"], (1, n_prompt), generator=g),
                prompt_feat=torch.rand(1, 2 * n_prompt, 80, generator=g) * 13 - 11,
                embedding=torch.randn(1, 192, generator=g))


def _noise(frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- layout and loader

def test_full_size_layout_equals_published_flow_pt(testdata):
    """Built from cosyvoice2.json on the meta device: exactly the 1121 keys and shapes of flow.pt."""
    layouts = testdata.parent / "checkpoints" / "cosyvoice2_layouts.json"
    published = json.loads(layouts.read_text())["flow.pt"]
    model = FL.build_flow(device="meta")
    ours = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}
    assert ours == published["keys"]
    assert len(ours) == 1121
    assert sum(p.numel() for p in model.parameters()) == published["parameter_count"] == 112_549_360
    for part, count in published["parameter_count_by_part"].items():
        assert sum(p.numel() for p in getattr(model, part).parameters()) == count, part
    assert not list(model.buffers())  # "no buffers": the noise and the position table are not in the file


def test_full_size_zero_file_loads_strictly_through_the_loader(tmp_path):
    """A 450 MB flow.pt in the published container (torch.save of the flat dict), zeros except one
    marker value per tensor, goes through load_flow (mmap + meta + assign): every tensor arrives under
    its own key. Writing it takes about a second here, so the real size is used."""
    start = time.perf_counter()
    layout = FL.build_flow(device="meta").state_dict()
    state = {k: torch.zeros(v.shape) for k, v in layout.items()}
    for i, t in enumerate(state.values()):
        t.view(-1)[0] = i + 1
    path = tmp_path / "flow.pt"
    torch.save(state, path)
    del state
    model = FL.load_flow(path)
    loaded = model.state_dict()
    assert list(loaded) == list(layout)
    for i, (key, t) in enumerate(loaded.items()):
        assert t.dtype == torch.float32 and float(t.view(-1)[0]) == i + 1, key
    assert float(sum(t.abs().sum() for t in loaded.values())) == sum(range(1, len(loaded) + 1))
    assert time.perf_counter() - start < 60


def test_loader_names_the_file_and_the_first_bad_key(tmp_path, small_cfg):
    state = random_flow_state_dict(small_cfg, seed=0)
    model = FL.build_flow(small_cfg)
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "encoder.up_layer.conv.bias"},
                    "missing key 'encoder.up_layer.conv.bias' (expected shape [512])"),
        "unexpected": ({**state, "decoder.estimator.extra.weight": torch.zeros(1)},
                       "unexpected key 'decoder.estimator.extra.weight'"),
        "shape": ({**state, "spk_embed_affine_layer.weight": torch.zeros(80, 190)},
                  "key 'spk_embed_affine_layer.weight' has shape [80, 190], the flow expects [80, 192]"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(bad, path)
        with pytest.raises(ValueError) as err:
            FL.load_flow_weights(model, FL.load_flow_state_dict(path), str(path))
        assert str(path) in str(err.value) and message in str(err.value), name
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state}, wrapped)
    with pytest.raises(ValueError, match="wrapped.pt: expected a flat"):
        FL.load_flow_state_dict(wrapped)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="garbage.pt: not a readable PyTorch state dict"):
        FL.load_flow_state_dict(garbage)
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        FL.load_flow_state_dict(tmp_path / "nothere.pt")


def test_random_weights_round_trip_the_published_container(tmp_path, small_cfg):
    path = tmp_path / "flow.pt"
    save_random_flow(path, small_cfg, seed=5)
    model = FL.load_flow(path, small_cfg)
    state = random_flow_state_dict(small_cfg, seed=5)
    assert state_digest(model.state_dict()) == state_digest(state)
    assert state_digest(random_flow_state_dict(small_cfg, seed=6)) != state_digest(state)


# ---------------------------------------------------------------------------- building blocks

def test_chunk_and_pad_masks():
    assert M.chunk_mask(5, 2).int().tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0],
                                                 [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert M.make_pad_mask(torch.tensor([3, 1])).int().tolist() == [[0, 0, 0], [0, 1, 1]]
    full = M.attention_mask(torch.ones(1, 1, 4, dtype=torch.bool), 0)
    assert full.shape == (1, 1, 4)
    bias = M.mask_to_bias(M.attention_mask(torch.ones(1, 1, 3, dtype=torch.bool), 2), torch.float32)
    assert bias[0].tolist() == [[0, 0, -1e10], [0, 0, -1e10], [0, 0, 0]]
    assert torch.isinf(M.mask_to_bias(torch.tensor([False]), torch.float16)).all()


def test_relative_shift_picks_distance_i_minus_j():
    """Scores against distances T-1..-(T-1) (column m = distance T-1-m) become scores against keys."""
    t = 5
    table = torch.arange(2 * 3 * t * (2 * t - 1), dtype=torch.float32).view(2, 3, t, 2 * t - 1)
    got = RelPositionAttention._relative_to_absolute(table)
    want = torch.empty(2, 3, t, t)
    for i in range(t):
        for j in range(t):
            want[:, :, i, j] = table[:, :, i, (t - 1) - (i - j)]
    assert torch.equal(got, want)


def test_cosine_time_grid():
    grid = cosine_time_grid(10, "cosine", torch.device("cpu"), torch.float32)
    want = [1 - math.cos(k / 10 * math.pi / 2) for k in range(11)]
    # float32: k/10, x pi/2, cos (<= 2 ulp in any libm) and 1 - cos: about 6 roundings of values <= 2
    np.testing.assert_allclose(grid.numpy(), want, rtol=0, atol=2 * 6 * 2.0 ** -24 * 2)
    assert np.all(np.diff(grid.numpy()) > 0) and grid[0] == 0


def test_default_noise_is_the_reference_seeded_buffer_and_leaves_the_global_rng_alone(small_cfg):
    """The reference seeds the global generator with 0 and draws [1, 80, 15000] at construction; our
    buffer has the same values (same machine, same kernel) without touching the caller's RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        model = FL.build_flow(small_cfg)
        assert torch.initial_seed() == 1234  # not reseeded (the reference's set_all_random_seed(0) would)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = torch.randn([1, 80, 50 * 300])
    assert model.decoder.rand_noise.shape == (1, 80, 15000)
    assert torch.equal(model.decoder.rand_noise, expected)


# ---------------------------------------------------------------------------- inference semantics

def test_output_lengths_and_dtype(small_flow, small_cfg):
    x = _inputs(small_cfg, n_prompt=3, n_new=9)
    mel = small_flow.inference(**x, n_timesteps=STEPS, streaming=False, finalize=True)
    assert mel.shape == (1, 80, 18) and mel.dtype == torch.float32 and torch.isfinite(mel).all()
    # mid-stream, the last pre_lookahead_len = 3 tokens are look-ahead only: no mel for them
    mel = small_flow.inference(**x, n_timesteps=STEPS, streaming=True, finalize=False)
    assert mel.shape == (1, 80, 2 * (9 - 3))
    no_prompt = small_flow.inference(x["token"], torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 80),
                                     x["embedding"], n_timesteps=STEPS)
    assert no_prompt.shape == (1, 80, 18)


def test_one_euler_step_is_the_guided_velocity(small_flow, small_cfg):
    """n_timesteps=1 from t=0: mel = z + 1.7 v(cond) - 0.7 v(uncond), computed here from the parts:
    mu from the encoder, the prompt mel in the first frames of cond, the unconditioned row all zeros
    but x; only the frames after the prompt are returned."""
    x = _inputs(small_cfg, n_prompt=3, n_new=7)
    noise = _noise(20)
    got = small_flow.inference(**x, n_timesteps=1, noise=noise)
    with torch.inference_mode():
        tokens = torch.cat([x["prompt_token"], x["token"]], 1)
        mu = small_flow.encoder_proj(small_flow.encode(tokens, False, True)).transpose(1, 2)
        spks = small_flow.spk_embed_affine_layer(x["embedding"] / x["embedding"].norm())
        cond = torch.zeros(1, 80, 20)
        cond[:, :, :6] = x["prompt_feat"].transpose(1, 2)
        batch = (noise.repeat(2, 1, 1), torch.ones(2, 1, 20), torch.cat([mu, torch.zeros_like(mu)]), torch.zeros(2),
                 torch.cat([spks, torch.zeros_like(spks)]), torch.cat([cond, torch.zeros_like(cond)]))
        v = small_flow.decoder.estimator(*batch)
        want = noise + (1.7 * v[:1] - 0.7 * v[1:])
    assert got.shape == (1, 80, 14)
    peak = float(want.abs().max())
    assert float((got - want[:, :, 6:]).abs().max()) <= 1e-5 * peak
    assert float((want[:, :, 6:] - noise[:, :, 6:]).abs().max()) > 0.1  # the step did move the noise


def test_euler_steps_follow_the_cosine_grid(small_flow, small_cfg):
    """Three steps by hand with the reference's accumulation of t."""
    x = _inputs(small_cfg, n_prompt=2, n_new=6, seed=4)
    frames = 16
    noise = _noise(frames, seed=2)
    got = small_flow.inference(**x, n_timesteps=3, noise=noise)
    grid = [1 - math.cos(k / 3 * math.pi / 2) for k in range(4)]
    with torch.inference_mode():
        tokens = torch.cat([x["prompt_token"], x["token"]], 1)
        mu = small_flow.encoder_proj(small_flow.encode(tokens, False, True)).transpose(1, 2)
        spks = small_flow.project_speaker(x["embedding"])
        cond = torch.zeros(1, 80, frames)
        cond[:, :, :4] = x["prompt_feat"].transpose(1, 2)
        z = noise.clone()
        for k in range(3):
            v = small_flow.decoder.estimator(z.repeat(2, 1, 1), torch.ones(2, 1, frames),
                                             torch.cat([mu, 0 * mu]), torch.full((2,), grid[k]),
                                             torch.cat([spks, 0 * spks]), torch.cat([cond, 0 * cond]))
            z = z + (grid[k + 1] - grid[k]) * (1.7 * v[:1] - 0.7 * v[1:])
    assert float((got - z[:, :, 4:]).abs().max()) <= 1e-4 * float(z.abs().max())


def test_default_n_timesteps_comes_from_the_config(small_cfg):
    cfg = json.loads(json.dumps(small_cfg))
    cfg["n_timesteps"] = 2
    model = random_flow(cfg, seed=3)
    x = _inputs(cfg, 2, 5)
    noise = _noise(14)
    assert torch.equal(model.inference(**x, noise=noise), model.inference(**x, noise=noise, n_timesteps=2))
    assert not torch.equal(model.inference(**x, noise=noise), model.inference(**x, noise=noise, n_timesteps=3))
    assert FL.flow_config()["n_timesteps"] == 10


def test_determinism_and_noise(small_flow, small_cfg):
    x = _inputs(small_cfg, n_prompt=2, n_new=6)
    noise = _noise(16)
    a = small_flow.inference(**x, n_timesteps=STEPS, noise=noise)
    assert torch.equal(a, small_flow.inference(**x, n_timesteps=STEPS, noise=noise))
    assert not torch.allclose(a, small_flow.inference(**x, n_timesteps=STEPS, noise=_noise(16, seed=9)), atol=1e-3)
    # only the first T frames of a longer noise are used; the default is the fixed buffer
    longer = torch.cat([noise, _noise(50, seed=7)], dim=2)
    assert torch.equal(a, small_flow.inference(**x, n_timesteps=STEPS, noise=longer))
    assert torch.equal(small_flow.inference(**x, n_timesteps=STEPS),
                       small_flow.inference(**x, n_timesteps=STEPS, noise=small_flow.decoder.rand_noise))


def test_speaker_embedding_is_normalised(small_flow, small_cfg):
    x = _inputs(small_cfg, n_prompt=2, n_new=5)
    noise = _noise(14)
    a = small_flow.inference(**x, n_timesteps=STEPS, noise=noise)
    b = small_flow.inference(**{**x, "embedding": 7.5 * x["embedding"]}, n_timesteps=STEPS, noise=noise)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    c = small_flow.inference(**{**x, "embedding": torch.randn(1, 192)}, n_timesteps=STEPS, noise=noise)
    assert float((a - c).abs().max()) > 1e-2


def test_lookahead_tokens_are_context_not_output(small_flow, small_cfg):
    """finalize=False: changing the 3 look-ahead tokens changes the mel of the tokens before them
    (they are context), yet no frame is produced for them. finalize=True on the same tokens gives
    mel for all of them instead, and a look-ahead of zeros at the end."""
    x = _inputs(small_cfg, n_prompt=4, n_new=11)
    noise = _noise(30)
    a = small_flow.inference(**x, n_timesteps=STEPS, streaming=True, finalize=False, noise=noise)
    other = x["token"].clone()
    other[0, -3:] = (other[0, -3:] + 17) % small_cfg["vocab_size"]
    b = small_flow.inference(**{**x, "token": other}, n_timesteps=STEPS, streaming=True, finalize=False, noise=noise)
    assert a.shape == b.shape == (1, 80, 16)
    assert float((a - b).abs().max()) > 1e-2
    # ... but only from the chunk of the tokens whose look-ahead they are: they are absolute tokens
    # 12..14, the look-ahead of tokens 9..11, in chunk 2 (tokens 8..11, 4 per chunk); the prompt is
    # chunk 0, so the frames of chunk 1 (new-token frames 0..7) must not move
    assert float((a - b)[:, :, :8].abs().max()) <= SAME_MACHINE_REL * float(a.abs().max())
    full = small_flow.inference(**x, n_timesteps=STEPS, streaming=True, finalize=True, noise=noise)
    assert full.shape == (1, 80, 22)


def test_streaming_chunks_do_not_see_later_tokens(small_flow, small_cfg):
    """The reference's own streaming check: with chunk masks, the mel of each finished chunk (4 tokens
    here) computed from a prefix of the tokens (plus 3 look-ahead tokens) equals the mel of the whole
    utterance for those frames. Without streaming, attention spans everything and it does not."""
    chunk, lookahead = small_cfg["encoder"]["static_chunk_size"], small_cfg["pre_lookahead_len"]
    x = _inputs(small_cfg, n_prompt=chunk, n_new=5 * chunk, seed=6)  # prompt = one whole chunk
    noise = _noise(2 * 6 * chunk)
    whole = small_flow.inference(**x, n_timesteps=STEPS, streaming=True, finalize=True, noise=noise)
    peak = float(whole.abs().max())
    for end in range(chunk, 5 * chunk, chunk):
        part = small_flow.inference(**{**x, "token": x["token"][:, :end + lookahead]}, n_timesteps=STEPS,
                                    streaming=True, finalize=False, noise=noise)
        assert part.shape == (1, 80, 2 * end)
        assert float((part - whole[:, :, :2 * end]).abs().max()) <= SAME_MACHINE_REL * peak, end
    offline = small_flow.inference(**x, n_timesteps=STEPS, streaming=False, finalize=True, noise=noise)
    part = small_flow.inference(**{**x, "token": x["token"][:, :chunk + lookahead]}, n_timesteps=STEPS,
                                streaming=False, finalize=False, noise=noise)
    assert float((part - offline[:, :, :2 * chunk]).abs().max()) > 100 * SAME_MACHINE_REL * peak


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_give_float32_mel_close_to_fp32(small_cfg, dtype):
    """Weights cast to bf16/fp16: inputs follow the weights, the chunk-mask bias (-1e10, -inf in
    fp16) stays finite in the output, and the mel is float32 and near the fp32 result (half
    precision keeps 8 / 11 bits, so only a loose agreement is expected)."""
    model32 = random_flow(small_cfg, seed=3)
    model = random_flow(small_cfg, seed=3, dtype=dtype)
    x = _inputs(small_cfg, n_prompt=4, n_new=8)
    noise = _noise(24)
    for streaming, finalize in ((False, True), (True, False)):
        ref = model32.inference(**x, n_timesteps=STEPS, streaming=streaming, finalize=finalize, noise=noise)
        got = model.inference(**x, n_timesteps=STEPS, streaming=streaming, finalize=finalize, noise=noise)
        assert got.dtype == torch.float32 and got.shape == ref.shape and torch.isfinite(got).all()
        corr = np.corrcoef(got.flatten().numpy(), ref.flatten().numpy())[0, 1]
        assert corr > 0.98, (dtype, streaming, corr)


def test_progress_and_cancel(small_flow, small_cfg):
    x = _inputs(small_cfg, 2, 4)
    seen = []
    small_flow.inference(**x, n_timesteps=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Cancelled(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        small_flow.inference(**x, check_interrupt=interrupt)
    assert len(calls) == 2


def test_bad_inputs_are_named(small_flow, small_cfg):
    x = _inputs(small_cfg, 2, 6)
    bad = {
        "token must be [1, N]": {**x, "token": x["token"][0]},
        "token must hold integer ids": {**x, "token": x["token"].float()},
        "token holds id 64, outside the 64 speech tokens": {**x, "token": torch.full((1, 6), 64)},
        "prompt_feat must be [1, frames, 80]": {**x, "prompt_feat": x["prompt_feat"].transpose(1, 2)},
        "embedding must be [1, 192]": {**x, "embedding": torch.randn(1, 80)},
        "prompt_feat has 40 frames, more than the 16": {**x, "prompt_feat": torch.zeros(1, 40, 80)},
    }
    for message, kwargs in bad.items():
        with pytest.raises((ValueError, TypeError), match=re.escape(message)):
            small_flow.inference(**kwargs)
    few = {**x, "token": x["token"][:, :1], "prompt_token": x["prompt_token"][:, :0], "prompt_feat": torch.zeros(1, 0, 80)}
    with pytest.raises(ValueError, match="1 tokens leave nothing to decode before the 3 look-ahead tokens"):
        small_flow.inference(**few, finalize=False)
    with pytest.raises(ValueError, match="flow noise: 10 frames cover at most that many mel frames; this call needs 16"):
        small_flow.inference(**x, noise=_noise(10))
    with pytest.raises(ValueError, match=r"flow noise: expected \[1, 80, frames\]"):
        small_flow.inference(**x, noise=torch.zeros(80, 16))


def test_config_errors_name_the_entry(small_cfg):
    cfg = json.loads(json.dumps(small_cfg))
    cfg["decoder"]["estimator"]["channels"] = [64, 64]
    with pytest.raises(ValueError, match=r"flow.decoder.estimator.channels: only one U-Net level"):
        FL.build_flow(cfg)
    cfg = json.loads(json.dumps(small_cfg))
    cfg["encoder"]["pos_enc_layer_type"] = "rel_pos"
    with pytest.raises(ValueError, match="flow.encoder.pos_enc_layer_type"):
        FL.build_flow(cfg)
