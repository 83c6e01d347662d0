"""Batch runs: one job per row of a CSV or JSONL file, spread over one or more ComfyUI servers,
resumable through a manifest beside the outputs.

A row is either a workflow with overrides (``workflow`` plus ``NODE.INPUT`` columns, or a JSONL
``"set": {...}`` object) or a video in make_video's terms (``portrait`` plus ``script`` or
``speech``, optional ``voice``, ``driving_video``, ``quality``). File paths are relative to the
batch file. An ``id`` column names the job (default ``job<line>``).

Each server keeps ``queue_depth`` jobs queued (one runs, the others wait in ComfyUI's own queue).
A server that stops answering gives its jobs back to the queue for the others and is not used
again in this run; a job that was running when its server died counts that loss, and after
``max_losses`` it fails instead of taking down the next server. ``OUT/manifest.json`` records every
job's state, attempts and output files after each change, so a rerun skips finished jobs (whose
row and input files are unchanged and whose outputs are still there) and a failed row never
stops the others.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .api import ComfyClient, ExecutionFailed, ExecutionInterrupted, PromptRejected, ServerUnavailable
from .costs import estimate
from .jobs import execute
from .launch import server_alive
from .recipes import VIDEO_FIELDS, load_table, video_job
from .workflows import FilePolicy, PreparedPrompt, UsageError, load_workflow, prepare, shipped_workflows

MANIFEST = "manifest.json"
RESERVED = ("id", "workflow", "set")


@dataclass
class BatchOptions:
    servers: list[str]
    out_dir: Path
    queue_depth: int = 2
    default_workflow: str | None = None
    timeout: float = 3600.0
    max_losses: int = 2
    policy: FilePolicy = field(default_factory=FilePolicy)


@dataclass
class Row:
    id: str
    line: int
    spec: dict  # {"workflow": name, "set": {...}} or {"video": {...}}
    error: str = ""


@dataclass
class Job:
    row: Row
    key: str = ""
    prepared: PreparedPrompt | None = None
    entry: dict = field(default_factory=dict)  # the manifest record
    started: bool = False  # ComfyUI began executing the current attempt
    skipped: bool = False  # done in an earlier run, nothing to do now

    @property
    def state(self) -> str:
        return "skipped" if self.skipped else self.entry.get("state", "pending")


# -- reading the batch file ------------------------------------------------------------------------

def read_rows(path: Path, default_workflow: str | None = None) -> list[Row]:
    """Rows of a CSV (header line) or JSONL file. A row that cannot be read is kept with its error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"batch file '{path}' could not be read: {exc}") from None
    rows: list[Row] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("a row must be a JSON object")
            except ValueError as exc:
                rows.append(Row(f"job{lineno:04d}", lineno, {}, f"line {lineno}: not a JSON object ({exc})"))
                continue
            rows.append(_row(obj, lineno, default_workflow))
    elif path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = reader.fieldnames or []
        bad = [c for c in columns if c and c not in RESERVED and c not in VIDEO_FIELDS and "." not in c]
        if bad:
            raise UsageError(f"batch file '{path}': column(s) {', '.join(bad)} are neither NODE.INPUT overrides, "
                             f"video fields ({', '.join(VIDEO_FIELDS)}) nor id/workflow")
        for i, rec in enumerate(reader):
            lineno = i + 2
            if rec.get(None):
                rows.append(Row(f"job{lineno:04d}", lineno, {}, f"line {lineno}: more cells than columns"))
                continue
            obj = {k: v for k, v in rec.items() if k and v not in (None, "")}
            if not obj:
                continue
            rows.append(_row(obj, lineno, default_workflow))
    else:
        raise UsageError(f"batch file '{path}': use a .csv, .tsv or .jsonl file")
    seen: dict[str, int] = {}
    for r in rows:
        if r.id in seen and not r.error:
            r.error = f"line {r.line}: id '{r.id}' is used on line {seen[r.id]} too"
        seen.setdefault(r.id, r.line)
    return rows


def _row(obj: dict, lineno: int, default_workflow: str | None) -> Row:
    rid = str(obj.get("id") or f"job{lineno:04d}").strip()
    if not rid.replace("-", "").replace("_", "").replace(".", "").isalnum() or rid.startswith("."):
        return Row(f"job{lineno:04d}", lineno, {}, f"line {lineno}: id '{rid}' may only hold letters, digits, '-', '_', '.'")
    sets = dict(obj.get("set") or {})
    if not isinstance(obj.get("set") or {}, dict):
        return Row(rid, lineno, {}, f"line {lineno}: 'set' must be an object of NODE.INPUT values")
    video = {k: v for k, v in obj.items() if k in VIDEO_FIELDS}
    sets.update({k: v for k, v in obj.items() if k not in RESERVED and k not in VIDEO_FIELDS})
    unknown = [k for k in sets if "." not in k]
    if unknown:
        return Row(rid, lineno, {}, f"line {lineno}: unknown field(s) {', '.join(unknown)}")
    if video:
        if obj.get("workflow") or sets:
            return Row(rid, lineno, {}, f"line {lineno}: a video row ({', '.join(video)}) takes no workflow or "
                                         "NODE.INPUT overrides")
        return Row(rid, lineno, {"video": video})
    workflow = obj.get("workflow") or default_workflow
    if not workflow:
        return Row(rid, lineno, {}, f"line {lineno}: no workflow (give a workflow column, or one on the command line)")
    return Row(rid, lineno, {"workflow": str(workflow), "set": sets})


def job_key(spec: dict, prepared: PreparedPrompt) -> str:
    """Changes when the row or one of its input files changes (size or modification time)."""
    files = {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for _, _, p in prepared.uploads}
    blob = json.dumps({"spec": spec, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compile_row(row: Row, base: Path, policy: FilePolicy, table: dict, object_info: dict | None) -> PreparedPrompt:
    if "video" in row.spec:
        return video_job(row.spec["video"], table=table, object_info=object_info, policy=policy, base=base).job
    name = row.spec["workflow"]
    if name not in shipped_workflows() and (base / name).is_file():
        name = str(base / name)  # a workflow file beside the batch
    prompt = load_workflow(name, policy)
    return prepare(prompt, row.spec["set"], policy=policy, base=base, workflow=row.spec["workflow"])


# -- the manifest ------------------------------------------------------------------------------------

class Manifest:
    """``OUT/manifest.json``: every job's state, attempts and outputs, rewritten atomically."""

    def __init__(self, out_dir: Path, batch: Path):
        self.path = Path(out_dir) / MANIFEST
        self.data: dict[str, Any] = {"batch": str(batch), "jobs": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
                self.data.setdefault("jobs", {})
            except ValueError as exc:
                raise UsageError(f"manifest '{self.path}' is damaged ({exc}); move it away to start the batch afresh") from None

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


# -- running ---------------------------------------------------------------------------------------------

@dataclass
class Summary:
    jobs: list[Job]
    seconds: float
    servers: dict[str, str]  # url -> "ok" / why it was dropped

    @property
    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for j in self.jobs:
            c[j.state] = c.get(j.state, 0) + 1
        return c

    @property
    def all_done(self) -> bool:
        return all(j.state in ("done", "skipped") for j in self.jobs)

    def rows(self) -> list[dict]:
        out = []
        for j in self.jobs:
            e = j.entry
            out.append({"id": j.row.id, "line": j.row.line, "state": j.state,
                        "server": e.get("server", ""), "attempts": len(e.get("attempts", [])),
                        "seconds": e.get("seconds"), "cost_usd": e.get("cost_usd"),
                        "outputs": e.get("outputs", []), "reason": e.get("error", "")})
        return out

    def table(self) -> str:
        head = ("job", "state", "server", "tries", "seconds", "cost $", "outputs / reason")
        lines = []
        for r in self.rows():
            server = r["server"].replace("http://", "")
            what = ", ".join(r["outputs"]) if r["state"] in ("done", "skipped") else r["reason"]
            lines.append((r["id"], r["state"], server, str(r["attempts"]),
                          f"{r['seconds']:.1f}" if r["seconds"] is not None else "-",
                          f"{r['cost_usd']:.6f}" if r["cost_usd"] is not None else "-", what.replace("\n", " ")))
        widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head[:-1])]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        c = self.counts
        cost = sum(r["cost_usd"] or 0.0 for r in self.rows() if r["state"] == "done")
        total = (f"{c.get('done', 0)} done, {c.get('skipped', 0)} skipped (done before), {c.get('failed', 0)} failed, "
                 f"{c.get('pending', 0)} not run; {self.seconds:.1f} s; estimated API cost of this run ${cost:.6f}")
        dropped = [f"{u}: {why}" for u, why in self.servers.items() if why != "ok"]
        return "\n".join([fmt.format(*head), *(fmt.format(*l) for l in lines), total]
                         + ([f"servers dropped: {'; '.join(dropped)}"] if dropped else []))


class _Server:
    def __init__(self, url: str, timeout: float):
        self.url = url
        self.client = ComfyClient(url, timeout=timeout)
        self.dead = ""


async def run_batch_file(path: Path, opts: BatchOptions, log: Callable[[str], None] = print,
                         on_event: Callable[[str, str, str, dict], None] | None = None) -> Summary:
    """Run every row of ``path``; ``on_event(job_id, server_url, event_type, data)`` sees ComfyUI's
    WebSocket events of each job."""
    t0 = time.monotonic()
    path = opts.policy.check(Path(path), "batch")
    out_dir = Path(opts.out_dir)
    rows = read_rows(path, opts.default_workflow)
    manifest = Manifest(out_dir, path)
    servers = [_Server(u.rstrip("/"), opts.timeout) for u in dict.fromkeys(opts.servers)]
    for s in servers:
        if not await asyncio.to_thread(server_alive, s.url):
            s.dead = "did not answer at the start"
            log(f"server {s.url}: does not answer; not used")
    alive = [s for s in servers if not s.dead]
    object_info = None
    if alive:
        try:
            object_info = await alive[0].client.object_info()
        except ServerUnavailable:
            object_info = None
    table = load_table()
    jobs: list[Job] = []
    queue: deque[Job] = deque()
    for row in rows:
        entry = manifest.data["jobs"].setdefault(row.id, {})
        entry["line"] = row.line
        job = Job(row, entry=entry)
        jobs.append(job)
        if row.error:
            _fail(job, row.error)
            continue
        try:
            job.prepared = compile_row(row, path.parent, opts.policy, table, object_info)
            job.key = job_key(row.spec, job.prepared)
        except (UsageError, OSError) as exc:
            _fail(job, f"line {row.line}: {exc}")
            continue
        if entry.get("state") == "done" and entry.get("key") == job.key:
            missing = [o for o in entry.get("outputs", []) if not (out_dir / o).is_file()]
            if not missing:
                job.skipped = True
                continue
            entry["note"] = f"outputs missing ({', '.join(missing)}): run again"
        elif entry.get("state") == "done":
            entry["note"] = "row or its input files changed since it was done: run again"
        elif entry.get("state") == "running":
            for a in entry.get("attempts", []):
                a.setdefault("result", "abandoned: the batch run stopped while it was queued or running")
            entry["note"] = "was queued or running when the last batch run stopped: run again"
        entry.update(state="pending", key=job.key, error="")
        queue.append(job)
    manifest.save()
    log(f"batch {path.name}: {len(jobs)} jobs, {len(queue)} to run, "
        f"{sum(1 for j in jobs if j.skipped)} done before, "
        f"{sum(1 for j in jobs if j.state == 'failed')} failed to prepare; "
        f"{len(alive)} server(s), {opts.queue_depth} queued on each")

    cond = asyncio.Condition()
    state = {"in_flight": 0}

    def status() -> str:
        c: dict[str, int] = {}
        for j in jobs:
            c[j.state] = c.get(j.state, 0) + 1
        return (f"[{c.get('done', 0) + c.get('skipped', 0)}/{len(jobs)} done, {c.get('failed', 0)} failed, "
                f"{c.get('running', 0)} running]")

    async def worker(server: _Server) -> None:
        while True:
            async with cond:
                while not queue and state["in_flight"] > 0 and not server.dead:
                    await cond.wait()
                if server.dead or not queue:
                    return
                job = queue.popleft()
                state["in_flight"] += 1
            requeue = await _attempt(job, server, out_dir, opts, manifest, log, status, on_event)
            async with cond:
                state["in_flight"] -= 1
                if requeue:
                    queue.appendleft(job)
                cond.notify_all()

    await asyncio.gather(*(worker(s) for s in alive for _ in range(max(1, opts.queue_depth))))
    for job in queue:
        job.entry["state"] = "pending"
        job.entry["error"] = "not run: no ComfyUI server left (" + "; ".join(f"{s.url}: {s.dead}" for s in servers) + ")"
    manifest.save()
    return Summary(jobs, time.monotonic() - t0, {s.url: s.dead or "ok" for s in servers})


def _fail(job: Job, reason: str) -> None:
    job.entry.update(state="failed", error=reason)


async def _attempt(job: Job, server: _Server, out_dir: Path, opts: BatchOptions, manifest: Manifest,
                   log: Callable[[str], None], status: Callable[[], str],
                   on_event: Callable[[str, str, str, dict], None] | None) -> bool:
    """Run ``job`` once on ``server``; True when it must go back to the queue (its server died)."""
    entry = job.entry
    attempt = {"server": server.url, "queued_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    entry.setdefault("attempts", []).append(attempt)
    entry.update(state="running", server=server.url)
    manifest.save()
    job.started = False

    def events(etype: str, data: dict) -> None:
        if etype in ("execution_start", "executing", "progress") and not job.started:
            job.started = True
            clock["start"] = time.monotonic()
        if on_event:
            on_event(job.row.id, server.url, etype, data)

    def queued(prompt_id: str) -> None:
        attempt["prompt_id"] = prompt_id
        manifest.save()
        log(f"{job.row.id}: queued on {server.url} (prompt {prompt_id}) {status()}")

    clock = {"queued": time.monotonic()}
    try:
        outcome = await execute(server.client, job.prepared, out_dir / job.row.id, on_event=events, on_queued=queued)
    except ServerUnavailable as exc:
        if not server.dead:
            server.dead = f"stopped answering during {job.row.id}"
            log(f"server {server.url}: {exc}; its jobs go to the other servers")
        losses = sum(1 for a in entry["attempts"] if a.get("result", "").startswith("server lost while running"))
        if job.started:
            attempt["result"] = "server lost while running"
            losses += 1
        else:
            attempt["result"] = "server lost before it ran"
        attempt["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if losses >= opts.max_losses:
            _fail(job, f"ComfyUI died while running this job on {losses} servers; not retried (the job may be "
                       "what stops them)")
            manifest.save()
            log(f"{job.row.id}: failed: {entry['error']} {status()}")
            return False
        entry.update(state="pending", error="")
        manifest.save()
        log(f"{job.row.id}: {attempt['result']} ({server.url}); back in the queue {status()}")
        return True
    except (PromptRejected, ExecutionFailed, ExecutionInterrupted, TimeoutError, UsageError, OSError, RuntimeError) as exc:
        attempt.update(result="failed", ended_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        _fail(job, str(exc))
        manifest.save()
        log(f"{job.row.id}: failed on {server.url}: {str(exc).splitlines()[0]} {status()}")
        return False
    seconds = time.monotonic() - clock.get("start", clock["queued"])  # run time, not the wait in the queue
    media = [f for f in outcome.files if f.suffix.lower() in (".mp4", ".wav", ".mov", ".webm")]
    duration = _duration(media[0]) if media else None
    cost = estimate(outcome.prompt, duration)
    rel = [str(f.relative_to(out_dir)) for f in outcome.files]
    attempt.update(result="done", prompt_id=outcome.prompt_id, ended_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    entry.update(state="done", outputs=rel, seconds=round(seconds, 2), cost_usd=cost.usd, cost_basis=cost.basis,
                 error="", duration_s=duration)
    manifest.save()
    log(f"{job.row.id}: done on {server.url} in {seconds:.1f} s -> {', '.join(rel) or 'no files'} {status()}")
    return False


def _duration(path: Path) -> float | None:
    """Seconds of a video output (prices speech by the minute); None when it cannot be read."""
    from ..engine.media.errors import MediaError
    from ..engine.media.video_io import probe

    if path.suffix.lower() == ".wav":
        return None
    try:
        return round(probe(path).duration, 3)
    except (MediaError, OSError, ValueError):
        return None
