"""MediaPipe FaceMesh (468 points) in PyTorch, with the ROI rules of MediaPipe's graphs.

The region of interest is a square rotated so that the eyes are level: from a detection, the
box is centred on the detection box, its side is the longer box side times 1.5 and the angle
comes from the two eye keypoints; from landmarks (the refinement pass and tracking), the box
of the landmarks, times 1.5, angle from the outer eye corners (points 33 and 263). The crop is
192x192, RGB scaled to [0, 1]; the network returns 468 (x, y, z) in crop pixels and a face
presence logit. Landmarks are mapped back with the inverse crop transform; z is scaled by the
same factor, so it is in image pixels (relative depth, smaller = nearer the camera).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .tflite_reader import read_tflite
from .tflite_torch import TFLiteGraph

MESH_SIZE = 192
ROI_SCALE = 1.5
EYE_OUTER = (33, 263)  # subject's right (image left) and left outer eye corners


def roi_from_points(center: np.ndarray, size: float, eye_a: np.ndarray, eye_b: np.ndarray) -> np.ndarray:
    """Image -> crop similarity (2x3) for a square of side ``size`` rotated to level the eyes."""
    angle = math.atan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])
    s = MESH_SIZE / max(size, 1e-6)
    c, si = math.cos(angle), math.sin(angle)
    # rotate by -angle about the centre, scale, move the centre to the crop centre
    m = np.array([[c * s, si * s, 0.0], [-si * s, c * s, 0.0]])
    m[:, 2] = MESH_SIZE / 2 - m[:, :2] @ center
    return m


def roi_from_detection(box: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """ROI transform from a BlazeFace detection (box centre, long side x 1.5, eye keypoints)."""
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    size = max(box[2] - box[0], box[3] - box[1]) * ROI_SCALE
    return roi_from_points(center, size, kps[0], kps[1])


def roi_from_landmarks(lmk: np.ndarray) -> np.ndarray:
    """ROI transform from 468 landmarks: their box in the eye-levelled frame, long side x 1.5."""
    a, b = lmk[EYE_OUTER[0], :2], lmk[EYE_OUTER[1], :2]
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    p = lmk[:, :2] @ rot.T
    lo, hi = p.min(0), p.max(0)
    center = ((lo + hi) / 2) @ rot  # back to image coordinates
    size = float(max(hi - lo)) * ROI_SCALE
    return roi_from_points(center, size, a, b)


class FaceMesh:
    """The 468-point FaceMesh network; batched over ROIs."""

    def __init__(self, path, device="cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.net = TFLiteGraph(read_tflite(path)).to(self.device, dtype).eval()
        got = self.net.input_shapes[0]
        if tuple(got[1:3]) != (MESH_SIZE, MESH_SIZE) or self.net.output_ranks[0] != 4:
            raise ValueError(f"'{path}': not the 468-point face mesh model (input {got})")

    @torch.inference_mode()
    def run(self, images: list[np.ndarray], rois: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks [N,468,3] in image pixels and presence probabilities [N] for (image, ROI) pairs."""
        if not rois:
            return np.zeros((0, 468, 3), np.float32), np.zeros(0, np.float32)
        crops = np.stack([
            cv2.warpAffine(img, m, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for img, m in zip(images, rois)
        ])
        x = torch.from_numpy(crops).to(self.device).to(self.dtype) / 255.0
        pts, flag = self.net(x)
        pts = pts.float().cpu().numpy().reshape(len(rois), 468, 3).astype(np.float64)
        prob = 1.0 / (1.0 + np.exp(-np.clip(flag.float().cpu().numpy().reshape(-1).astype(np.float64), -50, 50)))
        out = np.empty_like(pts)
        for i, m in enumerate(rois):
            full = np.vstack([m, [0, 0, 1]])
            inv = np.linalg.inv(full)
            out[i, :, :2] = pts[i, :, :2] @ inv[:2, :2].T + inv[:2, 2]
            out[i, :, 2] = pts[i, :, 2] / math.sqrt(abs(np.linalg.det(m[:, :2])))
        return out.astype(np.float32), prob.astype(np.float32)
