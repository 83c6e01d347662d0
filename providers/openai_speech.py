"""OpenAI speech: ``POST /v1/audio/speech`` (text -> audio), whole or streamed.

Contract followed (OpenAI API reference "Create speech", developers.openai.com, read 2026-06):
JSON body ``{model, input, voice, instructions?, response_format, speed, stream_format?}``;
``model`` one of ``gpt-4o-mini-tts`` (and its dated snapshot), ``tts-1``, ``tts-1-hd``; ``input``
at most 4096 characters (gpt-4o-mini-tts also at most 2000 input tokens); ``voice`` a built-in
name or ``{"id": "voice_..."}`` for a custom voice; ``instructions`` only for gpt-4o-mini-tts;
``response_format`` mp3 (the API's default), opus, aac, flac, wav, pcm, where pcm is raw 24 kHz
16-bit little-endian mono; ``speed`` 0.25-4.0 (1.0 default); ``stream_format`` "audio" (the body
streams raw audio) or "sse" (events ``speech.audio.delta`` ``{audio: base64}`` then
``speech.audio.done`` ``{usage: {input_tokens, output_tokens, total_tokens}}``), sse not for tts-1.
The answer is the audio bytes; errors are ``{"error": {message, type, code}}``.

Longer input is split at sentence boundaries (:mod:`..engine.speech.sentences`) and joined with
the pauses of ``data/speech.json``. Keys come from ``OPENAI_API_KEY`` or the key file; the base
URL from ``OPENAI_BASE_URL`` (tests point it at a local fake).
"""
from __future__ import annotations

import base64
import logging
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator

from ..engine.speech.config import section
from ..engine.speech.join import PieceAudio
from ..engine.speech.pcm import Pcm16Stream, decode_audio
from ..engine.speech.sentences import Budget, Plan, char_budget, plan_pieces, token_budget
from ..engine.speech.types import SpeechChunk, SpeechResult
from .http import ApiError, RetryPolicy
from .openai_base import DEFAULT_BASE_URL, OpenAIClient  # noqa: F401 (DEFAULT_BASE_URL: part of this module's API)
from .prices import openai_speech_cost
from .speech_base import SpeechStream, guarded, iter_body, iter_sse, synthesize_plan

log = logging.getLogger("DigitalHuman.openai_speech")



def rules() -> dict:
    """The ``openai`` section of ``data/speech.json`` (models, voices, formats, limits)."""
    return section("openai")


@dataclass(frozen=True)
class OpenAISpeechOptions:
    """One voice setting for every piece of a script."""

    model: str = "gpt-4o-mini-tts"
    voice: str = "coral"
    response_format: str = "wav"
    speed: float = 1.0
    instructions: str = ""


class OpenAISpeech(OpenAIClient):
    """Client of the speech endpoint. The key comes from ``OPENAI_API_KEY`` or the user key file."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, read_timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, **kw):
        super().__init__(api_key, base_url, user_dir=user_dir, check_interrupt=check_interrupt,
                         read_timeout_s=read_timeout_s, retry=retry, **kw)
        self.rules = rules()

    # -- the request ---------------------------------------------------------------------------
    def _model_rules(self, model: str) -> dict:
        m = self.rules["models"]
        if model in m:
            return m[model]
        # an unlisted name: a gpt-* model behaves like gpt-4o-mini-tts, anything else like tts-1
        return m[self.rules["default_model"]] if model.startswith("gpt-") else m["tts-1"]

    @guarded
    def check_options(self, opts: OpenAISpeechOptions) -> OpenAISpeechOptions:
        """Validated options (instructions dropped, with a warning, for a model that ignores them)."""
        model = (opts.model or "").strip()
        if not model:
            raise ValueError(f"model: give a speech model name, e.g. {self.rules['default_model']}")
        voice = (opts.voice or "").strip()
        if not voice:
            raise ValueError(f"voice: give one of {', '.join(self.rules['voices'])} or a custom voice id (voice_...)")
        fmt = (opts.response_format or "").strip().lower()
        if fmt not in self.rules["formats"]:
            raise ValueError(f"format '{opts.response_format}' is not one of {', '.join(self.rules['formats'])}")
        lo, hi = self.rules["speed_range"]
        if not lo <= float(opts.speed) <= hi:
            raise ValueError(f"speed must be between {lo} and {hi}, got {opts.speed}")
        instructions = (opts.instructions or "").strip()
        if instructions and not self._model_rules(model).get("instructions"):
            log.warning("[DigitalHuman] OpenAI model %s does not take instructions; they are not sent", model)
            instructions = ""
        return OpenAISpeechOptions(model, voice, fmt, float(opts.speed), instructions)

    @guarded
    def budgets(self, model: str) -> list[Budget]:
        """The per-request limits of ``model``: 4096 characters, and estimated tokens where listed."""
        out = [char_budget(int(self.rules["max_input_chars"]))]
        mt = self._model_rules(model).get("max_input_tokens")
        if mt:
            est = self.rules["token_estimate"]
            out.append(token_budget(int(mt), est["cjk_tokens_per_char"], est["other_chars_per_token"]))
        return out

    @guarded
    def plan(self, text: str, opts: OpenAISpeechOptions, split: str = "fill") -> Plan:
        return plan_pieces(text, self.budgets(opts.model), split)

    @guarded
    def body(self, text: str, opts: OpenAISpeechOptions, stream_format: str | None = None) -> dict:
        """The JSON body for one piece (fields exactly as the reference documents them)."""
        voice: str | dict = {"id": opts.voice} if opts.voice.startswith("voice_") else opts.voice
        body = {"model": opts.model, "input": text, "voice": voice, "response_format": opts.response_format,
                "speed": opts.speed}
        if opts.instructions:
            body["instructions"] = opts.instructions
        if stream_format:
            body["stream_format"] = stream_format
        return body

    def _audio(self, resp, opts: OpenAISpeechOptions, where: str) -> PieceAudio:
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            raise ApiError(self.service, resp.status_code, f"{where}: the answer is JSON, not audio: "
                           + self.redact((resp.text or "")[:200]))
        samples, sr = decode_audio(resp.content, opts.response_format, int(self.rules["pcm_sample_rate"]), where)
        return PieceAudio(samples, sr)

    # -- whole utterances ----------------------------------------------------------------------
    @guarded
    def synthesize(self, text: str, opts: OpenAISpeechOptions | None = None, *, split: str = "fill",
                   progress: Callable[[int, int], None] | None = None) -> SpeechResult:
        """Text of any length -> one :class:`SpeechResult` (pieces joined, sentence timings, cost).

        gpt-4o-mini-tts is priced per minute of the audio received (OpenAI's estimate): the
        non-streamed answer carries no token usage.
        """
        opts = self.check_options(opts or OpenAISpeechOptions())
        plan = self.plan(text, opts, split)
        spent = {"chars": 0, "seconds": 0.0}

        def fetch(i: int) -> PieceAudio:
            piece = plan.pieces[i]
            resp = self.request("POST", "audio/speech", json_body=self.body(piece.text, opts), expect_json=False)
            audio = self._audio(resp, opts, f"piece {i + 1} of {len(plan.pieces)}")
            spent["chars"] += len(piece.text)
            spent["seconds"] += len(audio.samples) / audio.sample_rate
            return audio

        def cost() -> float:
            return openai_speech_cost(opts.model, spent["chars"], spent["seconds"]).usd

        result = synthesize_plan(plan, fetch, service=self.service, progress=progress,
                                 check_interrupt=self.check_interrupt, cost_so_far=cost)
        price = openai_speech_cost(opts.model, spent["chars"], spent["seconds"])
        result.cost_usd = price.usd
        result.info = {"provider": "openai", "model": opts.model, "voice": opts.voice, "pieces": len(plan.pieces),
                       "characters": spent["chars"], "cost_basis": price.basis, "cost_estimated": price.estimated}
        return result

    # -- streaming -----------------------------------------------------------------------------
    @guarded
    def stream(self, text: str, opts: OpenAISpeechOptions | None = None, *, split: str = "fill",
               stream_format: str = "audio", pauses: bool = True) -> SpeechStream:
        """Text -> :class:`SpeechStream` of 24 kHz float chunks as the audio arrives.

        Needs ``response_format`` "pcm". ``stream_format`` "sse" (gpt-4o-mini-tts only) also
        gives the token usage, so the cost is priced per token instead of per minute. With
        ``pauses`` a silent chunk of the boundary's pause goes between pieces.
        """
        opts = self.check_options(opts or OpenAISpeechOptions(response_format="pcm"))
        if opts.response_format != "pcm":
            raise ValueError(f"streaming needs format 'pcm' (raw 24 kHz), got '{opts.response_format}'")
        if stream_format not in ("audio", "sse"):
            raise ValueError(f"stream_format must be 'audio' or 'sse', got '{stream_format}'")
        if stream_format == "sse" and not self._model_rules(opts.model).get("sse"):
            raise ValueError(f"stream_format 'sse' is not supported by {opts.model}; use 'audio'")
        plan = self.plan(text, opts, split)
        if not plan.pieces:
            raise ValueError("text: nothing to speak (it is empty or holds only punctuation)")
        sr = int(self.rules["pcm_sample_rate"])
        st = SpeechStream(plan, sr)

        def gen() -> Iterator[SpeechChunk]:
            usage_known = stream_format == "sse"
            for i, piece, gap in st.paced(self, pauses):
                if gap is not None:
                    yield gap
                url = f"{self.base_url}/audio/speech"
                body = self.body(piece.text, opts, "sse" if stream_format == "sse" else None)
                resp = self.request("POST", "audio/speech", json_body=body, expect_json=False, stream=True)
                dec = Pcm16Stream()
                piece_usage = None
                with closing(resp):
                    chunks = iter_body(self, resp, url)
                    if stream_format == "sse":
                        for ev in iter_sse(chunks):
                            if ev.get("type") == "speech.audio.delta":
                                x = dec.feed(base64.b64decode(ev.get("audio") or ""))
                                if len(x):
                                    yield SpeechChunk(x, sr, i)
                            elif ev.get("type") == "speech.audio.done":
                                piece_usage = ev.get("usage") or {}
                            elif ev.get("type") == "error" or "error" in ev:
                                err = ev.get("error") or ev
                                raise ApiError(self.service, 0, self.redact(err.get("message", str(err)) if isinstance(err, dict) else err), url=url)
                    else:
                        for chunk in chunks:
                            x = dec.feed(chunk)
                            if len(x):
                                yield SpeechChunk(x, sr, i)
                dec.flush(f"OpenAI speech piece {i + 1}")
                st.chars_sent += len(piece.text)
                st.seconds += dec.samples_out / sr
                if piece_usage is None:
                    usage_known = False
                else:
                    for k in ("input_tokens", "output_tokens", "total_tokens"):
                        st.usage[k] = st.usage.get(k, 0) + int(piece_usage.get(k) or 0)
                st.cost_usd = openai_speech_cost(opts.model, st.chars_sent, st.seconds,
                                                 st.usage if usage_known else None).usd

        return st._start(gen())
