"""Speech-token sampling of CosyVoice 2: repetition-aware nucleus sampling (``ras_sampling``).

The reference (``cosyvoice/utils/common.py``) draws from torch's global random generator; here
every draw takes an explicit ``torch.Generator`` so a seed fixes the speech. For the same
generator state and the same scores the draws are the same as the reference's: the candidate list
is built with the same float32 arithmetic (a sequential running sum, not a cumsum whose
summation order may vary) and ``torch.multinomial`` sees the same tensor.

Scores are 1-D float tensors (log-probabilities over the speech vocabulary). They are moved to
the CPU first, so a CPU generator works whatever device the model runs on, and the same seed gives
the same tokens on a CPU and on a GPU (up to logits rounding).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _cpu_scores(weighted_scores: torch.Tensor) -> torch.Tensor:
    if weighted_scores.ndim != 1:
        raise ValueError(f"sampling expects 1-D scores, got shape {list(weighted_scores.shape)}")
    return weighted_scores.detach().to("cpu", torch.float32)


def nucleus_sampling(weighted_scores: torch.Tensor, top_p: float, top_k: int,
                     generator: torch.Generator | None) -> int:
    """One draw from the smallest head of the sorted distribution whose mass reaches ``top_p``,
    at most ``top_k`` entries (the draw is proportional to the kept probabilities)."""
    probs = _cpu_scores(weighted_scores).softmax(dim=0)
    values, order = probs.sort(descending=True, stable=True)
    head = values[:top_k]
    limit = np.float32(top_p)
    running = np.float32(0.0)
    kept = 0
    for v in head.tolist():  # the reference's loop: test, then add, in float32
        if not running < limit:
            break
        running = np.float32(running + np.float32(v))
        kept += 1
    kept = max(kept, 1)
    pick = torch.multinomial(values[:kept], 1, replacement=True, generator=generator)
    return int(order[pick].item())


def random_sampling(weighted_scores: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from the whole distribution ``softmax(weighted_scores)``."""
    probs = _cpu_scores(weighted_scores).softmax(dim=0)
    return int(torch.multinomial(probs, 1, replacement=True, generator=generator).item())


def ras_sampling(weighted_scores: torch.Tensor, decoded_tokens: Sequence[int], *, top_p: float, top_k: int,
                 win_size: int, tau_r: float, generator: torch.Generator | None) -> int:
    """Nucleus sampling; if the pick already occurs at least ``win_size * tau_r`` times among the last
    ``win_size`` decoded tokens, it is excluded and a token is drawn from the whole distribution
    instead (so a loop of repeated tokens is broken). ``weighted_scores`` is not modified."""
    scores = _cpu_scores(weighted_scores)
    top = nucleus_sampling(scores, top_p, top_k, generator)
    recent = list(decoded_tokens[-win_size:]) if win_size > 0 else []
    if recent.count(top) >= win_size * tau_r:
        scores = scores.clone()
        scores[top] = -float("inf")
        top = random_sampling(scores, generator)
    return top
