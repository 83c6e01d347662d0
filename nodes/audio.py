"""Audio nodes (DigitalHuman/Audio) and the input-folder helpers the video nodes reuse."""
from __future__ import annotations

import os

from ..engine.media.audio_io import AUDIO_EXTENSIONS, load_audio
from .common import CAT_AUDIO, audio_to_comfy, safe_path


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
