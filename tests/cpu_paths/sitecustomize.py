"""Test-only start-up hook: with ``DH_TEST_MKLDNN=0``, torch runs without oneDNN (mkldnn) in this
process too, so its convolutions take ATen's own kernels, as on a CPU where oneDNN picks other
paths.

tests/conftest.py puts this folder on ``PYTHONPATH`` when the suite runs with ``DH_TEST_MKLDNN=0``,
so every Python process the tests start (the ComfyUI servers, the runner, helper scripts) reads
it at start-up. torch is not imported here (that would slow every interpreter and change import
order); the switch is applied right after something else imports it. The pack never ships or
reads this file.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys


def disable_mkldnn(torch_module) -> None:
    importlib.import_module("torch.backends.mkldnn")
    torch_module.backends.mkldnn.enabled = False


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Finds ``torch`` like the normal path finder, and disables oneDNN once it has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_disable(module):
            exec_module(module)
            disable_mkldnn(module)

        spec.loader.exec_module = exec_then_disable
        return spec


if os.environ.get("DH_TEST_MKLDNN") == "0":
    if "torch" in sys.modules:
        disable_mkldnn(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _AfterTorchImport())


def _run_next_sitecustomize() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` as well: Python imports only the first one, and
    the tests may put more than one of these test-only folders on ``PYTHONPATH``."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    start = dirs.index(here) + 1 if here in dirs else len(dirs)
    for i, d in enumerate(dirs[start:], start):
        path = os.path.join(d, "sitecustomize.py")
        if os.path.isfile(path) and d != here:
            spec = importlib.util.spec_from_file_location(f"_sitecustomize_{i}", path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_run_next_sitecustomize()
