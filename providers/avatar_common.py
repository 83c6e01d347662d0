"""What the streaming-avatar clients (LiveAvatar, HeyGen, D-ID) share: their rules from
``data/streaming_avatars.json``, the base URL, the ``{code, data, message}`` success envelope, the
error a backend raises when the provider says its session is over, what to do about a refused
call, and the backends' common state (:class:`ProviderBackend`).

The backends here implement the protocol :class:`~..engine.live.backend.AvatarBackend` that the
engine's :class:`~..engine.live.remote.RemoteSession` drives; the engine never imports them.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

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


def explain(exc: ApiError, key_env: str) -> ApiError:
    """``exc`` with what to do about it: a refused key, no credits, an unknown avatar."""
    text = exc.api_message
    low = f"{text} {exc.code or ''}".lower()
    if exc.status in (401, 403) and "credit" not in low:
        hint = f" - the key was refused: check {key_env} (or its entry in the key file)"
    elif exc.status == 402 or "credit" in low or "quota" in low or "balance" in low:
        hint = " - the account has no credits left for a session: top up, or try the sandbox avatar"
    elif "avatar" in low and (exc.status in (400, 404, 422) or "not found" in low):
        hint = " - no such avatar: the List Avatars node lists yours and the public ones"
    else:
        hint = ""
    return ApiError(exc.service, exc.status, text + hint, err_type=exc.err_type, code=exc.code, url=exc.url,
                    attempts=exc.attempts, request_id=exc.request_id)


class ProviderBackend:
    """What each streaming-avatar backend holds before its own state: its section of the rules
    (``provider`` names it), the callbacks :class:`~..engine.live.remote.RemoteSession` binds, and
    the lock that orders its calls from the session and the pages."""

    provider = ""

    def __init__(self) -> None:
        self.rules = rules(self.provider)
        self.emit: Callable[..., int] = lambda *a, **k: 0
        self.ended: Callable[[str], None] = lambda why: None
        self._lock = threading.Lock()

    def bind(self, emit: Callable[..., int], ended: Callable[[str], None]) -> None:
        self.emit, self.ended = emit, ended

    def explained(self, exc: ApiError) -> ApiError:
        """``exc`` with what to do about it, naming this provider's key variable."""
        return explain(exc, self.rules["key_env"])
