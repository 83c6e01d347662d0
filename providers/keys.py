"""API keys: from an environment variable or a key file in ComfyUI's user directory.

Why not a node widget: widget values are saved into workflow JSON, PNG metadata and history,
so a key typed there would leak with every shared image. The key file lives outside the pack:
``<ComfyUI user dir>/digitalhuman/keys.json``, e.g. ``{"OPENAI_API_KEY": "sk-..."}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

KEY_FILE = "keys.json"
PACK_DIR = "digitalhuman"


class MissingKeyError(RuntimeError):
    """No key was found; the message says where to put one."""


def comfy_user_dir() -> Path | None:
    """ComfyUI's user directory when running inside ComfyUI (old and new versions), else None."""
    try:
        import folder_paths  # only present inside ComfyUI
    except ImportError:
        return None
    getter = getattr(folder_paths, "get_user_directory", None)
    d = getter() if callable(getter) else getattr(folder_paths, "user_directory", None)
    return Path(d) if d else None


def pack_user_dir(user_dir: str | os.PathLike | None = None) -> Path | None:
    """The pack's folder in the user directory: ``<user dir>/digitalhuman`` (explicit dir wins)."""
    base = Path(user_dir) if user_dir is not None else comfy_user_dir()
    return base / PACK_DIR if base is not None else None


def get_api_key(env_var: str, user_dir: str | os.PathLike | None = None, service: str | None = None) -> str:
    """The key named ``env_var`` from the environment, else from the key file; clear error if neither."""
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    folder = pack_user_dir(user_dir)
    path = folder / KEY_FILE if folder is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MissingKeyError(f"key file {path} is not valid JSON ({type(exc).__name__} at {getattr(exc, 'lineno', '?')}:{getattr(exc, 'colno', '?')}); "
                                  f"expected an object like {{\"{env_var}\": \"...\"}}") from None
        if not isinstance(data, dict):
            raise MissingKeyError(f"key file {path} must hold a JSON object like {{\"{env_var}\": \"...\"}}")
        value = str(data.get(env_var) or data.get(env_var.lower()) or "").strip()
        if value:
            return value
    where = str(path) if path is not None else f"<ComfyUI user directory>/{PACK_DIR}/{KEY_FILE}"
    name = service or env_var
    raise MissingKeyError(
        f"no API key for {name}: set the environment variable {env_var} before starting ComfyUI, "
        f"or put {{\"{env_var}\": \"<your key>\"}} into {where}. Keys are never taken from node inputs."
    )


def is_local_url(url: str) -> bool:
    """True when ``url`` points at this machine or a private network (a self-hosted Ollama, vLLM or
    llama.cpp server), where an API key is usually not needed."""
    import ipaddress
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").strip("[]").lower()
    if host in ("localhost", "") or host.endswith((".local", ".localhost", ".internal", ".lan")):
        return bool(host)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def optional_api_key(env_var: str, base_url: str, user_dir: str | os.PathLike | None = None,
                     service: str | None = None) -> str | None:
    """The key as :func:`get_api_key` finds it; for a local or private ``base_url`` a missing key is
    None (no Authorization header is sent) instead of an error."""
    try:
        return get_api_key(env_var, user_dir, service)
    except MissingKeyError:
        if is_local_url(base_url):
            return None
        raise
