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
    np.testing.assert_allclose(got[:, :, :8].numpy(), ref["audio_ref_first8"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(got[12].numpy(), ref["audio_ref_frame12"].astype(np.float32), atol=5e-3, rtol=1e-3)


def test_positional_encoding_matches_reference(ref):
    table = N.positional_encoding(50, 384)
    np.testing.assert_allclose(table[[0, 1, 7, 49]].numpy(), ref["pe_ref_rows_0_1_7_49"], atol=1e-6, rtol=0)


def test_unet_step_matches_reference(ref):
    unet = N.randomize_(N.build_unet(N.TINY_UNET_CONFIG), seed=1)
    g = torch.Generator().manual_seed(123)
    lat = torch.randn(2, 8, 32, 32, generator=g)
    aud = torch.randn(2, 50, 384, generator=g)
    np.testing.assert_allclose(P.predict_latents(unet, lat, aud).numpy(), ref["unet_ref"], atol=1e-5, rtol=0)


def test_vae_encode_mean_and_decode_match_reference(ref, first_frame):
    vae = N.randomize_(N.build_vae(N.TINY_VAE_CONFIG), seed=2)
    crop = P.crop_face(first_frame, BOX)
    lat = P.encode_reference(vae, crop[None])
    np.testing.assert_allclose(lat.numpy(), ref["vae_latents_ref"], atol=1e-5, rtol=0)
    dec = P.decode_faces(vae, torch.from_numpy(ref["vae_latents_ref"][:, :4]))
    assert dec.shape == (1, 256, 256, 3) and dec.dtype == np.uint8
    assert np.abs(dec[0, 96:160, 96:160].astype(int) - ref["vae_decode_ref"].astype(int)).max() <= 1


def test_jaw_blend_matches_reference(ref, first_frame):
    big = cv2.resize(first_frame, (352, 608))
    face = cv2.resize(np.random.RandomState(0).randint(0, 255, (256, 256, 3), np.uint8),
                      (SMALL_BOX[2] - SMALL_BOX[0], SMALL_BOX[3] - SMALL_BOX[1]))
    region = B.blend_region(SMALL_BOX)
    mask = B.region_mask(B.classes_to_mask(ref["class_map"].astype(np.int64), "jaw"), SMALL_BOX, region)
    out = B.paste(big, face, SMALL_BOX, mask, region)
    x0, y0, x1, y1 = region
    np.testing.assert_array_equal(out[y0:y1, x0:x1], ref["blend_frame_ref"])
    outside = np.ones(big.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], big[outside])
