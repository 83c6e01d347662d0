"""Portrait prompt rendering from the data template, presets and user preset files."""
from __future__ import annotations

import json

import pytest

from comfyui_digitalhuman.engine.avatar import prompt as pp

REQUIRED_WORDS = ["front-facing", "neutral", "looking straight into the camera", "head-and-shoulders",
                  "studio lighting", "clean uncluttered background", "photorealistic"]


@pytest.fixture(scope="module")
def tpl():
    return pp.load_template()


def test_builtin_presets(tpl):
    names = pp.preset_names(tpl)
    for want in ("enterprise spokesperson", "teacher", "virtual streamer (anime)", "virtual streamer (3D)", "customer service", "custom"):
        assert want in names


def test_default_prompt_has_requirements_and_inputs(tpl):
    out = pp.render_prompt(tpl, description="short black hair, round glasses.", gender="woman",
                           age_range="adult (25-40)", attire="a green sweater", background="a white wall", preset="custom")
    p = out.prompt
    for w in REQUIRED_WORDS:
        assert w in p, w
    assert "a woman aged 25 to 40, short black hair, round glasses." in p
    assert "Wearing a green sweater." in p and "Background: a white wall." in p
    assert "{" not in p and "  " not in p
    assert "multiple people" in out.negative and "profile view" in out.negative


def test_preset_defaults_and_overrides(tpl):
    spk = pp.render_prompt(tpl, preset="enterprise spokesperson")
    assert "business suit" in spk.prompt and "a person" in spk.prompt
    assert "photorealistic" in spk.prompt
    teacher = pp.render_prompt(tpl, preset="teacher")
    assert "smile" in teacher.prompt and "neutral relaxed expression" not in teacher.prompt
    anime = pp.render_prompt(tpl, preset="virtual streamer (anime)")
    assert anime.prompt.startswith("An anime-style") and "photorealistic" not in anime.prompt
    assert anime.negative.endswith("photorealistic photo, 3d render")
    cs = pp.render_prompt(tpl, preset="customer service", attire="a red polo shirt")
    assert "Wearing a red polo shirt." in cs.prompt and "friendly" in cs.prompt


def test_unknown_choices_are_named(tpl):
    with pytest.raises(ValueError, match="unknown preset 'pirate'.*teacher"):
        pp.render_prompt(tpl, preset="pirate")
    with pytest.raises(ValueError, match="unknown gender"):
        pp.render_prompt(tpl, gender="robot")


def test_user_presets_merge_and_validate(tmp_path):
    f = tmp_path / "portrait_presets.json"
    f.write_text(json.dumps({"presets": {"news anchor": {"attire": "a navy blazer", "extra": "broadcast look",
                                                         "requirements": {"light": "bright broadcast lighting"}},
                                         "teacher": {"attire": "a lab coat"}}}))
    t = pp.load_template(extra_preset_files=[f, tmp_path / "missing.json"])
    assert pp.preset_names(t)[-1] == "news anchor"
    out = pp.render_prompt(t, preset="news anchor")
    assert "navy blazer" in out.prompt and "Broadcast look." in out.prompt and "bright broadcast lighting" in out.prompt
    assert "studio lighting" not in out.prompt
    assert "lab coat" in pp.render_prompt(t, preset="teacher").prompt
    f.write_text(json.dumps({"presets": {"x": {"colour": "red"}}}))
    with pytest.raises(ValueError, match=r"portrait_presets.json, preset 'x': unknown field\(s\) \['colour'\]"):
        pp.load_template(extra_preset_files=[f])
    f.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        pp.load_template(extra_preset_files=[f])
