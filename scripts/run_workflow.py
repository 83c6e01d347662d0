#!/usr/bin/env python3
"""Run an API-format workflow on ComfyUI over HTTP and download its outputs.

    python scripts/run_workflow.py talking_head --set portrait.image=me.jpg --set speech.audio=hello.wav

WORKFLOW is a name in ``workflows/api/`` (without ``.json``) or a path. ``--set NODE.INPUT=VALUE``
overrides an input; NODE is a node id, its title, or its class type when that is unique. A VALUE
that names an existing local file is uploaded to ComfyUI's input folder first and replaced by the
uploaded name. When no ComfyUI answers at ``--server``, one is started (``--comfyui``,
``COMFYUI_PATH``, the ComfyUI this pack is installed in, or ``.cache/comfyui``) and stopped after.
Exit codes: 0 done, 1 failed while running, 2 rejected by ComfyUI or bad arguments.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_client import ComfyClient, ExecutionFailed, PromptRejected  # noqa: E402
from comfy_server import PACK_ROOT, ComfyServer, server_alive  # noqa: E402

import aiohttp  # noqa: E402


class UsageError(ValueError):
    pass


def load_workflow(name: str) -> dict:
    path = Path(name)
    if not path.is_file():
        path = PACK_ROOT / "workflows" / "api" / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        avail = sorted(p.stem for p in (PACK_ROOT / "workflows" / "api").glob("*.json"))
        raise UsageError(f"workflow '{name}' not found; shipped API workflows: {', '.join(avail) or 'none'}")
    data = json.loads(path.read_text())
    if "nodes" in data and "links" in data:
        raise UsageError(f"'{path}' is a UI-format workflow; use its API-format twin in workflows/api/")
    return data


def find_node(prompt: dict, selector: str) -> str:
    """Node id for ``selector``: an id, a title, or a class type that occurs once."""
    if selector in prompt:
        return selector
    by_title = [k for k, v in prompt.items() if (v.get("_meta") or {}).get("title") == selector]
    if len(by_title) == 1:
        return by_title[0]
    by_type = [k for k, v in prompt.items() if v.get("class_type") == selector]
    if len(by_type) == 1:
        return by_type[0]
    if len(by_title) > 1 or len(by_type) > 1:
        raise UsageError(f"'{selector}' matches several nodes; use a node id ({', '.join(by_title or by_type)})")
    names = ", ".join(f"{k}={(v.get('_meta') or {}).get('title', v.get('class_type'))}" for k, v in prompt.items())
    raise UsageError(f"no node '{selector}' in the workflow (nodes: {names})")


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_overrides(prompt: dict, sets: list[str]) -> list[tuple[str, str, object]]:
    out = []
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UsageError(f"--set '{item}': expected NODE.INPUT=VALUE")
        key, value = item.split("=", 1)
        node_sel, inp = key.rsplit(".", 1)
        node_id = find_node(prompt, node_sel)
        out.append((node_id, inp, value))
    return out


async def apply_overrides(client: ComfyClient, prompt: dict, overrides) -> None:
    async with aiohttp.ClientSession() as session:
        for node_id, inp, raw in overrides:
            local = Path(raw).expanduser()
            if local.is_file():
                value = await client.upload(session, local)
                print(f"uploaded {local} -> input/{value}")
            else:
                value = parse_value(raw)
            prompt[node_id].setdefault("inputs", {})[inp] = value


def print_event(prompt: dict):
    def on_event(etype: str, data: dict) -> None:
        if etype == "executing" and data.get("node"):
            node = prompt.get(str(data["node"]), {})
            title = (node.get("_meta") or {}).get("title") or node.get("class_type", "?")
            print(f"\n> {title} (node {data['node']})", flush=True)
        elif etype == "progress":
            print(f"\r  {data.get('value')}/{data.get('max')}", end="", flush=True)
        elif etype == "execution_cached" and data.get("nodes"):
            print(f"cached: nodes {', '.join(map(str, data['nodes']))}")
    return on_event


async def run(args) -> int:
    prompt = load_workflow(args.workflow)
    overrides = parse_overrides(prompt, args.set or [])
    server = None
    url = args.server.rstrip("/")
    if not server_alive(url):
        port = urlparse(url).port or 8188
        print(f"no ComfyUI at {url}; starting one ...", flush=True)
        server = ComfyServer(comfyui=args.comfyui, port=port)
        server.start(timeout=args.start_timeout)
        print(f"ComfyUI {server.comfyui} listening at {server.url} (log: {server.log_path})")
        url = server.url
    try:
        client = ComfyClient(url, timeout=args.timeout)
        await apply_overrides(client, prompt, overrides)
        result = await client.run(prompt, on_event=print_event(prompt))
        print(f"\ndone in {result.seconds:.1f} s (prompt {result.prompt_id})")
        out_dir = Path(args.out)
        async with aiohttp.ClientSession() as session:
            for item in result.files:
                if item.get("type") == "temp" and not args.include_previews:
                    continue
                dest = await client.download(session, item, out_dir / item.get("subfolder", "") / item["filename"])
                print(f"saved {dest}")
        return 0
    finally:
        if server:
            server.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="name in workflows/api/ or a path to an API-format JSON")
    ap.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (repeatable)")
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    ap.add_argument("--comfyui", help="ComfyUI checkout to start when none answers")
    ap.add_argument("--out", default="out", help="folder for the downloaded outputs (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run")
    ap.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for a started ComfyUI")
    ap.add_argument("--include-previews", action="store_true", help="also download temp (preview) files")
    args = ap.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PromptRejected as e:
        print(str(e), file=sys.stderr)
        return 2
    except (ExecutionFailed, TimeoutError, ConnectionError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
