"""HiFT weights drawn at random in the published ``hift.pt`` layout, for tests and benchmarks.

The values come from NumPy's PCG64 uniform doubles (integer arithmetic, no libm), keyed by seed
and tensor name, so every machine makes bit-identical tensors, and a tensor has the same values
whichever weight-norm naming or prefix the file uses. Magnitudes are chosen so a random vocoder
behaves like a working one in the ways a test can see: activations stay of order one, F0 lands
around 100-300 Hz with some frames below the voiced threshold, and conv_post's log-magnitudes sit
near -1.5, so the waveform stays mostly inside ``audio_limit`` instead of clipping.
"""
from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .hift import WN_NAMINGS, HiFTGenerator, build_hift

# A small configuration of the same architecture: every rate, kernel and dilation as published
# (so lengths and the source path are exercised exactly), a sixteenth of the channels.
SMALL_OVERRIDES: dict[str, Any] = {"base_channels": 32, "f0_predictor": {"cond_channels": 32}}


def published_config() -> dict[str, Any]:
    """The published ``hift`` section of ``cosyvoice2.json``."""
    from .config import load_config

    return load_config()["hift"]


def small_config() -> dict[str, Any]:
    """The published HiFT configuration with :data:`SMALL_OVERRIDES` applied."""
    cfg = published_config()
    cfg["base_channels"] = SMALL_OVERRIDES["base_channels"]
    cfg["f0_predictor"] = {**cfg["f0_predictor"], **SMALL_OVERRIDES["f0_predictor"]}
    return cfg


def _uniform(seed: int, key: str, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    x = rng.random(int(np.prod(shape)) if shape else 1)
    return torch.from_numpy((low + (high - low) * x).astype(np.float32).reshape(shape))


def _values(cfg: dict[str, Any], key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One tensor of the canonical (weight_g / weight_v) layout."""
    half = int(cfg["istft_params"]["n_fft"]) // 2 + 1
    if key.endswith(".alpha"):
        return _uniform(seed, key, shape, 0.5, 1.5)
    if key.endswith(".weight_g"):
        # row norm of the folded weight: ~1 keeps the variance, conv_post is kept quiet
        lo, hi = (0.05, 0.1) if key.startswith("conv_post.") else (0.5, 1.0)
        return _uniform(seed, key, shape, lo, hi)
    if key.endswith(".weight_v"):
        return _uniform(seed, key, shape, -1.0, 1.0)
    if key == "conv_post.bias":
        b = _uniform(seed, key, shape, -1.0, 1.0)
        b[:half] = b[:half] - 1.5  # log-magnitudes near -1.5
        return b
    if key == "f0_predictor.classifier.weight":
        bound = 400.0 * (3.0 / shape[1]) ** 0.5  # std ~400 Hz per unit-variance feature
        return _uniform(seed, key, shape, -bound, bound)
    if key == "f0_predictor.classifier.bias":
        return _uniform(seed, key, shape, 30.0, 50.0)
    if key.endswith(".weight"):  # plain convs and linears: unit-variance gain
        fan_in = int(np.prod(shape[1:]))
        bound = (3.0 / fan_in) ** 0.5
        return _uniform(seed, key, shape, -bound, bound)
    if key.endswith(".bias"):
        return _uniform(seed, key, shape, -0.05, 0.05)
    raise KeyError(f"no rule for HiFT key {key!r}")


def random_hift_state_dict(cfg: dict[str, Any] | None = None, seed: int = 0, naming: str = "weight_norm",
                           prefix: str = "") -> dict[str, torch.Tensor]:
    """A flat state dict in the published layout of ``cfg`` (the published config when None), the
    weight-normalised convs in ``naming`` (see ``HiFTGenerator.published_layout``), each key
    prefixed with ``prefix`` (e.g. ``generator.`` as a HiFiGan training wrapper saves it)."""
    if naming not in WN_NAMINGS:
        raise ValueError(f"unknown weight-norm naming {naming!r}; use one of {WN_NAMINGS}")
    cfg = published_config() if cfg is None else copy.deepcopy(cfg)
    with torch.device("meta"):
        model = HiFTGenerator(cfg)
    canonical = model.published_layout("weight_norm")
    named = model.published_layout(naming)
    out: dict[str, torch.Tensor] = {}
    for (ckey, shape), nkey in zip(canonical.items(), named):
        out[prefix + nkey] = _values(cfg, ckey, shape, seed)
    return out


def random_hift(cfg: dict[str, Any] | None = None, seed: int = 0) -> HiFTGenerator:
    """A HiFT built through the real loader from :func:`random_hift_state_dict`."""
    cfg = published_config() if cfg is None else cfg
    return build_hift(cfg, random_hift_state_dict(cfg, seed), source=f"random HiFT weights (seed {seed})")


def write_random_hift(path: str | Path, cfg: dict[str, Any] | None = None, seed: int = 0,
                      naming: str = "weight_norm", prefix: str = "") -> Path:
    """Write a random ``hift.pt`` in the published container (``torch.save`` of a flat dict)."""
    path = Path(path)
    torch.save(random_hift_state_dict(cfg, seed, naming, prefix), str(path))
    return path
