"""LatentSync nodes on the real ComfyUI modules: schema, the lip sync on real media (IMAGE and stream, other
frame rates, frames without a face), its report, progress and Cancel."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from media_frames import read_frames


@pytest.fixture()
def latentsync_node(comfy_env):
    from comfyui_digitalhuman.engine.latentsync import random_models as R
    from comfyui_digitalhuman.model_loaders.comfy_wrap import make_patcher
    from comfyui_digitalhuman.model_loaders.latentsync import LatentSyncBundle
    from comfyui_digitalhuman.nodes import latentsync

    models = R.random_models(tiny=True, seed=0, version="1.5")
    handle = latentsync.LatentSyncHandle(make_patcher(LatentSyncBundle(models)), torch.float32, "1.5")
    yield latentsync, handle, comfy_env


@pytest.fixture(scope="module")
def images(testdata):
    return torch.from_numpy(read_frames(testdata / "d20.mp4", 10, (240, 240))).float() / 255.0


def _audio(testdata, seconds):
    wav, sr = sf.read(str(testdata / "yongen.wav"), dtype="float32", always_2d=True, frames=int(48000 * seconds))
    return {"waveform": torch.from_numpy(wav.T.copy())[None], "sample_rate": sr}  # 48 kHz stereo


def _run(node_mod, handle, audio, **kw):
    args = dict(steps=2, guidance=1.5, seed=3, feature_reuse=False, window=16, vae_batch=0, missing_face="pass",
                output_fps="25")
    args.update(kw)
    return node_mod.DH_LatentSyncLipSync().run(handle, audio, **args)


def test_node_definitions():
    from comfyui_digitalhuman.nodes import latentsync
    from comfyui_digitalhuman.nodes.common import CAT_LIPSYNC

    assert set(latentsync.NODE_CLASS_MAPPINGS) == {"DH_LoadLatentSync", "DH_LatentSyncLipSync"}
    for node_id, cls in latentsync.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == CAT_LIPSYNC and cls.DESCRIPTION
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        for group in cls.INPUT_TYPES().values():
            for name, (_typ, opts) in group.items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
    req = latentsync.DH_LatentSyncLipSync.INPUT_TYPES()["required"]
    assert req["steps"][1]["default"] == 20 and req["guidance"][1]["default"] == 1.5 and req["window"][1]["max"] == 24
    assert latentsync.DH_LoadLatentSync.INPUT_TYPES()["required"]["version"][0] == ["1.6", "1.5"]


def test_load_latentsync_fetches_every_file_and_places_the_networks(comfy_env, monkeypatch, images, testdata):
    """Load LatentSync on the real download code: the networks from a fake hub, the mouth mask from a fake
    web host at the catalogue URL's path, all into ComfyUI's models folder; then a short lip sync."""
    from fakehub import FakeHub, serve_model
    from fakestorage import FakeStorage, serve_url_model
    from tiny_models import latentsync_files, musetalk_files

    from comfyui_digitalhuman.model_loaders import latentsync as ml
    from comfyui_digitalhuman.model_loaders.catalog import get_model
    from comfyui_digitalhuman.model_loaders.download import find_local
    from comfyui_digitalhuman.nodes import latentsync

    files = {**latentsync_files(), **{k: v for k, v in musetalk_files().items() if k.startswith("vae.")}}
    monkeypatch.delenv("DH_MODELS_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as hub, FakeStorage() as store:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        for mid, data in files.items():
            if mid == "latentsync.mask":
                serve_url_model(store, mid, data, monkeypatch)
            else:
                serve_model(hub, mid, data, monkeypatch)
        (handle,) = latentsync.DH_LoadLatentSync().load("1.5", "fp32")
        for mid in ml.catalog_ids("1.5").values():
            assert str(find_local(get_model(mid))).startswith(str(comfy_env.dirs["models"])), mid
        assert store.count("GET", "mask.png") == 1
    models = handle.models()
    assert models.version == "1.5" and models.resolution == 256 and models.dtype == torch.float32
    assert any(lm.model is handle.patcher for lm in comfy_env.modules.mm.current_loaded_models)
    out = _run(latentsync, handle, _audio(testdata, 0.2), images=images[:3])["result"][0]
    assert out.shape == (5, 240, 240, 3) and torch.isfinite(out).all()


def test_lip_sync_images_at_another_frame_rate(latentsync_node, images, testdata):
    """10 frames given as 12.5 fps (0.8 s) under 1.2 s of 48 kHz stereo speech: 30 frames at 25 fps; the clip
    is shown at 25 fps (each frame twice), then played backwards; the audio passes through."""
    node, handle, env = latentsync_node
    audio = _audio(testdata, 1.2)
    res = _run(node, handle, audio, images=images, input_fps=12.5)
    out, aud, fps, stream, report = res["result"]
    assert out.shape == (30, 240, 240, 3) and fps == 25.0 and aud is audio
    assert len(stream) == 30 and stream.fps == 25.0
    assert res["ui"]["text"] == [report] and "30 frames at 25 fps from a 10-frame face video at 12.5 fps" in report
    assert env.progress[-1] == (30, 30)
    got = (out * 255).round().to(torch.uint8).numpy()
    src = (images * 255).round().to(torch.uint8).numpy()
    top = slice(0, 8)  # the image's top rows lie outside every face footprint: the shown source frame, unchanged
    expect = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    expect += expect[::-1]
    for i in range(30):
        assert np.array_equal(got[i, top], src[expect[i], top]), i


def test_output_at_the_input_rate_and_the_stream(latentsync_node, images, testdata):
    node, handle, env = latentsync_node
    audio = _audio(testdata, 0.8)
    out, _, fps, stream, report = _run(node, handle, audio, images=images, input_fps=30.0, output_fps="input",
                                       output_images=False)["result"]
    assert fps == 30.0 and len(stream) == 24 and out.shape == (1, 240, 240, 3)  # floor(0.8 s x 30)
    assert "streamed" in report
    chunks = list(stream.iter_chunks(7))
    assert sum(len(c) for c in chunks) == 24
    assert np.array_equal(chunks[0][0], (out[0].numpy() * 255).round().astype(np.uint8))


def test_frames_without_a_face_pass_and_are_reported(latentsync_node, images, testdata):
    import cv2

    node, handle, env = latentsync_node
    blank = cv2.resize(cv2.cvtColor(cv2.imread(str(testdata / "no_face.jpg")), cv2.COLOR_BGR2RGB), (240, 240))
    imgs = images.clone()
    imgs[4] = torch.from_numpy(blank).float() / 255.0
    out, _, _, _, report = _run(node, handle, _audio(testdata, 0.4), images=imgs)["result"]
    assert "no face in 1 video frame(s) (4): passed through unchanged" in report
    assert torch.equal((out[4] * 255).round(), (imgs[4] * 255).round())
    every = imgs.clone()
    every[:] = torch.from_numpy(blank).float() / 255.0
    with pytest.raises(ValueError, match="no face found in any of the 10 frames of the 'images' input"):
        _run(node, handle, _audio(testdata, 0.4), images=every)


def test_bad_inputs_fail_before_any_work(latentsync_node, images, testdata):
    node, handle, env = latentsync_node
    with pytest.raises(ValueError, match="connect either 'images'"):
        _run(node, handle, _audio(testdata, 0.4))
    with pytest.raises(ValueError, match="shorter than one video frame"):
        _run(node, handle, {"waveform": torch.zeros(1, 1, 100), "sample_rate": 16000}, images=images)
    with pytest.raises(ValueError, match="window must be 1..24"):
        _run(node, handle, _audio(testdata, 0.4), images=images, window=30)


def test_cancel_stops_the_lip_sync(latentsync_node, images, testdata):
    node, handle, env = latentsync_node
    env.interrupt()
    import comfy.model_management as mm

    with pytest.raises(mm.InterruptProcessingException):
        _run(node, handle, _audio(testdata, 0.4), images=images)


def test_audio_at_44k_stereo_counts_frames_from_the_audio_as_given(latentsync_node, images, testdata):
    """yongen.wav resampled to 44.1 kHz stereo, 1764 x 20 - 1 samples: just under 0.8 s, so floor(seconds x 25)
    is 19. Resampled to 16 kHz the copy is 12800 samples long (librosa rounds the length up), which alone would
    give 20 frames; the count must come from the audio as given. The audio passes through untouched."""
    import librosa

    wav, sr = sf.read(str(testdata / "yongen.wav"), dtype="float32", always_2d=True, frames=48000)
    st = np.stack([librosa.resample(wav[:, c], orig_sr=sr, target_sr=44100) for c in range(2)])[:, : 1764 * 20 - 1]
    assert st.shape == (2, 35279) and not np.allclose(st[0], st[1])  # a real stereo pair
    assert librosa.resample(st.mean(0), orig_sr=44100, target_sr=16000).size == 12800
    audio = {"waveform": torch.from_numpy(st.copy())[None], "sample_rate": 44100}
    node, handle, env = latentsync_node
    fast = dict(steps=1, guidance=1.0)  # the lengths are tested, not the look: one step, no guidance batch
    out, aud, fps, stream, report = _run(node, handle, audio, images=images, **fast)["result"]
    assert out.shape[0] == 19 == int(35279 / 44100 * 25) and len(stream) == 19 and fps == 25.0
    assert aud is audio and torch.isfinite(out).all()
    out30 = _run(node, handle, audio, images=images, input_fps=30.0, output_fps="input", output_images=False,
                 **fast)["result"]
    assert len(out30[3]) == int(35279 / 44100 * 30) == 23


def test_ten_frames_under_a_minute_of_speech_stream_1500_frames(latentsync_node, images, testdata):
    """A 10-frame video under 60 s of speech (eng.wav): 1500 frames in the stream, nothing cut; the stream is
    lazy, so reading its first two windows runs only those; they show the clip forwards then backwards."""
    wav, sr = sf.read(str(testdata / "eng.wav"), dtype="float32", always_2d=True)
    audio = {"waveform": torch.from_numpy(wav.T.copy())[None], "sample_rate": sr}
    node, handle, env = latentsync_node
    out, _, fps, stream, report = _run(node, handle, audio, images=images, output_images=False, steps=1,
                                       guidance=1.0)["result"]
    assert sr == 16000 and wav.shape[0] == 960000
    assert len(stream) == 1500 and fps == 25.0 and "1500 frames at 25 fps" in report
    src = (images * 255).round().to(torch.uint8).numpy()
    chunks = stream.iter_chunks(16)
    got = np.concatenate([next(chunks), next(chunks)])
    chunks.close()
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8]
    for i, j in enumerate(order):
        assert np.array_equal(got[i, :8], src[j, :8]), i  # top rows lie outside every face footprint
