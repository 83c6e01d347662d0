"""Pasting MuseTalk's 256x256 mouth crop back into the frame through a face-parsing mask.

Follows the reference's blending: a square region 1.5x the face box around its centre is parsed
at 512x512; the mask keeps the parsed classes inside the face box, only in the lower half of the
square region, blurred with a Gaussian whose size is a fraction of the region's width; the
generated face is pasted into the region and the region into the frame through that mask.

Modes (which classes make the mask):

- ``jaw`` (MuseTalk 1.5's default): skin dilated with a cone-and-bar kernel (with OpenCV's
  anchor convention this extends the region up to 16 px upwards and a little sideways), eroded
  again horizontally on the cheeks (outside the centre +-90 px of the 512 map) so the face
  outline stays put, nose removed, lips and mouth added;
- ``raw`` (MuseTalk 1.0): skin + mouth + lips;
- ``mouth``: only the lips and the inner mouth, dilated a little: the least change to the face
  (this pack's addition).

Region parts outside the frame read as black (as PIL's crop does) and are clipped on paste.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from .bisenet import LOWER_LIP, MOUTH, NOSE, SKIN, UPPER_LIP, BiSeNet

BLEND_MODES = ("jaw", "mouth", "raw")
PARSE_SIZE = 512
EXPAND = 1.5
UPPER_BOUNDARY = 0.5
BLUR_RATIO = 0.05  # scripts/inference.py; the reference's real-time script uses 0.1


def _cone_kernel(cone: int = 21, tail: int = 12) -> np.ndarray:
    """The reference's jaw kernel: a widening cone (rows 10..20) above a vertical bar (rows 21..32)."""
    size = cone + tail
    k = np.zeros((size, size), np.uint8)
    c = size // 2
    for row in range(cone // 2, cone):
        half = row - cone // 2
        k[row, c - half:c + half + 1] = 1
    base = int(k[cone - 1].sum())
    k[cone:, max(0, c - base // 2):min(size, c + base // 2 + 1)] = 1
    return k


_JAW_KERNEL = _cone_kernel()
_CHEEK_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))


def _cheek_mask(left: int, right: int) -> np.ndarray:
    """255 on the cheeks (columns <= 256-left and >= 256+right of the 512 map), 0 in the centre."""
    m = np.zeros((PARSE_SIZE, PARSE_SIZE), np.uint8)
    c = PARSE_SIZE // 2
    m[:, :c - left + 1] = 255
    m[:, c + right:] = 255
    return m


def classes_to_mask(parsing: np.ndarray, mode: str = "jaw", cheek_width: tuple[int, int] = (90, 90)) -> np.ndarray:
    """uint8 0/255 mask ``[512,512]`` from a BiSeNet class map for a blend ``mode``."""
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{mode}', expected one of {BLEND_MODES}")
    lips = np.isin(parsing, [MOUTH, UPPER_LIP, LOWER_LIP])
    if mode == "raw":
        keep = lips | (parsing == SKIN)
    elif mode == "mouth":
        keep = cv2.dilate(lips.astype(np.uint8) * 255, np.ones((15, 15), np.uint8)) > 0
    else:
        skin = (parsing == SKIN).astype(np.uint8) * 255
        grown = cv2.dilate(skin, _JAW_KERNEL, iterations=1)
        shrunk = cv2.erode(grown, _CHEEK_KERNEL, iterations=2)
        cheeks = _cheek_mask(*cheek_width)
        region = (shrunk & cheeks) | (grown & ~cheeks)
        keep = ((region == 255) & (parsing != NOSE)) | lips
    return keep.astype(np.uint8) * 255


def blend_region(box: tuple[int, int, int, int], expand: float = EXPAND) -> tuple[int, int, int, int]:
    """The square region (x0, y0, x1, y1) around the face box that is parsed and pasted."""
    x, y, x1, y1 = box
    xc, yc = (x + x1) // 2, (y + y1) // 2
    s = int(max(x1 - x, y1 - y) // 2 * expand)
    return xc - s, yc - s, xc + s, yc + s


def crop_padded(image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with the parts outside the image black (PIL's crop semantics)."""
    x0, y0, x1, y1 = region
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def region_mask(parsed512: np.ndarray, box: tuple[int, int, int, int], region: tuple[int, int, int, int],
                blur_ratio: float = BLUR_RATIO, upper_boundary: float = UPPER_BOUNDARY) -> np.ndarray:
    """The blend mask (uint8, region size) from the 512 class mask: resized to the region (PIL bicubic, as
    the reference), kept inside the face box and the region's lower part only, then Gaussian-blurred."""
    x, y, x1, y1 = box
    rx, ry, rx1, ry1 = region
    rw, rh = rx1 - rx, ry1 - ry
    full = np.asarray(Image.fromarray(parsed512).resize((rw, rh), Image.BICUBIC))
    mask = np.zeros((rh, rw), np.uint8)
    bx0, by0 = max(x - rx, 0), max(y - ry, 0)
    bx1, by1 = min(x1 - rx, rw), min(y1 - ry, rh)
    mask[by0:by1, bx0:bx1] = full[by0:by1, bx0:bx1]
    mask[:int(rh * upper_boundary)] = 0
    k = int(blur_ratio * rw // 2 * 2) + 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def parse_input(frame: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """The 512x512 uint8 RGB image BiSeNet parses: the region, black outside the frame, PIL-bilinear resized."""
    return np.asarray(Image.fromarray(crop_padded(frame, region)).resize((PARSE_SIZE, PARSE_SIZE), Image.BILINEAR))


@torch.no_grad()
def make_masks(parser: BiSeNet, frames: list[np.ndarray], boxes: list[tuple[int, int, int, int]], mode: str = "jaw",
               cheek_width: tuple[int, int] = (90, 90), blur_ratio: float = BLUR_RATIO
               ) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """``(mask, region)`` per frame: parse each face region at 512 (one batched BiSeNet pass)."""
    if not frames:
        return []
    regions = [blend_region(b) for b in boxes]
    crops = [parse_input(f, r) for f, r in zip(frames, regions)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    classes = parser.parse(x).cpu().numpy()
    return [(region_mask(classes_to_mask(c, mode, cheek_width), b, r, blur_ratio), r)
            for c, b, r in zip(classes, boxes, regions)]


def paste(frame: np.ndarray, face: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray,
          region: tuple[int, int, int, int]) -> np.ndarray:
    """A new frame: ``face`` (already box-sized) put in ``box`` of the region, and the region composited
    over ``frame`` through ``mask`` (PIL's paste, as the reference; where the mask is 0 the frame is kept)."""
    x, y, x1, y1 = box
    rx, ry, _, _ = region
    patch = crop_padded(frame, region)
    patch[y - ry:y1 - ry, x - rx:x1 - rx] = face
    body = Image.fromarray(np.ascontiguousarray(frame))
    body.paste(Image.fromarray(patch), (rx, ry), Image.fromarray(mask))
    return np.array(body)  # writable
