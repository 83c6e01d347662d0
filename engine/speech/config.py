"""The speech rules as data (``data/speech.json``): splitting, pauses, trimming, subtitles, API limits."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SPEECH_FILE = Path(__file__).resolve().parents[2] / "data" / "speech.json"


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"speech rules {p} could not be read: {exc}") from None


def load_speech_config(path: str | Path | None = None) -> dict[str, Any]:
    """A deep copy of the speech rules (callers may edit it, e.g. tests with other pauses)."""
    return copy.deepcopy(_load(str(path or SPEECH_FILE)))


def section(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """One section of the rules (``sentences``, ``pauses``, ``trim``, ``srt``, ``openai``, ``elevenlabs``)."""
    cfg = _load(str(path or SPEECH_FILE))
    if name not in cfg:
        raise KeyError(f"speech rules {path or SPEECH_FILE} have no section '{name}'")
    return copy.deepcopy(cfg[name])
