"""Is this image a portrait the later steps can animate? Pure checks over a face-analysis result.

Why: LivePortrait and MuseTalk work best on one frontal face, head-and-shoulders framing,
sharp, on a clean background. Each check states its measured value, its limit and, when it
fails, the reason in words, so a user knows what to change in the prompt or the picture.
Thresholds and their meaning live in ``data/portrait_check.json``.

Faces follow the pack's face contract (``engine.face.types.Face``): ``box`` [4] x0,y0,x1,y1
pixels, ``score``, ``landmarks`` [468,3] (MediaPipe order, pixels), ``pose`` (yaw, pitch, roll)
in degrees. Only these attributes are read, so any object with them works.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..data_files import read_json, without_notes

THRESHOLDS_FILE = Path(__file__).resolve().parents[2] / "data" / "portrait_check.json"
CHIN = 152  # MediaPipe face-mesh index of the lowest chin point

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


def load_thresholds(path: str | Path | None = None) -> dict[str, float]:
    """Threshold name -> value from the data file (the 'meaning' texts stay in the file)."""
    raw = read_json(path or THRESHOLDS_FILE, "portrait-check thresholds")
    return {k: float(v["value"]) for k, v in without_notes(raw).items()}


@dataclass
class Check:
    """One check: its status, the measured value, the limit it was held to, and why it failed."""

    name: str
    status: str
    value: float | None = None
    limit: str = ""
    reason: str = ""

    def line(self) -> str:
        val = "" if self.value is None else f" = {self.value:.3g}"
        lim = f" (limit {self.limit})" if self.limit else ""
        why = f": {self.reason}" if self.reason else ""
        return f"[{self.status}] {self.name}{val}{lim}{why}"


@dataclass
class PortraitReport:
    """The verdict: passed when no check failed; warnings do not fail a portrait."""

    checks: list[Check]
    face: Any = None
    num_faces: int = 0
    crop: np.ndarray | None = None
    crop_info: Any = None
    image_size: tuple[int, int] = (0, 0)  # (H, W)

    @property
    def passed(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """The reasons of the failed checks, in check order."""
        return [c.reason for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[str]:
        return [c.reason for c in self.checks if c.status == WARN]

    def get(self, name: str) -> Check:
        """The check named ``name`` (KeyError if absent)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def text(self) -> str:
        """A readable report: verdict with the reasons, then one line per check."""
        h, w = self.image_size
        if self.passed:
            head = "PASS: usable portrait" + (f" (warnings: {'; '.join(self.warnings)})" if self.warnings else "")
        else:
            head = f"FAIL: {'; '.join(self.reasons)}"
        return "\n".join([head, f"image {w}x{h}, faces found: {self.num_faces}"] + [c.line() for c in self.checks])

    __str__ = text


# -- individual measurements -------------------------------------------------------------------
def _box(face: Any) -> np.ndarray:
    b = np.asarray(face.box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"face box must be finite [x0,y0,x1,y1] with x1>x0, y1>y0; got {b.tolist()}")
    return b


def chin_y(face: Any) -> float:
    """Image y of the chin: landmark 152 when the 468 landmarks are there, else the box bottom."""
    lmk = getattr(face, "landmarks", None)
    if lmk is not None:
        lmk = np.asarray(lmk)
        if lmk.ndim == 2 and lmk.shape[0] > CHIN and np.isfinite(lmk[CHIN, 1]):
            return float(lmk[CHIN, 1])
    return float(_box(face)[3])


def face_sharpness(image: np.ndarray, box: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face crop, faces taller than 256 px resampled to 256 px."""
    h, w = image.shape[:2]
    x0, y0 = int(max(0, np.floor(box[0]))), int(max(0, np.floor(box[1])))
    x1, y1 = int(min(w, np.ceil(box[2]))), int(min(h, np.ceil(box[3])))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    crop = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    if crop.shape[0] > 256:  # only downsample: upsampling a small face would blur it by itself
        scale = 256.0 / crop.shape[0]
        crop = cv2.resize(crop, (max(4, round(crop.shape[1] * scale)), 256), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def background_mask(shape: tuple[int, int], box: np.ndarray | None, chin: float | None, strip: float) -> np.ndarray:
    """Border strips beside (down to the chin) and above the head, minus the face box grown by 20 %."""
    h, w = shape
    m = np.zeros((h, w), bool)
    sw, sh = max(1, int(round(w * strip))), max(1, int(round(h * strip)))
    bottom = h if chin is None else int(np.clip(chin, sh, h))
    m[:bottom, :sw] = True
    m[:bottom, w - sw:] = True
    m[:sh, :] = True
    if box is not None:
        bw, bh = box[2] - box[0], box[3] - box[1]
        x0, y0 = int(max(0, box[0] - 0.2 * bw)), int(max(0, box[1] - 0.2 * bh))
        x1, y1 = int(min(w, box[2] + 0.2 * bw)), int(min(h, box[3] + 0.2 * bh))
        m[y0:y1, x0:x1] = False
    return m


def background_stats(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean per-channel std 0..255, Canny edge fraction) over the masked pixels."""
    if not mask.any():
        return 0.0, 0.0
    px = image[mask].astype(np.float64)
    std = float(px.std(axis=0).mean())
    edges = cv2.Canny(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), 100, 200)
    return std, float((edges[mask] > 0).mean())


# -- the decision ------------------------------------------------------------------------------
def _limit_check(name: str, value: float, lo: float | None, hi: float | None, fmt: str, why_lo: str, why_hi: str) -> Check:
    lim = " .. ".join([f"{lo:{fmt}}" if lo is not None else "", f"{hi:{fmt}}" if hi is not None else ""]).strip(" .")
    if lo is not None and hi is None:
        lim = f">= {lo:{fmt}}"
    if hi is not None and lo is None:
        lim = f"<= {hi:{fmt}}"
    if lo is not None and value < lo:
        return Check(name, FAIL, value, lim, why_lo)
    if hi is not None and value > hi:
        return Check(name, FAIL, value, lim, why_hi)
    return Check(name, PASS, value, lim)


def evaluate_portrait(image: np.ndarray, faces: Sequence[Any], thresholds: dict[str, float] | None = None,
                      num_faces: int | None = None) -> PortraitReport:
    """All checks of ``image`` (uint8 [H,W,3]) given its detected ``faces`` (largest first).

    ``faces[0]`` is the face the later steps would take; ``num_faces`` is how many faces a counting
    pass that sees every face found (default ``len(faces)``). Without a face to take the check
    fails with "no face found" whatever the count.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"portrait check needs a uint8 [H,W,3] image, got {getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    t = thresholds or load_thresholds()
    h, w = image.shape[:2]
    checks: list[Check] = []
    n = max(len(faces), int(num_faces or 0)) if faces else 0
    expected = int(t["faces_expected"])
    if n == 0:
        checks.append(Check("faces", FAIL, 0, f"== {expected}", "no face found"))
    elif n != expected:
        checks.append(Check("faces", FAIL, n, f"== {expected}", f"{n} faces found, expected exactly {expected} (the largest was checked)"))
    else:
        checks.append(Check("faces", PASS, n, f"== {expected}"))

    side = min(h, w)
    if side < t["min_side_hard"]:
        checks.append(Check("resolution", FAIL, side, f">= {t['min_side_hard']:.0f} px", f"image too small: shorter side {side} px, need at least {t['min_side_hard']:.0f} px"))
    elif side < t["min_side_recommended"]:
        checks.append(Check("resolution", WARN, side, f">= {t['min_side_recommended']:.0f} px", f"low resolution: shorter side {side} px, {t['min_side_recommended']:.0f} px or more recommended"))
    else:
        checks.append(Check("resolution", PASS, side, f">= {t['min_side_recommended']:.0f} px"))

    face = faces[0] if n else None
    box = chin = None
    if face is None:
        for name in ("yaw", "pitch", "roll", "face size", "face centre x", "face centre y", "shoulders", "sharpness"):
            checks.append(Check(name, SKIP, reason="no face"))
    else:
        box = _box(face)
        yaw, pitch, roll = (float(v) for v in face.pose)
        for name, val, key, words in (("yaw", yaw, "max_abs_yaw_deg", "head turned sideways"),
                                      ("pitch", pitch, "max_abs_pitch_deg", "head tilted up or down"),
                                      ("roll", roll, "max_abs_roll_deg", "head tilted towards a shoulder")):
            lim = t[key]
            if abs(val) > lim:
                checks.append(Check(name, FAIL, val, f"|{name}| <= {lim:g} deg", f"pose: {words} ({name} {val:+.1f} deg, limit {lim:g})"))
            else:
                checks.append(Check(name, PASS, val, f"|{name}| <= {lim:g} deg"))
        fh = (box[3] - box[1]) / h
        checks.append(_limit_check("face size", fh, t["face_height_min"], t["face_height_max"], ".2f",
                                   f"framing: face too small ({fh:.0%} of the image height); need head-and-shoulders, not a distant or full-body shot",
                                   f"framing: face too large ({fh:.0%} of the image height); a close-up without shoulders"))
        cx = (box[0] + box[2]) / 2 / w
        off = abs(cx - 0.5)
        lim = t["center_x_max_offset"]
        checks.append(Check("face centre x", FAIL if off > lim else PASS, cx, f"0.5 +/- {lim:g}",
                            f"framing: face off-centre horizontally (centre at {cx:.0%} of the width)" if off > lim else ""))
        cy = (box[1] + box[3]) / 2 / h
        checks.append(_limit_check("face centre y", cy, t["center_y_min"], t["center_y_max"], ".2f",
                                   f"framing: face too close to the top (centre at {cy:.0%} of the height)",
                                   f"framing: face too low (centre at {cy:.0%} of the height); it should sit in the upper part"))
        chin = chin_y(face)
        below = (h - chin) / max(box[3] - box[1], 1e-6)
        checks.append(_limit_check("shoulders", below, t["below_chin_min"], t["below_chin_max"], ".2f",
                                   f"framing: too little room below the chin for the shoulders ({below:.2f} face heights)",
                                   f"framing: too much body below the chin ({below:.1f} face heights); crop to head and shoulders"))
        sharp = face_sharpness(image, box)
        checks.append(_limit_check("sharpness", sharp, t["min_face_sharpness"], None, ".0f",
                                   f"blur: the face is not sharp (Laplacian variance {sharp:.0f})", ""))

    # measured at most 1024 px wide/high: cheap on big images and edge density comparable across sizes
    k = min(1.0, 1024.0 / max(h, w))
    small = image if k == 1.0 else cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    std, edges = background_stats(small, background_mask(small.shape[:2], None if box is None else box * k,
                                                         None if chin is None else chin * k, t["border_strip_frac"]))
    for name, val, lim, words in (("background colour spread", std, t["background_max_std"], "background not plain: colour varies a lot"),
                                  ("background edges", edges, t["background_max_edges"], "background busy: many edges")):
        if val > 2 * lim:
            checks.append(Check(name, FAIL, val, f"<= {lim:g}", f"{words} ({val:.3g}, limit {lim:g})"))
        elif val > lim:
            checks.append(Check(name, WARN, val, f"<= {lim:g}", f"{words} ({val:.3g}, limit {lim:g})"))
        else:
            checks.append(Check(name, PASS, val, f"<= {lim:g}"))
    return PortraitReport(checks, face, n, image_size=(h, w))


def check_portrait(image: np.ndarray, analyzer: Any = None, *, thresholds: dict[str, float] | None = None,
                   crop_size: int = 512, cropper: Callable[..., Any] | None = None) -> PortraitReport:
    """Detect faces, run every check and add the LivePortrait-style aligned crop of the chosen face.

    The checked face is ``analyzer.detect(image)[0]``, the one the later steps take; faces are
    counted with ``analyzer.detect_all`` when it has one (both detector models, see
    ``count_full_range_min_score`` / ``count_same_face_iou`` in the thresholds), so a second face
    that only the full-range model sees still fails "exactly one face".
    ``analyzer`` defaults to ``engine.face.analyzer.FaceAnalyzer()``; ``cropper`` to
    ``engine.face.align.crop_liveportrait`` (both imported here, so importing this module is cheap).
    """
    if analyzer is None:
        from ..face.analyzer import FaceAnalyzer

        analyzer = FaceAnalyzer()
    t = thresholds or load_thresholds()
    faces = analyzer.detect(image)
    counted = None
    if faces and hasattr(analyzer, "detect_all"):  # count with both detector models, not just the first that finds one
        counted = len(analyzer.detect_all(image, full_min_score=t["count_full_range_min_score"],
                                          same_face_iou=t["count_same_face_iou"]))
    report = evaluate_portrait(image, faces, t, num_faces=counted)
    if report.face is not None:
        if cropper is None:
            from ..face.align import crop_liveportrait as cropper
        info = cropper(image, np.asarray(report.face.landmarks), dsize=crop_size)
        report.crop_info = info
        report.crop = info.crop
    return report


def fallback_crop(image: np.ndarray, size: int = 512) -> np.ndarray:
    """Centre square of ``image`` resized to ``size`` (what the check outputs when there is no face)."""
    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = np.ascontiguousarray(image[y0:y0 + s, x0:x0 + s])
    return cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_LINEAR)
