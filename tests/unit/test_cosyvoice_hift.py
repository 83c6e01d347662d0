"""HiFT (CosyVoice 2 vocoder): published layout, strict loading, shapes, noise, streaming splice,
half precision. Parity with the reference's outputs is in test_cosyvoice_hift_parity.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.cosyvoice import hift as H
from comfyui_digitalhuman.engine.cosyvoice import random_hift as R

SHARED = Path(os.environ.get("DH_SHARED", Path(__file__).resolve().parents[3] / "shared")).resolve()
LAYOUTS = SHARED / "checkpoints" / "cosyvoice2_layouts.json"


@pytest.fixture(scope="module")
def published_layout() -> dict:
    if not LAYOUTS.is_file():
        pytest.fail(f"layout file not found at {LAYOUTS}; set DH_SHARED to the shared folder")
    return json.loads(LAYOUTS.read_text(encoding="utf-8"))["hift.pt"]


@pytest.fixture(scope="module")
def small() -> H.HiFTGenerator:
    return R.random_hift(R.small_config(), seed=3)


def _mel(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(seed)) * 1.5 - 5.0


# -- layout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("naming,key", [("weight_norm", "keys"), ("parametrizations", "keys_if_parametrizations_naming")])
def test_full_size_layout_equals_published_keys_and_shapes(published_layout, naming, key):
    with torch.device("meta"):
        model = H.HiFTGenerator(R.published_config())
    ours = model.published_layout(naming)
    theirs = {k: tuple(v[0]) for k, v in published_layout[key].items()}
    assert list(ours.items()) == list(theirs.items())  # same keys, same shapes, same order
    assert sum(int(np.prod(s)) for s in ours.values()) == published_layout["parameter_count"] == 20_821_295
    assert sum(1 for _ in model.weight_normed_layers()) == 82
    assert all(v[1] == "float32" for v in published_layout[key].values())


def test_random_state_dict_follows_the_layout_in_both_namings():
    cfg = R.small_config()
    a = R.random_hift_state_dict(cfg, seed=5)
    b = R.random_hift_state_dict(cfg, seed=5, naming="parametrizations", prefix="generator.")
    with torch.device("meta"):
        model = H.HiFTGenerator(cfg)
    assert {k: tuple(v.shape) for k, v in a.items()} == model.published_layout("weight_norm")
    assert list(b) == ["generator." + k for k in model.published_layout("parametrizations")]
    for (ka, va), vb in zip(a.items(), b.values()):  # same values whichever naming
        assert torch.equal(va, vb), ka
    assert not torch.equal(a["conv_pre.weight_v"], R.random_hift_state_dict(cfg, seed=6)["conv_pre.weight_v"])


# -- loading ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_file_loads_strictly_in_both_namings_and_with_prefix(tmp_path):
    """A full-size hift.pt (83 MB) in the published container loads through the real loader in
    each naming; all three give the same network (same output on a short mel)."""
    cfg = R.published_config()
    state = R.random_hift_state_dict(cfg, seed=1)
    with torch.device("meta"):
        names = H.HiFTGenerator(cfg).published_layout("parametrizations")
    variants = {
        "weight_norm": state,
        "parametrizations": dict(zip(names, state.values())),
        "generator_prefix": {"generator." + k: v for k, v in state.items()},
    }
    mel = _mel(3)
    outputs = []
    for name, sd in variants.items():
        path = tmp_path / f"{name}.pt"
        torch.save(sd, str(path))
        assert path.stat().st_size > 83_000_000
        model = H.load_hift(path)
        assert not any(p.requires_grad for p in model.parameters())
        outputs.append(model.inference(mel, generator=torch.Generator().manual_seed(0))[0])
        del model
        path.unlink()
    assert outputs[0].shape == (1, 3 * 480)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_weight_norm_is_folded_as_torch_computes_it():
    """Folded weights equal what torch's own weight_norm parametrisation gives (the reference's
    modules), for a Conv1d and a ConvTranspose1d (dim 0 is the input channel there)."""
    cfg = R.small_config()
    state = R.random_hift_state_dict(cfg, seed=2)
    model = H.build_hift(cfg, state)
    from torch.nn.utils.parametrizations import weight_norm

    for name, mod in (("conv_pre", torch.nn.Conv1d(80, 32, 7, padding=3)), ("ups.0", torch.nn.ConvTranspose1d(32, 16, 16, 8, padding=4))):
        ref = weight_norm(mod)
        ref.load_state_dict({"bias": state[f"{name}.bias"], "weight_g": state[f"{name}.weight_g"],
                             "weight_v": state[f"{name}.weight_v"]})
        ours = model.get_submodule(name).weight
        assert torch.equal(ours, ref.weight)
        # and it is g * v / ||v|| with the norm over all but dim 0
        v, g = state[f"{name}.weight_v"].double(), state[f"{name}.weight_g"].double()
        expect = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
        # float32 g * v / ||v||: the sum of K squares (K roundings), sqrt, the division and the product
        k = v.flatten(1).shape[1]
        assert torch.allclose(ours.double(), expect, rtol=2 * (k + 4) * 2.0 ** -24, atol=0)


def _saved(tmp_path, state, name="hift.pt") -> Path:
    path = tmp_path / name
    torch.save(state, str(path))
    return path


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    cfg = R.small_config()
    good = R.random_hift_state_dict(cfg, seed=0)
    missing = dict(good)
    del missing["resblocks.4.convs2.1.weight_v"]
    path = _saved(tmp_path, missing, "missing.pt")
    with pytest.raises(ValueError, match=r"missing\.pt.*missing key 'resblocks\.4\.convs2\.1\.weight_v'"):
        H.build_hift(cfg, H.load_hift_state_dict(path), source=str(path))
    extra = dict(good, **{"m_source.l_linear.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"extra\.pt.*unexpected key 'm_source\.l_linear\.extra'"):
        H.build_hift(cfg, extra, source=str(tmp_path / "extra.pt"))
    shaped = dict(good, **{"conv_post.bias": torch.zeros(17)})
    with pytest.raises(ValueError, match=r"shaped\.pt.*'conv_post\.bias' has shape \[17\].*needs \[18\]"):
        H.build_hift(cfg, shaped, source=str(tmp_path / "shaped.pt"))
    # the published config refuses small weights, naming the first mismatch
    path = _saved(tmp_path, good, "small.pt")
    with pytest.raises(ValueError, match=r"small\.pt: HiFT key 'conv_pre\.bias' has shape \[32\], the network needs \[512\]"):
        H.load_hift(path)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        H.load_hift_state_dict(tmp_path / "nowhere.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file" * 10)
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable PyTorch weights file"):
        H.load_hift_state_dict(junk)
    nested = _saved(tmp_path, {"state_dict": {"a": 1}, "epoch": 3}, "nested.pt")
    with pytest.raises(ValueError, match=r"nested\.pt: not a flat state dict of tensors"):
        H.load_hift_state_dict(nested)


def test_key_normalisation_matches_the_reference_loader():
    t = torch.zeros(1)
    got = H.normalise_hift_keys({
        "generator.conv_pre.parametrizations.weight.original0": t,
        "generator.conv_pre.parametrizations.weight.original1": t,
        "generator.ups.0.weight_g": t,
        "f0_predictor.condnet.0.bias": t,
    })
    assert list(got) == ["conv_pre.weight_g", "conv_pre.weight_v", "ups.0.weight_g", "f0_predictor.condnet.0.bias"]


# -- inference ----------------------------------------------------------------------------------


def test_shapes_range_and_f0(small):
    mel = _mel(20)
    speech, source = small.inference(mel, generator=torch.Generator().manual_seed(0))
    assert speech.shape == (1, 20 * 480) and source.shape == (1, 1, 20 * 480)
    assert speech.dtype == torch.float32 and torch.isfinite(speech).all()
    assert speech.abs().max() <= small.audio_limit
    assert speech.abs().max() > 1e-3  # not silent: the random weights are scaled to make sound
    f0 = small.predict_f0(mel)
    assert f0.shape == (1, 20) and (f0 >= 0).all()
    # the merged source is tanh of a linear map, so inside (-1, 1)
    assert source.abs().max() < 1


def test_seeded_noise_is_reproducible_and_explicit_noise_is_used(small):
    mel = _mel(6)
    a = small.inference(mel, generator=torch.Generator().manual_seed(42))[0]
    b = small.inference(mel, generator=torch.Generator().manual_seed(42))[0]
    c = small.inference(mel, generator=torch.Generator().manual_seed(43))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = small.m_source.draw_noise(1, 6 * 480, torch.Generator().manual_seed(42), torch.device("cpu"))
    assert torch.equal(small.inference(mel, source_noise=noise)[0], a)
    # the global generator is used when none is given, as the reference does
    torch.manual_seed(42)
    assert torch.equal(small.inference(mel)[0], a)
    with pytest.raises(ValueError, match="source_noise"):
        small.inference(mel, source_noise=(torch.zeros(1, 9), torch.zeros(1, 100, 9)))


def test_voiced_threshold_and_noise_amplitudes(small):
    """Frames with F0 <= 10 Hz carry no sines: with zero noise their source is tanh(bias) exactly;
    the noise std is nsf_sigma where voiced and nsf_alpha / 3 where not."""
    f0 = torch.tensor([[0.0, 150.0, 10.0, 200.0, 9.5, 10.5]])
    mask = (f0 > 10).repeat_interleave(480, dim=1)[0]
    with torch.inference_mode():
        quiet = torch.tanh(small.m_source.l_linear.bias)[0]
        s0 = small.source(f0, source_noise=(torch.zeros(1, 9), torch.zeros(1, 6 * 480, 9)))[0, 0]
        assert torch.equal(s0[~mask], quiet.expand(int((~mask).sum())))
        assert (s0[mask] - quiet).abs().max() > 1e-2
        # unit noise on the harmonic with the largest merge weight: the pre-tanh value moves by
        # exactly amplitude * weight (the merge is linear), which atanh recovers in double
        w = small.m_source.l_linear.weight[0]
        k = int(w.abs().argmax())
        unit = torch.zeros(1, 6 * 480, 9)
        unit[:, :, k] = 1.0
        s1 = small.source(f0, source_noise=(torch.zeros(1, 9), unit))[0, 0]
    pre0, pre1 = torch.atanh(s0.double()), torch.atanh(s1.double())
    step = (pre1 - pre0) / w[k].double()
    assert torch.allclose(step[mask], torch.full_like(step[mask], 0.003), rtol=1e-3)
    assert torch.allclose(step[~mask], torch.full_like(step[~mask], 0.1 / 3), rtol=1e-3)


def test_initial_phase_never_reaches_the_output(small):
    """The reference adds its random initial phases to sample 0 only, and the 1/480 linear
    down-sampling reads samples 240k - 1 and 240k: the sines do not depend on them."""
    f0 = small.predict_f0(_mel(5))
    f0_up = torch.nn.functional.interpolate(f0[:, None], scale_factor=480.0, mode="nearest").transpose(1, 2)
    with torch.inference_mode():
        a = small.m_source.sines(f0_up, torch.zeros(1, 9))
        b = small.m_source.sines(f0_up, torch.rand(1, 9, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(a, b)


def test_cache_source_splice_follows_the_reference(small):
    """Streaming: the first S source samples are the cache, the rest is the chunk's own source
    (same noise), the returned source carries the splice, and the waveform is the decode of that
    spliced source."""
    prev_mel, mel = _mel(12, seed=1), _mel(14, seed=2)
    _, prev_source = small.inference(prev_mel, generator=torch.Generator().manual_seed(5))
    cache = prev_source[:, :, -8 * 480:].clone()
    speech, source = small.inference(mel, cache, generator=torch.Generator().manual_seed(6))
    _, plain = small.inference(mel, generator=torch.Generator().manual_seed(6))
    assert torch.equal(source[:, :, :3840], cache)
    assert torch.equal(source[:, :, 3840:], plain[:, :, 3840:])
    with torch.inference_mode():
        assert torch.equal(speech, small.decode(mel, source))
    # an empty cache is no cache
    empty = small.inference(mel, torch.zeros(1, 1, 0), generator=torch.Generator().manual_seed(6))
    assert torch.equal(empty[1], plain)
    with pytest.raises(ValueError, match=r"cache_source must be \[1, 1, <= 6720\]"):
        small.inference(mel, torch.zeros(1, 1, 7000))


def test_bad_mel_is_refused(small):
    with pytest.raises(ValueError, match=r"mel must be \[batch, 80, frames >= 1\], got \[1, 81, 5\]"):
        small.inference(torch.zeros(1, 81, 5))
    with pytest.raises(ValueError, match=r"got \[1, 80, 0\]"):
        small.inference(torch.zeros(1, 80, 0))
    bad = _mel(4)
    bad[0, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        small.inference(bad)


def test_stft_window_is_scipys_periodic_hann():
    from scipy.signal import get_window

    assert torch.equal(H.periodic_hann(16), torch.from_numpy(get_window("hann", 16, fftbins=True).astype(np.float32)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stays_finite_and_close(dtype):
    """The filter runs in half precision, F0/source/iSTFT in fp32: no NaN even for a loud mel,
    and the waveform stays near the fp32 one (bf16 keeps 8 significant bits: a relative error
    of 2^-8 per layer, ~25 layers deep, bounds the difference well below the signal)."""
    cfg = R.small_config()
    ref = R.random_hift(cfg, seed=4)
    half = R.random_hift(cfg, seed=4).set_precision(dtype)
    assert half.conv_pre.weight.dtype == dtype and half.f0_predictor.classifier.weight.dtype == torch.float32
    for mel in (_mel(10), _mel(10) + 12.0, _mel(10) * 20.0):
        g = torch.Generator().manual_seed(0)
        a = ref.inference(mel, generator=g)[0]
        b = half.inference(mel.to(dtype), generator=torch.Generator().manual_seed(0))[0]
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        assert b.abs().max() <= ref.audio_limit
    mel = _mel(10)
    a = ref.inference(mel, generator=torch.Generator().manual_seed(0))[0]
    b = half.inference(mel, generator=torch.Generator().manual_seed(0))[0]
    assert (a - b).abs().max() < 0.25 * a.abs().max()
    assert torch.corrcoef(torch.stack([a[0], b[0]]))[0, 1] > 0.9


def test_snake_half_precision_near_zero_alpha_is_finite():
    snake = H.Snake(4).to(torch.float16)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.0, 1e-9, 1e-6, 1.0]))
    y = snake(torch.linspace(-3, 3, 4 * 7, dtype=torch.float16).view(1, 4, 7))
    assert torch.isfinite(y).all()
    # fp32 is the reference's formula exactly
    s32 = H.Snake(3)
    with torch.no_grad():
        s32.alpha.copy_(torch.tensor([0.5, 1.0, 2.0]))
    x = torch.randn(1, 3, 500, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = s32.alpha.view(1, -1, 1)
        expect = x + (1.0 / (a + 1e-9)) * torch.pow(torch.sin(x * a), 2)
        assert torch.equal(s32(x), expect)  # the in-place form
    with torch.inference_mode():
        assert torch.equal(s32(x), expect)
    y = s32(x.clone().requires_grad_(True))  # with autograd: the out-of-place form, same values
    assert y.requires_grad and torch.equal(y.detach(), expect)
