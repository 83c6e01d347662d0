"""The API voices as streaming voices (``engine.speech.voice.StreamingVoice``) for live sessions.

Each adapter checks its options and finds its key when it is made (so a node fails at once, with
the provider's message, rather than at the first word), and then keeps one HTTP client per
thread: a live session speaks from its own voice thread, and a kept client reuses its connection
(no new TLS handshake per sentence). The session's interrupt check is handed to the client for the
duration of each request, so Stop closes a running request within one poll interval (0.1 s).
"""
from __future__ import annotations

import threading
from typing import Callable, Iterator

from ..engine.speech.types import SpeechChunk
from . import elevenlabs as el
from . import openai_speech as oas
from .keys import optional_api_key


class _PerThreadClient:
    """One client per calling thread, made by ``make()``."""

    def __init__(self, make: Callable[[], object]):
        self._make = make
        self._local = threading.local()

    def get(self):
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self._make()
        return c


class _ApiStreamingVoice:
    """What both API voices share: a sentence streamed by this thread's client, its cost added up.
    Subclasses set ``_clients`` (a :class:`_PerThreadClient`), ``opts``, ``sample_rate`` and ``name``."""

    _clients: _PerThreadClient
    opts: object

    def __init__(self) -> None:
        self.cost_usd = 0.0
        self._lock = threading.Lock()

    def stream(self, text: str, *, check_interrupt: Callable[[], None] | None = None) -> Iterator[SpeechChunk]:
        client = self._clients.get()
        client.check_interrupt = check_interrupt
        st = client.stream(text, self.opts, split="fill", pauses=True)
        try:
            yield from st
        finally:
            with self._lock:
                self.cost_usd += float(st.cost_usd)
            client.check_interrupt = None

    def __repr__(self) -> str:  # never the client (its headers hold the key)
        return f"<{type(self).__name__} {self.name}>"


class OpenAIStreamingVoice(_ApiStreamingVoice):
    """OpenAI's speech endpoint (or an OpenAI-compatible speech server at ``base_url``), raw 24 kHz PCM
    streamed as it is made. A local server needs no key."""

    sample_rate = 24000

    def __init__(self, model: str = "gpt-4o-mini-tts", voice: str = "coral", *, speed: float = 1.0,
                 instructions: str = "", base_url: str = "", user_dir: str | None = None):
        import os

        url = (base_url or "").strip() or os.environ.get("OPENAI_BASE_URL", "").strip() or oas.DEFAULT_BASE_URL
        key = optional_api_key("OPENAI_API_KEY", url, user_dir, service="OpenAI")

        def make():
            c = oas.OpenAISpeech(key or "-", url)
            if key is None:  # a local server: no Authorization header at all
                c.session.headers.pop("Authorization", None)
            return c

        self._clients = _PerThreadClient(make)
        first = self._clients.get()
        self.opts = first.check_options(oas.OpenAISpeechOptions(model=model, voice=voice, response_format="pcm",
                                                                speed=speed, instructions=instructions))
        self.sample_rate = int(first.rules["pcm_sample_rate"])
        self.name = f"OpenAI {self.opts.model} ({self.opts.voice})"
        super().__init__()

class ElevenLabsStreamingVoice(_ApiStreamingVoice):
    """ElevenLabs' ``/stream`` endpoint with a ``pcm_<rate>`` output format."""

    def __init__(self, voice_id: str = "JBFqnCBsd6RMkjVDRZzb", model_id: str = "eleven_multilingual_v2", *,
                 output_format: str = "pcm_24000", language_code: str = "", speed: float | None = None,
                 user_dir: str | None = None):
        kind, rate = el.parse_output_format(output_format)
        if kind != "pcm":
            raise ValueError(f"a live voice needs a pcm_<rate> output format, got '{output_format}'")
        self._clients = _PerThreadClient(lambda: el.ElevenLabs(user_dir=user_dir))
        first = self._clients.get()
        settings = el.VoiceSettings(speed=speed) if speed is not None else None
        opts = first.check_options(el.ElevenLabsOptions(voice_id=voice_id, model_id=model_id, output_format=output_format,
                                                        voice_settings=settings, language_code=language_code))
        self.opts = opts
        self.sample_rate = rate
        self.name = f"ElevenLabs {model_id} ({voice_id})"
        super().__init__()
