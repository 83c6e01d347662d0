"""The media layer's rules from ``data/media.json`` (kept as data so they are easy to change)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "data" / "media.json"


@lru_cache(maxsize=4)
def media_settings(path: str | None = None) -> dict[str, Any]:
    """Setting name -> value (the 'meaning' texts stay in the file); ``path`` overrides the pack's file."""
    raw = json.loads(Path(path or SETTINGS_FILE).read_text(encoding="utf-8"))
    return {k: v["value"] for k, v in raw.items() if not k.startswith("_")}
