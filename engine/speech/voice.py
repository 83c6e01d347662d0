"""The streaming-voice protocol a live session speaks through, whatever the voice is.

Why a protocol and not a base class: the voices live in different layers (CosyVoice in the
engine, the API voices in ``providers/``), and the live session (``engine/live``) must not import
providers. Anything with a ``name``, a ``sample_rate`` and a ``stream`` method of this shape is a
voice: ``stream(text)`` yields :class:`~.types.SpeechChunk` s of mono float32 at ``sample_rate``
as they are made, polls ``check_interrupt`` while it waits (so a Stop ends a request within one
poll interval), and raises a clear error (naming the voice) when it cannot speak.

``cost_usd`` is the running estimated cost of everything the voice has spoken (0 for local
voices), for the session's statistics.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol, runtime_checkable

from .types import SpeechChunk

Interrupt = Callable[[], None]


@runtime_checkable
class StreamingVoice(Protocol):
    """A voice that speaks a text as a stream of chunks (see the module docstring)."""

    name: str
    sample_rate: int
    cost_usd: float

    def stream(self, text: str, *, check_interrupt: Interrupt | None = None) -> Iterator[SpeechChunk]:
        ...


def check_voice(voice: object, where: str = "voice") -> StreamingVoice:
    """``voice`` if it follows the protocol, else a clear error naming what is missing."""
    missing = [a for a in ("name", "sample_rate", "stream") if not hasattr(voice, a)]
    if missing:
        raise TypeError(f"{where}: {type(voice).__name__} is not a streaming voice (no {', '.join(missing)})")
    rate = getattr(voice, "sample_rate")
    if not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{where}: sample rate must be a positive integer, got {rate!r}")
    if not hasattr(voice, "cost_usd"):
        try:
            setattr(voice, "cost_usd", 0.0)
        except AttributeError:
            pass
    return voice  # type: ignore[return-value]
