"""Portrait prompt rendering from the template in ``data/portrait_prompt.json``.

Why a template: the later steps (LivePortrait, MuseTalk) need a frontal, neutral, well-lit
head-and-shoulders portrait on a clean background, so every generated prompt carries that
requirements list; wording lives in data so it can be tuned without code. Users add presets in
a JSON file of their own (``{"presets": {...}}``), merged over the built-in ones.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..data_files import read_json

log = logging.getLogger("DigitalHuman.avatar")

TEMPLATE_FILE = Path(__file__).resolve().parents[2] / "data" / "portrait_prompt.json"
PRESET_FIELDS = {"attire", "background", "requirements", "extra", "negative_extra", "style_phrase"}


@dataclass
class PortraitPrompt:
    """The rendered positive and negative prompt."""

    prompt: str
    negative: str


def load_template(path: str | Path | None = None, extra_preset_files: Iterable[str | Path] = ()) -> dict:
    """The template data with user presets merged in; a bad user file is an error naming it."""
    p = Path(path) if path else TEMPLATE_FILE
    data = copy.deepcopy(read_json(p, "portrait prompt template"))  # user presets are merged into it
    for extra in extra_preset_files:
        extra = Path(extra)
        if not extra.is_file():
            continue
        try:
            user = json.loads(extra.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"preset file {extra}: not valid JSON ({exc})") from None
        presets = user.get("presets") if isinstance(user, dict) else None
        if not isinstance(presets, dict):
            raise ValueError(f"preset file {extra}: expected an object {{\"presets\": {{\"name\": {{...}}}}}}")
        for name, preset in presets.items():
            _validate_preset(preset, f"preset file {extra}, preset '{name}'")
            data["presets"][name] = preset
    return data


def _validate_preset(preset: object, where: str) -> None:
    if not isinstance(preset, dict):
        raise ValueError(f"{where}: must be an object")
    unknown = set(preset) - PRESET_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(PRESET_FIELDS)}")
    if "requirements" in preset and not isinstance(preset["requirements"], dict):
        raise ValueError(f"{where}: 'requirements' must be an object of requirement name -> text")
    for k, v in preset.items():
        if k != "requirements" and not isinstance(v, str):
            raise ValueError(f"{where}: '{k}' must be a string")


def preset_names(template: dict) -> list[str]:
    """Preset names in file order (built-ins first, then user additions)."""
    return list(template["presets"])


def _choice(table: dict, key: str, what: str) -> str:
    if key not in table:
        raise ValueError(f"unknown {what} '{key}'; expected one of {list(table)}")
    return table[key]


def render_prompt(template: dict, *, description: str = "", gender: str = "unspecified", age_range: str = "unspecified",
                  attire: str = "", background: str = "", preset: str = "custom") -> PortraitPrompt:
    """Fill the template: inputs override the preset's attire/background; preset requirements override defaults."""
    pre = copy.deepcopy(_choice(template["presets"], preset, "preset"))
    noun = _choice(template["genders"], gender, "gender")
    age = _choice(template["age_ranges"], age_range, "age range")
    reqs = dict(template["requirements"])
    reqs.update(pre.get("requirements", {}))
    subject = f"a {noun}" + (f" {age}" if age else "")
    desc = " ".join((description or "").split()).rstrip(".")
    extra = pre.get("extra", "").strip().rstrip(".")
    values = {
        "style_phrase": pre.get("style_phrase") or template["style_phrase"],
        "subject": subject,
        "description": f", {desc}" if desc else "",
        "attire": (attire or "").strip().rstrip(".") or pre.get("attire", "simple plain clothes"),
        "extra": f" {extra[0].upper()}{extra[1:]}." if extra else "",
        "background": (background or "").strip().rstrip(".") or pre.get("background", "a plain studio backdrop"),
        "requirements": "; ".join(v for v in reqs.values() if v),
    }
    try:
        text = template["template"].format_map(values)
    except KeyError as exc:
        raise ValueError(f"portrait template: unknown placeholder {exc}; known: {sorted(values)}") from None
    negative = template["negative"]
    if pre.get("negative_extra"):
        negative = f"{negative}, {pre['negative_extra']}"
    return PortraitPrompt(" ".join(text.split()), negative)
