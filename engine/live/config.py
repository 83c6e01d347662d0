"""The live-session settings as data (``data/live.json``), with environment overrides for the limits."""
from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

LIVE_FILE = Path(__file__).resolve().parents[2] / "data" / "live.json"

_ENV = {"max_sessions": "DH_LIVE_MAX_SESSIONS", "max_viewers": "DH_LIVE_MAX_VIEWERS",
        "idle_timeout_s": "DH_LIVE_IDLE_TIMEOUT_S"}


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"live settings {p} could not be read: {exc}") from None


def section(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """A copy of one section (``text``, ``media``, ``chat``, ``record``, ``limits``), ``_about`` dropped."""
    cfg = _load(str(path or LIVE_FILE))
    if name not in cfg:
        raise KeyError(f"live settings {path or LIVE_FILE} have no section '{name}'")
    return {k: copy.deepcopy(v) for k, v in cfg[name].items() if not k.startswith("_")}


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
