"""MuseTalk pipeline on real media (yongen.mp4 / .wav, eng.wav) with tiny random networks."""
from __future__ import annotations

import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.musetalk import audio as A
from media_frames import read_frames
from comfyui_digitalhuman.engine.musetalk import blend as B
from comfyui_digitalhuman.engine.musetalk import pipeline as P
from comfyui_digitalhuman.engine.musetalk.random_models import random_models

BOX = (125, 190, 235, 330)  # face box on the half-size yongen frames (352x608)
N_FRAMES = 6
NO_FACE = 3


@pytest.fixture(scope="module")
def models():
    return random_models(tiny=True, seed=0)


@pytest.fixture(scope="module")
def frames(testdata):
    return read_frames(testdata / "yongen.mp4", N_FRAMES, (352, 608))


@pytest.fixture(scope="module")
def speech(testdata):
    wav, sr = sf.read(str(testdata / "yongen.wav"), dtype="float32", always_2d=True)
    assert sr == 48000 and wav.shape[1] == 2
    return wav.T, sr


@pytest.fixture(scope="module")
def cache(models, frames):
    boxes = [BOX] * N_FRAMES
    boxes[NO_FACE] = None
    return P.prepare_avatar(models, frames, boxes, batch_size=4)


def test_frame_count_and_too_short_audio():
    assert A.frame_count(16000 * 8, 25) == 200
    assert A.frame_count(16000 * 8 - 1, 25) == 199
    assert A.frame_count(16000, 30) == 30
    assert A.frame_count(16000, 29.97) == 29
    with pytest.raises(ValueError, match=r"shorter than one video frame at 25 fps \(40\.0 ms\)"):
        A.frame_count(639, 25)
    assert A.frame_count(640, 25) == 1


def test_resampling_to_16k_mono(speech):
    wav, sr = speech
    short = wav[:, :4800]  # 0.1 s
    mono = A.to_mono_16k(short, sr)
    assert mono.dtype == np.float32 and mono.shape == (1600,)
    assert A.to_mono_16k(short[:, ::6], 8000).shape == (1600,)
    same = A.to_mono_16k(np.stack([short[0], short[0]]), sr)
    np.testing.assert_allclose(same, A.to_mono_16k(short[0], sr), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[T\], \[C,T\] or \[B,C,T\]"):
        A.to_mono_16k(np.zeros((1, 1, 1, 5)), 16000)


def test_windows_are_the_reference_slices_of_encoder_states(models):
    """Frame i's window = encoder states at feature frames 2i-4 .. 2i+5 (zeros before 0 / after the end)."""
    rng = np.random.RandomState(0)
    samples = (rng.randn(16000 // 2) * 0.1).astype(np.float32)  # 0.5 s -> 12 frames, 25 features
    w = A.AudioWindows(samples, models.whisper, 25)
    assert len(w) == 12 and w.n_features == 25
    states = A.encode_segment(models.whisper, samples)  # [1500, 5, 384]
    got = w.windows(0, 12).reshape(12, 10, 5, 384)
    for i in (0, 1, 5, 11):
        for t in range(10):
            j = 2 * i - 4 + t
            want = states[j] if 0 <= j < 25 else torch.zeros(5, 384)
            torch.testing.assert_close(got[i, t], want)
    assert got[0, :4].abs().sum() == 0 and got[0, 4].abs().sum() > 0


def test_silent_and_clipped_audio_run(models, cache):
    silent = np.zeros(1280, np.float32)
    clipped = np.clip(np.sin(np.arange(1280) / 3.0) * 5, -1, 1).astype(np.float32)
    for sig in (silent, clipped):
        out = list(P.speak(models, cache, sig, 16000, batch_size=2))
        assert len(out) == 2 and all(o.shape == cache.frames[0].shape for o in out)


def test_pingpong_order():
    assert [P.pingpong_index(i, 3) for i in range(8)] == [0, 1, 2, 2, 1, 0, 0, 1]
    assert [P.pingpong_index(i, 1) for i in range(3)] == [0, 0, 0]


def test_crop_box_rule():
    assert P.crop_box((10.7, 20, 110, 200), (205, 300)) == (10, 20, 110, 205)
    assert P.crop_box((10, 20, 110, 150), (400, 300)) == (10, 20, 110, 160)
    assert P.crop_box((-3, 20, 110, 150), (400, 300)) is None
    assert P.crop_box((np.nan, 20, 110, 150), (400, 300)) is None
    assert P.crop_box((50, 20, 50, 150), (400, 300)) is None


def test_reference_latents_mask_the_lower_half(models, frames):
    crop = P.crop_face(frames[0], P.crop_box(BOX, frames.shape[1:3]))
    lat = P.encode_reference(models.vae, crop[None])
    assert lat.shape == (1, 8, 32, 32)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    masked = x.clone()
    masked[:, :, 128:] = -1
    with torch.no_grad():
        want_m = models.vae.encode(masked).latent_dist.mean * 0.18215
        want_r = models.vae.encode(x).latent_dist.mean * 0.18215
    torch.testing.assert_close(lat[:, :4], want_m, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lat[:, 4:], want_r, atol=1e-5, rtol=1e-4)


def test_speak_frames(models, cache, frames, speech):
    wav, sr = speech
    n_out = 2 * N_FRAMES + 2  # ping-pong past the end of the 6-frame clip
    seconds = n_out / 25 + 0.01
    seg = wav[:, :int(seconds * sr)]
    frames_before = frames.copy()
    out = list(P.speak(models, cache, seg, sr, fps=25, batch_size=4))
    assert len(out) == math.floor(seg.shape[1] / sr * 25) == n_out
    assert np.array_equal(frames, frames_before)  # inputs untouched
    x0, y0, x1, y1 = cache.regions[0]
    for i, o in enumerate(out):
        j = P.pingpong_index(i, N_FRAMES)
        assert o.shape == frames[j].shape and o.dtype == np.uint8
        if j == NO_FACE:
            assert np.array_equal(o, frames[j])
            continue
        changed = np.any(o != frames[j], axis=-1)
        outside = np.ones_like(changed)
        outside[max(y0, 0):y1, max(x0, 0):x1] = False
        assert not changed[outside].any()
        region_changed = changed[y0:y1, x0:x1]
        assert not region_changed[cache.masks[j] == 0].any()  # mask 0: untouched
        blur = int(0.05 * (x1 - x0) // 2 * 2) + 1
        assert not region_changed[:(y1 - y0) // 2 - blur].any()  # upper half kept (up to the blur's reach)
        bx0, by0, bx1, by1 = cache.boxes[j]
        mouth = changed[(by0 + by1) // 2:by1, bx0:bx1]
        assert mouth.mean() > 0.5  # the mouth area was redrawn


def test_cache_save_load_roundtrip(models, cache, tmp_path):
    cache.save(tmp_path / "av")
    loaded = P.AvatarCache.load(tmp_path / "av")
    assert np.array_equal(loaded.frames, cache.frames) and np.array_equal(loaded.present, cache.present)
    assert torch.equal(loaded.latents, cache.latents) and all(np.array_equal(a, b) for a, b in zip(loaded.masks, cache.masks))
    assert loaded.meta["missing_frames"] == [NO_FACE] and loaded.meta["blend_mode"] == "jaw"
    sig = np.sin(np.arange(1280) / 7.0).astype(np.float32) * 0.3
    a = list(P.speak(models, cache, sig, 16000, batch_size=2))
    b = list(P.speak(models, loaded, sig, 16000, batch_size=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == 2
    with pytest.raises(FileNotFoundError, match=r"not a MuseTalk avatar folder \(avatar.safetensors missing\)"):
        P.AvatarCache.load(tmp_path)


def test_speak_streams_batch_by_batch_and_interrupts(models, cache):
    calls = []
    sig = np.zeros(16000 // 5, np.float32)  # 5 frames
    gen = P.speak(models, cache, sig, 16000, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    first = next(gen)
    assert first.shape == cache.frames[0].shape and calls == []  # first frame before the batch is reported
    rest = list(gen)
    assert len(rest) == 4 and calls == [(2, 5), (4, 5), (5, 5)]

    class Stop(Exception):
        pass

    def interrupt():
        raise Stop()
    with pytest.raises(Stop):
        next(P.speak(models, cache, sig, 16000, check_interrupt=interrupt))


def test_bad_inputs(models, frames):
    with pytest.raises(ValueError, match="2 face boxes for 6 frames"):
        P.prepare_avatar(models, frames, [BOX, BOX])
    with pytest.raises(ValueError, match="uint8"):
        P.prepare_avatar(models, frames.astype(np.float32), [BOX] * N_FRAMES)
    with pytest.raises(ValueError, match="unknown blend mode 'lips'"):
        P.prepare_avatar(models, frames, [BOX] * N_FRAMES, blend_mode="lips")
    with pytest.raises(ValueError, match="shorter than one video frame"):
        list(P.lip_sync(models, frames, [BOX] * N_FRAMES, np.zeros(100, np.float32), 16000))


def test_blend_modes_from_a_class_map():
    pm = np.zeros((512, 512), np.int64)
    pm[100:450, 100:412] = 1  # skin
    pm[200:300, 230:280] = 10  # nose
    pm[350:380, 200:312] = 12  # upper lip
    raw = B.classes_to_mask(pm, "raw") > 0
    mouth = B.classes_to_mask(pm, "mouth") > 0
    jaw = B.classes_to_mask(pm, "jaw") > 0
    assert np.array_equal(raw, np.isin(pm, [1, 11, 12, 13]))
    assert mouth[350:380, 200:312].all() and not mouth[:300].any() and mouth.sum() < raw.sum() / 5
    assert not jaw[200:300, 230:280].any()  # nose excluded
    assert jaw[85:100, 240:270].all() and not jaw[80:84].any()  # the cone dilation reaches 16 px up
    assert raw[300, 100:120].all() and not jaw[300, 100:124].any() and jaw[300, 124:388].all()  # cheeks eroded
    assert not jaw[456:].any()


def test_lip_sync_progress_covers_prepare_and_speak(models, frames):
    seen = []
    out = list(P.lip_sync(models, frames[:2], [BOX, BOX], np.zeros(16000 // 5, np.float32), 16000,
                          batch_size=8, progress=lambda d, t: seen.append((d, t))))
    assert len(out) == 5 and seen[-1] == (7, 7) and seen[0][1] == 7


def test_boxes_from_landmarks_with_fallback():
    from comfyui_digitalhuman.engine.musetalk.faces import boxes_from_landmarks

    lmk = np.zeros((3, 468, 3), np.float32)
    lmk[0, :, 0], lmk[0, :, 1] = 10.6, 20.2
    lmk[2, 0, 0] = -1  # the rule refuses this one

    def rule(points, shift):
        if points[0, 0] < 0:
            raise ValueError("unusable")
        return points[0, 0], points[0, 1] + shift, points[0, 0] + 50, points[0, 1] + 60
    fallback = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [5.5, 6, 70, 80]], np.float32)
    got = boxes_from_landmarks(lmk, [True, False, True], fallback, bbox_shift=3, box_rule=rule)
    assert got == [(10, 23, 60, 80), None, (5, 6, 70, 80)]


def test_long_audio_crosses_30s_segments(models, testdata):
    """eng.wav (60 s): 1500 frames; windows at the 30 s seam read both segments, each encoded on its own,
    and at most two segments are held."""
    wav, sr = sf.read(str(testdata / "eng.wav"), dtype="float32")
    w = A.AudioWindows(A.to_mono_16k(wav, sr), models.whisper, 25)
    assert len(w) == math.floor(wav.size / sr * 25) == 1500
    seam = w.windows(748, 752).reshape(4, 10, 5, 384)  # frame 750 starts at feature 1496
    first = A.encode_segment(models.whisper, w.samples[:A.SEGMENT_SAMPLES])
    second = A.encode_segment(models.whisper, w.samples[A.SEGMENT_SAMPLES:2 * A.SEGMENT_SAMPLES])
    for k, i in enumerate(range(748, 752)):
        for t in range(10):
            j = 2 * i - 4 + t
            want = first[j] if j < 1500 else second[j - 1500]
            torch.testing.assert_close(seam[k, t], want)
    assert len(w._cache) <= 2
    tail = w.windows(1499, 1500).reshape(10, 5, 384)
    assert tail[:8].abs().sum() > 0 and tail[9].abs().sum() == 0  # features end at 3000 -> zeros after


def test_half_precision_models_run(frames):
    """bf16 networks (what fp16/bf16 precision gives): latents cached in float32, frames still uint8."""
    m16 = random_models(tiny=True, seed=0, dtype=torch.bfloat16)
    cache = P.prepare_avatar(m16, frames[:2], [BOX, BOX])
    assert cache.latents.dtype == torch.float32 and cache.latents.abs().sum() > 0
    out = list(P.speak(m16, cache, np.zeros(1280, np.float32), 16000, batch_size=2))
    assert len(out) == 2 and out[0].dtype == np.uint8 and not np.array_equal(out[0], frames[0])


def test_start_frame_continues_the_cycle(models, cache):
    sig = np.zeros(1280, np.float32)  # 2 frames
    whole = list(P.speak(models, cache, np.zeros(2560, np.float32), 16000, batch_size=4))  # frames 0..3
    later = list(P.speak(models, cache, sig, 16000, batch_size=4, start_frame=2))
    # frame 3 has no face: identical to the video frame it shows, proving the cycle position
    assert np.array_equal(later[1], cache.frames[3]) and np.array_equal(whole[3], later[1])
    assert not np.array_equal(later[0], whole[0])


def test_boxes_from_the_face_engine(testdata):
    """With the pack's face engine (engine/face, merged separately): a tracked, usable box on yongen.mp4."""
    pytest.importorskip("comfyui_digitalhuman.engine.face.tracking", reason="engine/face not in this tree yet")
    from comfyui_digitalhuman.engine.musetalk.faces import track_boxes

    with av.open(str(testdata / "yongen.mp4")) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(3), c.decode(video=0))])
    boxes = track_boxes(frames, 0)
    assert all(b is not None for b in boxes)
    for b in boxes:  # measured with the face engine of Nov 2026: about (220, 297, 461, 517)
        assert np.allclose(b, (220, 297, 461, 517), atol=25), b
        assert P.crop_box(b, frames.shape[1:3]) is not None
