"""A client of the pack's live-session routes (``/digitalhuman/live``, ``server/live_routes.py``).

A live session is not one prompt: a workflow with a Live Session node starts it, then the routes
make it speak and close it. The MCP server's live tools use this, so nothing here knows of MCP.
Every failure is a :class:`LiveError` whose text is the route's own message (it names the session,
the mode or the limit at fault).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from .api import ServerUnavailable

ROUTES = "/digitalhuman/live"


class LiveError(Exception):
    """The live routes refused or failed a request; the text says why."""


class LiveClient:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    async def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> dict:
        t = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=t) as http:
                async with http.request(method, f"{self.url}{ROUTES}{path}", json=body) as r:
                    try:
                        data = await r.json(content_type=None)
                    except ValueError:
                        data = None
                    if r.status == 404 and not isinstance(data, dict):
                        raise LiveError(f"ComfyUI at {self.url} has no live routes (is ComfyUI-DigitalHuman installed "
                                        "and up to date?)")
                    if r.status >= 400:
                        msg = (data or {}).get("error") if isinstance(data, dict) else None
                        raise LiveError(msg or f"{method} {ROUTES}{path}: HTTP {r.status}")
                    return data if isinstance(data, dict) else {}
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise ServerUnavailable(f"ComfyUI at {self.url} does not answer ({type(exc).__name__}: {exc})") from exc

    async def sessions(self) -> list[dict]:
        """The open sessions (id, name, kind, modes, state, link)."""
        return list((await self._call("GET", "/sessions")).get("sessions", []))

    async def find(self, which: str) -> dict:
        """The open session whose id or name is ``which``."""
        found = await self.sessions()
        for s in found:
            if which in (s.get("id"), s.get("name")):
                return s
        names = ", ".join(f"'{s.get('name') or s.get('id', '')[:6]}'" for s in found) or "none"
        raise LiveError(f"no open live session called '{which}' (open sessions: {names}); start one with live_start")

    def page(self, session: dict) -> str:
        return f"{self.url}{session['link']}"

    async def last_event(self, sid: str) -> int:
        return int((await self._call("GET", f"/s/{sid}/events?after=0")).get("next", 0))

    async def say(self, sid: str, text: str, mode: str = "repeat") -> int:
        """Queue a message; returns its turn number."""
        return int((await self._call("POST", f"/s/{sid}/say", {"text": text, "mode": mode})).get("turn", 0))

    async def wait_turn(self, sid: str, turn: int, after: int, timeout: float, remote: bool = False) -> dict:
        """Follow the session's events from ``after`` until ``turn`` ends (spoken, stopped or failed),
        the session closes, or ``timeout`` passes. Returns what the avatar said and the latencies."""
        said: list[str] = []
        out: dict[str, Any] = {"turn": turn, "finished": False, "said": "", "answer": "", "latency_ms": {},
                               "error": None}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = max(0.1, min(10.0, deadline - time.monotonic()))
            got = await self._call("GET", f"/s/{sid}/events?after={after}&wait={wait:.1f}", timeout=wait + 15)
            after = int(got.get("next", after))
            for ev in got.get("events", []):
                mine = ev.get("turn") == turn
                kind = ev.get("type")
                if kind == "answer" and mine:
                    out["answer"] += str(ev.get("delta", ""))
                elif kind == "said" and mine:
                    said.append(str(ev.get("text", "")))
                    if remote:  # a provider's session reports one "said" per turn
                        out["speech_s"] = ev.get("speech_s")
                        out["finished"] = True
                elif kind == "latency" and mine:
                    out["latency_ms"] = {k: v for k, v in ev.items() if k.endswith("_ms")}
                elif kind == "interrupted" and mine:
                    out.update(finished=True, interrupted_by=ev.get("by"))
                elif kind == "error" and (mine or (remote and "turn" not in ev)):
                    out["error"] = f"{ev.get('where', 'session')}: {ev.get('message', '')}"
                    out["finished"] = out["finished"] or remote
                elif kind == "turn_end" and mine:
                    out["finished"] = True
                    out["error"] = out["error"] or ev.get("error")
                    out["said"] = str(ev.get("spoken") or "")
                elif kind == "state" and ev.get("state") == "closed":
                    out.update(finished=True, closed=ev.get("reason") or "closed")
            if out["finished"]:
                break
            if got.get("state") == "closed":
                out.update(finished=True, closed=out.get("closed") or "closed")
                break
        out["said"] = out["said"] or " ".join(said)
        return out

    async def close(self, sid: str) -> dict:
        """Close a session; returns its final state, reason and cost as its last events give them."""
        after = await self.last_event(sid)
        await self._call("POST", f"/s/{sid}/close", {})
        final: dict[str, Any] = {"closed": True}
        try:
            got = await self._call("GET", f"/s/{sid}/events?after={max(0, after - 50)}")
        except LiveError:  # gone already: nothing more to report
            return final
        for ev in got.get("events", []):
            if ev.get("type") == "state" and ev.get("state") == "closed":
                final["reason"] = ev.get("reason")
            elif ev.get("type") == "cost" and ev.get("final"):
                final["cost_usd"], final["minutes"] = ev.get("usd"), ev.get("minutes")
            elif ev.get("type") == "error":
                final.setdefault("errors", []).append(f"{ev.get('where', 'session')}: {ev.get('message', '')}")
        try:
            status = await self._call("GET", f"/s/{sid}")
        except LiveError:
            return final
        if status.get("recording"):
            final["recording"] = status["recording"]  # on the machine ComfyUI runs on
        return final
