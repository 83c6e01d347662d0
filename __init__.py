"""ComfyUI-DigitalHuman: nodes for AI digital humans (avatar, motion, lip sync, real time).

Importing the pack is cheap: no model is loaded and nothing is downloaded here. Each module in
``nodes/`` is imported on its own; one that fails (a missing optional dependency) disables only
its nodes, with one log line. The live panel's routes are added to ComfyUI's server here too
(``server/``); WebRTC (aiortc) is imported only when a browser connects.
"""
import logging

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

try:
    from .server import register as _register_routes

    _register_routes()
except Exception as _exc:  # the nodes still work without the panel
    logging.getLogger("DigitalHuman").warning("[DigitalHuman] live panel routes disabled: %s", _exc)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
