"""Our LatentSync networks and audio features against the reference implementation (bytedance/LatentSync).

``tests/fixtures/latentsync/reference_parity.npz`` holds outputs of the reference's own code
(``UNet3DConditionModel``, diffusers' ``DDIMScheduler``, ``DeepCacheSDHelper``, ``Audio2Feature``,
``AlignRestore``, ``LipsyncPipeline``) on seeded random weights in the published architecture (its
small test configuration for the UNet, the published size for Whisper tiny's encoder) and real media,
made by ``scripts/latentsync_reference.py --write-fixture``; the reference code itself is not part
of this repository. Both sides run the same float32 operations in the same order, so on the machine
that wrote the fixture they agree exactly; the tolerances allow for another CPU's kernels (other
vectorisation, no AVX2, oneDNN off), derived per test from fp32 rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.latentsync import audio as AU
from comfyui_digitalhuman.engine.latentsync import random_models as R
from comfyui_digitalhuman.engine.latentsync.ddim import DDIM
from comfyui_digitalhuman.engine.latentsync.unet import FeatureReuse

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "latentsync" / "reference_parity.npz"
EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX))


@pytest.fixture(scope="module")
def unet():
    return R.random_unet(tiny=True, seed=1)


def _inputs(frames: int, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 13, frames, size, size, generator=g)
    audio = torch.randn(2 * frames, 50, 384, generator=g)
    audio[:frames] = 0  # the unconditional half of classifier-free guidance
    return x, audio


def test_unet_step_matches_reference(unet, ref):
    """One forward of the tiny UNet. Bound: ~40 layers of sums over at most 2880 products (3x3x320-ish
    convolutions, 384-wide attention); a reordered fp32 sum errs by about sqrt(n) * eps relative to the
    magnitudes summed, and the group and layer norms keep every layer's magnitude near 1, so the output
    (magnitude ~3) differs by well under 1e-3 between kernels; 1e-4 relative to the output scale is
    still 100x above what was measured across the vectorised and default CPU paths."""
    x, audio = _inputs(16, 8, 123)
    with torch.no_grad():
        got = unet(x, torch.tensor(951), audio)
    want = torch.from_numpy(ref["unet_tiny_out"])
    scale = float(want.abs().max())
    assert torch.allclose(got, want, atol=1e-4 * scale, rtol=0), float((got - want).abs().max())


def _denoise(unet, reuse: FeatureReuse | None):
    g = torch.Generator().manual_seed(9)
    latents = torch.randn(1, 4, 1, 8, 8, generator=g).repeat(1, 1, 16, 1, 1)
    cond = [torch.randn(2, 1, 16, 8, 8, generator=g), torch.randn(2, 4, 16, 8, 8, generator=g),
            torch.randn(2, 4, 16, 8, 8, generator=g)]
    _, audio = _inputs(16, 8, 10)
    sched = DDIM(20)
    with torch.no_grad():
        for j, t in enumerate(sched.timesteps):
            x = torch.cat([torch.cat([latents] * 2)] + cond, dim=1)
            u, c = unet(x, t, audio, reuse=reuse, step_index=j).chunk(2)
            latents = sched.step(u + 1.5 * (c - u), int(t), latents)
    return latents


def test_twenty_ddim_steps_match_reference(unet, ref):
    """20 DDIM steps with guidance 1.5. The sampler multiplies the noise estimate by up to
    sqrt(1 - a) / sqrt(a) ~ 14 at t=951 and random weights make the latents grow to ~50, so the
    per-step UNet rounding (above) accumulates to ~20 x 14 x 1e-4 relative at worst: 3e-3 of the scale."""
    want = torch.from_numpy(ref["ddim20_out"])
    got = _denoise(unet, None)
    assert torch.allclose(got, want, atol=3e-3 * float(want.abs().max()), rtol=0), float((got - want).abs().max())


def test_feature_reuse_matches_deepcache(unet, ref):
    """The same 20 steps with feature reuse against the reference UNet wrapped by DeepCache 0.1.1's
    DeepCacheSDHelper (cache_interval=3, cache_branch_id=0, as the reference's --enable_deepcache);
    same bound as the plain run. The reuse really changes the result (by more than 10x the bound)."""
    want = torch.from_numpy(ref["deepcache20_out"])
    got = _denoise(unet, FeatureReuse(3))
    tol = 3e-3 * float(want.abs().max())
    assert torch.allclose(got, want, atol=tol, rtol=0), float((got - want).abs().max())
    assert float((want - torch.from_numpy(ref["ddim20_out"])).abs().max()) > 10 * tol


def test_feature_reuse_with_interval_one_is_the_plain_run(unet):
    assert torch.equal(_denoise(unet, FeatureReuse(1)), _denoise(unet, None))


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    from comfyui_digitalhuman.model_loaders.latentsync import load_whisper

    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save(R.whisper_checkpoint(seed=2), str(path))
    return load_whisper(path)


def _speech(testdata, name, seconds=None):
    from comfyui_digitalhuman.engine.media.audio_io import load_audio

    wave, _ = load_audio(testdata / name, sample_rate=16000, mono=True)
    x = wave[0].astype(np.float32)
    return x[: int(seconds * 16000)] if seconds else x


@pytest.mark.parametrize("name,seconds,tag", [("yongen.wav", None, ""), ("eng.wav", 33.0, "_long")])
def test_audio_windows_match_reference(whisper, testdata, ref, name, seconds, tag):
    """Per-frame windows of Whisper states (yongen.wav 48 kHz stereo -> 16 kHz mono; 33 s of eng.wav spans
    two 30 s segments). The log-mel (a 400-point FFT, 80 filters, log10) and 4 encoder blocks in fp32
    amount to relative rounding of a few 1e-6 per stage; 2e-4 of the feature scale (~3) covers other
    FFT and GEMM kernels with margin. Frames past the audio's end repeat its last feature frame."""
    feats = AU.AudioFeatures(_speech(testdata, name, seconds), whisper, 25.0)
    n, n_ref = (int(v) for v in ref[f"audio{tag}_frames"])
    assert n == len(feats) and n_ref == n + 2  # ours: floor(seconds x 25); the reference: two more
    got = feats.windows(0, n + 2)[[0, 1, n // 2, n - 1, n + 1]][:, :, ::4]  # the fixture keeps every 4th channel
    want = torch.from_numpy(ref[f"audio{tag}_ref_sel"])
    assert got.shape == (5, 50, 96)
    assert torch.allclose(got, want, atol=2e-4 * float(want.abs().max()), rtol=0), float((got - want).abs().max())


def test_audio_window_indices_follow_the_reference_rule(whisper):
    feats = AU.AudioFeatures(np.zeros(16000, np.float32), whisper, 25.0)  # 1 s: 50 feature frames, 25 video frames
    assert feats.n_features == 50 and len(feats) == 25
    assert feats.feature_indices(0).tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]  # clamped at the start
    assert feats.feature_indices(10).tolist() == list(range(16, 26))
    assert feats.feature_indices(24).tolist() == [44, 45, 46, 47, 48, 49, 49, 49, 49, 49]
    assert torch.isfinite(feats.windows(0, 25)).all()  # silence: the log floor keeps the mel finite
    with pytest.raises(ValueError, match="shorter than one video frame"):
        AU.AudioFeatures(np.zeros(100, np.float32), whisper, 25.0)


def test_mel_filters_are_whispers():
    """librosa's Slaney filters for 16 kHz / 400-point FFT / 80 bands are what Whisper ships (the reference
    check compares them with its mel_filters.npz: equal). Independent facts of that bank: rows sum to the
    Slaney area normalisation, the first filter peaks at bin 1, all filters below 8 kHz."""
    f = AU.mel_filters()
    assert f.shape == (80, 201) and f.dtype == torch.float32
    assert int(f[0].argmax()) == 1 and float(f[:, -1].abs().max()) == 0.0
    assert (f >= 0).all()
