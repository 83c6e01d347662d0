"""LivePortrait nodes (classic API contract, runs on the real ComfyUI modules) and the expression editor engine."""
from __future__ import annotations

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
def comfy_stubs(comfy_env, monkeypatch):
    """The real ComfyUI modules (folders in tmp, progress recorded) and a stand-in face finder that
    makes missing-face frames deterministic; returns the recorded progress updates."""
    monkeypatch.setattr(M, "_face_ops", lambda *a, **k: StandInFace())
    return comfy_env.progress


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
    frames, mask, fps, report, stream = node.run(model, torch.from_numpy(portrait[None]).float() / 255, 25.0,
                                                 driving_images=torch.from_numpy(drv).float() / 255, **opts)
    assert frames.shape == (3,) + portrait.shape and frames.dtype == torch.float32
    assert mask.shape == (3,) + portrait.shape[:2] and float(mask.max()) == pytest.approx(1.0)
    assert fps == 25.0 and "no face in driving frame(s) [1]" in report
    assert torch.equal(frames[1], torch.from_numpy(portrait).float() / 255)
    assert model.acquired == 1 and comfy_stubs[-1][0] == 6
    # with output_images on, the stream output is the IMAGE output (no second animation)
    assert (stream.frame_count, stream.fps, stream.width, stream.height) == (3, 25.0, portrait.shape[1], portrait.shape[0])
    np.testing.assert_array_equal(stream.read_all(), (frames.numpy() * 255 + 0.5).astype(np.uint8))
    with pytest.raises(ValueError, match="exactly one of driving_images or driving_video"):
        node.run(model, torch.zeros(1, 8, 8, 3), 25.0, **opts)
    # a batch of portraits is a source video: min(source, driving) frames, each at the source frame size
    src = torch.from_numpy(np.stack([portrait, portrait[:, ::-1]])).float() / 255
    frames, mask, _, report, _ = node.run(model, src, 25.0, driving_images=torch.from_numpy(drv).float() / 255, **opts)
    assert frames.shape == (2,) + portrait.shape and mask.shape == (2,) + portrait.shape[:2]
    assert "source video of 2 frames" in report and "[1]" in report


def _defaults() -> dict:
    return {k: v[1]["default"] for k, v in M.LivePortraitAnimate.INPUT_TYPES()["required"].items()
            if k not in ("liveportrait", "portrait", "fps")}


def test_animate_node_streams_lazily_with_progress_and_interrupt(nets, portrait, testdata, comfy_env,
                                                                 monkeypatch) -> None:
    """output_images off: the node renders one frame; the stream animates the rest while it is read, reporting
    progress and honouring Cancel inside the reader's loop; its frames equal the eager IMAGE output."""
    from comfyui_digitalhuman.engine.media.stream import FrameStream

    monkeypatch.setattr(M, "_face_ops", lambda *a, **k: StandInFace())
    rendered: list[int] = []
    real_render = A.render
    monkeypatch.setattr(A, "render", lambda nets_, src, x_d, face: rendered.append(len(x_d)) or
                        real_render(nets_, src, x_d, face))
    drv = FrameStream.from_video(testdata / "d20.mp4", frame_cap=5)
    node, model, img = M.LivePortraitAnimate(), FakeModel(nets), torch.from_numpy(portrait[None]).float() / 255
    opts = {**_defaults(), "chunk_size": 2}
    eager, _, _, _, _ = node.run(model, img, 1.0, driving_video=drv, **opts)
    assert len(eager) == 5 and sum(rendered) == 5
    rendered.clear()
    comfy_env.progress.clear()
    first, mask, fps, report, stream = node.run(model, img, 1.0, driving_video=drv, **{**opts, "output_images": False})
    assert sum(rendered) == 1, "only the first frame is animated by the node itself"
    assert first.shape == (1,) + portrait.shape and mask.shape == (1,) + portrait.shape[:2]
    assert fps == drv.fps == stream.fps and "streamed" in report
    assert (stream.frame_count, stream.width, stream.height) == (5, portrait.shape[1], portrait.shape[0])
    assert comfy_env.progress[-1] == (5, 5)  # the first pass only (landmarks), not a half-full bar
    assert np.abs(first[0].numpy() - eager[0].numpy()).max() <= 1.5 / 255  # batch of 1 vs 2: fp32 rounding
    comfy_env.progress.clear()
    rendered.clear()
    acquired = model.acquired
    chunks = list(stream.iter_chunks(16))
    assert [len(c) for c in chunks] == [2, 2, 1] and sum(rendered) == 5
    assert model.acquired == acquired + 1  # the networks are (re)loaded through the model manager per read
    np.testing.assert_array_equal(np.concatenate(chunks), (eager.numpy() * 255 + 0.5).astype(np.uint8))
    assert comfy_env.progress[0] == (2, 5) and comfy_env.progress[-1] == (5, 5)
    # Cancel while a consumer reads: the next chunk raises ComfyUI's interrupt, nothing more is rendered
    it = stream.iter_chunks(16)
    next(it)
    rendered.clear()
    comfy_env.interrupt()
    import comfy.model_management as mm

    with pytest.raises(mm.InterruptProcessingException):
        next(it)
    assert rendered == []


def test_animate_node_streams_a_source_video(nets, portrait, testdata, comfy_stubs) -> None:
    node = M.LivePortraitAnimate()
    drv = torch.from_numpy(read_frames(testdata / "d20.mp4", 3)).float() / 255
    src = torch.from_numpy(np.stack([portrait, portrait[:, ::-1], portrait])).float() / 255
    eager, masks, _, _, _ = node.run(FakeModel(nets), src, 25.0, driving_images=drv, **_defaults())
    first, mask, _, _, stream = node.run(FakeModel(nets), src, 25.0, driving_images=drv,
                                         **{**_defaults(), "output_images": False})
    assert first.shape == (1,) + portrait.shape and torch.equal(mask, masks[:1])
    assert stream.frame_count == 3 and stream.fps == 25.0
    np.testing.assert_array_equal(stream.read_all(), (eager.numpy() * 255 + 0.5).astype(np.uint8))


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
