"""MuseTalk networks with seeded random weights (tiny or full size), for tests and the benchmark.

No file is read: the point is to run the real pipeline around networks of the published classes
when the published weights are not at hand.
"""
from __future__ import annotations

import torch

from . import networks as nets
from .bisenet import SKIN, BiSeNet
from .pipeline import MuseTalkModels


def random_models(tiny: bool = True, seed: int = 0, dtype: torch.dtype = torch.float32,
                  skin_everywhere: bool = True) -> MuseTalkModels:
    """Random MuseTalk models. ``skin_everywhere`` makes BiSeNet call (almost) every pixel skin, so the
    blend masks are not empty as they would be for a random classifier. The networks are created
    directly in ``dtype`` (a full-size UNet in bf16 needs 1.7 GB instead of 3.4 GB)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = nets.randomize_(nets.build_unet(nets.TINY_UNET_CONFIG if tiny else None), seed)
        vae = nets.randomize_(nets.build_vae(nets.TINY_VAE_CONFIG if tiny else None), seed + 1)
        whisper = nets.randomize_(nets.build_whisper_encoder(nets.TINY_WHISPER_CONFIG if tiny else None), seed + 2)
    finally:
        torch.set_default_dtype(previous)
    parser = nets.randomize_(BiSeNet(), seed + 3).eval()
    if skin_everywhere:
        with torch.no_grad():
            w = parser.conv_out.conv_out.weight
            w.zero_()
            w[SKIN] = 1.0 / w.shape[1]  # ReLU features are >= 0: the skin logit wins wherever any is > 0
    return MuseTalkModels(unet=nets.cast(unet, dtype=dtype), vae=nets.cast(vae, dtype=dtype), whisper=whisper.to(dtype),
                          parser=parser.requires_grad_(False))
