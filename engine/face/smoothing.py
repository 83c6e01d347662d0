"""Temporal smoothing of face landmarks and boxes (a rigid one-euro filter).

Why one-euro: a fixed exponential smoother either leaves jitter when the head is still or lags
when it moves. The one-euro filter lowers its cut-off frequency when the face is still (strong
smoothing removes jitter) and raises it with speed (little lag on real motion). Here one
cut-off is computed per frame from the rigid speed of the face (centroid motion plus change of
size, in inter-ocular distances per frame), and applied to all points and the box alike, so the face shape is never
distorted by per-point filtering.

``strength`` in [0, 1]: 0 = off; the minimum cut-off is ``0.5 * 10**(-2 * strength)`` cycles per
frame (0.5 -> 0.05, 1 -> 0.005); speed raises it by ``BETA`` per inter-ocular distance per frame.
"""
from __future__ import annotations

import math

import numpy as np

BETA = 2.0
D_CUTOFF = 0.5


def _alpha(cutoff: float) -> float:
    """Smoothing factor for a cut-off in cycles per frame (sampling period 1 frame)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


class OneEuroFace:
    """Stateful filter: feed landmarks [468,3] and box [4] frame by frame; :meth:`reset` on gaps."""

    def __init__(self, strength: float = 0.5):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"smoothing strength must be in [0, 1], got {strength}")
        self.strength = float(strength)
        self.min_cutoff = 0.5 * 10.0 ** (-2.0 * self.strength)
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a frame without a face)."""
        self._lmk = None
        self._box = None
        self._speed = 0.0

    def __call__(self, lmk: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lmk = lmk.astype(np.float64)
        box = box.astype(np.float64)
        if self.strength == 0.0 or self._lmk is None:
            self._lmk, self._box = lmk, box
            return lmk.astype(np.float32), box.astype(np.float32)
        iod = max(float(np.linalg.norm(lmk[263, :2] - lmk[33, :2])), 1e-3)
        # rigid speed: centroid motion plus size change (per-point noise averages out)
        d_c = float(np.linalg.norm(lmk[:, :2].mean(0) - self._lmk[:, :2].mean(0)))
        spread, spread0 = lmk[:, :2].std(), self._lmk[:, :2].std()
        speed = (d_c + abs(spread - spread0) * 2.0) / iod
        a_d = _alpha(D_CUTOFF)
        self._speed = a_d * speed + (1 - a_d) * self._speed
        a = _alpha(self.min_cutoff + BETA * self._speed)
        self._lmk = a * lmk + (1 - a) * self._lmk
        self._box = a * box + (1 - a) * self._box
        return self._lmk.astype(np.float32), self._box.astype(np.float32)
