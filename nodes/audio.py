"""Audio nodes (DigitalHuman/Audio) and the core AUDIO <-> numpy conversions the other nodes reuse."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..engine.media.audio_io import AUDIO_EXTENSIONS, load_audio
from .common import CAT_AUDIO, safe_path

log = logging.getLogger("DigitalHuman")


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


def list_input_files(extensions: tuple[str, ...]) -> list[str]:
    """Files of ComfyUI's input folder (top level, like core LoadImage) with one of ``extensions``."""
    import folder_paths

    base = folder_paths.get_input_directory()
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return sorted(n for n in names if n.lower().endswith(extensions) and os.path.isfile(os.path.join(base, n)))


def file_signature(name: str) -> str:
    """Changes when the input file changes (name, size, modification time), for IS_CHANGED."""
    try:
        st = safe_path(name).stat()
    except (ValueError, OSError) as exc:
        return f"missing:{name}:{exc}"
    return f"{name}:{st.st_size}:{st.st_mtime_ns}"


def validate_input_file(name: str, kind: str) -> bool | str:
    """True, or a message saying why ``name`` is not a usable file of the input folder."""
    try:
        safe_path(name)
    except (ValueError, FileNotFoundError) as exc:
        return f"{kind} file: {exc}"
    return True


class DH_LoadAudio:
    """Load a wav/mp3/flac/m4a/ogg from ComfyUI's input folder as core AUDIO."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": (list_input_files(AUDIO_EXTENSIONS), {"tooltip": "Audio file in ComfyUI's input folder (wav, mp3, flac, m4a, ogg). Use the upload button to add one."}),
                "sample_rate": ("INT", {"default": 0, "min": 0, "max": 192000, "step": 1, "tooltip": "Resample to this rate in Hz; 0 keeps the file's rate (16000 for most speech models)."}),
                "mono": ("BOOLEAN", {"default": False, "tooltip": "Average all channels into one."}),
            }
        }

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The audio as core AUDIO: waveform [1, channels, samples] float in -1..1, and its sample rate.",)
    FUNCTION = "load"
    CATEGORY = CAT_AUDIO
    DESCRIPTION = "Loads an audio file (wav, mp3, flac, m4a, ogg) from the input folder, optionally resampled and mixed to mono."

    def load(self, audio: str, sample_rate: int = 0, mono: bool = False):
        wave, sr = load_audio(safe_path(audio), sample_rate or None, mono)
        return (audio_to_comfy(wave, sr),)

    @classmethod
    def IS_CHANGED(cls, audio: str, **_):
        return file_signature(audio)

    @classmethod
    def VALIDATE_INPUTS(cls, audio: str):
        return validate_input_file(audio, "audio")


NODE_CLASS_MAPPINGS = {"DH_LoadAudio": DH_LoadAudio}
NODE_DISPLAY_NAME_MAPPINGS = {"DH_LoadAudio": "Load Audio (DigitalHuman)"}
