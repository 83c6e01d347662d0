"""A small client for ComfyUI's HTTP + WebSocket API (upload, queue, follow, history, download).

Used by the workflow runner (``run_workflow.py``) and by the integration tests. Only the
standard library and aiohttp (which ComfyUI itself depends on) are needed.
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


def format_rejection(body: dict) -> str:
    """A readable report of ComfyUI's ``/prompt`` validation error body."""
    err = body.get("error") or {}
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


class ComfyClient:
    """Talks to one ComfyUI server; every call is async."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 3600.0):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout

    async def get_json(self, session: aiohttp.ClientSession, path: str) -> Any:
        async with session.get(f"{self.url}{path}") as r:
            r.raise_for_status()
            return await r.json()

    async def upload(self, session: aiohttp.ClientSession, path: Path, subfolder: str = "") -> str:
        """Upload a local file to ComfyUI's input folder; returns the name to put in the workflow."""
        form = aiohttp.FormData()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        form.add_field("image", path.read_bytes(), filename=path.name, content_type=ctype)
        form.add_field("type", "input")
        form.add_field("overwrite", "true")
        if subfolder:
            form.add_field("subfolder", subfolder)
        async with session.post(f"{self.url}/upload/image", data=form) as r:
            if r.status != 200:
                raise RuntimeError(f"upload of '{path}' failed: HTTP {r.status} {await r.text()}")
            body = await r.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    async def queue(self, session: aiohttp.ClientSession, prompt: dict) -> str:
        async with session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": self.client_id}) as r:
            body = await r.json(content_type=None)
            if r.status != 200 or "prompt_id" not in body:
                raise PromptRejected(body if isinstance(body, dict) else {"error": {"message": str(body)}})
            return body["prompt_id"]

    async def run(
        self,
        prompt: dict,
        on_event: Callable[[str, dict], None] | None = None,
    ) -> RunResult:
        """Queue ``prompt``, follow it over the WebSocket until it ends, return its history entry."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tmo = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(timeout=tmo) as session:
            async with session.ws_connect(f"{self.url}/ws?clientId={self.client_id}", heartbeat=30) as ws:
                prompt_id = await self.queue(session, prompt)
                await self._follow(ws, prompt_id, on_event, t0 + self.timeout)
            entry = await self._history_entry(session, prompt_id)
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            raise ExecutionFailed(_error_from_status(status))
        outputs = entry.get("outputs", {})
        return RunResult(prompt_id, outputs, output_files(outputs), loop.time() - t0)

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
            msg = await ws.receive(timeout=remaining)
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise ConnectionError("ComfyUI closed the WebSocket")
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
                raise ExecutionFailed(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
            if etype == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return
            if etype == "execution_success":
                return

    async def download(self, session: aiohttp.ClientSession, item: dict, dest: Path) -> Path:
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        async with session.get(f"{self.url}/view", params=params) as r:
            r.raise_for_status()
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(await r.read())
        return dest


def _error_from_status(status: dict) -> str:
    for name, data in status.get("messages", []):
        if name == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_message', '').strip()}")
    return "the prompt ended with an error"
