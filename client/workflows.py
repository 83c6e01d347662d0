"""API-format workflows: finding them, naming their nodes, overriding inputs, local files in them.

``NODE.INPUT=VALUE`` is the override syntax of the runner, of batch rows and of the MCP server's
``run_workflow``: NODE is a node id, its title, or its class type when that occurs once. A VALUE that
names an existing local file is uploaded to ComfyUI's input folder before the prompt is queued
(:class:`FilePolicy` says which local folders may be read).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .launch import PACK_ROOT

API_DIR = PACK_ROOT / "workflows" / "api"
UI_DIR = PACK_ROOT / "workflows"


class UsageError(ValueError):
    """Bad input from the user (a workflow, a node, an override, a file): the message says which."""


@dataclass
class FilePolicy:
    """Which local files may be uploaded. ``roots=None`` allows any readable file (the command line,
    where the user typed the path); otherwise only files under one of ``roots`` (symlinks resolved)."""

    roots: list[Path] | None = None

    def check(self, path: Path, what: str) -> Path:
        real = Path(path).expanduser().resolve()
        if self.roots is not None and not any(real == r or r in real.parents for r in self.roots):
            allowed = ", ".join(str(r) for r in self.roots) or "none"
            raise UsageError(f"{what}: '{path}' is outside the allowed folders ({allowed})")
        return real

    @classmethod
    def under(cls, roots: Iterable[str | Path]) -> "FilePolicy":
        return cls([Path(r).expanduser().resolve() for r in roots])


def workflow_path(name: str) -> Path:
    """A shipped API workflow by name (``talking_head``), or the path of one."""
    shipped = API_DIR / (name if name.endswith(".json") else f"{name}.json")
    if "/" not in name and "\\" not in name and shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise UsageError(f"workflow '{name}' not found; shipped API workflows: {', '.join(shipped_workflows()) or 'none'}")


def shipped_workflows() -> list[str]:
    return sorted(p.stem for p in API_DIR.glob("*.json"))


def load_workflow(name: str, policy: FilePolicy | None = None) -> dict:
    """The API-format prompt of a shipped workflow or a path (checked against ``policy`` when given)."""
    path = workflow_path(name)
    if policy is not None and path.parent.resolve() != API_DIR.resolve():
        policy.check(path, "workflow")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"workflow '{path}' could not be read: {exc}") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise UsageError(f"'{path}' is a UI-format workflow; use its API-format twin in workflows/api/ "
                         "(or export it with 'Save (API)')")
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise UsageError(f"'{path}' is not an API-format workflow (an object of nodes with class_type and inputs)")
    return data


def node_label(prompt: dict, node_id: str) -> str:
    node = prompt.get(str(node_id), {})
    return (node.get("_meta") or {}).get("title") or node.get("class_type", "?")


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
    names = ", ".join(f"{k}={node_label(prompt, k)}" for k in prompt)
    raise UsageError(f"no node '{selector}' in the workflow (nodes: {names})")


def parse_value(text: Any) -> Any:
    """An override value: JSON when it parses (numbers, booleans, quoted strings), else the text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_override(key: str) -> tuple[str, str]:
    if "." not in key:
        raise UsageError(f"override '{key}': expected NODE.INPUT (a node id, title or class type, a dot, an input name)")
    node_sel, inp = key.rsplit(".", 1)
    if not node_sel or not inp:
        raise UsageError(f"override '{key}': expected NODE.INPUT")
    return node_sel, inp


def parse_sets(sets: Iterable[str]) -> dict[str, str]:
    """``--set NODE.INPUT=VALUE`` strings -> ``{"NODE.INPUT": "VALUE"}`` (order kept)."""
    out: dict[str, str] = {}
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UsageError(f"--set '{item}': expected NODE.INPUT=VALUE")
        key, value = item.split("=", 1)
        out[key] = value
    return out


@dataclass
class PreparedPrompt:
    """A prompt with its overrides applied, and the local files to upload into it before queueing."""

    prompt: dict
    uploads: list[tuple[str, str, Path]] = field(default_factory=list)  # (node id, input, local file)
    workflow: str = ""

    def set(self, node_id: str, inp: str, value: Any) -> None:
        self.prompt[node_id].setdefault("inputs", {})[inp] = value

    def upload(self, node_id: str, inp: str, path: Path) -> None:
        self.uploads = [u for u in self.uploads if (u[0], u[1]) != (node_id, inp)]
        self.uploads.append((node_id, inp, path))


def local_file(value: Any, base: Path | None, policy: FilePolicy, what: str) -> Path | None:
    """The local file ``value`` names (relative to ``base``), checked against ``policy``; None when it
    names no local file (then it is an ordinary value, such as a file already in ComfyUI's input)."""
    if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 4096:
        return None
    p = Path(value.strip()).expanduser()
    candidates = [p] if p.is_absolute() or base is None else [base / p]
    for c in candidates:
        try:
            if c.is_file():
                return policy.check(c, what)
        except OSError:
            return None
    return None


def prepare(prompt: dict, overrides: dict[str, Any], *, policy: FilePolicy | None = None,
            base: Path | None = None, workflow: str = "") -> PreparedPrompt:
    """Apply ``{"NODE.INPUT": value}`` to a copy of ``prompt``; local files become uploads."""
    policy = policy or FilePolicy()
    job = PreparedPrompt(copy.deepcopy(prompt), workflow=workflow)
    for key, raw in overrides.items():
        node_sel, inp = split_override(str(key))
        node_id = find_node(job.prompt, node_sel)
        path = local_file(raw, base, policy, f"override {key}")
        if path is not None:
            job.upload(node_id, inp, path)
        else:
            job.set(node_id, inp, parse_value(raw))
    return job


def describe(name: str) -> str:
    """The first paragraph of the Note in a shipped workflow's UI twin (what it does)."""
    ui = UI_DIR / f"{name}.json"
    try:
        nodes = json.loads(ui.read_text(encoding="utf-8"))["nodes"]
    except (OSError, ValueError, KeyError):
        return ""
    for n in nodes:
        if n.get("type") in ("Note", "MarkdownNote") and n.get("widgets_values"):
            return str(n["widgets_values"][0]).strip().split("\n\n")[0].strip()
    return ""


def settable_inputs(prompt: dict, object_info: dict | None = None) -> list[dict]:
    """The literal inputs of a workflow as ``NODE.INPUT`` keys an override can set, with their
    current value and, when the server's ``/object_info`` is given, their kind and choices."""
    out = []
    for node_id, node in prompt.items():
        title = (node.get("_meta") or {}).get("title")
        ctype = node.get("class_type", "")
        titles = [k for k, v in prompt.items() if (v.get("_meta") or {}).get("title") == title] if title else []
        selector = title if title and len(titles) == 1 and "." not in title else node_id
        spec = {}
        if object_info and ctype in object_info:
            sections = object_info[ctype].get("input", {})
            spec = {**sections.get("required", {}), **sections.get("optional", {})}
        for inp, value in (node.get("inputs") or {}).items():
            if isinstance(value, list):
                continue  # a link
            entry = {"key": f"{selector}.{inp}", "node": node_id, "class_type": ctype, "input": inp, "value": value}
            s = spec.get(inp)
            if s:
                kind = s[0]
                if isinstance(kind, list):
                    entry["kind"] = "choice"
                    if len(kind) <= 50:
                        entry["choices"] = kind
                else:
                    entry["kind"] = str(kind).lower()
                opts = s[1] if len(s) > 1 and isinstance(s[1], dict) else {}
                if opts.get("tooltip"):
                    entry["tooltip"] = opts["tooltip"]
            out.append(entry)
    return out
