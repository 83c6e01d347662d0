"""OpenAI Images API client: ``POST /v1/images/generations`` (JSON) and ``/v1/images/edits`` (multipart).

The model is a free string: image models are renamed and retired, and the API's own error for
an unknown or retired name is passed on unchanged (as :class:`~.http.ApiError`). GPT image
models always answer with base64 images (``data[i].b64_json``); those are decoded here to
uint8 RGB arrays. The base URL comes from ``OPENAI_BASE_URL`` (tests point it at a local fake).
"""
from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .http import ApiError, HttpClient, RetryPolicy, guarded
from .keys import resolve_api_key
from .prices import image_cost

DEFAULT_MODEL = "gpt-image-2"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
SIZES = ["1024x1024", "1024x1536", "1536x1024", "auto"]
QUALITIES = ["auto", "low", "medium", "high"]
BACKGROUNDS = ["auto", "opaque", "transparent"]
OUTPUT_FORMATS = ["png", "jpeg", "webp"]


@dataclass
class ImageResult:
    """Decoded images (uint8 ``[H,W,3]`` each), the estimated cost and the API's usage block."""

    images: list[np.ndarray]
    cost_usd: float
    usage: dict = field(default_factory=dict)
    created: int | None = None


def decode_image(data: bytes, where: str = "image") -> np.ndarray:
    """PNG/JPEG/WebP bytes -> uint8 RGB ``[H,W,3]``; transparency is composited over white."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{where}: the API returned bytes that are not a readable image ({exc})") from None
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def encode_png(image: np.ndarray) -> bytes:
    """uint8 ``[H,W,3]`` -> PNG bytes for upload."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"reference image must be uint8 [H,W,3], got {image.dtype} {tuple(image.shape)}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class OpenAIImages(HttpClient):
    """Client of the Images API. The key comes from ``OPENAI_API_KEY`` or the user key file."""

    service = "OpenAI"

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, read_timeout_s: float = 300.0,
                 retry: RetryPolicy | None = None, **kw):
        key = resolve_api_key(api_key, "OPENAI_API_KEY", user_dir, service="OpenAI")
        url = base_url or os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
        headers = {"Authorization": f"Bearer {key}"}
        org = os.environ.get("OPENAI_ORGANIZATION", "").strip()
        if org:
            headers["OpenAI-Organization"] = org
        super().__init__(url, headers=headers, secrets=[key], check_interrupt=check_interrupt,
                         read_timeout_s=read_timeout_s, retry=retry, **kw)

    @staticmethod
    def _options(model: str, size: str, quality: str, background: str, output_format: str, n: int) -> dict:
        model = (model or "").strip()
        if not model:
            raise ValueError("model: give an image model name, e.g. " + DEFAULT_MODEL)
        if not 1 <= int(n) <= 10:
            raise ValueError(f"count must be between 1 and 10, got {n}")
        if background == "transparent" and output_format == "jpeg":
            raise ValueError("background 'transparent' needs output format png or webp, not jpeg")
        opts = {"model": model, "n": int(n), "size": size, "quality": quality, "output_format": output_format}
        if background and background != "auto":
            opts["background"] = background
        return opts

    def _decode(self, body: dict, opts: dict) -> ImageResult:
        data = body.get("data") if isinstance(body, dict) else None
        if not data:
            raise ApiError(self.service, 200, "the answer holds no images ('data' is empty)")
        images = []
        for i, item in enumerate(data):
            b64 = item.get("b64_json") if isinstance(item, dict) else None
            if not b64:
                raise ApiError(self.service, 200, f"image {i} of the answer has no 'b64_json' (URL answers are not supported)")
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError:
                raise ApiError(self.service, 200, f"image {i} of the answer is not valid base64") from None
            images.append(decode_image(raw, f"image {i} of the answer"))
        cost = image_cost(opts["model"], opts["quality"], opts["size"], len(images))
        return ImageResult(images, cost, body.get("usage") or {}, body.get("created"))

    @guarded
    def generate(self, prompt: str, *, model: str = DEFAULT_MODEL, size: str = "1024x1536", quality: str = "auto",
                 background: str = "auto", output_format: str = "png", n: int = 1) -> ImageResult:
        """Text -> images via ``POST /images/generations``."""
        if not prompt or not prompt.strip():
            raise ValueError("prompt is empty")
        opts = self._options(model, size, quality, background, output_format, n)
        body = self.request("POST", "images/generations", json_body={"prompt": prompt, **opts})
        return self._decode(body, opts)

    @guarded
    def edit(self, prompt: str, images: Sequence[np.ndarray], *, model: str = DEFAULT_MODEL, size: str = "1024x1536",
             quality: str = "auto", background: str = "auto", output_format: str = "png", n: int = 1) -> ImageResult:
        """Reference image(s) + text -> images via multipart ``POST /images/edits`` (``image[]`` for several)."""
        if not prompt or not prompt.strip():
            raise ValueError("prompt is empty")
        if not 1 <= len(images) <= 16:
            raise ValueError(f"edits take 1 to 16 reference images, got {len(images)}")
        opts = self._options(model, size, quality, background, output_format, n)
        field_name = "image" if len(images) == 1 else "image[]"
        files = [(field_name, (f"reference_{i}.png", encode_png(im), "image/png")) for i, im in enumerate(images)]
        form = {"prompt": prompt, **{k: str(v) for k, v in opts.items()}}
        body = self.request("POST", "images/edits", data=form, files=files)
        return self._decode(body, opts)
