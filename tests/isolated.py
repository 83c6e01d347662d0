"""Run code that may crash the interpreter (a segfault in a C library) in a child process.

Why: a crash inside pytest's own process ends the whole run with no report. In a child, a
crash becomes an exit status that a test can turn into a clear failure.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cpu_switches import child_pythonpath

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def run_python(args: list[str | os.PathLike], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python <args>`` with this interpreter, from the repository root, output captured."""
    full_env = {**os.environ, "PYTHONPATH": child_pythonpath(TESTS, REPO / "scripts"), **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def exit_reason(proc: subprocess.CompletedProcess) -> str:
    """'exited with 0', 'was killed by SIGSEGV', ... for a message."""
    if proc.returncode < 0:
        try:
            return f"was killed by {signal.Signals(-proc.returncode).name}"
        except ValueError:
            return f"was killed by signal {-proc.returncode}"
    return f"exited with {proc.returncode}"


def last_line(proc: subprocess.CompletedProcess, prefix: str) -> str:
    """The last stdout line starting with ``prefix`` (what the child was doing when it stopped)."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(prefix)]
    return lines[-1] if lines else "(nothing started)"
