"""The CosyVoice 2 hyper-parameters as data (``cosyvoice2.json``), so no constant hides in code."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG_PATH = Path(__file__).resolve().parent / "cosyvoice2.json"


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    return json.loads(CONFIG_PATH.read_text(encoding="utf-8"))


def load_config() -> dict[str, Any]:
    """A deep copy of the published CosyVoice2-0.5B configuration (callers may edit it, e.g. for
    the small test configurations)."""
    return copy.deepcopy(_load())
