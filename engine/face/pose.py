"""Head pose (yaw, pitch, roll) from the 468 face-mesh points.

A face frame is built from the mesh itself: x along the outer eye corners (33 -> 263), y from
forehead to chin (10 -> 152) made orthogonal to x, z = x cross y (away from the camera for a
frontal face). The face's forward direction is -z. This needs no 3-D face template and is
accurate to a few degrees for moderate poses; sign conventions are in :mod:`.types`.
"""
from __future__ import annotations

import math

import numpy as np

# Pitch of the forehead->chin line of a frontal mesh (the face plane leans back a little);
# measured on frontal faces so that a frontal face reads pitch ~ 0.
PITCH_OFFSET_DEG = 0.0


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
    pitch = math.degrees(math.atan2(-n[1], math.hypot(n[0], n[2]))) - PITCH_OFFSET_DEG
    roll = math.degrees(math.atan2(ex[1], ex[0]))
    return float(yaw), float(pitch), float(roll)
