"""What the avatar shows and says at every tick of the media clock: idle loop, speech, holds, fades.

One output frame per tick, each carrying exactly the audio of its own time span, so picture and
sound cannot drift apart: output frame ``i`` holds the samples ``a(i) .. a(i+1)-1`` of the output
audio, ``a(i) = round(i * rate / fps)`` (1920 at 25 fps and 48 kHz). Speech frames come from the
renderer with the audio of *their* piece frame; a small sample queue carries the rounding
remainder from frame to frame (at most one sample), so the audio of piece frame ``k`` is heard
with that frame within 1/rate s, and the running total never drifts from the frame count.

Positions: the avatar's frames are played forwards and backwards (ping-pong) by a position
counter. Idle frames advance it by one. Speech frames are rendered for given positions: a piece
that starts after silence is placed a little ahead of the idle loop (the expected render time
times ``start_margin``), and the loop keeps idling until it reaches that position, so the body
never jumps; if the loop gets there first it holds the last picture for the missing frames (the
lead is at most ``max_lead_s``; a one-frame avatar, a still portrait, starts at once).
Frames of consecutive pieces follow each other. A piece that runs dry mid-way (rendering slower
than real time) holds its last picture and counts a stall; between pieces the avatar idles.

Transitions: the redrawn mouth fades in over the first ``transition_frames`` frames of a piece
after silence (blend from the avatar's own frame), and out over as many idle frames after the
last speaking frame or an interrupt (the last mouth difference, decaying), so neither the start
nor the end of speech jumps. ``interrupt`` discards every queued frame at once: the very next
tick is idle.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from ..musetalk.pipeline import pingpong_index


@dataclass
class SpeechFrame:
    """A rendered frame of a piece, or (``video`` None) a marker: the end of a piece or of a turn."""

    gen: int
    pos: int
    video: np.ndarray | None
    audio: np.ndarray  # float32 samples at the output rate for this piece frame
    turn: int = 0
    piece: int = 0
    first: bool = False  # first frame of its piece
    end_piece: bool = False
    end_turn: bool = False


def end_piece(gen: int, turn: int, piece: int) -> SpeechFrame:
    return SpeechFrame(gen, -1, None, np.zeros(0, np.float32), turn=turn, piece=piece, end_piece=True)


@dataclass
class AVFrame:
    """One output frame: picture (uint8 RGB, even size) and its audio (float32 mono at the output rate)."""

    index: int
    video: np.ndarray
    audio: np.ndarray
    pos: int
    speaking: bool
    held: bool = False
    turn: int = 0
    piece: int = 0
    events: list = field(default_factory=list)  # ("first_frame", turn), ("piece_start", turn, piece), ("piece_end", ...), ("turn_end", ...)


def scaled_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most ``max_side`` (0: unchanged)."""
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        return max(1, int(round(w * s))), max(1, int(round(h * s)))
    return w, h


class Picture:
    """Avatar frames at the stream size: scaled down (INTER_AREA) to ``max_side`` and padded to even
    sizes (video encoders need them) by repeating the edge."""

    def __init__(self, frames: np.ndarray, max_side: int):
        self.frames = frames
        self.n = int(frames.shape[0])
        h, w = frames.shape[1:3]
        self.scaled = scaled_size(w, h, max_side)
        self.size = (self.scaled[0] + self.scaled[0] % 2, self.scaled[1] + self.scaled[1] % 2)

    def fit(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if (w, h) == self.size:
            return np.ascontiguousarray(img)
        if (w, h) != self.scaled:
            img = cv2.resize(img, self.scaled, interpolation=cv2.INTER_AREA)
        sw, sh = self.scaled
        tw, th = self.size
        if (sw, sh) != (tw, th):
            img = cv2.copyMakeBorder(img, 0, th - sh, 0, tw - sw, cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(img)

    def at(self, pos: int) -> np.ndarray:
        """The avatar's own frame at ping-pong position ``pos``, at the stream size."""
        return self.fit(self.frames[pingpong_index(pos, self.n)])


class Timeline:
    """The player: thread-safe; the renderer :meth:`place` s and :meth:`push` es, the clock :meth:`tick` s."""

    def __init__(self, picture: Picture, fps: float, out_rate: int = 48000, transition_frames: int = 4,
                 max_buffer: int = 40, start_margin: float = 1.3, max_lead_s: float = 1.0):
        self.picture = picture
        self.fps = float(fps)
        self.rate = int(out_rate)
        self.transition = max(0, int(transition_frames))
        self.max_buffer = max(2, int(max_buffer))
        self.start_margin = float(start_margin)
        self.max_lead = max(1, int(round(float(max_lead_s) * self.fps)))
        self.cv = threading.Condition()
        self.gen = 0
        self.index = 0  # next output frame
        self.pos = -1  # last avatar position shown
        self.queue: deque[SpeechFrame] = deque()
        self.pending: int | None = None  # where the next placed piece starts (idle loop stops short of it)
        self.in_piece = False
        self.turn_open: int | None = None  # turn being spoken (between its first frame and its end)
        self.last_video: np.ndarray | None = None
        self.last_speech_raw: np.ndarray | None = None  # the avatar frame under the last speaking frame
        self.fade_in = 0
        self.residual: np.ndarray | None = None
        self.residual_k = 0
        self.carry = np.zeros(0, np.float32)
        self.closed = False
        self._interrupted_turn: int | None = None
        self.stats = {"frames": 0, "speech_frames": 0, "idle_frames": 0, "start_holds": 0, "stalls": 0, "skips": 0,
                      "discarded": 0}

    # -- audio schedule ----------------------------------------------------------------------
    def samples_at(self, i: int) -> int:
        return int(round(i * self.rate / self.fps))

    def samples_of(self, i: int) -> int:
        return self.samples_at(i + 1) - self.samples_at(i)

    def piece_samples(self, k: int) -> tuple[int, int]:
        """Span of piece frame ``k``'s audio in its piece's output-rate samples."""
        return self.samples_at(k), self.samples_at(k + 1)

    # -- the renderer's side -----------------------------------------------------------------
    def queued(self, gen: int) -> int:
        with self.cv:
            return sum(1 for f in self.queue if f.gen == gen and f.video is not None)

    def place(self, gen: int, render_s: float) -> int | None:
        """Position of the first frame of a piece about to be rendered (``render_s``: its expected
        render time); None when ``gen`` is stale. Follows the queued frames when there are any."""
        with self.cv:
            if gen != self.gen or self.closed:
                return None
            frames = [f for f in self.queue if f.video is not None]
            if frames:  # the previous piece is still playing: follow it without a gap
                return frames[-1].pos + 1
            if self.picture.n == 1:  # a still portrait: every position shows the same frame, start at once
                lead = 0
            else:
                lead = min(self.max_lead, max(1, int(math.ceil(max(0.0, render_s) * self.fps * self.start_margin))))
            start = self.pos + 1 + lead
            self.pending = start
            return start

    def push(self, frames: list[SpeechFrame], alive: Callable[[], bool] | None = None) -> bool:
        """Queue frames (waits while the buffer is full); False when their ``gen`` became stale."""
        with self.cv:
            for f in frames:
                while (len(self.queue) >= self.max_buffer and f.gen == self.gen and not self.closed
                       and (alive is None or alive())):
                    self.cv.wait(0.05)
                if f.gen != self.gen or self.closed or (alive is not None and not alive()):
                    return False
                self.queue.append(f)
            return True

    def end_turn(self, gen: int, turn: int) -> None:
        """No more frames for this turn: the player ends it once everything queued has played."""
        with self.cv:
            if gen == self.gen:
                self.queue.append(SpeechFrame(gen, -1, None, np.zeros(0, np.float32), turn=turn, end_turn=True))

    def interrupt(self) -> int:
        """Drop everything queued and start a new generation (returned); the next tick is idle."""
        with self.cv:
            self.gen += 1
            self.stats["discarded"] += sum(1 for f in self.queue if f.video is not None)
            self.queue.clear()
            self.pending = None
            self.in_piece = False
            ended = self.turn_open
            self.turn_open = None
            self._start_fade_out()
            self.carry = np.zeros(0, np.float32)
            self.cv.notify_all()
            self._interrupted_turn = ended
            return self.gen

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.queue.clear()
            self.cv.notify_all()

    # -- the clock's side --------------------------------------------------------------------
    def _start_fade_out(self) -> None:
        if self.transition and self.last_video is not None and self.last_speech_raw is not None:
            self.residual = self.last_video.astype(np.int16) - self.last_speech_raw.astype(np.int16)
            self.residual_k = 0
        self.last_speech_raw = None
        self.fade_in = 0

    def _idle(self, events: list) -> tuple[np.ndarray, int]:
        self.pos += 1
        raw = self.picture.at(self.pos)
        if self.residual is not None:
            self.residual_k += 1
            w = 1.0 - self.residual_k / (self.transition + 1)
            if w <= 0:
                self.residual = None
            else:
                raw = np.clip(raw.astype(np.int16) + (self.residual * w).astype(np.int16), 0, 255).astype(np.uint8)
        return raw, self.pos

    def _audio_out(self, samples: np.ndarray, n: int) -> np.ndarray:
        buf = np.concatenate([self.carry, samples]) if self.carry.size else samples
        if buf.size >= n:
            out, self.carry = buf[:n], buf[n:]
        else:
            out, self.carry = np.concatenate([buf, np.zeros(n - buf.size, np.float32)]), np.zeros(0, np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _next_real(self) -> SpeechFrame | None:
        return next((f for f in self.queue if f.video is not None), None)

    def _markers(self, events: list) -> None:
        """Consume the markers at the head of the queue."""
        while self.queue and (self.queue[0].video is None or self.queue[0].gen != self.gen):
            f = self.queue.popleft()
            if f.gen != self.gen:
                continue
            if f.end_piece:
                if self.in_piece:
                    self.in_piece = False
                    self.carry = np.zeros(0, np.float32)
                    events.append(("piece_end", f.turn, f.piece))
                    nxt = self._next_real()
                    if nxt is None or nxt.pos != self.pos + 1:
                        self._start_fade_out()  # silence follows: fade the mouth out
            elif f.end_turn:
                events.append(("turn_end", f.turn, False))
                self.turn_open = None

    def tick(self) -> AVFrame:
        """The next output frame (never blocks on the renderer)."""
        with self.cv:
            i = self.index
            self.index += 1
            n_audio = self.samples_of(i)
            events: list = []
            if self._interrupted_turn is not None:
                events.append(("turn_end", self._interrupted_turn, True))
                self._interrupted_turn = None
            self._markers(events)
            head = self.queue[0] if self.queue else None
            speaking, held = False, False
            turn = piece = 0
            if head is not None and head.pos <= self.pos + 1:
                f = self.queue.popleft()
                self.cv.notify_all()
                if f.pos < self.pos + 1:
                    self.stats["skips"] += 1
                self.pos = f.pos
                if f.first:
                    self.pending = None
                raw = self.picture.at(f.pos)
                video = self.picture.fit(f.video)
                if f.first:
                    if self.turn_open != f.turn:
                        events.append(("first_frame", f.turn))
                        self.turn_open = f.turn
                    events.append(("piece_start", f.turn, f.piece))
                    if self.last_speech_raw is None:  # after silence: fade the mouth in
                        self.fade_in = self.transition
                    self.residual = None
                if self.fade_in > 0:
                    a = (self.transition - self.fade_in + 1) / (self.transition + 1)
                    video = np.clip(raw.astype(np.float32) + a * (video.astype(np.float32) - raw.astype(np.float32)) + 0.5,
                                    0, 255).astype(np.uint8)
                    self.fade_in -= 1
                audio = self._audio_out(f.audio, n_audio)
                self.in_piece = True
                self.last_video, self.last_speech_raw = video, raw
                speaking, turn, piece = True, f.turn, f.piece
                self.stats["speech_frames"] += 1
                self._markers(events)  # a piece that ends with this frame ends now, not one tick later
            elif self.in_piece or (self.pending is not None and self.pos + 1 >= self.pending):
                video = self.last_video if self.last_video is not None else self.picture.at(max(self.pos, 0))
                audio = np.zeros(n_audio, np.float32)
                held = True
                speaking = self.in_piece
                self.stats["stalls" if self.in_piece else "start_holds"] += 1
            else:
                video, _ = self._idle(events)
                audio = np.zeros(n_audio, np.float32)
                self.last_video = video
                self.stats["idle_frames"] += 1
            self.stats["frames"] += 1
            return AVFrame(i, video, audio, self.pos, speaking, held, turn, piece, events)
