"""LatentSync's ``UNet3DConditionModel``: an SD-1.5-shaped UNet over 16-frame latent windows.

Input ``[B, 13, F, H/8, W/8]`` = noisy latents (4) + mask (1) + masked-face latents (4) + reference
latents (4); audio tokens ``[B*F, 50, 384]`` (Whisper tiny states, 10 feature frames x 5 layers per
video frame) enter through the cross-attention of every spatial transformer; motion modules
attend across the F frames. Output: the predicted noise ``[B, 4, F, H/8, W/8]``.

Hyper-parameters come from ``latentsync.json`` (the reference's ``configs/unet/stage2*.yaml``);
names of modules and parameters are the reference's, so ``latentsync_unet.pt`` loads strictly.

Feature reuse (DeepCache, as the reference's ``--enable_deepcache`` runs it: ``cache_interval=3,
cache_branch_id=0``): on steps whose index is a multiple of the interval the whole network runs
and the input of the last up-block's final layer is kept; on the other steps only the input
convolution, the time embedding, that final layer (ResNet, transformer, motion module) and the
output head run, on the kept features and the fresh input convolution. This is exactly what the
DeepCache helper's module wrapping computes for branch 0 (its cached attention outputs feed
motion modules that are not wrapped, which recompute the kept value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import (Downsample3D, InflatedConv3d, ResnetBlock3D, Transformer3DModel, Upsample3D,
                     motion_module)


def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, shift: float,
                       max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal time features (diffusers' ``Timesteps``): float32 ``[B, dim]``."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    exponent = exponent / (half - shift)
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def _motion(use: bool, channels: int, cfg: dict) -> nn.Module | None:
    return motion_module(channels, cfg["motion_module_type"], cfg["motion_module_kwargs"]) if use else None


class DownBlock3D(nn.Module):
    """ResNet (+ motion module) layers, then an optional strided-conv down-sampler."""

    has_cross_attention = False

    def __init__(self, cin: int, cout: int, temb: int, layers: int, add_downsample: bool, use_motion: bool,
                 cfg: dict, cross_attention: bool):
        super().__init__()
        groups, eps = cfg["norm_num_groups"], cfg["norm_eps"]
        self.has_cross_attention = cross_attention
        self.resnets = nn.ModuleList(
            [ResnetBlock3D(cin if i == 0 else cout, cout, temb, groups, eps) for i in range(layers)])
        if cross_attention:
            heads = cfg["_heads"]
            self.attentions = nn.ModuleList(
                [Transformer3DModel(heads, cout // heads, cout, groups, cfg["cross_attention_dim"], cfg["add_audio_layer"])
                 for _ in range(layers)])
        self.motion_modules = nn.ModuleList([_motion(use_motion, cout, cfg) for _ in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample3D(cout, cfg["downsample_padding"])]) if add_downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None) -> tuple[torch.Tensor, tuple]:
        states = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.has_cross_attention:
                x = self.attentions[i](x, audio)
            if self.motion_modules[i] is not None:
                x = self.motion_modules[i](x)
            states += (x,)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
            states += (x,)
        return x, states


class UpBlock3D(nn.Module):
    """ResNet (+ transformer) (+ motion module) layers on the skip-concatenated input, then an up-sampler."""

    def __init__(self, cin: int, cout: int, prev_out: int, temb: int, layers: int, add_upsample: bool,
                 use_motion: bool, cfg: dict, cross_attention: bool):
        super().__init__()
        groups, eps = cfg["norm_num_groups"], cfg["norm_eps"]
        self.has_cross_attention = cross_attention
        self.resnets = nn.ModuleList([
            ResnetBlock3D((prev_out if i == 0 else cout) + (cin if i == layers - 1 else cout), cout, temb, groups, eps)
            for i in range(layers)])
        if cross_attention:
            heads = cfg["_heads"]
            self.attentions = nn.ModuleList(
                [Transformer3DModel(heads, cout // heads, cout, groups, cfg["cross_attention_dim"], cfg["add_audio_layer"])
                 for _ in range(layers)])
        self.motion_modules = nn.ModuleList([_motion(use_motion, cout, cfg) for _ in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample3D(cout)]) if add_upsample else None

    def layer(self, i: int, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor,
              audio: torch.Tensor | None) -> torch.Tensor:
        x = self.resnets[i](torch.cat([x, skip], dim=1), temb)
        if self.has_cross_attention:
            x = self.attentions[i](x, audio)
        if self.motion_modules[i] is not None:
            x = self.motion_modules[i](x)
        return x

    def forward(self, x: torch.Tensor, skips: tuple, temb: torch.Tensor, audio: torch.Tensor | None,
                size: tuple[int, int, int] | None = None, start: int = 0,
                keep: dict | None = None) -> torch.Tensor:
        """Layers ``start..`` (the skips are consumed from the end, one per layer). ``keep``: store the
        input of the final layer under ``'last_layer_input'`` (feature reuse)."""
        skips = tuple(skips)
        for i in range(start, len(self.resnets)):
            if keep is not None and i == len(self.resnets) - 1:
                keep["last_layer_input"] = x
            x = self.layer(i, x, skips[-1], temb, audio)
            skips = skips[:-1]
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x, size)
        return x


class UNetMidBlock3DCrossAttn(nn.Module):
    def __init__(self, channels: int, temb: int, cfg: dict, use_motion: bool, layers: int = 1):
        super().__init__()
        groups, eps, scale = cfg["norm_num_groups"], cfg["norm_eps"], cfg["mid_block_scale_factor"]
        heads = cfg["_heads"]
        self.resnets = nn.ModuleList(
            [ResnetBlock3D(channels, channels, temb, groups, eps, scale) for _ in range(layers + 1)])
        self.attentions = nn.ModuleList(
            [Transformer3DModel(heads, channels // heads, channels, groups, cfg["cross_attention_dim"], cfg["add_audio_layer"])
             for _ in range(layers)])
        self.motion_modules = nn.ModuleList([_motion(use_motion, channels, cfg) for _ in range(layers)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        for attn, resnet, mm in zip(self.attentions, self.resnets[1:], self.motion_modules):
            x = attn(x, audio)
            if mm is not None:
                x = mm(x)
            x = resnet(x, temb)
        return x


@dataclass
class FeatureReuse:
    """State of DeepCache-style reuse across the steps of one window (make a new one per window)."""

    interval: int = 3
    kept: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.interval) < 1:
            raise ValueError(f"feature reuse interval must be >= 1, got {self.interval}")

    def full_step(self, step_index: int) -> bool:
        return step_index % int(self.interval) == 0 or "last_layer_input" not in self.kept


class UNet3DConditionModel(nn.Module):
    """The published network; ``config`` is the model section of the reference's yaml."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        cfg = dict(config)
        for key, allowed in (("mid_block_type", "UNetMidBlock3DCrossAttn"), ("act_fn", "silu")):
            if cfg.get(key, allowed) != allowed:
                raise ValueError(f"UNet config {key}={cfg[key]!r} is not supported (only {allowed!r})")
        if cfg.get("center_input_sample"):
            raise ValueError("UNet config center_input_sample=true is not supported")
        heads = cfg["attention_head_dim"]
        if not isinstance(heads, int):
            raise ValueError("UNet config attention_head_dim must be one integer (heads per transformer)")
        cfg["_heads"] = heads
        self.config = {k: v for k, v in cfg.items() if not k.startswith("_")}
        ch = list(cfg["block_out_channels"])
        temb = ch[0] * 4
        use_mm = bool(cfg["use_motion_module"])
        res_list = cfg["motion_module_resolutions"]
        decoder_only = bool(cfg["motion_module_decoder_only"])
        self.add_audio_layer = bool(cfg["add_audio_layer"])
        self.flip_sin_to_cos, self.freq_shift = bool(cfg["flip_sin_to_cos"]), float(cfg["freq_shift"])

        self.conv_in = InflatedConv3d(cfg["in_channels"], ch[0], kernel_size=3, padding=(1, 1))
        self.time_embedding = TimestepEmbedding(ch[0], temb)

        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, out = out, ch[i]
            if kind not in ("CrossAttnDownBlock3D", "DownBlock3D"):
                raise ValueError(f"unknown down block type '{kind}'")
            self.down_blocks.append(DownBlock3D(
                cin, out, temb, cfg["layers_per_block"], i < len(ch) - 1,
                use_mm and (2 ** i in res_list) and not decoder_only, cfg, kind == "CrossAttnDownBlock3D"))
        self.mid_block = UNetMidBlock3DCrossAttn(ch[-1], temb, cfg, use_mm and bool(cfg["motion_module_mid_block"]))

        self.num_upsamplers = 0
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList()
        out = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            if kind not in ("CrossAttnUpBlock3D", "UpBlock3D"):
                raise ValueError(f"unknown up block type '{kind}'")
            prev, out = out, rev[i]
            cin = rev[min(i + 1, len(ch) - 1)]
            last = i == len(ch) - 1
            self.num_upsamplers += 0 if last else 1
            self.up_blocks.append(UpBlock3D(
                cin, out, prev, temb, cfg["layers_per_block"] + 1, not last,
                use_mm and (2 ** (3 - i) in res_list), cfg, kind == "CrossAttnUpBlock3D"))

        self.conv_norm_out = nn.GroupNorm(cfg["norm_num_groups"], ch[0], eps=cfg["norm_eps"])
        self.conv_out = InflatedConv3d(ch[0], cfg["out_channels"], kernel_size=3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def _temb(self, timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=device)
        t = t.reshape(-1).to(device)
        t = t.expand(batch) if t.numel() == 1 else t
        emb = timestep_embedding(t, self.conv_in.out_channels, self.flip_sin_to_cos, self.freq_shift)
        return self.time_embedding(emb.to(dtype=self.dtype))

    def forward(self, sample: torch.Tensor, timestep, audio: torch.Tensor | None = None,
                reuse: FeatureReuse | None = None, step_index: int = 0) -> torch.Tensor:
        """Predicted noise for ``sample [B, in, F, h, w]`` at ``timestep``; ``audio [B*F, S, 384]``.

        With ``reuse`` (one per window), steps that are not a multiple of its interval reuse the
        deep features of the last full step (see the module docstring)."""
        if sample.dim() != 5:
            raise ValueError(f"UNet input must be [B, C, F, H, W], got shape {list(sample.shape)}")
        audio = audio if self.add_audio_layer else None
        temb = self._temb(timestep, sample.shape[0], sample.device)
        x = self.conv_in(sample)
        last = self.up_blocks[-1]
        if reuse is not None and not reuse.full_step(step_index):
            h = last.forward(reuse.kept["last_layer_input"], (x,), temb, audio, start=len(last.resnets) - 1)
            return self._head(h)

        factor = 2 ** self.num_upsamplers
        forward_size = any(s % factor != 0 for s in sample.shape[-2:])
        skips: tuple = (x,)
        for block in self.down_blocks:
            x, states = block(x, temb, audio)
            skips += states
        x = self.mid_block(x, temb, audio)
        keep = reuse.kept if reuse is not None else None
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            size = tuple(skips[-1].shape[2:]) if (forward_size and i < len(self.up_blocks) - 1) else None
            x = block(x, res, temb, audio, size, keep=keep if block is last else None)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def build_unet(config: dict[str, Any] | None = None, tiny: bool = False) -> UNet3DConditionModel:
    """The UNet from a config dict (default: the published one from ``latentsync.json``)."""
    from .config import unet_config

    return UNet3DConditionModel(config if config is not None else unet_config(tiny)).eval()
