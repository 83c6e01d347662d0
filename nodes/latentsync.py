"""Step 3, lip sync: LatentSync 1.6 / 1.5 nodes (load, lip sync).

The lip sync accepts a face video as IMAGE (with its frame rate) or as a DH_VIDEO_STREAM at any
frame rate; the clip is shown at the model's 25 fps by the pack's resampling rule, the output is
``floor(audio seconds x 25)`` frames at 25 fps (or re-timed to the input's rate, by option), and
the audio passes through unchanged. Memory: as MuseTalk's node, the face clip is kept whole (a
shorter clip plays forwards and backwards), in RAM up to ``DH_FACE_CLIP_RAM_MB`` and in an unnamed
memory-mapped temporary file beyond; with ``output_images`` off the frames are generated window by
window while the stream's consumer (e.g. Save Video) reads them, so no output frame is held.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..engine.latentsync import config as LC
from ..engine.latentsync import pipeline as LP
from ..engine.media.stream import FrameStream, chunked
from ..model_loaders.comfy_wrap import PRECISIONS
from .common import CAT_LIPSYNC, VIDEO_STREAM, Progress, check_interrupt, comfy_to_audio, uint8_to_image
from .lipsync import _face_analyzer, _frames_of, _input_name, _require_frames

log = logging.getLogger("DigitalHuman")
MODEL_TYPE = "DH_LATENTSYNC"
FPS_MODES = ("25", "input")


class LatentSyncHandle:
    """What flows on a DH_LATENTSYNC link: the ModelPatcher of the three networks (+ the mask)."""

    def __init__(self, patcher, dtype: torch.dtype, version: str):
        self.patcher, self.dtype, self.version = patcher, dtype, version

    def models(self) -> LP.LatentSyncModels:
        from ..model_loaders.comfy_wrap import load_for_inference

        return load_for_inference(self.patcher).models()


class _Rows:
    """Frames ``rows`` of a clip, indexable and sliceable without copying the clip."""

    def __init__(self, frames, rows: np.ndarray):
        self.frames, self.rows = frames, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, s):
        if isinstance(s, slice):
            return np.stack([np.asarray(self.frames[int(r)]) for r in self.rows[s]])
        return np.asarray(self.frames[int(self.rows[s])])


def clip_alignment(frames, clip_index: np.ndarray, resolution: int, missing: str,
                   where: str = "face video") -> LP.FaceAlignment:
    """Track and align the face on the clip rows the 25 fps timeline shows (each once, in order)."""
    rows = np.unique(clip_index)
    sub = LP.track_alignment(_Rows(frames, rows), resolution, analyzer=_face_analyzer(), missing=missing,
                             progress=Progress(len(rows)), check_interrupt=check_interrupt, where=where)
    n = len(frames)
    full = LP.FaceAlignment(np.zeros((n, 2, 3), np.float32), np.zeros(n, bool), np.zeros(n, bool), [])
    full.matrices[rows], full.usable[rows], full.held[rows] = sub.matrices, sub.usable, sub.held
    full.missing_frames = [int(rows[i]) for i in sub.missing_frames]
    return full


def _report(n_out: int, fps: float, n_clip_frames: int, src_fps: float, align: LP.FaceAlignment,
            clip_index: np.ndarray, missing: str, models: LP.LatentSyncModels) -> str:
    shown = set(int(r) for r in np.unique(clip_index))
    missing_rows = [r for r in align.missing_frames if r in shown]
    text = (f"LatentSync {models.version}: {n_out} frames at {fps:g} fps from a {n_clip_frames}-frame face video at "
            f"{src_fps:g} fps")
    if missing_rows:
        head = ", ".join(str(r) for r in missing_rows[:20]) + (" ..." if len(missing_rows) > 20 else "")
        how = "passed through unchanged" if missing == "pass" else "lip-synced at the last good face's place"
        text += f"; no face in {len(missing_rows)} video frame(s) ({head}): {how}"
        log.warning("[DigitalHuman] %s", text)
    if models.fell_back:
        text += f"; fp32 used for {sorted(models.fell_back)} (half precision gave NaN/black output)"
    return text


class DH_LoadLatentSync:
    DESCRIPTION = ("Loads LatentSync (ByteDance): the 3-D latent UNet of version 1.6 (512 px faces) or 1.5 (256 px), "
                   "the Whisper tiny audio encoder, the sd-vae-ft-mse VAE and the mouth mask, downloading the files on "
                   "first use.")
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("latentsync",)
    OUTPUT_TOOLTIPS = ("The LatentSync networks, managed by ComfyUI (offloaded when memory is needed).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "version": (list(LC.VERSIONS), {"default": "1.6", "tooltip": "1.6: trained on 512 px faces (sharper); "
                                            "1.5: 256 px (faster, less memory)."}),
            "precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU. fp16/bf16 halve "
                                       "the memory; a network giving NaN or black output in half precision switches "
                                       "to fp32 by itself."}),
        }}

    def load(self, version: str, precision: str):
        import comfy.model_management as mm

        from ..model_loaders import latentsync as ml
        from ..model_loaders.comfy_wrap import make_patcher, pick_dtype
        from ..model_loaders.download import ensure_model

        dtype = pick_dtype(precision, mm.get_torch_device())
        paths = ml.ensure_files(version, lambda mid: ensure_model(mid, check_interrupt=check_interrupt))
        models = ml.load_latentsync(version, paths["unet"], paths["whisper"], paths["vae"], paths["mask"], "cpu", dtype,
                                    vae_config=paths["vae_config"])
        return (LatentSyncHandle(make_patcher(ml.LatentSyncBundle(models)), dtype, version),)


class DH_LatentSyncLipSync:
    DESCRIPTION = ("Redraws the mouth of a face video to speak the audio (LatentSync: 20 denoising steps per 16-frame "
                   "window). Any input frame rate; the output has floor(audio seconds x 25) frames, a shorter video "
                   "plays forwards and backwards, frames without a face pass through and are listed in the report.")
    CATEGORY = CAT_LIPSYNC
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT", VIDEO_STREAM, "STRING")
    RETURN_NAMES = ("images", "audio", "fps", "stream", "report")
    OUTPUT_TOOLTIPS = ("Lip-synced frames (only the first one when output_images is off).",
                       "The input audio, unchanged (as long as the frames, within one frame).",
                       "Frame rate of the output (25, or the input's).",
                       "The lip-synced frames as a lazy stream, generated window by window while its consumer runs.",
                       "Frame counts, frames without a face, precision fall-backs.")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        d = LP.SyncOptions.defaults()
        return {
            "required": {
                "latentsync": (MODEL_TYPE, {"tooltip": "From Load LatentSync."}),
                "audio": ("AUDIO", {"tooltip": "Speech, any sample rate and channel count (resampled to 16 kHz mono)."}),
                "steps": ("INT", {"default": d.steps, "min": 1, "max": 100, "tooltip": "DDIM denoising steps per window "
                                  "(the reference uses 20)."}),
                "guidance": ("FLOAT", {"default": d.guidance, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip":
                                       "Audio guidance (classifier-free); 1 or less turns it off and halves the work."}),
                "seed": ("INT", {"default": d.seed, "min": 0, "max": 2 ** 63 - 1, "tooltip": "Seed of the starting "
                                 "noise and the VAE samples; the same seed gives the same video on any device."}),
                "feature_reuse": ("BOOLEAN", {"default": False, "tooltip": "Reuse the UNet's deep features on 2 of "
                                              "every 3 steps (DeepCache, as the reference's --enable_deepcache): about "
                                              "2x faster, slightly different result."}),
                "window": ("INT", {"default": d.window, "min": 1, "max": 24, "tooltip": "Frames denoised together "
                                   "(trained with 16). Fewer needs less GPU memory (8 fits 1.6 on 12 GB cards) but "
                                   "changes the temporal smoothing."}),
                "vae_batch": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Frames per VAE call; 0 = the "
                                      "whole window. 1-4 lowers peak GPU memory without changing the result."}),
                "missing_face": (list(LP.MISSING_MODES), {"default": "pass", "tooltip": "A frame without a face: pass "
                                 "shows it unchanged; hold lip-syncs it at the last good face's place."}),
                "output_fps": (list(FPS_MODES), {"default": "25", "tooltip": "25: the model's rate; input: re-timed to "
                               "the input video's frame rate (floor(audio seconds x rate) frames)."}),
                "output_images": ("BOOLEAN", {"default": True, "tooltip": "Compute every frame into the IMAGE output "
                                  "(all frames in RAM). Turn off for long audio and use the stream output: IMAGE then "
                                  "holds only the first frame, the rest is made while the stream's consumer runs."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Face video frames (or one portrait)."}),
                "video": (VIDEO_STREAM, {"tooltip": "A streamed face video instead of 'images' (its own frame rate)."}),
                "input_fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.01, "tooltip":
                                        "Frame rate of 'images' (a stream reports its own)."}),
            },
        }

    def run(self, latentsync, audio, steps, guidance, seed, feature_reuse, window, vae_batch, missing_face, output_fps,
            output_images=True, images=None, video=None, input_fps=25.0):
        from ..engine.latentsync.audio import frame_count
        from ..engine.musetalk.audio import to_mono_16k

        _require_frames(images, video)
        if output_fps not in FPS_MODES:
            raise ValueError(f"output_fps must be one of {FPS_MODES}, got '{output_fps}'")
        opts = LP.SyncOptions.defaults(steps=int(steps), guidance=float(guidance), seed=int(seed),
                                       feature_reuse=bool(feature_reuse), window=int(window), vae_batch=int(vae_batch))
        opts.check()
        src_fps = float(video.fps) if video is not None else float(input_fps)
        wave, sr = comfy_to_audio(audio, "LatentSync audio")
        samples = to_mono_16k(wave, sr)
        model_fps = float(LC.section("data")["video_fps"])
        # lengths from the audio as given (not the resampled copy, whose length is rounded up): floor(seconds x fps);
        # too-short audio fails before any video is read
        n25 = frame_count(wave.shape[-1], model_fps, sample_rate=sr)
        out_fps = model_fps if output_fps == "25" else src_fps
        n_out = n25 if output_fps == "25" else frame_count(wave.shape[-1], out_fps, sample_rate=sr)
        frames = _frames_of(images, video)
        clip_index = LP.resample_indices(len(frames), src_fps, model_fps)
        # faces first: no face anywhere fails before the networks are placed on the device
        align = clip_alignment(frames, clip_index, LC.resolution(latentsync.version), missing_face, _input_name(video))
        h, w = frames.shape[1:3]

        def generate(progress) -> "iter":
            m = latentsync.models()  # placed on the device when generation starts (maybe after an offload)
            gen = LP.lip_sync(m, frames, align, samples, opts, clip_index, n25, progress=progress,
                              check_interrupt=check_interrupt)
            return gen if out_fps == model_fps else LP.at_fps(gen, n25, model_fps, out_fps, n_out)

        if output_images:
            out = torch.empty((n_out, h, w, 3), dtype=torch.float32)
            for i, f in enumerate(generate(Progress(n25))):
                out[i] = torch.from_numpy(f).float().div_(255.0)
            stream = FrameStream.from_images(out, out_fps)
            report = _report(n_out, out_fps, len(frames), src_fps, align, clip_index, missing_face, latentsync.models())
        else:
            first = next(iter(generate(None)))
            out = uint8_to_image(first[None])
            stream = _lazy_stream(generate, n_out, n25, w, h, out_fps)
            report = _report(n_out, out_fps, len(frames), src_fps, align, clip_index, missing_face, latentsync.models())
            report += "; streamed (IMAGE holds the first frame)"
        return {"ui": {"text": [report]}, "result": (out, audio, out_fps, stream, report)}


def _lazy_stream(generate, n_out: int, n25: int, width: int, height: int, fps: float) -> FrameStream:
    """A re-iterable stream whose every read runs the lip sync window by window inside the consumer's loop."""

    def open_chunks(chunk: int):
        yield from chunked(generate(Progress(n25)), chunk)

    return FrameStream(open_chunks, fps, n_out, width, height, name="LatentSync")


NODE_CLASS_MAPPINGS = {
    "DH_LoadLatentSync": DH_LoadLatentSync,
    "DH_LatentSyncLipSync": DH_LatentSyncLipSync,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_LoadLatentSync": "Load LatentSync",
    "DH_LatentSyncLipSync": "LatentSync Lip Sync",
}
