"""Step 3, lip sync: MuseTalk 1.5 nodes (load, lip sync, prepare avatar, speak, load avatar)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..engine.musetalk import faces, pipeline
from ..engine.musetalk.blend import BLEND_MODES
from ..model_loaders.comfy_wrap import PRECISIONS
from .common import CAT_LIPSYNC, Progress, check_interrupt, image_to_uint8

MODEL_TYPE = "DH_MUSETALK"
AVATAR_TYPE = "DH_MUSETALK_AVATAR"
AVATAR_DIR = "musetalk_avatars"


class MuseTalkHandle:
    """What flows on a DH_MUSETALK link: the ModelPatcher of the four networks."""

    def __init__(self, patcher, dtype: torch.dtype):
        self.patcher, self.dtype = patcher, dtype

    def models(self) -> pipeline.MuseTalkModels:
        from ..model_loaders.comfy_wrap import load_for_inference

        return load_for_inference(self.patcher).models()


def _frames_of(images, video) -> tuple[np.ndarray, float | None]:
    """uint8 frames from an IMAGE or a DH_VIDEO_STREAM (and the stream's fps)."""
    if video is not None:
        return video.read_all(), float(video.fps)
    if images is None:
        raise ValueError("connect either 'images' (IMAGE) or 'video' (DH_VIDEO_STREAM)")
    return image_to_uint8(images), None


def _audio_of(audio: dict) -> tuple[torch.Tensor, int]:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("audio must be ComfyUI AUDIO: {'waveform': [B,C,T], 'sample_rate': int}")
    return audio["waveform"], int(audio["sample_rate"])


def _collect(frames_iter, n: int, hw: tuple[int, int]) -> torch.Tensor:
    """IMAGE batch filled frame by frame (no intermediate list of all frames)."""
    out = torch.empty((n, hw[0], hw[1], 3), dtype=torch.float32)
    for i, f in enumerate(frames_iter):
        out[i] = torch.from_numpy(f).float().div_(255.0)
    return out


def _out_frames(n_samples_16k: int, fps: float) -> int:
    from ..engine.musetalk.audio import frame_count

    return frame_count(n_samples_16k, fps)


_FACE_INPUTS = {
    "bbox_shift": ("INT", {"default": 0, "min": -100, "max": 100, "tooltip": "Moves the top of the face box down (+) or up (-) in pixels: MuseTalk's bbox_shift; more shift = more mouth opening."}),
    "blend_mode": (list(BLEND_MODES), {"default": "jaw", "tooltip": "jaw: MuseTalk 1.5's mask (lower face and jaw); mouth: lips and mouth only (least change); raw: MuseTalk 1.0's (whole lower face skin)."}),
}
_OPTIONAL_FRAMES = {
    "images": ("IMAGE", {"tooltip": "Face video frames (or one portrait). Frames without a face pass through unchanged."}),
    "video": ("DH_VIDEO_STREAM", {"tooltip": "A streamed face video instead of 'images'."}),
}


class DH_LoadMuseTalk:
    DESCRIPTION = "Loads MuseTalk 1.5 (UNet, sd-vae-ft-mse VAE, whisper-tiny encoder, BiSeNet face parsing), downloading the files on first use."
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("musetalk",)
    OUTPUT_TOOLTIPS = ("The MuseTalk networks, managed by ComfyUI (offloaded when memory is needed).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU. bf16/fp16 halve the memory."})}}

    def load(self, precision: str):
        import comfy.model_management as mm

        from ..model_loaders import musetalk as ml
        from ..model_loaders.comfy_wrap import make_patcher, pick_dtype
        from ..model_loaders.download import ensure_model

        dtype = pick_dtype(precision, mm.get_torch_device())
        paths = ml.ensure_files(lambda mid: ensure_model(mid, check_interrupt=check_interrupt))
        models = ml.load_musetalk(paths["unet"], paths["unet_config"], paths["vae"], paths["whisper"],
                                  paths["face_parser"], "cpu", dtype, vae_config=paths["vae_config"],
                                  whisper_config=paths["whisper_config"])
        return (MuseTalkHandle(make_patcher(ml.MuseTalkBundle(models)), dtype),)


class DH_MuseTalkLipSync:
    DESCRIPTION = ("Redraws the mouth of a face video to speak the audio (MuseTalk 1.5). The output has "
                   "floor(audio seconds x fps) frames; a shorter video is played forwards and backwards.")
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("Lip-synced frames.", "The input audio, unchanged (same length as the frames within one frame).", "Frame rate of the frames.")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "musetalk": (MODEL_TYPE, {"tooltip": "From Load MuseTalk."}),
                "audio": ("AUDIO", {"tooltip": "Speech, any sample rate and channel count (resampled to 16 kHz mono)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.0, "max": 120.0, "step": 0.01, "tooltip": "Output frame rate; 0 = the video stream's own. The model was trained at 25; other rates pick audio windows at the matching times."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Frames per network pass: more is faster on a GPU, needs more memory."}),
                **_FACE_INPUTS,
            },
            "optional": dict(_OPTIONAL_FRAMES),
        }

    def run(self, musetalk, audio, fps, batch_size, bbox_shift, blend_mode, images=None, video=None):
        frames, stream_fps = _frames_of(images, video)
        fps = float(fps) if fps > 0 else (stream_fps or 25.0)
        wave, sr = _audio_of(audio)
        models = musetalk.models()
        from ..engine.musetalk.audio import SAMPLE_RATE, to_mono_16k

        samples = to_mono_16k(wave, sr)  # resampled once; the engine then sees 16 kHz mono
        n_out = _out_frames(samples.size, fps)
        boxes = faces.track_boxes(frames, bbox_shift, check_interrupt=check_interrupt)
        bar = Progress(len(frames) + n_out)
        out = pipeline.lip_sync(models, frames, boxes, samples, SAMPLE_RATE, fps, batch_size, blend_mode,
                                progress=bar, check_interrupt=check_interrupt)
        return (_collect(out, n_out, frames.shape[1:3]), audio, fps)


class DH_MuseTalkPrepareAvatar:
    DESCRIPTION = ("Real-time mode, step 1: caches what does not depend on the audio (face boxes, crops, latents, "
                   "blend masks) for a face video; optionally saved to output/musetalk_avatars/<name> for later runs.")
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = (AVATAR_TYPE,)
    RETURN_NAMES = ("avatar",)
    OUTPUT_TOOLTIPS = ("The prepared avatar, for MuseTalk Speak.",)
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "musetalk": (MODEL_TYPE, {"tooltip": "From Load MuseTalk."}),
                **_FACE_INPUTS,
                "save_name": ("STRING", {"default": "", "tooltip": "If set, the avatar is saved under output/musetalk_avatars/<name> (letters, digits, - and _)."}),
            },
            "optional": dict(_OPTIONAL_FRAMES),
        }

    def prepare(self, musetalk, bbox_shift, blend_mode, save_name, images=None, video=None):
        frames, _ = _frames_of(images, video)
        models = musetalk.models()
        boxes = faces.track_boxes(frames, bbox_shift, check_interrupt=check_interrupt)
        cache = pipeline.prepare_avatar(models, frames, boxes, blend_mode, progress=Progress(len(frames)),
                                        check_interrupt=check_interrupt)
        cache.meta["bbox_shift"] = int(bbox_shift)
        if save_name.strip():
            cache.save(_avatar_dir(save_name))
        return (cache,)


class DH_MuseTalkLoadAvatar:
    DESCRIPTION = "Loads an avatar saved by MuseTalk Prepare Avatar from output/musetalk_avatars/<name>."
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = (AVATAR_TYPE,)
    RETURN_NAMES = ("avatar",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "", "tooltip": "Name given to Prepare Avatar's save_name."})}}

    def load(self, name):
        return (pipeline.AvatarCache.load(_avatar_dir(name)),)


class DH_MuseTalkSpeak:
    DESCRIPTION = "Real-time mode, step 2: speaks audio with a prepared avatar (audio features, UNet and VAE decoder only)."
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = DH_MuseTalkLipSync.OUTPUT_TOOLTIPS
    FUNCTION = "speak"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "musetalk": (MODEL_TYPE, {"tooltip": "From Load MuseTalk."}),
                "avatar": (AVATAR_TYPE, {"tooltip": "From MuseTalk Prepare Avatar or Load Avatar."}),
                "audio": ("AUDIO", {"tooltip": "Speech, any sample rate and channel count."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "step": 0.01, "tooltip": "Output frame rate (25 = as trained)."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Frames per network pass."}),
            }
        }

    def speak(self, musetalk, avatar, audio, fps, batch_size):
        from ..engine.musetalk.audio import SAMPLE_RATE, to_mono_16k

        wave, sr = _audio_of(audio)
        samples = to_mono_16k(wave, sr)
        n_out = _out_frames(samples.size, fps)
        out = pipeline.speak(musetalk.models(), avatar, samples, SAMPLE_RATE, fps, batch_size, progress=Progress(n_out),
                             check_interrupt=check_interrupt)
        return (_collect(out, n_out, avatar.frames.shape[1:3]), audio, float(fps))


def _avatar_dir(name: str) -> Path:
    import folder_paths

    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ValueError(f"avatar name '{name}' must be 1-64 letters, digits, '-' or '_'")
    return Path(folder_paths.get_output_directory()) / AVATAR_DIR / name


NODE_CLASS_MAPPINGS = {
    "DH_LoadMuseTalk": DH_LoadMuseTalk,
    "DH_MuseTalkLipSync": DH_MuseTalkLipSync,
    "DH_MuseTalkPrepareAvatar": DH_MuseTalkPrepareAvatar,
    "DH_MuseTalkLoadAvatar": DH_MuseTalkLoadAvatar,
    "DH_MuseTalkSpeak": DH_MuseTalkSpeak,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_LoadMuseTalk": "Load MuseTalk",
    "DH_MuseTalkLipSync": "MuseTalk Lip Sync",
    "DH_MuseTalkPrepareAvatar": "MuseTalk Prepare Avatar",
    "DH_MuseTalkLoadAvatar": "MuseTalk Load Avatar",
    "DH_MuseTalkSpeak": "MuseTalk Speak",
}
