"""Video nodes (DigitalHuman/Video): load a video as IMAGE/AUDIO/fps and as a lazy stream, save MP4.

``DH_VIDEO_STREAM`` carries an :class:`engine.media.stream.FrameStream`: frames read from disk
on demand. Model nodes accept it beside IMAGE and add their work with ``map_chunks``; the
work runs while ``DH_SaveVideo`` encodes, one chunk at a time, so long videos need little RAM.
"""
from __future__ import annotations

import logging
import os
from contextlib import closing

import torch

from ..engine.media.audio_io import empty_audio
from ..engine.media.stream import FrameStream
from ..engine.media.video_io import VIDEO_EXTENSIONS, VideoSource, images_peak_bytes, probe
from ..engine.media.video_write import AUDIO_FIT_MODES, X264_PRESETS, write_mp4
from .audio import file_signature, list_input_files, validate_input_file
from .common import (CAT_VIDEO, VIDEO_STREAM, Progress, audio_to_comfy, check_interrupt, comfy_to_audio, safe_path,
                     uint8_to_image)

log = logging.getLogger("DigitalHuman")



def _check_ram_for_images(name: str, frames: int, width: int, height: int) -> None:
    """Refuse an IMAGE batch that cannot fit in RAM with a clear error, instead of being killed."""
    need = images_peak_bytes(frames, width, height)
    try:
        import psutil

        avail = psutil.virtual_memory().available
    except Exception:  # psutil comes with ComfyUI; without it the check is skipped
        return
    if need > 0.8 * avail:
        raise MemoryError(
            f"'{name}': {frames} frames of {width}x{height} need {need / 2**30:.1f} GiB as IMAGE but only "
            f"{avail / 2**30:.1f} GiB RAM is free. Turn off decode_images and use the stream output, or lower "
            "frame_load_cap / raise select_every_nth."
        )


def _decode_images(src: VideoSource) -> torch.Tensor:
    """The selected frames as IMAGE, decoded straight into the float32 tensor (see VideoSource.read_into)."""
    images = torch.empty((src.frame_count, src.height, src.width, 3), dtype=torch.float32)
    done = src.read_into(images.numpy(), progress=Progress(src.frame_count), check_interrupt=check_interrupt)
    return images[:done]


def frames_input(images, stream: FrameStream | None, fps: float, node: str) -> tuple[FrameStream, float]:
    """The one frame source of a node that takes IMAGE *or* DH_VIDEO_STREAM, as a stream, and its fps.

    ``fps`` <= 0 means the stream's own rate (an IMAGE batch needs an explicit one); a different
    explicit rate retimes a stream (the caller reports it: playback speed changes).
    """
    if (images is None) == (stream is None):
        raise ValueError(f"{node}: connect exactly one of 'images' or 'stream' (got {'both' if images is not None else 'neither'})")
    if stream is None:
        if not fps or fps <= 0:
            raise ValueError(f"{node}: fps must be > 0 for IMAGE input, got {fps}")
        return FrameStream.from_images(images, fps), float(fps)
    if not isinstance(stream, FrameStream):
        raise ValueError(f"{node}: 'stream' must be a {VIDEO_STREAM}, got {type(stream).__name__}")
    if not fps or fps <= 0:
        return stream, stream.fps
    return stream, float(fps)


class DH_LoadVideo:
    """Load a video from ComfyUI's input folder: frames, audio, fps, count, and a lazy stream."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (list_input_files(VIDEO_EXTENSIONS), {"tooltip": "Video file in ComfyUI's input folder (mp4, mov, mkv, webm, ...). Use the upload button to add one."}),
                "force_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01, "tooltip": "Resample to this frame rate (each output frame shows the latest source frame at or before its time); 0 keeps the file's rate (the average rate for a variable-frame-rate video, resampled the same way)."}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 10_000_000, "tooltip": "Drop this many frames from the start (counted after force_fps)."}),
                "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": 10_000_000, "tooltip": "Load at most this many frames (after skipping and select_every_nth); 0 loads all."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000, "tooltip": "Keep every n-th frame; the output fps is divided by n."}),
                "decode_images": ("BOOLEAN", {"default": True, "tooltip": "Decode all selected frames into the IMAGE output. Turn off for long videos and use the stream output: IMAGE then holds only the first frame."}),
            }
        }

    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT", "INT", VIDEO_STREAM)
    RETURN_NAMES = ("images", "audio", "fps", "frame_count", "stream")
    OUTPUT_TOOLTIPS = (
        "The selected frames as IMAGE (only the first frame when decode_images is off).",
        "The audio under the selected frames; empty (0 samples, 44100 Hz) when the file has no audio.",
        "Frame rate of the selected frames.",
        "Number of selected frames.",
        "The same frames as a lazy stream, read from disk while a consumer (e.g. Save Video) runs: for long videos.",
    )
    FUNCTION = "load"
    CATEGORY = CAT_VIDEO
    DESCRIPTION = ("Loads a video from the input folder with optional frame-rate resampling, skipping, capping and "
                   "every-n-th selection. Gives IMAGE frames, the matching AUDIO, fps and frame count, and a "
                   "DH_VIDEO_STREAM that reads frames on demand so long videos need no RAM. A variable-frame-rate "
                   "video is read by its timestamps at its average rate (in sync with its sound), and the node says so.")

    def load(self, video: str, force_fps: float = 0.0, skip_first_frames: int = 0, frame_load_cap: int = 0,
             select_every_nth: int = 1, decode_images: bool = True):
        path = safe_path(video)
        src = VideoSource(path, force_fps=force_fps or None, skip_first=skip_first_frames,
                          frame_cap=frame_load_cap, select_every_nth=select_every_nth)
        stream = FrameStream(src.iter_chunks, src.fps, src.frame_count, src.width, src.height, name=f"video '{video}'")
        if decode_images:
            _check_ram_for_images(video, src.frame_count, src.width, src.height)
            images = _decode_images(src)
        else:
            with closing(src.iter_chunks(1)) as first:
                images = uint8_to_image(next(first))
        wave, sr = src.read_audio()
        if wave.shape[1] == 0:
            wave, sr = empty_audio()
        for note in src.notes:
            log.warning("[DigitalHuman] DH_LoadVideo '%s': %s", video, note)
        # "text": what was done that changes timing (a variable frame rate made constant), shown under
        # the node by web/js/dh_media.js
        return {"ui": {"text": list(src.notes)},
                "result": (images, audio_to_comfy(wave, sr), float(src.fps), int(src.frame_count), stream)}

    @classmethod
    def IS_CHANGED(cls, video: str, **_):
        return file_signature(video)

    @classmethod
    def VALIDATE_INPUTS(cls, video: str):
        ok = validate_input_file(video, "video")
        if ok is not True:
            return ok
        try:
            probe(safe_path(video))
        except ValueError as exc:
            return str(exc)
        return True


class DH_SaveVideo:
    """Encode IMAGE frames or a DH_VIDEO_STREAM (+ AUDIO) to an H.264/AAC MP4 in the output folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "fps": ("FLOAT", {"default": 25.0, "min": 0.0, "max": 240.0, "step": 0.01, "tooltip": "Frames per second of the MP4. 0 uses the stream's own fps (IMAGE input needs a value > 0). Connect Load Video's fps to keep the source timing."}),
                "filename_prefix": ("STRING", {"default": "DigitalHuman/video", "tooltip": "Name of the file in ComfyUI's output folder; may contain subfolders. A counter is appended."}),
                "audio_fit": (list(AUDIO_FIT_MODES), {"default": "pad_or_trim", "tooltip": "pad_or_trim: audio padded with silence or cut to the video length (either is reported under the node). extend_video: the last frame is held until the audio ends."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality: lower is better and larger (0 lossless, 17-23 usual)."}),
                "preset": (list(X264_PRESETS), {"default": "medium", "tooltip": "x264 speed/size trade-off: faster presets encode quicker and make larger files."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to save (give either images or stream)."}),
                "stream": (VIDEO_STREAM, {"tooltip": "A lazy frame stream to save chunk by chunk (give either images or stream)."}),
                "audio": ("AUDIO", {"tooltip": "Sound track muxed as AAC; fitted to the video by audio_fit. NaN/inf samples become silence; more than 2 channels are downmixed (3-8 as surround to stereo, more averaged to mono)."}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written MP4.",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CAT_VIDEO
    DESCRIPTION = ("Saves frames (IMAGE or a lazy stream) and optional audio as an H.264 (yuv420p) + AAC MP4 in the "
                   "output folder, shown in the node. Odd sizes are padded by one edge pixel; audio is fitted by "
                   "audio_fit. Writes to name.partial.mp4 first, so an error never leaves a half file under the final name. "
                   "Whatever was changed (a retimed video, audio cut or padded, a downmix) is listed under the node.")

    def save(self, fps: float, filename_prefix: str = "DigitalHuman/video", audio_fit: str = "pad_or_trim",
             crf: int = 19, preset: str = "medium", images=None, stream: FrameStream | None = None, audio=None):
        import folder_paths

        source, fps = frames_input(images, stream, fps, "DH_SaveVideo")
        wave = comfy_to_audio(audio, "DH_SaveVideo audio") if audio is not None else None
        if wave is not None and wave[0].shape[1] == 0:
            wave = None  # an empty track (a video without sound): write no audio stream
        out_dir = folder_paths.get_output_directory()
        full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, source.width, source.height)
        filename = f"{name}_{counter:05}_.mp4"
        path = os.path.join(full_dir, filename)
        bar = Progress(source.frame_count)
        info = write_mp4(path, source, fps, audio=wave, audio_fit=audio_fit, crf=crf, preset=preset,
                         progress=bar, check_interrupt=check_interrupt)
        notes = info.notes(source_fps=stream.fps if stream is not None else None)
        for note in notes:
            log.warning("[DigitalHuman] DH_SaveVideo %s: %s", filename, note)
        entry = {"filename": filename, "subfolder": subfolder, "type": "output"}
        video = dict(entry, format="video/mp4", frame_rate=float(fps), frame_count=info.frame_count,
                     width=info.width, height=info.height)
        # "text": what was changed about the media (retimed, audio cut or padded, downmixed), shown
        # under the node by web/js/dh_media.js and kept in the history for API clients
        return {"ui": {"images": [entry], "animated": (True,), "video": [video], "text": notes}, "result": (path,)}


NODE_CLASS_MAPPINGS = {"DH_LoadVideo": DH_LoadVideo, "DH_SaveVideo": DH_SaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"DH_LoadVideo": "Load Video (DigitalHuman)", "DH_SaveVideo": "Save Video MP4 (DigitalHuman)"}
