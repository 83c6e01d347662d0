"""Remembered sha256 verdicts, so a file in place is hashed once, not on every load.

Why: a weight file damaged in place (a copy that stopped half way and was padded, a disk
error, a file of the right size with zeroed blocks) passes a size check and loads into a
network that then produces garbage. Hashing catches it, but hashing gigabytes on every load is
too slow; so the verdict "this file had the catalogue's sha256" is kept together with what
would change if the file were touched: its size, its modification time and its status-change
time (``ctime``, which no copy tool can set back, so ``cp --preserve`` over a good file still
triggers a new hash). Any difference, or another expected hash, means hash again.

Where: ``<models>/<folder>/.dh_download/sha256_verdicts`` (JSON; no weight-like extension, so
ComfyUI's file lists do not show it), next to the files it speaks for, keyed by the path
relative to that folder, so moving the whole models folder keeps the verdicts. Only good
verdicts are stored. Robustness: writes go to a temporary file that replaces the store
atomically, so a reader never sees half a store; two writers at once may lose one verdict, which
only costs a hash later; an unreadable or garbled store counts as empty; a read-only folder
keeps the verdicts for the process's lifetime only.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from pathlib import Path

log = logging.getLogger("DigitalHuman.models")

STORE_NAME = "sha256_verdicts"
_VERSION = 1
_ABOUT = ("sha256 checks of the model files in this folder that passed, with the size and times the file had "
          "then (written by ComfyUI-DigitalHuman; safe to delete: files are hashed again on next use).")
_lock = threading.Lock()
_memory: set[tuple[str, int, int, int, str]] = set()


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _rel(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()


def _read(store: Path) -> dict[str, dict]:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("version") == _VERSION else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def is_verified(path: Path, folder: Path, store_dir: Path, sha256: str) -> bool:
    """True when ``path`` (inside models sub-folder ``folder``) is remembered as having ``sha256``
    with exactly its current size, mtime and ctime."""
    try:
        size, mtime, ctime = _stamp(path)
    except OSError:
        return False
    key = (str(Path(path).resolve()), size, mtime, ctime, sha256)
    if key in _memory:
        return True
    rec = _read(store_dir / STORE_NAME).get(_rel(path, folder))
    ok = rec == {"sha256": sha256, "size": size, "mtime_ns": mtime, "ctime_ns": ctime}
    if ok:
        _memory.add(key)
    return ok


def remember(path: Path, folder: Path, store_dir: Path, sha256: str) -> None:
    """Record that ``path`` has ``sha256`` now (after it was hashed); never raises."""
    try:
        size, mtime, ctime = _stamp(path)
    except OSError:
        return
    _memory.add((str(Path(path).resolve()), size, mtime, ctime, sha256))
    store = store_dir / STORE_NAME
    with _lock:
        tmp = store_dir / f"{STORE_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            store_dir.mkdir(parents=True, exist_ok=True)
            files = _read(store)
            files[_rel(path, folder)] = {"sha256": sha256, "size": size, "mtime_ns": mtime, "ctime_ns": ctime}
            files = {k: v for k, v in files.items() if (folder / k).is_file()}  # drop files that are gone
            tmp.write_text(json.dumps({"_about": _ABOUT, "version": _VERSION, "files": files}, indent=1),
                           encoding="utf-8")
            os.replace(tmp, store)
        except OSError as exc:  # read-only folder, full disk, a store held open elsewhere (Windows)
            log.info("DigitalHuman: cannot record the sha256 check of %s in %s (%s); it is kept for this "
                     "process only", path, store, exc)
            try:
                tmp.unlink()
            except OSError:
                pass


def forget_memory() -> None:
    """Drop the in-process verdicts (tests; a fresh process starts with none)."""
    _memory.clear()
