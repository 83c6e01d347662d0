"""The face record shared by the pack.

Conventions (image coordinates: x to the right, y down, origin at the top-left pixel corner):

* ``box``: float32 [4] = x0, y0, x1, y1 in image pixels (the detector's box after merging).
* ``landmarks``: float32 [468, 3] in MediaPipe face-mesh order; x, y in image pixels, z relative
  depth in the same pixel scale (smaller = nearer the camera). "Left"/"right" in point names
  follow the subject: point 33 is the subject's right outer eye corner (on the image's left).
* ``pose``: (yaw, pitch, roll) in degrees. yaw > 0: the face is turned towards the image's left
  (the nose points left); pitch > 0: the face looks up; roll > 0: the eye line is rotated
  clockwise on screen (the subject's left eye, on the image's right, is lower).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One detected face with dense landmarks and a head-pose estimate."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    pose: tuple[float, float, float]
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((6, 2), np.float32))
    presence: float = 1.0

    @property
    def area(self) -> float:
        """Box area in square pixels (the 'largest' pick rule)."""
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    @property
    def center(self) -> np.ndarray:
        """Box centre (x, y)."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float32)
