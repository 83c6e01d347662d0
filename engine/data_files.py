"""Reading the pack's data files (hyper-parameters, rules, prices, presets as JSON): each file is
parsed once per path, and a file that cannot be read or parsed is an error naming what it holds
and where it is, never a bare JSONDecodeError from somewhere inside a node."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=32)
def _read(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{what} {path} could not be read: {type(exc).__name__}: {exc}") from None


def read_json(path: str | Path, what: str) -> Any:
    """The parsed file, shared by every caller: read it, never change it (take :func:`copy.deepcopy`)."""
    return _read(str(path), what)


def without_notes(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` without the keys that start with ``_`` (``_about`` and other notes for readers)."""
    return {k: v for k, v in table.items() if not k.startswith("_")}


def data_section(path: str | Path, name: str, what: str) -> dict[str, Any]:
    """A deep copy of the section ``name`` without its notes (callers may change it)."""
    data = read_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get(name), dict):
        raise KeyError(f"{what} {path} have no section '{name}'")
    return copy.deepcopy(without_notes(data[name]))
