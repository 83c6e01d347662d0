"""A fake OpenAI Images API on 127.0.0.1 for tests (reusable by any client test of the pack).

It follows the documented contract: ``POST /v1/images/generations`` (JSON body) and
``POST /v1/images/edits`` (multipart, ``image`` or ``image[]`` files) answer
``{"created", "data": [{"b64_json"}], "usage"}``; errors use ``{"error": {"message", "type",
"code"}}``. Images come back small (requested size / ``shrink``) so tests stay fast:
generation image ``i`` is a solid colour ``gen_color(i)``; an edit returns the first uploaded
image mirrored left-right.

Speech: ``POST /v1/audio/speech`` follows "Create speech": JSON ``{model, input, voice,
instructions?, response_format?, speed?, stream_format?}``; unknown fields, ``input`` over 4096
characters, ``instructions`` or ``stream_format: "sse"`` with tts-1/tts-1-hd, a speed outside
0.25-4.0 or an unknown voice/format are 400 errors. The answer is the audio of
:func:`fakespeech.render` (24 kHz) as pcm (raw 16-bit LE), wav, or mp3/opus/aac/flac encoded with
PyAV, sent in HTTP chunks of ``server.chunk_bytes`` (odd, so samples straddle chunks);
``stream_format: "sse"`` answers ``speech.audio.delta`` events (base64 audio) and a
``speech.audio.done`` event with ``usage`` (input tokens: ceil(characters / 4); output tokens: one
per 20 ms of audio).

Behaviour per request is scripted with ``server.script`` (consumed in order), entries:
``("status", code, headers_dict)`` e.g. ``("status", 429, {"Retry-After": "1"})``,
``("hang", seconds)``, or ``("stall", after_bytes, seconds)`` (an audio answer that stops after
some bytes). Every request is captured in ``server.requests``. ``server.no_auth = True`` makes it
a self-hosted compatible server that takes requests without a key.
"""
from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

import numpy as np
from PIL import Image

import fakespeech
from loopback import LoopbackServer, QuietHandler

KNOWN_MODELS = {"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2"}
SPEECH_MODELS = {"gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "tts-1", "tts-1-hd"}
SPEECH_VOICES = {"alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse"}
SPEECH_FORMATS = {"mp3", "opus", "aac", "flac", "wav", "pcm"}
SPEECH_FIELDS = {"model", "input", "voice", "instructions", "response_format", "speed", "stream_format"}
SPEECH_RATE = 24000


def gen_color(i: int) -> tuple[int, int, int]:
    """The solid colour of generated image ``i``."""
    return (20 + 30 * i, 100, 200)


@dataclass
class Captured:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict
    json: dict | None = None
    form: dict = field(default_factory=dict)
    files: list = field(default_factory=list)  # [(field name, filename, content type, bytes)]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, list]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    form, files = {}, []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        if filename is not None:
            files.append((name, filename, part.get_content_type(), payload))
        else:
            form[name] = payload.decode("utf-8")
    return form, files


def fake_key(tag: str) -> str:
    """A made-up key in OpenAI's ``sk-...`` shape (so key-pattern redaction is exercised), built at run
    time so no key-like literal sits in the sources. It opens nothing anywhere."""
    return "-".join(("sk", "fake", tag, "0123456789abcdef"))


class FakeOpenAI(LoopbackServer):
    """The server; ``url`` is the base URL to give the client (ends in ``/v1``)."""

    def __init__(self, api_key: str | None = None, shrink: int = 16):
        super().__init__(_Handler)
        self.api_key = api_key or fake_key("test")
        self.shrink = shrink
        self.script: list[tuple] = []
        self.requests: list[Captured] = []
        self.chunk_bytes = 4001  # audio answers go out in chunks of this many bytes
        self.chunk_delay_s = 0.0
        self.chunks_sent = 0
        self.no_auth = False  # True: a self-hosted OpenAI-compatible server that asks for no key

    @property
    def url(self) -> str:
        return self.origin + "/v1"


def _error(status: int, message: str, etype: str, code: str | None) -> tuple[int, dict, dict]:
    return status, {"error": {"message": message, "type": etype, "param": None, "code": code}}, {}


class _Handler(fakespeech.AudioAnswers, QuietHandler):
    server: FakeOpenAI
    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        self.send_json(status, body, {"x-request-id": f"req_fake{len(self.server.requests):04d}", **(headers or {})})

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        cap = Captured("POST", self.path, dict(self.headers.items()))
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            cap.json = json.loads(body or b"{}")
        elif ctype.startswith("multipart/form-data"):
            cap.form, cap.files = _parse_multipart(ctype, body)
        with self.server.lock:
            self.server.requests.append(cap)
            step = self.server.script.pop(0) if self.server.script else None
        stall = None
        if step is not None:
            if step[0] == "stall":
                stall = (step[1], step[2])
            elif step[0] == "hang":
                time.sleep(step[1])
                return self._send(*_error(500, "hung", "server_error", None))
            if step[0] == "status":
                st, hdrs = step[1], (step[2] if len(step) > 2 else {})
                msg = "Rate limit reached for images" if st == 429 else "The server had an error while processing your request."
                return self._send(st, {"error": {"message": msg, "type": "requests" if st == 429 else "server_error", "param": None, "code": None}}, hdrs)
        auth = self.headers.get("Authorization", "")
        if not self.server.no_auth and auth != f"Bearer {self.server.api_key}":
            given = auth.removeprefix("Bearer ")
            # The real API echoes (part of) the key it got: a client must redact it.
            return self._send(*_error(401, f"Incorrect API key provided: {given}. You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"))
        if self.path == "/v1/images/generations":
            return self._generations(cap)
        if self.path == "/v1/images/edits":
            return self._edits(cap)
        if self.path == "/v1/audio/speech":
            return self._speech(cap, stall)
        return self._send(*_error(404, f"Invalid URL (POST {self.path})", "invalid_request_error", None))

    def _check(self, params: dict) -> tuple[int, dict, dict] | None:
        model = params.get("model")
        if model not in KNOWN_MODELS:
            return _error(400, f"The model '{model}' does not exist or you do not have access to it.", "invalid_request_error", "model_not_found")
        if not params.get("prompt"):
            return _error(400, "Missing required parameter: 'prompt'.", "invalid_request_error", "missing_required_parameter")
        size = params.get("size", "auto")
        if size not in ("1024x1024", "1024x1536", "1536x1024", "auto"):
            return _error(400, f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.", "invalid_request_error", "invalid_value")
        return None

    def _wh(self, size: str) -> tuple[int, int]:
        w, h = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        return w // self.server.shrink, h // self.server.shrink

    def _answer(self, pngs: list[bytes], params: dict) -> None:
        self._send(200, {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(p).decode()} for p in pngs],
            "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                      "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}},
            "size": params.get("size"), "quality": params.get("quality"),
        })

    def _generations(self, cap: Captured) -> None:
        p = cap.json or {}
        err = self._check(p)
        if err:
            return self._send(*err)
        w, h = self._wh(p.get("size", "auto"))
        pngs = [_png(np.full((h, w, 3), gen_color(i), np.uint8)) for i in range(int(p.get("n", 1)))]
        self._answer(pngs, p)

    def _edits(self, cap: Captured) -> None:
        err = self._check(cap.form)
        if err:
            return self._send(*err)
        imgs = [f for f in cap.files if f[0] in ("image", "image[]")]
        if not imgs:
            return self._send(*_error(400, "Missing required parameter: 'image'.", "invalid_request_error", "missing_required_parameter"))
        first = np.asarray(Image.open(io.BytesIO(imgs[0][3])).convert("RGB"))
        pngs = [_png(np.ascontiguousarray(first[:, ::-1])) for _ in range(int(cap.form.get("n", 1)))]
        self._answer(pngs, cap.form)

    # -- speech ------------------------------------------------------------------------------
    def _speech(self, cap: Captured, stall: tuple[int, float] | None) -> None:
        p = cap.json or {}
        bad = lambda msg, param=None: self._send(400, {"error": {"message": msg, "type": "invalid_request_error",  # noqa: E731
                                                                 "param": param, "code": None}})
        extra = sorted(set(p) - SPEECH_FIELDS)
        if extra:
            return bad(f"Unrecognized request argument supplied: {extra[0]}", extra[0])
        model = p.get("model")
        if model not in SPEECH_MODELS:
            return bad(f"Invalid value for 'model' = {model}.", "model")
        text = p.get("input")
        if not isinstance(text, str) or not text:
            return bad("Missing required parameter: 'input'.", "input")
        if len(text) > 4096:
            return bad(f"[{{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have at most 4096 characters', 'ctx': {{'max_length': 4096}}}}] ({len(text)} given)", "input")
        voice = p.get("voice")
        if not ((isinstance(voice, str) and voice in SPEECH_VOICES)
                or (isinstance(voice, dict) and str(voice.get("id", "")).startswith("voice_"))):
            return bad(f"Invalid value for 'voice': {voice!r}.", "voice")
        classic = model.startswith("tts-1")
        if classic and "instructions" in p:
            return bad("instructions are not supported with tts-1 or tts-1-hd", "instructions")
        fmt = p.get("response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            return bad(f"Invalid value for 'response_format': {fmt}.", "response_format")
        speed = float(p.get("speed", 1.0))
        if not 0.25 <= speed <= 4.0:
            return bad(f"Invalid 'speed': {speed}. Expected a value between 0.25 and 4.0.", "speed")
        sfmt = p.get("stream_format", "audio")
        if sfmt not in ("audio", "sse") or (sfmt == "sse" and classic):
            return bad(f"stream_format '{sfmt}' is not supported for {model}", "stream_format")
        pcm = fakespeech.render(text, SPEECH_RATE, speed)
        audio = self._format(pcm, fmt)
        if sfmt == "sse":
            events = []
            step = 3001  # odd byte counts per delta, as a real encoder's frames need not align with samples
            for k in range(0, len(audio), step):
                events.append({"type": "speech.audio.delta", "audio": base64.b64encode(audio[k:k + step]).decode()})
            usage = {"input_tokens": -(-len(text) // 4), "output_tokens": -(-len(pcm) // (SPEECH_RATE // 50))}
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            events.append({"type": "speech.audio.done", "usage": usage})
            body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
            return self.send_chunked(200, body, "text/event-stream", stall=stall)
        ctype = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm", "opus": "audio/ogg",
                 "aac": "audio/aac", "flac": "audio/flac"}[fmt]
        return self.send_chunked(200, audio, ctype, stall=stall)

    @staticmethod
    def _format(pcm: np.ndarray, fmt: str) -> bytes:
        if fmt == "pcm":
            return pcm.astype("<i2").tobytes()
        if fmt == "wav":
            return fakespeech.wav_bytes(pcm, SPEECH_RATE)
        return fakespeech.encoded_bytes(pcm, SPEECH_RATE, fmt)
