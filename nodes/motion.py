"""Step 2, motion: LivePortrait nodes (load, animate, retarget, expression editor).

Each node converts ComfyUI types, calls one engine function and reports progress; the algorithm
lives in ``engine/liveportrait``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from ..engine.liveportrait.animate import Animation, animate, animation_stream
from ..engine.liveportrait.video_source import animate_video
from ..engine.media.stream import FrameStream
from ..engine.liveportrait.edit import (RATIO_RANGES, SAMPLE_PARTS, SLIDER_RANGES, Expression, edit_image, load_preset,
                                        save_preset)
from ..engine.liveportrait.options import ANIMATION_REGIONS, DRIVING_OPTIONS, AnimateOptions
from ..model_loaders.comfy_wrap import PRECISIONS
from .common import (CAT_MOTION, VIDEO_STREAM, Progress, check_interrupt, image_to_uint8, save_previews,
                     uint8_to_image)

log = logging.getLogger("DigitalHuman")
LIVEPORTRAIT = "DH_LIVEPORTRAIT"
PRESET_DIR = ("DigitalHuman", "expressions")


def _face_ops(device: torch.device | str = "cpu", det_thresh: float = 0.0):
    """The face engine on the catalogued MediaPipe files (models/face_analysis, fetched on first use)."""
    from ..engine.liveportrait.faces import EngineFaceOps
    from ..model_loaders.face import load_face_analyzer

    return EngineFaceOps(analyzer=load_face_analyzer(device=str(device)), det_thresh=det_thresh)


def _one_portrait(images: torch.Tensor, where: str = "portrait") -> np.ndarray:
    frames = image_to_uint8(images)
    if len(frames) != 1:
        raise ValueError(f"{where}: expected one image, got a batch of {len(frames)} (this node edits one still "
                         "portrait; to edit several, run it once per image)")
    return frames[0]


class LoadLivePortrait:
    DESCRIPTION = ("Loads the five LivePortrait networks (appearance, motion, warping, SPADE generator, "
                   "stitching/retargeting). The official weights are downloaded into models/liveportrait on "
                   "first use.")
    CATEGORY = CAT_MOTION
    RETURN_TYPES = (LIVEPORTRAIT,)
    RETURN_NAMES = ("liveportrait",)
    OUTPUT_TOOLTIPS = ("The loaded LivePortrait model, managed by ComfyUI (offloaded when memory is needed).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: fp16 on GPU, fp32 on CPU. A network "
                                       "that gives NaN or black output in half precision switches to fp32 by itself."}),
            "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's compute device with its "
                                         "memory management; cpu: keep everything on the CPU."}),
        }}

    def load(self, precision: str, device: str):
        from ..model_loaders.liveportrait import load_for_comfy

        return (load_for_comfy(precision, device, check_interrupt=check_interrupt),)


def _option_inputs() -> dict:
    d = AnimateOptions()
    f = lambda v, lo, hi, step, tip: ("FLOAT", {"default": v, "min": lo, "max": hi, "step": step, "tooltip": tip})
    b = lambda v, tip: ("BOOLEAN", {"default": v, "tooltip": tip})
    return {
        "driving_multiplier": f(0.8, 0.0, 2.0, 0.01, "Expression strength: 0 keeps the source, 1 copies the driving "
                                "motion fully (the reference's default is 1.0; 0.8 is this pack's recommendation)."),
        "relative_motion": b(d.relative_motion, "Apply the motion relative to the first driving frame (recommended) "
                             "instead of copying the driving pose and expression."),
        "driving_option": (list(DRIVING_OPTIONS), {"default": d.driving_option, "tooltip": "expression-friendly "
                           "rescales the motion to the source face size; pose-friendly keeps it as is."}),
        "animation_region": (list(ANIMATION_REGIONS), {"default": d.animation_region, "tooltip": "What moves: all, "
                             "exp (expression only), pose (head only), lip, eyes."}),
        "stitching": b(d.stitching, "Stitch the face back seamlessly (recommended unless the head moves a lot)."),
        "eye_retargeting": b(d.eye_retargeting, "Transfer the driving eye openness (experimental in the reference)."),
        "lip_retargeting": b(d.lip_retargeting, "Transfer the driving lip openness (experimental in the reference)."),
        "normalize_lip": b(d.normalize_lip, "Close the source's mouth before animating."),
        "source_video_eye_retargeting": b(d.source_video_eye_retargeting, "Source video only: keep each frame's eye "
                                          "openness at the first frame's (may jitter)."),
        "driving_smooth_observation_variance": ("FLOAT", {"default": d.driving_smooth_observation_variance, "min": 1e-9,
                                                "max": 1e-3, "step": 1e-8, "round": False, "tooltip": "Source video "
                                                "only: motion smoothing; larger is smoother but less exact."}),
        "pasteback": b(d.pasteback, "Paste the animated face into the full portrait; off returns the 512x512 crops."),
        "do_crop": b(d.do_crop, "Crop the portrait around the face (off: the portrait is already a face crop)."),
        "crop_driving_video": b(d.crop_driving_video, "Crop the driving frames around the face (always done for "
                                "non-square driving video)."),
        "scale": f(d.scale, 1.0, 4.0, 0.05, "Source crop size relative to the face (larger: smaller face)."),
        "vx_ratio": f(d.vx_ratio, -0.5, 0.5, 0.005, "Shift of the source crop left/right."),
        "vy_ratio": f(d.vy_ratio, -0.5, 0.5, 0.005, "Shift of the source crop up/down."),
        "do_rot": b(d.do_rot, "Rotate the source crop to level the face."),
        "source_max_dim": ("INT", {"default": d.source_max_dim, "min": 64, "max": 4096, "tooltip":
                                   "Larger portraits are shrunk to this longest side first."}),
        "source_division": ("INT", {"default": d.source_division, "min": 1, "max": 64, "tooltip":
                                    "Portrait width and height are trimmed to multiples of this."}),
        "scale_crop_driving_video": f(d.scale_crop_driving_video, 1.0, 4.0, 0.05, "Driving crop size relative to the face."),
        "vx_ratio_crop_driving_video": f(d.vx_ratio_crop_driving_video, -0.5, 0.5, 0.005, "Driving crop shift left/right."),
        "vy_ratio_crop_driving_video": f(d.vy_ratio_crop_driving_video, -0.5, 0.5, 0.005, "Driving crop shift up/down."),
        "det_thresh": f(d.det_thresh, 0.0, 1.0, 0.01, "Minimum face-detection score; weaker detections count as "
                        "no face."),
        "missing_face": (["pass", "hold"], {"default": d.missing_face, "tooltip": "A driving frame without a face: "
                         "pass shows the portrait unchanged, hold repeats the last motion."}),
        "chunk_size": ("INT", {"default": d.chunk_size, "min": 1, "max": 256, "tooltip":
                               "Frames per batch; larger is faster on a GPU and uses more memory."}),
    }


class LivePortraitAnimate:
    DESCRIPTION = ("Animates a portrait with the head and face motion of a driving video (LivePortrait). Driving "
                   "frames without a face leave the portrait unchanged (or hold, by option) and are listed in "
                   "the report. For long videos turn off output_images and connect the stream output to Save "
                   "Video: the frames are then animated chunk by chunk while the video is written (bounded RAM).")
    CATEGORY = CAT_MOTION
    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT", "STRING", VIDEO_STREAM)
    RETURN_NAMES = ("frames", "face_mask", "fps", "report", "stream")
    OUTPUT_TOOLTIPS = ("Animated frames (portrait size with paste-back, else 512x512 crops); only the first frame "
                       "when output_images is off.",
                       "Soft mask of the animated face region, one per IMAGE frame.",
                       "Frame rate of the driving video.",
                       "Frame count and the driving frames without a face.",
                       "The animated frames as a lazy stream (for Save Video or lip sync). With output_images off "
                       "they are computed while the consumer reads them, never all held in RAM.")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "liveportrait": (LIVEPORTRAIT, {"tooltip": "From Load LivePortrait."}),
            "portrait": ("IMAGE", {"tooltip": "The portrait to animate (gray and RGBA are accepted). A batch of "
                                   "frames is a source video: each frame is animated (video-to-video)."}),
            **_option_inputs(),
            "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0, "tooltip": "Frame rate reported for "
                              "driving IMAGE frames (a driving video stream reports its own)."}),
            "output_images": ("BOOLEAN", {"default": True, "tooltip": "Animate every frame now into the IMAGE "
                                          "output. Turn off for long videos and use the stream output: IMAGE then "
                                          "holds only the first frame and the animation runs while the stream is "
                                          "read (e.g. by Save Video)."}),
        }, "optional": {
            "driving_images": ("IMAGE", {"tooltip": "Driving frames (or one driving image)."}),
            "driving_video": (VIDEO_STREAM, {"tooltip": "A streamed driving video (read in chunks, bounded memory)."}),
        }}

    def run(self, liveportrait, portrait, fps, driving_images=None, driving_video=None, output_images=True,
            **options):
        if (driving_images is None) == (driving_video is None):
            raise ValueError("connect exactly one of driving_images or driving_video")
        opts = AnimateOptions.from_dict(options)
        driving = image_to_uint8(driving_images) if driving_images is not None else driving_video
        if driving_video is not None:
            fps = float(getattr(driving_video, "fps", fps))
        total = len(driving) if hasattr(driving, "__len__") else 1
        nets = liveportrait.acquire()
        face = _face_ops(nets.device, opts.det_thresh)
        if len(portrait) > 1:
            source = image_to_uint8(portrait)
            anim = animate_video(nets, source, driving, face, opts, progress=Progress(len(source)),
                                 check_interrupt=check_interrupt)
            report = f"{anim.n} frames at {fps:g} fps (source video of {len(source)} frames)"
            if anim.missing:
                report += f"; frame(s) {anim.missing} without a face ({opts.missing_face})"
        else:
            # with output_images off only the first pass (landmarks) runs here: the bar covers it alone
            bar = Progress(2 * max(total, 1) if output_images else max(total, 1))
            anim = animate(nets, _one_portrait(portrait), driving, face, opts,
                           progress=bar if output_images else (lambda done, _total: bar(done, max(total, done))),
                           check_interrupt=check_interrupt)
            report = f"{anim.n} frames at {fps:g} fps"
            if anim.missing:
                report += f"; no face in driving frame(s) {anim.missing} ({opts.missing_face})"
                log.warning("[DigitalHuman] LivePortrait: %s", report)
        if nets.fell_back:
            report += f"; fp32 used for {sorted(nets.fell_back)} (half precision gave NaN/black output)"
        if output_images:
            out = _collect(anim)
            stream = FrameStream.from_images(out, fps)
            count = len(out)
        else:  # one frame now (a one-frame pass), the rest while the stream is read
            first = next(iter(anim.replay(check_interrupt=check_interrupt, chunk_size=1))).frames[:1]
            out = uint8_to_image(first)
            # each read re-acquires the networks: ComfyUI may have offloaded them since this node ran
            stream = animation_stream(anim, fps, first.shape[2], first.shape[1], anim.n, Progress, check_interrupt,
                                      before_read=liveportrait.acquire)
            count = 1
            report += "; streamed (IMAGE holds the first frame)"
        return (out, _face_masks(anim, count), fps, report, stream)


def _collect(anim) -> torch.Tensor:
    """Every animated frame in one IMAGE tensor (filled chunk by chunk, no second copy)."""
    out: torch.Tensor | None = None
    for chunk in anim:
        if out is None:
            out = torch.empty((anim.n,) + chunk.frames.shape[1:], dtype=torch.float32)
        out[chunk.start:chunk.start + len(chunk.frames)] = uint8_to_image(chunk.frames)
    return out


def _face_masks(anim, count: int) -> torch.Tensor:
    """MASK of the first ``count`` output frames: one shared mask for a still portrait (an expanded view, so
    free for any count), per frame for a source video."""
    if isinstance(anim, Animation):
        return torch.from_numpy(np.ascontiguousarray(anim.face_mask, np.float32))[None].expand(count, -1, -1)
    return torch.stack([torch.from_numpy(anim.face_mask(i)) for i in range(count)])


def _render_edits(liveportrait, portrait, expressions, stitching: bool, options: AnimateOptions,
                  sample_image: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (edited portraits, 512 crops)."""
    sample = _one_portrait(sample_image, "sample_image") if sample_image is not None else None
    nets = liveportrait.acquire()
    face = _face_ops(nets.device, options.det_thresh)
    return edit_image(nets, _one_portrait(portrait), expressions, face, options, stitching, sample)


class LivePortraitRetarget:
    DESCRIPTION = "Opens or closes the eyes and lips of a still portrait (LivePortrait retargeting)."
    CATEGORY = CAT_MOTION
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "face_crop")
    OUTPUT_TOOLTIPS = ("The portrait with the new eye/lip openness.", "The 512x512 face crop.")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        ratio = lambda tip: ("FLOAT", {"default": 0.35, "min": 0.0, "max": 0.8, "step": 0.01, "tooltip": tip})
        return {"required": {
            "liveportrait": (LIVEPORTRAIT, {"tooltip": "From Load LivePortrait."}),
            "portrait": ("IMAGE", {"tooltip": "The portrait to edit."}),
            "retarget_eyes": ("BOOLEAN", {"default": True, "tooltip": "Change the eye openness."}),
            "eyes_open": ratio("Target eye-open ratio (0 closed, about 0.4 wide open)."),
            "retarget_lips": ("BOOLEAN", {"default": True, "tooltip": "Change the lip openness."}),
            "lips_open": ratio("Target lip-open ratio (0 closed)."),
            "stitching": ("BOOLEAN", {"default": True, "tooltip": "Keep the crop border seamless."}),
        }}

    def run(self, liveportrait, portrait, retarget_eyes, eyes_open, retarget_lips, lips_open, stitching):
        e = Expression(eyes_open=eyes_open if retarget_eyes else None, lips_open=lips_open if retarget_lips else None)
        frames, crops = _render_edits(liveportrait, portrait, [e], stitching, AnimateOptions())
        return uint8_to_image(frames), uint8_to_image(crops)


def preset_dir() -> Path:
    """``<ComfyUI user folder>/DigitalHuman/expressions`` (created on first save)."""
    import folder_paths

    base = folder_paths.get_user_directory() if hasattr(folder_paths, "get_user_directory") else folder_paths.user_directory
    return Path(base).joinpath(*PRESET_DIR)


def list_presets() -> list[str]:
    try:
        folder = preset_dir()
    except Exception:  # folder_paths unavailable
        return []
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _preset_path(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9 _.-]{1,64}", name) or name.startswith("."):
        raise ValueError(f"preset name '{name}': use 1-64 letters, digits, spaces, '_', '-' or '.'")
    return preset_dir() / f"{name}.json"


class ExpressionEditor:
    DESCRIPTION = ("Edits the expression of a still portrait with sliders (smile, blink, wink, eyebrow, gaze, mouth "
                   "shapes) and the head pose; with the pose sliders at 0 the head does not move (unlike "
                   "AdvancedLivePortrait, wink and aaa do not turn the head). Connect a sample_image to copy its "
                   "expression, mouth, eyes and/or head angles (sample_parts, sample_ratio); src_ratio fades the "
                   "portrait's own expression towards neutral. Shows the edited face crop in the node. Expressions "
                   "can be saved as presets (JSON in ComfyUI's user folder: the slider and ratio values, not the "
                   "sample image) and loaded again.")
    CATEGORY = CAT_MOTION
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "face_crop", "expression")
    OUTPUT_TOOLTIPS = ("The edited portrait.", "The 512x512 face crop (also shown in the node).",
                       "The expression used, as preset JSON.")
    FUNCTION = "run"
    OUTPUT_NODE = True  # the preview shows even when nothing is connected, as in AdvancedLivePortrait

    TIPS = {"smile": "Smile.", "wink": "Wink (one eye).",
            "blink": "Eyelids: negative closes the eyes (AdvancedLivePortrait offers -20..5 for this), positive "
                     "opens them wider.",
            "eyebrow": "Raise (+) or lower (-) the eyebrows.", "pupil_x": "Gaze left/right.",
            "pupil_y": "Gaze up/down.", "pout": "Pout.", "woo": "Mouth shape 'woo' (pursed lips).",
            "eee": "Mouth shape 'eee' (grin).", "aaa": "Mouth shape 'aaa' (close <-> open).",
            "head_pitch": "Head pitch in degrees, relative to the portrait.",
            "head_yaw": "Head yaw in degrees, relative to the portrait.",
            "head_roll": "Head roll in degrees, relative to the portrait.", "mov_x": "Move the face sideways.",
            "mov_y": "Move the face up/down.", "mov_z": "Face size (zoom)."}

    @classmethod
    def INPUT_TYPES(cls):
        sliders = {}
        for name, (lo, hi) in SLIDER_RANGES.items():
            default = 1.0 if name == "mov_z" else 0.0
            sliders[name] = ("FLOAT", {"default": default, "min": lo, "max": hi, "step": 0.01, "tooltip": cls.TIPS[name]})

        def ratio(name: str, default: float, tip: str) -> tuple:
            lo, hi = RATIO_RANGES[name]
            return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": 0.01, "tooltip": tip})
        return {"required": {
            "liveportrait": (LIVEPORTRAIT, {"tooltip": "From Load LivePortrait."}),
            "portrait": ("IMAGE", {"tooltip": "The portrait to edit."}),
            **sliders,
            "preset": (["none"] + list_presets(), {"default": "none", "tooltip": "A saved expression; when set, its "
                       "values (sliders and ratios) are used instead of the widgets; the sample image stays as "
                       "connected."}),
            "save_as": ("STRING", {"default": "", "tooltip": "Save the expression used under this preset name "
                        "(empty: do not save). A preset keeps the sliders and ratios, not the sample image."}),
            # appended after the older widgets so that workflows saved before them keep their values
            "src_ratio": ratio("src_ratio", 1.0, "Share of the portrait's own expression: 1 keeps it, 0 starts "
                               "from a neutral face (the face's global offset is kept)."),
            "sample_ratio": ratio("sample_ratio", 1.0, "Weight of what the sample image adds (0: nothing; above 1 "
                                  "exaggerates, below 0 inverts). Used only with a sample_image."),
            "sample_parts": (list(SAMPLE_PARTS), {"default": "expression", "tooltip": "What the sample image adds: "
                             "its expression, its head angles, only its mouth or eyes, or all (expression and "
                             "angles). Added to the portrait's own, as in AdvancedLivePortrait: lower src_ratio to "
                             "replace the expression; the angles add to the portrait's, so a frontal portrait takes "
                             "the sample's pose."}),
        }, "optional": {
            "sample_image": ("IMAGE", {"tooltip": "One image of a face whose expression, head angles, mouth or "
                                       "eyes are added to the portrait (see sample_parts); its face is found and "
                                       "cropped as the portrait's is."}),
        }}

    def run(self, liveportrait, portrait, preset, save_as, src_ratio=1.0, sample_ratio=1.0,
            sample_parts="expression", sample_image=None, **sliders):
        if preset != "none":
            expr = load_preset(_preset_path(preset))
        else:
            expr = Expression(**sliders, src_ratio=src_ratio, sample_ratio=sample_ratio,
                              sample_parts=sample_parts).validate()
        if save_as.strip():
            save_preset(expr, _preset_path(save_as.strip()))
        frames, crops = _render_edits(liveportrait, portrait, [expr], True, AnimateOptions(), sample_image)
        return {"ui": {"images": save_previews(crops, "dh_expression")},
                "result": (uint8_to_image(frames), uint8_to_image(crops), expr.to_json())}


NODE_CLASS_MAPPINGS = {
    "DH_LoadLivePortrait": LoadLivePortrait,
    "DH_LivePortraitAnimate": LivePortraitAnimate,
    "DH_LivePortraitRetarget": LivePortraitRetarget,
    "DH_ExpressionEditor": ExpressionEditor,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_LoadLivePortrait": "Load LivePortrait",
    "DH_LivePortraitAnimate": "LivePortrait Animate",
    "DH_LivePortraitRetarget": "LivePortrait Retarget Eyes/Lips",
    "DH_ExpressionEditor": "LivePortrait Expression Editor",
}
