"""Face nodes: detect + crop (with a face track), paste back, preview.

Thin adapters: convert IMAGE <-> uint8, call one engine function, report progress and honour
Cancel. The algorithms live in ``engine/face``.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..engine.face.align import PRESETS
from .common import CAT_FACE, Progress, check_interrupt, image_to_uint8, save_previews, uint8_to_image

log = logging.getLogger("DigitalHuman")

FACE_TRACK = "DH_FACE_TRACK"
PRESET_NAMES = list(PRESETS) + ["custom"]


def _analyzer(detector: str):
    from ..model_loaders.face import load_face_analyzer

    return load_face_analyzer(detector=detector)


class DH_FaceDetectCrop:
    DESCRIPTION = ("Finds one face per frame (MediaPipe BlazeFace + 468-point FaceMesh, Apache-2.0, run in PyTorch), "
                   "keeps the same person through a video, smooths the landmarks over time and cuts an aligned square "
                   "crop the way LivePortrait does. Frames without a face are listed in the log and passed through "
                   "(black crop) or held from the last good frame.")
    RETURN_TYPES = ("IMAGE", FACE_TRACK, "MASK")
    RETURN_NAMES = ("crops", "face_track", "face_mask")
    OUTPUT_TOOLTIPS = ("Aligned face crops [N, size, size, 3].",
                       "Per-frame boxes, 468 landmarks, pose and crop transforms, for Face Paste Back.",
                       "Soft mask of the cropped face region in the original frames [N, H, W].")
    FUNCTION = "run"
    CATEGORY = CAT_FACE

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Portrait or video frames."}),
                "preset": (PRESET_NAMES, {"default": "liveportrait_source", "tooltip":
                           "Crop framing: LivePortrait source (scale 2.3, offset -0.125), driving (2.2, -0.1), "
                           "generic (1.6, -0.05), or custom (the scale / offset inputs below)."}),
                "crop_size": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 32,
                                      "tooltip": "Side of the square crops in pixels (LivePortrait: 512 or 256)."}),
                "pick": (["largest", "center", "index"], {"default": "largest", "tooltip":
                         "Which face to follow: the largest (equal sizes: leftmost), the one nearest the centre, "
                         "or by index (0 = largest) on the first frame with a face."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 32,
                                       "tooltip": "Face index when pick is 'index' (0 = largest)."}),
                "smoothing": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                              "Temporal smoothing of landmarks and boxes (one-euro filter). 0 = off; higher = "
                              "steadier crops with a little more lag on fast moves."}),
                "missing_face": (["pass", "hold"], {"default": "pass", "tooltip":
                                 "Frames without a face: pass them through unchanged, or hold the last good face."}),
            },
            "optional": {
                "scale": ("FLOAT", {"default": 2.3, "min": 0.5, "max": 5.0, "step": 0.05,
                                    "tooltip": "Crop size relative to the face (custom preset only)."}),
                "vx_ratio": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.005,
                                       "tooltip": "Horizontal offset of the crop centre, times the crop size (custom only)."}),
                "vy_ratio": ("FLOAT", {"default": -0.125, "min": -1.0, "max": 1.0, "step": 0.005, "tooltip":
                                       "Vertical offset of the crop centre, times the crop size; negative = more "
                                       "forehead (custom only)."}),
                "detector": (["auto", "short", "full"], {"default": "auto", "tooltip":
                             "BlazeFace model: short-range (faces near the camera), full-range (small/far faces), "
                             "or auto (short first, full-range where it finds nothing)."}),
            },
        }

    def run(self, images, preset, crop_size, pick, face_index, smoothing, missing_face,
            scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, detector="auto"):
        from ..engine.face.pipeline import detect_and_crop

        p = dict(scale=scale, vx_ratio=vx_ratio, vy_ratio=vy_ratio) if preset == "custom" else PRESETS[preset]
        frames = image_to_uint8(images)
        crops, track, masks = detect_and_crop(
            frames, _analyzer(detector), dsize=int(crop_size), pick=int(face_index) if pick == "index" else pick,
            smoothing=float(smoothing), missing=missing_face, progress=Progress(2 * len(frames)),
            check_interrupt=check_interrupt, **p)
        if track.missing_frames:
            shown = ", ".join(map(str, track.missing_frames[:20])) + (" ..." if len(track.missing_frames) > 20 else "")
            log.warning("[DigitalHuman] no face in %d of %d frames (%s): %s", len(track.missing_frames), len(frames),
                        "held" if missing_face == "hold" else "passed through", shown)
        return (uint8_to_image(crops), track, torch.from_numpy(masks))


class DH_FacePasteBack:
    DESCRIPTION = ("Puts processed face crops back into the original frames along a face track, through a soft "
                   "mask (no seam). Frames without a face are passed through unchanged.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "run"
    CATEGORY = CAT_FACE

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The original frames the crops were cut from."}),
                "crops": ("IMAGE", {"tooltip": "Processed crops (any square size; one per frame, or one for all)."}),
                "face_track": (FACE_TRACK, {"tooltip": "The face track from Face Detect & Crop."}),
                "feather": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                                    "Extra softening of the mask edge, in frame pixels (0 = the built-in soft edge)."}),
            }
        }

    def run(self, images, crops, face_track, feather):
        from ..engine.face.pipeline import paste_back_track

        frames = image_to_uint8(images)
        c = image_to_uint8(crops)
        n = max(len(frames), len(c))
        out = paste_back_track(frames, c, face_track, int(feather), progress=Progress(n), check_interrupt=check_interrupt)
        return (uint8_to_image(out),)


class DH_FacePreview:
    DESCRIPTION = "Draws face boxes, the 468 landmarks (68-point subset highlighted) and head pose, and previews them."
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames with the faces drawn.",)
    FUNCTION = "run"
    CATEGORY = CAT_FACE
    OUTPUT_NODE = True
    MAX_PREVIEW = 16

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"images": ("IMAGE", {"tooltip": "Frames to annotate."})},
            "optional": {"face_track": (FACE_TRACK, {"tooltip":
                         "Draw this track's face; without it, every face found in the frames is drawn."})},
        }

    def run(self, images, face_track=None):
        from ..engine.face.draw import draw_face

        frames = image_to_uint8(images)
        pb = Progress(len(frames))
        if face_track is None:
            fa, faces = _analyzer("auto"), []
            for s in range(0, len(frames), 16):
                check_interrupt()
                faces += fa.detect_batch(frames[s : s + 16])
            items = [[(f.box, f.landmarks, f.pose, f"#{k}") for k, f in enumerate(fs)] for fs in faces]
        else:
            if len(face_track) < len(frames):
                raise ValueError(f"the face track covers {len(face_track)} frames, but {len(frames)} were given")
            items = [[(face_track.boxes[i], face_track.landmarks[i], face_track.poses[i], "held" if face_track.held[i] else "")]
                     if face_track.usable[i] else [] for i in range(len(frames))]
        out = np.empty_like(frames)
        for i, (frame, fs) in enumerate(zip(frames, items)):
            check_interrupt()
            img = frame
            for box, lm, pose, label in fs:
                img = draw_face(img, box, lm, pose, label)
            out[i] = img
            pb(i + 1)
        return {"ui": {"images": save_previews(out[: self.MAX_PREVIEW], "dh_face")}, "result": (uint8_to_image(out),)}


NODE_CLASS_MAPPINGS = {
    "DH_FaceDetectCrop": DH_FaceDetectCrop,
    "DH_FacePasteBack": DH_FacePasteBack,
    "DH_FacePreview": DH_FacePreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_FaceDetectCrop": "Face Detect & Crop (DigitalHuman)",
    "DH_FacePasteBack": "Face Paste Back (DigitalHuman)",
    "DH_FacePreview": "Face Preview (DigitalHuman)",
}
