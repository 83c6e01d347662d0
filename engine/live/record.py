"""Recording a live session: what was shown and said, to an MP4 that survives a server stop.

The MP4 is *fragmented* (``frag_keyframe+empty_moov``): the index comes first and every keyframe
interval (``keyframe_s``, 1 s) is a self-contained fragment, so a file cut short (the server
stopped or killed) plays up to its last complete fragment. It is written as
``<name>.partial.mp4`` and renamed to ``<name>.mp4`` when the session closes normally; a partial
name tells the file was cut. Every output frame goes in with its own audio, so the recording is in
sync exactly as the stream is.

Beside it, written line by line and flushed at once: ``<name>.transcript.jsonl`` (every message
and every piece the avatar said, with its time in the recording) and ``<name>.srt`` (one cue per
spoken piece).

Encoding runs in its own thread, fed through a queue of ``queue_s`` seconds; if the encoder
cannot keep up, frames are dropped from the recording (counted), never from the live stream.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..media.audio_io import packed_frame
from ..speech.srt import format_timestamp as format_time
from .config import section

log = logging.getLogger("DigitalHuman.live")


class Recorder:
    def __init__(self, base: str | os.PathLike, fps: float, size: tuple[int, int], sample_rate: int = 48000,
                 rules: dict | None = None, queue_s: float = 4.0):
        self.rules = rules or section("record")
        self.base = Path(base)
        self.base.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.base.with_name(self.base.name + ".partial.mp4")
        self.final = self.base.with_name(self.base.name + ".mp4")
        self.transcript_path = self.base.with_name(self.base.name + ".transcript.jsonl")
        self.srt_path = self.base.with_name(self.base.name + ".srt")
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.rate = int(sample_rate)
        self.frames = 0
        self.dropped = 0
        self.error: str | None = None
        self._q: queue.Queue = queue.Queue(maxsize=max(8, int(queue_s * self.fps)))
        self._text_lock = threading.Lock()
        self._transcript = open(self.transcript_path, "a", encoding="utf-8", buffering=1)
        self._srt = open(self.srt_path, "a", encoding="utf-8", buffering=1)
        self._cues: dict[tuple[int, int], tuple[str, float]] = {}
        self._cue_n = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dh-live-record", daemon=True)
        self._thread.start()

    @property
    def path_str(self) -> str:
        return str(self.final if self._closed and self.final.exists() else self.partial)

    # -- frames ------------------------------------------------------------------------------
    def write(self, frame) -> None:
        """Queue one AVFrame (called by the session's clock; never blocks)."""
        if self._closed:
            return
        try:
            self._q.put_nowait((frame.video, frame.audio))
        except queue.Full:
            self.dropped += 1

    def _open(self):
        c = av.open(str(self.partial), mode="w", format="mp4",
                    options={"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
        rate = Fraction(self.fps).limit_denominator(1001)
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = self.size[0], self.size[1], "yuv420p"
        gop = max(1, int(round(float(self.rules["keyframe_s"]) * self.fps)))
        vs.options = {"crf": str(self.rules["crf"]), "preset": str(self.rules["preset"]), "tune": "zerolatency",
                      "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        vs.codec_context.time_base = 1 / rate
        a = c.add_stream("aac", rate=self.rate)
        a.layout = "mono"
        a.bit_rate = int(self.rules["audio_bitrate"])
        return c, vs, a, rate

    def _run(self) -> None:
        c = vs = a = None
        apos = 0
        try:
            c, vs, a, rate = self._open()
            while True:
                item = self._q.get()
                if item is None:
                    break
                video, audio = item
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(video), format="rgb24")
                vf.pts = self.frames
                vf.time_base = 1 / rate
                for pkt in vs.encode(vf):
                    c.mux(pkt)
                if audio.size:
                    af = packed_frame(np.asarray(audio, np.float32)[None, :], self.rate, "mono")
                    af.pts = apos
                    af.time_base = Fraction(1, self.rate)
                    apos += audio.size
                    for pkt in a.encode(af):
                        c.mux(pkt)
                self.frames += 1
            for pkt in vs.encode(None):
                c.mux(pkt)
            for pkt in a.encode(None):
                c.mux(pkt)
            c.close()
            c = None
        except Exception as exc:
            self.error = f"recording to {self.partial} failed: {exc}"
            log.exception("[DigitalHuman] live: %s", self.error)
        finally:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass

    # -- transcript --------------------------------------------------------------------------
    def note(self, role: str, text: str, t: float) -> None:
        """One transcript line: who (``user``, ``avatar``, ``clip``), what, when (s into the recording)."""
        with self._text_lock:
            if not self._closed:
                self._transcript.write(json.dumps({"t": round(float(t), 3), "role": role, "text": text,
                                                   "wall": round(time.time(), 3)}, ensure_ascii=False) + "\n")

    def cue_start(self, turn: int, piece: int, text: str, t: float) -> None:
        with self._text_lock:
            self._cues[(turn, piece)] = (text, float(t))

    def cue_end(self, turn: int, piece: int, t: float) -> None:
        with self._text_lock:
            cue = self._cues.pop((turn, piece), None)
            if cue is None or self._closed:
                return
            text, t0 = cue
            self._cue_n += 1
            self._srt.write(f"{self._cue_n}\n{format_time(t0)} --> {format_time(max(t, t0 + 0.04))}\n{text}\n\n")

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> str:
        """Finish the file and rename it to its final name; returns the path."""
        if self._closed:
            return self.path_str
        self._closed = True
        self._q.put(None)
        self._thread.join(30.0)
        with self._text_lock:
            for (turn, piece), (text, t0) in list(self._cues.items()):  # cut by an interrupt: end where it stopped
                self._cue_n += 1
                t1 = self.frames / self.fps
                self._srt.write(f"{self._cue_n}\n{format_time(t0)} --> {format_time(max(t1, t0 + 0.04))}\n{text}\n\n")
            self._cues.clear()
            self._transcript.close()
            self._srt.close()
        if self.error is None and self.partial.exists():
            os.replace(self.partial, self.final)
        if self.error is not None:
            raise RuntimeError(self.error + f" (what was recorded is kept in {self.partial})")
        return self.path_str
