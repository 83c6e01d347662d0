#!/usr/bin/env python3
"""Throughput of the download paths (staging -> verify -> move) on loopback, and the cost of checking
a file already in place (first sight: sha256; later: the remembered verdict).

Serves a random file from a test stand-in: the fake Hugging Face hub (tests/fakehub.py,
huggingface_hub's client) or the fake MediaPipe storage (tests/fakestorage.py, the plain-URL
client), and times ``ensure_file``; reports how far peak RSS rose during the download (the file is
streamed to disk, so this should stay far below the file size). Then it times ``ensure_file`` on the
file in place: with the verdict in memory, read from the folder (a new process), and hashed anew.

    python scripts/bench_download.py --mb 200 [--source hub|url]
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
from fakestorage import FakeStorage  # noqa: E402

from comfyui_digitalhuman.model_loaders import verdicts  # noqa: E402
from comfyui_digitalhuman.model_loaders.catalog import ModelFile  # noqa: E402
from comfyui_digitalhuman.model_loaders.download import ensure_file, sha256_of  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _entry(data: bytes, source: str, server) -> ModelFile:
    common = dict(id="bench.file", file="w.safetensors", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                  license="MIT", folder="musetalk", local="w.safetensors", nodes=(), groups=("bench",),
                  optional=False, note="benchmark")
    if source == "hub":
        entry = ModelFile(repo="bench/repo", revision="main", **common)
        server.add(entry.repo, entry.file, data)
        os.environ["HF_ENDPOINT"] = server.endpoint
        return entry
    server.add("bench-bucket", "w.safetensors", data, generation=1)
    return ModelFile(repo=None, revision=None, urls=(server.url("bench-bucket", "w.safetensors", 1),), **common)


def _ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="file size in MB")
    ap.add_argument("--source", choices=("hub", "url"), default="hub", help="which download client to time")
    args = ap.parse_args()
    for var in ("DH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    data = os.urandom(args.mb * 1_000_000)
    server_cls = FakeHub if args.source == "hub" else FakeStorage
    with server_cls() as server, tempfile.TemporaryDirectory() as tmp:
        entry = _entry(data, args.source, server)
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        path, _ = ensure_file(entry, tmp)
        total = time.perf_counter() - t0
        rss1 = _rss_mb()
        t1 = time.perf_counter()
        assert sha256_of(path) == entry.sha256
        hashing = time.perf_counter() - t1
        remembered = _ms(lambda: ensure_file(entry, tmp))
        verdicts.forget_memory()
        from_folder = _ms(lambda: ensure_file(entry, tmp))
        rehashed = _ms(lambda: ensure_file(entry, tmp, rehash=True))
    mb = len(data) / 1e6
    print(f"source               {args.source}")
    print(f"file                 {mb:8.0f} MB")
    print(f"download + verify    {total:8.2f} s   {mb / total:8.1f} MB/s")
    print(f"sha256 alone         {hashing:8.2f} s   {mb / hashing:8.1f} MB/s")
    print(f"peak RSS rise        {rss1 - rss0:8.1f} MB (file held in RAM by the fake server beforehand)")
    print(f"in place, verdict in memory     {remembered:10.2f} ms")
    print(f"in place, verdict from folder   {from_folder:10.2f} ms")
    print(f"in place, hashed again          {rehashed:10.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
