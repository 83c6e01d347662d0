"""Building blocks of LatentSync's 3-D UNet: ResNet blocks, spatial transformers with audio
cross-attention, AnimateDiff-style temporal motion modules, down/up-sampling.

Tensors are video latents ``[B, C, F, H, W]``. Spatial layers (convolutions, the transformers'
group norms and attention) run per frame by folding F into the batch; two places mix frames and
are kept exactly as the reference has them, because the published weights were trained so:

* the ResNet blocks' ``GroupNorm`` (and the UNet's output norm) get the 5-D tensor, so their
  statistics are taken over all frames of the window together;
* the motion modules attend along F at every spatial position, with a learnt-free sinusoidal
  position table stored in the checkpoint (``pos_encoder.pe``, 24 positions).

Module and parameter names follow ``latentsync/models/*.py`` so ``latentsync_unet.pt`` loads
unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,F,H,W]`` -> ``[B*F,C,H,W]`` (batch-major, as einops' "b c f h w -> (b f) c h w")."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``[B*F,C,H,W]`` -> ``[B,C,F,H,W]``."""
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)


class InflatedConv3d(nn.Conv2d):
    """A 2-D convolution applied to every frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold_frames(super().forward(fold_frames(x)), x.shape[2])


class GEGLU(nn.Module):
    """``a * gelu(b)`` with ``[a, b]`` one projection (diffusers' GEGLU; key ``proj``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x wide (keys ``net.0.proj``, ``net.2``; ``net.1`` is dropout)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class Attention(nn.Module):
    """Multi-head attention without q/k/v bias, output projection with bias (``to_out.0``)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        kv_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).permute(0, 2, 1, 3)

    def attend(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(ctx)), self._split(self.to_v(ctx))
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # torch's bf16 attention kernel on the CPU can fail outside its AVX-512 path ("pack_vnni2 is only
            # supported when avx512 is supported", seen with ATEN_CPU_CAPABILITY=default); bf16 on a CPU is
            # not a speed path, so attend in fp32 there
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, d = out.shape
        return self.to_out[0](out.permute(0, 2, 1, 3).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, context)


class BasicTransformerBlock(nn.Module):
    """Self-attention, audio cross-attention (when the UNet has audio layers), feed-forward; pre-norm."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int, add_audio_layer: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        if add_audio_layer:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim)
        else:
            self.attn2 = None
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and audio is not None:
            if audio.dim() == 4:  # [B, F, S, D] -> per frame
                audio = audio.reshape(-1, *audio.shape[2:])
            x = self.attn2(self.norm2(x), audio) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Per-frame spatial transformer: group norm, 1x1 conv in, transformer block(s), 1x1 conv out, residual."""

    def __init__(self, heads: int, dim_head: int, in_channels: int, groups: int, cross_attention_dim: int,
                 add_audio_layer: bool, num_layers: int = 1):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, cross_attention_dim, add_audio_layer) for _ in range(num_layers)])
        self.proj_out = nn.Conv2d(inner, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        frames = x.shape[2]
        x = fold_frames(x)
        b, _, h, w = x.shape
        residual = x
        y = self.proj_in(self.norm(x))
        inner = y.shape[1]
        y = y.permute(0, 2, 3, 1).reshape(b, h * w, inner)
        for block in self.transformer_blocks:
            y = block(y, audio)
        y = y.reshape(b, h, w, inner).permute(0, 3, 1, 2).contiguous()
        return unfold_frames(self.proj_out(y) + residual, frames)


class PositionalEncoding(nn.Module):
    """Sinusoidal table ``pe [1, max_len, d]`` (a persistent buffer: the checkpoint stores it)."""

    def __init__(self, d_model: int, max_len: int = 24):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div)
        pe[0, :, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"a window of {x.shape[1]} frames is longer than the motion modules' "
                             f"{self.pe.shape[1]} positions; use at most {self.pe.shape[1]} frames per window")
        return x + self.pe[:, : x.shape[1]]


class TemporalAttention(Attention):
    """Self-attention along the frames of each spatial position (the reference's VersatileAttention)."""

    def __init__(self, dim: int, heads: int, dim_head: int, position_encoding: bool, max_len: int):
        super().__init__(dim, heads, dim_head)
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, s, c = x.shape
        x = x.reshape(bf // frames, frames, s, c).permute(0, 2, 1, 3).reshape(-1, frames, c)  # (b s) f c
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        out = self.attend(x)
        return out.reshape(bf // frames, s, frames, c).permute(0, 2, 1, 3).reshape(bf, s, c)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, block_types: list[str], position_encoding: bool,
                 max_len: int):
        super().__init__()
        for name in block_types:
            if name != "Temporal_Self":
                raise ValueError(f"motion module attention type '{name}' is not supported (only Temporal_Self)")
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, dim_head, position_encoding, max_len) for _ in block_types])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in block_types])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, layers: int, block_types: list[str],
                 position_encoding: bool, max_len: int, groups: int = 32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, dim_head, block_types, position_encoding, max_len)
             for _ in range(layers)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        x = fold_frames(x)
        b, c, h, w = x.shape
        residual = x
        y = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, frames)
        y = self.proj_out(y).reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return unfold_frames(y + residual, frames)


class VanillaTemporalModule(nn.Module):
    """The motion module: a temporal transformer (its ``proj_out`` was zero-initialised for training)."""

    def __init__(self, in_channels: int, num_attention_heads: int = 8, num_transformer_block: int = 2,
                 attention_block_types=("Temporal_Self", "Temporal_Self"), temporal_position_encoding: bool = False,
                 temporal_position_encoding_max_len: int = 24, temporal_attention_dim_div: int = 1,
                 zero_initialize: bool = True, cross_frame_attention_mode=None):
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels, num_attention_heads, in_channels // num_attention_heads // temporal_attention_dim_div,
            num_transformer_block, list(attention_block_types), temporal_position_encoding,
            temporal_position_encoding_max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)


def motion_module(channels: int, kind: str | None, kwargs: dict):
    if kind != "Vanilla":
        raise ValueError(f"motion module type '{kind}' is not supported (only 'Vanilla')")
    return VanillaTemporalModule(channels, **kwargs)


class ResnetBlock3D(nn.Module):
    """GroupNorm (over all frames) -> SiLU -> conv, + time embedding, GroupNorm -> SiLU -> conv, + skip."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 output_scale_factor: float = 1.0, time_embedding_norm: str = "default"):
        super().__init__()
        if time_embedding_norm != "default":
            raise ValueError(f"resnet_time_scale_shift '{time_embedding_norm}' is not supported (only 'default')")
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = InflatedConv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = InflatedConv3d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = (InflatedConv3d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
                              if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor


class Downsample3D(nn.Module):
    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest 2x up-sampling of every frame, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int, int] | None = None) -> torch.Tensor:
        """``size``: the (F, H, W) to reach when the input is not a multiple of the down-sampling."""
        if size is None:
            x = F.interpolate(x, scale_factor=[1.0, 2.0, 2.0], mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)
