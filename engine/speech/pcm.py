"""Decoding what voices send: raw 16-bit PCM in any chunking, WAV, and compressed formats.

Why own WAV parsing: a streamed WAV (OpenAI's ``wav`` while streaming) may carry a placeholder
data size (0 or 0xFFFFFFFF), which strict readers reject; here the data runs to the end then.
Raw PCM arriving over HTTP is cut wherever the network cuts it, so a 16-bit sample can be split
between two chunks: :class:`Pcm16Stream` keeps the odd byte for the next one.
"""
from __future__ import annotations

import io
import logging
import struct
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger("DigitalHuman.speech")

_PCM_SCALE = 32768.0


def pcm16_to_float(data: bytes | bytearray | memoryview, where: str = "pcm") -> np.ndarray:
    """Little-endian signed 16-bit mono PCM -> float32 in -1..1 (``x / 32768``)."""
    if len(data) % 2:
        raise ValueError(f"{where}: 16-bit PCM must have an even number of bytes, got {len(data)}")
    return (np.frombuffer(bytes(data), dtype="<i2").astype(np.float32) / _PCM_SCALE)


class Pcm16Stream:
    """Turns a byte stream of 16-bit LE mono PCM, cut anywhere, into float32 sample blocks."""

    def __init__(self) -> None:
        self._carry = b""
        self.samples_out = 0

    def feed(self, data: bytes) -> np.ndarray:
        """The whole samples completed by ``data`` (a dangling odd byte waits for the next call)."""
        buf = self._carry + bytes(data)
        whole = len(buf) - (len(buf) % 2)
        self._carry = buf[whole:]
        out = pcm16_to_float(buf[:whole])
        self.samples_out += len(out)
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._carry)

    def flush(self, where: str = "pcm stream") -> int:
        """End of stream: drops (and reports) a dangling byte; returns how many bytes were dropped."""
        n = len(self._carry)
        if n:
            log.warning("[DigitalHuman] %s ended inside a 16-bit sample (%d byte dropped)", where, n)
        self._carry = b""
        return n


def parse_wav(data: bytes, where: str = "wav") -> tuple[np.ndarray, int]:
    """RIFF/WAVE bytes -> (mono float32 samples, sample rate); channels are averaged.

    Takes integer PCM of 8/16/24/32 bits and IEEE float of 32/64 bits (also inside
    WAVE_FORMAT_EXTENSIBLE). A data size of 0, 0xFFFFFFFF or past the end means "to the end".
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{where}: not a WAV file (no RIFF/WAVE header)")
    pos = 12
    fmt = None
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16:
                raise ValueError(f"{where}: 'fmt ' chunk too short ({size} bytes)")
            tag, ch, sr, _, align, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            if tag == 0xFFFE and size >= 40:
                tag = struct.unpack("<H", data[body + 24:body + 26])[0]
            fmt = (tag, ch, sr, align, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError(f"{where}: 'data' before 'fmt ' chunk")
            end = len(data) if size in (0, 0xFFFFFFFF) or body + size > len(data) else body + size
            return _wav_samples(data[body:end], fmt, where)
        pos = body + size + (size & 1)
    raise ValueError(f"{where}: no 'data' chunk" if fmt is not None else f"{where}: no 'fmt ' chunk")


def _wav_samples(raw: bytes, fmt: tuple[int, int, int, int, int], where: str) -> tuple[np.ndarray, int]:
    tag, ch, sr, align, bits = fmt
    if ch < 1 or sr < 1:
        raise ValueError(f"{where}: {ch} channels at {sr} Hz is not playable audio")
    width = bits // 8
    frame = width * ch
    if frame == 0:
        raise ValueError(f"{where}: {bits}-bit samples are not supported")
    raw = raw[:len(raw) - len(raw) % frame]
    if tag == 1 and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif tag == 1 and bits == 32:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    elif tag == 3 and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise ValueError(f"{where}: WAV format tag {tag} with {bits}-bit samples is not supported")
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def decode_compressed(data: bytes, where: str = "audio") -> tuple[np.ndarray, int]:
    """MP3/Opus/AAC/FLAC/... bytes -> (mono float32, sample rate) through PyAV (imported here only)."""
    import av

    from ..media.audio_io import decode_audio_stream

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as exc:
        raise ValueError(f"{where}: not readable audio ({exc.strerror or exc})") from None
    with container:
        if not container.streams.audio:
            raise ValueError(f"{where}: holds no audio stream")
        wave_, sr = decode_audio_stream(container, container.streams.audio[0], where)
    mono = wave_.mean(axis=0) if wave_.shape[0] > 1 else wave_[0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


def decode_audio(data: bytes, fmt: str, sample_rate: int | None = None, where: str = "audio") -> tuple[np.ndarray, int]:
    """Bytes in format ``fmt`` ("pcm" needs ``sample_rate``; "wav"; anything PyAV reads) -> (mono, rate)."""
    fmt = (fmt or "").lower()
    if not data:
        raise ValueError(f"{where}: the voice returned no audio (0 bytes)")
    if fmt in ("pcm", "pcm_s16le", "s16le"):
        if not sample_rate:
            raise ValueError(f"{where}: raw PCM needs its sample rate")
        if len(data) % 2:
            log.warning("[DigitalHuman] %s: odd PCM byte count %d; the last byte is dropped", where, len(data))
            data = data[:-1]
        return pcm16_to_float(data, where), int(sample_rate)
    if fmt == "wav":
        return parse_wav(data, where)
    return decode_compressed(data, where)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Mono float samples -> 16-bit PCM WAV at ``path`` (clipped to -1..1; NaN as 0)."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    p = Path(path)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return p
