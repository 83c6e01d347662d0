"""MuseTalk 1.5 lip sync: prepare a face video once, then speak any audio with it.

``prepare_avatar`` does everything that does not depend on the audio: the face crop of every
frame (box + 10 px bottom margin, resized to 256 with Lanczos), its two VAE latents (the crop
with the lower half blacked out, and the whole crop, concatenated to 8 channels) and the blend
mask of each frame. ``speak`` then runs only the audio encoder, one UNet pass per frame at
timestep 0 and the VAE decoder, and yields finished frames in order as soon as each batch is
done, which is what a real-time stream consumes. A video shorter than the audio is played
forwards then backwards (ping-pong). Frames without a face are passed through unchanged (and
reported: :func:`missing_faces_report`); footage without a face in any frame is a
:class:`NoFaceError` before any network runs.

Latents use the VAE posterior's mean (the reference's training code uses the mode, which equals
the mean; its inference script draws a sample, which only adds noise).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from . import audio as audio_mod
from .blend import BLEND_MODES, BLUR_RATIO, make_masks, paste
from .networks import add_positional_encoding

CROP = 256
EXTRA_MARGIN = 10  # v1.5: the crop reaches 10 px below the chin box
FORMAT_VERSION = 1

Progress = Callable[[int, int], None]
Interrupt = Callable[[], None]


@dataclass
class MuseTalkModels:
    """The four networks (see model_loaders.musetalk for building them from the published files)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    whisper: torch.nn.Module
    parser: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def crop_box(box: Sequence[float], frame_hw: tuple[int, int], extra_margin: int = EXTRA_MARGIN) -> tuple[int, int, int, int] | None:
    """Integer crop box from a MuseTalk face box (x0,y0,x1,y1): bottom grown by ``extra_margin`` and clipped
    to the frame; None when the box is empty, not finite or leaves the frame on the left/top."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.isfinite(b).all():
        return None
    x0, y0, x1, y1 = (int(v) for v in b)
    h, w = frame_hw
    y1 = min(y1 + extra_margin, h)
    x1 = min(x1, w)
    if x0 < 0 or y0 < 0 or x1 - x0 <= 1 or y1 - y0 <= 1:
        return None
    return x0, y0, x1, y1


class NoFaceError(ValueError):
    """No frame of the face video (or avatar) has a usable face: lip sync would return it unchanged."""


def faces_present(boxes: Sequence[Sequence[float] | None] | np.ndarray, frame_hw: tuple[int, int],
                  extra_margin: int = EXTRA_MARGIN) -> np.ndarray:
    """bool per frame: its box gives a usable crop (the frames :func:`prepare_avatar` redraws)."""
    return np.array([b is not None and crop_box(b, frame_hw, extra_margin) is not None for b in boxes], bool)


def require_a_face(present: np.ndarray, where: str) -> None:
    """:class:`NoFaceError` naming ``where`` when no frame has a face; called before any network runs."""
    if len(present) and not np.asarray(present).any():
        raise NoFaceError(f"no face found in any of the {len(present)} frames of the {where}: MuseTalk would return "
                          "them unchanged. Give it footage with a visible, roughly frontal face.")


def missing_faces_report(present: np.ndarray, shown: int = 20) -> str:
    """``'no face in 2 of 6 frames (2, 3): passed through unchanged'``, or ``''`` when every frame has one."""
    missing = np.flatnonzero(~np.asarray(present, bool))
    if not len(missing):
        return ""
    listed = ", ".join(str(int(i)) for i in missing[:shown]) + (", ..." if len(missing) > shown else "")
    return f"no face in {len(missing)} of {len(present)} frames ({listed}): passed through unchanged"


def crop_face(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 256x256 face crop (uint8 RGB) the networks see."""
    x0, y0, x1, y1 = box
    return cv2.resize(frame[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_LANCZOS4)


@torch.no_grad()
def encode_reference(vae: torch.nn.Module, crops: np.ndarray) -> torch.Tensor:
    """``[B,8,32,32]`` UNet input latents of uint8 crops ``[B,256,256,3]``: masked crop (lower half black)
    then the full crop, each the scaled posterior mean."""
    p = next(vae.parameters())
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(p.device).permute(0, 3, 1, 2).float().div_(255.0)
    masked = x.clone()
    masked[:, :, CROP // 2:, :] = 0.0
    both = torch.cat([masked, x], 0).mul_(2.0).sub_(1.0).to(p.dtype)
    lat = vae.encode(both).latent_dist.mean * vae.config.scaling_factor
    n = x.shape[0]
    return torch.cat([lat[:n], lat[n:]], dim=1)


@torch.no_grad()
def predict_latents(unet: torch.nn.Module, latents: torch.Tensor, audio_windows: torch.Tensor) -> torch.Tensor:
    """One UNet pass at timestep 0: 8-channel input latents + ``[B,50,384]`` audio -> ``[B,4,32,32]``."""
    p = next(unet.parameters())
    tokens = add_positional_encoding(audio_windows.to(device=p.device, dtype=p.dtype))
    t = torch.zeros((), device=p.device, dtype=torch.long)
    return unet(latents.to(device=p.device, dtype=p.dtype), t, encoder_hidden_states=tokens).sample


@torch.no_grad()
def decode_faces(vae: torch.nn.Module, latents: torch.Tensor) -> np.ndarray:
    """uint8 RGB ``[B,256,256,3]`` from predicted latents (unscaled, decoded, mapped -1..1 -> 0..255, rounded)."""
    p = next(vae.parameters())
    img = vae.decode((1 / vae.config.scaling_factor) * latents.to(device=p.device, dtype=p.dtype)).sample
    img = (img.float() / 2 + 0.5).clamp(0, 1)
    return (img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def pingpong_index(i: int, n: int) -> int:
    """Frame of an ``n``-frame video shown at output step ``i``: 0..n-1, then n-1..0, repeating."""
    j = i % (2 * n)
    return j if j < n else 2 * n - 1 - j


@dataclass
class AvatarCache:
    """What speaking needs from a face video, independent of the audio."""

    frames: np.ndarray  # uint8 [N,H,W,3]
    present: np.ndarray  # bool [N]
    boxes: np.ndarray  # int32 [N,4], crop boxes (margin included); zeros where no face
    latents: torch.Tensor  # float [N,8,32,32]; zeros where no face
    regions: np.ndarray  # int32 [N,4], blend regions
    masks: list[np.ndarray]  # uint8 per frame, region-sized ([0,0] where no face)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def save(self, path: str | Path) -> Path:
        """Write ``avatar.safetensors`` + ``avatar.json`` into the folder ``path`` (created)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sizes = np.array([m.size for m in self.masks], np.int64)
        flat = np.concatenate([m.reshape(-1) for m in self.masks]) if sizes.sum() else np.zeros(0, np.uint8)
        save_file({
            "frames": torch.from_numpy(np.ascontiguousarray(self.frames)),
            "present": torch.from_numpy(self.present.astype(np.uint8)),
            "boxes": torch.from_numpy(self.boxes.astype(np.int32)),
            "latents": self.latents.detach().float().cpu().contiguous(),
            "regions": torch.from_numpy(self.regions.astype(np.int32)),
            "mask_shapes": torch.from_numpy(np.array([m.shape for m in self.masks], np.int64).reshape(-1, 2)),
            "masks_flat": torch.from_numpy(flat.astype(np.uint8)),
        }, str(path / "avatar.safetensors"))
        (path / "avatar.json").write_text(json.dumps({"format": FORMAT_VERSION, **self.meta}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AvatarCache":
        """Read a folder written by ``save``."""
        from safetensors.torch import load_file

        path = Path(path)
        for name in ("avatar.safetensors", "avatar.json"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path}: not a MuseTalk avatar folder ({name} missing)")
        redo = "prepare and save the avatar again (MuseTalk Prepare Avatar with a save_name)"
        try:
            meta = json.loads((path / "avatar.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path / 'avatar.json'}: cannot read the saved avatar ({exc}); {redo}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{path}: avatar format {fmt} not supported (expected {FORMAT_VERSION})")
        try:
            t = load_file(str(path / "avatar.safetensors"))
        except Exception as exc:  # safetensors' errors name no file
            raise ValueError(f"{path / 'avatar.safetensors'}: cannot read the saved avatar "
                             f"({type(exc).__name__}: {exc}); {redo}") from None
        shapes = t["mask_shapes"].numpy()
        flat = t["masks_flat"].numpy()
        offsets = np.concatenate([[0], np.cumsum(shapes.prod(axis=1))])
        masks = [flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
        return cls(frames=t["frames"].numpy(), present=t["present"].numpy().astype(bool), boxes=t["boxes"].numpy(),
                   latents=t["latents"], regions=t["regions"].numpy(), masks=masks,
                   meta={k: v for k, v in meta.items() if k != "format"})


@torch.no_grad()
def prepare_avatar(models: MuseTalkModels, frames: np.ndarray, boxes: Sequence[Sequence[float] | None] | np.ndarray,
                   blend_mode: str = "jaw", extra_margin: int = EXTRA_MARGIN, batch_size: int = 8,
                   cheek_width: tuple[int, int] = (90, 90), blur_ratio: float = BLUR_RATIO,
                   progress: Progress | None = None, check_interrupt: Interrupt | None = None,
                   where: str = "face video") -> AvatarCache:
    """Crops, latents and blend masks of uint8 RGB ``frames [N,H,W,3]``.

    ``boxes[i]`` is frame i's MuseTalk face box (x0,y0,x1,y1, e.g. from
    ``engine.face.schemes.musetalk_box``), or None / NaNs when it has no face. No face in any
    frame is a :class:`NoFaceError` naming ``where``, before any network runs.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N,H,W,3], got {frames.dtype} {list(frames.shape)}")
    n = frames.shape[0]
    if n == 0:
        raise ValueError("no frames given")
    if len(boxes) != n:
        raise ValueError(f"{len(boxes)} face boxes for {n} frames")
    if blend_mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{blend_mode}', expected one of {BLEND_MODES}")
    hw = frames.shape[1:3]
    cboxes = [None if b is None else crop_box(b, hw, extra_margin) for b in boxes]
    present = np.array([b is not None for b in cboxes])
    require_a_face(present, where)
    box_arr = np.array([b if b is not None else (0, 0, 0, 0) for b in cboxes], np.int32)
    latents = torch.zeros(n, 8, CROP // 8, CROP // 8)
    regions = np.zeros((n, 4), np.int32)
    masks: list[np.ndarray] = [np.zeros((0, 0), np.uint8) for _ in range(n)]
    idx = np.flatnonzero(present)
    for s in range(0, len(idx), batch_size):
        if check_interrupt:
            check_interrupt()
        sel = idx[s:s + batch_size]
        crops = np.stack([crop_face(frames[i], cboxes[i]) for i in sel])
        latents[torch.from_numpy(sel)] = encode_reference(models.vae, crops).float().cpu()
        for i, (m, r) in zip(sel, make_masks(models.parser, [frames[i] for i in sel], [cboxes[i] for i in sel],
                                             blend_mode, cheek_width, blur_ratio)):
            masks[i], regions[i] = m, r
        if progress:
            progress(min(s + batch_size, len(idx)), max(len(idx), 1))
    meta = {"blend_mode": blend_mode, "extra_margin": extra_margin, "frames": n, "faces": int(present.sum()),
            "missing_frames": np.flatnonzero(~present).tolist()}
    return AvatarCache(frames, present, box_arr, latents, regions, masks, meta)


def speak(models: MuseTalkModels, cache: AvatarCache, waveform: np.ndarray | torch.Tensor, sample_rate: int,
          fps: float = 25.0, batch_size: int = 8, progress: Progress | None = None,
          check_interrupt: Interrupt | None = None, start_frame: int = 0) -> Iterator[np.ndarray]:
    """Yield ``floor(seconds * fps)`` uint8 RGB frames, in order, each as soon as its batch is decoded.

    Audio at any rate and channel count is brought to 16 kHz mono first. Memory stays bounded for
    any audio length: features are encoded per 30 s segment and frames are produced per batch.
    ``start_frame`` continues the avatar's ping-pong cycle where a previous utterance stopped
    (pass the number of frames already shown), so consecutive replies play without a jump.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    require_a_face(cache.present, "avatar")
    samples = audio_mod.to_mono_16k(waveform, sample_rate)
    windows = audio_mod.AudioWindows(samples, models.whisper, fps)
    return _speak(models, cache, windows, batch_size, progress, check_interrupt, start_frame)


def render_frames(models: MuseTalkModels, cache: AvatarCache, ids: Sequence[int], audio_batch: torch.Tensor) -> list[np.ndarray]:
    """Frames of avatar frames ``ids`` speaking ``audio_batch [n, 50, 384]``: one UNet + VAE pass over the
    frames with a face, pasted back; frames without a face are copies of the avatar frame."""
    with_face = [k for k, j in enumerate(ids) if cache.present[j]]
    faces: dict[int, np.ndarray] = {}
    if with_face:
        lat = cache.latents[torch.tensor([ids[k] for k in with_face])]
        pred = predict_latents(models.unet, lat, audio_batch[with_face])
        faces = dict(zip(with_face, decode_faces(models.vae, pred)))
    out = []
    for k, j in enumerate(ids):
        frame = cache.frames[j]
        if k in faces:
            x0, y0, x1, y1 = (int(v) for v in cache.boxes[j])
            face = cv2.resize(faces[k], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            frame = paste(frame, face, (x0, y0, x1, y1), cache.masks[j], tuple(int(v) for v in cache.regions[j]))
        else:
            frame = frame.copy()
        out.append(frame)
    return out


def _speak(models: MuseTalkModels, cache: AvatarCache, windows: audio_mod.AudioWindows, batch_size: int,
           progress: Progress | None, check_interrupt: Interrupt | None, offset: int = 0) -> Iterator[np.ndarray]:
    total, n = len(windows), len(cache)
    for start, audio_batch in windows.batches(batch_size, check_interrupt):
        ids = [pingpong_index(offset + i, n) for i in range(start, start + audio_batch.shape[0])]
        yield from render_frames(models, cache, ids, audio_batch)
        if progress:
            progress(start + audio_batch.shape[0], total)


def speak_stream(get_models: Callable[[], MuseTalkModels], cache: AvatarCache, samples_16k: np.ndarray,
                 fps: float = 25.0, batch_size: int = 8, make_progress: Callable[[int], Progress] | None = None,
                 check_interrupt: Interrupt | None = None):
    """A lazy, re-iterable ``FrameStream`` of ``speak``'s frames, for long audio.

    Nothing runs until a consumer iterates it; each iteration calls ``get_models()`` (so the
    networks can be placed on the device at that moment) and ``make_progress(total)`` for a fresh
    progress callback, then speaks batch by batch. Memory: the cache (face clip + latents), the
    16 kHz audio and one batch + one chunk of output frames, whatever the audio length.
    """
    from ..media.stream import FrameStream, chunked

    require_a_face(cache.present, "avatar")
    n_out = audio_mod.frame_count(np.asarray(samples_16k).size, fps)
    h, w = cache.frames.shape[1:3]

    def open_chunks(chunk: int) -> Iterator[np.ndarray]:
        progress = make_progress(n_out) if make_progress else None
        frames = speak(get_models(), cache, samples_16k, audio_mod.SAMPLE_RATE, fps, batch_size,
                       progress=progress, check_interrupt=check_interrupt)
        yield from chunked(frames, chunk)

    return FrameStream(open_chunks, fps, n_out, w, h, name="MuseTalk speech")


def lip_sync(models: MuseTalkModels, frames: np.ndarray, boxes: Sequence[Sequence[float] | None] | np.ndarray,
             waveform: np.ndarray | torch.Tensor, sample_rate: int, fps: float = 25.0, batch_size: int = 8,
             blend_mode: str = "jaw", extra_margin: int = EXTRA_MARGIN,
             progress: Progress | None = None, check_interrupt: Interrupt | None = None,
             where: str = "face video") -> Iterator[np.ndarray]:
    """Offline lip sync of a face video: ``prepare_avatar`` then ``speak`` (progress covers both)."""
    require_a_face(faces_present(boxes, np.asarray(frames).shape[1:3], extra_margin), where)  # before the encoder runs
    samples = audio_mod.to_mono_16k(waveform, sample_rate)
    windows = audio_mod.AudioWindows(samples, models.whisper, fps)  # fails early on too-short audio
    n_prep = len(frames)
    total = n_prep + len(windows)
    prep_progress = (lambda d, t: progress(d, total)) if progress else None
    cache = prepare_avatar(models, frames, boxes, blend_mode, extra_margin, batch_size,
                           progress=prep_progress, check_interrupt=check_interrupt, where=where)
    speak_progress = (lambda d, t: progress(n_prep + d, total)) if progress else None
    return _speak(models, cache, windows, batch_size, speak_progress, check_interrupt)
