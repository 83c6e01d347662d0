"""The MCP tools' names, descriptions and input schemas, built from the tool table and the target
ComfyUI's ``/object_info`` (so enums list what that server can really do).

Every schema closes its object (``additionalProperties: false``): an argument the tool does not take
is an error the agent sees, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..client import recipes


@dataclass
class ToolDef:
    name: str
    title: str
    description: str
    schema: dict
    read_only: bool = False
    long_running: bool = True


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or [], "additionalProperties": False}


def _enum_or_text(choices: list | None, description: str, default: Any = None) -> dict:
    s: dict[str, Any] = {"type": "string", "description": description}
    if choices:
        s["enum"] = [str(c) for c in choices]
    if default is not None:
        s["default"] = default
    return s


def build_tools(table: dict, object_info: dict | None) -> list[ToolDef]:
    """The tools this server offers for ``object_info`` (None: the server is not reachable yet)."""
    lo, hi = table["limits"]["script_chars"]
    tools: list[ToolDef] = []

    gens = recipes.avatar_generators(table, object_info)
    if gens:
        pp = lambda inp: recipes.node_choices(object_info, "DH_PortraitPrompt", inp)  # noqa: E731
        gen_text = "; ".join(f"{k}: {v['description']}" for k, v in gens.items())
        tools.append(ToolDef("design_avatar", "Design an avatar portrait", (
            "Make a portrait for a digital human from a short description, then run the pack's portrait check on it. "
            "Fill in the five fields of the portrait prompt (description, gender, age range, attire, background) and "
            "a use-case preset; the prompt adds what animation needs (front-facing, neutral mouth, head and "
            "shoulders, studio light, plain background). Returns the saved portrait's path (pass it to make_video "
            "as 'portrait'), a preview image, and the check's verdict: passed true/false with reasons. On a FAIL, "
            "call again (each call makes a new picture) or change the fields the reasons point at. "
            f"Generators: {gen_text}."),
            _obj({
                "description": {"type": "string", "maxLength": 2000,
                                "description": "The character in your words: hair, face, look, personality, e.g. "
                                               "'a 30-year-old businessman with short dark hair'."},
                "gender": _enum_or_text(pp("gender"), "Gender of the character; 'unspecified' leaves it to the model."),
                "age_range": _enum_or_text(pp("age_range"), "Apparent age of the character."),
                "preset": _enum_or_text(pp("preset"), "Use case: sets default attire, background, expression and style."),
                "attire": {"type": "string", "maxLength": 500, "description": "Clothing, e.g. 'a navy suit'; empty uses the preset's."},
                "background": {"type": "string", "maxLength": 500, "description": "Background; empty uses the preset's plain backdrop (plain animates best)."},
                "generator": {"type": "string", "enum": list(gens), "default": table["avatar"].get("default_generator"),
                              "description": "Which image generator makes the picture."},
                "checkpoint": {"type": "string", "description": "FLUX checkpoint file name in ComfyUI's models/checkpoints (generator 'flux' only)."},
                "workflow": {"type": "string", "description": "Optional path of your own API-format portrait workflow (one "
                                                             "DH_PortraitPrompt, one DH_PortraitCheck, a SaveImage of the checked image)."},
                "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1,
                         "description": "Seed of the picture; leave it out for a new picture every call."},
            })))

    quals = recipes.qualities(table, object_info)
    if quals:
        voices = recipes.voice_backends(table, object_info)
        default_backend = table["video"].get("default_voice_backend")
        qual_text = "; ".join(f"{q}: {table['video']['qualities'].get(q, q)}" for q in quals)
        tools.append(ToolDef("make_video", "Make a talking-head video", (
            "Make a digital-human video: a portrait speaks a script (or a speech file), lip-synced, as an MP4 with its "
            "sound. This is the whole job of a one-sentence request such as 'a video of a 30-year-old businessman in a "
            "suit saying this script': design_avatar first when there is no portrait yet. Give 'script' (text, "
            f"{lo:,}-{hi:,} characters, spoken by 'voice') or 'speech' (a speech file), not both. With "
            "'driving_video' the head and face also move like the person in that video (LivePortrait). Runs on the "
            "user's own ComfyUI; long videos take minutes and report progress. Returns the MP4's path, its duration "
            f"and frames, and the estimated cost. Qualities: {qual_text}."),
            _obj({
                "portrait": {"type": "string", "description": "Path of the portrait image (front-facing, head and shoulders), "
                                                             "e.g. the 'portrait' returned by design_avatar."},
                "script": {"type": "string", "minLength": lo, "maxLength": hi,
                           "description": "The text the avatar speaks (line breaks are paragraph pauses)."},
                "speech": {"type": "string", "description": "Path of a speech file (wav, mp3, flac, m4a, ogg) instead of a script."},
                "voice": {"type": "string", "description": (
                    "Voice for the script, as list_voices gives it ('backend:name', e.g. "
                    f"'{default_backend}:{(voices.get(default_backend) or {}).get('default_voice', '')}'); a bare name "
                    f"uses the '{default_backend}' back-end; empty: its default voice. Back-ends here: "
                    + (", ".join(f"{k} ({v['description']})" for k, v in voices.items()) or "none installed") + ".")},
                "driving_video": {"type": "string", "description": "Optional path of a video of a person talking whose head "
                                                                  "motion and expressions the portrait copies."},
                "quality": {"type": "string", "enum": quals, "default": table["video"].get("default_quality"),
                            "description": "Lip-sync engine."},
            }, ["portrait"])))

    tools.append(ToolDef("list_workflows", "List the shipped workflows", (
        "List the workflows run_workflow can run: each with what it does and the inputs an override can set, as "
        "NODE.INPUT keys with their current values (file inputs take a local path, which is uploaded)."),
        _obj({}), read_only=True, long_running=False))
    tools.append(ToolDef("run_workflow", "Run a workflow", (
        "Run one workflow on ComfyUI (a shipped one by name, see list_workflows, or the path of an API-format JSON) "
        "with named overrides, as scripts/run.sh takes them: {'portrait.image': 'me.jpg', 'save.preset': 'fast'}. A "
        "value naming a local file is uploaded first. Returns the output files (downloaded), the nodes' reports and "
        "the estimated cost. A workflow ComfyUI rejects comes back naming the node and input at fault."),
        _obj({
            "workflow": {"type": "string", "description": "A shipped workflow name (talking_head, digital_human, ...) or a path."},
            "set": {"type": "object", "description": "Overrides: NODE.INPUT -> value (NODE: node id, title or class type).",
                    "additionalProperties": {"type": ["string", "number", "integer", "boolean"]}},
            "include_previews": {"type": "boolean", "default": False, "description": "Also download preview (temp) files."},
        }, ["workflow"])))

    if voices_available := recipes.voice_backends(table, object_info):
        tools.append(ToolDef("list_voices", "List the voices", (
            "List the voices make_video can speak a script with, as ids for its 'voice' argument ('backend:name'), "
            "with the back-ends installed on this ComfyUI: " + ", ".join(voices_available) + "."),
            _obj({"backend": {"type": "string", "enum": list(voices_available), "description": "Only this back-end."}}),
            read_only=True, long_running=False))

    tools.append(ToolDef("run_batch", "Run a batch of jobs", (
        "Run a CSV or JSONL file of jobs (one per row: a workflow with NODE.INPUT columns, or a video with portrait, "
        "script or speech, voice, driving_video, quality columns) over one or more ComfyUI servers. Resumable: a "
        "manifest beside the outputs records each job, so running the same batch again skips finished jobs. A failed "
        "row never stops the others. Returns a summary: done, failed with reasons, time and cost per job."),
        _obj({
            "batch": {"type": "string", "description": "Path of the .csv or .jsonl file; paths in it are relative to it."},
            "servers": {"type": "array", "items": {"type": "string", "pattern": "^https?://"}, "minItems": 1, "maxItems": 32,
                        "description": "ComfyUI addresses to spread the jobs over (default: this server's ComfyUI)."},
            "out": {"type": "string", "description": "Output folder (default: a folder named after the batch under the server's output folder)."},
            "queue_depth": {"type": "integer", "minimum": 1, "maximum": 8, "default": 2,
                            "description": "Jobs kept queued on each server."},
        }, ["batch"])))

    for name, spec in recipes.workflow_tools(table, object_info).items():
        tools.append(ToolDef(name, spec.get("title", name), spec["description"], _arguments(spec, object_info)))
    tools += _live_tools(table, object_info)
    return tools


def _arguments(spec: dict, object_info: dict | None) -> dict:
    """The schema of a table row's ``arguments`` (choices read from the server where the row says so)."""
    props, required = {}, []
    for arg, a in spec.get("arguments", {}).items():
        s = {"type": "string" if a.get("type") == "file" else a.get("type", "string"),
             "description": a.get("description", "") + (" (a local file path)" if a.get("type") == "file" else "")}
        for k in ("enum", "default", "minimum", "maximum", "maxLength"):
            if k in a:
                s[k] = a[k]
        if a.get("choices_of"):
            choices = recipes.node_choices(object_info, *a["choices_of"].split(".", 1))
            if choices:
                s["enum"] = [str(c) for c in choices]
        props[arg] = s
        if a.get("required"):
            required.append(arg)
    return _obj(props, required)


def _live_tools(table: dict, object_info: dict | None) -> list[ToolDef]:
    """live_start / live_say / live_stop, when the target ComfyUI has the nodes (never guessed without one)."""
    live = table.get("live")
    if not live or object_info is None or not recipes.installed(live, object_info):
        return []
    out: list[ToolDef] = []
    start = live["start"]
    if recipes.installed(start, object_info):
        out.append(ToolDef("live_start", "Start a live digital human", start["description"],
                           _arguments(start, object_info), long_running=True))
    session = {"type": "string", "minLength": 1, "maxLength": 200,
               "description": "The session's name (as given to live_start) or id (as live_start returned it)."}
    out.append(ToolDef("live_say", "Make a live digital human speak", (
        "Make an open live session speak: 'repeat' says the text as it is; 'chat' sends it to the session's chat "
        "model and speaks the answer as it streams in. A new message interrupts the one being said. With wait "
        "(default) the call returns once the avatar has said it, with what it said and the latencies (send to "
        "first audio, to first speaking frame); without, at once with the turn number. Works on every session the "
        "live panel shows, the pack's own and providers' streaming avatars."),
        _obj({"session": session,
              "text": {"type": "string", "minLength": 1, "maxLength": 20000, "description": "What to say, or the user's message in chat mode."},
              "mode": {"type": "string", "enum": ["repeat", "chat"], "default": "repeat", "description": "repeat or chat."},
              "wait": {"type": "boolean", "default": True, "description": "Wait until the avatar has said it."},
              "wait_s": {"type": "number", "minimum": 1, "maximum": 600, "default": live.get("say_wait_s", 120),
                         "description": "At most this many seconds of waiting."}},
             ["session", "text"]), long_running=True))
    out.append(ToolDef("live_stop", "Stop a live digital human", (
        "Close an open live session (a provider's session stops billing). Returns the reason, the final cost for "
        "providers' sessions and, when the session recorded, the MP4's path on the machine ComfyUI runs on."),
        _obj({"session": session}, ["session"]), long_running=False))
    return out
