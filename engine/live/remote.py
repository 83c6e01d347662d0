"""A provider's streaming avatar as a panel session: LiveAvatar, HeyGen or D-ID behind the same
routes, panel and nodes as our self-hosted session (``engine/live/session.py``).

The provider renders and streams the avatar; the page joins its media (a LiveKit room, or D-ID's
WebRTC offer) with a short-lived token our server minted, never the API key. This object owns
what is ours to own:

- *cost and length*: a clock from the provider's start to its stop; the cost so far follows the
  provider's price rule (``backend.cost``); the session is stopped when it reaches ``max_minutes``,
  with a warning ``warn_before_end_s`` ahead, so a forgotten tab cannot run up a bill;
- *stopping, always*: by the cap; when every page that watched it has left for ``grace_s`` (the
  panel closed) or no page opened it within ``unwatched_s``; when the provider ends it (its idle
  timeout, no credits: :class:`~.backend.ProviderSessionEnded`); after ``keep_alive_failures``
  failed keep-alives in a row (the network dropped); on ``close()`` (the registry at a prompt's
  Cancel or at shutdown). Each stop records its reason and the final cost, and the provider's
  stop call is made once;
- *speaking*: things to say queue in order (a script sent from a workflow plays through); a Stop
  drops the queue and interrupts the provider; LITE sessions feed our own voice's audio as it is
  made (``backend.audio_in``), the others send text; a turn that fails reports where and why and
  the session goes on;
- *the pages*: ``connect(body)`` takes the page's steps (``join`` gives the media facts and a
  viewer id; ``ping`` keeps a viewer; ``leave``; and the backend's own: a WebRTC answer or ICE
  candidate, a data-channel event the page relays).

States: ``starting``, ``idle``, ``speaking``, ``closed``.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .backend import AvatarBackend, NeedsPage, ProviderSessionEnded, describe, jsonable
from .session import EventLog, SessionClosedError

log = logging.getLogger("DigitalHuman.live")

DEFAULTS = {"max_minutes": 10.0, "max_minutes_limit": 120.0, "warn_before_end_s": 60.0, "grace_s": 30.0,
            "unwatched_s": 300.0, "keep_alive_failures": 3, "viewer_timeout_s": 20.0, "max_text_chars": 2000,
            "page_wait_s": 120.0, "tick_s": 0.5, "cost_event_s": 10.0}


class TurnStopped(Exception):
    """The turn this work belongs to was dropped (Stop, or the session closed)."""


@dataclass
class RemoteTurn:
    id: int
    gen: int
    mode: str
    text: str
    audio: tuple | None = None
    queued_at: float = 0.0
    sent_at: float | None = None
    seq_sent: int = 0
    speech_s: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    dropped: bool = False
    info: dict = field(default_factory=dict)


class RemoteSession:
    """See the module docstring. ``voice`` (a streaming voice) speaks text in LITE sessions; ``chat``
    (a chat model) answers first when the mode is chat and the provider has no model of its own."""

    connect_fields = ("step", "viewer", "answer", "candidate", "sdpMid", "sdpMLineIndex", "event", "data")

    def __init__(self, backend: AvatarBackend, *, name: str = "", max_minutes: float | None = None, voice=None,
                 chat=None, settings: dict | None = None, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.settings = {**DEFAULTS, **(settings or {})}
        cap = float(self.settings["max_minutes"] if max_minutes is None else max_minutes)
        if not 0 < cap <= float(self.settings["max_minutes_limit"]):
            raise ValueError(f"max_minutes must be more than 0 and at most {self.settings['max_minutes_limit']:g}, got {cap:g}")
        if backend.audio_in and voice is None:
            modes = tuple(m for m in backend.modes if m == "audio")
        elif backend.audio_in and chat is None:
            modes = tuple(m for m in backend.modes if m != "chat")
        else:
            modes = tuple(backend.modes)
        self.max_minutes = cap
        self.voice = voice
        self.chat = chat
        self.name = name
        self.id = ""  # given by the registry
        self.kind = backend.label
        self.transport = backend.transport
        self.modes = list(modes)
        self.clock = clock
        self.created = time.time()
        self.last_activity = time.monotonic()
        self.events = EventLog(500)
        self.state = "starting"
        self.info: dict = {}
        self.ended_reason: str | None = None
        self.error: str | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.speech_s = 0.0
        self._lock = threading.RLock()
        self._gen = 0
        self._turn_id = 0
        self._turns: dict[int, RemoteTurn] = {}
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._closing = False
        self._threads: list[threading.Thread] = []
        self.viewers: dict[str, float] = {}
        self._had_viewer = False
        self._no_viewer_since: float | None = None
        self._warned = False
        self._spoken_seq = 0  # events seq of the last "spoken" the provider reported
        self._history: list[tuple[str, str]] = []
        backend.bind(self._emit, self._provider_ended)

    # -- life --------------------------------------------------------------------------------
    def start(self, check: Callable[[], None] | None = None) -> "RemoteSession":
        """Start the provider's session (blocking; ``check`` raises to cancel: the provider's session
        is stopped then), then the worker and the watchdog."""
        check = check or (lambda: None)
        try:
            info = self.backend.open(check)
        except BaseException as exc:
            self._finish(f"start failed: {describe(exc)}", call_backend=False)
            raise
        with self._lock:
            if self._closing:  # closed while starting (the prompt was cancelled)
                self.backend.close(self.ended_reason or "closed while starting")
                raise SessionClosedError(f"the session was closed while starting: {self.ended_reason}")
            self.info = jsonable(info or {})
            self.started_at = self.clock()
            self.state = "idle"
        self.events.emit("state", state="idle")
        self.events.emit("started", kind=self.kind, max_minutes=self.max_minutes, modes=self.modes, **self.info)
        for target, name in ((self._work, "dh-remote-speak"), (self._watch, "dh-remote-watch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("[DigitalHuman] %s session '%s' started (at most %g min)", self.kind, self.name, self.max_minutes)
        return self

    def close(self, reason: str = "closed from the panel or by the server") -> None:
        """Stop the provider's session (once; later calls do nothing) and report the final cost."""
        self._finish(reason, call_backend=True)

    def _finish(self, reason: str, call_backend: bool) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self.ended_reason = reason
            self._gen += 1
            started = self.started_at is not None
            self._stop.set()
        self._drain("the session ended")
        if call_backend and started:
            try:
                self.backend.close(reason)
            except Exception:  # noqa: BLE001 (backends never raise here; a stray error is logged)
                log.exception("[DigitalHuman] %s: stopping the provider's session failed", self.kind)
        with self._lock:
            self.ended_at = self.clock() if started else None
            self.state = "closed"
        usd, basis, estimated = self.cost()
        self.events.emit("state", state="closed", reason=reason)
        self.events.emit("cost", usd=usd, basis=basis, estimated=estimated, final=True, minutes=round(self.elapsed_s / 60, 3))
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(2.0)
        if started:
            log.info("[DigitalHuman] %s session '%s' stopped (%s) after %.1f min; cost $%.3f%s", self.kind, self.name,
                     reason, self.elapsed_s / 60, usd, " (estimate)" if estimated else "")

    def _provider_ended(self, why: str) -> None:
        """The provider closed the session (a socket, a page's report): stop here too, off the caller's thread."""
        if not self._closing:
            threading.Thread(target=self.close, args=(why,), name="dh-remote-ended", daemon=True).start()

    # -- cost --------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.clock()
        return max(0.0, end - self.started_at)

    def cost(self) -> tuple[float, str, bool]:
        if self.started_at is None:
            return 0.0, "not started", False
        return self.backend.cost(self.elapsed_s, self.speech_s)

    @property
    def cost_usd(self) -> float:
        return float(self.cost()[0])

    @property
    def ends_in_s(self) -> float:
        return max(0.0, self.max_minutes * 60.0 - self.elapsed_s)

    # -- speaking ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing or self.state == "closed":
            why = f" ({self.ended_reason})" if self.ended_reason else ""
            usd, _, est = self.cost()
            raise SessionClosedError(f"the {self.kind} session '{self.name}' has ended{why} after "
                                     f"{self.elapsed_s / 60:.1f} min, cost ${usd:.3f}{' (estimate)' if est else ''}; "
                                     "start a new one")
        if self.started_at is None:
            raise SessionClosedError(f"the {self.kind} session '{self.name}' has not started")

    def _submit(self, mode: str, text: str, audio: tuple | None = None) -> int:
        with self._lock:
            self._check_open()
            if mode not in self.modes:
                raise ValueError(self._mode_help(mode))
            self.last_activity = time.monotonic()
            self._turn_id += 1
            turn = RemoteTurn(self._turn_id, self._gen, mode, text, audio, queued_at=self.clock())
            self._turns[turn.id] = turn
            while len(self._turns) > 200:
                self._turns.pop(next(iter(self._turns)))
            self.events.emit("turn", turn=turn.id, mode=mode, text=text[:2000], chars=len(text))
            self._q.put(turn)
            return turn.id

    def _mode_help(self, mode: str) -> str:
        if mode == "audio":
            return f"{self.kind} does not take audio; it speaks text with its own voices"
        if self.backend.audio_in and self.voice is None:
            return f"this {self.kind} session speaks our own audio: connect a voice to the session node to send text"
        if mode == "chat":
            return f"this {self.kind} session cannot chat: connect a chat model (or use repeat)"
        return f"this {self.kind} session takes the modes {', '.join(self.modes)}, not '{mode}'"

    def _text(self, text: str) -> str:
        text = str(text or "")
        if not text.strip():
            raise ValueError("text: nothing to say (the message is empty)")
        if len(text) > int(self.settings["max_text_chars"]):
            raise ValueError(f"text: {len(text)} characters; one message to {self.kind} may have at most "
                             f"{self.settings['max_text_chars']}")
        return text

    def say(self, text: str) -> int:
        """Queue ``text`` to be said as it is (repeat); returns the turn id."""
        return self._submit("repeat", self._text(text))

    def ask(self, text: str) -> int:
        """Queue ``text`` to be answered (the provider's model, or ours for LITE)."""
        return self._submit("chat", self._text(text))

    def play(self, samples: np.ndarray, sample_rate: int, label: str = "audio clip") -> int:
        """Queue a clip (mono float) to be lip-synced; any sample rate (resampled where the provider needs one)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            raise ValueError("the clip is empty")
        if not np.all(np.isfinite(x)):
            raise ValueError("the clip holds NaN or infinite samples")
        if int(sample_rate) <= 0:
            raise ValueError(f"the clip's sample rate must be positive, got {sample_rate}")
        return self._submit("audio", label, (x, int(sample_rate)))

    def interrupt(self) -> bool:
        """Drop what is queued and stop the avatar; False when nothing was playing or queued."""
        with self._lock:
            if self._closing:
                return False
            busy = self.state == "speaking" or not self._q.empty()
            self._gen += 1
            self.last_activity = time.monotonic()
        dropped = self._drain("stop")
        if not self.backend.can_interrupt:
            self.events.emit("error", where="stop", message=f"{self.kind} cannot be interrupted: the current sentence "
                             "plays out" + (f"; {dropped} queued message(s) dropped" if dropped else ""))
            return busy

        def run() -> None:
            try:
                self.backend.interrupt(lambda: None)
            except Exception as exc:  # noqa: BLE001
                self.events.emit("error", where="stop", message=describe(exc))

        threading.Thread(target=run, name="dh-remote-interrupt", daemon=True).start()
        self.events.emit("interrupted", by="stop", dropped=dropped)
        self._set_state("idle")
        return busy

    def _drain(self, why: str) -> int:
        n = 0
        while True:
            try:
                turn = self._q.get_nowait()
            except queue.Empty:
                return n
            turn.dropped = True
            turn.error = why
            turn.done.set()
            n += 1

    def _set_state(self, state: str) -> None:
        with self._lock:
            if self.state == state or self._closing:
                return
            self.state = state
        self.events.emit("state", state=state)

    def _stop_check(self) -> None:
        if self._stop.is_set():
            raise TurnStopped()

    def _checker(self, gen: int) -> Callable[[], None]:
        def check() -> None:
            if self._gen != gen or self._stop.is_set():
                raise TurnStopped()
        return check

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                turn = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if turn.gen != self._gen or turn.dropped:
                turn.dropped = True
                turn.done.set()
                continue
            self._set_state("speaking")
            check = self._checker(turn.gen)
            try:
                out = self._speak_when_seen(turn, check)
                turn.speech_s = out.get("speech_s")
                turn.info = {k: v for k, v in out.items() if k != "speech_s"}
                if turn.speech_s:
                    with self._lock:
                        self.speech_s += float(turn.speech_s)
                self.events.emit("said", turn=turn.id, text=turn.text[:2000], speech_s=turn.speech_s)
            except TurnStopped:
                turn.dropped = True
            except ProviderSessionEnded as exc:
                turn.error = describe(exc)
                self.events.emit("error", where="speak", message=turn.error)
                turn.done.set()
                self.close(turn.error)
                return
            except NeedsPage as exc:
                turn.error = describe(exc)
                self.events.emit("error", where="speak", message=turn.error)
            except Exception as exc:  # noqa: BLE001 (the turn fails, the session goes on)
                turn.error = describe(exc)
                log.warning("[DigitalHuman] %s: speaking failed: %s", self.kind, turn.error)
                self.events.emit("error", where="speak", message=turn.error)
            finally:
                turn.done.set()
                if self._q.empty():
                    self._set_state("idle")

    def _speak_when_seen(self, turn: RemoteTurn, check: Callable[[], None]) -> dict:
        """:meth:`_speak`, waiting up to ``page_wait_s`` for a page where the provider needs one
        (D-ID's stream, LiveAvatar FULL's commands): a workflow may speak before the panel is open."""
        deadline = None
        while True:
            try:
                return self._speak(turn, check)
            except NeedsPage as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + float(self.settings["page_wait_s"])
                    self.events.emit("waiting", turn=turn.id, message=describe(exc))
                if now >= deadline:
                    raise NeedsPage(f"{describe(exc)} (waited {float(self.settings['page_wait_s']):g} s)") from None
                check()
                time.sleep(0.25)

    def _speak(self, turn: RemoteTurn, check: Callable[[], None]) -> dict:
        turn.sent_at = self.clock()
        turn.seq_sent = self.events.seq
        if turn.mode == "audio":
            samples, rate = turn.audio
            return self.backend.speak_pcm(iter([(samples, rate)]), check)
        if not self.backend.audio_in:
            return self.backend.speak_text(turn.text, turn.mode, check)
        text_pieces = self._answer_pieces(turn, check) if turn.mode == "chat" else iter([turn.text])
        return self.backend.speak_pcm(self._voice_chunks(text_pieces, check, turn), check)

    def _voice_chunks(self, pieces: Iterator[str], check: Callable[[], None], turn: RemoteTurn) -> Iterator[tuple[np.ndarray, int]]:
        spoken = []
        for piece in pieces:
            check()
            if not piece.strip():
                continue
            for chunk in self.voice.stream(piece, check_interrupt=check):
                check()
                yield np.asarray(chunk.samples, np.float32), int(chunk.sample_rate)
            spoken.append(piece)
        if turn.mode == "chat":
            self._history.append((turn.text, " ".join(spoken)))
            del self._history[:-8]

    def _answer_pieces(self, turn: RemoteTurn, check: Callable[[], None]) -> Iterator[str]:
        from .chat import build_messages
        from .text import TextAggregator

        msgs = build_messages(getattr(self.chat, "system_prompt", ""), getattr(self.chat, "knowledge", ""),
                              list(self._history), turn.text)
        agg = TextAggregator()
        for delta in self.chat.stream(msgs, check_interrupt=check):
            self.events.emit("answer", turn=turn.id, delta=delta)
            for p in agg.feed(delta):
                yield p.text
        for p in agg.flush():
            yield p.text

    def _emit(self, type_: str, **data: Any) -> int:
        seq = self.events.emit(type_, **data)
        if type_ == "spoken":
            self._spoken_seq = seq
        return seq

    def wait_turn(self, turn_id: int, *, spoken: bool = True, timeout_s: float = 600.0,
                  check: Callable[[], None] | None = None) -> RemoteTurn:
        """Wait until ``turn_id`` was sent (and, with ``spoken``, until the avatar has said it: the
        provider's end-of-speech report, or the speech length it gave); returns the turn."""
        turn = self._turns.get(turn_id)
        if turn is None:
            raise ValueError(f"no turn {turn_id} in this session")
        end = time.monotonic() + timeout_s
        while not turn.done.wait(0.1):
            if check:
                check()
            if time.monotonic() > end or self._closing:
                return turn
        if not spoken or turn.error or turn.dropped:
            return turn
        lite_wait = getattr(self.backend, "wait_spoken", None)
        event_id = turn.info.get("event_id")
        if event_id and lite_wait is not None:
            lite_wait(event_id, max(0.0, end - time.monotonic()), check or (lambda: None))
            return turn
        until = (turn.sent_at or self.clock()) + float(turn.speech_s) + 0.5 if turn.speech_s else None
        while time.monotonic() < end and not self._closing:
            if check:
                check()
            if self._spoken_seq > turn.seq_sent:
                return turn
            if until is not None and self.clock() >= until:
                return turn
            if until is None and not self.viewers:
                return turn  # nobody relays the provider's report and it gave no length: do not wait blind
            time.sleep(0.1)
        return turn

    # -- the watchdog ------------------------------------------------------------------------
    def _watch(self) -> None:
        s = self.settings
        last_ka = time.monotonic()
        retry_at: float | None = None
        next_cost = time.monotonic() + float(s["cost_event_s"])
        failures = 0
        while not self._stop.wait(float(s["tick_s"])):
            now = time.monotonic()
            left = self.ends_in_s
            if left <= 0:
                self.close(f"it reached its limit of {self.max_minutes:g} minutes (max_minutes)")
                return
            if not self._warned and left <= float(s["warn_before_end_s"]):
                self._warned = True
                self.events.emit("ending", in_s=round(left, 1), reason="max_minutes")
            why = self._viewers_gone(now)
            if why:
                self.close(why)
                return
            every = float(self.backend.keep_alive_s or 0)
            if every > 0 and (now - last_ka >= every or (retry_at is not None and now >= retry_at)):
                last_ka, retry_at = now, None
                try:
                    self.backend.keep_alive(self._stop_check)
                    failures = 0
                except ProviderSessionEnded as exc:
                    self.close(describe(exc))
                    return
                except TurnStopped:
                    return
                except Exception as exc:  # noqa: BLE001
                    failures += 1
                    self.events.emit("error", where="keep-alive", message=describe(exc))
                    if failures >= int(s["keep_alive_failures"]):
                        self.close(f"the provider could not be reached {failures} times in a row (the network dropped?): "
                                   f"{describe(exc)}")
                        return
                    retry_at = now + min(every, 10.0)  # try again soon, not a whole interval later
            if now >= next_cost:
                next_cost = now + float(s["cost_event_s"])
                usd, basis, est = self.cost()
                self.events.emit("cost", usd=usd, basis=basis, estimated=est, final=False,
                                 minutes=round(self.elapsed_s / 60, 3), ends_in_s=round(left, 1))

    def _viewers_gone(self, now: float) -> str | None:
        s = self.settings
        with self._lock:
            for vid, seen in list(self.viewers.items()):
                if now - seen > float(s["viewer_timeout_s"]):
                    del self.viewers[vid]
                    self.events.emit("viewer", viewer=vid[:6], left=True, why="no keep-alive")
            if self.viewers:
                self._no_viewer_since = None
                return None
            if self._had_viewer:
                if self._no_viewer_since is None:
                    self._no_viewer_since = now
                if now - self._no_viewer_since >= float(s["grace_s"]):
                    return f"the panel closed (no page watched it for {float(s['grace_s']):g} s)"
                return None
        if self.elapsed_s >= float(s["unwatched_s"]):
            return f"no page opened it within {float(s['unwatched_s']):g} s"
        return None

    # -- the pages ---------------------------------------------------------------------------
    async def connect(self, body: dict) -> dict:
        return await asyncio.get_running_loop().run_in_executor(None, self.page, body)

    def page(self, body: dict) -> dict:
        """One page step (see the module docstring); the routes call it through :meth:`connect`."""
        self._check_open()
        step = str(body.get("step") or "join")
        now = time.monotonic()
        if step == "join":
            vid = secrets.token_urlsafe(12)
            media = self._page_call(lambda: self.backend.page_join(vid, lambda: None))
            with self._lock:
                self.viewers[vid] = now
                self._had_viewer = True
                self.last_activity = now
            self.events.emit("viewer", viewer=vid[:6], left=False)
            return {"viewer": vid, "transport": self.transport, "kind": self.kind, "state": self.state, **media}
        vid = str(body.get("viewer") or "")
        with self._lock:
            known = vid in self.viewers
            if known:
                self.viewers[vid] = now
                self.last_activity = now
        if not known:
            raise ValueError("no such viewer: join again (the page may have been away too long)")
        if step == "ping":
            usd, _, est = self.cost()
            return {"ok": True, "state": self.state, "cost_usd": usd, "estimated": est, "ends_in_s": round(self.ends_in_s, 1)}
        if step == "leave":
            with self._lock:
                self.viewers.pop(vid, None)
            self.events.emit("viewer", viewer=vid[:6], left=True, why="closed by the page")
            return {"closed": True}
        return self._page_call(lambda: self.backend.page_step(step, body, lambda: None))

    def _page_call(self, fn):
        try:
            return fn()
        except ProviderSessionEnded as exc:
            self.close(describe(exc))
            raise SessionClosedError(describe(exc)) from None

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict:
        usd, basis, est = self.cost()
        return {"id": self.id, "name": self.name, "kind": self.kind, "provider": self.backend.provider,
                "transport": self.transport, "modes": self.modes, "state": self.state, "created": self.created,
                "elapsed_s": round(self.elapsed_s, 1), "max_minutes": self.max_minutes, "ends_in_s": round(self.ends_in_s, 1),
                "cost_usd": usd, "cost_basis": basis, "cost_estimated": est, "speech_s": round(self.speech_s, 2),
                "viewers": len(self.viewers), "ended_reason": self.ended_reason, "info": self.info,
                "voice": getattr(self.voice, "name", None), "chat": getattr(self.chat, "name", None),
                "stats": {"stalls": 0}, "clock_fps": 0}
