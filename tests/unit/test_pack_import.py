"""Importing the pack is cheap and safe: a missing optional dependency disables only its nodes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys, time, logging
logging.basicConfig(level=logging.WARNING, format="%(message)s")
for name in {blocked!r}:
    sys.modules[name] = None  # as if the package were not installed
sys.path.insert(0, {scripts!r})
import _pack
import torch  # ComfyUI has imported torch before it loads custom nodes
t = time.perf_counter()
from comfyui_digitalhuman import nodes
print("SECONDS", time.perf_counter() - t)
print("DISABLED", sorted(nodes.DISABLED))
print("NODES", len(nodes.NODE_CLASS_MAPPINGS))
print("HEAVY", [m for m in ("diffusers", "transformers", "librosa") if sys.modules.get(m) is not None])
"""


def probe(blocked: list[str]) -> dict[str, str]:
    code = PROBE.format(blocked=blocked, scripts=str(REPO / "scripts"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    out["log"] = res.stderr
    return out


def test_import_is_cheap_and_loads_every_node_module():
    out = probe([])
    assert out["DISABLED"] == "[]"
    assert int(out["NODES"]) >= 20
    assert out["HEAVY"] == "[]"  # model libraries are imported when a model node runs, not at start-up
    assert float(out["SECONDS"]) < 10


def test_missing_dependency_disables_only_its_nodes_with_one_log_line():
    full = int(probe([])["NODES"])
    out = probe(["av"])
    assert out["DISABLED"] == "['audio', 'video']"
    assert int(out["NODES"]) == full - 3  # Load Video, Save Video, Load Audio
    lines = [l for l in out["log"].splitlines() if "disabled" in l]
    assert len(lines) == 2 and all("av" in l for l in lines)


def test_pyproject_dependencies_are_requirements_txt():
    """The Comfy Registry reads pyproject.toml, ComfyUI-Manager runs requirements.txt: one list."""
    import re

    import pytest

    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    root = Path(__file__).resolve().parents[2]
    req = [line.strip() for line in (root / "requirements.txt").read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    norm = lambda xs: sorted(re.sub(r"\s+", "", x).lower() for x in xs)  # noqa: E731
    assert norm(deps) == norm(req)
