"""Build the LivePortrait networks from the published weight files.

Two layouts are accepted, both loaded strictly:

- the official ``.pth`` pickles of ``KwaiVGI/LivePortrait`` (four flat state dicts; the fifth a
  dict ``{retarget_shoulder, retarget_mouth, retarget_eye}`` of DDP-prefixed ``module.*`` dicts),
- the ``.safetensors`` of ``Kijai/LivePortrait_safetensors`` (same flat keys; the fifth
  flattened as ``retarget_shoulder_module.mlp.0.weight``...).

Any missing, unexpected or wrongly shaped key is an error that names the file, the key and the
expected and found shapes, so a wrong or truncated download is caught before inference.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ..engine.liveportrait.networks import NETWORK_NAMES, build_network
from .weights_io import WeightFileError, load_weight_file

if TYPE_CHECKING:
    from ..engine.liveportrait.runtime import LivePortraitNets

# Published sub-dict name -> our sub-module name in StitchingRetargeting.
RETARGET_GROUPS = {"retarget_shoulder": "stitching", "retarget_mouth": "lip", "retarget_eye": "eye"}
_FLAT_RETARGET = re.compile(r"^(retarget_shoulder|retarget_mouth|retarget_eye)(?:_module|\.module|/module)?\.(.+)$")


def read_weights(path: str | Path) -> dict[str, Any]:
    """Read a ``.safetensors`` or PyTorch pickle without executing code (``weights_only``); an
    unreadable file is a :class:`WeightFileError` (a ValueError) naming it and saying what to do."""
    path = Path(path)
    obj = load_weight_file(path, "LivePortrait weights file", mmap=False)
    if not isinstance(obj, Mapping):
        raise WeightFileError(f"'{path}' holds a {type(obj).__name__}, expected a state dict")
    return dict(obj)


def _strip_ddp(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def to_module_keys(name: str, raw: Mapping[str, Any], source: str = "<state dict>") -> dict[str, torch.Tensor]:
    """Map a published state dict of network ``name`` onto our module's key names."""
    if name != "stitching_retargeting_module":
        return {_strip_ddp(k): v for k, v in raw.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key in RETARGET_GROUPS and isinstance(value, Mapping):  # official nested layout
            for sub, tensor in value.items():
                out[f"{RETARGET_GROUPS[key]}.{_strip_ddp(sub)}"] = tensor
            continue
        m = _FLAT_RETARGET.match(key)
        if m is None:
            raise ValueError(f"{source}: unexpected key '{key}' in the stitching/retargeting weights "
                             f"(expected groups {sorted(RETARGET_GROUPS)})")
        out[f"{RETARGET_GROUPS[m.group(1)]}.{_strip_ddp(m.group(2))}"] = value
    return out


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``module``; any key or shape difference raises one error listing them all."""
    expected = module.state_dict()
    problems = []
    for key, ref in expected.items():
        if key not in state:
            problems.append(f"missing key '{key}' (expected shape {list(ref.shape)})")
        elif not isinstance(state[key], torch.Tensor):
            problems.append(f"key '{key}' is a {type(state[key]).__name__}, expected a tensor")
        elif tuple(state[key].shape) != tuple(ref.shape):
            problems.append(f"key '{key}': expected shape {list(ref.shape)}, found {list(state[key].shape)}")
    problems += [f"unexpected key '{k}'" for k in state if k not in expected]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"{source}: weights do not match the LivePortrait layout: {shown}")
    module.load_state_dict({k: v for k, v in state.items()}, strict=True)
    return module


def load_network(name: str, path: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, config: dict | None = None) -> nn.Module:
    """Build network ``name`` and load the published file at ``path`` into it (eval mode)."""
    if name not in NETWORK_NAMES:
        raise ValueError(f"unknown LivePortrait network '{name}', expected one of {NETWORK_NAMES}")
    module = build_network(name, config)
    load_strict(module, to_module_keys(name, read_weights(path), str(path)), str(path))
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def synthetic_weights(name: str, seed: int = 0, layout: str = "pth", config: dict | None = None) -> dict[str, Any]:
    """Random weights of network ``name`` in a published layout (``pth`` or ``safetensors``).

    For tests and benchmarks, which cannot download the real files. Values are scaled so that
    activations stay finite through the whole model (fan-in scaled weights, BatchNorm statistics
    near identity, unit spectral-norm vectors).
    """
    module = build_network(name, config)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, ref in module.state_dict().items():
        leaf = key.rsplit(".", 1)[-1]
        if ref.dtype == torch.int64:
            state[key] = torch.zeros_like(ref)
            continue
        r = torch.randn(ref.shape, generator=gen)
        if leaf == "running_var":
            r = 0.5 + torch.rand(ref.shape, generator=gen)
        elif leaf in ("weight_u", "weight_v"):
            r = r / r.norm()
        elif ref.ndim >= 2 and leaf not in ("gamma", "beta"):
            r = r / (ref[0].numel() ** 0.5)
        elif leaf == "weight":  # norm scales
            r = 1.0 + 0.1 * r
        else:  # biases, running means, GRN gamma/beta
            r = 0.1 * r
        state[key] = r.contiguous()
    if "conv_img.0.weight" in state:  # keep the generator's sigmoid out of saturation
        state["conv_img.0.weight"] *= 0.02
    if name != "stitching_retargeting_module":
        return state
    inverse = {v: k for k, v in RETARGET_GROUPS.items()}
    if layout == "pth":
        nested: dict[str, dict[str, torch.Tensor]] = {g: {} for g in RETARGET_GROUPS}
        for key, value in state.items():
            ours, rest = key.split(".", 1)
            nested[inverse[ours]][f"module.{rest}"] = value
        return nested
    return {f"{inverse[k.split('.', 1)[0]]}_module.{k.split('.', 1)[1]}": v for k, v in state.items()}


def write_weights(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write a state dict as ``.safetensors`` or ``.pth`` according to the suffix (tests, benchmarks)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(dict(state), str(path))
    return path


def assemble(modules: Mapping[str, nn.Module]) -> "LivePortraitNets":
    """Bundle the five networks (keyed by their published file stems) for the engine."""
    from ..engine.liveportrait.runtime import LivePortraitNets

    return LivePortraitNets(appearance=modules["appearance_feature_extractor"], motion=modules["motion_extractor"],
                            warping=modules["warping_module"], generator=modules["spade_generator"],
                            retarget=modules.get("stitching_retargeting_module"))


def load_liveportrait(paths: Mapping[str, str | Path], device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> "LivePortraitNets":
    """Load all networks from ``{file stem: path}``; the stitching/retargeting file is optional."""
    missing = [n for n in NETWORK_NAMES[:4] if n not in paths]
    if missing:
        raise ValueError(f"LivePortrait needs weight files for {missing}")
    return assemble({name: load_network(name, path, device, dtype) for name, path in paths.items()})


def synthetic_liveportrait(config: dict | None = None, seed: int = 0, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32) -> "LivePortraitNets":
    """All networks with seeded random weights (tests, benchmarks), loaded through the same strict path."""
    modules = {}
    for i, name in enumerate(NETWORK_NAMES):
        net = build_network(name, config)
        load_strict(net, to_module_keys(name, synthetic_weights(name, seed + i, "pth", config)), f"synthetic {name}")
        modules[name] = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return assemble(modules)


class LivePortraitStack(nn.Module):
    """The five networks as one module, so ComfyUI loads and offloads them together."""

    def __init__(self, modules: Mapping[str, nn.Module]):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)


class LivePortraitModel:
    """What ``DH_LoadLivePortrait`` returns (type DH_LIVEPORTRAIT): the networks and their ModelPatcher."""

    def __init__(self, stack: LivePortraitStack, patcher: Any | None, precision: str):
        self.stack, self.patcher, self.precision = stack, patcher, precision
        self.nets = assemble(dict(stack.named_children()))

    def acquire(self) -> "LivePortraitNets":
        """Place the networks on the compute device (through ComfyUI when managed) and return them."""
        if self.patcher is not None:
            from .comfy_wrap import load_for_inference

            load_for_inference(self.patcher)
        return self.nets

    def __repr__(self) -> str:
        return f"LivePortraitModel(precision={self.precision}, device={self.nets.device}, dtype={self.nets.dtype})"


#: The catalogue entry (model_loaders/catalog/liveportrait.json) of each network's file.
CATALOG_IDS = {name: f"liveportrait.{name}" for name in NETWORK_NAMES}


def load_for_comfy(precision: str = "auto", device: str = "auto", progress=None, check_interrupt=None
                   ) -> LivePortraitModel:
    """Fetch (first use) and load the five files; wrap them in a ModelPatcher unless ``device`` is ``cpu``."""
    from .comfy_wrap import make_patcher, pick_dtype
    from .download import ensure_model

    if device == "cpu":
        dev = torch.device("cpu")
    else:
        import comfy.model_management as mm

        dev = mm.get_torch_device()
    dtype = pick_dtype(precision, dev)
    paths = {name: ensure_model(mid, progress=progress, check_interrupt=check_interrupt)
             for name, mid in CATALOG_IDS.items()}
    modules = {name: load_network(name, path, "cpu", dtype) for name, path in paths.items()}
    stack = LivePortraitStack(modules)
    patcher = None if device == "cpu" else make_patcher(stack)
    return LivePortraitModel(stack, patcher, precision)
