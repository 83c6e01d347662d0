"""Seeded random weights for the CosyVoice 2 flow in the published ``flow.pt`` layout, for tests,
the parity script and the benchmark (no published file is needed).

Values come from NumPy's PCG64, one stream per key (seeded with the seed and a CRC of the key
name), as uniform numbers mapped to float32 with exact arithmetic: the same seed gives the same
bits on every machine and in every key order, so a fixture can store the seed instead of the
weights. Scales keep activations of order one through the network: linear/conv weights with
variance 1/fan_in, LayerNorm gains near one, small biases.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from typing import Any, Iterator

import numpy as np
import torch

from .flow import CausalMaskedDiffWithXvec, build_flow, load_flow_weights


def _uniform(seed: int, key: str, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(key.encode())])))
    u = rng.random(int(np.prod(shape, dtype=np.int64)), dtype=np.float64)
    return (low + (high - low) * u).astype(np.float32).reshape(shape)


def random_tensor(seed: int, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The value of one key (by its name and shape)."""
    if key.endswith(("pos_bias_u", "pos_bias_v")):
        low, high = -0.2, 0.2
    elif key == "input_embedding.weight":
        low, high = -3 ** 0.5, 3 ** 0.5  # unit variance
    elif len(shape) == 1 and key.endswith(".weight"):  # every 1-D weight of the flow is a LayerNorm gain
        low, high = 0.9, 1.1
    elif len(shape) == 1:
        low, high = -0.05, 0.05
    else:
        fan_in = int(np.prod(shape[1:]))
        bound = (3.0 / fan_in) ** 0.5
        low, high = -bound, bound
    return torch.from_numpy(_uniform(seed, key, tuple(shape), low, high))


def _layout(cfg_flow: dict[str, Any] | None) -> Iterator[tuple[str, tuple[int, ...]]]:
    for key, t in build_flow(cfg_flow, device="meta").state_dict().items():
        yield key, tuple(t.shape)


def random_flow_state_dict(cfg_flow: dict[str, Any] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A flat float32 state dict with the keys and shapes of the flow built from ``cfg_flow``
    (default: the published configuration, i.e. the ``flow.pt`` layout)."""
    return {key: random_tensor(seed, key, shape) for key, shape in _layout(cfg_flow)}


def random_flow(cfg_flow: dict[str, Any] | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> CausalMaskedDiffWithXvec:
    """The flow with :func:`random_flow_state_dict` weights, loaded through the real strict loader."""
    model = build_flow(cfg_flow, device="meta")
    load_flow_weights(model, random_flow_state_dict(cfg_flow, seed), f"random flow (seed {seed})", assign=True)
    return model.to(dtype)


def save_random_flow(path: str | os.PathLike, cfg_flow: dict[str, Any] | None = None, seed: int = 0) -> None:
    """Write the random weights in the published container: ``torch.save`` of the flat dict."""
    torch.save(random_flow_state_dict(cfg_flow, seed), os.fspath(path))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the keys (sorted) and the float32 bytes of their tensors: a fixture stores it
    to prove that regenerating the weights from the seed gave exactly the same bits."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()
