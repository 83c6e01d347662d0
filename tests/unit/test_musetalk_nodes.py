"""MuseTalk nodes with stand-ins for ComfyUI's modules and the model catalogue (tiny random weights)."""
from __future__ import annotations

import json
import sys
import types

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.musetalk import networks as nets
from comfyui_digitalhuman.engine.musetalk.bisenet import BiSeNet
from comfyui_digitalhuman.engine.musetalk.random_models import random_models

BOX = (62, 95, 118, 165)  # on quarter-size yongen frames (176x304)


class FakeBar:
    last: list = []

    def __init__(self, total):
        self.total = total
        FakeBar.last = []

    def update_absolute(self, value, total=None):
        FakeBar.last.append((value, total))


@pytest.fixture()
def comfy_env(monkeypatch, tmp_path):
    """Minimal comfy / folder_paths / download stand-ins, and a catalogue of tiny files."""
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.loaded = []
    mm.load_model_gpu = lambda p: mm.loaded.append(p)
    mm.throw_exception_if_processing_interrupted = lambda: None
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = FakeBar
    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
    mp.ModelPatcher = ModelPatcher
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils, comfy.model_patcher = mm, utils, mp
    fp = types.ModuleType("folder_paths")
    fp.get_output_directory = lambda: str(tmp_path / "output")
    for name, mod in {"comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils,
                      "comfy.model_patcher": mp, "folder_paths": fp}.items():
        monkeypatch.setitem(sys.modules, name, mod)

    m = random_models(tiny=True, seed=0)
    w = tmp_path / "models"
    w.mkdir()
    torch.save(m.unet.state_dict(), w / "unet.pth")
    (w / "musetalk.json").write_text(json.dumps(nets.TINY_UNET_CONFIG))
    torch.save(m.vae.state_dict(), w / "vae.bin")
    (w / "vae_config.json").write_text(json.dumps(nets.TINY_VAE_CONFIG))
    torch.save({f"model.encoder.{k}": v for k, v in m.whisper.state_dict().items()}, w / "whisper.bin")
    (w / "whisper_config.json").write_text(json.dumps(nets.TINY_WHISPER_CONFIG))
    torch.save(m.parser.state_dict(), w / "79999_iter.pth")
    files = {"musetalk.unet_v15": "unet.pth", "musetalk.config_v15": "musetalk.json", "vae.sd_vae_ft_mse": "vae.bin",
             "vae.sd_vae_ft_mse_config": "vae_config.json", "whisper.tiny": "whisper.bin",
             "whisper.tiny_config": "whisper_config.json", "musetalk.face_parsing": "79999_iter.pth"}
    requested = []

    def ensure_model(mid, models_dir=None, progress=None, check_interrupt=None):
        requested.append(mid)
        if mid not in files:
            raise KeyError(mid)
        return w / files[mid]
    dl = types.ModuleType("comfyui_digitalhuman.model_loaders.download")
    dl.ensure_model = ensure_model
    monkeypatch.setitem(sys.modules, "comfyui_digitalhuman.model_loaders.download", dl)

    from comfyui_digitalhuman.nodes import lipsync
    monkeypatch.setattr(lipsync.faces, "track_boxes", lambda frames, shift, **kw: [BOX if i != 1 else None for i in range(len(frames))])
    return lipsync, requested, mm


@pytest.fixture(scope="module")
def images(testdata):
    out = []
    with av.open(str(testdata / "yongen.mp4")) as c:
        for f in c.decode(video=0):
            out.append(cv2.resize(f.to_ndarray(format="rgb24"), (176, 304), interpolation=cv2.INTER_AREA))
            if len(out) == 3:
                break
    return torch.from_numpy(np.stack(out)).float() / 255.0


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


def test_load_lipsync_prepare_speak(comfy_env, images, audio):
    lipsync, requested, mm = comfy_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    assert "musetalk.unet" not in requested and "face.parsing_bisenet" in requested  # tried in order
    assert handle.models().dtype == torch.float32 and mm.loaded

    out, aud, fps = lipsync.DH_MuseTalkLipSync().run(handle, audio, 25.0, 4, 0, "jaw", images=images)
    assert out.shape == (5, 304, 176, 3) and out.dtype == torch.float32
    assert aud is audio and fps == 25.0
    assert FakeBar.last[-1] == (3 + 5, 3 + 5)
    orig = (images * 255).round().to(torch.uint8)
    got = (out * 255).round().to(torch.uint8)
    assert torch.equal(got[1], orig[1])  # no face: passed through
    assert not torch.equal(got[0], orig[0])

    (avatar,) = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "unit_avatar", images=images)
    (loaded,) = lipsync.DH_MuseTalkLoadAvatar().load("unit_avatar")
    out2, _, _ = lipsync.DH_MuseTalkSpeak().speak(handle, loaded, audio, 25.0, 4)
    assert torch.equal(out2, out)  # same frames as the one-shot node
    with pytest.raises(ValueError, match="must be 1-64 letters"):
        lipsync.DH_MuseTalkLoadAvatar().load("../x")


def test_lipsync_needs_frames_and_enough_audio(comfy_env, images):
    lipsync, _, _ = comfy_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("auto")
    short = {"waveform": torch.zeros(1, 1, 100), "sample_rate": 16000}
    with pytest.raises(ValueError, match="connect either 'images'"):
        lipsync.DH_MuseTalkLipSync().run(handle, short, 25.0, 4, 0, "jaw")
    with pytest.raises(ValueError, match="shorter than one video frame"):
        lipsync.DH_MuseTalkLipSync().run(handle, short, 25.0, 4, 0, "jaw", images=images)
