"""MuseTalk nodes on the real ComfyUI modules and the real download code (tiny random weights from a fake hub)."""
from __future__ import annotations

import pytest
import soundfile as sf
import torch

from fakehub import FakeHub, serve_model
from media_frames import read_frames
from tiny_models import musetalk_files

BOX = (62, 95, 118, 165)  # on quarter-size yongen frames (176x304)


@pytest.fixture()
def musetalk_env(comfy_env, monkeypatch, tmp_path):
    """The real ComfyUI modules and the real download code, fetching tiny random weights in the
    published layouts from a fake hub on loopback into ComfyUI's (temporary) models folder."""
    files = musetalk_files()  # tiny random weights in the published layouts (tests/tiny_models.py)
    monkeypatch.delenv("DH_MODELS_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        for mid, data in files.items():
            serve_model(hub, mid, data, monkeypatch)
        from comfyui_digitalhuman.nodes import lipsync

        monkeypatch.setattr(lipsync.faces, "track_boxes",
                            lambda frames, shift, **kw: [BOX if i != 1 else None for i in range(len(frames))])
        yield lipsync, hub, comfy_env


@pytest.fixture(scope="module")
def images(testdata):
    return torch.from_numpy(read_frames(testdata / "yongen.mp4", 3, (176, 304))).float() / 255.0


@pytest.fixture(scope="module")
def audio(testdata):
    wav, sr = sf.read(str(testdata / "yongen.wav"), dtype="float32", always_2d=True, frames=int(48000 * 0.2))
    return {"waveform": torch.from_numpy(wav.T.copy())[None], "sample_rate": sr}


def test_node_definitions():
    from comfyui_digitalhuman.nodes import lipsync
    from comfyui_digitalhuman.nodes.common import CAT_LIPSYNC

    for node_id, cls in lipsync.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("DH_") and cls.CATEGORY == CAT_LIPSYNC and cls.DESCRIPTION
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (typ, opts) in group.items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert callable(getattr(cls, cls.FUNCTION))


def test_load_lipsync_prepare_speak(musetalk_env, images, audio):
    lipsync, hub, env = musetalk_env
    from comfyui_digitalhuman.model_loaders import musetalk as ml
    from comfyui_digitalhuman.model_loaders.catalog import get_model
    from comfyui_digitalhuman.model_loaders.download import find_local

    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    for mid in ml.CATALOG_IDS.values():  # fetched into ComfyUI's models folders
        assert find_local(get_model(mid)) is not None, mid
        assert str(find_local(get_model(mid))).startswith(str(env.dirs["models"]))
    assert handle.models().dtype == torch.float32
    loaded = env.modules.mm.current_loaded_models
    assert any(lm.model is handle.patcher for lm in loaded)  # placed through ComfyUI's model management

    out, aud, fps, _ = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=images)
    assert out.shape == (5, 304, 176, 3) and out.dtype == torch.float32
    assert aud is audio and fps == 25.0
    assert env.progress[-1] == (3 + 5, 3 + 5)
    orig = (images * 255).round().to(torch.uint8)
    got = (out * 255).round().to(torch.uint8)
    assert torch.equal(got[1], orig[1])  # no face: passed through
    assert not torch.equal(got[0], orig[0])

    (avatar,) = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "unit_avatar", images=images)
    (loaded,) = lipsync.DH_MuseTalkLoadAvatar().load("unit_avatar")
    out2, _, _, _ = lipsync.DH_MuseTalkSpeak().speak(handle, loaded, audio, 25.0, 4)
    assert torch.equal(out2, out)  # same frames as the one-shot node
    with pytest.raises(ValueError, match="must be 1-64 letters"):
        lipsync.DH_MuseTalkLoadAvatar().load("../x")


def test_lipsync_needs_frames_and_enough_audio(musetalk_env, images):
    lipsync, _, env = musetalk_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("auto")
    short = {"waveform": torch.zeros(1, 1, 100), "sample_rate": 16000}
    with pytest.raises(ValueError, match="connect either 'images'"):
        lipsync.DH_MuseTalkLipSync().run(handle, short, 25.0, 4, 0, "jaw")
    with pytest.raises(ValueError, match="shorter than one video frame"):
        lipsync.DH_MuseTalkLipSync().run(handle, short, 25.0, 4, 0, "jaw", images=images)
    before = len(env.progress)
    with pytest.raises(ValueError, match="must be 1-64 letters"):
        lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "../x", images=images)
    assert len(env.progress) == before  # a bad avatar name is refused before any frame is prepared


def test_lipsync_from_a_stream_spills_a_long_clip_to_disk(musetalk_env, images, audio, monkeypatch):
    """Over DH_FACE_CLIP_RAM_MB the streamed face clip is read into a disk-backed array; the frames are the same."""
    lipsync, _, env = musetalk_env
    from comfyui_digitalhuman.engine.media import stream as stream_mod
    from comfyui_digitalhuman.engine.media.stream import FrameStream

    spilled = []
    real = stream_mod.disk_array
    monkeypatch.setattr(stream_mod, "disk_array", lambda *a, **k: spilled.append(a) or real(*a, **k))
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    node = lipsync.DH_MuseTalkLipSync()
    ref, *_ = node.run(handle, audio, 25.0, 4, 0, "jaw", images=images)
    monkeypatch.setenv("DH_FACE_CLIP_RAM_MB", "0.01")  # 10 KB: any clip spills
    out, *_ = node.run(handle, audio, 25.0, 4, 0, "jaw", video=FrameStream.from_images(images, 25.0))
    assert spilled and spilled[0][0] == tuple(images.shape) and spilled[0][1] == str(env.dirs["temp"])
    assert torch.equal(out, ref)
    monkeypatch.setenv("DH_FACE_CLIP_RAM_MB", "lots")
    with pytest.raises(ValueError, match="DH_FACE_CLIP_RAM_MB must be a number of megabytes, got 'lots'"):
        node.run(handle, audio, 25.0, 4, 0, "jaw", video=FrameStream.from_images(images, 25.0))
