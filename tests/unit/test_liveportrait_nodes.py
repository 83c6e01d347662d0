"""LivePortrait nodes (classic API contract, a run with stand-ins for ComfyUI) and the expression editor engine."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.liveportrait import animate as A
from comfyui_digitalhuman.engine.liveportrait.edit import (Expression, apply_sliders, edit_portrait, edited_keypoints,
                                                           load_preset, save_preset)
from comfyui_digitalhuman.engine.liveportrait.options import AnimateOptions
from comfyui_digitalhuman.model_loaders.liveportrait import synthetic_liveportrait
from comfyui_digitalhuman.nodes import motion as M
from comfyui_digitalhuman.nodes.common import CAT_MOTION

from comfyui_digitalhuman.engine.liveportrait.networks import small_config
from test_liveportrait_animate import StandInFace, read_frames  # noqa: E402


@pytest.fixture(scope="module")
def nets():
    return synthetic_liveportrait(small_config(), seed=5)


@pytest.fixture(scope="module")
def portrait(testdata: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(testdata / "s0.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture
def comfy_stubs(monkeypatch, tmp_path):
    """Just enough of ComfyUI for the nodes: ProgressBar, the interrupt check and the user folder."""
    updates = []
    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    mm = types.ModuleType("comfy.model_management")

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None):
            updates.append((value, total))

    utils.ProgressBar = ProgressBar
    mm.throw_exception_if_processing_interrupted = lambda: None
    comfy.utils, comfy.model_management = utils, mm
    fp = types.ModuleType("folder_paths")
    fp.user_directory = str(tmp_path / "user")
    for name, mod in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm), ("folder_paths", fp)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(M, "_face_ops", lambda *a, **k: StandInFace())
    return updates


class FakeModel:
    def __init__(self, nets):
        self.nets, self.acquired = nets, 0

    def acquire(self):
        self.acquired += 1
        return self.nets


def test_node_contract() -> None:
    assert set(M.NODE_CLASS_MAPPINGS) == {"DH_LoadLivePortrait", "DH_LivePortraitAnimate", "DH_LivePortraitRetarget",
                                          "DH_ExpressionEditor"}
    for node_id, cls in M.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == CAT_MOTION and cls.DESCRIPTION and node_id in M.NODE_DISPLAY_NAME_MAPPINGS
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (kind, *rest) in group.items():
                assert rest and rest[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert callable(getattr(cls, cls.FUNCTION))
    # every animation option of the engine is a node input, with the reference's defaults but strength 0.8
    inputs = M.LivePortraitAnimate.INPUT_TYPES()["required"]
    defaults = AnimateOptions().to_dict()
    for key, value in defaults.items():
        if key in ("lip_normalize_threshold", "source_video_eye_retargeting_threshold"):  # fixed in the reference
            continue
        assert key in inputs, key
        expected = 0.8 if key == "driving_multiplier" else value
        assert inputs[key][1]["default"] == expected, key


def test_animate_node_runs_and_reports_missing_faces(nets, portrait, testdata, comfy_stubs) -> None:
    drv = read_frames(testdata / "d20.mp4", 3)
    drv[1] = 0
    node = M.LivePortraitAnimate()
    opts = {k: v[1]["default"] for k, v in M.LivePortraitAnimate.INPUT_TYPES()["required"].items()
            if k not in ("liveportrait", "portrait", "fps")}
    model = FakeModel(nets)
    frames, mask, fps, report = node.run(model, torch.from_numpy(portrait[None]).float() / 255, 25.0,
                                         driving_images=torch.from_numpy(drv).float() / 255, **opts)
    assert frames.shape == (3,) + portrait.shape and frames.dtype == torch.float32
    assert mask.shape == (3,) + portrait.shape[:2] and float(mask.max()) == pytest.approx(1.0)
    assert fps == 25.0 and "no face in driving frame(s) [1]" in report
    assert torch.equal(frames[1], torch.from_numpy(portrait).float() / 255)
    assert model.acquired == 1 and comfy_stubs[-1][0] == 6
    with pytest.raises(ValueError, match="exactly one of driving_images or driving_video"):
        node.run(model, torch.zeros(1, 8, 8, 3), 25.0, **opts)
    # a batch of portraits is a source video: min(source, driving) frames, each at the source frame size
    src = torch.from_numpy(np.stack([portrait, portrait[:, ::-1]])).float() / 255
    frames, mask, _, report = node.run(model, src, 25.0, driving_images=torch.from_numpy(drv).float() / 255, **opts)
    assert frames.shape == (2,) + portrait.shape and mask.shape == (2,) + portrait.shape[:2]
    assert "source video of 2 frames" in report and "[1]" in report


def test_expression_editor_node_saves_and_loads_presets(nets, portrait, comfy_stubs) -> None:
    node = M.ExpressionEditor()
    sliders = {k: v[1]["default"] for k, v in M.ExpressionEditor.INPUT_TYPES()["required"].items()
               if k not in ("liveportrait", "portrait", "preset", "save_as")}
    sliders["smile"] = 0.7
    img = torch.from_numpy(portrait[None]).float() / 255
    image, crop, text = node.run(FakeModel(nets), img, "none", "happy", **sliders)
    assert image.shape == img.shape and crop.shape == (1, 512, 512, 3)
    assert M.list_presets() == ["happy"]
    assert Expression.from_json(text).smile == 0.7
    image2, _, text2 = node.run(FakeModel(nets), img, "happy", "", **{**sliders, "smile": 0.0})
    assert text2 == text and torch.equal(image2, image)
    with pytest.raises(ValueError, match="preset name"):
        node.run(FakeModel(nets), img, "none", "../evil", **sliders)


def test_expression_sliders_move_only_their_coefficients(nets, portrait) -> None:
    src = A.prepare_source(nets, portrait, StandInFace(), AnimateOptions())
    neutral = edited_keypoints(src, Expression(), nets.retarget, stitching=False)
    smile = edited_keypoints(src, Expression(smile=1.0), nets.retarget, stitching=False)
    changed = {(k, c) for k, c in zip(*np.nonzero((smile - neutral)[0].abs().numpy() > 0))}
    assert changed == {(20, 1), (14, 1), (17, 1), (17, 2), (13, 1), (16, 1), (3, 1), (7, 1)}
    s = src.motion.info
    torch.testing.assert_close((smile - neutral)[0, 14, 1], s.scale[0, 0] * -0.02, atol=1e-6, rtol=0)
    # no slider, no pose change: the source keypoints plus the reference's tz term, i.e. the head stays still
    expected = src.motion.x_s.clone()
    expected[..., 2] += s.t[:, None, 2]
    torch.testing.assert_close(neutral, expected, atol=1e-5, rtol=0)
    turned = edited_keypoints(src, Expression(head_yaw=10.0), nets.retarget, stitching=False)
    assert (turned - neutral).abs().max() > 1e-3
    assert torch.equal(apply_sliders(s.exp, Expression()), s.exp)


def test_retarget_and_edit_render(nets, portrait) -> None:
    face = StandInFace()
    src = A.prepare_source(nets, portrait, face, AnimateOptions())
    frames, crops = edit_portrait(nets, src, [Expression(), Expression(eyes_open=0.0, lips_open=0.6)], face)
    assert frames.shape == (2,) + src.image.shape and crops.shape == (2, 512, 512, 3)
    outside = src.mask == 0
    assert np.array_equal(frames[:, outside], np.broadcast_to(src.image[outside], frames[:, outside].shape))
    assert np.abs(crops[0].astype(int) - crops[1].astype(int)).max() > 0


def test_presets_roundtrip_and_errors(tmp_path: Path) -> None:
    e = Expression(smile=0.5, aaa=30.0, head_yaw=-5.0, eyes_open=0.2)
    path = save_preset(e, tmp_path / "p" / "x.json")
    assert load_preset(path) == e
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_preset(path)
    path.write_text('{"grin": 1}')
    with pytest.raises(ValueError, match=r"unknown expression field\(s\) \['grin'\]"):
        load_preset(path)
    with pytest.raises(ValueError, match="'smile' = 2.0 is outside"):
        Expression(smile=2.0).validate()
    with pytest.raises(FileNotFoundError):
        load_preset(tmp_path / "none.json")


def test_load_for_comfy_wires_catalogue_precision_and_patcher(monkeypatch, comfy_stubs) -> None:
    from comfyui_digitalhuman.engine.liveportrait.networks import build_network
    from comfyui_digitalhuman.model_loaders import liveportrait as lp

    asked, loaded, placed = [], [], []
    download = types.ModuleType("comfyui_digitalhuman.model_loaders.download")
    download.ensure_model = lambda model_id, **kw: asked.append(model_id) or Path(f"/models/{model_id}.safetensors")
    monkeypatch.setitem(sys.modules, "comfyui_digitalhuman.model_loaders.download", download)
    monkeypatch.setattr(lp, "load_network", lambda name, path, device, dtype: loaded.append((name, str(path), dtype))
                        or build_network(name, small_config()).to(dtype=dtype))
    mm = sys.modules["comfy.model_management"]
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.load_model_gpu = lambda patcher: placed.append(patcher)
    patcher_mod = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    patcher_mod.ModelPatcher = ModelPatcher
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", patcher_mod)
    sys.modules["comfy"].model_patcher = patcher_mod

    model = lp.load_for_comfy("fp16", "auto")
    assert asked == [f"liveportrait.{n}" for n in lp.NETWORK_NAMES]
    assert [n for n, _, _ in loaded] == list(lp.NETWORK_NAMES) and {d for _, _, d in loaded} == {torch.float16}
    assert isinstance(model.patcher, ModelPatcher) and model.patcher.model is model.stack
    nets = model.acquire()
    assert placed == [model.patcher] and nets.dtype == torch.float16 and nets.retarget is not None
    cpu = lp.load_for_comfy("auto", "cpu")
    assert cpu.patcher is None and cpu.acquire().dtype == torch.float32


def test_engine_face_ops_follows_the_face_contract(monkeypatch) -> None:
    """EngineFaceOps calls engine.face exactly as the pack's face contract defines it (stand-in modules here)."""
    from comfyui_digitalhuman.engine.liveportrait.faces import EngineFaceOps

    calls = {}
    pkg = types.ModuleType("comfyui_digitalhuman.engine.face")
    align = types.ModuleType("comfyui_digitalhuman.engine.face.align")
    schemes = types.ModuleType("comfyui_digitalhuman.engine.face.schemes")

    class CropInfo:
        crop = np.zeros((512, 512, 3), np.uint8)
        M_o2c = np.eye(3)

    def crop_liveportrait(image, lmk468, dsize=512, scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, flag_do_rot=True):
        calls["crop"] = (dsize, scale, vx_ratio, vy_ratio, flag_do_rot)
        return CropInfo()

    align.crop_liveportrait = crop_liveportrait
    align.warp_to_crop = lambda image, M_o2c, dsize: calls.setdefault("warp", dsize)
    align.paste_back = lambda frame, crop, M_c2o, mask_crop=None, feather=8: calls.setdefault("paste", mask_crop)
    align.make_paste_mask = lambda dsize: np.ones((dsize, dsize), np.float32)
    schemes.eye_open_ratio = lambda lmk: np.array([0.3, 0.2])
    schemes.lip_open_ratio = lambda lmk: np.array([0.1])
    pkg.align, pkg.schemes = align, schemes
    for name, mod in ((pkg.__name__, pkg), (align.__name__, align), (schemes.__name__, schemes)):
        monkeypatch.setitem(sys.modules, name, mod)

    class Face:
        def __init__(self, score):
            self.score, self.landmarks = score, np.full((468, 3), score, np.float32)

    class Analyzer:
        def detect_batch(self, frames):
            return [[Face(0.1), Face(0.05)], [Face(0.9)], []]

    ops = EngineFaceOps(analyzer=Analyzer(), det_thresh=0.15)
    found = ops.landmarks(np.zeros((3, 8, 8, 3), np.uint8))
    assert found[0] is None and found[1][0, 0] == pytest.approx(0.9) and found[2] is None
    crop, m = ops.crop(np.zeros((8, 8, 3), np.uint8), found[1], 512, 2.2, 0.0, -0.1, False)
    assert calls["crop"] == (512, 2.2, 0.0, -0.1, False) and crop.shape == (512, 512, 3) and m.dtype == np.float64
    mask = ops.paste_mask(512)
    ops.paste_back(np.zeros((8, 8, 3), np.uint8), crop, np.eye(3), mask)
    assert calls["paste"] is mask
    assert ops.eye_ratio(found[1]).shape == (2,) and ops.lip_ratio(found[1]).shape == (1,)
