"""Routes the pack adds to ComfyUI's own server (real time: the live panel). Thin adapters over the
engine's session objects; see ``live_routes.py``."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("DigitalHuman")

_ROUTES = None


def register() -> bool:
    """Add the live routes to ComfyUI's running server (``PromptServer.instance.routes``); False when
    this process has no ComfyUI server (a script, a test), which is not an error."""
    global _ROUTES
    srv = sys.modules.get("server")  # ComfyUI's server module, imported by ComfyUI before custom nodes
    prompt_server = getattr(getattr(srv, "PromptServer", None), "instance", None)
    if prompt_server is None or _ROUTES is not None:
        return False
    from .live_routes import LiveRoutes

    _ROUTES = LiveRoutes()
    for r in _ROUTES.table():
        prompt_server.routes.route(r.method, r.path)(r.handler)
    return True
