"""An OpenAI-compatible chat-completions client with streamed answers (OpenAI, Ollama, vLLM, llama.cpp).

Contract followed (OpenAI API reference "Create chat completion", read 2026-06; Ollama, vLLM and
llama.cpp's server implement the same route): ``POST {base_url}/chat/completions`` with JSON
``{model, messages: [{role, content}], stream: true, temperature?, max_tokens?}``; the streamed
answer is server-sent events ``data: {"choices": [{"index": 0, "delta": {"content": "..."},
"finish_reason": null}]}``, ended by ``data: [DONE]``; a chunk may carry no choices (usage only) or
a delta without content (the role); errors are ``{"error": {message, type, code}}`` before the
stream starts, or an ``error`` object in an event once it has.

On the shared HTTP base: timeouts, retries honouring Retry-After on 429/5xx before the answer
starts (never once tokens have arrived: they were generated and paid for), Cancel/Stop polled
while waiting, a stalled stream reported after the read timeout, keys redacted. The key comes
from the environment variable or key-file entry ``key_name`` (``OPENAI_API_KEY`` by default); for
a base URL on this machine or a private network no key is needed.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator

from .http import ApiError, HttpClient, RetryPolicy
from .keys import optional_api_key
from ..engine.live.chat import build_messages  # noqa: F401  (re-exported for callers of the provider)
from .speech_base import iter_body, iter_sse

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True)
class ChatSettings:
    """What a chat model is asked with (besides the messages)."""

    model: str = "gpt-4o-mini"
    temperature: float = 0.7
    max_tokens: int = 400


class OpenAICompatibleChat:
    """A chat model behind an OpenAI-compatible endpoint; ``stream(messages)`` yields text deltas.

    One HTTP client per calling thread (a live session asks from its own thread; the connection is
    kept between answers). ``system_prompt`` and ``knowledge`` travel with it, for the session to
    put in front of the conversation.
    """

    def __init__(self, base_url: str = "", settings: ChatSettings = ChatSettings(), *, key_name: str = "OPENAI_API_KEY",
                 system_prompt: str = "", knowledge: str = "", user_dir: str | None = None,
                 read_timeout_s: float = 30.0, retry: RetryPolicy | None = None):
        import threading

        url = (base_url or "").strip() or os.environ.get("DH_CHAT_BASE_URL", "").strip() or DEFAULT_BASE_URL
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"chat base URL must start with http:// or https://, got '{url}'")
        if not KEY_NAME.match(key_name or ""):
            raise ValueError(f"key_name must be the NAME of an environment variable or key-file entry "
                             f"(capitals, digits, _), got '{key_name}' - never the key itself")
        if not (settings.model or "").strip():
            raise ValueError("chat model: give a model name (e.g. gpt-4o-mini, or llama3.2 for Ollama)")
        if not 0.0 <= float(settings.temperature) <= 2.0:
            raise ValueError(f"temperature must be between 0 and 2, got {settings.temperature}")
        if int(settings.max_tokens) < 1:
            raise ValueError(f"max_tokens must be at least 1, got {settings.max_tokens}")
        self.base_url = url.rstrip("/")
        self.settings = settings
        self.system_prompt = system_prompt or ""
        self.knowledge = knowledge or ""
        self._key = optional_api_key(key_name, url, user_dir, service=f"the chat endpoint {self.base_url}")
        self._read_timeout_s = float(read_timeout_s)
        self._retry = retry
        self._local = threading.local()
        self.name = f"{settings.model} at {_public_url(self.base_url)}"

    def _client(self) -> HttpClient:
        c = getattr(self._local, "client", None)
        if c is None:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            c = HttpClient(self.base_url, headers=headers, secrets=[self._key] if self._key else [],
                           read_timeout_s=self._read_timeout_s, retry=self._retry)
            c.service = "Chat"
            self._local.client = c
        return c

    def body(self, messages: list[dict]) -> dict:
        s = self.settings
        return {"model": s.model, "messages": messages, "stream": True, "temperature": float(s.temperature),
                "max_tokens": int(s.max_tokens)}

    def stream(self, messages: list[dict], *, check_interrupt: Callable[[], None] | None = None) -> Iterator[str]:
        """Text deltas of the answer as they arrive; ApiError (status, the server's message) on failure."""
        client = self._client()
        client.check_interrupt = check_interrupt
        url = f"{self.base_url}/chat/completions"
        try:
            resp = client.request("POST", "chat/completions", json_body=self.body(messages), expect_json=False, stream=True)
            with closing(resp):
                ctype = resp.headers.get("Content-Type", "")
                if ctype.startswith("application/json"):  # a server that ignored stream=true
                    yield from _whole_answer(client, resp, url)
                    return
                got_event = False
                try:
                    for ev in iter_sse(iter_body(client, resp, url)):
                        got_event = True
                        if "error" in ev:
                            err = ev["error"]
                            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                            raise ApiError(client.service, 0, client.redact(msg), url=url)
                        choices = ev.get("choices")
                        if choices is None:
                            raise ApiError(client.service, resp.status_code,
                                           "the answer is not a chat-completions stream (an event without 'choices': "
                                           + client.redact(json.dumps(ev)[:120]) + ")", url=url)
                        for ch in choices if isinstance(choices, list) else []:
                            delta = ch.get("delta") if isinstance(ch, dict) else None
                            text = delta.get("content") if isinstance(delta, dict) else None
                            if isinstance(text, str) and text:
                                yield text
                except ApiError as exc:
                    if exc.status == 0 and "audio stream" in exc.api_message:  # iter_body speaks of audio
                        raise ApiError(client.service, 0, exc.api_message.replace("the audio stream", "the answer stream"),
                                       url=url) from None
                    raise
                except ValueError as exc:  # an event that is not JSON
                    raise ApiError(client.service, resp.status_code,
                                   f"the answer is not a chat-completions stream: {client.redact(exc)}", url=url) from None
                if not got_event:
                    raise ApiError(client.service, resp.status_code,
                                   f"the answer held no server-sent events (Content-Type '{ctype or 'none'}'); is "
                                   f"{self.base_url} an OpenAI-compatible endpoint?", url=url)
        finally:
            client.check_interrupt = None

    def __repr__(self) -> str:
        return f"<OpenAICompatibleChat {self.name}>"


def _whole_answer(client: HttpClient, resp, url: str) -> Iterator[str]:
    try:
        body = resp.json()
        text = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ApiError(client.service, resp.status_code, "the answer is JSON but not a chat completion: "
                       + client.redact((resp.text or "")[:200]), url=url) from None
    if text:
        yield str(text)


def _public_url(url: str) -> str:
    """``url`` without any user:password part (never shown to a browser or a log)."""
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))
