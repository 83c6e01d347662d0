"""The media clock of a live session: one output frame every 1/fps seconds, handed to every sink.

Frames are due at ``t0 + i / fps`` (never an accumulated sleep, so the clock does not drift); a
sink that needs the frames at its own pace (a WebRTC track, the recorder) queues them. When the
process falls further behind than ``catch_up_s`` (a long pause of the machine) the clock
re-anchors instead of bursting many frames at once, and counts it. The frame count, not the wall
clock, is the media time, so picture and sound stay together whatever happens.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("DigitalHuman.live")


class Ticker:
    def __init__(self, fps: float, tick: Callable[[], object], sinks: Callable[[], list], catch_up_s: float = 0.5,
                 name: str = "dh-live-clock"):
        self.period = 1.0 / float(fps)
        self.tick = tick
        self.sinks = sinks
        self.catch_up_s = float(catch_up_s)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.reanchors = 0
        self.late_frames = 0
        self.frames = 0
        self.started_at: float | None = None
        self.error: BaseException | None = None

    def start(self) -> "Ticker":
        self.thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self.stop_event.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def fps(self) -> float:
        """Frames per second delivered since the start."""
        if not self.started_at or not self.frames:
            return 0.0
        return self.frames / max(1e-6, time.monotonic() - self.started_at)

    def _run(self) -> None:
        t0 = time.monotonic()
        self.started_at = t0
        i = 0
        while not self.stop_event.is_set():
            due = t0 + i * self.period
            now = time.monotonic()
            if due > now:
                if self.stop_event.wait(due - now):
                    break
            elif now - due > self.catch_up_s:
                self.reanchors += 1
                t0 = now - i * self.period
            elif now - due > self.period:
                self.late_frames += 1
            try:
                frame = self.tick()
                for sink in self.sinks():
                    try:
                        sink(frame)
                    except Exception:  # one bad viewer must not stop the others or the session
                        log.exception("[DigitalHuman] live: a frame sink failed")
            except Exception as exc:
                self.error = exc
                log.exception("[DigitalHuman] live: the media clock stopped")
                return
            self.frames += 1
            i += 1
