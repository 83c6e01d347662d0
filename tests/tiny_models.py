"""Small random weights in the published layouts, served by a local fake hub under the catalogue's
own repos and paths, so model nodes in a real ComfyUI download, check and load them for real.

The catalogue's sizes and hashes belong to the published files; an override catalogue
(``DH_CATALOG_OVERRIDES``) gives the stand-ins' sizes and hashes for the same ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import torch

from comfyui_digitalhuman.model_loaders.catalog import CATALOG_DIR, get_model


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _st_bytes(obj) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in obj.items()})


def musetalk_files() -> dict[str, bytes]:
    from comfyui_digitalhuman.engine.musetalk import networks as nets
    from comfyui_digitalhuman.engine.musetalk.random_models import random_models

    m = random_models(tiny=True, seed=0)
    return {
        "musetalk.unet_v15": _torch_bytes(m.unet.state_dict()),
        "musetalk.config_v15": json.dumps(nets.TINY_UNET_CONFIG).encode(),
        "vae.sd_vae_ft_mse": _st_bytes(m.vae.state_dict()),
        "vae.sd_vae_ft_mse_config": json.dumps(nets.TINY_VAE_CONFIG).encode(),
        "whisper.tiny": _torch_bytes({f"model.encoder.{k}": v for k, v in m.whisper.state_dict().items()}),
        "whisper.tiny_config": json.dumps(nets.TINY_WHISPER_CONFIG).encode(),
        "face.parsing_bisenet": _torch_bytes(m.parser.state_dict()),
    }


def latentsync_files() -> dict[str, bytes]:
    """LatentSync in the published containers: the small test configuration of the UNet for both versions
    (``{'state_dict', 'global_step'}``), an OpenAI-format Whisper tiny (published encoder size, small
    decoder), the stand-in mouth mask as a 256x256 PNG. The VAE is MuseTalk's (same catalogue entries)."""
    import cv2

    from comfyui_digitalhuman.engine.latentsync import random_models as R
    from comfyui_digitalhuman.engine.latentsync.mask import lower_face_mask

    unet = _torch_bytes({"state_dict": R.random_unet(tiny=True, seed=1).state_dict(), "global_step": 0})
    ok, png = cv2.imencode(".png", (lower_face_mask(256) * 255).astype("uint8"))
    assert ok
    return {
        "latentsync.unet_v16": unet,
        "latentsync.unet_v15": unet,
        "latentsync.whisper_tiny": _torch_bytes(R.whisper_checkpoint(seed=2)),
        "latentsync.mask": png.tobytes(),
    }


def serve_latentsync(hub, storage, overrides_dir: Path) -> None:
    """LatentSync's small files: the networks on the fake hub, the mask PNG on the fake web host at the
    catalogue URL's path; the override entries describe them."""
    files = latentsync_files()
    mask = files.pop("latentsync.mask")
    publish(hub, files, overrides_dir)
    url = get_model("latentsync.mask").urls[0]
    storage.add_url(url, mask)
    raw = next(e for e in json.loads((CATALOG_DIR / "latentsync.json").read_text()) if e["id"] == "latentsync.mask")
    raw.update(urls=[storage.rebase(url)], size=len(mask), sha256=hashlib.sha256(mask).hexdigest())
    write_overrides(overrides_dir, "latentsync", [raw])


def liveportrait_files() -> dict[str, bytes]:
    """Full-size LivePortrait networks (no smaller layout is published) with seeded random weights."""
    from comfyui_digitalhuman.model_loaders.liveportrait import CATALOG_IDS, synthetic_weights

    return {mid: _torch_bytes(synthetic_weights(name, seed=i, layout="pth"))
            for i, (name, mid) in enumerate(CATALOG_IDS.items())}


def publish(hub, files: dict[str, bytes], overrides_dir: Path) -> None:
    """Serve ``files`` on ``hub`` and write the override catalogue describing them."""
    by_family: dict[str, list[dict]] = {}
    for mid, data in files.items():
        entry = dataclasses.replace(get_model(mid), size=len(data), sha256=hashlib.sha256(data).hexdigest())
        hub.add_entry(entry, data)
        family = mid.split(".", 1)[0]
        raw = next(e for e in json.loads((CATALOG_DIR / f"{family}.json").read_text()) if e["id"] == mid)
        raw.update(size=entry.size, sha256=entry.sha256)
        by_family.setdefault(family, []).append(raw)
    for family, entries in by_family.items():
        write_overrides(overrides_dir, family, entries)


def write_overrides(overrides_dir: Path, family: str, entries: list[dict]) -> None:
    """Add ``entries`` (raw catalogue entries) to the override file of ``family``, replacing by id."""
    overrides_dir.mkdir(parents=True, exist_ok=True)
    path = overrides_dir / f"{family}.json"
    merged = {e["id"]: e for e in (json.loads(path.read_text()) if path.is_file() else [])}
    merged.update({e["id"]: e for e in entries})
    path.write_text(json.dumps(list(merged.values()), indent=1))
