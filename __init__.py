"""ComfyUI-DigitalHuman: nodes for AI digital humans (avatar, motion, lip sync, real time).

Importing the pack is cheap: no model is loaded and nothing is downloaded here. Each module in
``nodes/`` is imported on its own; one that fails (a missing optional dependency) disables only
its nodes, with one log line.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
