"""Build LatentSync 1.6 / 1.5 from the published files, unchanged, with strict checks.

Files (catalogue ``latentsync.json``): ``latentsync_unet.pt`` of ``ByteDance/LatentSync-1.6`` or
``-1.5`` (a torch pickle ``{'state_dict': ..., 'global_step': int}``, float32, 1246 tensors),
``whisper/tiny.pt`` (OpenAI's ``{'dims', 'model_state_dict'}``, float16, encoder and decoder), the
``sd-vae-ft-mse`` VAE MuseTalk uses too, and the reference's mouth mask image. Networks are built on
the ``meta`` device and the file's tensors assigned (files are memory-mapped), so a load never holds
two copies of the weights. A file that does not fit is refused with its path and the first bad key;
a truncated or damaged one with its path and what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..engine.latentsync import config as C
from ..engine.latentsync.mask import read_mask
from ..engine.latentsync.pipeline import LatentSyncModels
from ..engine.latentsync.unet import UNet3DConditionModel
from ..engine.latentsync.whisper import DIM_KEYS, AudioEncoder, checkpoint_layout
from .musetalk import check_state, load_strict, load_vae


def read_checkpoint(path: str | Path) -> object:
    """``torch.load`` (no code executed, memory-mapped when possible) with a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zips and pickles raise several kinds
        raise ValueError(f"{path}: not a complete PyTorch checkpoint (truncated or damaged: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "delete it and download it again") from exc


def _tensors(obj: object, source: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: {what} is not a state dict of tensors")
    return obj


def unet_state(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The UNet's tensors: the ``state_dict`` entry of the published container (a flat dict is accepted)."""
    if isinstance(obj, dict) and "state_dict" in obj:
        return _tensors(obj["state_dict"], source, "'state_dict'")
    if isinstance(obj, dict) and "conv_in.weight" in obj:
        return _tensors(obj, source, "the file")
    keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{source}: not a LatentSync UNet checkpoint (expected {{'state_dict': ..., 'global_step'}}, "
                     f"got {keys})")


def _layout(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def load_unet(path: str | Path, config: dict | None = None) -> UNet3DConditionModel:
    """``latentsync_unet.pt`` into our UNet.

    ``config`` None: the published model section (``latentsync.json``), or the pack's small test
    configuration of the same architecture when the file's keys and shapes are exactly that one's (the
    stand-in weights tests serve); anything else is checked against the published layout, key by key."""
    state = unet_state(read_checkpoint(path), str(path))
    with torch.device("meta"):
        net = UNet3DConditionModel(config if config is not None else C.unet_config())
        if config is None:
            got = {k: tuple(v.shape) for k, v in state.items()}
            if got != _layout(net):
                small = UNet3DConditionModel(C.unet_config(tiny=True))
                if got == _layout(small):
                    net = small
    return load_strict(net, state, str(path))


def whisper_parts(obj: object, source: str) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """``dims`` and ``model_state_dict`` of an OpenAI Whisper checkpoint, every key checked against the dims."""
    if not isinstance(obj, dict) or "dims" not in obj or "model_state_dict" not in obj:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{source}: not an OpenAI Whisper checkpoint (expected {{'dims', 'model_state_dict'}}, got {keys})")
    raw = obj["dims"]
    if not isinstance(raw, dict) or any(not isinstance(raw.get(k), int) for k in DIM_KEYS):
        raise ValueError(f"{source}: 'dims' must hold the ten Whisper sizes as integers ({', '.join(DIM_KEYS)})")
    dims = {k: int(raw[k]) for k in DIM_KEYS}
    state = _tensors(obj["model_state_dict"], source, "'model_state_dict'")
    layout = checkpoint_layout(dims)
    missing = [k for k in layout if k not in state]
    extra = [k for k in state if k not in layout]
    wrong = [(k, list(state[k].shape), list(s)) for k, s in layout.items() if k in state and tuple(state[k].shape) != s]
    problems = []
    if wrong:
        problems.append(f"key '{wrong[0][0]}' has shape {wrong[0][1]} but dims {dims} need {wrong[0][2]}")
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. '{missing[0]}'")
    if extra:
        problems.append(f"{len(extra)} unexpected keys, e.g. '{extra[0]}'")
    if problems:
        raise ValueError(f"{source}: weights do not fit Whisper {dims}: " + "; ".join(problems))
    return dims, state


def load_whisper(path: str | Path, dtype: torch.dtype = torch.float32) -> AudioEncoder:
    """The audio encoder of ``whisper/tiny.pt`` in ``dtype`` (the file is float16; the reference, too, loads it
    into a float32 model). The whole file is checked strictly; only the encoder is kept."""
    dims, state = whisper_parts(read_checkpoint(path), str(path))
    if dims["n_audio_state"] != C.section("unet")["cross_attention_dim"]:
        raise ValueError(f"{path}: a Whisper of width {dims['n_audio_state']}; LatentSync's UNet needs 384 (Whisper tiny)")
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    with torch.device("meta"):
        net = AudioEncoder(dims)
    return torch.nn.Module.to(load_strict(net, enc, str(path)), dtype=dtype)


def load_latentsync(version: str, unet: str | Path, whisper: str | Path, vae: str | Path, mask: str | Path,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                    vae_config: str | Path | dict | None = None, unet_config: dict | None = None) -> LatentSyncModels:
    """All networks of ``version`` ("1.6" at 512 px, "1.5" at 256 px) on ``device`` in ``dtype``."""
    res = C.resolution(version)
    device = torch.device(device)
    cast = lambda m: torch.nn.Module.to(m, device=device, dtype=dtype)  # noqa: E731
    return LatentSyncModels(unet=cast(load_unet(unet, unet_config)), vae=cast(load_vae(vae, vae_config)),
                            whisper=cast(load_whisper(whisper)), mask=read_mask(mask, res), version=version)


class LatentSyncBundle(torch.nn.Module):
    """The three networks as one module, so ComfyUI's ModelPatcher moves them together."""

    def __init__(self, models: LatentSyncModels):
        super().__init__()
        self.unet, self.vae, self.whisper = models.unet, models.vae, models.whisper
        self.mask, self.version = models.mask, models.version
        self.fell_back: set = set()

    def models(self) -> LatentSyncModels:
        return LatentSyncModels(unet=self.unet, vae=self.vae, whisper=self.whisper, mask=self.mask,
                                version=self.version, fell_back=self.fell_back)


def catalog_ids(version: str) -> dict[str, str]:
    """The catalogue entry (``model_loaders/catalog/*.json``) of each file ``version`` needs."""
    tag = {"1.6": "v16", "1.5": "v15"}.get(version)
    if tag is None:
        raise ValueError(f"unknown LatentSync version '{version}', expected one of {', '.join(C.VERSIONS)}")
    return {"unet": f"latentsync.unet_{tag}", "whisper": "latentsync.whisper_tiny",
            "vae": "vae.sd_vae_ft_mse", "vae_config": "vae.sd_vae_ft_mse_config", "mask": "latentsync.mask"}


def ensure_files(version: str, ensure: Callable[[str], Path]) -> dict[str, Path]:
    """Local path of each file of ``version`` through ``ensure(model_id)`` (download.ensure_model)."""
    return {role: Path(ensure(mid)) for role, mid in catalog_ids(version).items()}


__all__ = ["check_state", "load_unet", "load_whisper", "load_latentsync", "read_checkpoint", "catalog_ids"]
