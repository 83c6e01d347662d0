"""A fake ElevenLabs text-to-speech API on 127.0.0.1 for tests.

It follows the documented contract (openapi.json and docs pages of elevenlabs/elevenlabs-docs):

- auth header ``xi-api-key``; a wrong or missing key is 401 ``{"detail": {"status":
  "invalid_api_key", "message": ...}}``;
- ``GET /v1/voices`` -> ``{"voices": [{voice_id, name, category, labels, ...}]}``;
- ``POST /v1/text-to-speech/{voice_id}``, ``.../stream``, ``.../with-timestamps`` with query
  ``output_format`` (pcm_<rate>, mp3_<rate>_<kbps>, opus_48000_<kbps>; default mp3_44100_128) and
  JSON ``{text, model_id, language_code?, voice_settings?, seed?, previous_request_ids?, ...}``:
  unknown voice -> 400 ``voice_not_found``; text over the model's limit -> 400
  ``max_character_limit_exceeded``; previous_request_ids with eleven_v3 -> 400; a bad
  output_format or an undocumented body field -> 422 ``{"detail": [{loc, msg, type}]}``;
- audio is :func:`fakespeech.render` at the format's rate (voice_settings.speed honoured); the
  answer has ``request-id`` and ``character-cost`` (characters x credits per character: 0.5 on
  flash/turbo, else 1) headers; ``/with-timestamps`` answers JSON ``{audio_base64, alignment,
  normalized_alignment}`` with the exact character times of the fake voice.

``server.script`` and ``server.requests`` work as in :mod:`fakeopenai`.
"""
from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

import fakespeech
from loopback import LoopbackServer, QuietHandler

MODELS = {"eleven_multilingual_v2": 10000, "eleven_v3": 3000, "eleven_flash_v2_5": 40000, "eleven_turbo_v2_5": 40000,
          "eleven_flash_v2": 30000, "eleven_turbo_v2": 30000}
HALF_CREDIT = {"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_flash_v2", "eleven_turbo_v2"}
FIELDS = {"text", "model_id", "language_code", "voice_settings", "pronunciation_dictionary_locators", "seed",
          "previous_text", "next_text", "previous_request_ids", "next_request_ids", "use_pvc_as_ivc",
          "apply_text_normalization", "apply_language_text_normalization"}
SETTINGS = {"stability", "similarity_boost", "style", "use_speaker_boost", "speed"}
FORMATS = re.compile(r"^(pcm_(8000|16000|22050|24000|32000|44100|48000)|mp3_(22050_32|24000_48|44100_(32|64|96|128|192))|opus_48000_(32|64|96|128|192))$")
VOICES = [
    {"voice_id": "JBFqnCBsd6RMkjVDRZzb", "name": "George", "category": "premade", "labels": {"accent": "british"}},
    {"voice_id": "21m00Tcm4TlvDq8ikWAM", "name": "Rachel", "category": "premade", "labels": {"accent": "american"}},
    {"voice_id": "Xb7hH8MSUJpSbSDYk0k2", "name": "Alice - Clear Educator", "category": "premade", "labels": {}},
]


def fake_key(tag: str) -> str:
    """A made-up ElevenLabs-shaped key (``sk_`` + hex), built at run time; it opens nothing anywhere."""
    return "sk_" + (tag.encode().hex() + "0123456789abcdef" * 3)[:48]


@dataclass
class Captured:
    method: str
    path: str
    query: dict
    headers: dict
    json: dict | None = None


class FakeElevenLabs(LoopbackServer):
    def __init__(self, api_key: str | None = None):
        super().__init__(_Handler)
        self.api_key = api_key or fake_key("test")
        self.script: list[tuple] = []
        self.requests: list[Captured] = []
        self.chunk_bytes = 4001
        self.chunk_delay_s = 0.0
        self.chunks_sent = 0
        self.send_character_cost = True

    @property
    def url(self) -> str:
        return self.origin


def _detail(status: str, message: str) -> dict:
    return {"detail": {"status": status, "message": message}}


class _Handler(fakespeech.AudioAnswers, QuietHandler):
    server: FakeElevenLabs

    def _capture(self) -> tuple[Captured, tuple | None]:
        u = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        cap = Captured(self.command, u.path, {k: v[-1] for k, v in parse_qs(u.query).items()}, dict(self.headers.items()))
        if raw:
            cap.json = json.loads(raw)
        with self.server.lock:
            self.server.requests.append(cap)
            step = self.server.script.pop(0) if self.server.script else None
        return cap, step

    def _scripted(self, step: tuple | None) -> bool:
        if step is None or step[0] in ("stall", "ok"):
            return False
        if step[0] == "hang":
            time.sleep(step[1])
            self.send_json(500, _detail("internal_error", "hung"))
            return True
        st, hdrs = step[1], (step[2] if len(step) > 2 else {})
        if st == 429:
            self.send_json(429, _detail("too_many_concurrent_requests", "Too many concurrent requests for your subscription."), hdrs)
        else:
            self.send_json(st, _detail("internal_error", "An internal server error occurred."), hdrs)
        return True

    def _authorised(self) -> bool:
        if self.headers.get("xi-api-key", "") != self.server.api_key:
            self.send_json(401, _detail("invalid_api_key", "Invalid API key"))
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        cap, step = self._capture()
        if self._scripted(step) or not self._authorised():
            return
        if cap.path == "/v1/voices":
            return self.send_json(200, {"voices": VOICES})
        self.send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        cap, step = self._capture()
        if self._scripted(step) or not self._authorised():
            return
        m = re.fullmatch(r"/v1/text-to-speech/([^/]+)(/stream)?(/with-timestamps)?", cap.path)
        if not m:
            return self.send_json(404, {"detail": "Not Found"})
        voice_id = unquote(m.group(1))
        stall = (step[1], step[2]) if step is not None and step[0] == "stall" else None
        fmt = cap.query.get("output_format", "mp3_44100_128")
        if not FORMATS.match(fmt):
            return self.send_json(422, {"detail": [{"loc": ["query", "output_format"], "msg": f"Input should be a valid output format, got '{fmt}'", "type": "enum"}]})
        body = cap.json or {}
        extra = sorted(set(body) - FIELDS)
        if extra:
            return self.send_json(422, {"detail": [{"loc": ["body", extra[0]], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]})
        vs = body.get("voice_settings") or {}
        if set(vs) - SETTINGS:
            return self.send_json(422, {"detail": [{"loc": ["body", "voice_settings", sorted(set(vs) - SETTINGS)[0]], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]})
        text = body.get("text")
        if not isinstance(text, str) or not text:
            return self.send_json(422, {"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]})
        if voice_id not in {v["voice_id"] for v in VOICES}:
            return self.send_json(400, _detail("voice_not_found", f"A voice with the voice_id {voice_id} was not found."))
        model = body.get("model_id", "eleven_multilingual_v2")
        if model not in MODELS:
            return self.send_json(400, _detail("model_not_found", f"A model with model ID {model} does not exist."))
        if len(text) > MODELS[model]:
            return self.send_json(400, _detail("max_character_limit_exceeded",
                                               f"You are sending {len(text)} characters; the limit for {model} is {MODELS[model]}."))
        if model == "eleven_v3" and body.get("previous_request_ids"):
            return self.send_json(400, _detail("invalid_request", "Request stitching is not available for eleven_v3."))
        if len(body.get("previous_request_ids") or []) > 3:
            return self.send_json(400, _detail("invalid_request", "A maximum of 3 previous_request_ids can be sent."))
        speed = float(vs.get("speed", 1.0))
        if not 0.7 <= speed <= 1.2:
            return self.send_json(400, _detail("invalid_voice_settings", f"speed must be between 0.7 and 1.2, got {speed}"))
        kind, rate = fmt.split("_")[0], int(fmt.split("_")[1])
        pcm = fakespeech.render(text, rate, speed)
        audio = pcm.astype("<i2").tobytes() if kind == "pcm" else fakespeech.encoded_bytes(pcm, rate, kind)
        headers = {"request-id": f"req{len(self.server.requests):04d}"}
        if self.server.send_character_cost:
            headers["character-cost"] = str(int(round(len(text) * (0.5 if model in HALF_CREDIT else 1.0))))
        if m.group(3):
            starts, ends = fakespeech.char_times(text, rate, speed)
            al = {"characters": list(text), "character_start_times_seconds": starts, "character_end_times_seconds": ends}
            return self.send_json(200, {"audio_base64": base64.b64encode(audio).decode(), "alignment": al,
                                        "normalized_alignment": al}, headers)
        ctype = "audio/mpeg" if kind == "mp3" else "application/octet-stream"
        self.send_chunked(200, audio, ctype, headers, stall=stall)
