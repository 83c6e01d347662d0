"""Helpers for integration tests: run a prompt on the test server, upload a file."""
from __future__ import annotations

import asyncio
from pathlib import Path

from comfyui_digitalhuman.client.api import ComfyClient
from comfyui_digitalhuman.client.launch import ComfyServer


def run_prompt(comfy: ComfyServer, prompt: dict, events: list | None = None):
    """Queue ``prompt`` on the test server and wait for it, recording WebSocket events."""
    client = ComfyClient(comfy.url, timeout=900)
    return asyncio.run(client.run(prompt, on_event=(lambda t, d: events.append((t, d))) if events is not None else None))


def upload(comfy: ComfyServer, path: Path) -> str:
    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as s:
            return await ComfyClient(comfy.url).upload(s, path)

    return asyncio.run(go())
