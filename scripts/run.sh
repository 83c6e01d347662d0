#!/usr/bin/env bash
# Run a shipped workflow (or a path) through ComfyUI's HTTP API; see scripts/run_workflow.py --help.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup_env.sh" >&2
exec "$here/.venv/bin/python" "$here/scripts/run_workflow.py" "$@"
