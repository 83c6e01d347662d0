"""The client of ComfyUI's HTTP + WebSocket API: upload, queue, follow, cancel, history, download.

The one place the pack talks to a ComfyUI server: the workflow runner, batch runs, the MCP server
and the integration tests all use :class:`ComfyClient`. Only the standard library and aiohttp
(which ComfyUI itself depends on) are needed; every call is asyncio.
"""
from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp


class PromptRejected(RuntimeError):
    """ComfyUI refused the prompt at validation; ``node_errors`` holds its per-node report."""

    def __init__(self, body: dict):
        self.body = body
        self.node_errors = body.get("node_errors") or {}
        super().__init__(format_rejection(body))


class ExecutionFailed(RuntimeError):
    """A node raised while the prompt ran; the message carries the node and its error."""


class ExecutionInterrupted(ExecutionFailed):
    """The prompt was stopped by an interrupt (ours, or Cancel pressed in ComfyUI)."""


class ServerUnavailable(ConnectionError):
    """No ComfyUI answers at the address (refused, unreachable, or it died during a run)."""


def format_rejection(body: dict) -> str:
    """A readable report of ComfyUI's ``/prompt`` validation error body."""
    err = body.get("error") or {}
    if isinstance(err, str):
        err = {"message": err}
    lines = [f"ComfyUI rejected the workflow: {err.get('message', 'invalid prompt')}"]
    if err.get("details"):
        lines.append(f"  {err['details']}")
    for node_id, ne in (body.get("node_errors") or {}).items():
        lines.append(f"  node {node_id} ({ne.get('class_type', '?')}):")
        for e in ne.get("errors", []):
            inp = (e.get("extra_info") or {}).get("input_name")
            where = f" [input '{inp}']" if inp else ""
            detail = f": {e['details']}" if e.get("details") else ""
            lines.append(f"    - {e.get('message', '?')}{where}{detail}")
    return "\n".join(lines)


def rejected_inputs(body: dict) -> list[tuple[str, str]]:
    """``(node id, input name)`` of every input a ``/prompt`` rejection names."""
    out = []
    for node_id, ne in (body.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            inp = (e.get("extra_info") or {}).get("input_name")
            if inp:
                out.append((str(node_id), inp))
    return out


@dataclass
class RunResult:
    prompt_id: str
    outputs: dict[str, Any]
    files: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def output_files(outputs: dict[str, Any]) -> list[dict]:
    """Every file a prompt's outputs name (images, gifs, videos, audio), once each, with its node id."""
    found, seen = [], set()
    for node_id, out in outputs.items():
        for key, items in out.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    ident = (item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                    if ident not in seen:
                        seen.add(ident)
                        found.append({**item, "node": node_id, "key": key})
    return found


def ui_texts(outputs: dict[str, Any], node_id: str) -> list[str]:
    """The ``ui.text`` lines a node left in the history (reports, notes)."""
    texts = (outputs.get(str(node_id)) or {}).get("text") or []
    return [t if isinstance(t, str) else json.dumps(t) for t in texts]


class ComfyClient:
    """Talks to one ComfyUI server; every call is async.

    Each :meth:`run` follows its prompt on its own WebSocket under its own client id, so several runs
    may share one client (and one server) at once: ComfyUI sends a prompt's progress only to the
    client id that queued it.
    """

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 3600.0):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout

    def _unavailable(self, exc: BaseException) -> ServerUnavailable:
        return ServerUnavailable(f"ComfyUI at {self.url} does not answer ({type(exc).__name__}: {exc}); "
                                 "start it, or give the address of a running one")

    async def get_json(self, session: aiohttp.ClientSession, path: str) -> Any:
        try:
            async with session.get(f"{self.url}{path}") as r:
                r.raise_for_status()
                return await r.json()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def post_json(self, session: aiohttp.ClientSession, path: str, body: Any) -> int:
        try:
            async with session.post(f"{self.url}{path}", json=body) as r:
                return r.status
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def object_info(self) -> dict:
        """``/object_info``: every node class the server has, with its inputs and outputs."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            return await self.get_json(session, "/object_info")

    async def upload(self, session: aiohttp.ClientSession, path: Path, subfolder: str = "",
                     name: str | None = None) -> str:
        """Upload a local file to ComfyUI's input folder (as ``name``, default its own name); returns
        the name to put in the workflow."""
        path = Path(path)
        form = aiohttp.FormData()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        form.add_field("image", path.read_bytes(), filename=name or path.name, content_type=ctype)
        form.add_field("type", "input")
        form.add_field("overwrite", "true")
        if subfolder:
            form.add_field("subfolder", subfolder)
        try:
            async with session.post(f"{self.url}/upload/image", data=form) as r:
                if r.status != 200:
                    raise RuntimeError(f"upload of '{path}' failed: HTTP {r.status} {await r.text()}")
                body = await r.json()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    async def queue(self, session: aiohttp.ClientSession, prompt: dict, client_id: str | None = None) -> str:
        try:
            async with session.post(f"{self.url}/prompt",
                                    json={"prompt": prompt, "client_id": client_id or self.client_id}) as r:
                body = await r.json(content_type=None)
                if r.status != 200 or "prompt_id" not in body:
                    raise PromptRejected(body if isinstance(body, dict) else {"error": {"message": str(body)}})
                return body["prompt_id"]
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def run(
        self,
        prompt: dict,
        on_event: Callable[[str, dict], None] | None = None,
        on_queued: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Queue ``prompt``, follow it over the WebSocket until it ends, return its history entry.

        ``on_queued(prompt_id)`` is called as soon as ComfyUI accepted the prompt (so a caller can
        cancel it). A WebSocket that drops while the server still answers is reconnected and the
        prompt followed on; a server that stops answering raises :class:`ServerUnavailable`.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        client_id = f"{self.client_id}-{uuid.uuid4().hex[:8]}"
        tmo = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(timeout=tmo) as session:
            ws = await self._connect(session, client_id)
            try:
                prompt_id = await self.queue(session, prompt, client_id)
                if on_queued:
                    on_queued(prompt_id)
                while True:
                    try:
                        await self._follow(ws, prompt_id, on_event, t0 + self.timeout)
                        break
                    except _SocketDropped:
                        await ws.close()
                        if await self._finished(session, prompt_id):
                            break
                        ws = await self._connect(session, client_id, lost=prompt_id)
            finally:
                await ws.close()
            entry = await self._history_entry(session, prompt_id)
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            interrupted = _interrupted_from_status(status)
            if interrupted:
                raise ExecutionInterrupted(interrupted)
            raise ExecutionFailed(_error_from_status(status))
        outputs = entry.get("outputs", {})
        return RunResult(prompt_id, outputs, output_files(outputs), loop.time() - t0)

    async def _connect(self, session: aiohttp.ClientSession, client_id: str, lost: str | None = None):
        try:
            return await session.ws_connect(f"{self.url}/ws?clientId={client_id}", heartbeat=30)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            if lost:
                raise ServerUnavailable(f"ComfyUI at {self.url} stopped answering while prompt {lost} was "
                                        f"queued or running ({type(exc).__name__}: {exc})") from exc
            raise self._unavailable(exc) from exc

    async def _finished(self, session: aiohttp.ClientSession, prompt_id: str) -> bool:
        """After a dropped WebSocket: True when the history already holds the prompt's end."""
        try:
            async with session.get(f"{self.url}/history/{prompt_id}") as r:
                entry = (await r.json()).get(prompt_id) if r.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ServerUnavailable(f"ComfyUI at {self.url} stopped answering while prompt {prompt_id} was "
                                    f"queued or running ({type(exc).__name__}: {exc})") from exc
        return bool(entry and (entry.get("status") or {}).get("completed") is not None)

    async def _history_entry(self, session: aiohttp.ClientSession, prompt_id: str, wait_s: float = 15.0) -> dict:
        """The prompt's history entry. Today's ComfyUI announces ``execution_success`` before it
        records the history, so an entry not there yet is asked for again for a few seconds."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            entry = (await self.get_json(session, f"/history/{prompt_id}")).get(prompt_id)
            if entry or asyncio.get_running_loop().time() > deadline:
                return entry or {}
            await asyncio.sleep(0.1)

    async def _follow(self, ws, prompt_id: str, on_event, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"prompt {prompt_id} did not finish in time")
            try:
                msg = await ws.receive(timeout=remaining)
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise _SocketDropped() from exc
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSE,
                                aiohttp.WSMsgType.ERROR):
                    raise _SocketDropped()
                continue  # binary preview frames
            event = json.loads(msg.data)
            etype, data = event.get("type", ""), event.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if on_event:
                on_event(etype, data)
            if etype == "execution_error":
                raise ExecutionFailed(
                    f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type', '')}: {data.get('exception_message', '').strip()}"
                )
            if etype == "execution_interrupted":
                raise ExecutionInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')} "
                                           f"({data.get('node_type')})")
            if etype == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return
            if etype == "execution_success":
                return

    async def cancel(self, prompt_id: str) -> str:
        """Stop ``prompt_id``: taken off the queue when still waiting, interrupted when running.

        Returns what was done ("dequeued", "interrupted", "not queued"). Only this prompt is
        touched: the interrupt is sent only while the queue says it is the one running (and carries
        its id, which today's ComfyUI checks; the 2024 one interrupts whatever runs)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            q = await self.get_json(session, "/queue")
            pending = {item[1] for item in q.get("queue_pending", [])}
            running = {item[1] for item in q.get("queue_running", [])}
            if prompt_id in pending:
                await self.post_json(session, "/queue", {"delete": [prompt_id]})
                return "dequeued"
            if prompt_id in running:
                await self.post_json(session, "/interrupt", {"prompt_id": prompt_id})
                return "interrupted"
            return "not queued"

    async def download(self, session: aiohttp.ClientSession, item: dict, dest: Path) -> Path:
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        try:
            async with session.get(f"{self.url}/view", params=params) as r:
                r.raise_for_status()
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".part")
                tmp.write_bytes(await r.read())
                tmp.replace(dest)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return dest


class _SocketDropped(Exception):
    """The WebSocket ended before the prompt did (the caller checks whether the server lives)."""


def _error_from_status(status: dict) -> str:
    for name, data in status.get("messages", []):
        if name == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_message', '').strip()}")
    return "the prompt ended with an error"


def _interrupted_from_status(status: dict) -> str | None:
    for name, data in status.get("messages", []):
        if name == "execution_interrupted":
            return f"prompt {data.get('prompt_id')} was interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return None
