"""Glue between ComfyUI and the engine: progress, interrupt, input paths, type conversion.

The engine takes plain callbacks (``progress(done, total)`` and ``check_interrupt()``); this
module builds them from ComfyUI's ProgressBar and interrupt flag so that no engine code imports
``comfy``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("DigitalHuman")

CATEGORY_ROOT = "DigitalHuman"
CAT_AVATAR = f"{CATEGORY_ROOT}/1 Avatar"
CAT_MOTION = f"{CATEGORY_ROOT}/2 Motion"
CAT_LIPSYNC = f"{CATEGORY_ROOT}/3 Lip Sync"
CAT_REALTIME = f"{CATEGORY_ROOT}/4 Real time"
CAT_SPEECH = f"{CATEGORY_ROOT}/Speech"
CAT_AUDIO = f"{CATEGORY_ROOT}/Audio"
CAT_VIDEO = f"{CATEGORY_ROOT}/Video"
CAT_FACE = f"{CATEGORY_ROOT}/Face"
CAT_MODELS = f"{CATEGORY_ROOT}/Models"

#: The lazily read frame stream (engine.media.stream.FrameStream) that video and model nodes pass.
VIDEO_STREAM = "DH_VIDEO_STREAM"


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


class Progress:
    """A ComfyUI progress bar usable as the engine's ``progress(done, total)`` callback."""

    def __init__(self, total: int):
        import comfy.utils

        self.total = max(int(total), 1)
        self.bar = comfy.utils.ProgressBar(self.total)

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None and int(total) != self.total and total > 0:
            self.total = int(total)
            self.bar.total = self.total
        self.bar.update_absolute(min(int(done), self.total), self.total)


def safe_path(name: str, kind: str = "input") -> Path:
    """Resolve a user-given file name inside ComfyUI's input (or output) folder.

    Absolute paths, ``..`` and symlinks that leave the folder are refused with a clear error.
    """
    import folder_paths

    base = Path(folder_paths.get_input_directory() if kind == "input" else folder_paths.get_output_directory())
    return resolve_inside(base, name)


def resolve_inside(base: Path, name: str) -> Path:
    """Return ``base/name`` resolved, refusing anything that ends up outside ``base``."""
    if not name or not str(name).strip():
        raise ValueError("no file name given")
    name = str(name).strip()
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ValueError(f"'{name}': only files inside ComfyUI's folder '{base.name}' are allowed (no absolute paths, no '..')")
    base_r = base.resolve()
    path = (base_r / name).resolve()
    if path != base_r and base_r not in path.parents:
        raise ValueError(f"'{name}' resolves outside ComfyUI's folder '{base.name}'")
    if not path.is_file():
        raise FileNotFoundError(f"'{name}' not found in ComfyUI's folder '{base.name}'")
    return path


def image_to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE ``[B,H,W,C]`` float 0..1 -> uint8 RGB numpy ``[B,H,W,3]`` (NaN -> 0, alpha dropped, gray expanded)."""
    x = images.detach()
    if x.ndim == 3:
        x = x[None]
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    x = x[..., :3]
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp_(0, 1)
    return (x * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[B,H,W,3]`` -> IMAGE float 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)


def audio_to_comfy(wave: np.ndarray, sample_rate: int) -> dict:
    """float32 ``[C, T]`` -> core AUDIO ``{"waveform": [1, C, T], "sample_rate": int}``."""
    return {"waveform": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None], "sample_rate": int(sample_rate)}


def comfy_to_audio(audio: dict, where: str = "audio") -> tuple[np.ndarray, int]:
    """Core AUDIO -> (float32 ``[C, T]``, sample rate); a batch of several clips uses the first, with a warning."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{where}: expected an AUDIO dict with 'waveform' and 'sample_rate', got {type(audio).__name__}")
    wave = audio["waveform"]
    wave = wave.detach().float().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave, np.float32)
    if wave.ndim == 3:
        if wave.shape[0] > 1:
            log.warning("[DigitalHuman] %s: AUDIO holds %d clips; only the first is used", where, wave.shape[0])
        wave = wave[0]
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f"{where}: AUDIO waveform must be [B, C, T], got shape {tuple(audio['waveform'].shape)}")
    return wave, int(audio["sample_rate"])


def save_previews(frames: np.ndarray, prefix: str = "dh_preview") -> list[dict]:
    """Write uint8 ``[B,H,W,3]`` frames as PNGs into ComfyUI's temp folder and return the ``ui`` image
    entries, as core's PreviewImage does (the temp folder is emptied by ComfyUI at start-up)."""
    import uuid

    import folder_paths
    from PIL import Image

    temp = folder_paths.get_temp_directory()
    os.makedirs(temp, exist_ok=True)
    stem = f"{prefix}_{uuid.uuid4().hex[:8]}"
    res = []
    for i, f in enumerate(frames):
        name = f"{stem}_{i:03d}.png"
        Image.fromarray(np.ascontiguousarray(f)).save(os.path.join(temp, name), compress_level=1)
        res.append({"filename": name, "subfolder": "", "type": "temp"})
    return res
