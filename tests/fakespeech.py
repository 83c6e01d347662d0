"""What the fake speech servers (fakeopenai, fakeelevenlabs) share: a deterministic "voice" and
the HTTP plumbing of audio answers (chunked bodies, odd chunk sizes, stalls).

The voice: every character of the input lasts ``CHAR_S / speed`` seconds; a letter, digit or CJK
character is a tone whose pitch follows the character, anything else (spaces, punctuation) is
silence. So a test can compute exactly what a piece must sound like (:func:`render`) and where
each character lies (:func:`char_times`), independently of the client under test.
"""
from __future__ import annotations

import io
import time

import numpy as np

CHAR_S = 0.004
AMPLITUDE = 0.3


def samples_per_char(sample_rate: int, speed: float = 1.0) -> int:
    return max(1, int(round(sample_rate * CHAR_S / float(speed))))


def render(text: str, sample_rate: int, speed: float = 1.0) -> np.ndarray:
    """The int16 samples the fake voice speaks for ``text``."""
    n = samples_per_char(sample_rate, speed)
    t = np.arange(n) / sample_rate
    parts = []
    for ch in text:
        if ch.isalnum():
            f = 200.0 + (ord(ch) % 40) * 20.0
            parts.append(np.round(AMPLITUDE * 32767 * np.sin(2 * np.pi * f * t)).astype(np.int16))
        else:
            parts.append(np.zeros(n, np.int16))
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


def char_times(text: str, sample_rate: int, speed: float = 1.0) -> tuple[list[float], list[float]]:
    n = samples_per_char(sample_rate, speed)
    starts = [k * n / sample_rate for k in range(len(text))]
    return starts, [s + n / sample_rate for s in starts]


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def encoded_bytes(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """``pcm`` encoded as mp3/opus/aac/flac with PyAV (what a real server sends for those formats)."""
    import av

    codec, container = {"mp3": ("libmp3lame", "mp3"), "opus": ("libopus", "ogg"), "aac": ("aac", "adts"),
                        "flac": ("flac", "flac")}[fmt]
    rate = 48000 if fmt == "opus" else sample_rate
    x = pcm.astype(np.float32) / 32768.0
    if rate != sample_rate:
        x = np.interp(np.arange(int(len(x) * rate / sample_rate)) * sample_rate / rate, np.arange(len(x)), x).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        st = out.add_stream(codec, rate=rate)
        st.layout = "mono"
        fmt_name = st.codec_context.codec.audio_formats[0].name if st.codec_context.codec.audio_formats else "fltp"
        frame_len = 1152 if fmt == "mp3" else 960 if fmt == "opus" else 1024
        for k in range(0, len(x), frame_len):
            block = x[k:k + frame_len]
            fr = av.AudioFrame.from_ndarray(block[None, :].astype(np.float32), format="fltp", layout="mono")
            fr.sample_rate = rate
            if fmt_name != "fltp":
                fr = av.AudioResampler(format=fmt_name, layout="mono", rate=rate).resample(fr)[0]
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return buf.getvalue()


class AudioAnswers:
    """Mixin for the fake request handlers: send a body in HTTP/1.1 chunks of the server's
    ``chunk_bytes`` (odd by default, so 16-bit samples straddle chunks), ``chunk_delay_s`` apart,
    counting what was sent in ``server.chunks_sent``; ``stall`` stops after some bytes."""

    def send_chunked(self, status: int, body: bytes, content_type: str, headers: dict | None = None,
                     stall: tuple[int, float] | None = None) -> None:
        srv = self.server
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        size = max(1, int(srv.chunk_bytes))
        sent = 0
        for k in range(0, len(body), size):
            part = body[k:k + size]
            if stall is not None and sent + len(part) > stall[0]:
                part = part[:max(0, stall[0] - sent)]
                if part:
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.flush()
                time.sleep(stall[1])
                self.close_connection = True
                return
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.flush()
            sent += len(part)
            with srv.lock:
                srv.chunks_sent += 1
            if srv.chunk_delay_s:
                time.sleep(srv.chunk_delay_s)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeClock:
    """The clock of the HTTP base (``providers.http.time``) replaced by one that moves only when slept
    on, so a test measures the backoff a client waits without waiting. Give the client
    ``sleep=clock.sleep`` and call :meth:`install` with pytest's ``monkeypatch``."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def install(self, monkeypatch) -> "FakeClock":
        import types

        from comfyui_digitalhuman.providers import http

        monkeypatch.setattr(http, "time", types.SimpleNamespace(monotonic=self.monotonic, sleep=self.sleep, time=time.time))
        return self
