"""The flow's mel decoder: conditional flow matching (``CausalConditionalCFM``) with a causal 1-D
U-Net velocity estimator (``CausalConditionalDecoder``, Matcha-TTS style).

The estimator predicts the velocity that carries noise to a mel spectrogram, given the encoder
features ``mu``, the projected speaker embedding and the prompt mel (``cond``). The sampler runs a
fixed number of Euler steps on a cosine time grid with classifier-free guidance: every step runs
the estimator on a batch of two, the conditioned input and an unconditioned copy whose ``mu``,
speaker and prompt are zeros, and extrapolates ``(1 + r) * cond - r * uncond``.

Module and parameter names follow the published ``flow.pt`` (``decoder.estimator.*``). The
transformer blocks reimplement the parts of diffusers' ``BasicTransformerBlock`` / ``Attention`` /
``FeedForward`` that the published configuration uses, with the same parameter names, so the
weights load whatever diffusers version is installed.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .masks import attention_mask, mask_to_bias


class CausalConv1d(nn.Conv1d):
    """A stride-1 convolution padded on the left only, so frame t never sees frames after t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size)
        self.causal_padding = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.causal_padding, 0)))


class Transpose(nn.Module):
    def __init__(self, dim0: int, dim1: int):
        super().__init__()
        self.dims = (dim0, dim1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(*self.dims)


class CausalBlock1D(nn.Module):
    """Causal conv (kernel 3) -> LayerNorm over channels -> Mish, masked before and after."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = nn.Sequential(CausalConv1d(dim, dim_out, 3), Transpose(1, 2), nn.LayerNorm(dim_out),
                                   Transpose(1, 2), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class CausalResnetBlock1D(nn.Module):
    """Two causal blocks with the time embedding added in between, plus a 1x1 residual path."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(time_emb).unsqueeze(-1)
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


class SinusoidalPosEmb(nn.Module):
    """Matcha's timestep embedding: [sin, cos] of ``1000 * t`` at ``dim / 2`` geometric frequencies."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalPosEmb: dim must be even, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor, scale: float = 1000.0) -> torch.Tensor:
        if t.ndim < 1:
            t = t.unsqueeze(0)
        half = self.dim // 2
        step = math.log(10000) / (half - 1)
        freq = torch.exp(torch.arange(half, device=t.device).float() * -step)
        angle = scale * t.unsqueeze(1) * freq.unsqueeze(0)
        return torch.cat((angle.sin(), angle.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(t)))


class SelfAttention(nn.Module):
    """diffusers' ``Attention`` as the block builds it: bias-free q/k/v, biased output projection,
    scaled dot-product attention with an additive mask."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(b, t, -1).to(q.dtype)
        return self.to_out[1](self.to_out[0](out))


class GELUProjection(nn.Module):
    """diffusers' ``GELU`` activation module: a linear projection followed by GELU."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none"):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


_FF_ACTIVATIONS = {"gelu": "none", "gelu-approximate": "tanh"}


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float, activation_fn: str, mult: int = 4):
        super().__init__()
        if activation_fn not in _FF_ACTIVATIONS:
            raise ValueError(f"flow.decoder.estimator.act_fn: {activation_fn!r} is not implemented "
                             f"(choose from {sorted(_FF_ACTIVATIONS)})")
        inner = dim * mult
        self.net = nn.ModuleList([GELUProjection(dim, inner, _FF_ACTIVATIONS[activation_fn]), nn.Dropout(dropout),
                                  nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            x = module(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention and feed-forward, each with a residual (no cross-attention)."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, dropout: float, activation_fn: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, num_attention_heads, attention_head_dim, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout, activation_fn)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x), bias) + x
        return self.ff(self.norm3(x)) + x


class CausalConditionalDecoder(nn.Module):
    """The velocity estimator: ``(x, mask, mu, t, spks, cond) -> velocity [B, out_channels, T]``.

    One down level (the published ``channels: [256]``): resnet + transformer blocks + causal conv;
    ``num_mid_blocks`` middle levels; one up level fed with the skip connection; final block and a
    1x1 projection. With ``streaming`` the self-attention sees only its own ``static_chunk_size``
    frame chunk and those before it; the convolutions are causal, so the whole network is."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        channels = list(cfg["channels"])
        if len(channels) != 1:
            raise ValueError(f"flow.decoder.estimator.channels: only one U-Net level (as CosyVoice 2's [256]) "
                             f"is implemented, got {channels}")
        ch = int(channels[0])
        in_channels, out_channels = int(cfg["in_channels"]), int(cfg["out_channels"])
        time_dim = ch * 4
        self.in_channels, self.out_channels = in_channels, out_channels
        self.static_chunk_size = int(cfg.get("static_chunk_size", 0))
        if int(cfg.get("num_decoding_left_chunks", -1)) >= 0:
            raise ValueError("flow.decoder.estimator.num_decoding_left_chunks: the reference always attends to "
                             "every left chunk; only -1 is implemented")

        def transformers() -> nn.ModuleList:
            return nn.ModuleList(
                BasicTransformerBlock(ch, int(cfg["num_heads"]), int(cfg["attention_head_dim"]), float(cfg["dropout"]),
                                      cfg["act_fn"])
                for _ in range(int(cfg["n_blocks"])))

        self.time_embeddings = SinusoidalPosEmb(in_channels)
        self.time_mlp = TimestepEmbedding(in_channels, time_dim)
        self.down_blocks = nn.ModuleList([nn.ModuleList([CausalResnetBlock1D(in_channels, ch, time_dim), transformers(),
                                                         CausalConv1d(ch, ch, 3)])])
        self.mid_blocks = nn.ModuleList(nn.ModuleList([CausalResnetBlock1D(ch, ch, time_dim), transformers()])
                                        for _ in range(int(cfg["num_mid_blocks"])))
        self.up_blocks = nn.ModuleList([nn.ModuleList([CausalResnetBlock1D(2 * ch, ch, time_dim), transformers(),
                                                       CausalConv1d(ch, ch, 3)])])
        self.final_block = CausalBlock1D(ch, ch)
        self.final_proj = nn.Conv1d(ch, out_channels, 1)

    def _bias(self, mask: torch.Tensor, streaming: bool, dtype: torch.dtype) -> torch.Tensor | None:
        """The additive attention mask, or None when every frame sees every frame (no padding, not
        streaming), where a zero bias would change nothing."""
        chunk = self.static_chunk_size if streaming else 0
        valid = mask.bool()
        if chunk <= 0 and bool(valid.all()):
            return None
        full = attention_mask(valid, chunk)
        full = full.expand(full.size(0), valid.size(-1), valid.size(-1))
        return mask_to_bias(full, dtype).unsqueeze(1)

    def _transform(self, blocks: nn.ModuleList, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = x.transpose(1, 2).contiguous()
        for block in blocks:
            x = block(x, bias)
        return x.transpose(1, 2).contiguous()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                streaming: bool = False) -> torch.Tensor:
        temb = self.time_mlp(self.time_embeddings(t).to(t.dtype))
        parts = [x, mu]
        if spks is not None:
            parts.append(spks.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        if cond is not None:
            parts.append(cond)
        h = torch.cat(parts, dim=1)
        bias = self._bias(mask, streaming, h.dtype)

        resnet, blocks, downsample = self.down_blocks[0]
        h = self._transform(blocks, resnet(h, mask, temb), bias)
        skip = h
        h = downsample(h * mask)
        for resnet, blocks in self.mid_blocks:
            h = self._transform(blocks, resnet(h, mask, temb), bias)
        resnet, blocks, upsample = self.up_blocks[0]
        h = torch.cat([h[:, :, :skip.size(-1)], skip], dim=1)
        h = self._transform(blocks, resnet(h, mask, temb), bias)
        h = upsample(h * mask)
        h = self.final_block(h, mask)
        return self.final_proj(h * mask) * mask


def cosine_time_grid(n_timesteps: int, scheduler: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``n_timesteps + 1`` times of the Euler solver: uniform, or ``1 - cos(pi/2 * t)``
    (small steps near the noise end, where the flow changes fastest)."""
    t_span = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    if scheduler == "cosine":
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
    elif scheduler != "linear":
        raise ValueError(f"flow.decoder.cfm_params.t_scheduler: {scheduler!r} is not implemented")
    return t_span


def reference_noise(seed: int, frames: int, channels: int) -> torch.Tensor:
    """The reference's fixed noise buffer ``[1, channels, frames]``: the CPU generator seeded with
    ``seed`` and drawn once, as ``CausalConditionalCFM`` does at construction (without touching the
    global RNG here). The values come from torch's CPU normal kernel, whose rounding may differ
    between CPU instruction sets; callers that need exact values pass their own noise."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn([1, channels, frames], generator=generator, device="cpu")


class CausalConditionalCFM(nn.Module):
    """The flow-matching sampler around the estimator (``decoder.*`` in ``flow.pt``)."""

    def __init__(self, cfg: dict[str, Any], mel_channels: int):
        super().__init__()
        params = cfg["cfm_params"]
        if params.get("solver", "euler") != "euler":
            raise ValueError(f"flow.decoder.cfm_params.solver: only 'euler' is implemented, got {params['solver']!r}")
        self.t_scheduler = params["t_scheduler"]
        self.inference_cfg_rate = float(params["inference_cfg_rate"])
        self.mel_channels = mel_channels
        self.estimator = CausalConditionalDecoder(cfg["estimator"])
        # A plain attribute, as in the reference: not part of the state dict, kept on the CPU in float32.
        self.rand_noise = reference_noise(int(cfg["rand_noise_seed"]), int(cfg["rand_noise_frames"]), mel_channels)

    def forward(self, mu: torch.Tensor, mask: torch.Tensor, n_timesteps: int, spks: torch.Tensor,
                cond: torch.Tensor, streaming: bool = False, noise: torch.Tensor | None = None,
                temperature: float = 1.0, progress: Callable[[int, int], None] | None = None,
                check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """``mu``/``cond`` ``[1, C, T]``, ``mask`` ``[1, 1, T]``, ``spks`` ``[1, C]`` -> mel ``[1, C, T]`` float32.

        ``noise`` (``[1, C, >= T]``) replaces the fixed buffer; its first ``T`` frames are used."""
        frames = mu.size(2)
        source = self.rand_noise if noise is None else noise
        if source.dim() != 3 or source.size(0) != 1 or source.size(1) != self.mel_channels:
            raise ValueError(f"flow noise: expected [1, {self.mel_channels}, frames], got {list(source.shape)}")
        if source.size(2) < frames:
            raise ValueError(f"flow noise: {source.size(2)} frames cover at most that many mel frames; "
                             f"this call needs {frames} (split the utterance)")
        x = source[:, :, :frames].to(mu.device).to(mu.dtype) * temperature
        t_span = cosine_time_grid(n_timesteps, self.t_scheduler, mu.device, mu.dtype)
        return self.solve_euler(x, t_span, mu, mask, spks, cond, streaming, progress, check_interrupt)

    def solve_euler(self, x: torch.Tensor, t_span: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor,
                    spks: torch.Tensor, cond: torch.Tensor, streaming: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """Fixed-step Euler with classifier-free guidance. The time advances as ``t += dt`` and the
        next step is ``t_span[k+1] - t``, the reference's own accumulation, so the rounding matches."""
        n_steps = len(t_span) - 1
        t, dt = t_span[0:1], t_span[1] - t_span[0]
        frames, dtype = x.size(2), spks.dtype
        # The guided batch: row 0 conditioned, row 1 with mu, speaker and prompt zeroed.
        x_in = torch.zeros([2, self.mel_channels, frames], device=x.device, dtype=dtype)
        mask_in = mask.to(dtype).expand(2, 1, frames)
        mu_in = torch.zeros([2, mu.size(1), frames], device=x.device, dtype=dtype)
        mu_in[0] = mu[0]
        spks_in = torch.zeros([2, spks.size(1)], device=x.device, dtype=dtype)
        spks_in[0] = spks[0]
        cond_in = torch.zeros([2, cond.size(1), frames], device=x.device, dtype=dtype)
        cond_in[0] = cond[0]
        rate = self.inference_cfg_rate
        for step in range(1, n_steps + 1):
            if check_interrupt is not None:
                check_interrupt()
            x_in[:] = x
            velocity = self.estimator(x_in, mask_in, mu_in, t.expand(2).to(dtype), spks_in, cond_in, streaming)
            guided, unguided = velocity[0:1], velocity[1:2]
            x = x + dt * ((1.0 + rate) * guided - rate * unguided)
            t = t + dt
            if step < n_steps:
                dt = t_span[step + 1] - t
            if progress is not None:
                progress(step, n_steps)
        return x.float()
