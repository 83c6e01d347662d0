"""Lip sync for a live session: MuseTalk's real-time path on a prepared avatar, batch by batch.

The renderer turns a piece's audio prompts (``StreamingAudioWindows``) into frames for given
avatar positions; it times every batch, so the session can place a piece's first frame where
the idle loop will be when the frame is ready. The networks are fetched through ``get_models``
for every piece (ComfyUI may have moved them since; it puts them back on the device).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from ..musetalk import audio as audio_mod
from ..musetalk.pipeline import CROP, AvatarCache, MuseTalkModels, pingpong_index, render_frames


class AvatarMismatchError(ValueError):
    """The avatar cannot be spoken with these networks (prepared for another model)."""


class MuseTalkRenderer:
    """Renders speaking frames of ``cache`` with the networks ``get_models()`` returns."""

    def __init__(self, get_models: Callable[[], MuseTalkModels], cache: AvatarCache, fps: float = 25.0):
        if not isinstance(cache, AvatarCache):
            raise TypeError(f"avatar: expected a prepared MuseTalk avatar (AvatarCache), got {type(cache).__name__}")
        self.get_models = get_models
        self.cache = cache
        self.fps = float(fps)
        self.frames = cache.frames
        self.s_per_frame: float | None = None  # measured render time per frame (running average)
        self._models: MuseTalkModels | None = None
        self.last_s = 0.0  # time of the last render call (for the latency budget)

    def check(self) -> float:
        """Fail clearly when the avatar does not fit the networks; render one frame and return its time."""
        models = self.get_models()
        c = self.cache
        if len(c) == 0:
            raise AvatarMismatchError("avatar: it has no frames")
        if not bool(np.any(c.present)):
            raise AvatarMismatchError("avatar: no frame of it has a face, so there is no mouth to move "
                                      "(prepare it from a video or portrait where a face is found)")
        want_c = int(getattr(models.unet.config, "in_channels", 8))
        lat = tuple(c.latents.shape[1:])
        if lat != (want_c, CROP // 8, CROP // 8):
            raise AvatarMismatchError(f"avatar: its latents are {list(lat)} but the loaded MuseTalk UNet takes "
                                      f"[{want_c}, {CROP // 8}, {CROP // 8}]: it was prepared for another model; "
                                      "prepare it again with these networks")
        vae_c = int(getattr(models.vae.config, "latent_channels", 4))
        if 2 * vae_c != want_c:
            raise AvatarMismatchError(f"MuseTalk: the VAE makes {vae_c}-channel latents but the UNet takes {want_c} channels")
        first = int(np.flatnonzero(c.present)[0])
        windows = torch.zeros(1, audio_mod.WINDOW * audio_mod.N_STATES, audio_mod.D_MODEL)
        render_frames(models, c, [first], windows)  # the first pass pays for one-time set-up; time the second
        t0 = time.perf_counter()
        render_frames(models, c, [first], windows)
        dt = time.perf_counter() - t0
        self.s_per_frame = dt
        return dt

    def features(self, sample_rate: int) -> audio_mod.StreamingAudioWindows:
        """A fresh audio-prompt stream for one piece of audio at ``sample_rate`` (the networks are
        fetched here, once per piece, and used for its batches)."""
        self._models = self.get_models()
        return audio_mod.StreamingAudioWindows(self._models.whisper, self.fps, sample_rate)

    def expected_s(self, n: int) -> float:
        """Expected seconds to render ``n`` frames (from the batches so far)."""
        return (self.s_per_frame or 0.05) * max(1, n)

    def render(self, positions: Sequence[int], windows: torch.Tensor) -> list[np.ndarray]:
        """Frames for avatar ping-pong ``positions`` speaking ``windows [n, 50, 384]``."""
        n = len(self.cache)
        ids = [pingpong_index(int(p), n) for p in positions]
        t0 = time.perf_counter()
        models = self._models if self._models is not None else self.get_models()
        out = render_frames(models, self.cache, ids, windows)
        self.last_s = time.perf_counter() - t0
        dt = self.last_s / max(1, len(ids))
        self.s_per_frame = dt if self.s_per_frame is None else 0.7 * self.s_per_frame + 0.3 * dt
        return out


class StreamResampler:
    """Mono float audio from ``in_rate`` to ``out_rate`` as it arrives (soxr's streaming HQ resampler)."""

    def __init__(self, in_rate: int, out_rate: int):
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self._st = None
        if self.in_rate != self.out_rate:
            import soxr

            self._st = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")

    def feed(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        return x if self._st is None else self._st.resample_chunk(x, last=False)

    def end(self) -> np.ndarray:
        return np.zeros(0, np.float32) if self._st is None else self._st.resample_chunk(np.zeros(0, np.float32), last=True)
