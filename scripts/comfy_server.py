"""Thin alias of :mod:`comfyui_digitalhuman.client.launch` (start and stop a ComfyUI with this pack
loaded), kept so scripts and tests that import ``comfy_server`` from ``scripts/`` keep working."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (registers the ``comfyui_digitalhuman`` alias)

from comfyui_digitalhuman.client.launch import (  # noqa: E402,F401
    PACK_LINK_NAME,
    PACK_ROOT,
    ComfyServer,
    find_comfyui,
    free_port,
    server_alive,
)
