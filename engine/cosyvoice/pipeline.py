"""CosyVoice 2 synthesis: a script and a voice in, speech out (whole, or streamed in chunks).

The order of operations is the reference's (``cosyvoice/cli/cosyvoice.py`` CosyVoice2 and
``cli/frontend.py``): the text is normalised and split into pieces of about 60-80 text tokens;
each piece becomes speech tokens through the language model, prompted by the voice, and then
audio through the flow and HiFT (:mod:`.token2wav`). Three modes, as the reference's:

- ``zero_shot``: the language model continues the voice's transcript and speech tokens, so the
  new speech carries the clip's voice and manner (needs the transcript);
- ``cross_lingual``: the language model sees neither (the clip may be in another language than
  the script); only the flow hears the voice;
- ``instruct``: like cross-lingual, with a style instruction ("speak happily", "slower",
  "用四川话说") in the place of the transcript, ended by ``<|endofprompt|>``.

What the pack adds around the reference: a long script is first cut at paragraph and sentence
boundaries (``engine/speech/sentences.py``) so that progress, Cancel and memory work piece by
piece and subtitles show the script's own words; the pieces are joined with the pack's natural
pauses (``data/speech.json``); each piece draws its random numbers from its own generator seeded
from ``seed`` and its position, so the same seed gives the same speech, and an edit in one
paragraph does not change the others.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..speech.join import PieceAudio, assemble, pause_seconds, silence
from ..speech.sentences import Plan, plan_pieces, token_budget
from ..speech.types import SpeechChunk, SpeechResult
from . import features
from .config import load_config
from .token2wav import FlowPrompt, StreamSchedule, Token2Wav, tokens_to_speech
from .voice import Voice

log = logging.getLogger("DigitalHuman.cosyvoice")

MODES = ("zero_shot", "cross_lingual", "instruct")
END_OF_PROMPT = "<|endofprompt|>"
ProgressFn = Callable[[int, int], None]
InterruptFn = Callable[[], None]


class SpeechInputError(ValueError):
    """The text, the voice or the reference clip cannot be used; the message names which."""


class IncompleteSpeech(RuntimeError):
    """Synthesis stopped (an error, or Cancel) after some pieces: ``partial`` holds the speech of the
    pieces finished (None when none was), ``cause`` the original exception."""

    def __init__(self, message: str, partial: SpeechResult | None, cause: BaseException, done: int, total: int):
        super().__init__(message)
        self.partial, self.cause, self.done, self.total = partial, cause, done, total


@dataclass
class CosyVoiceModel:
    """The loaded networks and text front end (what Load CosyVoice gives)."""

    llm: torch.nn.Module
    flow: torch.nn.Module
    hift: torch.nn.Module
    tokenizer: object  # text.QwenTextTokenizer
    frontend: object  # text.TextFrontend
    cfg: dict
    sample_rate: int = 24000

    @property
    def device(self) -> torch.device:
        return next(self.flow.parameters()).device


@dataclass
class CloneReport:
    """What cloning noticed about the clip (shown to the user; not errors)."""

    seconds: float
    warnings: list[str]


# --------------------------------------------------------------------------------- cloning

def check_reference_clip(wave: np.ndarray, sample_rate: int, limits: dict) -> tuple[np.ndarray, list[str]]:
    """Mono float32 of a reference clip, or a :class:`SpeechInputError` for one that cannot give a
    voice (too short, too long, silent); warnings for one that gives a poor voice (clipped)."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise SpeechInputError(f"reference audio: expected [channels, samples], got shape {list(np.shape(wave))}")
    if sample_rate <= 0:
        raise SpeechInputError(f"reference audio: invalid sample rate {sample_rate}")
    if not np.isfinite(x).all():
        raise SpeechInputError("reference audio contains NaN or infinite samples")
    seconds = x.shape[0] / float(sample_rate)
    lo, hi = float(limits["clip_min_seconds"]), float(limits["prompt_max_seconds"])
    if seconds < lo:
        raise SpeechInputError(f"reference audio is {seconds:.2f} s long; a voice needs at least {lo:g} s of speech "
                               "(3-10 s of clean speech works best)")
    if seconds > hi:
        raise SpeechInputError(f"reference audio is {seconds:.1f} s long; CosyVoice 2 takes at most {hi:g} s: trim it "
                               "(3-10 s of clean speech works best) and give the transcript of what is left")
    peak = float(np.abs(x).max()) if x.size else 0.0
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    if peak <= 0.0 or 20 * np.log10(max(rms, 1e-12)) < float(limits["silence_rms_dbfs"]):
        raise SpeechInputError(f"reference audio is silent (RMS {20 * np.log10(max(rms, 1e-12)):.0f} dBFS): "
                               "give a clip of someone speaking")
    warnings = []
    clipped = float(np.mean(np.abs(x) >= float(limits["clip_level"])))
    if clipped > float(limits["clipped_fraction_warn"]):
        warnings.append(f"reference audio is clipped ({clipped * 100:.1f} % of samples at full scale): "
                        "the voice may sound distorted")
    return x, warnings


def clone_voice(wave: np.ndarray, sample_rate: int, transcript: str, speech_tokenizer, speaker_embedding,
                cfg: dict | None = None) -> tuple[Voice, CloneReport]:
    """A :class:`Voice` from a reference clip (any rate, any channels) and its transcript.

    As the reference's ``frontend_zero_shot``: speech tokens from the 16 kHz Whisper log-mel, the
    x-vector from the 16 kHz fbank, the 24 kHz mel, and both cut so that there are exactly two
    mel frames per token."""
    cfg = cfg or load_config()
    x, warnings = check_reference_clip(wave, sample_rate, cfg["frontend"])
    w16 = features.prompt_speech(x, sample_rate, int(cfg["frontend"]["speech_tokenizer_sample_rate"]))
    w24 = features.prompt_speech(x, sample_rate, int(cfg["sample_rate"]))
    tokens = speech_tokenizer(w16).reshape(-1).to(torch.int32)
    feat = features.prompt_mel(w24)[0]
    embedding = speaker_embedding(w16).reshape(-1)
    n = min(int(feat.shape[0]) // 2, int(tokens.shape[0]))
    if n < 1:
        raise SpeechInputError("reference audio gave no speech tokens; give a longer clip of speech")
    voice = Voice(tokens[:n].cpu().numpy(), feat[:2 * n].cpu().numpy(), embedding.cpu().numpy(),
                  transcript=(transcript or "").strip(),
                  meta={"seconds": round(x.shape[0] / sample_rate, 3), "sample_rate": int(sample_rate)})
    if not voice.transcript:
        warnings.append("no transcript given: this voice works in cross_lingual and instruct modes only")
    return voice, CloneReport(seconds=x.shape[0] / sample_rate, warnings=warnings)


# ------------------------------------------------------------------------------- synthesis

@dataclass(frozen=True)
class SpeakOptions:
    mode: str = "zero_shot"
    instruct: str = ""
    speed: float = 1.0
    seed: int = 0
    stream: bool = False
    normalize: bool = True


def plan_script(text: str, cfg: dict) -> Plan:
    """The script cut at paragraph and sentence boundaries into pieces of at most about
    ``split_token_max_n`` text tokens (estimated), the size the reference synthesises at once; a
    paragraph never shares a piece with the next (its longer pause goes between them)."""
    if not isinstance(text, str):
        raise SpeechInputError(f"text: expected a string, got {type(text).__name__}")
    fe = cfg["frontend"]
    budget = token_budget(int(fe["split_token_max_n"]), float(fe["plan_cjk_tokens_per_char"]),
                          float(fe["plan_other_chars_per_token"]))
    plan = plan_pieces(text, [budget], mode="fill", cross_paragraphs=False)
    if not plan.pieces:
        raise SpeechInputError("text: nothing to say (it is empty or only punctuation and spaces)")
    return plan


def _prompts(model: CosyVoiceModel, voice: Voice, opts: SpeakOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt text tokens [1, P], language-model prompt speech tokens [1, S]) for the mode."""
    dev = model.device
    empty = torch.zeros(1, 0, dtype=torch.long, device=dev)
    if opts.mode == "zero_shot":
        if not voice.transcript:
            raise SpeechInputError("voice: zero_shot mode needs the transcript of the reference clip; "
                                   "clone the voice with its transcript, or use cross_lingual mode")
        prompt_text = model.frontend.normalize(voice.transcript, split=False, text_frontend=opts.normalize)
        return (model.tokenizer.text_tokens(prompt_text).to(dev),
                torch.from_numpy(voice.speech_tokens.astype(np.int64)).to(dev).unsqueeze(0))
    if opts.mode == "cross_lingual":
        return empty, empty
    if opts.mode == "instruct":
        instruct = (opts.instruct or "").strip()
        if not instruct:
            raise SpeechInputError("instruct: instruct mode needs a style instruction, e.g. 'Speak happily and a little faster.'")
        if END_OF_PROMPT not in instruct:
            instruct += END_OF_PROMPT
        return model.tokenizer.text_tokens(instruct).to(dev), empty
    raise SpeechInputError(f"mode: expected one of {', '.join(MODES)}, got {opts.mode!r}")


def _generator(seed: int, piece: int, sub: int, stream: int) -> torch.Generator:
    """The CPU generator of one part of one piece: ``stream`` 0 for the language model's sampling,
    1 for the vocoder's noise. Separate streams make the speech tokens independent of how often
    the vocoder ran in between, so a streamed run says the same tokens as a whole one."""
    g = torch.Generator()
    g.manual_seed((((int(seed) * 1_000_003 + piece) * 1009 + sub) * 2 + stream) % (2 ** 63 - 1))
    return g


def _validate(opts: SpeakOptions) -> None:
    if opts.mode not in MODES:
        raise SpeechInputError(f"mode: expected one of {', '.join(MODES)}, got {opts.mode!r}")
    if not (0.5 <= float(opts.speed) <= 2.0):
        raise SpeechInputError(f"speed: {opts.speed} is outside 0.5-2.0")
    if opts.stream and float(opts.speed) != 1.0:
        raise SpeechInputError("speed: changing the speed needs stream off (the reference stretches the whole mel)")


def speak_pieces(model: CosyVoiceModel, plan: Plan, voice: Voice, opts: SpeakOptions,
                 progress: ProgressFn | None = None,
                 check_interrupt: InterruptFn | None = None) -> Iterator[SpeechChunk]:
    """Speech chunks piece by piece (``SpeechChunk.piece`` = index in ``plan.pieces``), with pause
    chunks between pieces; one chunk per piece part when not streaming."""
    _validate(opts)
    cfg = model.cfg
    prompt_text, llm_prompt = _prompts(model, voice, opts)
    tokens, feat, emb = voice.flow_tensors(model.device)
    flow_prompt = FlowPrompt(tokens=tokens, feat=feat.to(model.device), embedding=emb.to(model.device))
    schedule = StreamSchedule.from_config(cfg)
    inf = cfg["inference"]
    sr = int(model.sample_rate)
    total = len(plan.pieces)
    for i, piece in enumerate(plan.pieces):
        if check_interrupt is not None:
            check_interrupt()
        if i > 0:
            gap = pause_seconds(piece.break_before)
            if gap > 0:
                yield SpeechChunk(silence(gap, sr), sr, i, "pause")
        parts = model.frontend.normalize(piece.text, split=True, text_frontend=opts.normalize)
        for j, part in enumerate(parts):
            text_tokens = model.tokenizer.text_tokens(part).to(model.device)
            if text_tokens.shape[1] == 0:
                continue
            token_iter = model.llm.inference(text_tokens, prompt_text, llm_prompt, generator=_generator(opts.seed, i, j, 0),
                                             min_ratio=float(inf["min_token_text_ratio"]),
                                             max_ratio=float(inf["max_token_text_ratio"]),
                                             check_interrupt=check_interrupt)
            conv = Token2Wav(model.flow, model.hift, flow_prompt, schedule, generator=_generator(opts.seed, i, j, 1))
            for audio in tokens_to_speech(token_iter, conv, stream=opts.stream, speed=float(opts.speed),
                                          check_interrupt=check_interrupt):
                yield SpeechChunk(audio[0].float().cpu().numpy(), sr, i)
        if progress is not None:
            progress(i + 1, total)


def synthesize(model: CosyVoiceModel, text: str, voice: Voice, opts: SpeakOptions = SpeakOptions(),
               progress: ProgressFn | None = None, check_interrupt: InterruptFn | None = None) -> SpeechResult:
    """The whole script as one :class:`SpeechResult` with per-sentence timings.

    Memory: one piece's networks' work at a time; the audio of the finished pieces is kept (24 kHz
    float32: 5.8 MB a minute)."""
    plan = plan_script(text, model.cfg)
    sr = int(model.sample_rate)
    per_piece: list[list[np.ndarray]] = [[] for _ in plan.pieces]
    completed = [0]

    def finished(done: int, total: int) -> None:
        completed[0] = done
        if progress is not None:
            progress(done, total)

    try:
        for chunk in speak_pieces(model, plan, voice, SpeakOptions(**{**opts.__dict__, "stream": False}),
                                  finished, check_interrupt):
            if chunk.kind == "speech":
                per_piece[chunk.piece].append(chunk.samples)
    except Exception as exc:  # noqa: BLE001 - whatever stopped it (Cancel included), keep the finished pieces
        done = completed[0]
        if not done:
            raise  # nothing was finished: the original error as it is
        sub = Plan(plan.source, plan.sentences, plan.pieces[:done])
        partial = assemble(sub, [PieceAudio(np.concatenate(p) if p else np.zeros(0, np.float32), sr)
                                 for p in per_piece[:done]], trim_outer=False)
        where = plan.pieces[min(done, len(plan.pieces) - 1)]
        raise IncompleteSpeech(
            f"CosyVoice stopped in piece {done + 1} of {len(plan.pieces)} (characters {where.start}-{where.end}): "
            f"{type(exc).__name__}: {exc}", partial, exc, done, len(plan.pieces)) from exc
    audios = [PieceAudio(np.concatenate(p) if p else np.zeros(0, np.float32), sr) for p in per_piece]
    result = assemble(plan, audios, trim_outer=False)
    result.info.update({"voice": "cosyvoice2", "mode": opts.mode, "seed": int(opts.seed)})
    return result
