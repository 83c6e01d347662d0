"""LivePortrait animation of a portrait by driving frames, in bounded-memory chunks.

Order of work, as the reference pipeline: (1) source: resize to the size limit, crop, F and M,
source keypoints (and the lip-closing offset); (2) driving, first pass: landmarks of every frame,
the common driving crop box and the eye/lip ratios (small arrays only); (3) second pass, chunk by
chunk: driving crops -> M -> driven keypoints (relative/absolute motion, stitching, retargeting,
multiplier) -> W + G -> paste-back. Driving frames are never all held in memory: a
``FrameStream`` (anything with ``iter_chunks(n)``), an array or a callable returning a fresh
chunk iterator is read twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch

from . import keypoints as K
from ..media.stream import FrameStream
from .faces import FaceOps
from .motion import SourceMotion, drive_keypoints, prepare_source_motion
from .options import AnimateOptions
from .runtime import LivePortraitNets, check_callbacks

CROP_SIZE = 512


class NoFaceError(ValueError):
    """The source portrait has no detectable face."""


def as_rgb_uint8(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Gray ``[H,W]``/``[H,W,1]``, RGB or RGBA (alpha dropped) uint8 or float 0..1 -> uint8 ``[H,W,3]``."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{where}: expected an image [H,W], [H,W,1|3|4], got shape {list(a.shape)}")
    if a.dtype != np.uint8:
        a = (np.nan_to_num(a.astype(np.float32), nan=0.0).clip(0, 1) * 255 + 0.5).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def resize_to_limit(image: np.ndarray, max_dim: int, division: int) -> np.ndarray:
    """Shrink so the longer side is at most ``max_dim``, then trim to multiples of ``division`` (reference rule)."""
    h, w = image.shape[:2]
    if max_dim > 0 and max(h, w) > max_dim:
        nh, nw = (max_dim, int(w * max_dim / h)) if h > w else (int(h * max_dim / w), max_dim)
        image = cv2.resize(image, (nw, nh))
    division = max(division, 1)
    nh, nw = image.shape[0] - image.shape[0] % division, image.shape[1] - image.shape[1] % division
    if nh and nw and (nh, nw) != image.shape[:2]:
        image = image[:nh, :nw]
    return np.ascontiguousarray(image)


@dataclass
class PreparedSource:
    """The source portrait, analysed once for the whole animation."""

    image: np.ndarray  # uint8 [H,W,3] after the size limit: the paste-back canvas
    crop: np.ndarray  # uint8 [512,512,3]
    M_c2o: np.ndarray | None  # 3x3 crop -> image, None without cropping
    f_s: torch.Tensor  # [1,32,16,64,64] appearance volume
    motion: SourceMotion
    mask: np.ndarray | None = None  # soft paste mask in image space float [H,W]
    mask_crop: np.ndarray | None = None  # the same mask in crop space [512,512]


def crop_face(image: np.ndarray, face: FaceOps, opts: AnimateOptions, where: str = "source portrait"
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The source crop step: (image after the size limit, 512 crop, ``M_c2o`` or None, landmarks or None).

    Shared by the source portrait and an expression sample, so both faces are framed alike;
    raises :class:`NoFaceError` naming ``where`` when cropping finds no face.
    """
    img = resize_to_limit(as_rgb_uint8(image, where), opts.source_max_dim, opts.source_division)
    if min(img.shape[:2]) < 16:
        raise ValueError(f"{where} is too small ({img.shape[1]}x{img.shape[0]} px)")
    M_c2o = None
    if opts.do_crop:
        lmk = face.landmarks(img[None])[0]
        if lmk is None:
            raise NoFaceError(f"no face found in the {where} ({img.shape[1]}x{img.shape[0]} px)")
        crop, M_o2c = face.crop(img, lmk, CROP_SIZE, opts.scale, opts.vx_ratio, opts.vy_ratio, opts.do_rot)
        M_c2o = np.linalg.inv(np.asarray(M_o2c, np.float64))
    else:
        crop = cv2.resize(img, (CROP_SIZE, CROP_SIZE))
        lmk = face.landmarks(crop[None])[0]
    return img, crop, M_c2o, lmk


def prepare_source(nets: LivePortraitNets, image: np.ndarray, face: FaceOps, opts: AnimateOptions,
                   interrupt: Callable[[], None] | None = None) -> PreparedSource:
    """Crop and analyse the source; raises :class:`NoFaceError` before any network runs when there is no face.

    ``interrupt()`` runs before each network call."""
    img, crop, M_c2o, lmk = crop_face(image, face, opts)
    # ratios are distance ratios, unchanged by the similarity crop: measure them on the landmarks at hand
    eye = face.eye_ratio(lmk) if lmk is not None else np.zeros(2, np.float32)
    lip = face.lip_ratio(lmk) if lmk is not None else np.zeros(1, np.float32)
    x = nets.to_input(crop, area=True)
    info = nets.keypoint_info(x, interrupt)
    f_s = nets.appearance_feature(x, interrupt)
    lip_mlp = nets.retarget.lip if (nets.retarget is not None and lmk is not None) else None
    motion = prepare_source_motion(info, eye, lip, opts, lip_mlp)
    mask = mask_crop = None
    if M_c2o is not None and opts.pasteback and opts.stitching:  # the reference pastes back only then
        mask_crop = np.asarray(face.paste_mask(CROP_SIZE), np.float32)
        mask = warp_mask(mask_crop, M_c2o, img.shape[:2])
    return PreparedSource(img, crop, M_c2o, f_s, motion, mask, mask_crop)


def warp_mask(mask_crop: np.ndarray, M_c2o: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The crop-space paste mask in image space (linear interpolation, as the reference)."""
    return cv2.warpAffine(np.asarray(mask_crop, np.float32), np.asarray(M_c2o, np.float64)[:2], (hw[1], hw[0]),
                          flags=cv2.INTER_LINEAR)


DrivingSource = Any  # np.ndarray [N,H,W,3] | object with iter_chunks(n) | Callable[[int], Iterator[np.ndarray]]


def iter_driving(driving: DrivingSource, chunk: int) -> Iterator[np.ndarray]:
    """Fresh iterator of uint8 chunks ``[n,H,W,3]`` over the driving frames."""
    if isinstance(driving, np.ndarray):
        frames = driving[None] if driving.ndim == 3 else driving
        for i in range(0, len(frames), chunk):
            yield frames[i:i + chunk]
    elif hasattr(driving, "iter_chunks"):
        yield from driving.iter_chunks(chunk)
    elif callable(driving):
        yield from driving(chunk)
    else:
        raise TypeError(f"driving frames: expected an array, a FrameStream or a callable, got {type(driving).__name__}")


@dataclass
class DrivingTrack:
    """First-pass summary of the driving frames (a few numbers per frame)."""

    present: np.ndarray  # bool [N]
    eye: np.ndarray  # float32 [N,2]
    lip: np.ndarray  # float32 [N,1]
    frame_hw: tuple[int, int]
    M_o2c: np.ndarray | None  # common driving crop (None: frames are used whole)

    @property
    def n(self) -> int:
        return len(self.present)

    @property
    def missing(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.present)]


def crop_box(M_o2c: np.ndarray, dsize: int) -> np.ndarray:
    """Axis-aligned box (x0, y0, x1, y1) in image pixels covered by a crop transform."""
    inv = np.linalg.inv(np.asarray(M_o2c, np.float64))
    corners = np.array([[0, 0, 1], [dsize, dsize, 1]], np.float64) @ inv.T
    return np.array([corners[0, 0], corners[0, 1], corners[1, 0], corners[1, 1]])


def box_to_transform(box: np.ndarray, dsize: int) -> np.ndarray:
    """The crop transform (original -> crop) of an axis-aligned box, no rotation."""
    x0, y0, x1, y1 = box
    sx, sy = dsize / max(x1 - x0, 1e-6), dsize / max(y1 - y0, 1e-6)
    return np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy], [0, 0, 1]], np.float64)


def analyse_driving(driving: DrivingSource, face: FaceOps, opts: AnimateOptions,
                    progress: Callable[[int], None], check_interrupt: Callable[[], None]) -> DrivingTrack:
    """First pass: which frames have a face, their eye/lip ratios, and the common crop box."""
    present, eyes, lips, boxes = [], [], [], []
    hw: tuple[int, int] | None = None
    for chunk in iter_driving(driving, opts.chunk_size):
        check_interrupt()
        chunk = np.stack([as_rgb_uint8(f, f"driving frame {len(present) + i}") for i, f in enumerate(chunk)])
        if hw is None:
            hw = chunk.shape[1:3]
        elif chunk.shape[1:3] != hw:
            raise ValueError(f"driving frame {len(present)}: size {chunk.shape[2]}x{chunk.shape[1]} differs from "
                             f"the first frame's {hw[1]}x{hw[0]}")
        need_crop = opts.crop_driving_video or hw[0] != hw[1]
        for frame, lmk in zip(chunk, face.landmarks(chunk)):
            present.append(lmk is not None)
            eyes.append(face.eye_ratio(lmk) if lmk is not None else np.zeros(2, np.float32))
            lips.append(face.lip_ratio(lmk) if lmk is not None else np.zeros(1, np.float32))
            if lmk is not None and need_crop:
                _, M = face.crop(frame, lmk, CROP_SIZE, opts.scale_crop_driving_video,
                                 opts.vx_ratio_crop_driving_video, opts.vy_ratio_crop_driving_video, False)
                boxes.append(crop_box(M, CROP_SIZE))
        progress(len(present))
    if not present:
        raise ValueError("the driving video has no frames")
    if not any(present):
        raise ValueError(f"no face found in any of the {len(present)} driving frames")
    M = box_to_transform(np.mean(boxes, axis=0), CROP_SIZE) if boxes else None
    return DrivingTrack(np.array(present), np.array(eyes, np.float32).reshape(-1, 2),
                        np.array(lips, np.float32).reshape(-1, 1), hw, M)


@dataclass
class AnimatedChunk:
    start: int  # index of the first frame of the chunk
    frames: np.ndarray  # uint8 [n,H,W,3]: pasted into the source, or the 512 crops
    crops: np.ndarray  # uint8 [n,512,512,3] animated crops (the source crop for missing frames)


ReplayFn = Callable[[Callable[[int, int], None], Callable[[], None], int], Iterator[AnimatedChunk]]


class Replayable:
    """An animation whose frame pass can run again from the start (its analysis is kept)."""

    replay_fn: ReplayFn | None

    def replay(self, progress: Callable[[int, int], None] | None = None,
               check_interrupt: Callable[[], None] | None = None, chunk_size: int = 0) -> Iterator[AnimatedChunk]:
        """A fresh frame pass; ``progress(done, n)``; ``chunk_size`` > 0 overrides the option (1: cheap preview)."""
        if self.replay_fn is None:
            raise RuntimeError("this animation cannot be replayed")
        report, interrupt = check_callbacks(progress, check_interrupt)
        return self.replay_fn(report, interrupt, chunk_size)


def animation_stream(anim: Replayable, fps: float, width: int, height: int, count: int,
                     make_progress: Callable[[int], Callable[[int, int], None]] | None = None,
                     check_interrupt: Callable[[], None] | None = None,
                     before_read: Callable[[], Any] | None = None) -> FrameStream:
    """The animated frames as a lazy :class:`FrameStream`: each read replays the frame pass chunk by chunk.

    Why: a consumer (the MP4 writer, lip sync) then pulls frames as it goes, so a long driving video
    never has all its output frames in memory. ``make_progress(total)`` is called when a read
    starts (so a UI progress bar belongs to the consumer's run); ``check_interrupt`` runs per chunk;
    ``before_read()`` too, e.g. to have the model manager put the networks back on the device.
    """
    def chunks(_size: int) -> Iterator[np.ndarray]:
        if before_read is not None:
            before_read()
        progress = make_progress(count) if make_progress is not None else None
        for chunk in anim.replay(progress=progress, check_interrupt=check_interrupt):
            yield chunk.frames

    return FrameStream(chunks, fps, count, width, height, name="LivePortrait animation")


@dataclass
class Animation(Replayable):
    """Iterates the animated chunks; ``missing`` lists driving frames without a face once iterated.

    :meth:`replay` runs the second pass again from the start (the first-pass analysis is kept), so
    the frames can be produced lazily by a consumer, as often as it iterates, in bounded memory.
    """

    source: PreparedSource
    track: DrivingTrack
    chunks: Iterator[AnimatedChunk]
    missing: list[int] = field(default_factory=list)
    replay_fn: ReplayFn | None = None

    def __iter__(self) -> Iterator[AnimatedChunk]:
        return self.chunks

    @property
    def n(self) -> int:
        return self.track.n

    @property
    def face_mask(self) -> np.ndarray:
        """Float ``[H,W]`` face region of the output frames (ones when frames are the crops)."""
        if self.source.mask is not None:
            return self.source.mask
        return np.ones((CROP_SIZE, CROP_SIZE), np.float32)


def animate(nets: LivePortraitNets, source_image: np.ndarray, driving: DrivingSource, face: FaceOps,
            opts: AnimateOptions | None = None, progress: Callable[[int, int], None] | None = None,
            check_interrupt: Callable[[], None] | None = None) -> Animation:
    """Analyse source and driving (first pass) and return the lazy second pass as an :class:`Animation`."""
    opts = opts or AnimateOptions()
    report, interrupt = check_callbacks(progress, check_interrupt)
    src = prepare_source(nets, source_image, face, opts, interrupt)
    total_hint = len(driving) if hasattr(driving, "__len__") and not isinstance(driving, np.ndarray) else (
        (1 if driving.ndim == 3 else len(driving)) if isinstance(driving, np.ndarray) else 0)
    track = analyse_driving(driving, face, opts, lambda done: report(done, 2 * max(total_hint, done)), interrupt)
    anim = Animation(src, track, iter([]), track.missing)
    anim.chunks = _second_pass(nets, src, track, driving, face, opts, report, interrupt, offset=track.n)

    def replay_fn(rep: Callable[[int, int], None], intr: Callable[[], None], chunk_size: int) -> Iterator[AnimatedChunk]:
        o = replace(opts, chunk_size=chunk_size) if chunk_size > 0 else opts
        return _second_pass(nets, src, track, driving, face, o, rep, intr, offset=0)

    anim.replay_fn = replay_fn
    return anim


def render(nets: LivePortraitNets, src: PreparedSource, x_d: torch.Tensor, face: FaceOps,
           interrupt: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp + decode driven keypoints ``x_d`` ``[n,21,3]``: (frames pasted into the source or crops, 512 crops).

    ``interrupt()`` runs before every network call (see ``LivePortraitNets.warp_decode``)."""
    crops = nets.to_uint8(nets.warp_decode(src.f_s, src.motion.x_s, x_d, interrupt))
    if crops.shape[1:3] != (CROP_SIZE, CROP_SIZE):  # only reduced test/benchmark configurations
        crops = np.stack([cv2.resize(c, (CROP_SIZE, CROP_SIZE)) for c in crops])
    if src.mask is None:
        return crops, crops
    frames = np.stack([face.paste_back(src.image, c, src.M_c2o, src.mask_crop) for c in crops])
    return frames, crops


def _second_pass(nets: LivePortraitNets, src: PreparedSource, track: DrivingTrack, driving: DrivingSource,
                 face: FaceOps, opts: AnimateOptions, report: Callable[[int, int], None],
                 interrupt: Callable[[], None], offset: int = 0) -> Iterator[AnimatedChunk]:
    """Chunks of animated frames; reports ``(offset + done, offset + n)`` (offset: frames of a first pass).

    ``interrupt()`` runs before each chunk and before every network call inside it (a chunk of 8
    frames is about a minute of W+G on a CPU), so Cancel stops within one network call; the
    chunks already yielded are the consumer's and stay written."""
    n_total = track.n
    is_video = n_total > 1
    first: K.KeypointInfo | None = None
    held: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # last good (crop256, eye, lip)
    done = 0
    for chunk in iter_driving(driving, opts.chunk_size):
        interrupt()
        chunk = np.stack([as_rgb_uint8(f, f"driving frame {done + i}") for i, f in enumerate(chunk)])
        n = len(chunk)
        idx = np.arange(done, done + n)
        crops256, eyes, lips, use = [], [], [], []
        for j, i in enumerate(idx):
            if track.present[i]:
                frame = chunk[j]
                if track.M_o2c is not None:
                    frame = face.warp_to_crop(frame, track.M_o2c, CROP_SIZE)
                c = cv2.resize(frame, (256, 256)) if frame.shape[:2] != (256, 256) else frame
                held = (c, track.eye[i], track.lip[i])
            elif opts.missing_face == "hold" and held is not None:
                pass
            else:
                continue
            crops256.append(held[0])
            eyes.append(held[1])
            lips.append(held[2])
            use.append(j)
        out_crops = np.repeat(src.crop[None], n, axis=0)
        frames = np.repeat((src.image if src.mask is not None else src.crop)[None], n, axis=0)
        if use:
            info = nets.keypoint_info(nets.to_input(np.stack(crops256)), interrupt)
            if first is None:  # relative-motion anchor: the first driving frame with a face
                first = info.select(0)
            x_d = drive_keypoints(src.motion, info, first, opts, nets.retarget, np.stack(eyes), np.stack(lips),
                                  driving_is_video=is_video)
            frames[use], out_crops[use] = render(nets, src, x_d, face, interrupt=interrupt)
        done += n
        report(offset + done, offset + n_total)
        yield AnimatedChunk(int(idx[0]), frames, out_crops)
