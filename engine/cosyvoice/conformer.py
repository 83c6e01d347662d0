"""The flow's token encoder: ``UpsampleConformerEncoder`` of CosyVoice 2 (WeNet-style conformer).

Speech tokens (25 per second) pass a linear embedding, a pre-lookahead convolution that lets each
token see the next ``pre_lookahead_len`` tokens, six relative-position self-attention blocks, a 2x
nearest up-sampling with a causal convolution (to the 50 Hz mel rate), and four more blocks.
Module and parameter names follow the published ``flow.pt`` (``encoder.*``) so it loads unchanged.
Only what inference needs is here: no dropout at run time, no attention cache, batch-wide masks.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .masks import attention_mask

_ACTIVATIONS = {"swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}


class RelPositionalEncoding(nn.Module):
    """ESPnet's relative positional encoding (``rel_pos_espnet``): scales the input by sqrt(d) and
    returns the sinusoid table for relative distances ``T-1 .. -(T-1)``.

    The table is computed for the length at hand (the reference keeps a 5000-step table and slices
    the same rows out of it), so nothing is stored in the state dict."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def table(self, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[1, 2*size-1, d_model]``: row ``m`` encodes the relative distance ``size-1-m``."""
        key = (size, device, dtype)
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            inv_freq = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32)
                                 * -(math.log(10000.0) / self.d_model))
            distance = torch.arange(size - 1, -size, -1, dtype=torch.float32).unsqueeze(1)
            angle = distance * inv_freq
            pe = torch.empty(2 * size - 1, self.d_model, dtype=torch.float32)
            pe[:, 0::2] = torch.sin(angle)
            pe[:, 1::2] = torch.cos(angle)
            self._cache[key] = pe.unsqueeze(0).to(device=device, dtype=dtype)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * self.xscale, self.table(x.size(1), x.device, x.dtype)


class LinearEmbed(nn.Module):
    """WeNet's ``LinearNoSubsampling``: Linear + LayerNorm (+ dropout), then the positional scale."""

    def __init__(self, idim: int, odim: int, dropout_rate: float):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(dropout_rate))
        self.pos_enc = RelPositionalEncoding(odim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pos_enc(self.out(x))

    def embed_context(self, x: torch.Tensor) -> torch.Tensor:
        """Look-ahead context tokens: the same projection and scale; their positions are unused."""
        return self.out(x) * self.pos_enc.xscale


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (``rel_selfattn``):
    score(i, j) = (q_i + u) . k_j + (q_i + v) . p_(i-j), divided by sqrt(d_k)."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float, key_bias: bool = True):
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"attention: {n_feat} features do not split into {n_head} heads")
        self.h, self.d_k = n_head, n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.dropout = nn.Dropout(dropout_rate)

    @staticmethod
    def _relative_to_absolute(scores: torch.Tensor) -> torch.Tensor:
        """``[..., T, 2T-1]`` scores against relative distances ``T-1 .. -(T-1)`` to ``[..., T, T]``
        against key positions: entry (i, j) is column ``T-1-i+j`` of row i (distance i-j)."""
        scores = scores.contiguous()
        t = scores.size(-2)
        *lead, s_row, s_col = scores.stride()
        return scores.as_strided((*scores.shape[:-1], t), (*lead, s_row - s_col, s_col),
                                 scores.storage_offset() + (t - 1) * s_col)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, pos_emb: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        if position.shape != content.shape:
            position = self._relative_to_absolute(position)
        scores = (content + position) / math.sqrt(self.d_k)
        if mask is not None:
            hidden = ~mask.unsqueeze(1)  # [B, 1, T or 1, T]
            scores = scores.masked_fill(hidden, float("-inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(hidden, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(self.dropout(attn), v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, idim: int, hidden_units: int, dropout_rate: float, activation: nn.Module):
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden_units)
        self.activation = activation
        self.dropout = nn.Dropout(dropout_rate)
        self.w_2 = nn.Linear(hidden_units, idim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class ConformerLayer(nn.Module):
    """A conformer block as CosyVoice 2 configures it: self-attention and one feed-forward, no
    macaron half-step and no convolution module (``macaron_style``/``use_cnn_module`` false)."""

    def __init__(self, size: int, self_attn: RelPositionAttention, feed_forward: PositionwiseFeedForward,
                 dropout_rate: float, normalize_before: bool):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.norm_ff = nn.LayerNorm(size, eps=1e-12)
        self.norm_mha = nn.LayerNorm(size, eps=1e-12)
        self.dropout = nn.Dropout(dropout_rate)
        self.normalize_before = normalize_before

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, pos_emb: torch.Tensor) -> torch.Tensor:
        h = self.norm_mha(x) if self.normalize_before else x
        x = x + self.dropout(self.self_attn(h, mask, pos_emb))
        if not self.normalize_before:
            x = self.norm_mha(x)
        h = self.norm_ff(x) if self.normalize_before else x
        x = x + self.dropout(self.feed_forward(h))
        if not self.normalize_before:
            x = self.norm_ff(x)
        return x


class PreLookaheadLayer(nn.Module):
    """Lets each token see the next ``pre_lookahead_len`` tokens: a right-looking convolution, a
    leaky ReLU, a causal kernel-3 convolution and a residual. At the end of a stream the missing
    look-ahead is zeros; mid-stream the caller passes the next tokens as ``context``."""

    def __init__(self, channels: int, pre_lookahead_len: int):
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=pre_lookahead_len + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs.transpose(1, 2)
        if context is not None and context.size(1) > 0:
            if context.size(1) != self.pre_lookahead_len:
                raise ValueError(f"pre-lookahead context: expected {self.pre_lookahead_len} frames, "
                                 f"got {context.size(1)}")
            x = torch.cat([x, context.transpose(1, 2)], dim=2)
        else:
            x = F.pad(x, (0, self.pre_lookahead_len))
        x = F.leaky_relu(self.conv1(x))
        x = self.conv2(F.pad(x, (self.conv2.kernel_size[0] - 1, 0)))
        return x.transpose(1, 2) + inputs


class UpsampleConv(nn.Module):
    """``Upsample1D`` of the encoder: nearest repeat by ``stride``, then a causal convolution."""

    def __init__(self, channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, out_channels, 2 * stride + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.repeat_interleave(x, self.stride, dim=2)
        return self.conv(F.pad(x, (2 * self.stride, 0)))


class UpsampleConformerEncoder(nn.Module):
    """Tokens ``[B, N, input_size]`` -> features ``[B, N * stride, output_size]``.

    ``streaming`` switches on the static chunk masks (``static_chunk_size`` tokens before the
    up-sampling, ``static_chunk_size * stride`` frames after it)."""

    def __init__(self, cfg: dict[str, Any], pre_lookahead_len: int):
        super().__init__()
        for key, want in (("input_layer", "linear"), ("pos_enc_layer_type", "rel_pos_espnet"),
                          ("selfattention_layer_type", "rel_selfattn")):
            if cfg.get(key, want) != want:
                raise ValueError(f"flow.encoder.{key}: only {want!r} (CosyVoice 2) is implemented, got {cfg[key]!r}")
        for key in ("use_cnn_module", "macaron_style"):
            if cfg.get(key):
                raise ValueError(f"flow.encoder.{key}: not used by CosyVoice 2 and not implemented")
        size = int(cfg["output_size"])
        if int(cfg["input_size"]) != size:
            raise ValueError(f"flow.encoder: input_size {cfg['input_size']} must equal output_size {size} "
                             "(the pre-lookahead residual and the up-sampling keep the width)")
        self._output_size = size
        self.static_chunk_size = int(cfg.get("static_chunk_size", 0))
        self.normalize_before = bool(cfg["normalize_before"])
        dropout = float(cfg["dropout_rate"])
        activation = _ACTIVATIONS[cfg.get("activation_type", "swish")]

        def layers(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                ConformerLayer(size,
                               RelPositionAttention(int(cfg["attention_heads"]), size,
                                                    float(cfg["attention_dropout_rate"]), bool(cfg.get("key_bias", True))),
                               PositionwiseFeedForward(size, int(cfg["linear_units"]), dropout, activation()),
                               dropout, self.normalize_before)
                for _ in range(n))

        self.embed = LinearEmbed(size, size, dropout)
        self.after_norm = nn.LayerNorm(size, eps=1e-5)
        self.pre_lookahead_layer = PreLookaheadLayer(size, pre_lookahead_len)
        self.encoders = layers(int(cfg["num_blocks"]))
        self.up_layer = UpsampleConv(size, size, int(cfg.get("upsample_stride", 2)))
        self.up_embed = LinearEmbed(size, size, dropout)
        self.up_encoders = layers(int(cfg.get("num_up_blocks", 4)))

    def output_size(self) -> int:
        return self._output_size

    @staticmethod
    def _mask(x: torch.Tensor, chunk: int) -> torch.Tensor | None:
        # Batch of one, no padding: without chunks every frame sees every frame (no mask at all).
        if chunk <= 0:
            return None
        return attention_mask(torch.ones(x.size(0), 1, x.size(1), dtype=torch.bool, device=x.device), chunk)

    def forward(self, xs: torch.Tensor, context: torch.Tensor | None = None, streaming: bool = False) -> torch.Tensor:
        xs, pos_emb = self.embed(xs)
        if context is not None and context.size(1) > 0:
            context = self.embed.embed_context(context)
        mask = self._mask(xs, self.static_chunk_size if streaming else 0)
        xs = self.pre_lookahead_layer(xs, context)
        for layer in self.encoders:
            xs = layer(xs, mask, pos_emb)
        # contiguous as in the reference: a transposed input would take another GEMM path (other rounding)
        xs = self.up_layer(xs.transpose(1, 2)).transpose(1, 2).contiguous()
        xs, pos_emb = self.up_embed(xs)
        mask = self._mask(xs, self.static_chunk_size * self.up_layer.stride if streaming else 0)
        for layer in self.up_encoders:
            xs = layer(xs, mask, pos_emb)
        if self.normalize_before:
            xs = self.after_norm(xs)
        return xs
