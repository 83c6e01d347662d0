"""Error types of the media layer.

``MediaError`` subclasses ``ValueError`` so ComfyUI shows its message as a plain validation-like
error; every message names the file (and, where it matters, the frame index) and the problem.
"""
from __future__ import annotations


class MediaError(ValueError):
    """A media file cannot be read or written as asked; the message says which file and why."""


class MediaWriteError(MediaError):
    """Writing an MP4 failed part-way; ``partial_path`` holds the frames written so far (or None)."""

    def __init__(self, message: str, partial_path: str | None = None):
        super().__init__(message)
        self.partial_path = partial_path
