"""Wrap engine networks for ComfyUI's model management (load, offload, precision)."""
from __future__ import annotations

import torch

PRECISIONS = ["auto", "fp32", "fp16", "bf16"]


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for ``precision`` on ``device``; ``auto`` is fp16 on CUDA, fp32 elsewhere."""
    if precision == "fp32" or device.type == "cpu" and precision == "auto":
        return torch.float32
    if precision == "fp16" or precision == "auto":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    raise ValueError(f"unknown precision '{precision}', expected one of {PRECISIONS}")


def make_patcher(module: torch.nn.Module):
    """A ``ModelPatcher`` so ComfyUI can move ``module`` between the GPU and RAM as memory demands."""
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(
        module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def load_for_inference(patcher) -> torch.nn.Module:
    """Ask ComfyUI to place the wrapped network on its compute device and return the module."""
    import comfy.model_management as mm

    mm.load_model_gpu(patcher)
    return patcher.model
