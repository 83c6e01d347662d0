"""The test-only CPU-path switches, for every Python process the tests start (docs/DEVELOPING.md).

``DH_TEST_MKLDNN=0`` turns oneDNN off: tests/conftest.py does it in the test process and puts
``tests/site_hooks`` (a ``sitecustomize`` that does it once torch is imported) on ``PYTHONPATH``,
which children inherit. A test that builds a child's environment itself passes it through
``child_pythonpath`` and keeps ``DH_TEST_MKLDNN``. The libraries' own CPU switches are plain
environment variables that children inherit as long as the environment is copied.
"""
from __future__ import annotations

import os
from pathlib import Path

SITE_HOOKS = Path(__file__).resolve().parent / "site_hooks"
SWITCHES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES",
            "OPENCV_CPU_DISABLE", "DH_TEST_MKLDNN")


def mkldnn_off() -> bool:
    return os.environ.get("DH_TEST_MKLDNN") == "0"


def child_pythonpath(*entries: str | os.PathLike) -> str:
    """A ``PYTHONPATH`` of ``entries`` plus, when oneDNN is switched off, ``tests/site_hooks``."""
    parts = [str(e) for e in entries if e]
    if mkldnn_off() and str(SITE_HOOKS) not in parts:
        parts.append(str(SITE_HOOKS))
    return os.pathsep.join(parts)


def switch_env() -> dict[str, str]:
    """This run's switches, to copy into an environment built from scratch."""
    return {k: os.environ[k] for k in SWITCHES if k in os.environ}
