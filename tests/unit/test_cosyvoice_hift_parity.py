"""Our HiFT against outputs of the reference implementation (FunAudioLLM/CosyVoice ace7c47).

``tests/fixtures/cosyvoice/hift_reference.npz`` was written by
``scripts/cosyvoice_reference_hift.py --write-fixtures``: the reference's own ``HiFTGenerator``
(small configuration: ``random_hift.SMALL_OVERRIDES``, weights ``random_hift_state_dict(seed)``,
which are bit-identical on every machine), a Matcha mel of a synthetic clip, ``torch.manual_seed``
before each call, two chunks streamed with the 3840-sample source cache, and the source of a
made-up F0 track. The reference code is not part of this repository. On the machine that wrote it
ours reproduces every array bit for bit; the tolerances below are for any other CPU.

Why the comparison is split in three. The NSF phase is a cumulative sum: 2*pi*480 times the sum
over frames of h*F0/24000 (mod 1), thousands of radians after a fraction of a second. A last-bit
difference in F0 (another CPU's summation order in the F0 convs) therefore moves the phase by
2*pi*480*h/24000 per Hz per frame, far more than the rounding of the vocoder itself. So:

1. F0 predictor: ours on the fixture's mel against the reference's F0;
2. source: ours from the reference's F0 (same noise), bounded by the phase's own rounding;
3. filter: ours decoding the reference's source, bounded by the rounding of the conv stack;
4. end to end: the waveform, with the phase error that the measured F0 difference implies.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.cosyvoice import random_hift as R

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cosyvoice" / "hift_reference.npz"
U = 2.0 ** -24  # fp32 unit roundoff
SR, HOP, HARMONICS = 24000, 480, 9


@pytest.fixture(scope="module")
def ref() -> dict:
    return dict(np.load(FIX))


@pytest.fixture(scope="module")
def model(ref):
    return R.random_hift(R.small_config(), int(ref["seed"]))


def _chunks(ref):
    mel = torch.from_numpy(ref["mel"])
    (a1, b1), (a2, b2) = ref["chunk1_frames"], ref["chunk2_frames"]
    return mel[:, :, a1:b1], mel[:, :, a2:b2]


def f0_tolerance(f0_ref: np.ndarray, model) -> float:
    """Five 3-tap convs and a linear layer; a dot product of n terms summed in another order
    differs by at most n*u*sum|terms|. With n <= 80*3 (the widest, first layer), six layers, and
    the sum of |terms| of the last layer bounded by |F0|'s scale, the F0 moves by at most
    6 * 240 * u * max|F0| (about 0.02 Hz at 200 Hz)."""
    n = model.f0_predictor.condnet[0].in_channels * 3
    return 6 * n * U * float(np.abs(f0_ref).max())


def phase_max(f0: np.ndarray) -> float:
    """The largest accumulated phase (radians) the source reaches for this F0 track."""
    h = np.arange(1, HARMONICS + 1)[:, None]
    rad = np.mod(f0.astype(np.float64)[0][None] * h / SR, 1.0)
    return float(2 * np.pi * HOP * rad.sum(axis=1).max())


def source_tolerance(model, f0: np.ndarray, phase_error: float = 0.0) -> float:
    """|d source| <= sum|w_merge| * 0.1 * |d sin(phase)| + rounding of the merge and tanh.
    Given the same F0 the phase differs only by its own rounding: the cumulative sum is done in
    double by torch on every CPU, and the two linear interpolations and three scalings that
    remain move it by at most 4 ulp of its magnitude; sin adds 2^-22. ``phase_error`` adds what
    an F0 difference contributes."""
    w = float(model.m_source.l_linear.weight.abs().sum())
    dphase = 4 * np.spacing(np.float32(phase_max(f0))) + phase_error
    return w * 0.1 * (float(dphase) + 2.0 ** -22) + 1e-6


def decode_tolerance(model, mel: torch.Tensor, source: torch.Tensor, speech_ref: np.ndarray) -> float:
    """The filter is D = 23 convs deep on its longest path (conv_pre, three times an up-sampling
    plus a 6-conv ResBlock, conv_post; the source branch is no deeper), with at most n = 80*7 terms
    per output (conv_pre). Each layer's result moves by at most n*u of its scale in another
    summation order, so conv_post's output x moves by D*n*u*max|x|; the waveform is an iSTFT of
    exp(x) and sin(x), which turn that absolute error into a relative one of the same size on
    magnitude and phase: |d speech| <= 2*D*n*u*max|x|*max|speech|."""
    seen: dict[str, float] = {}

    def keep(_module, _inputs, out):
        seen["x"] = out.abs().max().item()

    handle = model.conv_post.register_forward_hook(keep)
    try:
        with torch.inference_mode():
            model.decode(mel, source)
    finally:
        handle.remove()
    depth, n = 23, model.conv_pre.in_channels * 7
    return 2 * depth * n * U * seen["x"] * float(np.abs(speech_ref).max()) + 1e-7


def test_the_noise_stream_is_the_references(ref, model):
    """Our generator-driven draws reproduce what ``torch.manual_seed`` gave the reference (same
    three draws, same order, same non-contiguous layout of the sine noise)."""
    for k, (seed, frames) in enumerate(zip(ref["noise_seeds"], (ref["f0_1"].shape[1], ref["f0_2"].shape[1], 10)), 1):
        g = torch.Generator().manual_seed(int(seed))
        ini, noise = model.m_source.draw_noise(1, frames * HOP, g, torch.device("cpu"))
        # uniform draws are integers scaled by a power of two (exact anywhere): one rounding at most
        assert np.allclose(ini.numpy(), ref[f"rand_ini_{k}"], rtol=2 * U, atol=0), "torch.rand differs from the reference's"
        # normal draws (Box-Muller: log, sqrt, cos, products) round in about 8 steps, relative to |x| + 1
        # (log near 1 has an absolute, not a relative, error), and the libm of another CPU may differ
        head = ref[f"noise_{k}_head"]
        assert np.all(np.abs(noise[0, :4].numpy() - head) <= 2 * 8 * U * (np.abs(head) + 1)), "torch's normal stream differs"
        total = float(ref[f"noise_{k}_abs_sum"])  # summed in float64: only the draws' own rounding counts
        assert abs(noise.double().abs().sum().item() - total) <= 2 * 8 * U * (total + noise.numel())


def test_f0_predictor_matches_reference(ref, model):
    m1, m2 = _chunks(ref)
    for mel, f0_ref in ((m1, ref["f0_1"]), (m2, ref["f0_2"])):
        got = model.predict_f0(mel).numpy()
        np.testing.assert_allclose(got, f0_ref, rtol=0, atol=f0_tolerance(f0_ref, model))


def test_source_from_reference_f0_matches_reference(ref, model):
    """Including a made-up F0 track with unvoiced frames (0 Hz and 9 Hz, below the 10 Hz threshold)."""
    cases = [(ref["f0_1"], ref["source_1"], 0), (ref["f0_crafted"], ref["source_crafted"], 2)]
    for f0, src_ref, k in cases:
        seed = int(ref["noise_seeds"][k])
        with torch.inference_mode():
            got = model.source(torch.from_numpy(f0), generator=torch.Generator().manual_seed(seed)).numpy()
        np.testing.assert_allclose(got, src_ref, rtol=0, atol=source_tolerance(model, f0))
    assert (ref["f0_crafted"] <= 10).sum() == 4  # the unvoiced frames really are in the test


def test_filter_decoding_reference_source_matches_reference(ref, model):
    m1, m2 = _chunks(ref)
    for mel, src, sp in ((m1, ref["source_1"], ref["speech_1"]), (m2, ref["source_2"], ref["speech_2"])):
        s = torch.from_numpy(src)
        with torch.inference_mode():
            got = model.decode(mel, s).numpy()
        np.testing.assert_allclose(got, sp, rtol=0, atol=decode_tolerance(model, mel, s, sp))


def _full_tolerances(model, mel, f0_ref, src_ref, speech_ref):
    """End to end, the phase also carries the F0 difference, summed over frames:
    d phase <= 2*pi*480*(9/24000) * sum_t |d F0_t|. The waveform's sensitivity to the source is
    bounded by G = 1: the measured gain of this filter from a random source perturbation to the
    waveform is about 0.08, so G leaves a margin of more than ten."""
    d_f0 = np.abs(model.predict_f0(mel).numpy() - f0_ref).sum()
    dphase = 2 * np.pi * HOP * HARMONICS / SR * d_f0
    tol_src = source_tolerance(model, f0_ref, dphase)
    tol_wave = 1.0 * tol_src + decode_tolerance(model, mel, torch.from_numpy(src_ref), speech_ref)
    return tol_src, tol_wave


def test_end_to_end_and_streamed_chunk_match_reference(ref, model):
    m1, m2 = _chunks(ref)
    speech, source = model.inference(m1, generator=torch.Generator().manual_seed(int(ref["noise_seeds"][0])))
    tol_src, tol_wave = _full_tolerances(model, m1, ref["f0_1"], ref["source_1"], ref["speech_1"])
    np.testing.assert_allclose(source.numpy(), ref["source_1"], rtol=0, atol=tol_src)
    np.testing.assert_allclose(speech.numpy(), ref["speech_1"], rtol=0, atol=tol_wave)
    # the next chunk: 8 cached mel frames in front, the reference's source tail as cache
    cache = torch.from_numpy(ref["source_1"][:, :, -int(ref["source_cache"]):])
    speech2, source2 = model.inference(m2, cache, generator=torch.Generator().manual_seed(int(ref["noise_seeds"][1])))
    assert np.array_equal(source2.numpy()[:, :, :cache.shape[2]], ref["source_2"][:, :, :cache.shape[2]])
    tol_src, tol_wave = _full_tolerances(model, m2, ref["f0_2"], ref["source_2"], ref["speech_2"])
    np.testing.assert_allclose(source2.numpy(), ref["source_2"], rtol=0, atol=tol_src)
    np.testing.assert_allclose(speech2.numpy(), ref["speech_2"], rtol=0, atol=tol_wave)
    # the tolerances are far below the signal: a wrong filter or source would not pass
    assert tol_wave < 0.02 * np.abs(ref["speech_2"]).max()
