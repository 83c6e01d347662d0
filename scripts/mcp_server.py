#!/usr/bin/env python3
"""The ComfyUI-DigitalHuman MCP server (stdio): add this command to an agent.

    claude mcp add digitalhuman -- /path/to/python /path/to/ComfyUI-DigitalHuman/scripts/mcp_server.py \
        --server http://127.0.0.1:8188

Tools: design_avatar, make_video, list_voices, list_workflows, run_workflow, run_batch (and the
table's one-workflow tools whose nodes are installed). See the README's MCP section and
``python scripts/mcp_server.py --help``. Logs go to stderr; stdout carries the protocol only.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (registers the ``comfyui_digitalhuman`` alias)

from comfyui_digitalhuman.mcp_server.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
