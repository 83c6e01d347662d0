"""The speech rules as data (``data/speech.json``): splitting, pauses, trimming, subtitles, API limits."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..data_files import data_section, read_json

SPEECH_FILE = Path(__file__).resolve().parents[2] / "data" / "speech.json"


def load_speech_config(path: str | Path | None = None) -> dict[str, Any]:
    """A deep copy of the speech rules (callers may edit it, e.g. tests with other pauses)."""
    return copy.deepcopy(read_json(path or SPEECH_FILE, "speech rules"))


def section(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """A copy of one section of the rules (``sentences``, ``pauses``, ``trim``, ``srt``, ``openai``,
    ``elevenlabs``), its ``_about`` note dropped."""
    return data_section(path or SPEECH_FILE, name, "speech rules")
