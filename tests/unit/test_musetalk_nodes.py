"""MuseTalk nodes on the real ComfyUI modules and the real download code (tiny random weights from a fake hub)."""
from __future__ import annotations

import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.musetalk.faces import track_boxes as REAL_TRACK_BOXES
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

    out, aud, fps, _, report = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=images)
    assert out.shape == (5, 304, 176, 3) and out.dtype == torch.float32
    assert aud is audio and fps == 25.0
    assert env.progress[-1] == (3 + 5, 3 + 5)
    orig = (images * 255).round().to(torch.uint8)
    got = (out * 255).round().to(torch.uint8)
    assert torch.equal(got[1], orig[1])  # no face: passed through
    assert not torch.equal(got[0], orig[0])

    assert report == "5 frames at 25 fps from a face video of 3 frames; no face in 1 of 3 frames (1): passed through unchanged"
    avatar, _ = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "unit_avatar", images=images)
    (loaded,) = lipsync.DH_MuseTalkLoadAvatar().load("unit_avatar")
    out2, _, _, _, _ = lipsync.DH_MuseTalkSpeak().speak(handle, loaded, audio, 25.0, 4)
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


# -- footage without a face: a clear error before any network runs; some frames without: a report --
class NetworkCalls:
    """Counts forward calls of the MuseTalk networks of ``handle`` (a global torch forward pre-hook)."""

    def __init__(self, handle) -> None:
        self.ids = {id(m) for m in handle.patcher.model.modules()}
        self.calls = 0
        self._h = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        if id(module) in self.ids:
            self.calls += 1

    def close(self) -> None:
        self._h.remove()


@pytest.fixture()
def real_faces(musetalk_env, monkeypatch):
    """The nodes with the pack's real face engine (not the fixed boxes of ``musetalk_env``): MediaPipe's
    files placed in ComfyUI's (temporary) models folder, where the face loader finds them in place."""
    from comfyui_digitalhuman.model_loaders.catalog import get_model
    from comfyui_digitalhuman.model_loaders.download import target_path
    from face_models import real_face_models

    lipsync, hub, env = musetalk_env
    for mid, data in real_face_models().items():
        dest = target_path(get_model(mid))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        assert str(dest).startswith(str(env.dirs["models"])), dest
    monkeypatch.setattr(lipsync.faces, "track_boxes", REAL_TRACK_BOXES)
    return lipsync, env


@pytest.fixture(scope="module")
def no_face_still(testdata):
    """no_face.jpg (a diagram; the default face pass finds no face in it) as a 3-frame still video."""
    import numpy as np
    from PIL import Image

    im = np.asarray(Image.open(testdata / "no_face.jpg").convert("RGB"))
    return torch.from_numpy(np.stack([im] * 3)).float() / 255.0


def test_no_face_in_any_frame_fails_naming_the_input_before_any_network(real_faces, no_face_still, audio):
    from comfyui_digitalhuman.engine.media.stream import FrameStream
    from comfyui_digitalhuman.engine.musetalk.pipeline import NoFaceError

    lipsync, env = real_faces
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    calls = NetworkCalls(handle)
    try:
        with pytest.raises(NoFaceError, match=r"no face found in any of the 3 frames of the 'images' input"):
            lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=no_face_still)
        with pytest.raises(NoFaceError, match=r"no face found in any of the 3 frames of the 'images' input"):
            lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", output_images=False, images=no_face_still)
        with pytest.raises(NoFaceError, match=r"of the 'video' input \(no_face_clip\)"):
            clip = FrameStream.from_images(no_face_still, 25.0)
            clip.name = "no_face_clip"
            lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "", video=clip)
    finally:
        calls.close()
    assert calls.calls == 0
    assert not any(lm.model is handle.patcher for lm in env.modules.mm.current_loaded_models)  # not even placed


def test_speak_with_an_avatar_without_a_face_fails_before_any_network(musetalk_env, images, audio):
    lipsync, _, env = musetalk_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    avatar, _ = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "", images=images)
    avatar.present[:] = False  # e.g. an avatar saved by an older version from face-free footage
    from comfyui_digitalhuman.engine.musetalk.pipeline import NoFaceError

    calls = NetworkCalls(handle)
    try:
        with pytest.raises(NoFaceError, match="no face found in any of the 3 frames of the avatar"):
            lipsync.DH_MuseTalkSpeak().speak(handle, avatar, audio, 25.0, 4)
    finally:
        calls.close()
    assert calls.calls == 0


@pytest.fixture(scope="module")
def face_video_with_black_frames(testdata):
    """yongen.mp4's first 4 frames (half size) with two black frames inserted after frame 1: 6 frames."""
    import numpy as np

    f = read_frames(testdata / "yongen.mp4", 4, (352, 608))
    black = np.zeros((2,) + f.shape[1:], np.uint8)
    return torch.from_numpy(np.concatenate([f[:2], black, f[2:]])).float() / 255.0


def test_frames_without_a_face_are_reported_by_every_node(real_faces, face_video_with_black_frames, audio, caplog):
    import logging

    lipsync, env = real_faces
    frames = face_video_with_black_frames
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    expected = "no face in 2 of 6 frames (2, 3): passed through unchanged"
    caplog.set_level(logging.WARNING, logger="DigitalHuman")

    out, _, _, _, report = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=frames)
    assert report == f"5 frames at 25 fps from a face video of 6 frames; {expected}"
    assert torch.equal(out[2], frames[2]) and torch.equal(out[3], frames[3])  # the black frames, unchanged
    assert not torch.equal(out[1], frames[1])  # a face frame was redrawn
    first, _, _, stream, report_s = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw",
                                                                     output_images=False, images=frames)
    assert report_s == report
    avatar, report_p = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "", images=frames)
    assert report_p == f"avatar of 6 frames; {expected}"
    *_, report_k = lipsync.DH_MuseTalkSpeak().speak(handle, avatar, audio, 25.0, 4)
    assert report_k == f"5 frames at 25 fps with an avatar of 6 frames; {expected}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for node in ("MuseTalk Lip Sync", "MuseTalk Prepare Avatar", "MuseTalk Speak"):
        assert any(m.startswith(f"[DigitalHuman] {node}: ") and expected in m for m in warnings), (node, warnings)


def test_a_face_in_every_frame_reports_no_missing_frames(musetalk_env, images, audio):
    lipsync, _, env = musetalk_env
    env_boxes = lipsync.faces.track_boxes
    lipsync.faces.track_boxes = lambda frames, shift, **kw: [BOX] * len(frames)
    try:
        (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
        *_, report = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=images)
    finally:
        lipsync.faces.track_boxes = env_boxes
    assert report == "5 frames at 25 fps from a face video of 3 frames"
