"""What the streaming-avatar clients (LiveAvatar, HeyGen, D-ID) share: their rules from
``data/streaming_avatars.json``, the base URL, the ``{code, data, message}`` success envelope, and
the error a backend raises when the provider says its session is over.

The backends here implement the protocol :class:`~..engine.live.backend.AvatarBackend` that the
engine's :class:`~..engine.live.remote.RemoteSession` drives; the engine never imports them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..engine.data_files import data_section
from ..engine.live.backend import ProviderSessionEnded
from .http import ApiError, HttpClient

RULES_FILE = Path(__file__).resolve().parents[1] / "data" / "streaming_avatars.json"

#: API error codes and messages that mean "this session is over" (the provider closed it, it timed
#: out on the provider's side, or it never existed): the session is stopped, not retried.
_ENDED_HINTS = ("not in correct state", "session not found", "session has ended", "session is closed",
                "session closed", "no active session", "stream not found", "session expired", "unknown session")


def rules(section: str, path: str | Path | None = None) -> dict[str, Any]:
    """A copy of one section of ``data/streaming_avatars.json`` ("session", "liveavatar", "heygen", "did")."""
    return data_section(path or RULES_FILE, section, "streaming-avatar settings")


def base_url(section: dict, given: str | None) -> str:
    """``given``, else the environment variable the section names, else the provider's public URL."""
    return (given or os.environ.get(section["base_url_env"], "").strip() or section["base_url"]).rstrip("/")


def envelope_data(client: HttpClient, body: Any, where: str, success_codes: list[int]) -> Any:
    """``body["data"]`` of a ``{code, data, message}`` answer whose ``code`` means success (or that has
    no code); any other code is an :class:`ApiError` with the provider's message (some APIs answer
    200 with an error code in the envelope)."""
    if not isinstance(body, dict):
        raise ApiError(client.service, 200, f"{where}: the answer is not a JSON object")
    code = body.get("code")
    if code is not None and code not in success_codes and str(code).upper() != "SUCCESS":
        data = body.get("data")
        msg = body.get("message") or (data.get("message") if isinstance(data, dict) else None) or "request failed"
        raise ApiError(client.service, 200, f"{where}: {client.redact(msg)}", code=str(code))
    if body.get("error"):
        raise ApiError(client.service, 200, f"{where}: {client.redact(body['error'])}")
    return body.get("data")


def ended_error(exc: BaseException) -> bool:
    """Whether an :class:`ApiError` says the provider's session is over (not a passing network fault)."""
    if not isinstance(exc, ApiError):
        return False
    text = f"{exc.api_message} {exc.code or ''}".lower()
    return exc.status in (404, 410) or any(h in text for h in _ENDED_HINTS)


def as_ended(exc: ApiError, provider: str) -> ProviderSessionEnded:
    return ProviderSessionEnded(f"{provider} ended the session: {exc.api_message}")
