"""The media layer's rules from ``data/media.json`` (kept as data so they are easy to change)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..data_files import read_json, without_notes

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "data" / "media.json"


@lru_cache(maxsize=4)
def media_settings(path: str | None = None) -> dict[str, Any]:
    """Setting name -> value (the 'meaning' texts stay in the file); ``path`` overrides the pack's file."""
    raw = read_json(path or SETTINGS_FILE, "media settings")
    return {k: v["value"] for k, v in without_notes(raw).items()}
