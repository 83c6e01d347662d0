"""The networks MuseTalk 1.5 runs, built from their published configurations.

The UNet and the VAE are diffusers classes and the audio encoder is transformers' Whisper
encoder: well-kept implementations whose state-dict keys are exactly the published ones, so the
files load unchanged. Only the positional encoding is written here (a fixed sinusoid table).
Nothing is downloaded and nothing is allocated at import.
"""
from __future__ import annotations

import math
from typing import Any

import torch

# musetalkV15/musetalk.json (the UNet of MuseTalk 1.5): 8 input channels (masked + reference
# latents), 4 output, cross-attention on 384-wide whisper-tiny features.
UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# stabilityai/sd-vae-ft-mse config.json
VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}

# openai/whisper-tiny, encoder side only (the only part MuseTalk uses).
WHISPER_TINY_CONFIG: dict[str, Any] = {
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "activation_function": "gelu",
    "vocab_size": 51865,
}

def build_unet(config: dict[str, Any] | None = None):
    """A diffusers ``UNet2DConditionModel`` from the MuseTalk JSON (default: the v1.5 one; extra keys such as
    ``_class_name`` are ignored)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(dict(config or UNET_CONFIG)).eval()


def build_vae(config: dict[str, Any] | None = None):
    """A diffusers ``AutoencoderKL`` (default: sd-vae-ft-mse)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(dict(config or VAE_CONFIG)).eval()


def build_whisper_encoder(config: dict[str, Any] | None = None):
    """transformers' ``WhisperEncoder`` (default: whisper-tiny; a full ``config.json`` works too); keys are
    the file's minus ``model.encoder.``."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    wcfg = WhisperConfig(**(config or WHISPER_TINY_CONFIG))
    return WhisperEncoder(wcfg).eval()


def cast(module: torch.nn.Module, device: torch.device | str | None = None,
         dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``module.to(device, dtype)`` through torch's own method: diffusers' override warns about modules
    to keep in float32 on every cast, even when (as for MuseTalk's UNet and VAE) there are none."""
    return torch.nn.Module.to(module, device=device, dtype=dtype)


def positional_encoding(seq_len: int, d_model: int = 384, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed sine/cosine table ``[seq_len, d_model]`` MuseTalk adds to the audio tokens.

    Even columns hold sin(pos * w_k), odd columns cos(pos * w_k), w_k = 10000^(-2k/d_model);
    computed in float32 as the reference does, then cast.
    """
    pos = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(seq_len, d_model, dtype=torch.float32)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.to(device=device, dtype=dtype)


def add_positional_encoding(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens [B, T, D]`` plus the positional table (the reference's PositionalEncoding.forward)."""
    _, t, d = tokens.shape
    return tokens + positional_encoding(t, d, dtype=tokens.dtype, device=tokens.device)


# Small configurations of the same classes, for tests and the benchmark's quick run: the key
# layout changes only in width and depth; every interface size (8->4 latent channels, 8x down
# sampling, 384-wide audio tokens, 5 encoder states) is the published one.
TINY_UNET_CONFIG: dict[str, Any] = {
    **UNET_CONFIG,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    **VAE_CONFIG,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
TINY_WHISPER_CONFIG: dict[str, Any] = {**WHISPER_TINY_CONFIG, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                                       "decoder_layers": 1}


def fill_random_(name: str, t: torch.Tensor, generator: torch.Generator, scale: float = 0.05) -> None:
    """Overwrite one tensor (named as in a state dict) by ``randomize_``'s rule; integer tensors are left
    alone. Separate so a file-backed tensor can be filled without building the whole network."""
    if not t.is_floating_point():
        return
    with torch.no_grad():
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=generator) * 0.5 + 0.75)
        elif name.endswith(("norm.weight", "bn.weight", "norm1.weight", "norm2.weight", "norm3.weight",
                            "layer_norm.weight", "group_norm.weight", "norm_out.weight")) or ".bn" in name and name.endswith("weight"):
            t.copy_(1.0 + torch.randn(t.shape, generator=generator) * 0.1)
        else:
            t.copy_(torch.randn(t.shape, generator=generator) * scale)


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Fill every parameter and float buffer with seeded random values (BatchNorm variances kept positive),
    so tests exercise real arithmetic instead of default initialisations."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        fill_random_(name, t, g, scale)
    return module
