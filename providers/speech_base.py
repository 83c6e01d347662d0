"""What the speech clients (OpenAI, ElevenLabs) share on top of the HTTP base.

- :func:`iter_body`: a streamed answer's body as it arrives, with Cancel polled while waiting for
  the next bytes and a stall reported as :class:`~.http.ApiError` (status 0, like a timeout);
- :func:`iter_sse`: server-sent events (``data: {...}`` blocks) out of such a body;
- :func:`synthesize_plan`: the piece loop: Cancel and progress between pieces, and a failure after
  some pieces raised as :class:`PartialSpeechError` that carries the speech made so far (already
  paid for), so nothing done is lost;
- :class:`SpeechStream`: the iterator of :class:`~..engine.speech.types.SpeechChunk` a streaming
  call returns, with the running cost on it.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import requests

from ..engine.speech.config import section
from ..engine.speech.join import PieceAudio, assemble, pause_seconds, silence
from ..engine.speech.sentences import Piece, Plan
from ..engine.speech.types import SpeechChunk, SpeechResult
from . import http as _http
from .http import ApiError, HttpClient

log = logging.getLogger("DigitalHuman.speech")

#: ``http.guarded`` (no exception leaves a client's public method holding a secret) where the HTTP
#: base has it; the speech clients wrap every public method with this, as the base asks.
guarded: Callable[[Callable], Callable] = getattr(_http, "guarded", lambda method: method)

_END = object()


def iter_body(client: HttpClient, resp: requests.Response, url: str = "") -> Iterator[bytes]:
    """The body of a ``stream=True`` answer, chunk by chunk as the network delivers it.

    With the client's ``check_interrupt`` the reading runs in a thread and Cancel is polled every
    ``poll_s`` while no bytes come; a read that stalls past the read timeout (or a broken
    connection) is an :class:`ApiError` naming the bytes received so far.
    """
    received = 0

    def fail(exc: BaseException) -> ApiError:
        what = ("no data within the read timeout of %g s" % client.read_timeout_s
                if "timed out" in str(exc).lower() or isinstance(exc, requests.exceptions.Timeout)
                else f"the connection broke ({type(exc).__name__})")
        return ApiError(client.service, 0, f"the audio stream stopped after {received} bytes: {what}", url=url)

    if client.check_interrupt is None:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                if chunk:
                    received += len(chunk)
                    yield chunk
        except (requests.exceptions.RequestException, OSError) as exc:
            raise fail(exc) from None
        return
    q: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():  # a full queue with nobody reading must not hold the thread forever
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def reader() -> None:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                if stop.is_set():
                    return
                if chunk:
                    put(chunk)
            put(_END)
        except BaseException as exc:  # handed to the consuming thread
            put(exc)

    t = threading.Thread(target=reader, name=f"dh-{client.service}-stream", daemon=True)
    t.start()
    try:
        while True:
            client.check_interrupt()
            try:
                item = q.get(timeout=client.poll_s)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                if isinstance(item, (requests.exceptions.RequestException, OSError)):
                    raise fail(item) from None
                raise item
            received += len(item)
            yield item
    finally:
        stop.set()
        resp.close()  # an interrupt or an early stop ends the reader at its next read


def iter_sse(chunks: Iterable[bytes]) -> Iterator[dict]:
    """Server-sent events -> their ``data`` parsed as JSON (comment and ``event:`` lines skipped)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        buf = buf.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            ev = _sse_data(block)
            if ev is not None:
                yield ev
    if buf.strip():
        ev = _sse_data(buf)
        if ev is not None:
            yield ev


def _sse_data(block: bytes) -> dict | None:
    data = [line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return None
    raw = b"\n".join(data)
    if raw.strip() == b"[DONE]":
        return None
    try:
        ev = json.loads(raw)
    except ValueError:
        raise ValueError(f"a server-sent event is not JSON: {raw[:80]!r}") from None
    return ev if isinstance(ev, dict) else {"data": ev}


class PartialSpeechError(RuntimeError):
    """A synthesis that failed after some pieces: ``partial`` holds the speech made so far (or None),
    ``cause`` the original error; the message says where it stopped and what it cost."""

    def __init__(self, message: str, partial: SpeechResult | None, cause: BaseException, done: int, total: int):
        super().__init__(message)
        self.partial = partial
        self.cause = cause
        self.done = done
        self.total = total


def synthesize_plan(plan: Plan, fetch: Callable[[int], PieceAudio], *, service: str,
                    progress: Callable[[int, int], None] | None = None,
                    check_interrupt: Callable[[], None] | None = None,
                    cost_so_far: Callable[[], float] | None = None,
                    pauses: dict | None = None, trim: dict | None = None) -> SpeechResult:
    """Fetch every piece of ``plan`` in order (``fetch(i)``) and join them.

    Cancel is checked before each piece (the HTTP base checks it while waiting); ``progress(done,
    total)`` after each. An :class:`ApiError` or bad audio (ValueError) after the first piece is
    raised as :class:`PartialSpeechError` with the joined speech of the pieces done.
    """
    if not plan.pieces:
        raise ValueError("text: nothing to speak (it is empty or holds only punctuation)")
    total = len(plan.pieces)
    audios: list[PieceAudio] = []
    for i in range(total):
        if check_interrupt is not None:
            check_interrupt()
        try:
            audios.append(fetch(i))
        except (ApiError, ValueError) as exc:
            if not audios:
                raise
            sub = Plan(plan.source, plan.sentences, plan.pieces[:len(audios)])
            partial = assemble(sub, audios, pauses=pauses, trim=trim)
            cost = cost_so_far() if cost_so_far else 0.0
            partial.cost_usd = cost
            raise PartialSpeechError(
                f"{service} speech stopped at piece {i + 1} of {total} (characters {plan.pieces[i].start}-"
                f"{plan.pieces[i].end}): {exc}. The {len(audios)} pieces before it ({partial.duration_s:.1f} s, "
                f"about ${cost:.4f}) were made and are kept.", partial, exc, len(audios), total) from exc
        if progress is not None:
            progress(i + 1, total)
    return assemble(plan, audios, pauses=pauses, trim=trim)


class SpeechStream:
    """Iterate it for :class:`SpeechChunk` s; ``sample_rate``, ``plan``, and the running ``cost_usd``,
    ``chars_sent``, ``seconds``, ``usage`` are updated as pieces complete (``done`` at the end)."""

    def __init__(self, plan: Plan, sample_rate: int):
        self.plan = plan
        self.sample_rate = int(sample_rate)
        self.cost_usd = 0.0
        self.chars_sent = 0
        self.seconds = 0.0
        self.usage: dict[str, Any] = {}
        self.done = False
        self._gen: Iterator[SpeechChunk] | None = None

    def paced(self, client: HttpClient, pauses: bool) -> Iterator[tuple[int, Piece, SpeechChunk | None]]:
        """Each piece of the plan with its index, after a check for Cancel (``client.check_interrupt``,
        read anew each time), and the silence to play before it: None for the first piece, with
        ``pauses`` off, or where the pause table gives none."""
        table = section("pauses")
        for i, piece in enumerate(self.plan.pieces):
            if client.check_interrupt is not None:
                client.check_interrupt()
            pause = None
            if i > 0 and pauses:
                gap = silence(pause_seconds(piece.break_before, table), self.sample_rate)
                pause = SpeechChunk(gap, self.sample_rate, i, "pause") if len(gap) else None
            yield i, piece, pause

    def _start(self, gen: Iterator[SpeechChunk]) -> "SpeechStream":
        self._gen = gen
        return self

    def __iter__(self) -> Iterator[SpeechChunk]:
        if self._gen is None:
            raise RuntimeError("stream not started")
        for chunk in self._gen:
            yield chunk
        self.done = True
