"""Attention masks of the CosyVoice 2 flow: padding masks and the static chunk masks of streaming.

The flow's streaming mode does not cache anything: it reruns the whole sequence with a block
mask so that a frame only sees its own chunk and the chunks before it (25 tokens in the encoder,
50 mel frames in the decoder). A chunk's output then no longer changes when later tokens arrive.
"""
from __future__ import annotations

import torch

# The additive bias the reference's decoder puts on masked scores (``mask_to_bias``): a large finite
# negative rather than -inf, so a row with nothing visible averages instead of producing NaN.
MASKED_BIAS = -1.0e10


def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
    """``[B, max_len]`` bool, True where a position is padding (at or beyond its length)."""
    max_len = max_len if max_len > 0 else int(lengths.max().item())
    positions = torch.arange(max_len, dtype=torch.int64, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(-1)


def chunk_mask(size: int, chunk_size: int, device: torch.device | None = None) -> torch.Tensor:
    """``[size, size]`` bool: query ``i`` sees every key before the end of its own chunk.

    All left chunks are visible; this is the only form the reference runs (its ONNX-friendly
    ``subsequent_chunk_mask`` ignores a left-chunk limit, and the published configuration asks
    for all of them with ``num_decoding_left_chunks = -1``)."""
    positions = torch.arange(size, device=device)
    chunk_end = (torch.div(positions, chunk_size, rounding_mode="floor") + 1) * chunk_size
    return positions.unsqueeze(0) < chunk_end.unsqueeze(1)


def attention_mask(pad_mask: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Combine a ``[B, 1, T]`` validity mask (True = real frame) with the static chunk mask.

    ``chunk_size <= 0`` (not streaming) keeps ``[B, 1, T]``; otherwise ``[B, T, T]``. A row left with
    nothing visible is opened up entirely, as the reference does, and must be masked later."""
    if chunk_size <= 0:
        mask = pad_mask
    else:
        mask = pad_mask & chunk_mask(pad_mask.size(-1), chunk_size, pad_mask.device).unsqueeze(0)
    empty = mask.sum(dim=-1) == 0
    if bool(empty.any()):
        mask = mask.clone()
        mask[empty] = True
    return mask


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as an additive attention bias: 0 where visible, ``MASKED_BIAS`` where not.

    In float16 the bias overflows to -inf, exactly as the reference's does."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask_to_bias: expected a bool mask, got {mask.dtype}")
    return (1.0 - mask.to(dtype)) * MASKED_BIAS
