"""Kalman smoothing of per-frame motion (source-video animation), as the reference does it.

The reference smooths the flattened per-frame expression and rotation with a Kalman filter and
RTS smoother whose transition and observation matrices are the identity and whose covariances
are ``process_variance * I`` and ``observation_variance * I``, starting at the first observation
with unit covariance. With isotropic covariances every coordinate is an independent scalar
filter with the same gains, so the gains are computed once and applied to all coordinates.
"""
from __future__ import annotations

import numpy as np


def kalman_smooth(x: np.ndarray, observation_variance: float = 3e-7, process_variance: float = 1e-5) -> np.ndarray:
    """RTS-smoothed sequence of ``x`` ``[T, ...]`` (float64 maths, returned as float32)."""
    x = np.asarray(x, np.float64)
    t_len = x.shape[0]
    flat = x.reshape(t_len, -1)
    if t_len == 0:
        return x.astype(np.float32)
    r, q = float(observation_variance), float(process_variance)
    means = np.empty_like(flat)
    p_filt = np.empty(t_len)
    p_pred = np.empty(t_len)
    mean, p = flat[0], 1.0  # initial state: first observation, unit covariance
    for t in range(t_len):
        if t > 0:
            p = p + q
        p_pred[t] = p
        gain = p / (p + r)
        mean = mean + gain * (flat[t] - mean)
        p = (1 - gain) * p
        means[t], p_filt[t] = mean, p
    smooth = means.copy()
    for t in range(t_len - 2, -1, -1):
        j = p_filt[t] / p_pred[t + 1]
        smooth[t] = means[t] + j * (smooth[t + 1] - means[t])
    return smooth.reshape(x.shape).astype(np.float32)
