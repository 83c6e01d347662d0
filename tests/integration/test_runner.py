"""The command-line runner against a real ComfyUI: overrides, uploads, progress, outputs, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_server import free_port

pytestmark = pytest.mark.integration

RUNNER = Path(__file__).resolve().parents[2] / "scripts" / "run_workflow.py"

# Core nodes only, so the runner is tested independently of the pack's own nodes.
LOAD_SAVE_IMAGE = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "portrait"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "runner_test"}},
}


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=timeout)


def test_runner_uploads_overrides_and_downloads(comfy, testdata, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(LOAD_SAVE_IMAGE))
    out = tmp_path / "out"
    res = run([str(wf), "--server", comfy.url, "--out", str(out),
               "--set", f"portrait.image={testdata / 's0.jpg'}", "--set", "3.filename_prefix=\"dh_runner\""])
    assert res.returncode == 0, res.stderr + res.stdout
    assert "uploaded" in res.stdout and "SaveImage" in res.stdout
    files = list(out.glob("dh_runner*.png"))
    assert len(files) == 1
    got = np.asarray(Image.open(files[0]).convert("RGB")).astype(np.int16)
    src = np.asarray(Image.open(testdata / "s0.jpg").convert("RGB")).astype(np.int16)
    assert got.shape == src.shape
    assert np.abs(got - (255 - src)).max() <= 1  # ImageInvert ran on the uploaded portrait


def test_runner_prints_validation_errors_readably(comfy, tmp_path):
    bad = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps(bad))
    res = run([str(wf), "--server", comfy.url, "--out", str(tmp_path)])
    assert res.returncode == 2
    assert "rejected" in res.stderr and "node 1 (SaveImage)" in res.stderr and "images" in res.stderr


def test_runner_rejects_unknown_node_selector(comfy, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(LOAD_SAVE_IMAGE))
    res = run([str(wf), "--server", comfy.url, "--set", "nosuchnode.image=x"])
    assert res.returncode == 2 and "no node 'nosuchnode'" in res.stderr


def test_runner_starts_a_server_when_none_answers(testdata, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(LOAD_SAVE_IMAGE))
    port = free_port()
    res = run([str(wf), "--server", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "o"),
               "--set", f"portrait.image={testdata / 's6.jpg'}"])
    assert res.returncode == 0, res.stderr + res.stdout
    assert "starting one" in res.stdout
    assert len(list((tmp_path / "o").glob("runner_test*.png"))) == 1
    # and it stopped it again
    from comfy_server import server_alive

    assert not server_alive(f"http://127.0.0.1:{port}")
