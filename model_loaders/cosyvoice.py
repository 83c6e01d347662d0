"""Build CosyVoice 2 from the published files of ``FunAudioLLM/CosyVoice2-0.5B``, unchanged.

Files (catalogue ``cosyvoice.*``): ``llm.pt``, ``flow.pt``, ``hift.pt`` (flat state dicts, strict),
the tokenizer files of ``CosyVoice-BlankEN/`` and its ``config.json`` (checked against the Qwen2
configuration in ``engine/cosyvoice/cosyvoice2.json``; BlankEN's 1 GB ``model.safetensors`` is never
needed, because ``llm.pt`` holds every Qwen2 weight), and, only for cloning a voice, the two ONNX
networks ``campplus.onnx`` and ``speech_tokenizer_v2.onnx``.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable

import torch

from ..engine.cosyvoice import flow as flow_mod
from ..engine.cosyvoice import hift as hift_mod
from ..engine.cosyvoice import llm as llm_mod
from ..engine.cosyvoice.config import load_config
from ..engine.cosyvoice.pipeline import CosyVoiceModel
from ..engine.cosyvoice.text import QwenTextTokenizer, TextFrontend
from .weights_io import ADVICE

#: Catalogue ids of what synthesis needs, by role.
CATALOG_IDS = {
    "llm": "cosyvoice.llm",
    "flow": "cosyvoice.flow",
    "hift": "cosyvoice.hift",
    "qwen_config": "cosyvoice.qwen_config",
    "qwen_vocab": "cosyvoice.qwen_vocab",
    "qwen_merges": "cosyvoice.qwen_merges",
    "qwen_tokenizer_config": "cosyvoice.qwen_tokenizer_config",
}
#: ... and what cloning a voice needs in addition.
CLONE_IDS = {"campplus": "cosyvoice.campplus", "speech_tokenizer": "cosyvoice.speech_tokenizer"}

#: Qwen2 configuration fields that decide the network's shape (the rest is bookkeeping).
_SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                 "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
                 "hidden_act", "max_position_embeddings")


def ensure_files(ensure: Callable[[str], Path], ids: dict[str, str] = CATALOG_IDS) -> dict[str, Path]:
    """Local path of each file through ``ensure(model_id)`` (``download.ensure_model``)."""
    return {role: Path(ensure(mid)) for role, mid in ids.items()}


def check_qwen_config(path: Path, expected: dict) -> None:
    """``CosyVoice-BlankEN/config.json`` must describe the network ``cosyvoice2.json`` builds."""
    try:
        got = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    diff = [f"{k}={got.get(k)!r} (expected {expected.get(k)!r})" for k in _SHAPE_FIELDS if got.get(k) != expected.get(k)]
    if diff:
        raise ValueError(f"{path}: this is not CosyVoice2-0.5B's Qwen2 configuration: " + ", ".join(diff))


def load_cosyvoice(files: dict[str, Path], device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, cfg: dict | None = None) -> CosyVoiceModel:
    """The three networks on ``device`` (language model and flow in ``dtype``; HiFT's filters in
    ``dtype`` with its F0, source and iSTFT in float32) and the text front end."""
    cfg = cfg or load_config()
    device = torch.device(device)
    check_qwen_config(files["qwen_config"], cfg["qwen2"])
    folder = Path(files["qwen_vocab"]).parent
    for role in ("qwen_merges", "qwen_tokenizer_config"):
        if Path(files[role]).parent != folder:
            raise ValueError(f"the CosyVoice tokenizer files must sit in one folder: {files['qwen_vocab']} and {files[role]}")
    tokenizer = QwenTextTokenizer(folder)
    with _named_advice():
        llm = llm_mod.load_llm(files["llm"], cfg["llm"], cfg["qwen2"], device=device, dtype=dtype)
        flow = flow_mod.load_flow(files["flow"], cfg["flow"], dtype=dtype, device=device)
        hift = hift_mod.load_hift(files["hift"], cfg["hift"]).to(device)
    if dtype != torch.float32:
        hift.set_precision(dtype)
    return CosyVoiceModel(llm=llm, flow=flow, hift=hift, tokenizer=tokenizer, frontend=TextFrontend(tokenizer),
                          cfg=cfg, sample_rate=int(cfg["sample_rate"]))


@contextlib.contextmanager
def _named_advice():
    """The engine's loaders name the file and the first bad key; add what the user can do."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{exc}. {ADVICE}") from exc


class CosyVoiceBundle(torch.nn.Module):
    """The three networks as one module, so ComfyUI's ModelPatcher moves them together."""

    def __init__(self, model: CosyVoiceModel):
        super().__init__()
        self.llm, self.flow, self.hift = model.llm, model.flow, model.hift
        self._rest = (model.tokenizer, model.frontend, model.cfg, model.sample_rate)

    def model(self) -> CosyVoiceModel:
        """The engine's view of the networks wherever ComfyUI has put them now."""
        device = next(self.flow.parameters()).device
        if hasattr(self.llm, "tie_embeddings"):
            self.llm.tie_embeddings()
        if hasattr(self.llm, "llm") and hasattr(self.llm.llm, "rebuild_rotary"):
            self.llm.llm.rebuild_rotary(device)
        tok, fe, cfg, sr = self._rest
        return CosyVoiceModel(llm=self.llm, flow=self.flow, hift=self.hift, tokenizer=tok, frontend=fe, cfg=cfg,
                              sample_rate=sr)


def load_cloner(files: dict[str, Path], threads: int | None = None):
    """(speech tokenizer, speaker embedding): the ONNX networks cloning needs (CPU, ONNX Runtime)."""
    from ..engine.cosyvoice.onnx_models import SpeakerEmbedding, SpeechTokenizer

    return SpeechTokenizer(files["speech_tokenizer"], threads=threads), SpeakerEmbedding(files["campplus"], threads=threads)
