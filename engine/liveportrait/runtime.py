"""The five networks as one bundle: device and precision handling, fp16 guard, batched calls.

Half precision can overflow in some networks on some GPUs (the reference's "black boxes"). Each
call checks its output; a non-finite (or, for the generator, all-black) result from a half
precision network switches that network to fp32 for good and recomputes the batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch import nn

from . import keypoints as K

log = logging.getLogger("DigitalHuman")
INPUT_SIZE = 256


def output_is_bad(out: Any, black_check: bool = False) -> str | None:
    """Why an output cannot be used (``"NaN/Inf"``, ``"black"``) or None when it is fine."""
    tensors = [out] if isinstance(out, torch.Tensor) else [v for v in (out.values() if isinstance(out, dict) else out)
                                                          if isinstance(v, torch.Tensor)]
    for t in tensors:
        if not torch.isfinite(t).all():
            return "NaN/Inf"
    if black_check and tensors and all(t.numel() and float(t.amax()) <= 1.0 / 255 for t in tensors):
        return "black"
    return None


@dataclass
class LivePortraitNets:
    """F, M, W, G and S (stitching/retargeting) on one device and dtype."""

    appearance: nn.Module
    motion: nn.Module
    warping: nn.Module
    generator: nn.Module
    retarget: nn.Module | None
    fell_back: set[str] = field(default_factory=set)
    # Frames per warping/generator call; 0: one on a CPU, the whole batch elsewhere. Why one on a CPU:
    # batching is no faster there (scripts/bench_liveportrait.py: W+G 13.5 s per frame at batch 1,
    # 16.4 s at batch 4) and Cancel is then seen after every frame instead of after a whole chunk.
    render_batch: int = 0

    @property
    def device(self) -> torch.device:
        return next(self.warping.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.warping.parameters()).dtype

    def modules(self) -> dict[str, nn.Module]:
        mods = {"appearance": self.appearance, "motion": self.motion, "warping": self.warping,
                "generator": self.generator}
        if self.retarget is not None:
            mods["retarget"] = self.retarget
        return mods

    def guarded(self, name: str, *args: torch.Tensor, black_check: bool = False) -> Any:
        """Run network ``name`` in its dtype; on NaN/black half-precision output, switch it to fp32 and rerun."""
        module = getattr(self, name)
        dtype = next(module.parameters()).dtype
        with torch.no_grad():
            try:
                out = module(*[a.to(device=self.device, dtype=dtype) for a in args])
                why = output_is_bad(out, black_check)
            except (NotImplementedError, RuntimeError) as exc:  # e.g. a kernel missing for bf16 on this device
                if dtype == torch.float32 or "not implemented" not in str(exc):
                    raise
                out, why = None, f"an unsupported operation ({str(exc).splitlines()[0]})"
            if why and dtype != torch.float32:
                log.warning("[DigitalHuman] LivePortrait %s gave %s output in %s; using fp32 for it from now on",
                            name, why, dtype)
                module.float()
                self.fell_back.add(name)
                out = module(*[a.to(device=self.device, dtype=torch.float32) for a in args])
                why = output_is_bad(out, black_check)
            if why == "NaN/Inf":
                raise FloatingPointError(f"LivePortrait {name} produced {why} values even in fp32 (bad weights or input?)")
        if isinstance(out, dict):
            return {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
        return out.float()

    def to_input(self, images: np.ndarray, area: bool = False) -> torch.Tensor:
        """uint8 ``[n,H,W,3]`` -> float ``[n,3,256,256]`` in 0..1.

        The reference resizes the source crop with INTER_AREA and driving crops with INTER_LINEAR.
        """
        if images.ndim == 3:
            images = images[None]
        interp = cv2.INTER_AREA if area else cv2.INTER_LINEAR
        out = np.stack([img if img.shape[:2] == (INPUT_SIZE, INPUT_SIZE)
                        else cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=interp) for img in images])
        x = torch.from_numpy(np.clip(out.astype(np.float32) / 255.0, 0, 1)).permute(0, 3, 1, 2)
        return x.to(self.device)

    def appearance_feature(self, images256: torch.Tensor, interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        if interrupt is not None:
            interrupt()
        return self.guarded("appearance", images256)

    def keypoint_info(self, images256: torch.Tensor, interrupt: Callable[[], None] | None = None) -> K.KeypointInfo:
        if interrupt is not None:
            interrupt()
        return K.refine(self.guarded("motion", images256))

    def warp_decode(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor,
                    interrupt: Callable[[], None] | None = None) -> torch.Tensor:
        """Animated crops ``[n,3,512,512]`` in 0..1 for driving keypoints ``x_d`` ``[n,21,3]``.

        ``f_s`` / ``x_s`` hold one source (broadcast) or ``n``. The frames go through W and G
        ``render_batch`` at a time with ``interrupt()`` before every network call, so Cancel stops
        the work within one call, not after a whole chunk.
        """
        n = x_d.shape[0]
        step = self.render_batch if self.render_batch > 0 else (1 if self.device.type == "cpu" else n)
        step = max(1, min(step, n))

        def part(t: torch.Tensor, i: int, m: int) -> torch.Tensor:
            return t[i:i + m] if t.shape[0] == n and n > 1 else t.expand(m, *t.shape[1:])

        outs = []
        for i in range(0, n, step):
            m = min(step, n - i)
            if interrupt is not None:
                interrupt()
            warped = self.guarded("warping", part(f_s, i, m), x_d[i:i + m], part(x_s, i, m))
            if interrupt is not None:
                interrupt()
            outs.append(self.guarded("generator", warped["out"], black_check=True))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def channels_last(self) -> None:
        """Store 2-D convolution weights channels-last (faster convolutions on recent GPUs)."""
        for module in self.modules().values():
            for p in module.parameters():
                if p.ndim == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def to_uint8(images: torch.Tensor) -> np.ndarray:
        """``[n,3,H,W]`` 0..1 -> uint8 ``[n,H,W,3]``, truncating like the reference's ``parse_output``."""
        x = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return np.clip(x * 255, 0, 255).astype(np.uint8)


def check_callbacks(progress: Callable[[int, int], None] | None, check_interrupt: Callable[[], None] | None):
    """Callbacks made safe to call (no-ops when absent)."""
    return (progress or (lambda done, total: None)), (check_interrupt or (lambda: None))
