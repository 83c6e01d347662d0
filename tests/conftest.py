"""Shared pytest set-up: the pack alias and the paths of the shared test media."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import _pack  # noqa: E402  (registers the ``comfyui_digitalhuman`` alias)

SHARED = Path(os.environ.get("DH_SHARED", REPO.parent / "shared")).resolve()
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Folder of the real test media (``../shared/testdata``); CI always has it."""
    if not TESTDATA.is_dir():
        pytest.fail(f"test media not found at {TESTDATA}; set DH_SHARED to the shared folder")
    return TESTDATA
