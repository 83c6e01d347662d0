"""Whisper's audio encoder in OpenAI's checkpoint format (``whisper/tiny.pt``), the part LatentSync runs.

The file is ``{'dims': {...}, 'model_state_dict': {...}}`` (float16) holding encoder *and* decoder;
the reference loads it strictly into the full model. :func:`checkpoint_layout` gives every key and
shape the full model has for given ``dims``, so a loader can refuse a wrong or truncated file key
by key, then build only the encoder. The encoder follows openai-whisper: two GELU convolutions
(the second with stride 2), the sinusoidal position table stored in the file, pre-norm residual
attention blocks (key projection without bias, q and k each scaled by ``d_head ** -0.25``, softmax
in float32), layer norms computed in float32. LatentSync keeps the output of the input stage and
of every block (not the final ``ln_post``): ``n_audio_layer + 1`` states per feature frame.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DIM_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
            "n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")


def _block_layout(prefix: str, d: int, cross: bool) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for name in ("attn",) + (("cross_attn",) if cross else ()):
        out.update({f"{prefix}{name}.query.weight": (d, d), f"{prefix}{name}.query.bias": (d,),
                    f"{prefix}{name}.key.weight": (d, d), f"{prefix}{name}.value.weight": (d, d),
                    f"{prefix}{name}.value.bias": (d,), f"{prefix}{name}.out.weight": (d, d),
                    f"{prefix}{name}.out.bias": (d,), f"{prefix}{name}_ln.weight": (d,), f"{prefix}{name}_ln.bias": (d,)})
    out.update({f"{prefix}mlp.0.weight": (4 * d, d), f"{prefix}mlp.0.bias": (4 * d,),
                f"{prefix}mlp.2.weight": (d, 4 * d), f"{prefix}mlp.2.bias": (d,),
                f"{prefix}mlp_ln.weight": (d,), f"{prefix}mlp_ln.bias": (d,)})
    return out


def checkpoint_layout(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every key of an OpenAI Whisper ``model_state_dict`` for ``dims`` with its shape."""
    missing = [k for k in DIM_KEYS if k not in dims]
    if missing:
        raise ValueError(f"Whisper dims lack {', '.join(missing)}")
    a, t = dims["n_audio_state"], dims["n_text_state"]
    out: dict[str, tuple[int, ...]] = {
        "encoder.positional_embedding": (dims["n_audio_ctx"], a),
        "encoder.conv1.weight": (a, dims["n_mels"], 3), "encoder.conv1.bias": (a,),
        "encoder.conv2.weight": (a, a, 3), "encoder.conv2.bias": (a,),
    }
    for i in range(dims["n_audio_layer"]):
        out.update(_block_layout(f"encoder.blocks.{i}.", a, False))
    out.update({"encoder.ln_post.weight": (a,), "encoder.ln_post.bias": (a,),
                "decoder.token_embedding.weight": (dims["n_vocab"], t),
                "decoder.positional_embedding": (dims["n_text_ctx"], t)})
    for i in range(dims["n_text_layer"]):
        out.update(_block_layout(f"decoder.blocks.{i}.", t, True))
    out.update({"decoder.ln.weight": (t,), "decoder.ln.bias": (t,)})
    return out


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """openai-whisper's position table (what the file stores as ``encoder.positional_embedding``)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class LayerNorm(nn.LayerNorm):
    """Layer norm computed in float32, result in the input's dtype (as openai-whisper)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).type(x.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.n_head = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        scale = (d // self.n_head) ** -0.25
        q = self.query(x).view(b, n, self.n_head, -1).permute(0, 2, 1, 3) * scale
        k = self.key(x).view(b, n, self.n_head, -1).permute(0, 2, 3, 1) * scale
        v = self.value(x).view(b, n, self.n_head, -1).permute(0, 2, 1, 3)
        w = F.softmax((q @ k).float(), dim=-1).to(q.dtype)
        return self.out((w @ v).permute(0, 2, 1, 3).flatten(start_dim=2))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(d, heads)
        self.attn_ln = LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """Keys without the ``encoder.`` prefix of the file."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        d = dims["n_audio_state"]
        self.conv1 = nn.Conv1d(dims["n_mels"], d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims["n_audio_ctx"], d))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(d, dims["n_audio_head"]) for _ in range(dims["n_audio_layer"])])
        self.ln_post = LayerNorm(d)

    @property
    def n_states(self) -> int:
        return len(self.blocks) + 1

    def states(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, 2 * n_ctx]`` log-mel -> ``[B, n_ctx, n_layer + 1, d]`` (input stage + every block)."""
        p = self.conv1.weight
        x = mel.to(device=p.device, dtype=p.dtype)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        if x.shape[1:] != self.positional_embedding.shape:
            raise ValueError(f"Whisper encoder: got {x.shape[1]} frames, expected {self.positional_embedding.shape[0]} "
                             "(a 30 s log-mel segment)")
        x = (x + self.positional_embedding).to(x.dtype)
        out = [x]
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return torch.stack(out, dim=2)
