#!/usr/bin/env python3
"""Print the pack's nodes as a Markdown table (for the README), grouped by category."""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401
from comfy_server import find_comfyui  # noqa: E402


def main() -> None:
    sys.path.append(str(find_comfyui()))
    from comfyui_digitalhuman import nodes

    rows = []
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        name = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id)
        desc = " ".join(getattr(cls, "DESCRIPTION", "").split())
        first = re.split(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z])", desc)[0].rstrip(".")
        rows.append((cls.CATEGORY, node_id, name, first + "."))
    print("| category | node id | name | what it does |\n|---|---|---|---|")
    for cat, node_id, name, desc in sorted(rows):
        print(f"| {cat.split('/', 1)[1]} | `{node_id}` | {name} | {desc} |")
    if nodes.DISABLED:
        print(f"\nDisabled (missing dependencies): {nodes.DISABLED}", file=sys.stderr)


if __name__ == "__main__":
    main()
