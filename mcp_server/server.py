"""The DigitalHuman MCP server: the pack's tools for agents, over stdio, on the user's own ComfyUI.

Built on the official MCP Python SDK's low-level ``Server`` (explicit JSON schemas from the tool
table, our own argument checks and error texts). It talks to ComfyUI over its HTTP API through
``client/`` exactly as the runner does: ``--server URL``, or a ComfyUI started on demand on this
machine. Long runs send MCP progress notifications from ComfyUI's WebSocket progress; a client's
cancellation interrupts the run in ComfyUI (or takes it off the queue).

Errors come back as tool errors an agent can read (which argument, which node and input), never a
traceback; API keys are read where ComfyUI runs (or from this process's environment for
list_voices) and every text leaving the server is redacted of them.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anyio
import jsonschema
import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server

from ..client import recipes
from ..client.api import (ComfyClient, ExecutionFailed, ExecutionInterrupted, PromptRejected, ServerUnavailable,
                          rejected_inputs, ui_texts)
from ..client.batch import BatchOptions, run_batch_file
from ..client.costs import estimate
from ..client.jobs import execute
from ..client.launch import ComfyServer, server_alive
from ..client.live import LiveClient, LiveError
from ..client.progress import PromptProgress
from ..client.workflows import (FilePolicy, PreparedPrompt, UsageError, describe, find_node, load_workflow, prepare,
                                settable_inputs, shipped_workflows, split_override)
from ..providers.http import redact
from .tools import ToolDef, build_tools

log = logging.getLogger("DigitalHuman.mcp")
KEY_VARS = ("OPENAI_API_KEY", "ELEVENLABS_API_KEY", "HEYGEN_API_KEY", "DID_API_KEY", "HF_TOKEN")
PROGRESS_EVERY_S = 0.25


#: Tools that change nothing on the server (their answers may use the cached node list).
READ_ONLY_TOOLS = frozenset({"list_workflows", "list_voices"})


class ToolFailure(Exception):
    """A tool error for the agent: the text says what went wrong and where."""


@dataclass
class Config:
    server: str = "http://127.0.0.1:8188"
    out: Path = Path("out/mcp")
    allow: list[Path] = field(default_factory=list)
    start: bool = True
    comfyui: str | None = None
    start_timeout: float = 300.0
    table: Path | None = None


class DigitalHumanMCP:
    """State of one MCP server: the ComfyUI it uses, its tool table and its output folder."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.url = cfg.server.rstrip("/")
        self.out = Path(cfg.out).expanduser().resolve()
        self.policy = FilePolicy.under([*(cfg.allow or [Path.cwd()]), self.out])
        self.table = recipes.load_table(cfg.table)
        self.timeout = float(self.table["limits"]["timeout_s"])
        self._object_info: dict | None = None
        self._object_info_at = 0.0
        self._started: ComfyServer | None = None
        self._ready = anyio.Event()
        self._start_error = ""

    # -- ComfyUI ------------------------------------------------------------------------------------

    async def prepare_comfy(self) -> None:
        """At start-up: use the ComfyUI at the address, or start one on this machine when allowed."""
        try:
            if await anyio.to_thread.run_sync(server_alive, self.url):
                return
            from urllib.parse import urlparse

            host = urlparse(self.url).hostname
            if not self.cfg.start or host not in ("127.0.0.1", "localhost", "::1"):
                self._start_error = (f"ComfyUI at {self.url} does not answer; start it (or pass --server with the "
                                     "address of a running one)")
                return
            log.info("no ComfyUI at %s; starting one", self.url)
            server = ComfyServer(comfyui=self.cfg.comfyui, port=urlparse(self.url).port or 8188)
            self._started = server  # before it starts, so a shutdown during start-up still stops it
            await anyio.to_thread.run_sync(lambda: server.start(timeout=self.cfg.start_timeout))
            self.url = server.url
            log.info("ComfyUI %s listening at %s (log: %s)", server.comfyui, server.url, server.log_path)
        except (OSError, RuntimeError, TimeoutError) as exc:
            self._start_error = f"ComfyUI could not be started for {self.url}: {exc}"
            log.error("%s", self._start_error)
        finally:
            self._ready.set()

    def stop_comfy(self, grace: float = 3.0) -> None:
        """Stop the ComfyUI this server started (quickly: an MCP client waits only a few seconds for
        its server to exit after closing stdin, then kills it)."""
        server, self._started = self._started, None
        if server is not None:
            server.cleanup(grace)

    def client(self) -> ComfyClient:
        return ComfyClient(self.url, timeout=self.timeout)

    async def object_info(self, wait_s: float = 0.0, required: bool = True) -> dict | None:
        """The server's node list (cached 30 s); None when it cannot be reached and not ``required``."""
        with anyio.move_on_after(wait_s):
            await self._ready.wait()
        if self._object_info is not None and time.monotonic() - self._object_info_at < 30:
            return self._object_info
        try:
            info = await self.client().object_info()
        except ServerUnavailable as exc:
            if required:
                raise ToolFailure(self._start_error or str(exc)) from None
            return None
        self._object_info, self._object_info_at = info, time.monotonic()
        return info

    # -- protocol -----------------------------------------------------------------------------------

    async def list_tools(self) -> list[ToolDef]:
        info = await self.object_info(wait_s=10.0, required=False)
        return build_tools(self.table, info)

    async def call(self, name: str, args: dict, progress: Callable[[float, float | None, str], Any]) -> types.CallToolResult:
        """Run one tool; every failure becomes a readable tool error."""
        try:
            await self.object_info(wait_s=self.cfg.start_timeout)
            tools = {t.name: t for t in await self.list_tools()}
            if name not in tools:
                raise ToolFailure(f"unknown tool '{name}'; this server offers: {', '.join(tools)}")
            check_arguments(tools[name], args)
            handler = getattr(self, f"tool_{name}", None)
            try:
                if handler is None:
                    spec = recipes.workflow_tools(self.table, await self.object_info())[name]
                    result, images = await self.table_tool(name, spec, args, progress)
                else:
                    result, images = await handler(args, progress)
            finally:
                if name not in READ_ONLY_TOOLS:
                    # a run may have added files the node lists show (a cloned voice, a saved avatar):
                    # the next call reads /object_info afresh
                    self._object_info_at = 0.0
            return self.answer(result, images)
        except ToolFailure as exc:
            return self.error(str(exc))
        except (UsageError, LiveError) as exc:
            return self.error(str(exc))
        except ServerUnavailable as exc:
            return self.error(str(exc))
        except (TimeoutError, asyncio.TimeoutError):
            return self.error(f"{name}: ComfyUI did not finish within {self.timeout:.0f} s")
        except Exception as exc:  # a bug of ours: the agent gets one line, the log gets the traceback
            log.exception("tool %s failed", name)
            return self.error(f"{name}: internal error of the DigitalHuman MCP server ({type(exc).__name__}: {exc})")

    def secrets(self) -> list[str]:
        return [os.environ[k] for k in KEY_VARS if os.environ.get(k)]

    def answer(self, result: dict, images: list[types.ImageContent] | None = None) -> types.CallToolResult:
        text = redact(json.dumps(result, indent=1, ensure_ascii=False), self.secrets())
        return types.CallToolResult(content=[types.TextContent(type="text", text=text), *(images or [])],
                                    structured_content=json.loads(text))

    def error(self, message: str) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=redact(message, self.secrets()))],
                                    is_error=True)

    # -- running prompts -------------------------------------------------------------------------------

    def call_dir(self, tool: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d = self.out / tool / f"{stamp}-{random.randrange(16**4):04x}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    async def run(self, job: PreparedPrompt, out_dir: Path, progress, arg_inputs: dict | None = None,
                  include_previews: bool = False):
        """Queue ``job``, forward its progress, honour cancellation, translate its failures."""
        client = self.client()
        tracker = PromptProgress(job.prompt)
        send, recv = anyio.create_memory_object_stream(64)
        queued: dict[str, str] = {}
        last = {"t": 0.0, "node": None}

        def on_event(etype: str, data: dict) -> None:
            if not tracker.update(etype, data):
                return
            now = time.monotonic()
            if etype == "progress" and tracker.current == last["node"] and now - last["t"] < PROGRESS_EVERY_S:
                return
            last.update(t=now, node=tracker.current)
            with contextlib.suppress(anyio.WouldBlock):
                send.send_nowait((tracker.value, tracker.total, tracker.message))

        def on_queued(prompt_id: str) -> None:
            queued["id"] = prompt_id
            with contextlib.suppress(anyio.WouldBlock):
                send.send_nowait((0.0, tracker.total, f"queued as prompt {prompt_id} on {self.url}"))

        async def pump() -> None:
            async with recv:
                async for value, total, message in recv:
                    await progress(value, total, message)

        outcome, failure = None, None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump)
                try:
                    outcome = await execute(client, job, out_dir, on_event=on_event, on_queued=on_queued,
                                            include_previews=include_previews)
                except Exception as exc:  # noqa: BLE001  raised below, outside the task group's ExceptionGroup
                    failure = exc
                finally:
                    send.close()
        except anyio.get_cancelled_exc_class():
            if "id" in queued:
                with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                    done = await client.cancel(queued["id"])
                    log.info("cancelled by the client: prompt %s %s", queued["id"], done)
            raise
        if isinstance(failure, PromptRejected):
            raise ToolFailure(_rejection(failure, arg_inputs or {})) from None
        if isinstance(failure, ExecutionInterrupted):
            raise ToolFailure(f"cancelled: the run was interrupted in ComfyUI ({failure}); nothing was saved") from None
        if isinstance(failure, ExecutionFailed):
            raise ToolFailure(f"the run failed in ComfyUI: {failure}") from None
        if failure is not None:
            raise failure
        return outcome

    # -- tools ----------------------------------------------------------------------------------------

    async def tool_design_avatar(self, args: dict, progress):
        info = await self.object_info()
        seed = args.get("seed")
        aj = recipes.avatar_job({k: v for k, v in args.items() if k != "seed"}, table=self.table, object_info=info,
                                policy=self.policy, seed=seed)
        out_dir = self.call_dir("design_avatar")
        outcome = await self.run(aj.job, out_dir, progress, aj.arg_inputs)
        report = "\n".join(ui_texts(outcome.outputs, aj.check_node))
        try:
            passed, reasons = recipes.parse_check(report)
        except ValueError:
            raise ToolFailure(f"the portrait check (node {aj.check_node}) left no report in ComfyUI's history") from None
        portrait = [f for f, it in zip(outcome.files, outcome.items) if str(it["node"]) == aj.portrait_node]
        if not portrait:
            raise ToolFailure(f"the workflow saved no portrait (SaveImage node {aj.portrait_node})")
        cost = estimate(outcome.prompt)
        result = {"portrait": str(portrait[0]), "passed": passed, "reasons": reasons, "report": report,
                  "files": [str(f) for f in outcome.files], "generator": aj.generator, "cost_usd": cost.usd,
                  "cost_basis": cost.basis, "seconds": round(outcome.seconds, 2), "prompt_id": outcome.prompt_id}
        return result, [preview(portrait[0])]

    async def tool_make_video(self, args: dict, progress):
        info = await self.object_info()
        vj = recipes.video_job(args, table=self.table, object_info=info, policy=self.policy)
        out_dir = self.call_dir("make_video")
        outcome = await self.run(vj.job, out_dir, progress, vj.arg_inputs)
        videos = [f for f, it in zip(outcome.files, outcome.items)
                  if str(it["node"]) == str(vj.route["video_out"]) and f.suffix.lower() == ".mp4"]
        if not videos:
            raise ToolFailure(f"the workflow saved no MP4 (node {vj.route['video_out']})")
        facts = video_facts(videos[0])
        cost = estimate(outcome.prompt, facts["duration_s"])
        return {"video": str(videos[0]), **facts, "cost_usd": cost.usd, "cost_basis": cost.basis,
                "workflow": vj.route["workflow"], "quality": vj.route["quality"], "voice": vj.voice or None,
                "seconds": round(outcome.seconds, 2), "prompt_id": outcome.prompt_id}, []

    async def tool_list_workflows(self, args: dict, progress):
        info = await self.object_info(required=False)
        return {"workflows": [{"name": n, "description": describe(n), "inputs": settable_inputs(load_workflow(n), info)}
                              for n in shipped_workflows()]}, []

    async def tool_run_workflow(self, args: dict, progress):
        prompt = load_workflow(args["workflow"], self.policy)
        sets = args.get("set") or {}
        job = prepare(prompt, sets, policy=self.policy, base=None, workflow=args["workflow"])
        arg_inputs = {}
        for key in sets:
            node_sel, inp = split_override(key)
            arg_inputs[(find_node(prompt, node_sel), inp)] = f"set['{key}']"
        out_dir = self.call_dir("run_workflow")
        outcome = await self.run(job, out_dir, progress, arg_inputs, include_previews=bool(args.get("include_previews")))
        media = [f for f in outcome.files if f.suffix.lower() == ".mp4"]
        cost = estimate(outcome.prompt, video_facts(media[0])["duration_s"] if media else None)
        reports = {k: v["text"] for k, v in outcome.outputs.items() if isinstance(v, dict) and v.get("text")}
        return {"files": [str(f) for f in outcome.files], "reports": reports, "cost_usd": cost.usd,
                "cost_basis": cost.basis, "seconds": round(outcome.seconds, 2), "prompt_id": outcome.prompt_id}, []

    async def tool_list_voices(self, args: dict, progress):
        info = await self.object_info()
        backends = recipes.voice_backends(self.table, info)
        voices, notes = [], []
        for name, row in backends.items():
            if args.get("backend") and name != args["backend"]:
                continue
            found, note = await anyio.to_thread.run_sync(lambda: list_backend_voices(row, info))
            voices += [{"id": f"{name}:{v['name']}", "backend": name, **v} for v in found]
            if note:
                notes.append(f"{name}: {note}")
        default = self.table["video"].get("default_voice_backend")
        return {"voices": voices, "backends": {k: v["description"] for k, v in backends.items()},
                "default": f"{default}:{backends[default]['default_voice']}" if default in backends else None,
                "notes": notes}, []

    async def tool_run_batch(self, args: dict, progress):
        batch = self.policy.check(Path(args["batch"]).expanduser(), "batch")
        out = Path(args["out"]).expanduser() if args.get("out") else self.out / "batch" / batch.stem
        out = self.policy.check(out.resolve() if out.exists() else out.parent.resolve() / out.name, "out")
        servers = args.get("servers") or [self.url]
        opts = BatchOptions(servers=servers, out_dir=out, queue_depth=int(args.get("queue_depth", 2)),
                            timeout=self.timeout, policy=self.policy)
        lines: list[str] = []
        send, recv = anyio.create_memory_object_stream(256)

        def on_log(msg: str) -> None:
            lines.append(msg)
            with contextlib.suppress(anyio.WouldBlock):
                send.send_nowait(msg)

        async def pump() -> None:
            count = 0.0
            async with recv:
                async for msg in recv:
                    if ": done on " in msg or ": failed" in msg:
                        count += 1
                    await progress(count, None, msg)

        summary, failure = None, None
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                summary = await run_batch_file(batch, opts, log=on_log)
            except Exception as exc:  # noqa: BLE001  raised below, outside the task group's ExceptionGroup
                failure = exc
            finally:
                send.close()
        if failure is not None:
            raise failure
        return {"manifest": str(out / "manifest.json"), "all_done": summary.all_done, "counts": summary.counts,
                "jobs": summary.rows(), "servers": summary.servers, "table": summary.table()}, []

    # -- live sessions (a session outlives its prompt: started by a workflow, then driven over the routes) --

    def live(self) -> LiveClient:
        return LiveClient(self.url)

    async def tool_live_start(self, args: dict, progress):
        spec = self.table["live"]["start"]
        job, where = recipes.tool_job(spec, args, policy=self.policy)
        outcome = await self.run(job, self.call_dir("live_start"), progress, where)
        node = str(spec["session_node"])
        entry = ((outcome.outputs.get(node) or {}).get("dh_live") or [None])[0]
        if not entry:
            raise ToolFailure(f"the workflow's Live Session node ({node}) reported no session")
        found = await self.live().find(entry["id"])
        return {"session": entry["id"], "name": entry.get("name"), "page": self.live().page(found),
                "created": bool(entry.get("created")), "modes": found.get("modes", []), "state": found.get("state"),
                "report": "\n".join(ui_texts(outcome.outputs, node)), "seconds": round(outcome.seconds, 2),
                "prompt_id": outcome.prompt_id}, []

    async def tool_live_say(self, args: dict, progress):
        live = self.live()
        found = await live.find(args["session"])
        mode = args.get("mode", "repeat")
        if mode not in found.get("modes", [mode]):
            raise ToolFailure(f"session '{found.get('name') or found['id']}' cannot {mode}: its modes are "
                              f"{', '.join(found.get('modes', [])) or 'none'}"
                              + (" (start it with a chat model: live_start's chat_base_url)" if mode == "chat" else ""))
        after = await live.last_event(found["id"])
        turn = await live.say(found["id"], args["text"], mode)
        result: dict[str, Any] = {"session": found["id"], "turn": turn, "mode": mode}
        if not args.get("wait", True):
            return result, []
        await progress(0.0, None, f"turn {turn} queued in session '{found.get('name')}'")
        wait_s = float(args.get("wait_s", self.table["live"].get("say_wait_s", 120)))
        got = await live.wait_turn(found["id"], turn, after, wait_s, remote=found.get("kind") not in (None, "self-hosted"))
        if not got["finished"]:
            got["note"] = f"still speaking after {wait_s:g} s (the session goes on)"
        if got.get("error") and not got.get("said"):
            raise ToolFailure(f"session '{found.get('name')}' could not say it: {got['error']}")
        return {**result, **{k: v for k, v in got.items() if k != "turn"}}, []

    async def tool_live_stop(self, args: dict, progress):
        live = self.live()
        found = await live.find(args["session"])
        final = await live.close(found["id"])
        return {"session": found["id"], "name": found.get("name"), **final}, []

    async def table_tool(self, name: str, spec: dict, args: dict, progress):
        job, where = recipes.tool_job(spec, args, policy=self.policy)
        outcome = await self.run(job, self.call_dir(name), progress, where)
        reports = {k: v["text"] for k, v in outcome.outputs.items() if isinstance(v, dict) and v.get("text")}
        cost = estimate(outcome.prompt)
        return {"files": [str(f) for f in outcome.files], "reports": reports, "cost_usd": cost.usd,
                "cost_basis": cost.basis, "seconds": round(outcome.seconds, 2), "prompt_id": outcome.prompt_id}, []


# -- helpers ----------------------------------------------------------------------------------------------

def check_arguments(tool: ToolDef, args: dict) -> None:
    """JSON-schema check of a call's arguments, with one readable line per problem."""
    problems = []
    for err in sorted(jsonschema.Draft202012Validator(tool.schema).iter_errors(args), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            known = ", ".join(err.schema.get("properties", {})) or "none"
            scope = f"'{where}' " if where else ""
            problems.append(f"unknown argument{'s' if len(extra) > 1 else ''} {scope}{', '.join(extra)} "
                            f"({tool.name} takes: {known})")
        elif err.validator == "required":
            problems.append(f"{err.message.split(' ')[0].strip(chr(39))}: is required")
        elif err.validator in ("minLength", "maxLength") and isinstance(err.instance, str):
            n = len(err.instance)
            limit = err.validator_value
            if n == 0:
                problems.append(f"{where}: is empty")
            else:
                problems.append(f"{where}: has {n:,} characters; {'at least' if err.validator == 'minLength' else 'at most'} "
                                f"{limit:,} allowed")
        elif err.validator == "enum":
            problems.append(f"{where}: '{err.instance}' is not one of {', '.join(map(str, err.validator_value))}")
        elif err.validator == "type":
            problems.append(f"{where or 'arguments'}: must be {err.validator_value} (got {type(err.instance).__name__})")
        else:
            problems.append(f"{where or 'arguments'}: {err.message[:300]}")
    if problems:
        raise ToolFailure(f"{tool.name}: " + "; ".join(problems))


def _rejection(exc: PromptRejected, arg_inputs: dict) -> str:
    """ComfyUI's validation report, with the tool argument behind each rejected input named."""
    names = [arg_inputs[k] for k in rejected_inputs(exc.body) if k in arg_inputs]
    lead = f"{', '.join(dict.fromkeys(names))}: " if names else ""
    return lead + str(exc)


def video_facts(path: Path) -> dict:
    from ..engine.media.video_io import probe

    info = probe(path)
    return {"duration_s": round(info.duration, 3), "frames": info.frame_count, "fps": round(info.fps, 3),
            "width": info.width, "height": info.height, "has_audio": info.has_audio}


def preview(path: Path, longest: int = 512) -> types.ImageContent:
    """A JPEG of the picture at most ``longest`` pixels on its longer side, for the agent to look at."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ToolFailure(f"the saved portrait {path} could not be read")
    h, w = img.shape[:2]
    scale = min(1.0, longest / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return types.ImageContent(type="image", data=base64.b64encode(buf.tobytes()).decode(), mime_type="image/jpeg")


def list_backend_voices(row: dict, object_info: dict | None) -> tuple[list[dict], str]:
    """(voices, note) of one back-end, by its row's ``voices_from`` rule."""
    how = row.get("voices_from")
    if how == "node_input":
        choices = recipes.node_choices(object_info, *recipes.voice_choice_input(row)) or []
        return [{"name": str(c)} for c in choices], ""
    if how == "elevenlabs_account":
        from ..providers import elevenlabs
        from ..providers.http import ApiError
        from ..providers.keys import MissingKeyError

        try:
            found = elevenlabs.ElevenLabs().list_voices()
        except MissingKeyError:
            return ([{"name": row["default_voice"], "label": "default voice"}],
                    "set ELEVENLABS_API_KEY for the MCP server to list your account's voices; any voice name or id "
                    "of your account works in make_video")
        except (ApiError, OSError) as exc:  # the API's error, already redacted by the provider
            return [{"name": row["default_voice"], "label": "default voice"}], f"could not list the account's voices: {exc}"
        return [{"name": v.get("name") or v["voice_id"], "voice_id": v.get("voice_id"),
                 "category": v.get("category")} for v in found], ""
    return [], f"voices of this back-end are not listed (voices_from '{how}')"


# -- wiring -------------------------------------------------------------------------------------------------

def build_server(app: DigitalHumanMCP) -> Server:
    @contextlib.asynccontextmanager
    async def lifespan(_server):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.prepare_comfy)
            try:
                yield {}
            finally:
                tg.cancel_scope.cancel()
                await anyio.to_thread.run_sync(app.stop_comfy)

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        tools = await app.list_tools()
        return types.ListToolsResult(tools=[types.Tool(
            name=t.name, title=t.title, description=t.description, input_schema=t.schema,
            annotations=types.ToolAnnotations(title=t.title, read_only_hint=t.read_only, open_world_hint=False))
            for t in tools])

    async def on_call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        async def progress(value: float, total: float | None, message: str) -> None:
            await ctx.session.report_progress(value, total, redact(message, app.secrets()))

        return await app.call(params.name, dict(params.arguments or {}), progress)

    return Server("comfyui-digitalhuman", version="0.1.0", title="ComfyUI-DigitalHuman",
                  instructions=("Digital humans on the user's own ComfyUI: design_avatar makes a portrait, make_video "
                                "makes it speak a script (or a speech file) as an MP4; live_start, live_say and "
                                "live_stop run a live digital human on a web page; list_voices, clone_voice, "
                                "list_workflows, run_workflow and run_batch cover the rest. Paths are local files."),
                  lifespan=lifespan, on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The ComfyUI-DigitalHuman MCP server (stdio).")
    ap.add_argument("--server", default=os.environ.get("DH_COMFYUI_URL", "http://127.0.0.1:8188"),
                    help="ComfyUI address (default %(default)s; env DH_COMFYUI_URL)")
    ap.add_argument("--no-start", action="store_true", help="never start a ComfyUI when none answers")
    ap.add_argument("--comfyui", help="ComfyUI checkout to start when none answers (else COMFYUI_PATH, ...)")
    ap.add_argument("--out", default=os.environ.get("DH_MCP_OUT", "out/mcp"),
                    help="folder for the files the tools make (default %(default)s)")
    ap.add_argument("--allow", action="append", metavar="DIR",
                    help="folder the tools may read files from (repeatable; default the current folder); "
                         "the output folder is always allowed")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for a started ComfyUI")
    ap.add_argument("--table", help="another tool table instead of data/mcp_tools.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = Config(server=args.server, out=Path(args.out), allow=[Path(a) for a in (args.allow or [])],
                 start=not args.no_start, comfyui=args.comfyui, start_timeout=args.start_timeout,
                 table=Path(args.table) if args.table else None)
    app = DigitalHumanMCP(cfg)
    server = build_server(app)

    def on_term(signum, frame):  # the client's SIGTERM after stdin closed: take our ComfyUI down with us
        app.stop_comfy(grace=1.0)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    atexit.register(app.stop_comfy, 1.0)

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options(NotificationOptions()))

    anyio.run(serve)
    return 0
