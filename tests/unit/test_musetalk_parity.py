"""Our MuseTalk pieces against outputs of the reference implementation (TMElyralab/MuseTalk).

``tests/fixtures/musetalk/reference_parity.npz`` was produced by running the reference's own
functions (AudioProcessor.get_whisper_chunk, PositionalEncoding, its UNet wrapper, VAE
get_latents_for_unet with the posterior mode / decode_latents, FaceParsing's jaw mode and
blending.get_image) on the same seeded random tiny weights and the same inputs; the reference
code itself is not part of this repository.
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.musetalk import audio as A
from comfyui_digitalhuman.engine.musetalk import blend as B
from comfyui_digitalhuman.engine.musetalk import networks as N
from comfyui_digitalhuman.engine.musetalk import pipeline as P
from rounding import network_atol

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "musetalk" / "reference_parity.npz"
BOX = (250, 380, 470, 640)
SMALL_BOX = (125, 190, 235, 330)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX))


@pytest.fixture(scope="module")
def first_frame(testdata):
    with av.open(str(testdata / "yongen.mp4")) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_audio_windows_match_reference(ref, testdata):
    samples, sr = sf.read(str(testdata / "eng.wav"), dtype="float32", always_2d=True)
    assert sr == 16000
    enc = N.randomize_(N.build_whisper_encoder(N.TINY_WHISPER_CONFIG), seed=11)
    w = A.AudioWindows(A.to_mono_16k(samples[:16000].T, sr), enc, 25)
    got = w.windows(0, len(w))
    assert got.shape == (25, 50, 384)
    # Whisper encoder states (|x| <= 3): a network's fp32 rounding (tests/rounding.py; it was atol=2e-5
    # absolute, 4x above what the scalar kernels gave, 4.9e-6).
    first8 = ref["audio_ref_first8"]
    np.testing.assert_allclose(got[:, :, :8].numpy(), first8, atol=network_atol(first8), rtol=0)
    # frame 12 was stored in float16: its rounding dominates (half an ulp: <= 2**-11 relative, 2**-25
    # absolute below float16's normal range); the bound allows one ulp (2**-10). It was atol=5e-3,
    # rtol=1e-3, five times looser than that.
    frame12 = ref["audio_ref_frame12"].astype(np.float32)
    np.testing.assert_allclose(got[12].numpy(), frame12, atol=network_atol(frame12) + 2.0 ** -24,
                               rtol=2.0 ** -10)


PE_ROWS = [0, 1, 7, 49]


def pe_error(table: np.ndarray, ref: np.ndarray) -> float:
    """Largest difference from the recorded PE rows, as a fraction of what fp32 rounding allows.

    Entry (p, j) is sin or cos of a = p * w_k, w_k = 10000**(-2k/384). In float32, w_k comes from
    exp (within ~1 ulp in any implementation, so two differ by <= 2 eps relative), the product
    p * w_k rounds once more (0.5 ulp each side), and sin/cos add ~1 ulp of a value <= 1. Two
    faithful float32 implementations thus differ by <= 3 eps |a| + 2 eps; the bound is
    4 eps (|a| + 1), eps = 2**-23. The argument grows with the position: at p = 49, ulp(a) is up to
    2**-18, and an AVX2-less CPU's sin/cos (MKL's SSE4.2 path) differed by 1.9e-6 there.
    """
    k = (np.arange(table.shape[1]) // 2) * 2
    arg = np.asarray(PE_ROWS, np.float64)[:, None] * np.exp(-np.log(10000.0) * k / table.shape[1])
    bound = 4 * np.finfo(np.float32).eps * (np.abs(arg) + 1)
    return float((np.abs(table.astype(np.float64) - ref) / bound).max())


def test_positional_encoding_matches_reference(ref):
    table = N.positional_encoding(50, 384)[PE_ROWS].numpy()
    assert pe_error(table, ref["pe_ref_rows_0_1_7_49"]) <= 1


def _pe_numpy(dtype, swap: bool = False, base: float = 10000.0) -> np.ndarray:
    """The PE rows computed by numpy (its own exp/sin/cos) in ``dtype``, optionally with a bug."""
    k = np.arange(0, 384, 2, dtype=dtype) * dtype(-np.log(base) / 384)
    arg = np.asarray(PE_ROWS, dtype)[:, None] * np.exp(k)
    out = np.zeros((len(PE_ROWS), 384), dtype)
    out[:, 0::2], out[:, 1::2] = (np.cos(arg), np.sin(arg)) if swap else (np.sin(arg), np.cos(arg))
    return out.astype(np.float32)


def test_positional_encoding_bound_admits_other_faithful_math_and_fails_a_wrong_table(ref):
    """Other correct float32 (numpy's libm) or correctly rounded (float64) tables pass; a 1e-6
    absolute tolerance failed them (up to 6.8e-6 at p = 49). A wrong table is far outside."""
    want = ref["pe_ref_rows_0_1_7_49"]
    assert pe_error(_pe_numpy(np.float32), want) <= 1
    assert pe_error(_pe_numpy(np.float64), want) <= 1
    assert pe_error(_pe_numpy(np.float32, swap=True), want) > 1000
    assert pe_error(_pe_numpy(np.float32, base=9999.0), want) > 1


def test_unet_step_matches_reference(ref):
    unet = N.randomize_(N.build_unet(N.TINY_UNET_CONFIG), seed=1)
    g = torch.Generator().manual_seed(123)
    lat = torch.randn(2, 8, 32, 32, generator=g)
    aud = torch.randn(2, 50, 384, generator=g)
    # a network's fp32 rounding (tests/rounding.py); the former atol=1e-5 was only 2x what the scalar
    # kernels gave (5.1e-6 at |x| <= 2.3)
    np.testing.assert_allclose(P.predict_latents(unet, lat, aud).numpy(), ref["unet_ref"],
                               atol=network_atol(ref["unet_ref"]), rtol=0)


def test_vae_encode_mean_and_decode_match_reference(ref, first_frame):
    vae = N.randomize_(N.build_vae(N.TINY_VAE_CONFIG), seed=2)
    crop = P.crop_face(first_frame, BOX)
    lat = P.encode_reference(vae, crop[None])
    # 0.18215 x the encoder's mean: a network's fp32 rounding (tests/rounding.py, scale 1) times 0.18215
    # is 3.6e-6; 1e-5 (measured <= 1.9e-7 on every CPU path)
    np.testing.assert_allclose(lat.numpy(), ref["vae_latents_ref"], atol=1e-5, rtol=0)
    dec = P.decode_faces(vae, torch.from_numpy(ref["vae_latents_ref"][:, :4]))
    assert dec.shape == (1, 256, 256, 3) and dec.dtype == np.uint8
    # uint8 after rounding: fp32 noise can flip a value sitting at a .5 boundary by one level, never by
    # two (that takes an error of 1/255 in the float image, ~1e4 times a network's rounding)
    assert np.abs(dec[0, 96:160, 96:160].astype(int) - ref["vae_decode_ref"].astype(int)).max() <= 1


def test_jaw_blend_matches_reference(ref, first_frame):
    big = cv2.resize(first_frame, (352, 608))
    face = cv2.resize(np.random.RandomState(0).randint(0, 255, (256, 256, 3), np.uint8),
                      (SMALL_BOX[2] - SMALL_BOX[0], SMALL_BOX[3] - SMALL_BOX[1]))
    region = B.blend_region(SMALL_BOX)
    mask = B.region_mask(B.classes_to_mask(ref["class_map"].astype(np.int64), "jaw"), SMALL_BOX, region)
    out = B.paste(big, face, SMALL_BOX, mask, region)
    x0, y0, x1, y1 = region
    # exact: the whole path is integer or fixed-point (OpenCV's morphology, 8-bit resize and 8-bit
    # GaussianBlur are bit-exact by design, PIL resamples and pastes uint8 in fixed point), so no CPU's
    # float rounding enters
    np.testing.assert_array_equal(out[y0:y1, x0:x1], ref["blend_frame_ref"])
    outside = np.ones(big.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], big[outside])
