"""Head pose (yaw, pitch, roll) from the 468 face-mesh points.

A face frame is built from the mesh itself: x along the outer eye corners (33 -> 263), y from
forehead to chin (10 -> 152) made orthogonal to x, z = x cross y (away from the camera for a
frontal face). The face's forward direction is -z. This needs no 3-D face template and is
good to a few degrees for yaw and roll at moderate poses. Pitch is measured on the forehead
(10) -> chin (152) line, which leans relative to the camera axis on real faces: frontal
portraits read roughly -15..0 degrees, so use pitch for relative changes or coarse checks.
Sign conventions are in :mod:`.types`.
"""
from __future__ import annotations

import math

import numpy as np


def head_pose(lmk: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from landmarks [468, 3]."""
    p = lmk.astype(np.float64)
    ex = p[263] - p[33]
    ex /= np.linalg.norm(ex) + 1e-12
    ey = p[152] - p[10]
    ey -= ex * (ey @ ex)
    ey /= np.linalg.norm(ey) + 1e-12
    ez = np.cross(ex, ey)
    n = -ez  # forward (towards the camera for a frontal face: z negative)
    yaw = math.degrees(math.atan2(-n[0], -n[2]))
    pitch = math.degrees(math.atan2(-n[1], math.hypot(n[0], n[2])))
    roll = math.degrees(math.atan2(ex[1], ex[0]))
    return float(yaw), float(pitch), float(roll)
