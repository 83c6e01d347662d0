"""Jobs built from the table ``data/mcp_tools.json``: a talking-head video from a portrait and a
script or speech file, a designed portrait, and the table's one-workflow tools.

Shared by the MCP server's tools and the video rows of batch runs. Which workflow runs, which of
its inputs take the user's files and which voice node speaks a script all come from the table; a
row is usable only when the target ComfyUI has every node it names (:func:`installed`).
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.data_files import read_json, without_notes
from .launch import PACK_ROOT
from .workflows import FilePolicy, PreparedPrompt, UsageError, find_node, load_workflow, local_file, split_override

TABLE_FILE = PACK_ROOT / "data" / "mcp_tools.json"
VIDEO_FIELDS = ("portrait", "script", "speech", "voice", "driving_video", "quality")
AVATAR_FIELDS = ("description", "gender", "age_range", "preset", "attire", "background")


def load_table(path: str | Path | None = None) -> dict:
    """The parsed table (a copy, so callers may not change the cached one)."""
    return copy.deepcopy(read_json(path or TABLE_FILE, "tool table"))


def installed(row: dict, object_info: dict | None) -> bool:
    """True when every node the row requires is on the server (unknown server: assumed)."""
    if object_info is None:
        return True
    return all(n in object_info for n in row.get("requires_nodes", []))


# -- make_video ---------------------------------------------------------------------------------

def video_routes(table: dict, object_info: dict | None) -> list[dict]:
    return [r for r in table["video"]["routes"] if installed(r, object_info)]


def voice_backends(table: dict, object_info: dict | None) -> dict[str, dict]:
    return {k: v for k, v in without_notes(table["video"]["voices"]).items()
            if object_info is None or v["node"] in object_info}


def qualities(table: dict, object_info: dict | None) -> list[str]:
    seen: list[str] = []
    for r in video_routes(table, object_info):
        if r["quality"] not in seen:
            seen.append(r["quality"])
    return seen


def node_choices(object_info: dict | None, class_type: str, inp: str) -> list | None:
    """The choices of a combo input in ``/object_info`` (None when not a combo or unknown)."""
    if not object_info or class_type not in object_info:
        return None
    sections = object_info[class_type].get("input", {})
    spec = {**sections.get("required", {}), **sections.get("optional", {})}.get(inp)
    return list(spec[0]) if spec and isinstance(spec[0], list) else None


def parse_voice(voice: str | None, table: dict, object_info: dict | None) -> tuple[str, str, dict]:
    """``backend:name`` or a bare name (the default back-end) -> (backend, voice, its row)."""
    backends = voice_backends(table, object_info)
    if not backends:
        raise UsageError("voice: no voice node is installed in this ComfyUI (none of "
                         f"{', '.join(v['node'] for v in without_notes(table['video']['voices']).values())})")
    text = (voice or "").strip()
    backend, _, name = text.partition(":") if ":" in text else ("", "", text)
    backend = backend.strip()
    if backend and backend not in backends:
        raise UsageError(f"voice: unknown voice back-end '{backend}'; available: {', '.join(backends)}")
    if not backend:
        default = table["video"].get("default_voice_backend")
        backend = default if default in backends else next(iter(backends))
    row = backends[backend]
    name = name.strip() or row.get("default_voice", "")
    if row.get("voices_from") == "node_input":
        choices = node_choices(object_info, *voice_choice_input(row))
        if choices is not None and name not in choices:
            raise UsageError(f"voice: '{name}' is not one of the {backend} voices; list_voices shows them "
                             f"({', '.join(map(str, choices[:20]))})")
    return backend, name, row


@dataclass
class VideoJob:
    job: PreparedPrompt
    route: dict
    voice: str = ""  # backend:name, or "" for a speech file
    arg_inputs: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, input) -> tool argument


def _file(value: Any, what: str, base: Path | None, policy: FilePolicy) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{what}: give the path of a local file")
    path = local_file(value, base, policy, what)
    if path is None:
        shown = Path(value).expanduser()
        raise UsageError(f"{what}: no such file '{value}'" + (f" (looked in {base})" if base and not shown.is_absolute() else ""))
    return path


def _selector(prompt: dict, sel: str) -> tuple[str, str]:
    node_sel, inp = split_override(sel)
    return find_node(prompt, node_sel), inp


def video_job(args: dict, *, table: dict, object_info: dict | None, policy: FilePolicy,
              base: Path | None = None) -> VideoJob:
    """The prompt that turns ``args`` (portrait, script or speech, voice, driving_video, quality)
    into an MP4, with its uploads; a :class:`UsageError` names the argument at fault."""
    unknown = set(args) - set(VIDEO_FIELDS)
    if unknown:
        raise UsageError(f"unknown video field(s) {', '.join(sorted(unknown))}; known: {', '.join(VIDEO_FIELDS)}")
    script, speech = args.get("script"), args.get("speech")
    if script is not None and not isinstance(script, str):
        raise UsageError("script: must be text")
    has_script = isinstance(script, str) and script != ""
    has_speech = isinstance(speech, str) and speech.strip() != ""
    if has_script and has_speech:
        raise UsageError("give either script (text to speak) or speech (a speech file), not both")
    if not has_script and not has_speech:
        if script is not None:
            raise UsageError("script: is empty; give the text to speak (or a speech file as 'speech')")
        raise UsageError("give script (text to speak) or speech (a speech file)")
    lo, hi = table["limits"]["script_chars"]
    if has_script:
        n = len(script)
        if not script.strip():
            raise UsageError("script: has only white space; give the text to speak")
        if n < lo or n > hi:
            raise UsageError(f"script: has {n:,} characters; make_video takes {lo:,} to {hi:,} "
                             "(split a longer text into several videos, or run them as a batch)")
    elif args.get("voice"):
        raise UsageError("voice: only a script is spoken by a voice; with a speech file leave voice out")
    driving = args.get("driving_video")
    with_driving = isinstance(driving, str) and driving.strip() != ""
    routes = video_routes(table, object_info)
    quality = args.get("quality") or table["video"].get("default_quality")
    offered = qualities(table, object_info)
    if quality not in offered:
        raise UsageError(f"quality: '{quality}' is not available on this ComfyUI; available: {', '.join(offered) or 'none'}")
    route = next((r for r in routes if r["quality"] == quality and bool(r["driving_video"]) == with_driving), None)
    if route is None:
        raise UsageError(f"driving_video: no {quality} workflow {'with' if with_driving else 'without'} a driving video "
                         "is installed on this ComfyUI")
    prompt = load_workflow(route["workflow"])
    job = PreparedPrompt(prompt, workflow=route["workflow"])
    out = VideoJob(job, route)

    node, inp = _selector(prompt, route["portrait"])
    job.upload(node, inp, _file(args.get("portrait"), "portrait", base, policy))
    out.arg_inputs[(node, inp)] = "portrait"
    if with_driving:
        node, inp = _selector(prompt, route["driving_video_input"])
        job.upload(node, inp, _file(driving, "driving_video", base, policy))
        out.arg_inputs[(node, inp)] = "driving_video"
    speech_node = find_node(prompt, route["speech_node"])
    if has_speech:
        job.upload(speech_node, route["speech_file_input"], _file(speech, "speech", base, policy))
        out.arg_inputs[(speech_node, route["speech_file_input"])] = "speech"
    else:
        backend, voice, row = parse_voice(args.get("voice"), table, object_info)
        splice_voice(prompt, speech_node, row, script, voice)
        out.voice = f"{backend}:{voice}"
        out.arg_inputs[(speech_node, row["text_input"])] = "script"
        out.arg_inputs[voice_input_of(row, speech_node)] = "voice"
    return out


def voice_choice_input(row: dict) -> tuple[str, str]:
    """(class type, input) whose choices are the back-end's voices: the voice node's own input, or a
    helper's (``voice_input`` written ``helper.input``)."""
    helper, _, inp = row["voice_input"].rpartition(".")
    if helper:
        return row["helpers"][helper]["class_type"], inp
    return row["node"], inp


def voice_input_of(row: dict, speech_node: str) -> tuple[str, str]:
    """(node id, input) that gets the voice name in the spliced prompt."""
    helper, _, inp = row["voice_input"].rpartition(".")
    return (f"{speech_node}_{helper}" if helper else speech_node), inp


def splice_voice(prompt: dict, speech_node: str, row: dict, text: str, voice: str) -> None:
    """Replace the speech-file node by the voice's node, keeping its id; links to its audio move to
    the voice node's AUDIO output. A back-end made of several nodes (CosyVoice 2: a model loader
    and a voice loader feeding the speaking node) lists them as ``helpers``: they are added under
    ids ``<speech node>_<name>``, and the voice node's inputs named in ``helper_links`` take their
    outputs."""
    old = prompt[speech_node]
    inputs = {**row.get("inputs", {}), row["text_input"]: text}
    for name, helper in (row.get("helpers") or {}).items():
        prompt[f"{speech_node}_{name}"] = {"class_type": helper["class_type"], "inputs": dict(helper.get("inputs", {}))}
    for inp, (helper, slot) in (row.get("helper_links") or {}).items():
        inputs[inp] = [f"{speech_node}_{helper}", int(slot)]
    node_id, inp = voice_input_of(row, speech_node)
    prompt[speech_node] = {
        "class_type": row["node"],
        "inputs": inputs,
        "_meta": {"title": (old.get("_meta") or {}).get("title", "speech")},
    }
    prompt[node_id]["inputs"][inp] = voice
    slot = int(row.get("audio_output", 0))
    for node in prompt.values():
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == speech_node and value[1] == 0:
                node["inputs"][name] = [speech_node, slot]


# -- design_avatar --------------------------------------------------------------------------------

def avatar_generators(table: dict, object_info: dict | None) -> dict[str, dict]:
    return {k: v for k, v in without_notes(table["avatar"]["generators"]).items() if installed(v, object_info)}


@dataclass
class AvatarJob:
    job: PreparedPrompt
    generator: str
    check_node: str
    portrait_node: str
    arg_inputs: dict[tuple[str, str], str] = field(default_factory=dict)


def _only(prompt: dict, class_type: str, what: str) -> str:
    ids = [k for k, v in prompt.items() if v.get("class_type") == class_type]
    if len(ids) != 1:
        raise UsageError(f"workflow: a portrait workflow needs exactly one {class_type} ({what}); this one has {len(ids)}")
    return ids[0]


def avatar_job(args: dict, *, table: dict, object_info: dict | None, policy: FilePolicy,
               seed: int | None = None) -> AvatarJob:
    """The prompt that designs one portrait from the prompt fields, and where its check and its
    saved picture are."""
    gens = avatar_generators(table, object_info)
    name = args.get("generator") or table["avatar"].get("default_generator")
    if args.get("workflow"):
        row = dict(gens.get(name) or {})
        prompt = load_workflow(args["workflow"], policy)
        workflow = str(args["workflow"])
    else:
        if name not in gens:
            raise UsageError(f"generator: '{name}' is not available on this ComfyUI; available: {', '.join(gens) or 'none'}")
        row = gens[name]
        prompt = load_workflow(row["workflow"])
        workflow = row["workflow"]
    job = PreparedPrompt(prompt, workflow=workflow)
    pp = _only(prompt, "DH_PortraitPrompt", "gets the description")
    check = _only(prompt, "DH_PortraitCheck", "checks the picture")
    checked = prompt[check]["inputs"].get("images")
    savers = [k for k, v in prompt.items() if v.get("class_type") == "SaveImage" and v["inputs"].get("images") == checked]
    if len(savers) != 1:
        raise UsageError("workflow: needs one SaveImage saving the picture the portrait check gets")
    out = AvatarJob(job, name or "", check, savers[0])
    for f in AVATAR_FIELDS:
        if args.get(f) is not None:
            job.set(pp, f, args[f])
            out.arg_inputs[(pp, f)] = f
    for f, choices_of in (("gender", "gender"), ("age_range", "age_range"), ("preset", "preset")):
        choices = node_choices(object_info, "DH_PortraitPrompt", choices_of)
        if args.get(f) is not None and choices is not None and args[f] not in choices:
            raise UsageError(f"{f}: '{args[f]}' is not one of {', '.join(map(str, choices))}")
    if row.get("seed_input"):
        try:
            node, inp = _selector(prompt, row["seed_input"])
        except UsageError:
            node = None
        if node is not None:
            job.set(node, inp, int(seed if seed is not None else random.randrange(1, 2**31)))
    if args.get("checkpoint"):
        if not row.get("checkpoint_input"):
            raise UsageError(f"checkpoint: the '{name}' generator takes no checkpoint")
        node, inp = _selector(prompt, row["checkpoint_input"])
        job.set(node, inp, args["checkpoint"])
        out.arg_inputs[(node, inp)] = "checkpoint"
    return out


def parse_check(text: str) -> tuple[bool, list[str]]:
    """Verdict and reasons from the portrait check's report (engine/avatar/portrait_check.py:
    first line ``PASS: ...`` or ``FAIL: reason; reason``)."""
    head = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    if head.startswith("PASS"):
        return True, []
    if head.startswith("FAIL:"):
        return False, [r.strip() for r in head[len("FAIL:"):].split(";") if r.strip()]
    raise ValueError(f"not a portrait check report: {head[:80]!r}")


# -- one-workflow tools -------------------------------------------------------------------------------

def workflow_tools(table: dict, object_info: dict | None) -> dict[str, dict]:
    """The table's extra tools whose nodes are all installed (never guessed without a server)."""
    if object_info is None:
        return {}
    return {k: v for k, v in without_notes(table.get("tools", {})).items() if installed(v, object_info)}


def tool_job(spec: dict, args: dict, *, policy: FilePolicy) -> tuple[PreparedPrompt, dict]:
    """The prompt of a one-workflow tool call, and which argument each set input came from."""
    known = spec.get("arguments", {})
    unknown = set(args) - set(known)
    if unknown:
        raise UsageError(f"unknown argument(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    prompt = load_workflow(spec["workflow"])
    job = PreparedPrompt(prompt, workflow=spec["workflow"])
    where: dict[tuple[str, str], str] = {}
    for name, a in known.items():
        if name not in args:
            if a.get("required"):
                raise UsageError(f"{name}: is required")
            if "default" not in a:
                continue
        value = args.get(name, a.get("default"))
        node, inp = _selector(prompt, a["set"])
        if a.get("type") == "file":
            job.upload(node, inp, _file(value, name, None, policy))
        else:
            job.set(node, inp, value)
        where[(node, inp)] = name
    return job, where
