"""LatentSync lip sync of a face video: align, denoise 16-frame windows, paste back, frame by frame.

The order of operations is the reference's ``LipsyncPipeline.__call__`` (bytedance/LatentSync):

1. audio -> Whisper windows (:mod:`.audio`); ``floor(seconds * 25)`` output frames;
2. every frame of the face clip is aligned once (:mod:`.align`, in frame order, so the
   translation smoothing runs over the clip); a clip shorter than the audio is played forwards
   and backwards, reusing those transforms;
3. one noise draw ``[1, 4, 1, h, w]`` (seeded) shared by every frame; then per window of 16
   frames: the aligned faces in -1..1, the masked faces (times the mouth mask), the VAE latents
   of both *sampled* from the posterior (``masked`` first, then ``reference``), the mask at
   latent size; 20 DDIM steps on ``[noise, mask, masked, reference]`` (13 channels) with
   classifier-free guidance on the audio (the unconditional half has zero audio tokens);
   decode, keep the decoded pixels only inside the mouth region, paste back.

What differs from the reference, all of it outside the networks' arithmetic:

* frames without a face pass through unchanged (or reuse the last good face's alignment, by
  option) instead of stopping the run; in a window their slot holds the nearest usable face so
  the window keeps its length (the UNet's group norms and motion modules see all 16 frames);
* the last window is padded to the full length (frames continue the ping-pong, audio windows
  repeat the last feature frame as the reference's own index clamping does) and only the real
  frames are kept, instead of running a short window;
* the noise comes from a CPU ``torch.Generator`` seeded with ``seed`` (the reference uses the
  global generator of the device), so a seed gives the same video on any device;
* the VAE can run in slices of frames (memory), which does not change the result.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import align as A
from .audio import AudioFeatures
from .config import section
from .ddim import DDIM
from .unet import FeatureReuse

log = logging.getLogger("DigitalHuman")
Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]
MISSING_MODES = ("pass", "hold")


class NoFaceError(ValueError):
    """No frame of the face video has a face (raised before any network runs)."""


@dataclass
class LatentSyncModels:
    """The networks and the mouth mask of one LatentSync version (see model_loaders.latentsync)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    whisper: torch.nn.Module
    mask: np.ndarray  # float64 [R, R, 3], 1 = keep
    version: str = "1.6"
    fell_back: set = field(default_factory=set)

    @property
    def resolution(self) -> int:
        return int(self.mask.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


@dataclass
class SyncOptions:
    """The run's settings; defaults are the reference script's (``latentsync.json``, ``inference``)."""

    steps: int = 20
    guidance: float = 1.5
    seed: int = 1247
    feature_reuse: bool = False
    reuse_interval: int = 3
    window: int = 16
    vae_batch: int = 0  # frames per VAE call; 0 = the whole window at once
    pad_last_window: bool = True

    @classmethod
    def defaults(cls, **overrides) -> "SyncOptions":
        inf, data = section("inference"), section("data")
        base = dict(steps=inf["num_inference_steps"], guidance=inf["guidance_scale"], seed=inf["seed"],
                    reuse_interval=inf["deepcache"]["cache_interval"], window=data["num_frames"])
        base.update(overrides)
        return cls(**base)

    def check(self) -> None:
        if not 1 <= int(self.steps) <= 1000:
            raise ValueError(f"steps must be 1..1000, got {self.steps}")
        if not 1 <= int(self.window) <= 24:
            raise ValueError(f"window must be 1..24 frames (the motion modules know 24 positions), got {self.window}")
        if float(self.guidance) < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if int(self.reuse_interval) < 1:
            raise ValueError(f"feature reuse interval must be >= 1, got {self.reuse_interval}")
        if int(self.vae_batch) < 0:
            raise ValueError(f"vae_batch must be >= 0, got {self.vae_batch}")


@dataclass
class FaceAlignment:
    """Per-frame transforms of a face clip: ``matrices [N, 2, 3]`` frame -> crop (float32)."""

    matrices: np.ndarray
    usable: np.ndarray  # bool [N]: a transform exists (detected, or held)
    held: np.ndarray  # bool [N]: the transform is the last good face's
    missing_frames: list[int]

    def __len__(self) -> int:
        return int(self.usable.shape[0])

    @property
    def faces(self) -> int:
        return int((self.usable & ~self.held).sum())


def pingpong_index(i: int, n: int) -> int:
    """Frame of an ``n``-frame clip shown at output step ``i``: 0..n-1, then n-1..0, repeating."""
    j = i % (2 * n)
    return j if j < n else 2 * n - 1 - j


def resample_indices(n_src: int, src_fps: float, dst_fps: float, n_dst: int | None = None) -> np.ndarray:
    """Source frame shown at each output frame when ``src_fps`` video is shown at ``dst_fps``: output
    frame ``i`` shows the latest source frame at or before ``i / dst_fps`` (the pack's resampling rule)."""
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {src_fps} and {dst_fps}")
    if n_dst is None:
        n_dst = int(np.ceil(n_src / src_fps * dst_fps - 1e-6))
    i = np.arange(max(int(n_dst), 0))
    return np.minimum(np.floor(i * (src_fps / dst_fps) + 1e-6).astype(np.int64), max(n_src - 1, 0))


def align_points(points: Sequence[np.ndarray | None], resolution: int, held: Sequence[bool] | None = None) -> FaceAlignment:
    """Transforms from per-frame alignment points ``[3, 2]`` (None where no face), fitted in order."""
    tmpl = A.template(resolution)
    n = len(points)
    mats = np.zeros((n, 2, 3), np.float32)
    usable = np.zeros(n, bool)
    p_bias = None
    for i, p in enumerate(points):
        if p is None:
            continue
        mats[i], p_bias = A.fit_transform(np.round(np.asarray(p, np.float64)), tmpl, True, p_bias)
        usable[i] = True
    held_arr = np.asarray(held, bool) if held is not None else np.zeros(n, bool)
    missing = [i for i in range(n) if not usable[i] or held_arr[i]]
    return FaceAlignment(mats, usable, held_arr & usable, missing)


def align_track(track, resolution: int) -> FaceAlignment:
    """Transforms of a :class:`engine.face.tracking.FaceTrack` (LatentSync's points from the 468 landmarks)."""
    from ..face.schemes import latentsync_points

    pts = [latentsync_points(track.landmarks[i]) if track.usable[i] else None for i in range(len(track))]
    return align_points(pts, resolution, track.held)


def track_alignment(frames: np.ndarray | Sequence[np.ndarray], resolution: int, analyzer=None, missing: str = "pass",
                    smoothing: float = 0.5, chunk: int = 16, progress: Progress | None = None,
                    check_interrupt: Interrupt | None = None, where: str = "face video") -> FaceAlignment:
    """Detect and track one face (the largest, then the one overlapping it) through ``frames`` and align it."""
    from ..face.analyzer import FaceAnalyzer
    from ..face.tracking import track_faces

    if missing not in MISSING_MODES:
        raise ValueError(f"missing must be one of {MISSING_MODES}, got '{missing}'")
    analyzer = analyzer or FaceAnalyzer()
    n = len(frames)
    chunks: Iterable = (frames[i:i + chunk] for i in range(0, n, chunk))
    track = track_faces(chunks, analyzer, smoothing=smoothing, missing=missing, progress=progress,
                        check_interrupt=check_interrupt, total=n)
    if not track.present.any():
        raise NoFaceError(f"no face found in any of the {n} frames of the {where}; LatentSync needs a visible face "
                          "(frontal or slightly turned, at least 20 px)")
    return align_track(track, resolution)


# ---------------------------------------------------------------------------------------- networks

def _vae_posterior(vae, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE posterior of ``x [n, 3, R, R]``, in slices of ``batch`` frames (0 = all)."""
    p = next(vae.parameters())
    step = batch if batch > 0 else x.shape[0]
    means, stds = [], []
    for s in range(0, x.shape[0], step):
        dist = vae.encode(x[s:s + step].to(device=p.device, dtype=p.dtype)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def _sample_latents(vae, x: torch.Tensor, batch: int, gen: torch.Generator, vae_cfg: dict) -> torch.Tensor:
    """Scaled latents sampled from the posterior (one noise draw for the whole window, as the reference)."""
    mean, std = _vae_posterior(vae, x, batch)
    noise = torch.randn(mean.shape, generator=gen, dtype=torch.float32).to(device=mean.device, dtype=mean.dtype)
    return (mean + std * noise - vae_cfg["shift_factor"]) * vae_cfg["scaling_factor"]


def _decode(vae, latents: torch.Tensor, batch: int, vae_cfg: dict) -> torch.Tensor:
    """``[n, 3, R, R]`` decoded pixels of latents ``[n, 4, h, w]`` (slices of ``batch``)."""
    p = next(vae.parameters())
    z = latents / vae_cfg["scaling_factor"] + vae_cfg["shift_factor"]
    step = batch if batch > 0 else z.shape[0]
    return torch.cat([vae.decode(z[s:s + step].to(dtype=p.dtype)).sample for s in range(0, z.shape[0], step)])


def _bad(t: torch.Tensor, black: bool = False) -> str | None:
    if not torch.isfinite(t).all():
        return "NaN/Inf"
    if black and float(t.float().amax()) <= -1.0 + 2.0 / 255:
        return "black"
    return None


def _to_float32(models: LatentSyncModels, name: str, why: str) -> None:
    log.warning("[DigitalHuman] LatentSync %s gave %s output in %s; using fp32 for it from now on",
                name, why, next(getattr(models, name).parameters()).dtype)
    torch.nn.Module.to(getattr(models, name), dtype=torch.float32)
    models.fell_back.add(name)


class _Window:
    """The inputs of one window, prepared once (reused if a half-precision network falls back to fp32)."""

    def __init__(self, models: LatentSyncModels, crops: np.ndarray, audio: torch.Tensor, opts: SyncOptions,
                 gen: torch.Generator, noise: torch.Tensor):
        vae_cfg = section("vae")
        self.vae_cfg = vae_cfg
        dev = models.device
        mask64 = torch.from_numpy(models.mask).permute(2, 0, 1)  # [3, R, R] float64
        pixels = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
        pixels = (pixels - 0.5) / 0.5
        masked = (pixels.double() * mask64).float()
        self.pixels = pixels
        self.mask64 = mask64[0:1]
        f = crops.shape[0]
        self.masked_latents = _sample_latents(models.vae, masked, opts.vae_batch, gen, vae_cfg)
        self.ref_latents = _sample_latents(models.vae, pixels, opts.vae_batch, gen, vae_cfg)
        why = _bad(self.masked_latents) or _bad(self.ref_latents)
        if why:
            raise _Fallback("vae", why)
        scale = int(section("vae")["scale_factor"])
        small = self.mask64[:, ::scale, ::scale].float()  # nearest down-sampling, as F.interpolate(size=R/8)
        self.mask_latents = small[None].expand(f, -1, -1, -1)
        self.audio = audio
        self.noise = noise
        self.frames = f
        self.device = dev

    def run(self, models: LatentSyncModels, opts: SyncOptions, scheduler: DDIM,
            check_interrupt: Interrupt | None) -> torch.Tensor:
        """Denoise and decode: ``[f, 3, R, R]`` float32 in -1..1 with the kept region restored."""
        unet = models.unet
        dt, dev = models.dtype, models.device
        f = self.frames

        def five(x: torch.Tensor) -> torch.Tensor:  # [f, c, h, w] -> [1, c, f, h, w]
            return x.permute(1, 0, 2, 3)[None].to(device=dev, dtype=dt)

        cfg = float(opts.guidance) > 1.0
        cond = [five(self.mask_latents), five(self.masked_latents), five(self.ref_latents)]
        audio = self.audio.to(device=dev, dtype=dt)
        if cfg:
            cond = [torch.cat([c] * 2) for c in cond]
            audio = torch.cat([torch.zeros_like(audio), audio])
        latents = self.noise.to(device=dev, dtype=dt).repeat(1, 1, f, 1, 1)
        reuse = FeatureReuse(opts.reuse_interval) if opts.feature_reuse else None
        with torch.no_grad():
            for j, t in enumerate(scheduler.timesteps):
                if check_interrupt:
                    check_interrupt()
                x = torch.cat([latents] * 2) if cfg else latents
                x = torch.cat([x] + cond, dim=1)
                eps = unet(x, t.to(dev), audio, reuse=reuse, step_index=j)
                if cfg:
                    uncond, cond_eps = eps.chunk(2)
                    eps = uncond + float(opts.guidance) * (cond_eps - uncond)
                latents = scheduler.step(eps, int(t), latents)
            why = _bad(latents)
            if why:
                raise _Fallback("unet", why)
            z = latents[0].permute(1, 0, 2, 3)  # [f, 4, h, w]
            decoded = _decode(models.vae, z, opts.vae_batch, self.vae_cfg)
            why = _bad(decoded, black=True)
            if why:
                raise _Fallback("vae", why)
        keep = (1 - self.mask64.expand(f, -1, -1, -1)).to(device=decoded.device, dtype=decoded.dtype)
        pixels = self.pixels.to(device=decoded.device, dtype=decoded.dtype)
        out = decoded * keep + pixels * (1 - keep)
        return out.float().cpu()


class _Fallback(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: {why}")
        self.name, self.why = name, why


def _nearest_usable(usable: np.ndarray) -> np.ndarray:
    """For every frame, a frame with a transform: itself, else the previous usable one, else the next."""
    n = len(usable)
    idx = np.arange(n)
    good = np.flatnonzero(usable)
    if good.size == 0:
        raise ValueError("no frame of the face clip has a face")
    pos = np.searchsorted(good, idx, side="right") - 1
    prev = np.where(pos >= 0, good[np.clip(pos, 0, None)], good[0])
    return np.where(usable, idx, prev)


def lip_sync(models: LatentSyncModels, frames: np.ndarray, alignment: FaceAlignment, samples_16k: np.ndarray,
             options: SyncOptions | None = None, clip_index: np.ndarray | None = None, n_out: int | None = None,
             progress: Progress | None = None, check_interrupt: Interrupt | None = None) -> Iterator[np.ndarray]:
    """Yield the lip-synced uint8 frames ``[H, W, 3]`` at 25 fps, in order, window by window.

    ``frames`` is the face clip (uint8 ``[N, H, W, 3]``, any array-like indexable by frame, e.g. a
    memory-mapped file), ``alignment`` its transforms, ``samples_16k`` the speech (16 kHz mono float).
    ``clip_index`` maps 25 fps clip positions to rows of ``frames`` (resampling from another frame
    rate); ``n_out`` overrides the frame count (default ``floor(seconds * 25)``).
    """
    opts = options or SyncOptions.defaults()
    opts.check()
    data = section("data")
    fps = float(data["video_fps"])
    features = AudioFeatures(samples_16k, models.whisper, fps, tuple(data["audio_feat_length"]))
    total = int(n_out) if n_out is not None else len(features)
    n_clip = len(clip_index) if clip_index is not None else len(frames)
    if n_clip < 1:
        raise ValueError("the face clip has no frames")
    if len(alignment) != len(frames):
        raise ValueError(f"alignment covers {len(alignment)} frames but the clip has {len(frames)}")
    if not alignment.usable.any():
        raise ValueError("no frame of the face clip has a face")
    row_of = (lambda k: int(clip_index[k])) if clip_index is not None else (lambda k: int(k))
    stand_in = _nearest_usable(alignment.usable)
    tmpl = A.template(models.resolution)
    gen = torch.Generator(device="cpu").manual_seed(int(opts.seed))
    r8 = models.resolution // int(section("vae")["scale_factor"])
    noise = torch.randn((1, int(section("vae")["latent_channels"]), 1, r8, r8), generator=gen, dtype=torch.float32)
    scheduler = DDIM(opts.steps)
    win = int(opts.window)
    done = 0
    for start in range(0, total, win):
        real = min(win, total - start)
        size = win if opts.pad_last_window else real
        rows = [row_of(pingpong_index(start + k, n_clip)) for k in range(size)]
        crops = np.stack([A.warp_face(np.asarray(frames[stand_in[r]]), alignment.matrices[stand_in[r]], tmpl,
                                      models.resolution) for r in rows])
        audio = features.windows(start, start + size)
        state = gen.get_state()
        while True:
            try:
                window = _Window(models, crops, audio, opts, gen, noise)
                faces = window.run(models, opts, scheduler, check_interrupt)
                break
            except _Fallback as fb:
                if next(getattr(models, fb.name).parameters()).dtype == torch.float32:
                    raise FloatingPointError(f"LatentSync {fb.name} produced {fb.why} values even in fp32 "
                                             "(bad weights or input?)") from None
                _to_float32(models, fb.name, fb.why)
                gen.set_state(state)  # the retry draws the same noise
        for k in range(real):
            r = rows[k]
            frame = np.asarray(frames[r])
            if alignment.usable[r]:
                yield A.restore(frame, faces[k], alignment.matrices[r], tmpl)
            else:
                yield frame.copy()
        done += real
        if progress:
            progress(done, total)


def at_fps(frames: Iterator[np.ndarray], n_in: int, src_fps: float, dst_fps: float, n_dst: int) -> Iterator[np.ndarray]:
    """Re-time a stream of ``n_in`` frames at ``src_fps`` to ``n_dst`` frames at ``dst_fps`` (same rule as
    :func:`resample_indices`), holding at most one frame."""
    want = resample_indices(n_in, src_fps, dst_fps, n_dst)
    k, current = -1, None
    for j in want:
        while k < j:
            current = next(frames)
            k += 1
        yield current
