#!/usr/bin/env bash
# The whole test suite (unit + integration against a real ComfyUI), after preparing the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q -ra "$@"
