"""The live-session settings as data (``data/live.json``), with environment overrides for the limits."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data_files import data_section

LIVE_FILE = Path(__file__).resolve().parents[2] / "data" / "live.json"

_ENV = {"max_sessions": "DH_LIVE_MAX_SESSIONS", "max_viewers": "DH_LIVE_MAX_VIEWERS",
        "idle_timeout_s": "DH_LIVE_IDLE_TIMEOUT_S"}


def section(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """A copy of one section (``text``, ``media``, ``chat``, ``record``, ``limits``), ``_about`` dropped."""
    return data_section(path or LIVE_FILE, name, "live settings")


def limits(path: str | Path | None = None) -> dict[str, Any]:
    """The ``limits`` section with ``DH_LIVE_*`` environment overrides applied (a bad value is an error
    naming the variable)."""
    out = section("limits", path)
    for key, var in _ENV.items():
        raw = os.environ.get(var, "").strip()
        if raw:
            try:
                val = float(raw)
            except ValueError:
                raise ValueError(f"{var} must be a number, got '{raw}'") from None
            if val < 0 or (key != "idle_timeout_s" and val < 1):
                raise ValueError(f"{var} must be at least 1, got '{raw}'")
            out[key] = int(val) if key != "idle_timeout_s" else val
    return out
