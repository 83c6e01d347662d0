"""Draw detections for previews: box, 468 landmarks, the 68-point subset, pose text."""
from __future__ import annotations

import cv2
import numpy as np

from .schemes import IBUG68_FROM_MESH


def draw_face(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, pose=None, label: str = "") -> np.ndarray:
    """A copy of uint8 ``image`` with the face drawn (sizes scale with the face)."""
    out = np.ascontiguousarray(image.copy())
    side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
    t = max(1, int(round(side / 150)))
    r = max(1, int(round(side / 250)))
    cv2.rectangle(out, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), (255, 64, 64), t)
    for x, y in landmarks[:, :2]:
        cv2.circle(out, (int(round(x)), int(round(y))), r, (64, 255, 64), -1)
    for x, y in landmarks[IBUG68_FROM_MESH, :2]:
        cv2.circle(out, (int(round(x)), int(round(y))), r + 1, (255, 255, 0), -1)
    text = label
    if pose is not None:
        text += f" yaw {pose[0]:.0f} pitch {pose[1]:.0f} roll {pose[2]:.0f}"
    if text:
        cv2.putText(out, text.strip(), (int(box[0]), max(12, int(box[1]) - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.4, side / 400), (255, 64, 64), t)
    return out
