"""The protocol a commercial avatar's backend follows, so one engine session drives them all.

A backend (LiveAvatar FULL or LITE, HeyGen's legacy streaming, D-ID Talks Streams; in
``providers/``) talks to its provider; :class:`~.remote.RemoteSession` (the panel session) owns the
life around it: the cost clock and the length cap, keep-alives, the pages that watch it, the
queue of things to say, and stopping for every reason. The engine never imports a provider; it
only calls what this protocol names.

Every call that waits on the network takes ``check``, a function that raises when the work must
stop (Cancel, a Stop or a new message); backends pass it to their HTTP clients, which poll it.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np

Check = Callable[[], None]
Emit = Callable[..., int]


class ProviderSessionEnded(RuntimeError):
    """The provider says the session is over (it timed out there, was closed there, or ran out of
    credits); the message says which. The session is stopped and its cost reported, not retried."""


class NeedsPage(RuntimeError):
    """The command travels through the page's media connection (LiveAvatar FULL mode's LiveKit data
    channel) and no page has joined the room."""


@runtime_checkable
class AvatarBackend(Protocol):
    """What :class:`~.remote.RemoteSession` calls (see the module docstring).

    ``provider`` names the row of the price table; ``label`` is what the panel shows (e.g.
    "LiveAvatar FULL"); ``transport`` tells the page how to get the media ("livekit": join a LiveKit
    room; "did-webrtc": answer the provider's WebRTC offer); ``modes`` what the panel's text box may
    do ("repeat", "chat", "audio"); ``audio_in`` whether the provider lip-syncs our audio
    (:meth:`speak_pcm`) rather than speaking text itself; ``can_interrupt`` whether a Stop reaches it.
    """

    provider: str
    label: str
    transport: str
    modes: tuple[str, ...]
    audio_in: bool
    can_interrupt: bool
    keep_alive_s: float

    def bind(self, emit: Emit, ended: Callable[[str], None]) -> None:
        """``emit(type, **data)`` adds an event for the panel; ``ended(why)`` tells the session the
        provider closed it (a socket's close, a page's report)."""

    def open(self, check: Check) -> dict:
        """Start the provider's session (mint its short-lived token, start it); returns facts for the
        status (avatar, quality, provider session id): never a key or a token."""

    def page_join(self, viewer: str, check: Check) -> dict:
        """What the page ``viewer`` needs to show the media (a LiveKit URL and client token, or a WebRTC
        offer and ICE servers): short-lived, scoped to this session, never the API key."""

    def page_step(self, step: str, body: dict, check: Check) -> dict:
        """A step the page reports or asks for (a WebRTC answer or ICE candidate, a data-channel event);
        ``body["viewer"]`` says which page (a step of a page whose media were replaced is ignored)."""

    def speak_text(self, text: str, mode: str, check: Check) -> dict:
        """Have the avatar say ``text`` (mode "repeat") or answer it (mode "chat"); returns
        ``{"speech_s": seconds or None}`` when the provider says how long it speaks."""

    def speak_pcm(self, chunks: Iterator[tuple[np.ndarray, int]], check: Check) -> dict:
        """Lip-sync our own audio: mono float chunks with their sample rate, as they are made."""

    def interrupt(self, check: Check) -> None:
        """Stop the avatar mid-sentence and drop what is queued."""

    def keep_alive(self, check: Check) -> None:
        """Reset the provider's idle timer; raises :class:`ProviderSessionEnded` when it is gone."""

    def cost(self, seconds: float, speech_seconds: float) -> tuple[float, str, bool]:
        """(USD, basis, estimated) of a session that ran ``seconds`` and spoke ``speech_seconds``."""

    def close(self, reason: str) -> None:
        """Stop the provider's session (best effort, bounded in time; never raises)."""


def describe(exc: BaseException) -> str:
    """A one-line reason for the panel and the log (the exception's own text; providers' texts are redacted)."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def jsonable(info: Any) -> Any:
    """``info`` with anything that is not JSON (numpy scalars, tuples) made plain, for status answers."""
    if isinstance(info, dict):
        return {str(k): jsonable(v) for k, v in info.items()}
    if isinstance(info, (list, tuple)):
        return [jsonable(v) for v in info]
    if isinstance(info, np.generic):
        return info.item()
    return info
