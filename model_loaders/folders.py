"""Where model files live: ComfyUI's ``models/<folder>``, with or without ComfyUI running.

Inside ComfyUI the folders are registered with ``folder_paths`` (reusing core keys ``vae`` and
``audio_encoders``), so users can redirect them with ``extra_model_paths.yaml``. The CLI and
tests resolve the models root without ComfyUI: an explicit ``--models-dir``, ``DH_MODELS_DIR``,
or the ComfyUI the pack is installed in (``<ComfyUI>/custom_nodes/<pack>``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .catalog import FOLDERS

PACK_ROOT = Path(__file__).resolve().parents[1]

#: Extensions listed for the folders this pack adds (core folders keep their own lists).
EXTENSIONS: frozenset[str] = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx", ".tflite", ".json"})

#: ``folder_paths`` key for each catalogue folder (same names; core keys reused where they exist).
FOLDER_KEYS: dict[str, str] = {name: name for name in FOLDERS}


class ModelsDirNotFound(RuntimeError):
    """No models folder could be found without ComfyUI."""


def register_folders() -> None:
    """Make every catalogue folder known to ComfyUI's ``folder_paths``; cheap and idempotent.

    Existing keys (``vae``, and ``audio_encoders`` in recent ComfyUI) keep their paths and
    extensions; ``models/<key>`` is added to them only if missing. New keys get ``models/<key>``.
    """
    import folder_paths

    table = folder_paths.folder_names_and_paths
    for key in FOLDER_KEYS.values():
        default = os.path.join(folder_paths.models_dir, key)
        if key not in table:
            table[key] = ([default], set(EXTENSIONS))
            continue
        paths = table[key][0]
        if not any(os.path.normpath(p) == os.path.normpath(default) for p in paths):
            paths.append(default)


def comfyui_root_of(pack_root: Path) -> Path | None:
    """The ComfyUI folder holding ``pack_root`` as ``<ComfyUI>/custom_nodes/<pack>``, if it is one."""
    pack_root = Path(pack_root).resolve()
    if pack_root.parent.name != "custom_nodes":
        return None
    root = pack_root.parent.parent
    if (root / "folder_paths.py").is_file() or (root / "main.py").is_file() or (root / "models").is_dir():
        return root
    return None


def models_root(models_dir: str | os.PathLike | None = None, pack_root: Path = PACK_ROOT) -> Path:
    """The ``models`` folder: argument, then ``DH_MODELS_DIR``, then a running ComfyUI, then the
    ComfyUI the pack sits in. Raises :class:`ModelsDirNotFound` naming the ways to set it."""
    if models_dir:
        return Path(models_dir).expanduser().resolve()
    env = os.environ.get("DH_MODELS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    fp = sys.modules.get("folder_paths")
    if fp is not None and getattr(fp, "models_dir", None):
        return Path(fp.models_dir).resolve()
    root = comfyui_root_of(pack_root)
    if root is not None:
        return (root / "models").resolve()
    raise ModelsDirNotFound(
        f"cannot find ComfyUI's models folder: the pack at {pack_root} is not inside "
        "'<ComfyUI>/custom_nodes/'. Pass --models-dir (or models_dir=...) or set DH_MODELS_DIR."
    )


def candidate_dirs(folder: str, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for an existing file of catalogue folder ``folder``; the first is where
    downloads go. Inside ComfyUI (and no explicit ``models_dir``) these are ``folder_paths``' own."""
    if folder not in FOLDER_KEYS:
        raise ValueError(f"unknown model folder '{folder}'; known: {', '.join(FOLDERS)}")
    fp = sys.modules.get("folder_paths")
    if models_dir is None and not os.environ.get("DH_MODELS_DIR") and fp is not None:
        key = FOLDER_KEYS[folder]
        default = Path(fp.models_dir) / key
        registered = [Path(p) for p in fp.folder_names_and_paths.get(key, ([], None))[0]]
        # downloads go to the standard models/<key>; extra paths are searched too
        return [default] + [p for p in registered if p.resolve() != default.resolve()]
    return [models_root(models_dir) / FOLDER_KEYS[folder]]
