"""Face analysis front end: detection + 468 landmarks + pose, batched, on any torch device.

Default backend (commercial-safe, Apache-2.0 weights): MediaPipe's BlazeFace detectors and
FaceMesh, read from their ``.tflite`` files into PyTorch (see :mod:`.tflite_torch`).

Rules (documented, tested):
* Detector ``"auto"``: the short-range model first; frames where it finds nothing are retried
  with the full-range model at a stricter score (:data:`FULL_RANGE_FALLBACK_SCORE`), which
  catches small or distant faces without its false positives on face-free pictures.
* Faces whose box is smaller than ``min_face`` px (shorter side; default
  :data:`MIN_FACE_PX`) are reported as too small and dropped: ``last_too_small`` lists them.
* Order (the pick rule 'largest'): by box area, largest first; faces whose areas are within
  :data:`EQUAL_SIZE_TOL` of each other count as equal size and are ordered left to right
  (then top to bottom) by box centre.
* A detection whose face-mesh presence score is below :data:`MIN_PRESENCE` is dropped (the
  mesh network's own "is there a face in this crop" output, as MediaPipe uses it).
* Counting (:meth:`FaceAnalyzer.detect_all`, e.g. the portrait check's "exactly one face"):
  both models run on every image and their detections are merged (a full-range box overlapping a
  short-range one by more than ``same_face_iou`` is the same face; after the mesh, faces whose
  landmark boxes overlap that much count once). The default pass above stops at the first model
  that finds something, so it misses a second face that only the other model sees.
* Landmarks are computed twice: from the detection ROI, then from the ROI of those landmarks
  (MediaPipe's tracking ROI), which centres the face in the mesh crop and steadies the points.

Extension point (opt-in backends such as InsightFace, whose weights are non-commercial): pass
an object implementing :class:`DetectorBackend` as ``detector``. It supplies boxes, eye
keypoints and scores; the 468 landmarks, pose, ordering and everything downstream stay the
same. A backend with its own dense landmarks would subclass :class:`FaceAnalyzer` and override
:meth:`FaceAnalyzer._detect_chunk`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .blazeface import BlazeFaceDetector, _iou
from .image_input import MIN_IMAGE_SIDE, to_rgb_uint8
from .mesh import FaceMesh, roi_from_detection, roi_from_landmarks
from .pose import head_pose
from .types import Face
from .weights import find_model_file

MIN_FACE_PX = 20
FULL_RANGE_FALLBACK_SCORE = 0.75
EQUAL_SIZE_TOL = 0.10
MIN_PRESENCE = 0.5
CHUNK = 16


@runtime_checkable
class DetectorBackend(Protocol):
    """A face detector: per frame, [(box xyxy px [4], keypoints px [K>=2, 2], score)].

    Keypoints 0 and 1 must be the eye on the image's left and the one on its right (they
    level the landmark crop); the order of the list does not matter.
    """

    def detect(self, frames: list[np.ndarray]) -> list[list[tuple]]: ...


def order_faces(faces: list[Face], tol: float = EQUAL_SIZE_TOL) -> list[Face]:
    """Largest first; faces within ``tol`` (relative) of a group's largest area go left to right."""
    by_area = sorted(faces, key=lambda f: -f.area)
    out: list[Face] = []
    i = 0
    while i < len(by_area):
        top = by_area[i].area
        j = i
        while j < len(by_area) and by_area[j].area >= top * (1 - tol):
            j += 1
        out += sorted(by_area[i:j], key=lambda f: (float(f.center[0]), float(f.center[1])))
        i = j
    return out


def _landmark_box(face: Face) -> np.ndarray:
    """x0, y0, x1, y1 of the face's landmarks (tighter and steadier than the detector's box)."""
    xy = np.asarray(face.landmarks, np.float64)[:, :2]
    return np.concatenate([xy.min(0), xy.max(0)])


class FaceAnalyzer:
    """Detect faces, 468 landmarks and head pose on uint8 RGB images."""

    def __init__(self, device="cpu", dtype: torch.dtype = torch.float32, weights_dir: str | Path | None = None,
                 detector: "str | DetectorBackend" = "auto", min_face: int = MIN_FACE_PX, refine: bool = True):
        self._custom = detector if isinstance(detector, DetectorBackend) and not isinstance(detector, str) else None
        if self._custom is not None:
            detector = "custom"
        elif detector not in ("auto", "short", "full"):
            raise ValueError(f"detector must be 'auto', 'short', 'full' or a DetectorBackend, got {detector!r}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.detector = detector
        self.min_face = int(min_face)
        self.refine = refine
        self._short = BlazeFaceDetector(find_model_file("short", weights_dir), "short", device, dtype) \
            if detector in ("auto", "short") else None
        self._full = BlazeFaceDetector(find_model_file("full", weights_dir), "full", device, dtype) \
            if detector in ("auto", "full") else None
        self._mesh = FaceMesh(find_model_file("mesh", weights_dir), device, dtype)
        self.last_too_small: list[tuple[int, np.ndarray]] = []

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one image (uint8 RGB [H,W,3]; other formats as in :mod:`.image_input`)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per frame; ``frames`` is [B,H,W,C] or a list of images of any sizes."""
        if isinstance(frames, np.ndarray) and frames.ndim in (2, 3) and not (frames.ndim == 3 and frames.shape[-1] > 4):
            raise ValueError(f"detect_batch: expected a batch [B,H,W,C], got one image of shape {frames.shape}; use detect()")
        imgs = [to_rgb_uint8(f, f"frame {i}") for i, f in enumerate(frames)]
        self.last_too_small = []
        out: list[list[Face]] = [[] for _ in imgs]
        usable = [i for i, im in enumerate(imgs) if min(im.shape[:2]) >= MIN_IMAGE_SIDE]
        for s in range(0, len(usable), CHUNK):
            idx = usable[s : s + CHUNK]
            for i, faces in zip(idx, self._detect_chunk([imgs[i] for i in idx], idx)):
                out[i] = order_faces(faces)
        return out

    def _raw_detections(self, imgs: list[np.ndarray]) -> list[list[tuple]]:
        if self._custom is not None:
            return [[(np.asarray(b, np.float64), np.asarray(k, np.float64), float(s)) for b, k, s in d]
                    for d in self._custom.detect(imgs)]
        if self.detector == "full":
            return self._full.detect(imgs)
        dets = self._short.detect(imgs)
        if self.detector == "auto":
            empty = [i for i, d in enumerate(dets) if not d]
            if empty:
                for i, d in zip(empty, self._full.detect([imgs[i] for i in empty], FULL_RANGE_FALLBACK_SCORE)):
                    dets[i] = d
        return dets

    def detect_all(self, image: np.ndarray, full_min_score: float | None = None, same_face_iou: float = 0.5) -> list[Face]:
        """Every face either BlazeFace model sees in one image, each counted once; for counting.

        :meth:`detect` (what the pipeline takes as *the* face) tries the full-range model only where
        the short-range one finds nothing, so a second face only the full-range model sees (a small
        inset, a second portrait beside the first) is missed there. Here both run: full-range
        detections at ``full_min_score`` (default: the model's own threshold) that overlap no
        short-range box by more than ``same_face_iou`` are added, every candidate goes through the
        mesh (presence, ``min_face``) as in :meth:`detect`, and faces whose landmark boxes overlap by
        more than ``same_face_iou`` are one face. Ordered like :meth:`detect`. With one model only
        (``detector='short'``/``'full'`` or a custom backend) this is :meth:`detect`.
        """
        if self._custom is not None or self._short is None or self._full is None:
            return self.detect(image)
        img = to_rgb_uint8(image, "image")
        self.last_too_small = []
        if min(img.shape[:2]) < MIN_IMAGE_SIDE:
            return []
        short = self._short.detect([img])[0]
        full = self._full.detect([img], full_min_score)[0]
        short_boxes = np.array([b for b, _, _ in short]).reshape(-1, 4)
        cands = list(short) + [d for d in full if not len(short_boxes) or _iou(d[0], short_boxes).max() <= same_face_iou]
        kept: list[Face] = []
        for f in self._faces_from([img], [cands], [0])[0]:
            lb = _landmark_box(f)
            if all(_iou(lb, _landmark_box(k)[None])[0] <= same_face_iou for k in kept):
                kept.append(f)
        return order_faces(kept)

    def _detect_chunk(self, imgs: list[np.ndarray], frame_ids: list[int]) -> list[list[Face]]:
        return self._faces_from(imgs, self._raw_detections(imgs), frame_ids)

    def _faces_from(self, imgs: list[np.ndarray], dets: list[list[tuple]], frame_ids: list[int]) -> list[list[Face]]:
        """Detections -> Faces: too-small boxes set aside, 468 landmarks (twice), presence filter."""
        jobs = []
        for k, (img, d) in enumerate(zip(imgs, dets)):
            for box, kps, score in d:
                if min(box[2] - box[0], box[3] - box[1]) < self.min_face:
                    self.last_too_small.append((frame_ids[k], box.astype(np.float32)))
                    continue
                jobs.append((k, box, kps, score))
        if not jobs:
            return [[] for _ in imgs]
        lmk, prob = self._mesh.run([imgs[k] for k, *_ in jobs], [roi_from_detection(b, kp) for _, b, kp, _ in jobs])
        if self.refine:
            lmk, prob = self._mesh.run([imgs[k] for k, *_ in jobs], [roi_from_landmarks(l) for l in lmk])
        res: list[list[Face]] = [[] for _ in imgs]
        for (k, box, kps, score), l, p in zip(jobs, lmk, prob):
            if p < MIN_PRESENCE:
                continue
            res[k].append(Face(box=box.astype(np.float32), score=float(score), landmarks=l,
                               pose=head_pose(l), keypoints=kps.astype(np.float32), presence=float(p)))
        return res
