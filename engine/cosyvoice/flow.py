"""CosyVoice 2's flow: speech tokens + voice prompt -> 80-bin mel (``CausalMaskedDiffWithXvec``).

The tokens of the prompt and of the new speech are embedded, encoded and up-sampled to the mel
rate by :class:`~.conformer.UpsampleConformerEncoder`, projected to 80 channels (``mu``), and a
conditional flow-matching decoder (:class:`~.flow_decoder.CausalConditionalCFM`) turns noise into
the mel of the whole sequence, conditioned on ``mu``, the speaker embedding (CAM++, L2-normalised
and projected) and the prompt's own mel. Only the frames after the prompt are returned.

Streaming reruns the growing token sequence with chunk masks (``streaming=True``); until the last
call (``finalize=False``) the final ``pre_lookahead_len`` tokens serve only as look-ahead context
and produce no mel, because their own look-ahead is not known yet.

Parameter names are those of the published ``flow.pt``; :func:`load_flow_state_dict` and
:func:`load_flow_weights` read it unchanged and strictly.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import load_config
from .conformer import UpsampleConformerEncoder
from .flow_decoder import CausalConditionalCFM


class CausalMaskedDiffWithXvec(nn.Module):
    """The published flow. ``cfg_flow`` is the ``flow`` section of ``cosyvoice2.json``."""

    def __init__(self, cfg_flow: dict[str, Any]):
        super().__init__()
        self.cfg = copy.deepcopy(cfg_flow)
        self.output_size = int(cfg_flow["output_size"])
        self.vocab_size = int(cfg_flow["vocab_size"])
        self.spk_embed_dim = int(cfg_flow["spk_embed_dim"])
        self.token_mel_ratio = int(cfg_flow["token_mel_ratio"])
        self.pre_lookahead_len = int(cfg_flow["pre_lookahead_len"])
        self.n_timesteps = int(cfg_flow.get("n_timesteps", 10))
        decoder_cfg = cfg_flow["decoder"]
        estimator_cfg = decoder_cfg["estimator"]
        # The estimator reads [x, mu, speaker, prompt mel], each output_size channels wide.
        if int(estimator_cfg["in_channels"]) != 4 * self.output_size or int(estimator_cfg["out_channels"]) != self.output_size:
            raise ValueError(f"flow.decoder.estimator: in/out channels {estimator_cfg['in_channels']}/"
                             f"{estimator_cfg['out_channels']} do not fit a {self.output_size}-bin mel "
                             f"(expected {4 * self.output_size}/{self.output_size})")
        if int(cfg_flow["encoder"].get("upsample_stride", 2)) != self.token_mel_ratio:
            raise ValueError("flow.encoder.upsample_stride must equal flow.token_mel_ratio")
        self.input_embedding = nn.Embedding(self.vocab_size, int(cfg_flow["input_size"]))
        self.spk_embed_affine_layer = nn.Linear(self.spk_embed_dim, self.output_size)
        self.encoder = UpsampleConformerEncoder(cfg_flow["encoder"], self.pre_lookahead_len)
        self.encoder_proj = nn.Linear(self.encoder.output_size(), self.output_size)
        self.decoder = CausalConditionalCFM(decoder_cfg, self.output_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder_proj.weight.device

    # ------------------------------------------------------------------ stages (also used for parity)

    def project_speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """CAM++ x-vector ``[1, spk_embed_dim]`` -> ``[1, output_size]``: L2-normalised, then projected."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def encode(self, tokens: torch.Tensor, streaming: bool, finalize: bool) -> torch.Tensor:
        """All tokens (prompt + new) ``[1, N]`` -> encoder features ``[1, frames, encoder width]``
        (before ``encoder_proj``). Without ``finalize`` the last ``pre_lookahead_len`` tokens are
        look-ahead context only, so there are ``(N - pre_lookahead_len) * token_mel_ratio`` frames."""
        x = self.input_embedding(torch.clamp(tokens, min=0))
        if finalize:
            return self.encoder(x, streaming=streaming)
        n = self.pre_lookahead_len
        return self.encoder(x[:, :-n], context=x[:, -n:], streaming=streaming)

    # ------------------------------------------------------------------ inference

    def _check_inputs(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                      embedding: torch.Tensor, finalize: bool) -> None:
        for name, t in (("token", token), ("prompt_token", prompt_token)):
            if t.dim() != 2 or t.size(0) != 1:
                raise ValueError(f"flow.inference: {name} must be [1, N] speech-token ids, got {list(t.shape)}")
            if t.dtype.is_floating_point or t.dtype == torch.bool:
                raise TypeError(f"flow.inference: {name} must hold integer ids, got {t.dtype}")
            if t.numel() and int(t.max()) >= self.vocab_size:
                raise ValueError(f"flow.inference: {name} holds id {int(t.max())}, outside the "
                                 f"{self.vocab_size} speech tokens of the flow")
        if prompt_feat.dim() != 3 or prompt_feat.size(0) != 1 or prompt_feat.size(2) != self.output_size:
            raise ValueError(f"flow.inference: prompt_feat must be [1, frames, {self.output_size}] (the prompt mel, "
                             f"time first), got {list(prompt_feat.shape)}")
        if embedding.dim() != 2 or embedding.shape != (1, self.spk_embed_dim):
            raise ValueError(f"flow.inference: embedding must be [1, {self.spk_embed_dim}] (CAM++), "
                             f"got {list(embedding.shape)}")
        total = prompt_token.size(1) + token.size(1)
        used = total if finalize else total - self.pre_lookahead_len
        if used <= 0:
            raise ValueError(f"flow.inference: {total} tokens leave nothing to decode before the "
                             f"{self.pre_lookahead_len} look-ahead tokens (finalize=False)")
        if prompt_feat.size(1) > used * self.token_mel_ratio:
            raise ValueError(f"flow.inference: prompt_feat has {prompt_feat.size(1)} frames, more than the "
                             f"{used * self.token_mel_ratio} the tokens give")

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, streaming: bool = False, finalize: bool = True, *,
                  noise: torch.Tensor | None = None, n_timesteps: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """Mel ``[1, 80, T]`` float32 for the new tokens.

        ``token`` ``[1, N]`` and ``prompt_token`` ``[1, P]`` are speech-token ids, ``prompt_feat``
        ``[1, frames, 80]`` the prompt's mel (time first, as the reference's frontend makes it; 2
        frames per prompt token), ``embedding`` ``[1, 192]`` the CAM++ speaker embedding. ``T`` is
        ``2 * N`` with ``finalize`` and ``2 * (N - pre_lookahead_len)`` without.

        ``noise`` ``[1, 80, >= frames]`` replaces the fixed noise buffer (for reproducible tests);
        ``n_timesteps`` overrides the configured number of Euler steps. The network runs in the
        dtype of its weights (cast the module for fp16/bf16); the result is always float32.
        ``progress(step, total)`` follows the Euler steps; ``check_interrupt()`` may raise to stop."""
        self._check_inputs(token, prompt_token, prompt_feat, embedding, finalize)
        device, dtype = self.device, self.dtype
        spks = self.project_speaker(embedding.to(device=device, dtype=dtype))
        tokens = torch.cat([prompt_token.to(device=device, dtype=torch.long),
                            token.to(device=device, dtype=torch.long)], dim=1)
        h = self.encode(tokens, streaming, finalize)
        prompt_frames = prompt_feat.size(1)
        mu = self.encoder_proj(h).transpose(1, 2).contiguous()
        frames = mu.size(2)
        cond = torch.zeros(1, self.output_size, frames, device=device, dtype=mu.dtype)
        cond[:, :, :prompt_frames] = prompt_feat.to(device=device, dtype=mu.dtype).transpose(1, 2)
        mask = torch.ones(1, 1, frames, device=device, dtype=mu.dtype)
        mel = self.decoder(mu, mask, self.n_timesteps if n_timesteps is None else int(n_timesteps), spks, cond,
                           streaming=streaming, noise=noise, progress=progress, check_interrupt=check_interrupt)
        return mel[:, :, prompt_frames:].float()


# ---------------------------------------------------------------------- configurations

def flow_config() -> dict[str, Any]:
    """The published flow configuration (a copy of ``cosyvoice2.json``'s ``flow`` section)."""
    return load_config()["flow"]


def small_flow_config() -> dict[str, Any]:
    """A small flow of the same architecture for tests: the encoder keeps its 512 width (the
    reference hard-codes it in the pre-lookahead and up-sampling layers) but has one block before
    the up-sampling and narrow feed-forwards; a 64-token vocabulary; a 64-channel estimator with two
    mid blocks of one transformer block each; chunks of 4 tokens / 8 frames so that short test
    inputs span several chunks."""
    cfg = flow_config()
    cfg["vocab_size"] = 64
    cfg["encoder"].update(num_blocks=1, linear_units=64, attention_heads=8, static_chunk_size=4)
    cfg["decoder"]["estimator"].update(channels=[64], attention_head_dim=16, num_heads=2, n_blocks=1,
                                       num_mid_blocks=2, static_chunk_size=8)
    return cfg


def build_flow(cfg_flow: dict[str, Any] | None = None, device: torch.device | str | None = None) -> CausalMaskedDiffWithXvec:
    """The flow in eval mode (``device="meta"`` builds it without memory, for layout checks)."""
    cfg = flow_config() if cfg_flow is None else cfg_flow
    if device is None:
        return CausalMaskedDiffWithXvec(cfg).eval()
    with torch.device(device):
        return CausalMaskedDiffWithXvec(cfg).eval()


# ---------------------------------------------------------------------- weights

def load_flow_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``flow.pt`` as published: a flat ``{key: tensor}`` zip pickle, loaded with
    ``weights_only=True`` and memory-mapped (tensors stay on disk until used)."""
    path = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: CosyVoice 2 flow weights not found") from None
    except Exception as exc:  # pickle, zip or torch errors: say which file
        raise ValueError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: expected a flat {{key: tensor}} state dict (the published flow.pt layout)")
    return state


def check_flow_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise ValueError(f"{source}: missing key '{key}' (expected shape {list(ref.shape)}) for the flow")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(f"{source}: key '{key}' has shape {list(state[key].shape)}, "
                             f"the flow expects {list(ref.shape)}")
    for key in state:
        if key not in expected:
            raise ValueError(f"{source}: unexpected key '{key}' (not part of the CosyVoice 2 flow)")


def load_flow_weights(model: CausalMaskedDiffWithXvec, state: dict[str, torch.Tensor], source: str,
                      assign: bool = False) -> CausalMaskedDiffWithXvec:
    """Strictly load ``state`` into ``model``. ``assign=True`` adopts the tensors themselves (a
    model built on the meta device then uses the memory-mapped file without a copy)."""
    check_flow_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=assign)
    return model.eval()


def load_flow(path: str | os.PathLike, cfg_flow: dict[str, Any] | None = None,
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> CausalMaskedDiffWithXvec:
    """``flow.pt`` -> a ready flow in ``dtype`` on ``device``. Built on the meta device and
    assigned, so the weights are read once, straight from the file."""
    state = load_flow_state_dict(path)
    model = load_flow_weights(build_flow(cfg_flow, device="meta"), state, os.fspath(path), assign=True)
    return model.to(device=device, dtype=dtype)
