"""The test-only CPU-path switches reach the Python processes the tests start (ComfyUI servers,
the runner), so an integration run with them exercises the same kernels as the unit run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cpu_switches import CPU_PATHS

HIDE_PACKAGES = Path(__file__).resolve().parents[1] / "hide_packages"
PROBE = ("import importlib.util, torch; print(torch.backends.cpu.get_cpu_capability(), torch.backends.mkldnn.enabled, "
         "importlib.util.find_spec('xmlrpc') is None)")


def _child(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _clean() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DH_TEST_MKLDNN", "PYTHONPATH", "DH_TEST_HIDE_MODULES")}


def test_subprocesses_take_the_same_paths_as_this_run() -> None:
    """Whatever switches this run has, a child started with the tests' environment has them too."""
    want = f"{torch.backends.cpu.get_cpu_capability()} {torch.backends.mkldnn.enabled} False"
    assert _child(dict(os.environ)) == want


def test_mkldnn_switch_disables_onednn_in_a_child_and_only_when_set() -> None:
    base = {**_clean(), "PYTHONPATH": str(CPU_PATHS)}
    assert _child({**base, "DH_TEST_MKLDNN": "0"}).split()[1] == "False"
    assert _child(base).split()[1] == str(torch.backends.mkldnn.is_available())


@pytest.mark.parametrize("order", ["cpu_paths first", "hide_packages first"])
def test_both_test_sitecustomize_folders_apply_in_either_order(order: str) -> None:
    """Python imports only the first sitecustomize on the path; each of ours runs the next one."""
    dirs = [str(CPU_PATHS), str(HIDE_PACKAGES)]
    if order == "hide_packages first":
        dirs.reverse()
    env = {**_clean(), "PYTHONPATH": os.pathsep.join(dirs), "DH_TEST_MKLDNN": "0", "DH_TEST_HIDE_MODULES": "xmlrpc"}
    _, mkldnn, hidden = _child(env).split()
    assert mkldnn == "False" and hidden == "True"
