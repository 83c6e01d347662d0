"""A live digital human: text, a chat model's answer or a speech clip in; frames with their sound out.

The session is an engine object a route, a node, a test or a script drives. States: ``idle``
(the avatar loops on its own frames), ``speaking`` (an answer is being thought, spoken or shown),
``interrupted`` (a Stop or a new message cut the answer; the mouth fades back for a few frames),
``closed`` (threads stopped, memory released).

How an answer flows (three threads, so the stages overlap):

1. *text*: repeat mode hands the typed text to :class:`~.text.TextAggregator`; chat mode sends the
   conversation to the chat model and feeds its tokens to the aggregator as they stream in (in a
   reader thread); each complete piece goes to the voice at once, so speaking starts before the
   answer is complete;
2. *voice*: each piece is synthesised as a stream of chunks; silence at its edges is trimmed
   (``data/speech.json`` trim rules) and the chunks go to the renderer as they arrive;
3. *render*: the piece's audio prompts are computed as its audio arrives, exactly as for the whole
   clip (:class:`~..musetalk.audio.StreamingAudioWindows`), lip-synced batch by batch (the first
   batch of an answer small, so the first frame comes soon), each frame with the output-rate
   audio of its own time span, into the :class:`~.timeline.Timeline`;

and the media clock (:class:`~.clock.Ticker`) takes one frame per 1/fps from the timeline (an
idle frame when nothing is ready) and gives it to every sink (WebRTC viewers, the recorder).

Interrupt: every answer has a generation number; Stop (or a new message) bumps it, the timeline
drops every queued frame at once (the next tick is idle, within 1/fps), and every stage checks
the number between steps and while waiting on the network (the HTTP clients poll it every 0.1 s),
so the old answer's work stops within ~0.1 s and its late results are discarded.

Errors of the chat model or the voice end that answer with an ``error`` event (what and where)
and the session goes on; what was already spoken stays spoken.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator

import numpy as np

from ..speech.config import section as speech_section
from ..speech.join import StreamTrimmer, pause_seconds
from ..speech.voice import check_voice
from .chat import build_messages
from .clock import Ticker
from .config import section
from .render import MuseTalkRenderer, StreamResampler
from .text import TextAggregator, TextPiece
from .timeline import AVFrame, Picture, SpeechFrame, Timeline, end_piece

log = logging.getLogger("DigitalHuman.live")

STATES = ("idle", "speaking", "interrupted", "closed")
MODES = ("repeat", "chat", "audio")


class TurnInterrupted(Exception):
    """The answer this work belongs to was stopped (Stop, a new message, or the session closed)."""


class SessionClosedError(RuntimeError):
    pass


@dataclass
class LiveOptions:
    """Session settings; defaults from ``data/live.json`` (``media``, ``chat``, ``limits``)."""

    fps: float = 25.0
    batch_size: int = 8
    first_batch: int = 2
    out_sample_rate: int = 48000
    transition_frames: int = 4
    buffer_s: float = 1.5
    start_margin: float = 1.3
    max_lead_s: float = 1.0
    max_side: int = 720
    catch_up_s: float = 0.5
    pieces_ahead: int = 2
    history_turns: int = 8
    knowledge_header: str = "Answer using this knowledge where it applies:"
    max_text_chars: int = 20000
    max_audio_s: float = 300.0
    events_kept: int = 500

    @classmethod
    def from_data(cls, **overrides: Any) -> "LiveOptions":
        media, chat, lim = section("media"), section("chat"), section("limits")
        base = {**media, "history_turns": chat["history_turns"], "knowledge_header": chat["knowledge_header"],
                "max_text_chars": lim["max_text_chars"], "max_audio_s": lim["max_audio_s"],
                "events_kept": lim["events_kept"]}
        names = {f.name for f in fields(cls)}
        base = {k: v for k, v in base.items() if k in names}
        base.update({k: v for k, v in overrides.items() if v is not None})
        opts = cls(**base)
        opts.validate()
        return opts

    def validate(self) -> None:
        if not 1.0 <= float(self.fps) <= 60.0:
            raise ValueError(f"fps must be between 1 and 60, got {self.fps}")
        if not 1 <= int(self.batch_size) <= 64 or not 1 <= int(self.first_batch) <= int(self.batch_size):
            raise ValueError(f"batch sizes must satisfy 1 <= first_batch <= batch_size <= 64, got {self.first_batch}, {self.batch_size}")
        if int(self.out_sample_rate) not in (8000, 16000, 24000, 32000, 44100, 48000):
            raise ValueError(f"out_sample_rate {self.out_sample_rate} is not a rate WebRTC/AAC take")


class EventLog:
    """The newest ``keep`` events of a session, numbered; the panel reads them with :meth:`since`."""

    def __init__(self, keep: int = 500, clock: Callable[[], float] = time.time):
        self.items: deque[dict] = deque(maxlen=max(10, int(keep)))
        self.seq = 0
        self.cv = threading.Condition()
        self.clock = clock

    def emit(self, type_: str, **data: Any) -> int:
        with self.cv:
            self.seq += 1
            self.items.append({"seq": self.seq, "t": round(self.clock(), 3), "type": type_, **data})
            self.cv.notify_all()
            return self.seq

    def since(self, after: int, wait_s: float = 0.0) -> tuple[list[dict], int]:
        """Events with ``seq > after`` (waiting up to ``wait_s`` for one) and the newest seq."""
        with self.cv:
            if wait_s > 0 and self.seq <= after:
                self.cv.wait(wait_s)
            return [e for e in self.items if e["seq"] > after], self.seq


@dataclass
class Turn:
    """One message and its answer."""

    id: int
    gen: int
    mode: str
    text: str
    t_submit: float
    marks: dict = field(default_factory=dict)
    spoken: list = field(default_factory=list)
    pieces: dict = field(default_factory=dict)  # piece index -> text
    shown: int = -1  # highest piece index that started playing (or was found to have no frames)
    net: dict = field(default_factory=dict)  # seconds the networks took for the first batch (latency budget)
    audio: tuple | None = None
    done: bool = False
    interrupted: bool = False
    error: str | None = None

    def mark(self, name: str, t: float | None = None) -> None:
        self.marks.setdefault(name, time.monotonic() if t is None else t)

    def latency_ms(self) -> dict:
        return {k: round((v - self.t_submit) * 1000.0, 1) for k, v in sorted(self.marks.items(), key=lambda kv: kv[1])}


_STOP = object()


class LiveSession:
    """See the module docstring. ``voice`` (a ``StreamingVoice``) is needed for repeat and chat,
    ``chat`` (a ``ChatModel``) for chat; audio mode needs neither. ``recorder`` (optional) gets every
    frame and the transcript. ``start_clock=False`` leaves the clock to the caller (``step()``),
    for tests that run frame by frame."""

    kind = "self-hosted"  # the panel's session kinds (engine/live/registry.py)
    transport = "webrtc-offer"

    def __init__(self, renderer: MuseTalkRenderer, voice=None, chat=None, *, options: LiveOptions | None = None,
                 name: str = "", recorder=None, start_clock: bool = True, check: bool = True):
        self.options = opts = options or LiveOptions.from_data()
        opts.validate()
        self.renderer = renderer
        self.voice = check_voice(voice) if voice is not None else None
        self.chat = chat
        self.name = name
        self.id = ""  # given by the registry
        self.recorder = recorder
        self.created = time.time()
        self.last_activity = time.monotonic()
        self.events = EventLog(opts.events_kept)
        self.state = "idle"
        self.error: str | None = None
        self._lock = threading.RLock()
        self._turn_id = 0
        self.turn: Turn | None = None
        self.history: deque[tuple[str, str]] = deque(maxlen=max(0, int(opts.history_turns)))
        self._trim = speech_section("trim")
        self._pauses = speech_section("pauses")
        self.warmup_s = renderer.check() if check else 0.0
        self.picture = Picture(renderer.frames, int(opts.max_side))
        self.timeline = Timeline(self.picture, opts.fps, opts.out_sample_rate, opts.transition_frames,
                                 max(2, int(round(opts.buffer_s * opts.fps))), opts.start_margin, opts.max_lead_s)
        self._sinks: list[Callable[[AVFrame], None]] = []
        self._sinks_lock = threading.Lock()
        self._text_q: queue.Queue = queue.Queue()
        self._render_q: queue.Queue = queue.Queue()
        self._interrupted_at: int | None = None
        self.closed = threading.Event()
        self._threads = [threading.Thread(target=self._text_loop, name="dh-live-text", daemon=True),
                         threading.Thread(target=self._render_loop, name="dh-live-render", daemon=True)]
        for t in self._threads:
            t.start()
        self.ticker = Ticker(opts.fps, self._tick, self.sinks, opts.catch_up_s)
        if start_clock:
            self.ticker.start()
        self.events.emit("state", state="idle", size=list(self.picture.size), fps=opts.fps)

    # -- sinks -------------------------------------------------------------------------------
    def sinks(self) -> list[Callable[[AVFrame], None]]:
        with self._sinks_lock:
            out = list(self._sinks)
        if self.recorder is not None:
            out.append(self.recorder.write)
        return out

    def add_sink(self, sink: Callable[[AVFrame], None]) -> None:
        with self._sinks_lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[AVFrame], None]) -> None:
        with self._sinks_lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    @property
    def size(self) -> tuple[int, int]:
        return self.picture.size

    @property
    def modes(self) -> list[str]:
        """What the panel's text box can do with this session."""
        return [m for m, ok in (("repeat", self.voice is not None), ("chat", self.voice is not None and self.chat is not None),
                                ("audio", True)) if ok]

    def update(self, voice=None, chat=None, name: str | None = None) -> None:
        """Swap the voice and the chat model (the next answer uses them; the current one finishes)."""
        with self._lock:
            if voice is not None:
                self.voice = check_voice(voice)
            self.chat = chat
            if name is not None:
                self.name = name
            self.events.emit("updated", voice=getattr(self.voice, "name", None), chat=getattr(self.chat, "name", None),
                             modes=self.modes)

    # -- commands ----------------------------------------------------------------------------
    def say(self, text: str) -> int:
        """Repeat mode: speak ``text``."""
        return self._submit("repeat", self._check_text(text))

    def ask(self, text: str) -> int:
        """Chat mode: send ``text`` to the chat model and speak its answer as it streams in."""
        if self.chat is None:
            raise ValueError("chat mode needs a chat model: connect a Chat Model node to the live session")
        return self._submit("chat", self._check_text(text))

    def play(self, samples: np.ndarray, sample_rate: int, label: str = "audio clip") -> int:
        """Audio mode: lip-sync a speech clip (mono or ``[C, T]`` float, any rate) as it is."""
        if self.closed.is_set():
            raise SessionClosedError("the session is closed")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=0) if x.shape[0] < x.shape[1] else x.mean(axis=1)
        x = x.reshape(-1)
        if int(sample_rate) <= 0:
            raise ValueError(f"audio: the sample rate must be positive, got {sample_rate}")
        secs = x.size / float(sample_rate)
        if secs * self.options.fps < 1:
            raise ValueError(f"audio: the clip is {secs * 1000:.0f} ms long, shorter than one video frame")
        if secs > self.options.max_audio_s:
            raise ValueError(f"audio: the clip is {secs:.0f} s long; a live session takes at most {self.options.max_audio_s:.0f} s")
        return self._submit("audio", label, audio=(np.nan_to_num(x), int(sample_rate)))

    def _check_text(self, text: str) -> str:
        if self.closed.is_set():
            raise SessionClosedError("the session is closed")
        text = str(text or "")
        if not text.strip():
            raise ValueError("text: nothing to say (the message is empty)")
        if len(text) > self.options.max_text_chars:
            raise ValueError(f"text: {len(text)} characters; a live session takes at most {self.options.max_text_chars} "
                             "per message")
        if self.voice is None:
            raise ValueError("this session has no voice: connect a voice to the live session node (audio mode works without)")
        return text

    def _submit(self, mode: str, text: str, audio: tuple | None = None) -> int:
        with self._lock:
            if self.closed.is_set():
                raise SessionClosedError("the session is closed")
            self.last_activity = time.monotonic()
            t = time.monotonic()
            if self.turn is not None and not self.turn.done:
                self._stop_turn(self.turn, "a new message")
            gen = self.timeline.interrupt()
            self._turn_id += 1
            turn = Turn(self._turn_id, gen, mode, text, t, audio=audio)
            self.turn = turn
            self._set_state("speaking")
            self.events.emit("turn", turn=turn.id, mode=mode, text=text[:2000], chars=len(text))
            if self.recorder is not None:
                self.recorder.note("user" if mode != "audio" else "clip", text, self.timeline.index / self.options.fps)
            self._text_q.put(turn)
            return turn.id

    def interrupt(self) -> bool:
        """Stop the current answer (the avatar stops speaking at the next frame). False when idle."""
        with self._lock:
            turn = self.turn
            if turn is None or turn.done or self.closed.is_set():
                return False
            self.last_activity = time.monotonic()
            self._stop_turn(turn, "stop")
            self.timeline.interrupt()
            return True

    def _stop_turn(self, turn: Turn, why: str) -> None:
        turn.interrupted = True
        turn.done = True
        turn.mark("interrupted")
        self._remember(turn)
        self._interrupted_at = self.timeline.index
        self._set_state("interrupted")
        self.events.emit("interrupted", turn=turn.id, by=why, spoken=" ".join(turn.spoken)[-2000:])

    def _remember(self, turn: Turn) -> None:
        if turn.mode == "chat":
            self.history.append((turn.text, " ".join(turn.spoken)))

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.events.emit("state", state=state)

    def close(self) -> None:
        """Stop everything and release the avatar, the networks and the buffers."""
        with self._lock:
            if self.closed.is_set():
                return
            if self.turn is not None and not self.turn.done:
                self._stop_turn(self.turn, "close")
            self.closed.set()
            self.timeline.interrupt()
            self.timeline.close()
        self._text_q.put(_STOP)
        self._render_q.put(_STOP)
        self.ticker.stop()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(3.0)
        if self.recorder is not None:
            try:
                self.recorder.close()
            except Exception as exc:
                self.events.emit("error", where="recording", message=str(exc))
        with self._sinks_lock:
            self._sinks.clear()
        self._set_state("closed")
        self.renderer = None  # the networks and the avatar can be freed
        self.voice = self.chat = None
        self.picture.frames = np.zeros((1, 2, 2, 3), np.uint8)

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict:
        tl = self.timeline
        with tl.cv:
            stats = dict(tl.stats)
        t = self.turn
        return {"id": self.id, "kind": self.kind, "transport": self.transport, "modes": self.modes,
                "state": self.state, "name": self.name, "fps": self.options.fps, "size": list(self.picture.size),
                "clock_fps": round(self.ticker.fps(), 2), "frames": stats["frames"], "stats": stats,
                "late_frames": self.ticker.late_frames, "reanchors": self.ticker.reanchors,
                "turn": None if t is None else {"id": t.id, "mode": t.mode, "done": t.done, "latency_ms": t.latency_ms(),
                                                "error": t.error},
                "voice": getattr(self.voice, "name", None), "chat": getattr(self.chat, "name", None),
                "voice_cost_usd": round(float(getattr(self.voice, "cost_usd", 0.0) or 0.0), 6),
                "recording": getattr(self.recorder, "path_str", None), "warmup_s": round(self.warmup_s, 3)}

    # -- the clock's tick --------------------------------------------------------------------
    def step(self) -> AVFrame:
        """One tick by hand (when the session was made with ``start_clock=False``); sinks get it too."""
        frame = self._tick()
        for s in self.sinks():
            s(frame)
        return frame

    def _tick(self) -> AVFrame:
        frame = self.timeline.tick()
        if frame.events:
            self._on_events(frame)
        if self.state == "interrupted" and self._interrupted_at is not None and \
                frame.index - self._interrupted_at > self.options.transition_frames:
            with self._lock:
                if self.state == "interrupted":
                    self._set_state("idle")
        return frame

    def _on_events(self, frame: AVFrame) -> None:
        t_media = frame.index / self.options.fps
        turn = self.turn
        for ev in frame.events:
            kind, tid = ev[0], ev[1]
            if turn is None or tid != turn.id:
                continue
            if kind == "first_frame":
                turn.mark("first_frame")
                self.events.emit("latency", turn=tid, **{f"{k}_ms": v for k, v in turn.latency_ms().items()},
                                 **{f"net_{k}": v for k, v in turn.net.items()})
            elif kind == "piece_start":
                turn.shown = max(turn.shown, ev[2])
                text = turn.pieces.get(ev[2], "")
                if text:
                    turn.spoken.append(text)
                    self.events.emit("said", turn=tid, piece=ev[2], text=text)
                    if self.recorder is not None:
                        self.recorder.note("avatar", text, t_media)
                        self.recorder.cue_start(tid, ev[2], text, t_media)
            elif kind == "piece_end":
                if self.recorder is not None:
                    self.recorder.cue_end(tid, ev[2], t_media)
            elif kind == "turn_end" and not ev[2]:
                with self._lock:
                    if not turn.done:
                        turn.done = True
                        turn.mark("end")
                        self._remember(turn)
                        self.events.emit("turn_end", turn=tid, error=turn.error, spoken=" ".join(turn.spoken)[-2000:])
                        self._set_state("idle")

    # -- text and voice ----------------------------------------------------------------------
    def _checker(self, gen: int) -> Callable[[], None]:
        tl, closed = self.timeline, self.closed

        def check() -> None:
            if tl.gen != gen or closed.is_set():
                raise TurnInterrupted()

        return check

    def _text_loop(self) -> None:
        while True:
            turn = self._text_q.get()
            if turn is _STOP:
                return
            if turn.gen != self.timeline.gen or turn.done:
                continue
            check = self._checker(turn.gen)
            try:
                if turn.mode == "audio":
                    samples, sr = turn.audio
                    turn.audio = None
                    turn.pieces[0] = ""
                    turn.mark("first_audio")
                    self._render_q.put(("piece", turn.gen, turn, 0, "start", sr, False))
                    for k in range(0, samples.size, sr):  # 1 s at a time: a long clip starts before it is all resampled
                        self._render_q.put(("audio", turn.gen, turn, 0, samples[k:k + sr]))
                    self._render_q.put(("piece_end", turn.gen, turn, 0))
                else:
                    pieces = self._repeat_pieces(turn) if turn.mode == "repeat" else self._chat_pieces(turn, check)
                    for k, piece in enumerate(pieces):
                        check()
                        if k == 0:
                            turn.mark("first_piece")
                        self._speak_piece(turn, k, piece, check)
            except TurnInterrupted:
                continue
            except Exception as exc:  # the chat model or the voice failed: this answer ends, the session goes on
                where = getattr(exc, "live_where", "voice")
                msg = f"{where}: {exc}"
                turn.error = msg
                log.warning("[DigitalHuman] live session %s: %s", self.name, msg)
                self.events.emit("error", turn=turn.id, where=where, message=str(exc)[:1000])
            self._render_q.put(("turn_end", turn.gen, turn))

    def _repeat_pieces(self, turn: Turn) -> Iterator[TextPiece]:
        agg = TextAggregator()
        yield from agg.feed(turn.text)
        yield from agg.flush()

    def _chat_pieces(self, turn: Turn, check: Callable[[], None]) -> Iterator[TextPiece]:
        chat = self.chat
        msgs = build_messages(getattr(chat, "system_prompt", ""), getattr(chat, "knowledge", ""), list(self.history),
                              turn.text, self.options.knowledge_header)
        q: queue.Queue = queue.Queue()
        done = object()

        def reader() -> None:
            agg = TextAggregator()
            pending, last_emit = [], time.monotonic()
            try:
                for delta in chat.stream(msgs, check_interrupt=check):
                    if not pending and "first_token" not in turn.marks:
                        turn.mark("first_token")
                    pending.append(delta)
                    if time.monotonic() - last_emit > 0.1:
                        self.events.emit("answer", turn=turn.id, delta="".join(pending))
                        pending, last_emit = [], time.monotonic()
                    for p in agg.feed(delta):
                        q.put(p)
                if pending:
                    self.events.emit("answer", turn=turn.id, delta="".join(pending))
                for p in agg.flush():
                    q.put(p)
                q.put(done)
            except BaseException as exc:  # handed to the voice thread
                if pending:
                    self.events.emit("answer", turn=turn.id, delta="".join(pending))
                exc.live_where = "chat"  # type: ignore[attr-defined]
                for p in agg.flush() if not isinstance(exc, TurnInterrupted) else []:
                    q.put(p)  # what the model said before it failed is still spoken
                q.put(exc)

        threading.Thread(target=reader, name="dh-live-chat", daemon=True).start()
        while True:
            check()
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _speak_piece(self, turn: Turn, k: int, piece: TextPiece, check: Callable[[], None]) -> None:
        # at most pieces_ahead pieces are synthesised ahead of the one playing: memory stays bounded,
        # and a paid voice is not billed for a long text that a Stop cuts short
        while k - turn.shown > self.options.pieces_ahead:
            check()
            time.sleep(0.02)
        voice = self.voice
        sr = int(voice.sample_rate)
        turn.pieces[k] = piece.text
        trim = StreamTrimmer(sr, self._trim["threshold_dbfs"], self._trim["keep_s"]) if self._trim.get("enabled", True) else None
        self._render_q.put(("piece", turn.gen, turn, k, piece.break_before, sr, True))
        try:
            for chunk in voice.stream(piece.text, check_interrupt=check):
                check()
                if chunk.sample_rate != sr:
                    raise ValueError(f"{voice.name} sent a chunk at {chunk.sample_rate} Hz but says it speaks at {sr} Hz")
                turn.mark("first_audio")
                x = trim.feed(chunk.samples) if trim is not None else chunk.samples
                if x.size:
                    self._render_q.put(("audio", turn.gen, turn, k, x))
        finally:
            if trim is not None:
                tail = trim.end()
                if tail.size:
                    self._render_q.put(("audio", turn.gen, turn, k, tail))
            self._render_q.put(("piece_end", turn.gen, turn, k))  # what arrived is shown, even after an error

    # -- rendering ---------------------------------------------------------------------------
    def _render_loop(self) -> None:
        cur: dict | None = None
        while True:
            msg = self._render_q.get()
            if msg is _STOP:
                return
            kind, gen, turn = msg[0], msg[1], msg[2]
            if gen != self.timeline.gen:
                cur = None
                continue
            try:
                if kind == "piece":
                    _, _, _, k, brk, sr, may_pause = msg
                    cur = self._open_piece(turn, k, brk, sr, may_pause)
                elif kind == "audio" and cur is not None and cur["piece"] == msg[3]:
                    x = msg[4]
                    cur["windows"].push(x)
                    cur["out"].append(cur["resampler"].feed(x))
                    self._render_ready(cur)
                elif kind == "piece_end" and cur is not None and cur["piece"] == msg[3]:
                    if cur["piece"] == 0:
                        turn.mark("first_piece_audio")  # the first piece's audio is complete
                    cur["windows"].end()
                    cur["out"].append(cur["resampler"].end())
                    self._render_ready(cur)
                    if cur["frames"]:
                        self.timeline.push([end_piece(gen, turn.id, cur["piece"])])
                    else:
                        turn.shown = max(turn.shown, cur["piece"])  # nothing to show: the next piece may go
                    cur = None
                elif kind == "turn_end":
                    self.timeline.end_turn(gen, turn.id)
            except TurnInterrupted:
                cur = None
            except Exception as exc:
                cur = None
                turn.error = f"lip sync: {exc}"
                log.exception("[DigitalHuman] live session %s: lip sync failed", self.name)
                self.events.emit("error", turn=turn.id, where="lip sync", message=str(exc)[:1000])

    def _open_piece(self, turn: Turn, k: int, brk: str, sr: int, may_pause: bool) -> dict:
        windows = self.renderer.features(sr)
        cur = {"turn": turn, "piece": k, "windows": windows, "resampler": StreamResampler(sr, self.options.out_sample_rate),
               "out": [], "out_start": 0, "frames": 0, "next_pos": None, "sr": sr}
        if may_pause and k > 0 and self.timeline.queued(turn.gen) > 0:
            # the previous piece is still playing: the pause between them is part of this piece
            gap = np.zeros(int(round(pause_seconds(brk, self._pauses) * sr)), np.float32)
            if gap.size:
                windows.push(gap)
                cur["out"].append(cur["resampler"].feed(gap))
        return cur

    def _out_audio(self, cur: dict, a: int, b: int) -> np.ndarray:
        """Output-rate samples ``a..b-1`` of the piece (zeros past what the resampler gave)."""
        if len(cur["out"]) != 1:
            cur["out"] = [np.concatenate(cur["out"]) if cur["out"] else np.zeros(0, np.float32)]
        buf, s0 = cur["out"][0], cur["out_start"]
        seg = buf[max(0, a - s0):max(0, b - s0)]
        if seg.size < b - a:
            seg = np.concatenate([seg, np.zeros(b - a - seg.size, np.float32)])
        # release what no later frame needs
        if a - s0 > 4 * self.options.out_sample_rate:
            cur["out"] = [buf[a - s0:]]
            cur["out_start"] = a
        return seg

    def _render_ready(self, cur: dict) -> None:
        turn: Turn = cur["turn"]
        gen = turn.gen
        check = self._checker(gen)
        w = cur["windows"]
        while True:
            check()
            first_of_turn = cur["next_pos"] is None and cur["piece"] == 0
            bs = self.options.first_batch if first_of_turn else self.options.batch_size
            if w.pending() == 0 or (not w.ended and w.pending() < bs):
                return
            taken = w.take(bs)
            if taken is None:
                return
            start, windows = taken
            n = windows.shape[0]
            if cur["next_pos"] is None:
                pos = self.timeline.place(gen, self.renderer.expected_s(n))
                if pos is None:
                    raise TurnInterrupted()
                cur["next_pos"] = pos
            positions = [cur["next_pos"] + j for j in range(n)]
            frames = self.renderer.render(positions, windows)
            if first_of_turn:
                turn.mark("first_batch")
                turn.net = {"whisper_ms": round(w.encode_s * 1000, 1), "lipsync_ms": round(self.renderer.last_s * 1000, 1)}
            out = []
            for j, img in enumerate(frames):
                kf = start + j
                a, b = self.timeline.piece_samples(kf)
                out.append(SpeechFrame(gen, positions[j], img, self._out_audio(cur, a, b), turn=turn.id,
                                       piece=cur["piece"], first=(kf == 0)))
            cur["next_pos"] += n
            cur["frames"] += n
            if not self.timeline.push(out, alive=lambda: not self.closed.is_set()):
                raise TurnInterrupted()
