"""ElevenLabs text to speech: ``POST /v1/text-to-speech/{voice_id}`` and its ``/stream`` and
``/with-timestamps`` forms, and the voice list ``GET /v1/voices``.

Contract followed (``fern/apis/api/openapi.json`` and the docs pages of elevenlabs/elevenlabs-docs,
read 2026-06): header ``xi-api-key``; query ``output_format`` (``pcm_8000`` ... ``pcm_48000`` =
raw 16-bit little-endian mono at that rate, ``mp3_<rate>_<kbps>``, ``opus_48000_<kbps>``, ...;
the API default is mp3_44100_128); JSON body ``{text, model_id (default eleven_multilingual_v2),
language_code?, voice_settings? {stability, similarity_boost, style, use_speaker_boost, speed},
seed?, previous_request_ids? (up to 3)}``. ``/with-timestamps`` answers ``{audio_base64,
alignment: {characters, character_start_times_seconds, character_end_times_seconds},
normalized_alignment}``. Answers carry ``request-id`` (used to stitch the pieces of a long text,
except on eleven_v3 which does not support it) and ``character-cost`` (credits charged) headers.
Errors are ``{"detail": {"status", "message"}}`` (e.g. invalid_api_key, voice_not_found,
max_character_limit_exceeded, too_many_concurrent_requests), validation errors ``{"detail":
[{loc, msg, type}]}``.

Text over a model's character limit (``data/speech.json``) is split at sentence boundaries and
joined. The key comes from ``ELEVENLABS_API_KEY`` or the key file; the base URL from
``ELEVENLABS_BASE_URL``.
"""
from __future__ import annotations

import base64
import logging
import os
import re
from contextlib import closing
from dataclasses import dataclass, field
from typing import Callable, Iterator
from urllib.parse import quote, urlencode

from ..engine.speech.config import section
from ..engine.speech.join import PieceAudio
from ..engine.speech.pcm import Pcm16Stream, decode_audio
from ..engine.speech.sentences import Plan, char_budget, plan_pieces
from ..engine.speech.types import CharTimestamps, SpeechChunk, SpeechResult
from .api_key_client import ApiKeyClient
from .http import ApiError, RetryPolicy
from .prices import SpeechPrice, elevenlabs_speech_cost
from .speech_base import SpeechStream, guarded, iter_body, synthesize_plan

log = logging.getLogger("DigitalHuman.elevenlabs")

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")


def rules() -> dict:
    """The ``elevenlabs`` section of ``data/speech.json`` (models and limits, formats, defaults)."""
    return section("elevenlabs")


def parse_output_format(fmt: str) -> tuple[str, int]:
    """``pcm_24000`` -> ("pcm", 24000); ``mp3_44100_128`` -> ("mp3", 44100)."""
    m = re.fullmatch(r"(pcm|mp3|opus|wav)_(\d+)(?:_(\d+))?", (fmt or "").strip())
    if not m:
        raise ValueError(f"output_format '{fmt}' is not supported here; use pcm_<rate> (e.g. pcm_24000), "
                         "mp3_<rate>_<kbps> or opus_48000_<kbps>")
    return m.group(1), int(m.group(2))


@dataclass(frozen=True)
class VoiceSettings:
    """Overrides of the voice's stored settings for this request (None = not sent)."""

    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None
    speed: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ElevenLabsOptions:
    """One voice setting for every piece of a script."""

    voice_id: str = "JBFqnCBsd6RMkjVDRZzb"
    model_id: str = "eleven_multilingual_v2"
    output_format: str = "pcm_24000"
    voice_settings: VoiceSettings | None = None
    language_code: str = ""
    seed: int | None = None
    timestamps: bool = False
    stitching: bool = True
    extra: dict = field(default_factory=dict)  # further documented body fields, sent as given


class ElevenLabs(ApiKeyClient):
    """Client of the text-to-speech API. The key comes from ``ELEVENLABS_API_KEY`` or the key file."""

    service = "ElevenLabs"
    auth_header, auth_scheme = "xi-api-key", ""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, read_timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, **kw):
        url = base_url or os.environ.get("ELEVENLABS_BASE_URL", "").strip() or DEFAULT_BASE_URL
        super().__init__(url, api_key, "ELEVENLABS_API_KEY", user_dir=user_dir, check_interrupt=check_interrupt,
                         read_timeout_s=read_timeout_s, retry=retry, **kw)
        self.rules = rules()
        self._voices: list[dict] | None = None

    # -- voices --------------------------------------------------------------------------------
    @guarded
    def list_voices(self, refresh: bool = False) -> list[dict]:
        """The account's voices (``GET /v1/voices``): dicts with voice_id, name, category, labels."""
        if self._voices is None or refresh:
            body = self.request("GET", "v1/voices")
            voices = body.get("voices") if isinstance(body, dict) else None
            if not isinstance(voices, list):
                raise ApiError(self.service, 200, "the voice list answer has no 'voices' array")
            self._voices = [v for v in voices if isinstance(v, dict) and v.get("voice_id")]
        return list(self._voices)

    @guarded
    def resolve_voice(self, voice: str) -> str:
        """A voice id as given (20 letters and digits), else the id of the voice with that name."""
        v = (voice or "").strip()
        if not v:
            raise ValueError("voice: give a voice id or the name of one of your ElevenLabs voices")
        if VOICE_ID.match(v):
            return v
        voices = self.list_voices()
        low = v.lower()
        for cand in voices:
            name = str(cand.get("name", "")).strip().lower()
            if name == low or name.split(" - ")[0].strip() == low:
                return str(cand["voice_id"])
        names = ", ".join(sorted(str(c.get("name")) for c in voices)[:40]) or "none"
        raise ValueError(f"voice '{v}' is neither a voice id nor the name of one of your voices ({names})")

    # -- the request ---------------------------------------------------------------------------
    @guarded
    def model_rules(self, model_id: str) -> dict:
        m = self.rules["models"]
        return m.get(model_id, m["default"])

    @guarded
    def check_options(self, opts: ElevenLabsOptions) -> ElevenLabsOptions:
        if not (opts.model_id or "").strip():
            raise ValueError(f"model: give an ElevenLabs model id, e.g. {self.rules['default_model']}")
        parse_output_format(opts.output_format)
        vs = opts.voice_settings
        if vs is not None:
            for name in ("stability", "similarity_boost", "style"):
                val = getattr(vs, name)
                if val is not None and not 0.0 <= float(val) <= 1.0:
                    raise ValueError(f"voice setting {name} must be between 0 and 1, got {val}")
            lo, hi = self.rules["speed_range"]
            if vs.speed is not None and not lo <= float(vs.speed) <= hi:
                raise ValueError(f"voice setting speed must be between {lo} and {hi}, got {vs.speed}")
        if opts.seed is not None and not 0 <= int(opts.seed) <= 4294967295:
            raise ValueError(f"seed must be between 0 and 4294967295, got {opts.seed}")
        return opts

    @guarded
    def plan(self, text: str, opts: ElevenLabsOptions, split: str = "fill") -> Plan:
        return plan_pieces(text, [char_budget(int(self.model_rules(opts.model_id)["max_chars"]))], split)

    @guarded
    def path(self, voice_id: str, opts: ElevenLabsOptions, suffix: str = "") -> str:
        return f"v1/text-to-speech/{quote(voice_id, safe='')}{suffix}?" + urlencode({"output_format": opts.output_format})

    @guarded
    def body(self, text: str, opts: ElevenLabsOptions, previous_request_ids: list[str] | None = None) -> dict:
        """The JSON body for one piece (only documented fields; unset options are not sent)."""
        body: dict = {"text": text, "model_id": opts.model_id}
        if opts.language_code:
            body["language_code"] = opts.language_code
        if opts.voice_settings is not None and opts.voice_settings.to_json():
            body["voice_settings"] = opts.voice_settings.to_json()
        if opts.seed is not None:
            body["seed"] = int(opts.seed)
        if previous_request_ids:
            body["previous_request_ids"] = list(previous_request_ids)[-int(self.rules["max_stitch_ids"]):]
        body.update(opts.extra or {})
        return body

    def _decode(self, data: bytes, opts: ElevenLabsOptions, where: str) -> tuple:
        kind, rate = parse_output_format(opts.output_format)
        return decode_audio(data, kind, rate, where)

    # -- whole utterances ----------------------------------------------------------------------
    @guarded
    def synthesize(self, text: str, opts: ElevenLabsOptions | None = None, *, split: str = "fill",
                   progress: Callable[[int, int], None] | None = None) -> SpeechResult:
        """Text of any length -> one :class:`SpeechResult`; with ``opts.timestamps`` the character
        times of ``/with-timestamps`` time the sentences exactly."""
        opts = self.check_options(opts or ElevenLabsOptions())
        voice_id = self.resolve_voice(opts.voice_id)
        plan = self.plan(text, opts, split)
        stitch = opts.stitching and bool(self.model_rules(opts.model_id).get("stitching"))
        state = {"chars": 0, "credits": 0.0, "credits_known": True, "ids": []}

        def fetch(i: int) -> PieceAudio:
            piece = plan.pieces[i]
            where = f"piece {i + 1} of {len(plan.pieces)}"
            body = self.body(piece.text, opts, state["ids"] if stitch else None)
            suffix = "/with-timestamps" if opts.timestamps else ""
            resp = self.request("POST", self.path(voice_id, opts, suffix), json_body=body, expect_json=False)
            if opts.timestamps:
                audio = self._timestamped(resp, opts, where)
            else:
                if resp.headers.get("Content-Type", "").startswith("application/json"):
                    raise ApiError(self.service, resp.status_code, f"{where}: the answer is JSON, not audio: "
                                   + self.redact((resp.text or "")[:200]))
                samples, sr = self._decode(resp.content, opts, where)
                audio = PieceAudio(samples, sr)
            self._account(resp, piece.text, state)
            return audio

        def cost() -> float:
            return self._cost(opts, state).usd

        result = synthesize_plan(plan, fetch, service=self.service, progress=progress,
                                 check_interrupt=self.check_interrupt, cost_so_far=cost)
        price = self._cost(opts, state)
        result.cost_usd = price.usd
        result.info = {"provider": "elevenlabs", "model": opts.model_id, "voice_id": voice_id,
                       "pieces": len(plan.pieces), "characters": state["chars"], "request_ids": list(state["ids"]),
                       "credits": state["credits"] if state["credits_known"] else None,
                       "cost_basis": price.basis, "cost_estimated": price.estimated}
        return result

    def _timestamped(self, resp, opts: ElevenLabsOptions, where: str) -> PieceAudio:
        try:
            body = resp.json()
        except ValueError:
            raise ApiError(self.service, resp.status_code, f"{where}: the with-timestamps answer is not JSON") from None
        b64 = body.get("audio_base64") if isinstance(body, dict) else None
        if not b64:
            raise ApiError(self.service, resp.status_code, f"{where}: the answer has no 'audio_base64'")
        try:
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise ApiError(self.service, resp.status_code, f"{where}: 'audio_base64' is not valid base64") from None
        samples, sr = self._decode(raw, opts, where)
        al = body.get("alignment")
        chars = None
        if isinstance(al, dict):
            try:
                chars = CharTimestamps(al["characters"], al["character_start_times_seconds"], al["character_end_times_seconds"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("[DigitalHuman] ElevenLabs %s: alignment ignored (%s)", where, exc)
        return PieceAudio(samples, sr, chars)

    @staticmethod
    def _account(resp, text: str, state: dict) -> None:
        state["chars"] += len(text)
        rid = resp.headers.get("request-id")
        if rid:
            state["ids"].append(rid)
        cc = resp.headers.get("character-cost")
        try:
            state["credits"] += float(cc)
        except (TypeError, ValueError):
            state["credits_known"] = False
            state.setdefault("chars_unknown", 0)
            state["chars_unknown"] += len(text)

    def _cost(self, opts: ElevenLabsOptions, state: dict) -> SpeechPrice:
        if state["credits_known"]:
            return elevenlabs_speech_cost(opts.model_id, state["chars"], credits=state["credits"])
        # some answers had no character-cost header: those pieces by the per-character rule
        known = elevenlabs_speech_cost(opts.model_id, 0, credits=state["credits"]).usd
        rest = elevenlabs_speech_cost(opts.model_id, state.get("chars_unknown", 0))
        return SpeechPrice(round(known + rest.usd, 9), "credits", True)

    # -- streaming -----------------------------------------------------------------------------
    @guarded
    def stream(self, text: str, opts: ElevenLabsOptions | None = None, *, split: str = "fill",
               pauses: bool = True) -> SpeechStream:
        """Text -> :class:`SpeechStream` of float chunks from ``/stream`` as they arrive (needs a
        ``pcm_<rate>`` output format; character timestamps are not streamed here)."""
        opts = self.check_options(opts or ElevenLabsOptions())
        kind, sr = parse_output_format(opts.output_format)
        if kind != "pcm":
            raise ValueError(f"streaming needs a pcm_<rate> output format, got '{opts.output_format}'")
        voice_id = self.resolve_voice(opts.voice_id)
        plan = self.plan(text, opts, split)
        if not plan.pieces:
            raise ValueError("text: nothing to speak (it is empty or holds only punctuation)")
        stitch = opts.stitching and bool(self.model_rules(opts.model_id).get("stitching"))
        st = SpeechStream(plan, sr)
        state = {"chars": 0, "credits": 0.0, "credits_known": True, "ids": []}

        def gen() -> Iterator[SpeechChunk]:
            for i, piece, gap in st.paced(self, pauses):
                if gap is not None:
                    yield gap
                path = self.path(voice_id, opts, "/stream")
                body = self.body(piece.text, opts, state["ids"] if stitch else None)
                resp = self.request("POST", path, json_body=body, expect_json=False, stream=True)
                dec = Pcm16Stream()
                with closing(resp):
                    for chunk in iter_body(self, resp, f"{self.base_url}/{path}"):
                        x = dec.feed(chunk)
                        if len(x):
                            yield SpeechChunk(x, sr, i)
                dec.flush(f"ElevenLabs stream piece {i + 1}")
                self._account(resp, piece.text, state)
                st.chars_sent = state["chars"]
                st.seconds += dec.samples_out / sr
                st.cost_usd = self._cost(opts, state).usd

        return st._start(gen())
