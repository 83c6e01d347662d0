#!/usr/bin/env python3
"""Throughput of the download path (huggingface_hub -> staging -> verify -> move) on loopback.

Serves a random file from the test fake hub (tests/fakehub.py) and times ``ensure_file``, then
times the sha256 check alone, and reports how far peak RSS rose during the download (the file
is streamed to disk, so this should stay far below the file size).

    python scripts/bench_download.py --mb 200
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import _pack  # noqa: E402,F401

from fakehub import FakeHub  # noqa: E402

from comfyui_digitalhuman.model_loaders.catalog import ModelFile  # noqa: E402
from comfyui_digitalhuman.model_loaders.download import ensure_file, sha256_of  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="file size in MB")
    args = ap.parse_args()
    data = os.urandom(args.mb * 1_000_000)
    digest = hashlib.sha256(data).hexdigest()
    entry = ModelFile(
        id="bench.file", repo="bench/repo", revision="main", file="w.safetensors", size=len(data), sha256=digest,
        license="MIT", folder="musetalk", local="w.safetensors", nodes=(), groups=("bench",), optional=False,
        note="benchmark",
    )
    with FakeHub() as hub, tempfile.TemporaryDirectory() as tmp:
        hub.add(entry.repo, entry.file, data)
        os.environ["HF_ENDPOINT"] = hub.endpoint
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        path, _ = ensure_file(entry, tmp)
        total = time.perf_counter() - t0
        rss1 = _rss_mb()
        t1 = time.perf_counter()
        assert sha256_of(path) == digest
        hashing = time.perf_counter() - t1
    mb = len(data) / 1e6
    print(f"file                 {mb:8.0f} MB")
    print(f"download + verify    {total:8.2f} s   {mb / total:8.1f} MB/s")
    print(f"sha256 alone         {hashing:8.2f} s   {mb / hashing:8.1f} MB/s")
    print(f"peak RSS rise        {rss1 - rss0:8.1f} MB (file held in RAM by the fake server beforehand)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
