#!/usr/bin/env python3
"""Run an API-format workflow on ComfyUI over HTTP and download its outputs, or a whole batch.

    python scripts/run_workflow.py talking_head --set portrait.image=me.jpg --set speech.audio=hello.wav
    python scripts/run_workflow.py --batch jobs.csv --server http://gpu1:8188 --server http://gpu2:8188 --out out/batch

WORKFLOW is a name in ``workflows/api/`` (without ``.json``) or a path. ``--set NODE.INPUT=VALUE``
overrides an input; NODE is a node id, its title, or its class type when that is unique. A VALUE
that names an existing local file is uploaded to ComfyUI's input folder first and replaced by the
uploaded name. When no ComfyUI answers at ``--server``, one is started (``--comfyui``,
``COMFYUI_PATH``, the ComfyUI this pack is installed in, or ``.cache/comfyui``) and stopped after.

``--batch FILE`` (CSV or JSONL, one job per row; see the README) runs every row over the servers
given with ``--server`` (repeatable), keeping ``--queue-depth`` jobs queued on each, records each
job in ``OUT/manifest.json`` (a rerun skips finished jobs) and prints a summary table.

Exit codes: 0 done, 1 failed while running (a batch: any job not done), 2 rejected by ComfyUI or
bad arguments.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (registers the ``comfyui_digitalhuman`` alias)

from comfyui_digitalhuman.client.api import (  # noqa: E402
    ComfyClient, ExecutionFailed, PromptRejected, ServerUnavailable)
from comfyui_digitalhuman.client.jobs import execute  # noqa: E402
from comfyui_digitalhuman.client.launch import reach_or_start  # noqa: E402
from comfyui_digitalhuman.client.workflows import UsageError, load_workflow, node_label, parse_sets, prepare  # noqa: E402


def print_event(prompt: dict):
    def on_event(etype: str, data: dict) -> None:
        if etype == "executing" and data.get("node"):
            print(f"\n> {node_label(prompt, str(data['node']))} (node {data['node']})", flush=True)
        elif etype == "progress":
            print(f"\r  {data.get('value')}/{data.get('max')}", end="", flush=True)
        elif etype == "execution_cached" and data.get("nodes"):
            print(f"cached: nodes {', '.join(map(str, data['nodes']))}")
    return on_event


async def run_one(args) -> int:
    prompt = load_workflow(args.workflow)
    job = prepare(prompt, parse_sets(args.set or []), base=Path.cwd(), workflow=args.workflow)
    url, server = reach_or_start(args.server, args.comfyui, args.start_timeout, log=lambda m: print(m, flush=True))
    try:
        client = ComfyClient(url, timeout=args.timeout)
        result = await execute(client, job, Path(args.out), on_event=print_event(job.prompt),
                               include_previews=args.include_previews, log=print)
        print(f"\ndone in {result.seconds:.1f} s (prompt {result.prompt_id})")
        return 0
    finally:
        if server:
            server.cleanup()


async def run_batch(args) -> int:
    from comfyui_digitalhuman.client.batch import BatchOptions, run_batch_file

    servers = args.server or ["http://127.0.0.1:8188"]
    started = None
    if len(servers) == 1:
        url, started = reach_or_start(servers[0], args.comfyui, args.start_timeout, log=lambda m: print(m, flush=True))
        servers = [url]
    try:
        opts = BatchOptions(servers=servers, out_dir=Path(args.out), queue_depth=args.queue_depth,
                            default_workflow=args.workflow, timeout=args.timeout)
        summary = await run_batch_file(Path(args.batch), opts, log=lambda m: print(m, flush=True))
        print(summary.table())
        return 0 if summary.all_done else 1
    finally:
        if started:
            started.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", nargs="?", help="name in workflows/api/ or a path to an API-format JSON "
                    "(with --batch: the workflow of rows that name none)")
    ap.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (repeatable)")
    ap.add_argument("--server", action="append", metavar="URL",
                    help="ComfyUI address (default http://127.0.0.1:8188); repeat it to spread a batch over servers")
    ap.add_argument("--comfyui", help="ComfyUI checkout to start when none answers")
    ap.add_argument("--out", default="out", help="folder for the downloaded outputs (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a run")
    ap.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for a started ComfyUI")
    ap.add_argument("--include-previews", action="store_true", help="also download temp (preview) files")
    ap.add_argument("--batch", metavar="FILE", help="CSV or JSONL file, one job per row")
    ap.add_argument("--queue-depth", type=int, default=2, help="jobs kept queued on each server in a batch (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        if args.batch:
            if args.set:
                raise UsageError("--set applies to a single run; put overrides in the batch file's columns")
            return asyncio.run(run_batch(args))
        if not args.workflow:
            raise UsageError("give a WORKFLOW (or --batch FILE)")
        if args.server and len(args.server) > 1:
            raise UsageError("several --server addresses are for --batch runs")
        args.server = (args.server or ["http://127.0.0.1:8188"])[0]
        return asyncio.run(run_one(args))
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PromptRejected as e:
        print(str(e), file=sys.stderr)
        return 2
    except (ExecutionFailed, TimeoutError, ServerUnavailable, ConnectionError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
