"""The CosyVoice 2 hyper-parameters as data (``cosyvoice2.json``), so no constant hides in code.

``DH_COSYVOICE_CONFIG`` may name another JSON file of the same structure (a fine-tuned or smaller
CosyVoice 2 — the integration tests serve small random networks that way); it replaces the
published configuration wholesale, and a file missing a section is an error naming it.
"""
from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG_PATH = Path(__file__).resolve().parent / "cosyvoice2.json"
OVERRIDE_ENV = "DH_COSYVOICE_CONFIG"
SECTIONS = ("sample_rate", "llm", "qwen2", "flow", "hift", "feat_extractor", "frontend", "inference", "streaming")


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"CosyVoice configuration {path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    missing = [s for s in SECTIONS if s not in data]
    if missing:
        raise ValueError(f"CosyVoice configuration {path}: missing section(s) {', '.join(missing)}")
    return data


def config_path() -> Path:
    """The configuration in use: ``DH_COSYVOICE_CONFIG`` when set, else the published one."""
    return Path(os.environ.get(OVERRIDE_ENV) or CONFIG_PATH)


def load_config() -> dict[str, Any]:
    """A deep copy of the CosyVoice 2 configuration (callers may edit it, e.g. for the small test
    configurations)."""
    return copy.deepcopy(_load(str(config_path())))


def published_config() -> dict[str, Any]:
    """The published CosyVoice2-0.5B configuration, whatever ``DH_COSYVOICE_CONFIG`` says."""
    return copy.deepcopy(_load(str(CONFIG_PATH)))
