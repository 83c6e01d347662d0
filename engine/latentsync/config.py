"""LatentSync's hyper-parameters as data (``latentsync.json``), so no constant hides in code."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..data_files import read_json

CONFIG_PATH = Path(__file__).resolve().parent / "latentsync.json"
VERSIONS = ("1.6", "1.5")


def _load() -> dict[str, Any]:
    return read_json(CONFIG_PATH, "LatentSync configuration")


def load_config() -> dict[str, Any]:
    """A deep copy of the whole file (callers may edit it)."""
    return copy.deepcopy(_load())


def section(name: str) -> dict[str, Any]:
    """A deep copy of one top-level section (``unet``, ``scheduler``, ``alignment``, ...)."""
    return copy.deepcopy(_load()[name])


def unet_config(tiny: bool = False) -> dict[str, Any]:
    """The UNet's constructor arguments: the published model section, or its small test variant."""
    cfg = section("unet")
    if tiny:
        cfg.update({k: v for k, v in section("unet_tiny").items() if not k.startswith("_")})
    return cfg


def resolution(version: str) -> int:
    """Face crop size of a version: 512 for 1.6, 256 for 1.5."""
    versions = _load()["versions"]
    if version not in versions:
        raise ValueError(f"unknown LatentSync version '{version}', expected one of {', '.join(versions)}")
    return int(versions[version]["resolution"])


def whisper_dims(small: bool = False) -> dict[str, int]:
    """Whisper tiny's ``dims`` (the published ones, or the test checkpoints' with a shrunk decoder)."""
    return {k: int(v) for k, v in section("whisper_tiny_small" if small else "whisper_tiny").items()
            if not k.startswith("_")}
