"""The live sessions of one ComfyUI process: unguessable ids, a bounded number, an idle reaper.

Nodes start (or update) sessions here; the routes find them here; the panel lists them from here.
An entry is anything that behaves as a *panel session*: ``id``, ``name``, ``kind`` (``self-hosted``
for ours; a provider's name for commercial avatars), ``transport`` (how the page gets the media:
``webrtc-offer`` = the page sends a WebRTC offer to our server; ``livekit`` or a provider's own
WebRTC for commercial sessions), ``modes`` (what the text box may do), ``events``
(:class:`~.session.EventLog`), ``status()``, ``say``/``ask``/``play``/``interrupt``/``close``.
So a provider's session can be listed and driven from the same panel without changing the routes.

Ids are 24 random bytes (URL-safe base64): knowing the link is what grants access to a session's
page, as with a meeting link; ComfyUI itself listens on loopback by default.
"""
from __future__ import annotations

import atexit
import logging
import secrets
import threading
import time
from typing import Callable

from .config import limits as load_limits

log = logging.getLogger("DigitalHuman.live")


class TooManySessionsError(RuntimeError):
    pass


class UnknownSessionError(KeyError):
    def __str__(self) -> str:
        return "no live session with this id (it may have ended)"


class Registry:
    def __init__(self, limits: dict | None = None):
        self.limits = limits or load_limits()
        self.sessions: dict[str, object] = {}
        self.by_name: dict[str, str] = {}
        self.fingerprints: dict[str, tuple] = {}
        self.viewers: dict[str, int] = {}  # session id -> viewers connected (kept by the server)
        self.closed_at: dict[str, float] = {}  # session id -> when the reaper first saw it closed
        self.lock = threading.RLock()
        self.on_close: list[Callable[[str], None]] = []  # the server closes a session's viewers
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()

    # -- sessions ----------------------------------------------------------------------------
    def start(self, name: str, make: Callable[[], object], fingerprint: tuple = (),
              update: Callable[[object], None] | None = None) -> tuple[object, bool]:
        """The session called ``name``: updated in place by ``update`` when its ``fingerprint`` (what
        cannot change while it runs: avatar, networks, frame rate, recording) is the same, else made
        anew by ``make()`` under the same id (the link stays valid; viewers reconnect). Returns
        ``(session, created)``."""
        with self.lock:
            sid = self.by_name.get(name)
            old = self.sessions.get(sid) if sid else None
            if old is not None and self.fingerprints.get(sid) == fingerprint and update is not None \
                    and getattr(old, "state", "") != "closed":
                update(old)
                return old, False
            open_now = self._open_count()
            if old is None and open_now >= int(self.limits["max_sessions"]):
                raise TooManySessionsError(
                    f"{open_now} live sessions are open, the most this server allows "
                    f"(DH_LIVE_MAX_SESSIONS={self.limits['max_sessions']}); close one in the live panel first")
        if old is not None:
            self.close(sid)
        session = make()  # outside the lock: loading and checking take a while
        with self.lock:
            if sid is None or sid in self.sessions:
                sid = new_id()
            if self._open_count() >= int(self.limits["max_sessions"]):
                session.close()
                raise TooManySessionsError(f"{self._open_count()} live sessions are open, the most this server allows")
            session.id = sid
            self.sessions[sid] = session
            self.by_name[name] = sid
            self.fingerprints[sid] = fingerprint
            self.viewers.setdefault(sid, 0)
        self._ensure_reaper()
        return session, True

    def _open_count(self) -> int:
        """Sessions not closed yet (closed ones stay listed a while but take no place)."""
        with self.lock:
            return sum(1 for s in self.sessions.values() if getattr(s, "state", "") != "closed")

    def add(self, session: object, name: str | None = None) -> str:
        """Register a session made elsewhere (a provider's); returns its new id."""
        with self.lock:
            if self._open_count() >= int(self.limits["max_sessions"]):
                raise TooManySessionsError(f"{self._open_count()} live sessions are open, the most this server allows")
            sid = new_id()
            session.id = sid
            self.sessions[sid] = session
            if name:
                self.by_name[name] = sid
            self.viewers.setdefault(sid, 0)
        self._ensure_reaper()
        return sid

    def get(self, sid: str) -> object:
        with self.lock:
            s = self.sessions.get(sid) if isinstance(sid, str) else None
        if s is None:
            raise UnknownSessionError(sid)
        return s

    def list(self) -> list[object]:
        with self.lock:
            return list(self.sessions.values())

    def close(self, sid: str) -> bool:
        with self.lock:
            s = self.sessions.pop(sid, None)
            for n, i in list(self.by_name.items()):
                if i == sid:
                    del self.by_name[n]
            self.fingerprints.pop(sid, None)
            self.viewers.pop(sid, None)
        if s is None:
            return False
        self._closed_callbacks(sid)
        try:
            s.close()
        except Exception:
            log.exception("[DigitalHuman] live: closing a session failed")
        return True

    def _closed_callbacks(self, sid: str) -> None:
        for cb in list(self.on_close):
            try:
                cb(sid)
            except Exception:
                log.exception("[DigitalHuman] live: closing the viewers of a session failed")

    def close_all(self) -> None:
        for sid in list(self.sessions):
            self.close(sid)

    # -- idle sessions -----------------------------------------------------------------------
    def set_viewers(self, sid: str, n: int) -> None:
        with self.lock:
            if sid in self.sessions:
                self.viewers[sid] = max(0, int(n))

    def reap(self, now: float | None = None) -> list[str]:
        """Drop sessions closed ``closed_kept_s`` ago (until then their last events, reason and cost
        stay readable), and close those nobody watched or talked to for ``idle_timeout_s``; returns their ids."""
        now = time.monotonic() if now is None else now
        timeout = float(self.limits["idle_timeout_s"])
        keep = float(self.limits.get("closed_kept_s", 0))
        gone = []
        with self.lock:
            items = list(self.sessions.items())
            for sid in set(self.closed_at) - set(self.sessions):
                del self.closed_at[sid]
        for sid, s in items:
            idle_for = now - float(getattr(s, "last_activity", now))
            if getattr(s, "state", "") == "closed":
                with self.lock:
                    first = sid not in self.closed_at
                    seen = self.closed_at.setdefault(sid, now)
                if first:  # it ended by itself: its viewers end now, its entry a while later
                    self._closed_callbacks(sid)
                if now - seen >= keep:
                    gone.append(sid)
            elif timeout > 0 and self.viewers.get(sid, 0) == 0 and idle_for > timeout:
                gone.append(sid)
        for sid in gone:
            if sid not in self.closed_at:
                log.info("[DigitalHuman] live session %s closed (idle)", sid[:6])
            self.close(sid)
        return gone

    def _ensure_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap_loop, name="dh-live-reaper", daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._stop.wait(5.0):
            try:
                self.reap()
            except Exception:
                log.exception("[DigitalHuman] live: the idle-session check failed")


def new_id() -> str:
    return secrets.token_urlsafe(24)


_REGISTRY: Registry | None = None
_REG_LOCK = threading.Lock()


def registry() -> Registry:
    """The process's registry (made on first use; its sessions are closed at a normal exit, so their
    recordings get their final names)."""
    global _REGISTRY
    with _REG_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry()
            atexit.register(_REGISTRY.close_all)
        return _REGISTRY
