"""Memory of the IMAGE path for video: Load Video (decode_images) and Save Video from IMAGE.

Measured in a fresh process each (tests/memory_child.py), as the rise of the resident set's
high-water mark over the resident size just before the call. The bounds come from byte counts:
a float32 IMAGE of N frames is N*H*W*3*4 bytes, a uint8 frame H*W*3.
Before the fix Load Video held the uint8 frames, a stacked copy of each 32-frame chunk and then
the float tensor (1.42x the IMAGE at this size, 1.27x at 4K), and Save Video's float -> uint8
step made three or four float32 temporaries of every 16-frame chunk (+1.18x the IMAGE here,
+1.95x at 4K).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from isolated import TESTS, exit_reason, run_python
from comfyui_digitalhuman.engine.media.video_io import images_peak_bytes

W, H, N = 960, 540, 48
FRAME = W * H * 3  # bytes of one uint8 RGB frame
IMAGE = N * FRAME * 4  # bytes of the float32 IMAGE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the peak is reset and read through Linux's /proc/self (VmHWM)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("memory") / "clip.mp4"
    proc = run_python([TESTS / "memory_child.py", "make", path, W, H, N], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return path


def measure(mode: str, clip: Path) -> dict:
    proc = run_python([TESTS / "memory_child.py", mode, clip], timeout=600)
    assert proc.returncode == 0, f"the measuring process {exit_reason(proc)}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_load_video_images_needs_the_image_and_no_copy(clip: Path) -> None:
    got = measure("node", clip)
    assert got["shape"] == [N, H, W, 3]
    assert got["peak"] >= 0.95 * IMAGE  # the measurement sees the IMAGE itself
    # what the RAM check budgets: the IMAGE plus 16 uint8 frames for the decoder's frames in flight
    assert images_peak_bytes(N, W, H) == IMAGE + 16 * FRAME
    assert got["peak"] <= images_peak_bytes(N, W, H), f"{got['peak'] / IMAGE:.2f}x the IMAGE"


def test_save_video_converts_an_image_batch_chunk_by_chunk(clip: Path) -> None:
    got = measure("convert", clip)
    assert got["shape"] == [N, H, W, 3]
    chunk = 16 * FRAME  # the uint8 chunk Save Video encodes
    assert got["peak"] >= 0.9 * chunk
    # one uint8 chunk, one float32 frame of scratch space (4 bytes a channel), and 16 MiB for the
    # allocator (runs of this test vary by ~9 MiB between identical runs); the old path needed ~320 MiB
    assert got["peak"] <= chunk + 4 * FRAME + 16 * 2**20, f"{got['peak'] / 2**20:.0f} MiB"
