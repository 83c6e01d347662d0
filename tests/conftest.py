"""Shared pytest set-up: the pack alias, the paths of the shared test media, and the test-only
switches that make this machine take the numeric paths of another CPU (docs/DEVELOPING.md)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import _pack  # noqa: E402  (registers the ``comfyui_digitalhuman`` alias)

SHARED = Path(os.environ.get("DH_SHARED", REPO.parent / "shared")).resolve()
TESTDATA = SHARED / "testdata"

# The test-only CPU-path switches (tests/cpu_switches.py): with DH_TEST_MKLDNN=0, torch runs without
# oneDNN here and, through tests/site_hooks on PYTHONPATH, in every Python process the tests start.
from cpu_switches import SWITCHES, child_pythonpath, mkldnn_off  # noqa: E402

if mkldnn_off():
    os.environ["PYTHONPATH"] = child_pythonpath(*os.environ.get("PYTHONPATH", "").split(os.pathsep))
    import torch

    torch.backends.mkldnn.enabled = False


def _free_tmp_gib() -> float:
    return shutil.disk_usage(tempfile.gettempdir()).free / 2**30


_FREE_AT_START = _free_tmp_gib()


def pytest_terminal_summary(terminalreporter) -> None:
    """Which numeric paths this run took, so a CI log (even with -q) says what was exercised."""
    import torch

    switches = ", ".join(f"{k}={os.environ[k]}" for k in SWITCHES if k in os.environ) or "none"
    terminalreporter.write_line(f"cpu paths: ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN "
                                f"{'on' if torch.backends.mkldnn.enabled else 'off'}; switches: {switches}")
    # The free space where the tests write, so a log of 'No space left on device' errors says why.
    terminalreporter.write_line(f"temporary folder: {_FREE_AT_START:.1f} GiB free at the start, "
                                f"{_free_tmp_gib():.1f} GiB at the end")


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Folder of the real test media (``../shared/testdata``); CI always has it."""
    if not TESTDATA.is_dir():
        pytest.fail(f"test media not found at {TESTDATA}; set DH_SHARED to the shared folder")
    return TESTDATA


@pytest.fixture(scope="session")
def comfy_modules():
    """The real ComfyUI modules (``comfy.utils``, ``comfy.model_management``, ``folder_paths``),
    imported in this process in CPU mode, for node-level tests without a server."""
    from types import SimpleNamespace

    from comfy_server import find_comfyui

    try:
        root = find_comfyui()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    if str(root) not in sys.path:
        sys.path.append(str(root))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # no CUDA here; ComfyUI otherwise probes the GPU at import
    import comfy.model_management
    import comfy.utils
    import folder_paths

    return SimpleNamespace(root=root, utils=comfy.utils, mm=comfy.model_management, folder_paths=folder_paths)


@pytest.fixture
def comfy_env(comfy_modules, tmp_path, monkeypatch):
    """ComfyUI's folders pointed into ``tmp_path`` and its progress hook recorded.

    Yields a namespace with ``dirs`` (input, output, temp, user, models), ``progress`` (the
    ``(value, total)`` updates every ProgressBar sent) and ``interrupt()`` (press Cancel).
    """
    from types import SimpleNamespace

    fp, mm, utils = comfy_modules.folder_paths, comfy_modules.mm, comfy_modules.utils
    dirs = {k: tmp_path / "comfy" / k for k in ("input", "output", "temp", "user", "models")}
    for d in dirs.values():
        d.mkdir(parents=True)
    monkeypatch.setattr(fp, "input_directory", str(dirs["input"]), raising=False)
    monkeypatch.setattr(fp, "output_directory", str(dirs["output"]), raising=False)
    monkeypatch.setattr(fp, "temp_directory", str(dirs["temp"]), raising=False)
    monkeypatch.setattr(fp, "user_directory", str(dirs["user"]), raising=False)
    monkeypatch.setattr(fp, "models_dir", str(dirs["models"]), raising=False)
    if hasattr(fp, "get_user_directory"):
        monkeypatch.setattr(fp, "get_user_directory", lambda: str(dirs["user"]))
    names = dict(fp.folder_names_and_paths)
    for key, (paths, exts) in names.items():
        monkeypatch.setitem(fp.folder_names_and_paths, key, ([str(dirs["models"] / key)], exts))
    progress: list[tuple[int, int]] = []
    utils.set_progress_bar_global_hook(lambda value, total, preview=None, *a, **k: progress.append((value, total)))
    mm.interrupt_current_processing(False)
    yield SimpleNamespace(dirs=dirs, progress=progress, interrupt=lambda: mm.interrupt_current_processing(True),
                          modules=comfy_modules)
    mm.interrupt_current_processing(False)
    utils.set_progress_bar_global_hook(None)
