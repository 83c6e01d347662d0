"""Run one prepared prompt on one ComfyUI: upload its local files, queue, follow, download outputs.

What the runner, each batch row and each MCP tool call do once their prompt is built. Uploads are
named after their content (``portrait-3f2a9c01d4e5.jpg``), so jobs sharing a server never
overwrite each other's inputs and the same file is stored once.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aiohttp

from .api import ComfyClient
from .workflows import PreparedPrompt


@dataclass
class JobOutcome:
    prompt_id: str
    prompt: dict  # as queued (uploaded names filled in)
    files: list[Path] = field(default_factory=list)  # downloaded, in output order
    items: list[dict] = field(default_factory=list)  # ComfyUI's file entries, same order
    outputs: dict = field(default_factory=dict)  # the history's per-node ui outputs
    seconds: float = 0.0
    server: str = ""


def upload_name(path: Path) -> str:
    """``<stem>-<12 hex of sha256><suffix>``: a top-level input file name unique to the content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60] or "file"
    return f"{stem}-{h.hexdigest()[:12]}{path.suffix.lower()}"


async def upload_inputs(client: ComfyClient, job: PreparedPrompt,
                        log: Callable[[str], None] | None = None) -> dict:
    """A copy of the job's prompt with every local file uploaded and its input set to the stored name."""
    prompt = copy.deepcopy(job.prompt)
    if not job.uploads:
        return prompt
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for node_id, inp, path in job.uploads:
            name = await client.upload(session, path, name=upload_name(path))
            prompt[node_id].setdefault("inputs", {})[inp] = name
            if log:
                log(f"uploaded {path} -> input/{name}")
    return prompt


async def execute(client: ComfyClient, job: PreparedPrompt, out_dir: Path, *,
                  on_event: Callable[[str, dict], None] | None = None,
                  on_queued: Callable[[str], None] | None = None,
                  include_previews: bool = False,
                  log: Callable[[str], None] | None = None) -> JobOutcome:
    """Upload, queue, follow and download; outputs land in ``out_dir/<subfolder>/<name>``."""
    prompt = await upload_inputs(client, job, log)
    result = await client.run(prompt, on_event=on_event, on_queued=on_queued)
    outcome = JobOutcome(result.prompt_id, prompt, outputs=result.outputs, seconds=result.seconds, server=client.url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for item in result.files:
            if item.get("type") == "temp" and not include_previews:
                continue
            dest = Path(out_dir) / item.get("subfolder", "") / item["filename"]
            outcome.files.append(await client.download(session, item, dest))
            outcome.items.append(item)
            if log:
                log(f"saved {dest}")
    return outcome
