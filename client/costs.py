"""Estimated cost of a prompt from its paid API nodes, priced by the pack's table (data/prices.json).

Local steps (FLUX, LivePortrait, MuseTalk, ...) cost nothing here; OpenAI images, OpenAI speech and
ElevenLabs speech are priced with the same functions their nodes use. Speech priced per minute
(gpt-4o-mini-tts without token usage) needs the audio length, which the caller gives from the
finished video. An estimate for planning, not an invoice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..providers import prices


@dataclass
class CostEstimate:
    usd: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def basis(self) -> str:
        return "; ".join(self.lines) if self.lines else "local steps only: no API cost"


def _literal(node: dict, name: str, default=None):
    value = (node.get("inputs") or {}).get(name, default)
    return None if isinstance(value, list) else value


def estimate(prompt: dict, audio_seconds: float | None = None) -> CostEstimate:
    """Sum of the API nodes' estimated costs in ``prompt``."""
    est = CostEstimate()
    for node_id, node in prompt.items():
        ctype = node.get("class_type")
        if ctype == "DH_OpenAIImage":
            model = _literal(node, "model", "gpt-image-2")
            quality, size, count = _literal(node, "quality", "medium"), _literal(node, "size", "1024x1024"), _literal(node, "count", 1)
            usd = prices.image_cost(model, quality, size, int(count or 1))
            est.lines.append(f"OpenAI image {model} {quality} {size} x{count}: ${usd:.4f}")
        elif ctype in ("DH_OpenAISpeech", "DH_ElevenLabsSpeech"):
            text = _literal(node, "text")
            if not isinstance(text, str):
                est.lines.append(f"node {node_id} ({ctype}): text comes from another node, not priced")
                continue
            if ctype == "DH_OpenAISpeech":
                model = _literal(node, "model", "gpt-4o-mini-tts")
                p = prices.openai_speech_cost(model, len(text), float(audio_seconds or 0.0))
                label = f"OpenAI speech {model}"
            else:
                model = _literal(node, "model", "eleven_multilingual_v2")
                p = prices.elevenlabs_speech_cost(model, len(text))
                label = f"ElevenLabs speech {model}"
            usd = p.usd
            est.lines.append(f"{label}, {len(text)} characters ({p.basis}): ${usd:.4f}")
        else:
            continue
        est.usd = round(est.usd + float(usd), 9)
    return est
