"""The two published ONNX networks of the CosyVoice 2 front end, run through ONNX Runtime on the CPU.

- :class:`SpeechTokenizer` (``speech_tokenizer_v2.onnx``, S3Tokenizer v2): Whisper log-mel
  [1, 128, T] (float32, input 0) and its frame count [1] (int32, input 1) -> speech tokens
  [1, T/4] (or [1, 1, T/4]), 25 per second, read flattened; prompts of at most 30 s.
- :class:`SpeakerEmbedding` (``campplus.onnx``, CAM++): mean-subtracted Kaldi fbank [1, T, 80]
  (float32, input 0) -> speaker embedding [1, 192].

As in the reference (``cosyvoice/cli/frontend.py``), inputs are fed by position (their names do
not matter), the first output is read, and the session uses ``ORT_ENABLE_ALL`` graph
optimisation on the ``CPUExecutionProvider`` only: no GPU build of ONNX Runtime is ever needed
(the reference runs CAM++ on the CPU and the tokenizer on CUDA when it can; both see the prompt
once per voice, so the CPU costs little).

Threads: the reference pins ``intra_op_num_threads = 1``. That suits CAM++ (a few hundred frames)
but leaves the 0.5 GB tokenizer on one core for seconds with a 30 s prompt. Here the default is
``min(cpu count, frontend.onnx_intra_op_threads_max)`` (4): most of the speed-up, while leaving
cores to torch in a busy ComfyUI process; spinning is off so idle ONNX threads do not burn CPU.
Another thread count may change the summation order inside large kernels, so the embedding can
differ from the reference's in the last bits (tokens only where two codes tie within rounding);
``threads=1`` reproduces the reference's session exactly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import features
from .config import load_config


def _frontend_cfg() -> dict[str, Any]:
    return load_config()["frontend"]


def default_threads() -> int:
    """Intra-op threads for the ONNX sessions (see the module docstring)."""
    cap = int(_frontend_cfg()["onnx_intra_op_threads_max"])
    return max(1, min(os.cpu_count() or 1, cap))


class _OnnxNetwork:
    """An ONNX Runtime CPU session with its input contract checked at load time."""

    WHAT = "ONNX network"
    INPUTS: tuple[tuple[str, int], ...] = ()  # (ONNX element type, rank) per input position

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.WHAT} file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads) if threads else default_threads()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ValueError(f"{self.path}: not a loadable ONNX model for the {self.WHAT} "
                             f"({type(exc).__name__}: {str(exc).strip()[:300]})") from exc
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self._check_contract()

    def _contract(self) -> str:
        return ", ".join(f"{t.replace('tensor(', '').rstrip(')')} rank {r}" for t, r in self.INPUTS)

    def _check_contract(self) -> None:
        if len(self.inputs) != len(self.INPUTS):
            raise ValueError(f"{self.path}: the {self.WHAT} takes {len(self.INPUTS)} inputs ({self._contract()}), "
                             f"this model has {len(self.inputs)} ({', '.join(i.name for i in self.inputs)})")
        for pos, (inp, (etype, rank)) in enumerate(zip(self.inputs, self.INPUTS)):
            shape = inp.shape
            if inp.type != etype or (shape is not None and len(shape) != rank):
                raise ValueError(f"{self.path}: the {self.WHAT}'s input {pos} must be {etype} of rank {rank}, "
                                 f"this model's input {pos} ('{inp.name}') is {inp.type} with shape {shape}")
        if not self.outputs:
            raise ValueError(f"{self.path}: the {self.WHAT} model has no outputs")

    def _run(self, *arrays: np.ndarray) -> np.ndarray:
        feed = {inp.name: a for inp, a in zip(self.inputs, arrays)}
        try:
            return np.asarray(self.session.run([self.outputs[0].name], feed)[0])
        except Exception as exc:
            shapes = ", ".join(str(list(a.shape)) for a in arrays)
            raise RuntimeError(f"{self.path}: the {self.WHAT} failed on inputs of shape {shapes} "
                               f"({type(exc).__name__}: {str(exc).strip()[:300]})") from exc


class SpeechTokenizer(_OnnxNetwork):
    """S3Tokenizer v2 (``speech_tokenizer_v2.onnx``): 16 kHz speech -> 25 Hz speech tokens."""

    WHAT = "speech tokenizer"
    INPUTS = (("tensor(float)", 3), ("tensor(int32)", 1))

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__(path, threads)
        cfg = load_config()
        self.max_seconds = float(cfg["frontend"]["prompt_max_seconds"])
        self.sample_rate = int(cfg["frontend"]["speech_tokenizer_sample_rate"])
        self.n_mels = int(cfg["frontend"]["speech_tokenizer_n_mels"])
        self.vocab = int(cfg["llm"]["speech_token_size"])

    def tokens_from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Whisper log-mel [1, 128, T] -> tokens, int64 [1, n]."""
        mel = torch.as_tensor(mel)
        if mel.dim() != 3 or mel.shape[0] != 1 or mel.shape[1] != self.n_mels:
            raise ValueError(f"speech tokenizer: mel must be [1, {self.n_mels}, frames], got {list(mel.shape)}")
        x = mel.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self._run(x, np.array([x.shape[2]], dtype=np.int32))
        if not np.issubdtype(out.dtype, np.integer) or out.ndim not in (2, 3) or out.shape[0] != 1:
            raise ValueError(f"{self.path}: the speech tokenizer must return integer tokens [1, n] or [1, 1, n], "
                             f"got {out.dtype} {list(out.shape)}")
        tokens = out.reshape(-1).astype(np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab):
            raise ValueError(f"{self.path}: speech tokens must lie in 0..{self.vocab - 1}, "
                             f"got {tokens.min()}..{tokens.max()}")
        return torch.from_numpy(tokens)[None]

    def __call__(self, speech_16k: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Mono 16 kHz speech ([N] or [1, N]) of at most 30 s -> tokens, int64 [1, n]."""
        speech = torch.as_tensor(speech_16k)
        seconds = speech.shape[-1] / self.sample_rate
        if seconds > self.max_seconds:
            raise ValueError(f"prompt audio is {seconds:.1f} s long; the speech tokenizer takes at most "
                             f"{self.max_seconds:g} s (use a shorter reference clip)")
        return self.tokens_from_mel(features.whisper_log_mel(speech, self.n_mels))


class SpeakerEmbedding(_OnnxNetwork):
    """CAM++ (``campplus.onnx``): 16 kHz speech -> 192-dim speaker embedding."""

    WHAT = "speaker embedding (CAM++)"
    INPUTS = (("tensor(float)", 3),)

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__(path, threads)
        cfg = load_config()
        self.dim = int(cfg["flow"]["spk_embed_dim"])
        self.n_bins = int(cfg["frontend"]["campplus_num_mel_bins"])

    def embedding_from_fbank(self, feat: torch.Tensor) -> torch.Tensor:
        """Mean-subtracted fbank [T, 80] -> embedding, float32 [1, 192]."""
        feat = torch.as_tensor(feat)
        if feat.dim() != 2 or feat.shape[1] != self.n_bins or feat.shape[0] < 1:
            raise ValueError(f"speaker embedding: fbank must be [frames, {self.n_bins}], got {list(feat.shape)}")
        out = self._run(feat.detach().to("cpu", torch.float32).contiguous().numpy()[None])
        if out.size != self.dim or not np.issubdtype(out.dtype, np.floating):
            raise ValueError(f"{self.path}: the speaker embedding must return {self.dim} float values, "
                             f"got {out.dtype} {list(out.shape)}")
        return torch.from_numpy(out.reshape(1, -1).astype(np.float32))

    def __call__(self, speech_16k: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Mono 16 kHz speech ([N] or [1, N]) -> embedding, float32 [1, 192]."""
        return self.embedding_from_fbank(features.campplus_fbank(speech_16k))
