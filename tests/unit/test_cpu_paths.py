"""The test-only CPU-path switches reach the Python processes the tests start (ComfyUI servers,
the runner), so an integration run with them exercises the same kernels as the unit run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

CPU_PATHS = Path(__file__).resolve().parents[1] / "cpu_paths"
PROBE = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.backends.mkldnn.enabled)"


def _child(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_subprocesses_take_the_same_paths_as_this_run() -> None:
    """Whatever switches this run has, a child started with the tests' environment has them too."""
    assert _child(dict(os.environ)) == f"{torch.backends.cpu.get_cpu_capability()} {torch.backends.mkldnn.enabled}"


def test_mkldnn_switch_disables_onednn_in_a_child_and_only_when_set() -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("DH_TEST_MKLDNN", "PYTHONPATH")}
    base["PYTHONPATH"] = str(CPU_PATHS)
    assert _child({**base, "DH_TEST_MKLDNN": "0"}).endswith(" False")
    assert _child(base).endswith(f" {torch.backends.mkldnn.is_available()}")
