"""LivePortrait nodes (classic API contract, runs on the real ComfyUI modules) and the expression editor engine."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.liveportrait import animate as A
from comfyui_digitalhuman.engine.liveportrait import keypoints as K
from comfyui_digitalhuman.engine.liveportrait.edit import (Expression, apply_sliders, edit_portrait, edited_keypoints,
                                                           load_preset, mixed_expression, sample_keypoints, save_preset)
from comfyui_digitalhuman.engine.liveportrait.options import AnimateOptions
from comfyui_digitalhuman.model_loaders.liveportrait import synthetic_liveportrait
from comfyui_digitalhuman.nodes import motion as M
from comfyui_digitalhuman.nodes.common import CAT_MOTION

from comfyui_digitalhuman.engine.liveportrait.networks import small_config
from media_frames import read_frames
from rounding import assert_within, chain_bound
from test_liveportrait_animate import StandInFace  # noqa: E402


@pytest.fixture(scope="module")
def nets():
    return synthetic_liveportrait(small_config(), seed=5)


@pytest.fixture(scope="module")
def portrait(testdata: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(testdata / "s0.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def sample_face(testdata: Path) -> np.ndarray:
    """The expression sample: a different real face (s6)."""
    return cv2.cvtColor(cv2.imread(str(testdata / "s6.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def edit_src(nets, portrait):
    return A.prepare_source(nets, portrait, StandInFace(), AnimateOptions())


@pytest.fixture(scope="module")
def sample(nets, sample_face):
    info = sample_keypoints(nets, sample_face, StandInFace())
    assert info.exp.abs().min() > 0 and min(abs(float(a)) for a in (info.pitch, info.yaw, info.roll)) > 1
    return info


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
    monkeypatch.setattr(A, "render", lambda nets_, src, x_d, face, **kw: rendered.append(len(x_d)) or
                        real_render(nets_, src, x_d, face, **kw))
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


def test_expression_editor_node_previews_saves_and_loads_presets(nets, portrait, sample_face, comfy_stubs, comfy_env,
                                                                 monkeypatch) -> None:
    node = M.ExpressionEditor()
    assert node.OUTPUT_NODE is True
    spec = M.ExpressionEditor.INPUT_TYPES()
    # the new widgets come after the older ones (saved workflows keep their positional widget values)
    assert list(spec["required"])[-5:] == ["preset", "save_as", "src_ratio", "sample_ratio", "sample_parts"]
    assert spec["required"]["sample_ratio"][1]["min"] == -0.2 and spec["required"]["sample_ratio"][1]["max"] == 1.2
    assert list(spec["optional"]) == ["sample_image"]
    widgets = {k: v[1]["default"] for k, v in spec["required"].items()
               if k not in ("liveportrait", "portrait", "preset", "save_as", "sample_parts")}
    widgets.update(smile=0.7, src_ratio=0.5, sample_parts="mouth")
    samples_seen: list = []
    real_edit = M.edit_image
    monkeypatch.setattr(M, "edit_image", lambda *a, **k: samples_seen.append(a[6]) or real_edit(*a, **k))
    img = torch.from_numpy(portrait[None]).float() / 255
    smp = torch.from_numpy(sample_face[None]).float() / 255
    out = node.run(FakeModel(nets), img, "none", "happy", sample_image=smp, **widgets)
    image, crop, text = out["result"]
    assert image.shape == img.shape and crop.shape == (1, 512, 512, 3)
    np.testing.assert_array_equal(samples_seen[-1], sample_face)  # the sample reached the engine unchanged
    # the preview: one PNG in ComfyUI's temp folder, read back equal to the face_crop output
    (entry,) = out["ui"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    path = comfy_env.dirs["temp"] / entry["filename"]
    assert path.is_file()
    shown = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(shown, (crop[0].numpy() * 255 + 0.5).astype(np.uint8))
    assert M.list_presets() == ["happy"]
    saved = Expression.from_json(text)
    assert (saved.smile, saved.src_ratio, saved.sample_ratio, saved.sample_parts) == (0.7, 0.5, 1.0, "mouth")
    # the preset brings its sliders and ratios back (the widgets are ignored), with the same sample connected
    out2 = node.run(FakeModel(nets), img, "happy", "", sample_image=smp,
                    **{**widgets, "smile": 0.0, "src_ratio": 1.0, "sample_parts": "all"})
    assert out2["result"][2] == text and torch.equal(out2["result"][0], image)
    with pytest.raises(ValueError, match="preset name"):
        node.run(FakeModel(nets), img, "none", "../evil", **widgets)
    with pytest.raises(ValueError, match="sample_image: expected one image, got a batch of 2"):
        node.run(FakeModel(nets), img, "none", "", sample_image=smp.expand(2, -1, -1, -1), **widgets)


def test_sample_without_a_face_is_an_error_before_the_portrait_is_rendered(nets, portrait, testdata, comfy_env,
                                                                           monkeypatch) -> None:
    """The real face engine, as in ComfyUI: the diagram has no face, so the sample is refused by name."""
    no_face = cv2.cvtColor(cv2.imread(str(testdata / "no_face.jpg")), cv2.COLOR_BGR2RGB)
    features: list = []
    monkeypatch.setattr(nets, "appearance_feature", lambda x: features.append(x))
    widgets = {k: v[1]["default"] for k, v in M.ExpressionEditor.INPUT_TYPES()["required"].items()
               if k not in ("liveportrait", "portrait", "preset", "save_as")}
    with pytest.raises(A.NoFaceError, match=r"no face found in the sample_image \(\d+x\d+ px\)"):
        M.ExpressionEditor().run(FakeModel(nets), torch.from_numpy(portrait[None]).float() / 255, "none", "",
                                 sample_image=torch.from_numpy(no_face[None]).float() / 255, **widgets)
    assert features == []


def _diff_rows(a: torch.Tensor, b: torch.Tensor) -> set[int]:
    return {int(k) for k in torch.nonzero((a - b)[0].abs().amax(-1) > 0).flatten()}


def test_sample_parts_mouth_and_eyes_change_only_their_keypoints(nets, edit_src, sample) -> None:
    s = edit_src.motion.info
    neutral = edited_keypoints(edit_src, Expression(), nets.retarget, stitching=False)
    for part, rows in (("mouth", (14, 17, 19, 20)), ("eyes", (1, 2, 11, 13, 15, 16))):  # AdvancedLivePortrait's sets
        x = edited_keypoints(edit_src, Expression(sample_parts=part, sample_ratio=0.7), nets.retarget,
                             stitching=False, sample=sample)
        assert _diff_rows(x, neutral) == set(rows), part
        # independent: the pose is the source's, so the keypoints move by scale * ratio * sample coefficients
        expected = torch.zeros_like(neutral)
        expected[0, list(rows)] = s.scale[0, 0] * 0.7 * sample.exp[0, list(rows)]
        torch.testing.assert_close(x - neutral, expected, atol=1e-5, rtol=0)
    # "expression": every coefficient of the sample, but keypoint 5's x/y (the global offset) zeroed
    x = edited_keypoints(edit_src, Expression(sample_parts="expression", sample_ratio=1.2), nets.retarget,
                         stitching=False, sample=sample)
    expected = s.scale[0, 0] * 1.2 * sample.exp.clone()
    expected[0, 5, :2] = 0
    torch.testing.assert_close(x - neutral, expected, atol=1e-5, rtol=0)


def test_sample_rotation_turns_the_head_and_keeps_the_expression(nets, edit_src, sample) -> None:
    s = edit_src.motion.info
    e = Expression(sample_parts="rotation", sample_ratio=0.5, head_yaw=3.0)
    exp, (pitch, yaw, roll) = mixed_expression(s, e, sample)
    assert torch.equal(exp, s.exp)
    torch.testing.assert_close(yaw, s.yaw + 3.0 + 0.5 * sample.yaw)
    x = edited_keypoints(edit_src, e, nets.retarget, stitching=False, sample=sample)
    r = K.rotation_matrix(s.pitch + 0.5 * sample.pitch, s.yaw + 3.0 + 0.5 * sample.yaw, s.roll + 0.5 * sample.roll)
    expected = s.scale[..., None] * (s.kp @ r + s.exp) + s.t[:, None, :]
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    neutral = edited_keypoints(edit_src, Expression(), nets.retarget, stitching=False)
    assert (x - neutral).abs().max() > 1e-2
    # "all" is the expression and the rotation together
    x_all = edited_keypoints(edit_src, Expression(sample_parts="all", sample_ratio=0.5), nets.retarget,
                             stitching=False, sample=sample)
    added = sample.exp.clone()
    added[0, 5, :2] = 0
    r = K.rotation_matrix(s.pitch + 0.5 * sample.pitch, s.yaw + 0.5 * sample.yaw, s.roll + 0.5 * sample.roll)
    torch.testing.assert_close(x_all, s.scale[..., None] * (s.kp @ r + s.exp + 0.5 * added) + s.t[:, None, :],
                               atol=1e-5, rtol=0)


def test_sample_ratio_zero_is_no_sample(nets, edit_src, sample) -> None:
    plain = edited_keypoints(edit_src, Expression(smile=0.4, src_ratio=0.3), nets.retarget, sample=None)
    for part in ("expression", "rotation", "mouth", "eyes", "all"):
        e = Expression(smile=0.4, src_ratio=0.3, sample_ratio=0.0, sample_parts=part)
        assert torch.equal(edited_keypoints(edit_src, e, nets.retarget, sample=sample), plain), part


def test_src_ratio_scales_the_source_expression_but_keeps_keypoint_5(nets, edit_src) -> None:
    s = edit_src.motion.info
    exp, angles = mixed_expression(s, Expression(src_ratio=0.0))
    assert torch.equal(exp[0, 5], s.exp[0, 5]) and s.exp[0, 5].abs().min() > 0
    rest = [k for k in range(21) if k != 5]
    assert torch.count_nonzero(exp[0, rest]) == 0
    assert all(torch.equal(a, b) for a, b in zip(angles, (s.pitch, s.yaw, s.roll)))
    # the driven keypoints: the canonical ones in the source pose plus only keypoint 5's offset
    x = edited_keypoints(edit_src, Expression(src_ratio=0.0), nets.retarget, stitching=False)
    torch.testing.assert_close(x, s.scale[..., None] * (s.kp @ s.rotation + exp) + s.t[:, None, :], atol=1e-5, rtol=0)
    half, _ = mixed_expression(s, Expression(src_ratio=0.5))
    torch.testing.assert_close(half[0, rest], 0.5 * s.exp[0, rest])


def test_blink_sign_and_no_head_coupling(nets, edit_src) -> None:
    """Negative blink closes the eyes: in the crop y grows downwards, and the upper lid points (11, 15) move
    down while the lower ones (13, 16) move up. Wink and aaa change expression coefficients only (no head turn,
    unlike AdvancedLivePortrait)."""
    neutral = edited_keypoints(edit_src, Expression(), nets.retarget, stitching=False)
    d = (edited_keypoints(edit_src, Expression(blink=-10.0), nets.retarget, stitching=False) - neutral)[0]
    assert d[11, 1] > 0 and d[15, 1] > 0 and d[13, 1] < 0 and d[16, 1] < 0
    assert _diff_rows(d[None], torch.zeros_like(neutral)) == {11, 13, 15, 16}
    x = edited_keypoints(edit_src, Expression(wink=20.0, aaa=60.0), nets.retarget, stitching=False)
    assert _diff_rows(x, neutral) == {3, 11, 13, 17, 19}


def test_expression_sliders_move_only_their_coefficients(nets, portrait) -> None:
    src = A.prepare_source(nets, portrait, StandInFace(), AnimateOptions())
    neutral = edited_keypoints(src, Expression(), nets.retarget, stitching=False)
    smile = edited_keypoints(src, Expression(smile=1.0), nets.retarget, stitching=False)
    changed = {(k, c) for k, c in zip(*np.nonzero((smile - neutral)[0].abs().numpy() > 0))}
    assert changed == {(20, 1), (14, 1), (17, 1), (17, 2), (13, 1), (16, 1), (3, 1), (7, 1)}
    s = src.motion.info
    # both compositions share kp @ R; + exp, x scale, + t and the pipeline's tail round apart (<= 8 times)
    assert_within((smile - neutral)[0, 14, 1], s.scale[0, 0] * -0.02,
                  chain_bound(smile[0, 14, 1].abs() + neutral[0, 14, 1].abs(), 8), "smile coefficient")
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
    with pytest.raises(ValueError, match="'sample_parts' = 'nose'"):
        Expression(sample_parts="nose").validate()
    with pytest.raises(ValueError, match="'sample_ratio' = 1.5 is outside"):
        Expression(sample_ratio=1.5).validate()


def test_old_presets_without_the_sample_fields_load_with_defaults(tmp_path: Path) -> None:
    old = tmp_path / "old.json"  # a preset as saved before src_ratio/sample_ratio/sample_parts existed
    old.write_text('{"smile": 0.5, "wink": 0.0, "blink": -3.0, "eyebrow": 0.0, "pupil_x": 0.0, "pupil_y": 0.0, '
                   '"pout": 0.0, "woo": 0.0, "eee": 0.0, "aaa": 10.0, "head_pitch": 0.0, "head_yaw": 2.0, '
                   '"head_roll": 0.0, "mov_x": 0.0, "mov_y": 0.0, "mov_z": 1.0, "eyes_open": null, "lips_open": null}')
    e = load_preset(old)
    assert (e.smile, e.blink, e.aaa, e.head_yaw) == (0.5, -3.0, 10.0, 2.0)
    assert (e.src_ratio, e.sample_ratio, e.sample_parts) == (1.0, 1.0, "expression")
    # saved again, the new fields are part of the JSON
    again = load_preset(save_preset(Expression(src_ratio=0.2, sample_ratio=-0.1, sample_parts="eyes"),
                                    tmp_path / "new.json"))
    assert (again.src_ratio, again.sample_ratio, again.sample_parts) == (0.2, -0.1, "eyes")
