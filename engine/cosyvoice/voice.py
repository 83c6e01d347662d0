"""A CosyVoice voice: what cloning takes from a reference clip, kept so it can be reused.

Cloning runs two ONNX networks (speech tokenizer, CAM++) and a mel extractor over the clip;
their results are all the synthesis needs (as the reference's ``spk2info`` entries hold them),
so a saved voice is a small safetensors file (about 10 kB per second of reference speech) and a
later run needs neither the clip nor the ONNX networks.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

VOICE_FORMAT = "dh-cosyvoice2-voice"
VOICE_VERSION = 1
VOICE_SUFFIX = ".safetensors"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")


class VoiceError(ValueError):
    """A voice file or name is unusable; the message names it."""


@dataclass
class Voice:
    """Speech tokens [S] (25 per second), prompt mel [2S, 80] (24 kHz, 50 per second), the
    192-dim CAM++ x-vector, and the transcript of the clip (empty when none was given: then the
    voice can be used cross-lingually only)."""

    speech_tokens: np.ndarray
    speech_feat: np.ndarray
    embedding: np.ndarray
    transcript: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.speech_tokens = np.asarray(self.speech_tokens, dtype=np.int32).reshape(-1)
        self.speech_feat = np.asarray(self.speech_feat, dtype=np.float32)
        self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
        if self.speech_feat.ndim != 2 or self.speech_feat.shape[1] != 80:
            raise VoiceError(f"voice mel must be [frames, 80], got {list(self.speech_feat.shape)}")
        if self.speech_feat.shape[0] != 2 * self.speech_tokens.shape[0]:
            raise VoiceError(
                f"voice mel has {self.speech_feat.shape[0]} frames for {self.speech_tokens.shape[0]} tokens; "
                "CosyVoice 2 needs exactly 2 mel frames per token")
        if self.embedding.shape[0] != 192:
            raise VoiceError(f"voice embedding must have 192 values, got {self.embedding.shape[0]}")
        if not np.isfinite(self.speech_feat).all() or not np.isfinite(self.embedding).all():
            raise VoiceError("voice holds NaN or infinite values")

    @property
    def seconds(self) -> float:
        return self.speech_tokens.shape[0] / 25.0

    def flow_tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens [1, S] int32, mel [1, 2S, 80], embedding [1, 192]) on ``device``."""
        return (torch.from_numpy(self.speech_tokens).to(device).unsqueeze(0),
                torch.from_numpy(self.speech_feat).to(device).unsqueeze(0),
                torch.from_numpy(self.embedding).to(device).unsqueeze(0))


def check_voice_name(name: str) -> str:
    """A voice name usable as a file name on every OS (letters, digits, space, ``_ . -``)."""
    name = (name or "").strip()
    if not _NAME.match(name) or name.endswith(".") or ".." in name:
        raise VoiceError(
            f"voice name {name!r} is not allowed: use 1-64 letters, digits, spaces, '_', '-' or '.', "
            "starting with a letter or digit")
    return name


def save_voice(voice: Voice, path: str | Path) -> Path:
    """Write ``voice`` as safetensors (tensors + JSON metadata), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "speech_tokens": torch.from_numpy(voice.speech_tokens.copy()),
        "speech_feat": torch.from_numpy(voice.speech_feat.copy()),
        "embedding": torch.from_numpy(voice.embedding.copy()),
    }
    meta = {"format": VOICE_FORMAT, "version": str(VOICE_VERSION), "transcript": voice.transcript,
            "meta": json.dumps(voice.meta, ensure_ascii=False)}
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_voice(path: str | Path) -> Voice:
    """Read a voice written by :func:`save_voice`; a wrong or damaged file is a :class:`VoiceError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VoiceError(f"voice file '{path}' not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise VoiceError(f"voice file '{path}' is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != VOICE_FORMAT:
        raise VoiceError(f"'{path}' is not a DigitalHuman CosyVoice voice (format {meta.get('format')!r})")
    missing = {"speech_tokens", "speech_feat", "embedding"} - set(tensors)
    if missing:
        raise VoiceError(f"voice file '{path}' lacks {', '.join(sorted(missing))}")
    try:
        extra = json.loads(meta.get("meta") or "{}")
    except ValueError:
        extra = {}
    return Voice(tensors["speech_tokens"].numpy(), tensors["speech_feat"].numpy(), tensors["embedding"].numpy(),
                 transcript=meta.get("transcript", ""), meta=extra)
