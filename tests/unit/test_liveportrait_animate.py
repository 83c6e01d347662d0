"""The LivePortrait animation pipeline on real media, with small networks and a stand-in face engine.

The networks are the real architectures in a small configuration (random weights loaded through
the real loader); the face operations are a simple stand-in with the FaceOps interface, so the
pipeline is tested on its own (the pack's face engine is tested with its own module).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.liveportrait import animate as A
from media_frames import read_frames
from rounding import assert_within, chain_bound, keypoint_bound, network_atol
from comfyui_digitalhuman.engine.liveportrait import keypoints as K
from comfyui_digitalhuman.engine.liveportrait.motion import drive_keypoints, prepare_source_motion
from comfyui_digitalhuman.engine.liveportrait.networks import small_config
from comfyui_digitalhuman.engine.liveportrait.options import AnimateOptions
from comfyui_digitalhuman.engine.liveportrait.runtime import LivePortraitNets, output_is_bad
from comfyui_digitalhuman.model_loaders.liveportrait import synthetic_liveportrait


class StandInFace:
    """FaceOps stand-in: a face-sized box in the upper middle of any frame that is not (nearly) black."""

    def __init__(self) -> None:
        self.calls = 0

    def landmarks(self, frames: np.ndarray) -> list[np.ndarray | None]:
        self.calls += len(frames)
        out = []
        for f in frames:
            if f.mean() < 8:
                out.append(None)
                continue
            h, w = f.shape[:2]
            lmk = np.zeros((468, 3), np.float32)
            lmk[:, 0], lmk[:, 1] = w / 2, h * 0.45
            lmk[0, :2] = (w / 2 - 0.15 * min(h, w), h * 0.45 - 0.15 * min(h, w))
            lmk[1, :2] = (w / 2 + 0.15 * min(h, w), h * 0.45 + 0.15 * min(h, w))
            lmk[2, 0] = f.mean() / 255  # something that changes between frames, read by the ratios
            out.append(lmk)
        return out

    def crop(self, image, lmk, dsize, scale, vx_ratio, vy_ratio, do_rot):
        (x0, y0), (x1, y1) = lmk[0, :2], lmk[1, :2]
        side = (x1 - x0) * scale / 2
        cx, cy = (x0 + x1) / 2 + vx_ratio * side, (y0 + y1) / 2 - vy_ratio * side
        s = dsize / side
        m = np.array([[s, 0, dsize / 2 - s * cx], [0, s, dsize / 2 - s * cy], [0, 0, 1]], np.float64)
        return self.warp_to_crop(image, m, dsize), m

    def warp_to_crop(self, image, M_o2c, dsize):
        return cv2.warpAffine(image, M_o2c[:2], (dsize, dsize), flags=cv2.INTER_LINEAR)

    def paste_mask(self, dsize):
        r = np.linspace(-1, 1, dsize)
        d = np.maximum(np.abs(r)[None, :], np.abs(r)[:, None])
        return np.clip((0.9 - d) / 0.2, 0, 1).astype(np.float32)

    def paste_back(self, frame, crop, M_c2o, mask):
        h, w = frame.shape[:2]
        warped = cv2.warpAffine(crop, M_c2o[:2], (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
        m = cv2.warpAffine(mask, M_c2o[:2], (w, h), flags=cv2.INTER_LINEAR)[..., None]
        return np.clip(m * warped + (1 - m) * frame, 0, 255).astype(np.uint8)

    def eye_ratio(self, lmk):
        return np.array([0.3 + lmk[2, 0] / 4, 0.31], np.float32)

    def lip_ratio(self, lmk):
        return np.array([0.05 + lmk[2, 0] / 10], np.float32)


@pytest.fixture(scope="module")
def nets() -> LivePortraitNets:
    torch.manual_seed(0)
    return synthetic_liveportrait(small_config(), seed=3)


@pytest.fixture(scope="module")
def portrait(testdata: Path) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(testdata / "s0.jpg")), cv2.COLOR_BGR2RGB)
    return img


@pytest.fixture(scope="module")
def driving(testdata: Path) -> np.ndarray:
    return read_frames(testdata / "d20.mp4", 3)


def run(nets, src, drv, face=None, **opts) -> tuple[A.Animation, np.ndarray, np.ndarray]:
    anim = A.animate(nets, src, drv, face or StandInFace(), AnimateOptions(**opts))
    chunks = list(anim)
    return anim, np.concatenate([c.frames for c in chunks]), np.concatenate([c.crops for c in chunks])


def test_animates_real_portrait_with_pasteback(nets, portrait, driving) -> None:
    done = []
    anim = A.animate(nets, portrait, driving, StandInFace(), AnimateOptions(chunk_size=3),
                     progress=lambda d, t: done.append((d, t)))
    frames = np.concatenate([c.frames for c in anim])
    assert frames.shape == (len(driving),) + anim.source.image.shape
    assert anim.missing == []
    mask = anim.face_mask
    outside, inside = mask == 0, mask > 0.99
    assert outside.any() and inside.any()
    # background outside the paste-back mask is the source, bit for bit
    assert np.array_equal(frames[:, outside], np.broadcast_to(anim.source.image[outside], frames[:, outside].shape))
    # the face region changes with the driving frames and differs from the source
    assert np.abs(frames[1].astype(int) - frames[0].astype(int))[inside].mean() > 0
    assert done[-1][0] == done[-1][1] == 2 * len(driving)


def test_missing_driving_faces_pass_or_hold(nets, portrait, driving) -> None:
    drv = driving.copy()
    drv[2] = 0  # a frame without a face
    anim, frames, crops = run(nets, portrait, drv, chunk_size=2)
    assert anim.missing == [2]
    assert np.array_equal(frames[2], anim.source.image)
    assert not np.array_equal(frames[1], anim.source.image)
    anim_h, frames_h, crops_h = run(nets, portrait, drv, chunk_size=2, missing_face="hold")
    assert anim_h.missing == [2]
    # the last good driving frame is held (computed in another batch: equal up to conv rounding)
    assert np.abs(crops_h[2].astype(int) - crops_h[1].astype(int)).max() <= 2
    assert np.abs(crops_h[2].astype(int) - crops[0].astype(int)).max() > 2


def test_first_frame_is_identity_in_relative_mode(nets, portrait, driving) -> None:
    """Relative motion anchors on driving frame 0: with it, the driven keypoints are the source's own."""
    opts = AnimateOptions(stitching=False)
    src = A.prepare_source(nets, portrait, StandInFace(), opts)
    info = nets.keypoint_info(nets.to_input(driving[:1]))
    x_d = drive_keypoints(src.motion, info, info, opts, nets.retarget)
    torch.testing.assert_close(x_d, src.motion.x_s, atol=1e-5, rtol=0)


def test_no_face_in_portrait_fails_before_any_network(nets, driving, testdata: Path) -> None:
    img = np.zeros((300, 200, 3), np.uint8)
    calls = []
    orig = nets.guarded
    nets.guarded = lambda *a, **k: calls.append(a[0]) or orig(*a, **k)
    try:
        with pytest.raises(A.NoFaceError, match="no face found in the source portrait"):
            A.animate(nets, img, driving, StandInFace())
    finally:
        del nets.guarded
    assert calls == []


def test_no_face_in_any_driving_frame_is_an_error(nets, portrait) -> None:
    with pytest.raises(ValueError, match="no face found in any of the 3 driving frames"):
        A.animate(nets, portrait, np.zeros((3, 64, 64, 3), np.uint8), StandInFace())


def test_gray_rgba_small_and_large_portraits(nets, portrait, driving) -> None:
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([portrait, np.full(portrait.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    small = cv2.resize(portrait, (200, 200))
    big = cv2.resize(portrait, (3840, 2160))
    for img, hw in ((gray, portrait.shape[:2]), (rgba, portrait.shape[:2]), (small, (200, 200)), (big, (720, 1280))):
        src = A.prepare_source(nets, img, StandInFace(), AnimateOptions())
        assert src.image.shape == hw + (3,) and src.mask.shape == hw
    anim, frames, _ = run(nets, gray, driving[:1])  # a single driving image: lip_array anchored expression
    assert frames.shape == (1,) + portrait.shape


def test_streaming_source_and_other_aspect_ratio(nets, portrait, driving) -> None:
    class Stream:  # the FrameStream interface: re-iterable chunks and a length
        def __init__(self, frames):
            self.frames, self.reads = frames, 0

        def __len__(self):
            return len(self.frames)

        def iter_chunks(self, n):
            self.reads += 1
            for i in range(0, len(self.frames), n):
                yield self.frames[i:i + n]

    wide = np.ascontiguousarray(np.concatenate([driving[:2], driving[:2, :, : driving.shape[2] // 2]], axis=2))
    stream = Stream(wide)
    anim, frames, _ = run(nets, portrait, stream, chunk_size=3)
    assert len(frames) == len(wide) and stream.reads == 2
    assert anim.track.M_o2c is not None  # a non-square driving video is cropped around the face


def test_driving_frames_of_different_sizes_are_rejected(nets, portrait, driving) -> None:
    def chunks(n):
        yield driving[:2]
        yield driving[2:3, :100]

    with pytest.raises(ValueError, match="driving frame 2: size"):
        A.animate(nets, portrait, chunks, StandInFace(), AnimateOptions(chunk_size=2))


def test_option_validation() -> None:
    with pytest.raises(ValueError, match="animation_region 'face'"):
        AnimateOptions(animation_region="face")
    with pytest.raises(ValueError, match=r"unknown LivePortrait option\(s\) \['flag_x'\]"):
        AnimateOptions.from_dict({"flag_x": 1})


# --- the keypoint composition, branch by branch -------------------------------------------------


@pytest.fixture(scope="module")
def motion_case(nets):
    g = torch.Generator().manual_seed(4)

    def info(n):
        return K.refine({"pitch": torch.randn(n, 66, generator=g), "yaw": torch.randn(n, 66, generator=g),
                         "roll": torch.randn(n, 66, generator=g), "t": 0.05 * torch.randn(n, 3, generator=g),
                         "exp": 0.02 * torch.randn(n, 63, generator=g), "scale": 1.5 + 0.1 * torch.rand(n, 1, generator=g),
                         "kp": 0.3 * torch.randn(n, 63, generator=g)})

    s, d = info(1), info(4)
    return s, d


def _src(s, opts, nets):
    return prepare_source_motion(s, np.array([0.3, 0.3]), np.array([0.1]), opts, nets.retarget.lip)


def test_pose_region_keeps_source_expression(nets, motion_case) -> None:
    s, d = motion_case
    opts = AnimateOptions(animation_region="pose", stitching=False, driving_option="pose-friendly")
    x = drive_keypoints(_src(s, opts, nets), d, d.select(0), opts, nets.retarget)
    rot = (d.rotation @ d.select(0).rotation.transpose(1, 2)) @ s.rotation
    t = s.t + (d.t - d.select(0).t)
    t[:, 2] = 0
    expected = s.scale[..., None] * (s.kp @ rot + s.exp) + t[:, None]
    assert_within(x, expected, keypoint_bound(s.scale, s.kp, s.exp, t), "pose region")


def test_exp_region_keeps_source_pose_and_multiplier_scales_motion(nets, motion_case) -> None:
    s, d = motion_case
    opts = AnimateOptions(animation_region="exp", stitching=False, driving_option="pose-friendly")
    src = _src(s, opts, nets)
    x = drive_keypoints(src, d, d.select(0), opts, nets.retarget)
    expected = s.scale[..., None] * (s.kp @ s.rotation + s.exp + (d.exp - d.select(0).exp))
    expected[..., :2] += s.t[:, None, :2]
    exp_mag = s.exp.abs() + d.exp.abs() + d.select(0).exp.abs()
    assert_within(x, expected, keypoint_bound(s.scale, s.kp, exp_mag, s.t), "exp region")
    half = drive_keypoints(src, d, d.select(0), AnimateOptions(**{**opts.to_dict(), "driving_multiplier": 0.5}),
                           nets.retarget)
    # the same composition on both sides; only x_s + (x - x_s) * 0.5 is evaluated apart (3 roundings)
    assert_within(half, src.x_s + 0.5 * (x - src.x_s), chain_bound(x.abs() + src.x_s.abs(), 3), "multiplier 0.5")


def test_absolute_exp_copies_only_the_listed_coefficients(nets, motion_case) -> None:
    s, d = motion_case
    opts = AnimateOptions(relative_motion=False, animation_region="exp", stitching=False)
    x = drive_keypoints(_src(s, opts, nets), d, d.select(0), opts, nets.retarget)
    delta = s.exp.expand(4, -1, -1).clone()
    for k in (1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20):
        delta[:, k] = d.exp[:, k]
    delta[:, 3:5, 1], delta[:, 5, 2], delta[:, 8, 2], delta[:, 9, 1:] = (d.exp[:, 3:5, 1], d.exp[:, 5, 2],
                                                                          d.exp[:, 8, 2], d.exp[:, 9, 1:])
    expected = s.scale[..., None] * (s.kp @ s.rotation + delta)
    expected[..., :2] += s.t[:, None, :2]
    assert_within(x, expected, keypoint_bound(s.scale, s.kp, delta, s.t), "absolute exp")


def test_expression_friendly_rescales_by_hull_ratio(nets, motion_case) -> None:
    s, d = motion_case
    pose = AnimateOptions(stitching=False, driving_option="pose-friendly")
    expr = AnimateOptions(stitching=False)
    src = _src(s, expr, nets)
    xp = drive_keypoints(src, d, d.select(0), pose, nets.retarget)
    xe = drive_keypoints(src, d, d.select(0), expr, nets.retarget)
    m = K.motion_multiplier(src.x_s, xp[:1])
    # (x - x0) * m + x_s, with x, x0 and m each from an evaluation of their own (the multiplier's
    # hull ratio moves by <= 1.5x a change of the keypoints: test_liveportrait_parity)
    mag = (xp.abs() + xp[:1].abs()) * m + src.x_s.abs()
    assert_within(xe, (xp - xp[:1]) * m + src.x_s, chain_bound(mag, 12), "expression-friendly")


def test_eye_and_lip_retargeting_in_relative_mode_start_from_source(nets, motion_case) -> None:
    s, d = motion_case
    opts = AnimateOptions(eye_retargeting=True, lip_retargeting=True, stitching=False)
    src = _src(s, opts, nets)
    eyes, lips = np.full((4, 2), 0.2, np.float32), np.full((4, 1), 0.4, np.float32)
    x = drive_keypoints(src, d, d.select(0), opts, nets.retarget, eyes, lips)
    with torch.no_grad():
        e = nets.retarget.eye(torch.cat([src.x_s.reshape(1, -1), torch.tensor([[0.3, 0.3, 0.2]])], 1)).reshape(1, 21, 3)
        li = nets.retarget.lip(torch.cat([src.x_s.reshape(1, -1), torch.tensor([[0.1, 0.4]])], 1)).reshape(1, 21, 3)
    # e and li come from MLPs run on a batch of 4 there and of 1 here: a network's rounding each
    bound = chain_bound(src.x_s.abs() + e.abs() + li.abs(), 6) + network_atol(e) + network_atol(li)
    assert_within(x, (src.x_s + e + li).expand(4, -1, -1), np.broadcast_to(bound, x.shape), "eye + lip retargeting")
    with pytest.raises(ValueError, match="eye-open ratios"):
        drive_keypoints(src, d, d.select(0), opts, nets.retarget)


def test_fp16_nan_is_detected_and_network_falls_back_to_fp32() -> None:
    class NaNInHalf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            y = x * self.w
            return y * float("nan") if y.dtype == torch.float16 else y

    lin = torch.nn.Linear(2, 2)
    nets = LivePortraitNets(appearance=lin, motion=lin, warping=lin, generator=NaNInHalf().half(), retarget=None)
    out = nets.guarded("generator", torch.full((1, 3), 0.5), black_check=True)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert nets.fell_back == {"generator"} and nets.generator.w.dtype == torch.float32
    assert output_is_bad(torch.zeros(2, 3), black_check=True) == "black"
    assert output_is_bad({"a": torch.tensor([1.0, float("inf")])}) == "NaN/Inf"
    assert output_is_bad(torch.rand(2, 3) + 0.1, black_check=True) is None


def test_half_precision_kernel_missing_falls_back_to_fp32() -> None:
    class NoHalfKernel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            if x.dtype != torch.float32:
                raise NotImplementedError('"some_kernel" not implemented for \'BFloat16\'')
            return x * self.w

    lin = torch.nn.Linear(2, 2)
    nets = LivePortraitNets(appearance=NoHalfKernel().bfloat16(), motion=lin, warping=lin, generator=lin, retarget=None)
    out = nets.guarded("appearance", torch.ones(1, 3))
    assert nets.fell_back == {"appearance"} and out.dtype == torch.float32
    broken = LivePortraitNets(appearance=torch.nn.Linear(2, 2).bfloat16(), motion=lin, warping=lin, generator=lin,
                              retarget=None)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):  # other errors are not swallowed
        broken.guarded("appearance", torch.ones(1, 3))
    assert broken.fell_back == set()


def test_real_face_engine_drives_the_crops(nets, portrait, testdata: Path) -> None:
    """The pack's own face engine (not a stand-in) finds and crops the faces of s0.jpg and d20.mp4."""
    from comfyui_digitalhuman.engine.liveportrait.faces import EngineFaceOps

    driving = read_frames(testdata / "d20.mp4", 30)[::10]  # frames 0, 10, 20
    face = EngineFaceOps()
    anim = A.animate(nets, portrait, driving, face, AnimateOptions(chunk_size=2))
    frames = np.concatenate([c.frames for c in anim])
    assert frames.shape == (3,) + portrait.shape and anim.missing == []
    # the source crop is centred on the detected face: its landmarks land near the crop's middle
    lmk = face.landmarks(portrait[None])[0][:, :2]
    M_o2c = np.linalg.inv(anim.source.M_c2o)
    centre = (np.c_[lmk, np.ones(len(lmk))] @ M_o2c[:2].T).mean(0)
    size = anim.source.crop.shape[0]
    assert np.all(np.abs(centre - size / 2) < size * 0.15), centre
    mask = anim.face_mask
    inside = mask > 0.99
    ys, xs = np.nonzero(inside)
    box = face.analyzer.detect(portrait)[0].box
    assert box[0] - 40 < xs.mean() < box[2] + 40 and box[1] - 40 < ys.mean() < box[3] + 80  # mask sits on the face
    outside = mask == 0
    assert np.array_equal(frames[:, outside], np.broadcast_to(portrait[outside], frames[:, outside].shape))


# -- Cancel inside a chunk ---------------------------------------------------------------------------
HEAVY = ("appearance", "motion", "warping", "generator")  # the stitching MLP (0.2 ms a call) is no stop point


class Cancelled(Exception):
    pass


class CallLog:
    """Records every heavy network call (forward pre-hooks on the real modules) and every Cancel check;
    the check raises :class:`Cancelled` once it has been called ``allow`` times."""

    def __init__(self, nets: LivePortraitNets, allow: int | None = None) -> None:
        self.events: list[str] = []
        self.allow = allow
        self._hooks = [getattr(nets, name).register_forward_pre_hook(lambda m, a, name=name: self.events.append(name))
                       for name in HEAVY]

    def check(self) -> None:
        self.events.append("check")
        if self.allow is not None and self.events.count("check") > self.allow:
            raise Cancelled("cancel")

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    def runs_between_checks(self) -> list[list[str]]:
        """The network calls made between consecutive checks (and before the first one)."""
        out, cur = [], []
        for e in self.events:
            if e == "check":
                out.append(cur)
                cur = []
            else:
                cur.append(e)
        return out + [cur]


@pytest.fixture(scope="module")
def driving8(testdata: Path) -> np.ndarray:
    return read_frames(testdata / "d20.mp4", 8)


def test_cancel_is_checked_before_every_network_call(nets, portrait, driving8) -> None:
    """With the default chunk of 8 frames, every F/M/W/G call is preceded by a Cancel check since the
    previous one (not only one check per chunk: on a CPU a chunk of W+G calls takes a minute)."""
    calls = CallLog(nets)
    try:
        anim = A.animate(nets, portrait, driving8, StandInFace(), AnimateOptions(), check_interrupt=calls.check)
        list(anim)
    finally:
        calls.close()
    assert AnimateOptions().chunk_size == 8
    runs = calls.runs_between_checks()
    assert max(len(r) for r in runs) <= 1, [r for r in runs if len(r) > 1]
    assert calls.events.count("generator") >= 1 and calls.events.count("warping") == calls.events.count("generator")


def test_cancel_inside_a_chunk_stops_within_one_network_call(nets, portrait, driving) -> None:
    """A check that raises after N calls, for every N from the chunk's start to its last network
    call: the run stops, at most one network call ran since the last check that passed, none after."""
    full = CallLog(nets)
    try:
        list(A.animate(nets, portrait, driving, StandInFace(), AnimateOptions(), check_interrupt=full.check))
    finally:
        full.close()
    ev = full.events
    chunk_motion = ev.index("motion", ev.index("appearance"))  # the frame pass's first M call (after the source's)
    start = ev[:chunk_motion].count("check")
    n_checks = ev.count("check")
    assert ev.count("warping") == len(driving) and n_checks == start + 2 * len(driving)  # one W and one G per frame
    for allow in range(start - 2, n_checks):  # raise at the chunk's own check, before M, and before every W and G
        calls = CallLog(nets, allow=allow)
        try:
            with pytest.raises(Cancelled):
                list(A.animate(nets, portrait, driving, StandInFace(), AnimateOptions(), check_interrupt=calls.check))
        finally:
            calls.close()
        runs = calls.runs_between_checks()
        assert runs[-1] == [], f"allow={allow}: network calls after the raising check: {runs[-1]}"
        assert len(runs[-2]) <= 1, f"allow={allow}: {runs[-2]} ran between the last two checks"


def test_cancel_while_streaming_to_mp4_keeps_the_frames_written(nets, portrait, driving8, tmp_path) -> None:
    """Cancel in the middle of a chunk of a streamed animation: the MP4 writer keeps the chunk it had."""
    import av

    from comfyui_digitalhuman.engine.media.video_write import partial_path_for, write_mp4

    anim = A.animate(nets, portrait, driving8[:4], StandInFace(), AnimateOptions(chunk_size=2))
    h, w = anim.source.image.shape[:2]
    # a stream read checks once per chunk, then before M, W, G, W, G: the 9th check is chunk 2's first W
    calls = CallLog(nets, allow=8)
    stream = A.animation_stream(anim, 25.0, w, h, anim.n, check_interrupt=calls.check)
    target = tmp_path / "cancelled.mp4"
    try:
        with pytest.raises(Cancelled):
            write_mp4(target, stream, 25.0, preset="ultrafast")
    finally:
        calls.close()
    assert calls.events.count("generator") == 2 and calls.events.count("motion") == 2  # stopped inside chunk 2
    assert not target.exists()
    with av.open(str(partial_path_for(target))) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == 2, f"the first chunk of 2 frames should be kept, found {n}"
