"""Make the pack importable as ``comfyui_digitalhuman`` from scripts and tests.

ComfyUI imports the pack by its folder path, so the folder name (which may contain a hyphen)
is never a valid module name. Scripts and tests instead register the repository root as a
namespace-like package under a fixed alias. The root ``__init__`` (which registers ComfyUI
nodes) is *not* executed, so the engine, loaders and providers import without ComfyUI.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

ALIAS = "comfyui_digitalhuman"
ROOT = Path(__file__).resolve().parents[1]


def register() -> types.ModuleType:
    """Register the repo root as package ``comfyui_digitalhuman`` and return it."""
    mod = sys.modules.get(ALIAS)
    if mod is None:
        mod = types.ModuleType(ALIAS)
        mod.__path__ = [str(ROOT)]
        mod.__file__ = str(ROOT / "__init__.py")
        mod.__package__ = ALIAS
        sys.modules[ALIAS] = mod
    return mod


register()
