"""Collect the node classes of every module in this folder.

A module whose import fails (usually an optional dependency that is not installed) is skipped
with one clear log line, so one missing library never stops ComfyUI from starting.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil

log = logging.getLogger("DigitalHuman")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
DISABLED: dict[str, str] = {}


def _load_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "common":
            continue
        try:
            mod = importlib.import_module(f"{__name__}.{info.name}")
        except ImportError as exc:  # an optional dependency is missing
            DISABLED[info.name] = str(exc)
            log.warning("[DigitalHuman] nodes of '%s' disabled: %s", info.name, exc)
            continue
        for node_id, cls in getattr(mod, "NODE_CLASS_MAPPINGS", {}).items():
            if node_id in NODE_CLASS_MAPPINGS:
                raise RuntimeError(f"node id {node_id} defined twice (nodes/{info.name}.py)")
            NODE_CLASS_MAPPINGS[node_id] = cls
        for node_id, name in getattr(mod, "NODE_DISPLAY_NAME_MAPPINGS", {}).items():
            NODE_DISPLAY_NAME_MAPPINGS[node_id] = _display_name(name)


def _display_name(name: str) -> str:
    """One suffix for every node, so ours stand apart from core nodes of the same name in search."""
    for suffix in (" (DH)", " (DigitalHuman)"):
        name = name.removesuffix(suffix)
    return f"{name} (DigitalHuman)"


_load_all()
