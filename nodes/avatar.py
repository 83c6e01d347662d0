"""Step 1 nodes: portrait prompt, OpenAI image generation, portrait check, cost sum.

No API key is ever a node input: keys come from ``OPENAI_API_KEY`` or
``<ComfyUI user dir>/digitalhuman/keys.json`` (see ``providers/keys.py``), so nothing secret
is saved into workflows, PNG metadata or history.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..engine.avatar import prompt as prompt_engine
from ..engine.avatar.portrait_check import check_portrait, fallback_crop
from ..providers import openai_images as oai
from ..providers.keys import pack_user_dir
from ..providers.prices import load_prices, sum_costs
from .common import CAT_AVATAR, Progress, check_interrupt, image_to_uint8, uint8_to_image

log = logging.getLogger("DigitalHuman")

USER_PRESETS_FILE = "portrait_presets.json"
N_COST_INPUTS = 6


def _template(strict: bool = True) -> dict:
    """Built-in template plus the user's presets file (``<user dir>/digitalhuman/portrait_presets.json``).

    ``strict=False`` (for INPUT_TYPES) falls back to the built-in presets with a warning, so a broken
    user file never breaks ComfyUI's node list; running the node then reports the file's error.
    """
    folder = pack_user_dir()
    extra = [folder / USER_PRESETS_FILE] if folder is not None else []
    try:
        return prompt_engine.load_template(extra_preset_files=extra)
    except ValueError as exc:
        if strict:
            raise
        log.warning("[DigitalHuman] user presets ignored: %s", exc)
        return prompt_engine.load_template()


class DH_PortraitPrompt:
    """Renders the portrait prompt from the template data and a use-case preset."""

    @classmethod
    def INPUT_TYPES(cls):
        t = _template(strict=False)
        presets = prompt_engine.preset_names(t)
        return {"required": {
            "description": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "The character in your words: hair, face, look, personality. Leave empty for a generic person."}),
            "gender": (list(t["genders"]), {"default": "unspecified", "tooltip": "Gender of the character; 'unspecified' leaves it to the model."}),
            "age_range": (list(t["age_ranges"]), {"default": "unspecified", "tooltip": "Apparent age of the character."}),
            "preset": (presets, {"default": presets[0],
                                 "tooltip": "Use case: sets default attire, background, expression and style. Add your own in <ComfyUI user dir>/digitalhuman/portrait_presets.json."}),
            "attire": ("STRING", {"default": "", "tooltip": "Clothing; empty uses the preset's attire."}),
            "background": ("STRING", {"default": "", "tooltip": "Background; empty uses the preset's plain backdrop. Plain backgrounds animate best."}),
        }}

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("prompt", "negative_prompt")
    OUTPUT_TOOLTIPS = ("Positive prompt with the portrait requirements (front-facing, neutral, head and shoulders, studio light, clean background).",
                       "Negative prompt listing what breaks animation (profile, open mouth, busy background...). Use it where the generator takes one.")
    FUNCTION = "render"
    CATEGORY = CAT_AVATAR
    DESCRIPTION = ("Builds a text prompt for an animatable portrait: front-facing, neutral expression, looking at the camera, "
                   "head and shoulders, studio light, clean background. Template and presets live in data/portrait_prompt.json.")

    def render(self, description: str, gender: str, age_range: str, preset: str, attire: str, background: str):
        out = prompt_engine.render_prompt(_template(), description=description, gender=gender, age_range=age_range,
                                          attire=attire, background=background, preset=preset)
        return (out.prompt, out.negative)


class DH_OpenAIImage:
    """Text (and optional reference images) -> images through OpenAI's Images API."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "What to draw; connect DH_PortraitPrompt's prompt here."}),
            "model": ("STRING", {"default": oai.DEFAULT_MODEL,
                                 "tooltip": "OpenAI image model name, e.g. gpt-image-2, gpt-image-1.5, gpt-image-1, gpt-image-1-mini. A retired name returns the API's error."}),
            "size": (oai.SIZES, {"default": "1024x1536", "tooltip": "Output size; portrait 1024x1536 suits head-and-shoulders avatars."}),
            "quality": (oai.QUALITIES, {"default": "medium", "tooltip": "Higher quality costs more (see the cost output)."}),
            "background": (oai.BACKGROUNDS, {"default": "opaque", "tooltip": "'opaque' suits animation; 'transparent' is composited over white here."}),
            "count": ("INT", {"default": 1, "min": 1, "max": 10, "tooltip": "Number of images (one API call)."}),
            "run_id": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
                               "tooltip": "Not sent to the API; change it to force a new, paid call instead of ComfyUI's cached result."}),
        }, "optional": {
            "reference": ("IMAGE", {"tooltip": "Optional reference image(s): when connected the edits endpoint is used (up to 16 images)."}),
        }}

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "cost_usd")
    OUTPUT_TOOLTIPS = ("The generated images.", "Estimated cost of this call in USD from data/prices.json.")
    FUNCTION = "generate"
    CATEGORY = CAT_AVATAR
    DESCRIPTION = ("Generates images with OpenAI's Images API (generations, or edits when a reference image is connected). "
                   "The API key is read from the OPENAI_API_KEY environment variable or <ComfyUI user dir>/digitalhuman/keys.json, "
                   "never from the workflow. OPENAI_BASE_URL overrides the endpoint.")

    def generate(self, prompt: str, model: str, size: str, quality: str, background: str, count: int, run_id: int,
                 reference: torch.Tensor | None = None):
        bar = Progress(1)
        client = oai.OpenAIImages(check_interrupt=check_interrupt)
        opts = dict(model=model, size=size, quality=quality, background=background, n=count)
        if reference is not None:
            refs = list(image_to_uint8(reference))
            res = client.edit(prompt, refs, **opts)
        else:
            res = client.generate(prompt, **opts)
        bar(1)
        shapes = {im.shape for im in res.images}
        if len(shapes) > 1:
            raise ValueError(f"the API returned images of different sizes {sorted(shapes)}; cannot batch them")
        return (uint8_to_image(np.stack(res.images)), float(res.cost_usd))




class DH_PortraitCheck:
    """Checks that each image is a portrait the motion and lip-sync steps can use."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Portrait(s) to check, e.g. from DH_OpenAIImage or a FLUX graph."}),
            "crop_size": ("INT", {"default": 512, "min": 128, "max": 2048, "step": 64,
                                  "tooltip": "Side of the aligned square crop (LivePortrait uses 512)."}),
        }}

    RETURN_TYPES = ("BOOLEAN", "STRING", "IMAGE")
    RETURN_NAMES = ("passed", "report", "aligned_crop")
    OUTPUT_TOOLTIPS = ("True when every image passed (warnings do not fail).",
                       "Verdict with the reasons and every measured value against its limit.",
                       "LivePortrait-style aligned face crop per image (centre square when no face was found).")
    FUNCTION = "check"
    OUTPUT_NODE = True  # the report reaches the UI and the history even when nothing consumes it
    CATEGORY = CAT_AVATAR
    DESCRIPTION = ("Checks a portrait for animation: exactly one face, head pose within limits, head-and-shoulders framing, "
                   "resolution, sharpness and a clean background, with stated reasons; outputs the aligned crop. "
                   "Thresholds live in data/portrait_check.json.")

    def check(self, images: torch.Tensor, crop_size: int):
        frames = image_to_uint8(images)
        bar = Progress(len(frames))
        from ..model_loaders.face import load_face_analyzer

        analyzer = load_face_analyzer()
        reports, crops = [], []
        for i, frame in enumerate(frames):
            check_interrupt()
            rep = check_portrait(frame, analyzer, crop_size=crop_size)
            reports.append(rep)
            crops.append(rep.crop if rep.crop is not None else fallback_crop(frame, crop_size))
            bar(i + 1)
        passed = all(r.passed for r in reports)
        if len(reports) == 1:
            text = reports[0].text()
        else:
            text = "\n\n".join(f"image {i}: {r.text()}" for i, r in enumerate(reports))
        return {"ui": {"text": [text]}, "result": (passed, text, uint8_to_image(np.stack(crops)))}


class DH_CostSum:
    """Adds up the estimated costs of a run's API steps plus fixed items from the price table."""

    @classmethod
    def INPUT_TYPES(cls):
        items = {k: v for k, v in load_prices()["items"].items() if not k.startswith("_")}
        listing = "; ".join(f"{k} (${v['usd']:g} per {v['unit']})" for k, v in items.items())
        optional = {f"cost_{i}": ("FLOAT", {"forceInput": True, "tooltip": f"Cost in USD from an API node (input {i})."})
                    for i in range(1, N_COST_INPUTS + 1)}
        return {"required": {
            "items": ("STRING", {"multiline": True, "default": "",
                                 "tooltip": f"Fixed items, one 'name: quantity' per line, e.g. 'heygen_streaming_minute: 10'. Known: {listing}."}),
        }, "optional": optional}

    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("total_usd", "breakdown")
    OUTPUT_TOOLTIPS = ("Estimated total in USD.", "One line per cost and item, then the total.")
    FUNCTION = "total"
    OUTPUT_NODE = True
    CATEGORY = CAT_AVATAR
    DESCRIPTION = ("Sums estimated costs (connect the cost outputs of API nodes) and fixed items priced in data/prices.json, "
                   "e.g. minutes of a HeyGen session. Open-source steps cost nothing.")

    def total(self, items: str = "", **costs: float):
        named = [(name, float(costs[name])) for name in sorted(costs, key=lambda k: int(k.split("_")[1]))
                 if costs[name] is not None]
        total, breakdown = sum_costs(named, items)
        return {"ui": {"text": [breakdown]}, "result": (total, breakdown)}


NODE_CLASS_MAPPINGS = {
    "DH_PortraitPrompt": DH_PortraitPrompt,
    "DH_OpenAIImage": DH_OpenAIImage,
    "DH_PortraitCheck": DH_PortraitCheck,
    "DH_CostSum": DH_CostSum,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_PortraitPrompt": "Portrait Prompt (DH)",
    "DH_OpenAIImage": "OpenAI Image (DH)",
    "DH_PortraitCheck": "Portrait Check (DH)",
    "DH_CostSum": "Cost Sum (DH)",
}
