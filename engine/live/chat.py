"""The chat-model protocol a live session answers through, and the conversation it sends.

Any object with ``name`` and ``stream(messages, *, check_interrupt) -> Iterator[str]`` (text
deltas as the model writes them) is a chat model; ``providers/chat.py`` has the OpenAI-compatible
one (OpenAI, Ollama, vLLM, llama.cpp). Optional attributes ``system_prompt`` and ``knowledge``
go in front of the conversation.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol, runtime_checkable


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def stream(self, messages: list[dict], *, check_interrupt: Callable[[], None] | None = None) -> Iterator[str]:
        ...


def build_messages(system_prompt: str, knowledge: str, history: list[tuple[str, str]], user: str,
                   knowledge_header: str = "Answer using this knowledge where it applies:") -> list[dict]:
    """The conversation sent to the model: the system prompt (and the knowledge text under a header),
    the past exchanges ``(user, what the avatar said)``, then the new message."""
    system = (system_prompt or "").strip()
    if (knowledge or "").strip():
        system = (system + "\n\n" if system else "") + f"{knowledge_header}\n{knowledge.strip()}"
    msgs: list[dict] = [{"role": "system", "content": system}] if system else []
    for u, a in history:
        msgs.append({"role": "user", "content": u})
        if a:
            msgs.append({"role": "assistant", "content": a})
    msgs.append({"role": "user", "content": user})
    return msgs
