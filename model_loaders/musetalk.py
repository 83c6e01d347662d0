"""Build MuseTalk 1.5's networks from the published files, unchanged, with strict checks.

Files: ``musetalkV15/unet.pth`` + ``musetalk.json`` (UNet), ``sd-vae-ft-mse`` (VAE; old and new
attention key names), ``whisper-tiny`` (``model.encoder.*`` of the full model), ``79999_iter.pth``
(BiSeNet). Networks are built on the ``meta`` device and the file's tensors are assigned, so a
load never holds two copies of the weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..engine.musetalk import networks
from ..engine.musetalk.bisenet import BiSeNet
from ..engine.musetalk.pipeline import MuseTalkModels
from .weights_io import WeightFileError, load_json_file, load_weight_file

# Diffusers renamed the VAE's attention weights; sd-vae-ft-mse's .bin predates that.
_VAE_OLD_TO_NEW = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
_WHISPER_PREFIXES = ("model.encoder.", "encoder.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.pth``, ``.pt``, ``.ckpt`` or ``.bin`` file (no code executed);
    an unreadable file is a :class:`WeightFileError` naming it."""
    path = Path(path)
    obj = load_weight_file(path, "weights file")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightFileError(f"{path}: not a flat state dict of tensors (another kind of PyTorch file)")
    return obj


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse any missing, extra or mis-shaped key; the error names the file, the key and both shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if wrong:
        k, got, want = wrong[0]
        problems.append(f"key '{k}' has shape {list(got)} but the network needs {list(want)}"
                        + (f" (and {len(wrong) - 1} more mis-shaped keys)" if len(wrong) > 1 else ""))
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. '{missing[0]}'")
    if extra:
        problems.append(f"{len(extra)} unexpected keys, e.g. '{extra[0]}'")
    if problems:
        raise ValueError(f"{source}: weights do not fit {type(module).__name__}: " + "; ".join(problems))


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Check ``state`` (see ``check_state``) and assign it into ``module`` (built on ``meta`` or not)."""
    check_state(module, state, source)
    module.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftovers:
        raise ValueError(f"{source}: {type(module).__name__} has tensors the file does not set, e.g. '{leftovers[0]}'")
    return module.eval().requires_grad_(False)


def vae_state_new_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename pre-0.14 diffusers VAE attention keys (query/key/value/proj_attn) to to_q/to_k/to_v/to_out.0."""
    out = {}
    for k, v in state.items():
        if ".attentions." in k:
            for old, new in _VAE_OLD_TO_NEW.items():
                k = k.replace(old, new)
            if v.ndim == 4 and v.shape[2:] == (1, 1):  # very old files stored them as 1x1 convolutions
                v = v[:, :, 0, 0]
        out[k] = v
    return out


def whisper_encoder_state(state: dict[str, torch.Tensor], source: str = "whisper") -> dict[str, torch.Tensor]:
    """The encoder's tensors of a Whisper file, prefix stripped (full model, WhisperModel or encoder only)."""
    for prefix in _WHISPER_PREFIXES:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    if "conv1.weight" in state:
        return dict(state)
    raise ValueError(f"{source}: no Whisper encoder keys (expected 'model.encoder.*')")


def _on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` with parameters on the meta device. The model libraries are imported first: a
    module imported inside the meta context makes its import-time tensors without data (torchaudio,
    which transformers imports, keeps one that Kaldi fbank needs: voice cloning would then fail)."""
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    with torch.device("meta"):
        return build()


def load_unet(path: str | Path, config: dict[str, Any] | str | Path | None = None) -> torch.nn.Module:
    """MuseTalk's UNet from ``unet.pth`` and its ``musetalk.json`` (dict or path; default v1.5)."""
    config = _config(config)
    return load_strict(_on_meta(lambda: networks.build_unet(config)), read_state_dict(path), str(path))


def _config(config: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    return load_json_file(config, "config file") if isinstance(config, (str, Path)) else config


def load_vae(path: str | Path, config: dict[str, Any] | str | Path | None = None) -> torch.nn.Module:
    """sd-vae-ft-mse (either attention key naming); ``config``: its config.json (dict or path), default built in."""
    config = _config(config)
    state = vae_state_new_names(read_state_dict(path))
    return load_strict(_on_meta(lambda: networks.build_vae(config)), state, str(path))


def load_whisper_encoder(path: str | Path, config: dict[str, Any] | str | Path | None = None) -> torch.nn.Module:
    """whisper-tiny's encoder from the full model's file (the decoder's keys are ignored)."""
    config = _config(config)
    state = whisper_encoder_state(read_state_dict(path), str(path))
    return load_strict(_on_meta(lambda: networks.build_whisper_encoder(config)), state, str(path))


def load_face_parser(path: str | Path) -> BiSeNet:
    """BiSeNet from ``79999_iter.pth``."""
    return load_strict(_on_meta(BiSeNet), read_state_dict(path), str(path))


def load_musetalk(unet: str | Path, unet_config: str | Path | dict | None, vae: str | Path,
                  whisper: str | Path, face_parser: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, *, vae_config: dict | str | Path | None = None,
                  whisper_config: dict | str | Path | None = None) -> MuseTalkModels:
    """All four networks on ``device``; UNet, VAE and Whisper in ``dtype``, BiSeNet always in float32
    (11 M parameters; keeps the class argmax identical to the reference's)."""
    device = torch.device(device)
    parser_dtype = torch.float32
    return MuseTalkModels(
        unet=networks.cast(load_unet(unet, unet_config), device, dtype),
        vae=networks.cast(load_vae(vae, vae_config), device, dtype),
        whisper=load_whisper_encoder(whisper, whisper_config).to(device=device, dtype=dtype),
        parser=load_face_parser(face_parser).to(device=device, dtype=parser_dtype),
    )


class MuseTalkBundle(torch.nn.Module):
    """The four networks as one module, so ComfyUI's ModelPatcher moves them together."""

    def __init__(self, models: MuseTalkModels):
        super().__init__()
        self.unet, self.vae, self.whisper, self.parser = models.unet, models.vae, models.whisper, models.parser

    def models(self) -> MuseTalkModels:
        return MuseTalkModels(unet=self.unet, vae=self.vae, whisper=self.whisper, parser=self.parser)


# The catalogue entry (model_loaders/catalog/*.json) of each file MuseTalk needs.
CATALOG_IDS = {
    "unet": "musetalk.unet_v15",
    "unet_config": "musetalk.config_v15",
    "vae": "vae.sd_vae_ft_mse",
    "vae_config": "vae.sd_vae_ft_mse_config",
    "whisper": "whisper.tiny",
    "whisper_config": "whisper.tiny_config",
    "face_parser": "face.parsing_bisenet",
}


def ensure_files(ensure: Callable[[str], Path]) -> dict[str, Path]:
    """Local path of each of MuseTalk's files through ``ensure(model_id)`` (download.ensure_model)."""
    return {role: Path(ensure(mid)) for role, mid in CATALOG_IDS.items()}
