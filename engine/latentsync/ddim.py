"""The DDIM sampler LatentSync runs (diffusers' ``DDIMScheduler`` with the reference's
``configs/scheduler_config.json``), deterministic (eta = 0).

Scaled-linear betas over 1000 training steps, ``alphas_cumprod`` in float32; the inference steps are
spaced "leading" (``t = k * (1000 // steps) + steps_offset``, descending); the step before ``t = 0``
uses ``alphas_cumprod[0]`` (``set_alpha_to_one`` false); epsilon prediction, no clipping. The
arithmetic mirrors diffusers' (0-d float32 factors, so a half-precision sample stays half).
"""
from __future__ import annotations

import numpy as np
import torch

from .config import section


class DDIM:
    def __init__(self, num_inference_steps: int, config: dict | None = None):
        c = config or section("scheduler")
        for key, want in (("beta_schedule", "scaled_linear"), ("prediction_type", "epsilon"),
                          ("timestep_spacing", "leading"), ("clip_sample", False)):
            if c.get(key, want) != want:
                raise ValueError(f"DDIM: {key}={c[key]!r} is not supported (only {want!r})")
        steps = int(num_inference_steps)
        n = int(c["num_train_timesteps"])
        if not 1 <= steps <= n:
            raise ValueError(f"inference steps must be 1..{n}, got {num_inference_steps}")
        betas = torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if c["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.step_ratio = n // steps
        ts = (np.arange(0, steps) * self.step_ratio).round()[::-1].copy().astype(np.int64) + int(c["steps_offset"])
        self.timesteps = torch.from_numpy(ts)

    def __len__(self) -> int:
        return len(self.timesteps)

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """``x_{t-1}`` from ``x_t`` and the predicted noise."""
        t = int(t)
        prev = t - self.step_ratio
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        x0 = (x - b_t ** 0.5 * eps) / a_t ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
