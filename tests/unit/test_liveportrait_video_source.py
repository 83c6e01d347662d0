"""Source-video animation (video-to-video) and the Kalman smoothing it uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.liveportrait import keypoints as K
from comfyui_digitalhuman.engine.liveportrait import video_source as V
from comfyui_digitalhuman.engine.liveportrait.networks import small_config
from comfyui_digitalhuman.engine.liveportrait.options import AnimateOptions
from comfyui_digitalhuman.engine.liveportrait.smoothing import kalman_smooth
from comfyui_digitalhuman.model_loaders.liveportrait import synthetic_liveportrait

from media_frames import read_frames
from rounding import assert_within, chain_bound, keypoint_bound, network_atol
from test_liveportrait_animate import StandInFace  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "liveportrait" / "kalman_reference.npz"


def test_kalman_smoother_matches_reference_library() -> None:
    """The fixture holds pykalman's KalmanFilter(...).smooth output (the reference's smoother) for this input."""
    x = (np.random.default_rng(0).standard_normal((30, 63)) * 0.01).cumsum(0)
    with np.load(FIXTURE) as data:
        expected = data["smoothed"]
    got = kalman_smooth(x, 3e-7, 1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-7, rtol=1e-6)
    assert np.abs(got - x).max() > 1e-5  # it does smooth
    const = np.ones((5, 3), np.float32) * 0.25
    np.testing.assert_allclose(kalman_smooth(const), const, atol=1e-7)


@pytest.fixture(scope="module")
def nets():
    return synthetic_liveportrait(small_config(), seed=7)


@pytest.fixture(scope="module")
def clips(testdata: Path):
    return read_frames(testdata / "d20.mp4", 3), read_frames(testdata / "yongen.mp4", 2)


def test_video_to_video_has_min_length_and_keeps_background(nets, clips) -> None:
    source, driving = clips
    anim = V.animate_video(nets, source, driving, StandInFace(), AnimateOptions(chunk_size=2))
    chunks = list(anim)
    frames = np.concatenate([c.frames for c in chunks])
    assert anim.n == 2 and frames.shape == (2,) + source.shape[1:]
    for i in range(2):
        outside = anim.face_mask(i) == 0
        assert outside.any() and np.array_equal(frames[i][outside], source[i][outside])
        assert not np.array_equal(frames[i], source[i])


def test_single_driving_image_drives_every_source_frame(nets, clips) -> None:
    source, driving = clips
    source = source.copy()
    source[1] = 0  # a source frame without a face passes through
    anim = V.animate_video(nets, source, driving[:1], StandInFace(), AnimateOptions(chunk_size=2))
    frames = np.concatenate([c.frames for c in anim])
    assert len(frames) == 3 and anim.missing == [1]
    assert np.array_equal(frames[1], source[1])


def test_static_clips_reproduce_the_source_keypoints(nets, clips) -> None:
    """Same source frame repeated, same driving frame repeated: targets are constant, smoothing keeps them."""
    source, driving = clips
    opts = AnimateOptions(stitching=False)
    s = nets.keypoint_info(nets.to_input(np.repeat(source[:1], 3, 0)))
    d = nets.keypoint_info(nets.to_input(np.repeat(driving[:1], 3, 0)))
    exp_t, rot_t = V.target_motion(s, d, opts, driving_is_video=True)
    # the rows of a batch of equal frames differ by the network's rounding, on some CPUs (the smoother
    # averages them): s.exp + d.exp - d0.exp is within a network's rounding of s.exp twice over
    bound = 2 * network_atol(d.exp) + chain_bound(s.exp.abs() + 2 * d.exp.abs(), 4)
    assert_within(exp_t, s.exp, bound, "static expression target")
    x = V.compose_video(s, d, exp_t, rot_t, opts)
    torch.testing.assert_close(x, K.transform_keypoint(s), atol=1e-5, rtol=0)


def test_absolute_pose_region_takes_driving_rotation_and_translation(nets, clips) -> None:
    source, driving = clips
    opts = AnimateOptions(relative_motion=False, animation_region="pose", stitching=False)
    s = nets.keypoint_info(nets.to_input(source[:2]))
    d = nets.keypoint_info(nets.to_input(driving[:2]))
    exp_t, rot_t = V.target_motion(s, d, opts, driving_is_video=True)
    x = V.compose_video(s, d, exp_t, rot_t, opts)
    t = d.t.clone()
    t[:, 2] = 0
    expected = s.scale[..., None] * (s.kp @ torch.from_numpy(kalman_smooth(d.rotation.numpy())) + s.exp) + t[:, None]
    assert_within(x, expected, keypoint_bound(s.scale, s.kp, s.exp, t), "absolute pose")
