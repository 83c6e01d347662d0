"""Full-length check on real media: s0.jpg driven by ALL of d20.mp4, streamed into an MP4 and read back.

Reduced network configuration (random weights, the published code paths) and the pack's real face
engine; the frames flow driving decoder -> animation -> H.264 encoder one chunk at a time.
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.liveportrait import animate as A
from comfyui_digitalhuman.engine.liveportrait.networks import small_config
from comfyui_digitalhuman.engine.liveportrait.options import AnimateOptions
from comfyui_digitalhuman.engine.media.audio_io import load_audio, read_audio_track
from comfyui_digitalhuman.engine.media.stream import FrameStream
from comfyui_digitalhuman.engine.media.video_io import probe
from comfyui_digitalhuman.engine.media.video_write import write_mp4
from comfyui_digitalhuman.model_loaders.liveportrait import synthetic_liveportrait


def measure_mp4(path: Path, portrait: np.ndarray, face: np.ndarray, outside: np.ndarray) -> dict:
    """Read the MP4 back frame by frame (PyAV): count, rate, face change from frame 0, background error."""
    first = None
    face_change, background_err, means = [], [], []
    with av.open(str(path)) as c:
        rate = float(c.streams.video[0].average_rate)
        for frame in c.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            f = rgb[face].astype(np.float32)
            first = f if first is None else first
            face_change.append(float(np.abs(f - first).mean()))
            background_err.append(float(np.abs(rgb[outside].astype(np.float32) - portrait[outside]).mean()))
            means.append(float(rgb.mean()))
    return dict(count=len(means), rate=rate, face_change=np.array(face_change), background_err=np.array(background_err),
                means=np.array(means))


pytestmark = pytest.mark.slow  # ~1 min on a quiet 2-core CPU (mostly the face engine and the reduced networks)


@pytest.fixture(scope="module")
def result(testdata: Path, tmp_path_factory) -> dict:
    from comfyui_digitalhuman.engine.liveportrait.faces import EngineFaceOps

    nets = synthetic_liveportrait(small_config(), seed=11)
    # W and G a chunk at a time: the reduced networks are 3.5x faster batched on a CPU, unlike the full-size
    # ones (one frame per call there, the pipeline's CPU default; Cancel inside a chunk is tested elsewhere)
    nets.render_batch = 16
    finite: list[bool] = []
    driven: list[torch.Tensor] = []
    real_warp_decode = nets.warp_decode

    def checked(f_s, x_s, x_d, interrupt=None):  # every rendered batch, before the uint8 conversion hides NaN
        out = real_warp_decode(f_s, x_s, x_d, interrupt)
        finite.append(bool(torch.isfinite(out).all()))
        driven.append(x_d.clone())
        return out

    nets.warp_decode = checked
    portrait = cv2.cvtColor(cv2.imread(str(testdata / "s0.jpg")), cv2.COLOR_BGR2RGB)
    driving = FrameStream.from_video(testdata / "d20.mp4")
    progress: list[tuple[int, int]] = []
    interrupts: list[int] = []
    with torch.inference_mode():
        anim = A.animate(nets, portrait, driving, EngineFaceOps(), AnimateOptions(chunk_size=16))
        h, w = anim.source.image.shape[:2]
        stream = A.animation_stream(anim, driving.fps, w, h, anim.n, make_progress=lambda total: (
            lambda done, tot: progress.append((done, tot))), check_interrupt=lambda: interrupts.append(1))
        outside = anim.face_mask == 0
        exact: list[bool] = []

        def background_check(batch: np.ndarray) -> np.ndarray:  # before encoding: bit-exact outside the mask
            exact.append(bool(np.array_equal(batch[:, outside], np.broadcast_to(portrait[outside],
                                                                                 batch[:, outside].shape))))
            return batch

        out = tmp_path_factory.mktemp("full") / "s0_d20.mp4"
        info = write_mp4(out, stream.map_chunks(background_check, "background check"), stream.fps,
                         audio=read_audio_track(testdata / "d20.mp4"), crf=12, preset="ultrafast")
    read = measure_mp4(out, portrait, anim.face_mask > 0.99, outside)
    return dict(anim=anim, info=info, read=read, out=out, finite=finite, exact=exact, driven=torch.cat(driven),
                progress=progress, interrupts=interrupts, outside=outside)


def test_frame_count_fps_and_audio_length_match_the_driving_video(result, testdata: Path) -> None:
    ref = probe(testdata / "d20.mp4")
    assert ref.frame_count == 175 and result["anim"].n == 175 and result["anim"].missing == []
    assert result["read"]["count"] == result["info"].frame_count == 175
    assert result["read"]["rate"] == pytest.approx(ref.fps) == 25.0
    got = probe(result["out"])
    assert got.has_audio and got.frame_count == 175
    wave_in, sr_in = load_audio(testdata / "d20.mp4")
    wave_out, sr_out = load_audio(result["out"])
    # the track is fitted to the 7.000 s of video (d20's audio runs 7.011 s); AAC frames are 23 ms
    assert abs(wave_out.shape[1] / sr_out - wave_in.shape[1] / sr_in) < 0.05
    assert abs(wave_out.shape[1] / sr_out - 175 / 25) < 0.03
    # the stream reported progress up to the end and checked for Cancel once per chunk and, inside it,
    # before each network call: the chunk's motion call, its warping and its generator call
    assert result["progress"][-1] == (175, 175) and len(result["progress"]) == 11
    assert len(result["interrupts"]) == 11 * 4


def test_no_nan_and_face_follows_the_driving_frames(result) -> None:
    assert len(result["finite"]) == 11 and all(result["finite"])
    read = result["read"]
    assert read["means"].min() > 20  # no black frame
    out_change = read["face_change"]
    # the driving motion: driven keypoints (from each driving frame's motion extractor) relative to frame 0
    x_d = result["driven"]
    assert x_d.shape == (175, 21, 3) and bool(torch.isfinite(x_d).all())
    kp_change = (x_d - x_d[:1]).abs().mean(dim=(1, 2)).numpy()
    assert out_change[0] < 1.0  # relative motion: frame 0 reproduces the source's face
    assert np.median(out_change) > 1.0, "the face region does not move"
    # the face changes wherever the driving motion does, and varies over the clip as the driving frames do
    moved = kp_change[1:] > 1e-4
    assert moved.mean() > 0.9 and (out_change[1:][moved] > 0.5).mean() > 0.9
    assert out_change[1:].std() > 0.2
    # with random weights the image change is not monotonic in the keypoint change; still positively related
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(out_change), rank(kp_change))[0, 1] > 0.1


def test_background_outside_the_paste_mask_is_unchanged(result) -> None:
    assert len(result["exact"]) == 11 and all(result["exact"])  # bit-exact before the encoder
    assert result["outside"].mean() > 0.3  # a real background area is measured
    err = result["read"]["background_err"]
    assert len(err) == 175 and err.max() < 2.0, err.max()  # after H.264 (crf 12, yuv420p): codec error only
