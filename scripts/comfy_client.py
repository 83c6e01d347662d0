"""Thin alias of :mod:`comfyui_digitalhuman.client.api` (the pack's one client of ComfyUI's API),
kept so scripts and tests that import ``comfy_client`` from ``scripts/`` keep working."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (registers the ``comfyui_digitalhuman`` alias)

from comfyui_digitalhuman.client.api import (  # noqa: E402,F401
    ComfyClient,
    ExecutionFailed,
    ExecutionInterrupted,
    PromptRejected,
    RunResult,
    ServerUnavailable,
    format_rejection,
    output_files,
    rejected_inputs,
    ui_texts,
)
