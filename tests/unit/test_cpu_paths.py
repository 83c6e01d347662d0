"""The test-only CPU-path switches reach the Python processes the tests start (ComfyUI servers,
the runner), so an integration run with them exercises the same kernels as the unit run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from cpu_switches import SITE_HOOKS

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
    base = {**_clean(), "PYTHONPATH": str(SITE_HOOKS)}
    assert _child({**base, "DH_TEST_MKLDNN": "0"}).split()[1] == "False"
    assert _child(base).split()[1] == str(torch.backends.mkldnn.is_available())


def test_both_switches_apply_together_and_a_later_sitecustomize_still_runs(tmp_path: Path) -> None:
    """Python imports only the first sitecustomize on the path; ours runs the next one (a
    distribution's own, say) after its switches."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['DH_TEST_NEXT_SITE'] = 'ran'\n")
    env = {**_clean(), "PYTHONPATH": os.pathsep.join([str(SITE_HOOKS), str(other)]), "DH_TEST_MKLDNN": "0",
           "DH_TEST_HIDE_MODULES": "xmlrpc"}
    probe = PROBE.replace("print(", "import os; print(os.environ.get('DH_TEST_NEXT_SITE'), ", 1)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ran, _, mkldnn, hidden = out.stdout.split()
    assert (ran, mkldnn, hidden) == ("ran", "False", "True")
    # and nothing applies without the variables
    plain = {**_clean(), "PYTHONPATH": str(SITE_HOOKS)}
    assert _child(plain).split()[1:] == [str(torch.backends.mkldnn.is_available()), "False"]
