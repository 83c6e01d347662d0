"""API keys: from an environment variable or a key file in ComfyUI's user directory.

Why not a node widget: widget values are saved into workflow JSON, PNG metadata and history,
so a key typed there would leak with every shared image. The key file lives outside the pack:
``<ComfyUI user dir>/digitalhuman/keys.json``, e.g. ``{"OPENAI_API_KEY": "sk-..."}``.
"""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

KEY_FILE = "keys.json"
PACK_DIR = "digitalhuman"


class ApiKeyError(RuntimeError):
    """A key could not be used; the message says where it was read, never what it is."""


class MissingKeyError(ApiKeyError):
    """No key was found; the message says where to put one."""


class InvalidKeyError(ApiKeyError):
    """A key holds characters no API key has (a copy-paste slip); the message names the source only."""


def _describe(ch: str) -> str:
    """Words for a character that cannot be in a key (never the key around it)."""
    if ch in "\r\n":
        return "a line break"
    if ch == "\t":
        return "a tab"
    if ch == " ":
        return "a space"
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"a control character (U+{ord(ch):04X})"
    name = unicodedata.name(ch, "")
    return f"a non-ASCII character (U+{ord(ch):04X}{' ' + name if name else ''})"


def clean_key(value: str, source: str) -> str:
    """``value`` without surrounding whitespace; :class:`InvalidKeyError` naming ``source`` if a character
    inside is not printable ASCII.

    Why here: a line break inside a key makes the HTTP library raise with ``Bearer <key>`` in its
    text, and a zero-width space gives a bare codec error; checked where the key is read, the user
    learns which variable or file to fix and the key never reaches a header.
    """
    key = value.strip()
    for i, ch in enumerate(key):
        if not "!" <= ch <= "~":
            raise InvalidKeyError(
                f"the API key in {source} contains {_describe(ch)} at character {i + 1} of {len(key)}, which no API key "
                "holds (a copy-paste slip?); copy the key again without it. The key itself is not shown.")
    return key


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
    """The key named ``env_var`` from the environment, else from the key file; clear error if neither.

    Surrounding whitespace is dropped; any other character that is not printable ASCII is an
    :class:`InvalidKeyError` naming the variable or the file (a bad variable is not silently
    replaced by the file's key: the user would never learn that the variable is broken).
    """
    raw = os.environ.get(env_var, "")
    if raw.strip():
        return clean_key(raw, f"the environment variable {env_var}")
    folder = pack_user_dir(user_dir)
    path = folder / KEY_FILE if folder is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:
            raise MissingKeyError(f"key file {path} is not valid JSON ({type(exc).__name__} at {getattr(exc, 'lineno', '?')}:{getattr(exc, 'colno', '?')}); "
                                  f"expected an object like {{\"{env_var}\": \"...\"}}") from None
        if not isinstance(data, dict):
            raise MissingKeyError(f"key file {path} must hold a JSON object like {{\"{env_var}\": \"...\"}}")
        name = env_var if data.get(env_var) else env_var.lower()
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidKeyError(f"the entry \"{name}\" of the key file {path} must be a string (the key in quotes), "
                                  f"not a JSON {type(value).__name__}")
        if value and value.strip():
            return clean_key(value, f"the entry \"{name}\" of the key file {path}")
    where = str(path) if path is not None else f"<ComfyUI user directory>/{PACK_DIR}/{KEY_FILE}"
    name = service or env_var
    raise MissingKeyError(
        f"no API key for {name}: set the environment variable {env_var} before starting ComfyUI, "
        f"or put {{\"{env_var}\": \"<your key>\"}} into {where}. Keys are never taken from node inputs."
    )


def resolve_api_key(api_key: str | None, env_var: str, user_dir: str | os.PathLike | None = None,
                    service: str | None = None) -> str:
    """The key a client uses: ``api_key`` when given (cleaned like the others), else :func:`get_api_key`."""
    if api_key:
        return clean_key(api_key, "the api_key argument")
    return get_api_key(env_var, user_dir, service=service)


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
