"""Speech tokens -> waveform, whole or in streaming hops, as CosyVoice 2's runtime does it.

Why this is its own module: the schedule decides what the listener hears first, and it must
follow the reference (``CosyVoice2Model.tts`` / ``token2wav`` in ``cosyvoice/cli/model.py``):

- Non-streamed: all tokens go through the flow once (full attention, ``finalize``), then HiFT;
  ``speed`` stretches the mel by linear interpolation before the vocoder.
- Streamed: the first hop is ``token_hop_len`` (25) tokens plus the padding that makes the
  prompt and the first hop fill whole chunks, each later hop doubles (``stream_scale_factor``)
  up to ``token_max_hop_len`` (100). A hop is decoded once ``pre_lookahead_len`` (3) further
  tokens exist, which the flow uses as right context only. Every flow call sees all tokens so
  far (streaming chunk masks) and the new mel frames are cut from its output; the vocoder gets
  the last ``mel_cache_len`` mel frames of the previous hop in front, continues its source
  signal from the cached ``source_cache_len`` samples, and the overlap is cross-faded with a
  Hamming window. The last call (whatever tokens remain) runs the flow without streaming masks,
  as the reference's final ``token2wav`` does.

One difference, on purpose: the reference keeps the grown hop length on the model object, so
its second and later utterances start at 100 tokens; here every utterance starts at 25 (the
first-call behaviour), so each answer's first audio comes as early as the first one's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

import math

import torch
import torch.nn.functional as F

InterruptFn = Callable[[], None]


class FlowLike(Protocol):
    pre_lookahead_len: int
    token_mel_ratio: int

    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, streaming: bool, finalize: bool) -> torch.Tensor: ...


class VocoderLike(Protocol):
    def inference(self, mel: torch.Tensor, cache_source: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class StreamSchedule:
    """The streaming constants (``streaming`` section of cosyvoice2.json)."""

    token_hop_len: int
    token_max_hop_len: int
    stream_scale_factor: int
    mel_cache_len: int
    source_cache_len: int

    @classmethod
    def from_config(cls, cfg: dict) -> "StreamSchedule":
        s = cfg["streaming"]
        return cls(int(s["token_hop_len"]), int(s["token_max_hop_len"]), int(s["stream_scale_factor"]),
                   int(s["mel_cache_len"]), int(s["source_cache_len"]))


@dataclass(frozen=True)
class FlowPrompt:
    """What the flow needs of the voice: its speech tokens [1, S], mel [1, 2S, 80], x-vector [1, 192]."""

    tokens: torch.Tensor
    feat: torch.Tensor
    embedding: torch.Tensor


def hamming(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``numpy.hamming(n)`` in float64 (the reference multiplies by a float64 NumPy window)."""
    if n == 1:
        return torch.ones(1, dtype=torch.float64, device=device)
    k = torch.arange(n, dtype=torch.float64, device=device)
    return 0.54 - 0.46 * torch.cos(2.0 * math.pi * k / (n - 1))


def fade_in_out(fade_in: torch.Tensor, fade_out: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Cross-fade the head of ``fade_in`` with the tail of ``fade_out`` (reference ``fade_in_out``):
    computed in float64 like the reference's NumPy window product, stored back in the input dtype."""
    half = window.shape[0] // 2
    out = fade_in.clone()
    head = fade_in[..., :half].to(torch.float64) * window[:half] + fade_out[..., -half:].to(torch.float64) * window[half:]
    out[..., :half] = head.to(out.dtype)
    return out


@dataclass
class _HiftCache:
    mel: torch.Tensor
    source: torch.Tensor
    speech: torch.Tensor


@dataclass
class Token2Wav:
    """Per-utterance state of the token -> waveform conversion (one object per utterance)."""

    flow: FlowLike
    hift: VocoderLike
    prompt: FlowPrompt
    schedule: StreamSchedule
    generator: torch.Generator | None = None  # the vocoder's noise (None: torch's global generator)
    cache: _HiftCache | None = field(default=None, init=False)

    def _window(self, device) -> torch.Tensor:
        return hamming(2 * self.schedule.source_cache_len, device)

    def decode(self, tokens: torch.Tensor, token_offset: int, streaming: bool, finalize: bool,
               speed: float = 1.0) -> torch.Tensor:
        """Audio [1, N] for ``tokens`` (all tokens so far, [1, T]) from ``token_offset`` on."""
        mel = self.flow.inference(tokens, self.prompt.tokens, self.prompt.feat, self.prompt.embedding,
                                  streaming=streaming, finalize=finalize)
        mel = mel[:, :, token_offset * int(self.flow.token_mel_ratio):]
        if self.cache is not None:
            mel = torch.cat([self.cache.mel, mel], dim=2)
            cache_source = self.cache.source
        else:
            cache_source = torch.zeros(1, 1, 0, dtype=mel.dtype, device=mel.device)
        if not finalize:
            speech, source = self.hift.inference(mel, cache_source, generator=self.generator)
            if self.cache is not None:
                speech = fade_in_out(speech, self.cache.speech, self._window(speech.device))
            n = self.schedule.source_cache_len
            self.cache = _HiftCache(mel=mel[:, :, -self.schedule.mel_cache_len:], source=source[:, :, -n:],
                                    speech=speech[:, -n:])
            return speech[:, :-n]
        if speed != 1.0:
            if self.cache is not None:
                raise ValueError("speed can only be changed without streaming")
            mel = F.interpolate(mel, size=int(mel.shape[2] / speed), mode="linear")
        speech, _ = self.hift.inference(mel, cache_source, generator=self.generator)
        if self.cache is not None:
            speech = fade_in_out(speech, self.cache.speech, self._window(speech.device))
        return speech


def _as_batch(tokens: list[int], device) -> torch.Tensor:
    return torch.tensor(tokens, dtype=torch.int32, device=device).unsqueeze(0)


def tokens_to_speech(tokens: Iterable[int], conv: Token2Wav, stream: bool, speed: float = 1.0,
                     check_interrupt: InterruptFn | None = None) -> Iterator[torch.Tensor]:
    """Drive ``conv`` from a token iterator (typically the language model's generator).

    Yields audio chunks [1, N] as the reference's ``CosyVoice2Model.tts`` does: one chunk when
    not streaming, else one per hop and a final one. The hop schedule depends only on how many
    tokens exist, never on timing, so streamed output is reproducible.
    """
    device = conv.prompt.tokens.device
    got: list[int] = []
    if not stream:
        for t in tokens:
            got.append(int(t))
            if check_interrupt is not None:
                check_interrupt()
        yield conv.decode(_as_batch(got, device), 0, streaming=False, finalize=True, speed=speed)
        return
    sched = conv.schedule
    lookahead = int(conv.flow.pre_lookahead_len)
    hop = sched.token_hop_len
    prompt_len = int(conv.prompt.tokens.shape[1])
    pad = int(math.ceil(prompt_len / hop) * hop - prompt_len)
    offset = 0
    for t in tokens:
        got.append(int(t))
        if check_interrupt is not None:
            check_interrupt()
        this_hop = hop + pad if offset == 0 else hop
        while len(got) - offset >= this_hop + lookahead:
            yield conv.decode(_as_batch(got[:offset + this_hop + lookahead], device), offset,
                              streaming=True, finalize=False)
            offset += this_hop
            hop = min(sched.token_max_hop_len, hop * sched.stream_scale_factor)
            this_hop = hop
    # the reference's last call: all tokens, finalize, non-streaming masks
    yield conv.decode(_as_batch(got, device), offset, streaming=False, finalize=True)
