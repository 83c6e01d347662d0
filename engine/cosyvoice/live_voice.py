"""CosyVoice 2 as a streaming voice (``engine.speech.voice.StreamingVoice``) for live sessions.

Each text the session hands over (a clause or a sentence) is planned and synthesised with
``speak_pieces(..., SpeakOptions(stream=True))``: speech tokens become audio in the reference's
hops (25 tokens first, then doubling), so the first chunk comes long before the piece ends. The
networks are fetched through ``get_model`` for every text (ComfyUI may have moved them since), and
every step polls the session's interrupt check, so Stop ends the language model's sampling within
one token. Speed must stay 1.0 while streaming (the reference stretches the whole mel).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..speech.types import SpeechChunk
from .pipeline import MODES, SpeakOptions, SpeechInputError, _validate, plan_script, speak_pieces


class CosyVoiceStreamingVoice:
    """A cloned CosyVoice voice that streams (24 kHz)."""

    cost_usd = 0.0

    def __init__(self, get_model: Callable[[], object], voice, *, mode: str = "zero_shot", instruct: str = "",
                 seed: int = 0, normalize: bool = True, name: str = ""):
        self.opts = SpeakOptions(mode=mode, instruct=instruct, speed=1.0, seed=int(seed), stream=True, normalize=normalize)
        _validate(self.opts)
        if mode not in MODES:
            raise SpeechInputError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if mode == "zero_shot" and not getattr(voice, "transcript", ""):
            raise SpeechInputError("voice: zero_shot mode needs the transcript of the reference clip; "
                                   "clone the voice with its transcript, or use cross_lingual mode")
        if mode == "instruct" and not (instruct or "").strip():
            raise SpeechInputError("instruct: instruct mode needs a style instruction, e.g. 'Speak warmly.'")
        self.get_model = get_model
        self.voice = voice
        self.sample_rate = 24000
        label = name or (getattr(voice, "meta", {}) or {}).get("name") or (getattr(voice, "meta", {}) or {}).get("builtin") or "voice"
        self.name = f"CosyVoice 2 ({label}, {mode})"

    def stream(self, text: str, *, check_interrupt: Callable[[], None] | None = None) -> Iterator[SpeechChunk]:
        model = self.get_model()
        self.sample_rate = int(model.sample_rate)
        plan = plan_script(text, model.cfg)
        with torch.inference_mode():
            for chunk in speak_pieces(model, plan, self.voice, self.opts, check_interrupt=check_interrupt):
                yield chunk

    def __repr__(self) -> str:
        return f"<CosyVoiceStreamingVoice {self.name}>"
