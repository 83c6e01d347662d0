"""LatentSync networks with seeded random weights (tiny or full size), for tests, the benchmark and the
reference check. No file is read. Position tables stored in the checkpoints (the motion modules'
``pos_encoder.pe``, Whisper's ``positional_embedding``) keep their real sinusoids."""
from __future__ import annotations

import torch

from ..musetalk import networks as mnets
from .config import unet_config, whisper_dims
from .unet import UNet3DConditionModel
from .whisper import AudioEncoder

KEEP = ("pos_encoder.pe", "positional_embedding")


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Seeded random parameters by MuseTalk's test rule (norm weights near 1), position tables kept."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not name.endswith(KEEP):
            mnets.fill_random_(name, t, g, scale)
    return module


def random_unet(tiny: bool = True, seed: int = 0, dtype: torch.dtype = torch.float32) -> UNet3DConditionModel:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return randomize_(UNet3DConditionModel(unet_config(tiny)), seed).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(previous)


def random_vae(tiny: bool = True, seed: int = 1, dtype: torch.dtype = torch.float32):
    vae = mnets.randomize_(mnets.build_vae(mnets.TINY_VAE_CONFIG if tiny else None), seed)
    return mnets.cast(vae, dtype=dtype).eval().requires_grad_(False)


def random_whisper(seed: int = 2, dtype: torch.dtype = torch.float32) -> AudioEncoder:
    """Whisper tiny's encoder at its published size (it is small: 7.6 M parameters)."""
    return randomize_(AudioEncoder(whisper_dims()), seed).to(dtype).eval().requires_grad_(False)


def whisper_checkpoint(seed: int = 2, small_decoder: bool = True) -> dict:
    """An OpenAI-format ``tiny.pt`` object (``dims`` + float16 ``model_state_dict``, decoder included):
    the encoder of :func:`random_whisper` and seeded random decoder tensors (shrunk unless told)."""
    from .whisper import checkpoint_layout

    dims = whisper_dims(small=small_decoder)
    enc = random_whisper(seed).state_dict()
    g = torch.Generator().manual_seed(seed + 100)
    state = {}
    for key, shape in checkpoint_layout(dims).items():
        if key.startswith("encoder."):
            state[key] = enc[key[len("encoder."):]].clone()
        else:
            t = torch.empty(shape)
            mnets.fill_random_(key, t, g)
            state[key] = t
    return {"dims": dims, "model_state_dict": {k: v.half() for k, v in state.items()}}


def random_models(tiny: bool = True, seed: int = 0, version: str = "1.5", mask=None, dtype: torch.dtype = torch.float32):
    """All three networks plus a mouth mask (the given one, else the stand-in of :mod:`.mask`)."""
    from .config import resolution
    from .mask import lower_face_mask
    from .pipeline import LatentSyncModels

    res = resolution(version)
    return LatentSyncModels(unet=random_unet(tiny, seed, dtype), vae=random_vae(tiny, seed + 1, dtype),
                            whisper=random_whisper(seed + 2, dtype),
                            mask=lower_face_mask(res) if mask is None else mask, version=version)
