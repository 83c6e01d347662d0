"""MediaPipe BlazeFace face detection in PyTorch: anchors, box decoding, weighted NMS.

Constants follow MediaPipe's face-detection graphs: the short-range model (128x128, anchors
from strides 8/16/16/16, two per cell for the first layer and six for the merged stride-16
layers, 896 in all, score threshold 0.5) and the full-range model (192x192, stride 4, one
anchor per cell, 2304, threshold 0.6). Boxes are [x_center, y_center, w, h] offsets scaled by
the input size and added to fixed-size anchors; six keypoints follow (subject's right eye, left
eye, nose tip, mouth centre, right ear tragion, left ear tragion). Input is letterboxed (aspect
kept, zero padding) and scaled to [-1, 1]; overlapping detections (IoU > 0.3) are merged by a
score-weighted average (MediaPipe's WEIGHTED non-maximum suppression).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .tflite_reader import read_tflite
from .tflite_torch import TFLiteGraph


@dataclass(frozen=True)
class DetectorConfig:
    """Per-model constants (MediaPipe's SsdAnchors / TensorsToDetections options)."""

    size: int
    strides: tuple[int, ...]
    interpolated_anchor: bool
    min_score: float
    nms_iou: float = 0.3
    score_clip: float = 100.0


CONFIGS = {
    "short": DetectorConfig(128, (8, 16, 16, 16), True, 0.5),
    "full": DetectorConfig(192, (4,), False, 0.6),
}


def make_anchors(cfg: DetectorConfig) -> np.ndarray:
    """Anchor centres [A, 2] (x, y normalised); layers of equal stride share a grid."""
    out = []
    i = 0
    n = len(cfg.strides)
    while i < n:
        stride = cfg.strides[i]
        per_cell = 0
        while i < n and cfg.strides[i] == stride:
            per_cell += 1 + int(cfg.interpolated_anchor)  # aspect ratio 1.0 (+ interpolated scale)
            i += 1
        fm = int(np.ceil(cfg.size / stride))
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Resize keeping aspect into ``size`` x ``size`` with centred zero padding.

    Returns the padded image and (scale, pad_x, pad_y) mapping: x_img = (x_lb - pad_x) / scale.
    """
    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    px, py = (size - nw) // 2, (size - nh) // 2
    out = np.zeros((size, size, 3), np.uint8)
    out[py : py + nh, px : px + nw] = resized
    return out, (nw / w, nh / h, float(px), float(py))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float) -> list[tuple]:
    """Merge overlapping detections by a score-weighted mean; returns [(box, kps, score)] by score."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    out = []
    alive = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        idx = np.nonzero(alive)[0]
        ov = _iou(boxes[i], boxes[idx])
        grp = idx[ov > iou]
        if grp.size == 0:
            grp = np.array([i])
        w = scores[grp][:, None]
        box = (boxes[grp] * w).sum(0) / w.sum()
        kp = (kps[grp].reshape(len(grp), -1) * w).sum(0).reshape(kps.shape[1:]) / w.sum()
        out.append((box, kp, float(scores[i])))
        alive[grp] = False
        alive[i] = False
    return out


class BlazeFaceDetector:
    """BlazeFace ('short' or 'full' range) on a torch device; batched over frames."""

    def __init__(self, path, kind: str = "short", device="cpu", dtype: torch.dtype = torch.float32):
        self.cfg = CONFIGS[kind]
        self.kind = kind
        self.device = torch.device(device)
        self.dtype = dtype
        self.net = TFLiteGraph(read_tflite(path)).to(self.device, dtype).eval()
        self.anchors = make_anchors(self.cfg)
        got = self.net.input_shapes[0]
        if tuple(got[1:3]) != (self.cfg.size, self.cfg.size):
            raise ValueError(f"'{path}': input {got} does not match the {kind}-range detector ({self.cfg.size}x{self.cfg.size})")

    @torch.inference_mode()
    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs for letterboxed uint8 frames [B,S,S,3]: regressors [B,A,16], scores [B,A]."""
        x = torch.from_numpy(batch).to(self.device).to(self.dtype) / 127.5 - 1.0
        reg, cls = self.net(x)
        return reg.float().cpu().numpy(), cls.float().cpu().numpy()[..., 0]

    def detect(self, frames: list[np.ndarray], min_score: float | None = None) -> list[list[tuple]]:
        """Per frame: [(box xyxy px, keypoints [6,2] px, score)] after weighted NMS, by score."""
        if not frames:
            return []
        s = self.cfg.size
        boxes = [letterbox(f, s) for f in frames]
        reg, logits = self.raw(np.stack([b[0] for b in boxes]))
        thr = self.cfg.min_score if min_score is None else min_score
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -self.cfg.score_clip, self.cfg.score_clip)))
        a = self.anchors
        out = []
        for bi, (_, (sx, sy, px, py)) in enumerate(boxes):
            keep = np.nonzero(scores[bi] >= thr)[0]
            if keep.size == 0:
                out.append([])
                continue
            r = reg[bi, keep] / s
            cx = r[:, 0] + a[keep, 0]
            cy = r[:, 1] + a[keep, 1]
            bw, bh = r[:, 2], r[:, 3]
            b = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * s  # letterbox px
            k = (r[:, 4:16].reshape(-1, 6, 2) + a[keep, None, :]) * s
            b[:, [0, 2]] = (b[:, [0, 2]] - px) / sx
            b[:, [1, 3]] = (b[:, [1, 3]] - py) / sy
            k[..., 0] = (k[..., 0] - px) / sx
            k[..., 1] = (k[..., 1] - py) / sy
            out.append(weighted_nms(b, k, scores[bi, keep], self.cfg.nms_iou))
        return out
