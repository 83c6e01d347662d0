"""CosyVoice 2's Qwen2LM: the published layout, the strict loader, step decoding, sampling and its rules."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from comfyui_digitalhuman.engine.cosyvoice import llm as L
from comfyui_digitalhuman.engine.cosyvoice import random_llm as R
from comfyui_digitalhuman.engine.cosyvoice import sampling as S
from comfyui_digitalhuman.engine.cosyvoice.config import load_config


@pytest.fixture(scope="module")
def layout(testdata) -> dict:
    path = testdata.parent / "checkpoints" / "cosyvoice2_layouts.json"
    return json.loads(path.read_text())["llm.pt"]


@pytest.fixture(scope="module")
def small():
    return R.small_llm_config()


def _model(small, seed: int = 3, bias: dict[int, float] | None = None, constant: bool = False) -> L.Qwen2LM:
    """A small random model through the real loader; ``bias`` is added to the decoder's bias (to make
    chosen extra tokens certain or impossible); ``constant`` zeroes the decoder's weight, so every
    step's logits are exactly the bias: constructed logits, through real weights."""
    state = R.random_llm_state_dict(*small, seed=seed, decoder_gain=3.0)
    if constant:
        state["llm_decoder.weight"] = torch.zeros_like(state["llm_decoder.weight"])
        state["llm_decoder.bias"] = torch.zeros_like(state["llm_decoder.bias"])
    for i, v in (bias or {}).items():
        state["llm_decoder.bias"][i] += v
    return L.load_llm(state, *small)


@pytest.fixture(scope="module")
def small_model(small):
    """Random weights where the two extra tokens besides eos (which stop decoding at once, even before
    min_len) are impossible, so sequences have the length the test asks for."""
    return _model(small, bias={62: -50.0, 63: -50.0})


def _tokens(n: int, high: int, seed: int) -> torch.Tensor:
    return torch.randint(0, high, (1, n), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)


# ----------------------------------------------------------------------------- published layout


def test_full_size_network_has_exactly_the_published_keys_and_shapes(layout):
    model = L.build_llm_on_meta()
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = {k: v[0] for k, v in layout["keys"].items()}
    assert len(want) == 295 and got == want
    assert list(got) == list(want)  # same order as the file
    distinct = {id(p): p.numel() for p in model.parameters()}
    assert sum(distinct.values()) == layout["parameter_count"] == 505_803_812
    assert model.llm.model.lm_head.weight is model.llm.model.model.embed_tokens.weight  # tied
    assert not any("inv_freq" in k for k in got)


def test_full_size_file_in_the_published_container_loads_strictly(tmp_path):
    """A flat ``torch.save`` dict with every published key at its full shape, through the real loader.
    Each tensor is one float broadcast to its shape (stride 0), so the 2 GB layout is a file of a few
    hundred kB; the lm_head / embed_tokens pair is one tensor, as in the published file. Each key gets
    its own value, so a key assigned to the wrong parameter would show."""
    keys = list(L.build_llm_on_meta().state_dict().items())
    state, value = {}, {}
    for i, (k, t) in enumerate(keys):
        if k == "llm.model.lm_head.weight":
            state[k], value[k] = state["llm.model.model.embed_tokens.weight"], value["llm.model.model.embed_tokens.weight"]
        else:
            state[k], value[k] = torch.full((1,), float(i + 1)).expand(t.shape), float(i + 1)
    path = tmp_path / "llm.pt"
    torch.save(state, str(path))
    assert path.stat().st_size < 2_000_000

    model = L.load_llm(path)
    loaded = model.state_dict()
    assert list(loaded) == [k for k, _ in keys]
    for k, t in keys:
        assert loaded[k].shape == t.shape and float(loaded[k][(0,) * t.ndim]) == value[k], k
    assert model.llm.model.lm_head.weight is model.llm.model.model.embed_tokens.weight
    rot = model.llm.model.model.rotary_emb.inv_freq
    head_dim = 896 // 14
    want = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    assert rot.device.type == "cpu" and rot.dtype == torch.float32
    torch.testing.assert_close(rot.double(), want, rtol=1e-6, atol=0)
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))


def test_rotary_embedding_uses_the_configured_theta(small_model):
    """The config's rope_theta (1e6) must reach the rotary embedding in every transformers version
    (5.x moved it into rope_parameters); inv_freq_i = theta ** (-2i / head_dim)."""
    head_dim = 64 // 4
    want = 1e6 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    torch.testing.assert_close(small_model.llm.model.model.rotary_emb.inv_freq.double(), want, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- loader errors


@pytest.fixture()
def small_file(small, tmp_path) -> tuple[Path, dict]:
    state = R.random_llm_state_dict(*small, seed=1)
    path = tmp_path / "llm.pt"
    torch.save(state, str(path))
    return path, state


def test_small_file_round_trips_through_the_loader(small, small_file):
    path, state = small_file
    model = L.load_llm(path, *small)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.llm.model.lm_head.weight is model.llm.model.model.embed_tokens.weight


def test_untied_file_loads_lm_heads_values_into_both_as_the_reference(small, small_file):
    """Were the two tied keys different in a file, the reference's copying strict load writes
    ``lm_head.weight`` last into the one shared tensor: text embeddings then use those values."""
    _, state = small_file
    state = dict(state)
    state["llm.model.model.embed_tokens.weight"] = torch.zeros_like(state["llm.model.lm_head.weight"])
    model = L.load_llm(state, *small)
    assert model.llm.model.lm_head.weight is model.llm.model.model.embed_tokens.weight
    assert torch.equal(model.llm.model.model.embed_tokens.weight, state["llm.model.lm_head.weight"])


@pytest.mark.parametrize("change, needle", [
    ("drop", "missing key 'llm.model.model.layers.1.mlp.up_proj.weight'"),
    ("extra", "unexpected key 'llm.model.model.layers.9.mlp.up_proj.weight'"),
    ("shape", "key 'llm_decoder.weight' has shape [63, 64] but Qwen2LM needs [64, 64]"),
    ("int", "key 'speech_embedding.weight' holds torch.int64"),
])
def test_bad_files_fail_naming_the_file_and_the_key(small, small_file, tmp_path, change, needle):
    _, state = small_file
    state = dict(state)
    if change == "drop":
        del state["llm.model.model.layers.1.mlp.up_proj.weight"]
    elif change == "extra":
        state["llm.model.model.layers.9.mlp.up_proj.weight"] = torch.zeros(128, 64)
    elif change == "shape":
        state["llm_decoder.weight"] = state["llm_decoder.weight"][:63]
    else:
        state["speech_embedding.weight"] = torch.zeros(64, 64, dtype=torch.int64)
    bad = tmp_path / "bad_llm.pt"
    torch.save(state, str(bad))
    with pytest.raises(ValueError) as err:
        L.load_llm(bad, *small)
    assert str(bad) in str(err.value) and needle in str(err.value)


def test_unreadable_or_foreign_files_fail_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "llm.pt"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        L.load_llm_state_dict(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip" * 100)
    with pytest.raises(ValueError, match="junk.pt: not a readable PyTorch weights file"):
        L.load_llm_state_dict(junk)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {"a": torch.zeros(1)}}, str(wrapped))
    with pytest.raises(ValueError, match="wrapped.pt: expected a flat state dict"):
        L.load_llm_state_dict(wrapped)


# ----------------------------------------------------------------------------- forward and decoding


def test_prefix_is_sos_text_task_id_prompt_speech(small_model):
    text, prompt_text, prompt_speech = _tokens(5, 512, 1), _tokens(3, 512, 2), _tokens(4, 61, 3)
    with torch.inference_mode():
        prefix = small_model.build_prefix(text, prompt_text, prompt_speech)
    emb = small_model.llm.model.model.embed_tokens.weight
    rows = torch.cat([small_model.llm_embedding.weight[0:1], emb[prompt_text[0]], emb[text[0]],
                      small_model.llm_embedding.weight[1:2], small_model.speech_embedding.weight[prompt_speech[0]]])
    assert prefix.shape == (1, 1 + 3 + 5 + 1 + 4, 64)
    assert torch.equal(prefix[0], rows)
    logits = small_model.logits_for_prefix(text, prompt_text, prompt_speech)
    assert logits.shape == (14, 64) and logits.dtype == torch.float32
    # no prompt at all: sos, text, task id
    assert small_model.logits_for_prefix(text).shape == (1 + 5 + 1, 64)


def test_cached_steps_equal_one_forward_over_the_whole_sequence(small_model):
    """Each token's scores from KV-cached decoding equal those of one uncached causal forward over
    prefix + the tokens before it. Same weights, same sums in another grouping: fp32 rounding of
    a 2-layer width-64 network with O(10) logits stays far below 1e-4."""
    text, pt, ps = _tokens(4, 512, 4), _tokens(2, 512, 5), _tokens(6, 61, 6)
    seen = []
    real = small_model.decode_scores

    def record(hidden):
        out = real(hidden)
        seen.append(out.clone())
        return out

    small_model.decode_scores = record
    try:
        tokens = list(small_model.inference(text, pt, ps, generator=torch.Generator().manual_seed(0), max_ratio=3))
    finally:
        del small_model.decode_scores
    assert len(seen) >= len(tokens) >= 1
    with torch.inference_mode():
        seq = torch.cat([small_model.build_prefix(text, pt, ps),
                         small_model.speech_embedding.weight[tokens].unsqueeze(0)], dim=1)
        full = small_model.llm.model.model(inputs_embeds=seq, use_cache=False).last_hidden_state
        want = small_model.decode_scores(full[0])
    n_prefix = 1 + 2 + 4 + 1 + 6
    for i in range(len(tokens)):
        torch.testing.assert_close(seen[i], want[n_prefix - 1 + i], rtol=0, atol=1e-4)


def test_same_seed_same_tokens_other_seed_other_tokens(small_model):
    text, pt, ps = _tokens(6, 512, 7), _tokens(3, 512, 8), _tokens(5, 61, 9)

    def run(seed):
        return list(small_model.inference(text, pt, ps, generator=torch.Generator().manual_seed(seed), max_ratio=4))

    first = run(11)
    assert first == run(11)
    assert first != run(12)
    assert all(isinstance(t, int) and 0 <= t < 61 for t in first)


def test_tokens_are_yielded_one_step_at_a_time(small_model):
    """A consumer gets each token after exactly one more network step: nothing is computed ahead."""
    calls = []
    real = small_model.llm.forward_one_step

    def counting(embeds, cache):
        calls.append(embeds.shape[1])
        return real(embeds, cache)

    small_model.llm.forward_one_step = counting
    try:
        gen = small_model.inference(_tokens(5, 512, 1), None, _tokens(3, 61, 2),
                                    generator=torch.Generator().manual_seed(5), min_ratio=2, max_ratio=4)
        assert calls == []
        next(gen)
        assert calls == [1 + 5 + 1 + 3]  # the whole prefix once
        for k in range(2, 6):
            next(gen)
            assert calls[1:] == [1] * (k - 1)  # then one new position per token
        gen.close()
    finally:
        del small_model.llm.forward_one_step


def _constant_head(small, bias: dict[int, float]) -> L.Qwen2LM:
    return _model(small, seed=2, bias=bias, constant=True)


def test_eos_is_ignored_before_min_len_and_ends_decoding_after(small):
    model = _constant_head(small, {61: 50.0, 62: -50.0, 63: -50.0})  # eos all but certain
    text = _tokens(3, 512, 1)
    tokens = list(model.inference(text, generator=torch.Generator().manual_seed(0)))
    assert len(tokens) == int(3 * load_config()["inference"]["min_token_text_ratio"]) == 6
    assert all(0 <= t < 61 for t in tokens)
    assert len(list(model.inference(text, generator=torch.Generator().manual_seed(0), min_ratio=1.5))) == 4
    assert list(model.inference(text, generator=torch.Generator().manual_seed(0), min_ratio=0)) == []


def test_max_len_bounds_decoding_without_eos(small):
    model = _constant_head(small, {61: -50.0, 62: -50.0, 63: -50.0})
    text = _tokens(3, 512, 1)
    assert len(list(model.inference(text, generator=torch.Generator().manual_seed(0)))) == 3 * 20
    assert len(list(model.inference(text, generator=torch.Generator().manual_seed(0), max_ratio=2.5))) == 7
    assert list(model.inference(text[:, :0], generator=torch.Generator().manual_seed(0))) == []  # no text, no speech


def test_other_stop_tokens_stop_even_before_min_len(small):
    """As the reference: only eos is masked before min_len; the other extra tokens always stop."""
    for stop in (62, 63):
        model = _constant_head(small, {61: -50.0, 62: -50.0, 63: -50.0, stop: 50.0})
        assert list(model.inference(_tokens(3, 512, 1), generator=torch.Generator().manual_seed(0))) == []


def test_bad_token_inputs_are_refused_by_name(small_model):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"text_tokens: token ids must lie in \[0, 512\)"):
        list(small_model.inference(torch.tensor([[3, 600]]), generator=g))
    with pytest.raises(ValueError, match=r"prompt_speech_tokens: token ids must lie in \[0, 61\)"):
        list(small_model.inference(torch.tensor([[3]]), None, torch.tensor([[61]]), generator=g))
    with pytest.raises(ValueError, match="prompt_text_tokens: expected integer token ids"):
        list(small_model.inference(torch.tensor([[3]]), torch.tensor([[1.0]]), generator=g))
    with pytest.raises(ValueError, match=r"text_tokens: expected token ids of shape \[1, N\]"):
        list(small_model.inference(torch.zeros(2, 3, dtype=torch.long), generator=g))


def test_half_precision_keeps_the_api_and_float32_scores(small):
    """bf16 weights: same calls, int tokens, float32 logits near the fp32 ones. bf16 keeps 8 bits of
    mantissa (relative rounding 2**-9 per value); through 2 layers of width 64 the logit error stays
    within a few percent of the logit scale, so 0.1 x max|logit| is a safe bound that a wrong cast
    (garbage, or scores not in float32) would exceed."""
    text, ps = _tokens(4, 512, 1), _tokens(5, 61, 2)
    f32 = _model(small, seed=4, bias={62: -50.0, 63: -50.0})
    b16 = L.load_llm(f32.state_dict(), *small, dtype=torch.bfloat16)
    assert b16.llm_decoder.weight.dtype == torch.bfloat16
    assert b16.llm.model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert b16.llm.model.lm_head.weight is b16.llm.model.model.embed_tokens.weight
    ref, got = f32.logits_for_prefix(text, None, ps), b16.logits_for_prefix(text, None, ps)
    assert got.dtype == torch.float32
    assert float((got - ref).abs().max()) < 0.1 * float(ref.abs().max())
    tokens = list(b16.inference(text, None, ps, generator=torch.Generator().manual_seed(1), max_ratio=3))
    assert tokens and all(isinstance(t, int) and 0 <= t < 61 for t in tokens)


def test_bistream_interleaves_text_and_ends_at_eos(small):
    """Text arriving token by token: the prompt's speech tokens are interleaved 5 text : 15 speech,
    the fill token is forced at the reference's index and never yielded, and decoding ends at eos."""
    model = _constant_head(small, {61: -50.0, 62: -50.0, 63: -50.0})
    feeds = []
    real = model.llm.forward_one_step

    def record(embeds, cache):
        feeds.append(embeds.shape[1])
        return real(embeds, cache)

    model.llm.forward_one_step = record
    text, pt, ps = _tokens(12, 512, 1), _tokens(5, 512, 2), _tokens(17, 61, 3)
    chunks = (text[:, i:i + 1] for i in range(12))
    tokens = list(model.inference_bistream(chunks, pt, ps, generator=torch.Generator().manual_seed(0), max_ratio=3))
    # sos + [5 prompt text, 15 speech] + [5 text, 2 speech] first, then one step per token; the
    # forced fill after 13 tokens waits for 5 more text tokens, fed as one block; at the end the
    # rest of the text with the task id; eos never wins here, so the 3 x 12 bound ends decoding.
    assert feeds[0] == 1 + 20 + 7
    assert all(0 <= t < 61 for t in tokens) and len(tokens) == 36
    assert 5 in feeds[1:]


def test_bistream_stops_at_eos(small):
    model = _constant_head(small, {61: 50.0, 62: -50.0, 63: -50.0})
    text = _tokens(3, 512, 1)
    tokens = list(model.inference_bistream([text], None, None, generator=torch.Generator().manual_seed(0)))
    assert tokens == []  # eos is allowed once the text has ended, and is all but certain


# ----------------------------------------------------------------------------- sampling rules


def test_nucleus_keeps_the_head_reaching_top_p():
    """p = [.5, .2, .15, .1, .05]: the running sum passes 0.8 after three entries, so only 0, 1, 2
    are drawn, in proportion .5 : .2 : .15 of their (unnormalised) mass."""
    scores = torch.tensor([0.2, 0.05, 0.1, 0.15, 0.5]).log()  # shuffled: the sort must find the order
    g = torch.Generator().manual_seed(0)
    draws = [S.nucleus_sampling(scores, 0.8, 25, g) for _ in range(3000)]
    counts = {t: draws.count(t) for t in set(draws)}
    assert set(counts) == {4, 0, 3}
    # binomial standard deviation for 3000 draws is at most 27; allow 5 of them
    for token, p in ((4, 0.5 / 0.85), (0, 0.2 / 0.85), (3, 0.15 / 0.85)):
        assert abs(counts[token] - 3000 * p) < 5 * math.sqrt(3000 * p * (1 - p))


def test_nucleus_caps_at_top_k_in_stable_order():
    scores = torch.zeros(100)  # all equal: the first 25 indices (stable sort), top_p not reached
    g = torch.Generator().manual_seed(1)
    assert {S.nucleus_sampling(scores, 0.8, 25, g) for _ in range(2000)} == set(range(25))


def test_repetition_in_the_window_falls_back_to_the_whole_distribution():
    scores = torch.full((10,), -20.0)
    scores[3] = 0.0  # token 3 is all but certain
    kw = dict(top_p=0.8, top_k=25, win_size=10, generator=torch.Generator().manual_seed(0))
    assert S.ras_sampling(scores, [1, 2], tau_r=0.1, **kw) == 3
    assert S.ras_sampling(scores, [3, 1, 2], tau_r=0.1, **kw) != 3  # 1 >= 10 * 0.1: excluded
    assert S.ras_sampling(scores, [3, 1, 2], tau_r=0.2, **kw) == 3  # needs 2 occurrences
    assert S.ras_sampling(scores, [3, 3, 1], tau_r=0.2, **kw) != 3
    assert S.ras_sampling(scores, [3] + [1] * 10, tau_r=0.1, **kw) == 3  # 3 fell out of the window
    assert float(scores[3]) == 0.0  # the caller's scores are not modified


def test_draws_follow_the_generator_state():
    scores = torch.randn(50, generator=torch.Generator().manual_seed(0))
    a = [S.ras_sampling(scores, [], top_p=0.8, top_k=25, win_size=10, tau_r=0.1, generator=g)
         for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    b = [S.ras_sampling(scores, [], top_p=0.8, top_k=25, win_size=10, tau_r=0.1, generator=g)
         for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    assert a == b
    # the same draw as torch.multinomial on the kept head, from a generator in the same state
    probs, order = scores.softmax(0).sort(descending=True, stable=True)
    kept = int((probs.cumsum(0) < 0.8).sum()) + 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert S.nucleus_sampling(scores, 0.8, 25, g1) == int(order[torch.multinomial(probs[:min(kept, 25)], 1, True,
                                                                                   generator=g2)])
