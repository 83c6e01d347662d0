"""Read a weight file (``.safetensors`` or a PyTorch pickle) so that any failure names the file.

Why: the readers' own errors name nothing (safetensors: ``Error while deserializing header:
header too large``; torch: ``PytorchStreamReader failed reading zip archive``, or a long
``weights_only`` notice that even suggests the unsafe way out). A user with several models
folders needs to know which file is broken and that deleting it makes the pack fetch a fresh
copy. No code is executed: pickles are read with ``weights_only=True``.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

ADVICE = ("Delete it and run again: a catalogued file is then downloaded afresh (scripts/fetch_models.py --verify "
           "checks every file in place); a file of your own must be replaced.")


class WeightFileError(ValueError):
    """A weight or config file that cannot be read; the message names it and says what to do."""


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _reason(path: Path, exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if isinstance(exc, pickle.UnpicklingError) and "weights_only" in text:
        return ("torch.load(weights_only=True) refused it: it is not a PyTorch weights file, or it holds "
                "objects other than tensors")
    if isinstance(exc, EOFError):
        return "it ends too early (truncated)"
    if "PytorchStreamReader" in text:
        return "not a complete PyTorch zip archive (" + text.split(". ")[0].split(": ", 1)[-1] + ")"
    if path.suffix != ".safetensors" and _is_zip(path):  # the zip reader fails on a cut file with a bare OSError
        return f"a damaged or truncated PyTorch zip archive ({detail})"
    return detail


def unreadable(path: Path, what: str, exc: BaseException) -> WeightFileError:
    """The error for ``path`` that could not be read, with the reader's reason and the way out."""
    try:
        size = f", {Path(path).stat().st_size} bytes"
    except OSError:
        size = ""
    return WeightFileError(f"cannot read {what} '{path}'{size}: {_reason(Path(path), exc)}. The file is damaged, incomplete or "
                           f"not the expected kind of file. {ADVICE}")


def load_weight_file(path: str | Path, what: str = "weights file", mmap: bool = True) -> Any:
    """The object stored in a ``.safetensors`` (a dict of tensors) or a PyTorch file (memory-mapped
    where the format allows). Raises ``FileNotFoundError`` or :class:`WeightFileError`, both naming
    ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        import torch

        if mmap:
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # noqa: BLE001
                # legacy (non-zip) pickles cannot be memory-mapped, and a damaged file fails mapping
                # with a bare OSError: read it plainly, which loads the former and explains the latter
                pass
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader failure becomes one that names the file
        raise unreadable(path, what, exc) from exc


def load_json_file(path: str | Path, what: str = "config file") -> Any:
    """A JSON config (``musetalk.json``, ``config.json``) with errors that name the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise unreadable(path, what, exc) from exc
