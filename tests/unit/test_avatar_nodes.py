"""Step 1 node classes run against the real ComfyUI modules and the fake OpenAI server."""
from __future__ import annotations

import functools
import json
import logging
import re

import numpy as np
import pytest
import torch

from fakeopenai import FakeOpenAI, fake_key, gen_color

KEY = fake_key("nodetest")
SECRET_NAME = re.compile(r"key|token|secret|auth|password|credential", re.I)


@pytest.fixture()
def comfy_stub(comfy_env):
    """The real ComfyUI modules: folders in tmp, progress recorded, Cancel on demand."""
    return {"user_dir": comfy_env.dirs["user"], "env": comfy_env,
            "Interrupted": comfy_env.modules.mm.InterruptProcessingException}


@pytest.fixture()
def nodes(comfy_stub):
    from comfyui_digitalhuman.nodes import avatar

    return avatar


def test_node_declarations(nodes):
    assert set(nodes.NODE_CLASS_MAPPINGS) == {"DH_PortraitPrompt", "DH_OpenAIImage", "DH_PortraitCheck", "DH_CostSum"}
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "DigitalHuman/1 Avatar" and cls.DESCRIPTION, node_id
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (typ, *opts) in section.items():
                assert opts and opts[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert not SECRET_NAME.search(name), f"{node_id}.{name} looks like a secret input"


def test_openai_node_has_no_key_widget(nodes):
    spec = nodes.DH_OpenAIImage.INPUT_TYPES()
    names = [n for section in spec.values() for n in section]
    assert names == ["prompt", "model", "size", "quality", "background", "count", "run_id", "reference"]
    defaults = [o[1].get("default") for s in spec.values() for o in s.values() if len(o) > 1]
    assert not any(isinstance(d, str) and d.startswith("sk-") for d in defaults)


def test_portrait_prompt_node_with_user_presets(nodes, comfy_stub):
    folder = comfy_stub["user_dir"] / "digitalhuman"
    folder.mkdir(parents=True)
    (folder / "portrait_presets.json").write_text(json.dumps({"presets": {"news anchor": {"attire": "a navy blazer"}}}))
    spec = nodes.DH_PortraitPrompt.INPUT_TYPES()["required"]
    assert "news anchor" in spec["preset"][0] and "teacher" in spec["preset"][0]
    prompt, negative = nodes.DH_PortraitPrompt().render("freckles", "man", "senior (60+)", "news anchor", "", "")
    assert prompt.startswith("A photorealistic studio head-and-shoulders portrait photograph of a man aged over 60, freckles.")
    assert "navy blazer" in prompt and "profile view" in negative


def test_broken_user_presets_do_not_break_the_node_list(nodes, comfy_stub, caplog):
    folder = comfy_stub["user_dir"] / "digitalhuman"
    folder.mkdir(parents=True)
    (folder / "portrait_presets.json").write_text("{broken")
    spec = nodes.DH_PortraitPrompt.INPUT_TYPES()["required"]
    assert "teacher" in spec["preset"][0]
    assert any("user presets ignored" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="portrait_presets.json: not valid JSON"):
        nodes.DH_PortraitPrompt().render("", "unspecified", "unspecified", "teacher", "", "")


@pytest.fixture()
def server(monkeypatch):
    with FakeOpenAI(api_key=KEY) as s:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        yield s


def test_openai_node_generates_image_batch(nodes, server, caplog, comfy_stub):
    caplog.set_level(logging.DEBUG)
    images, cost = nodes.DH_OpenAIImage().generate("a portrait", "gpt-image-1", "1024x1536", "low", "opaque", 2, 7)
    assert images.shape == (2, 96, 64, 3) and images.dtype == torch.float32
    for i in range(2):
        assert torch.allclose(images[i, 0, 0], torch.tensor(gen_color(i), dtype=torch.float32) / 255)
    assert cost == pytest.approx(2 * 0.016)
    assert server.requests[0].json["n"] == 2 and "run_id" not in server.requests[0].json
    assert comfy_stub["env"].progress[-1][0] == 1
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_openai_node_edit_with_reference(nodes, server):
    ref = torch.zeros(1, 32, 48, 3)
    ref[:, :, :24, 0] = 1.0
    images, _ = nodes.DH_OpenAIImage().generate("formal", "gpt-image-1", "1024x1024", "medium", "auto", 1, 0, reference=ref)
    assert server.requests[0].path == "/v1/images/edits"
    assert images.shape == (1, 32, 48, 3)
    assert images[0, 0, -1, 0] == 1.0 and images[0, 0, 0, 0] == 0.0  # the fake mirrors the upload


def test_openai_node_error_is_the_apis_message(nodes, server):
    from comfyui_digitalhuman.providers.http import ApiError

    with pytest.raises(ApiError, match="The model 'dall-e-2' does not exist"):
        nodes.DH_OpenAIImage().generate("p", "dall-e-2", "1024x1024", "low", "auto", 1, 0)


def test_openai_node_honours_interrupt_while_waiting(nodes, server, comfy_stub):
    import threading
    import time

    server.script = [("hang", 3.0)]
    threading.Timer(0.3, comfy_stub["env"].interrupt).start()
    t0 = time.monotonic()
    with pytest.raises(comfy_stub["Interrupted"]):
        nodes.DH_OpenAIImage().generate("p", "gpt-image-1", "1024x1024", "low", "auto", 1, 0)
    assert time.monotonic() - t0 < 2.0


def test_openai_node_missing_key_says_where(nodes, monkeypatch, comfy_stub):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    from comfyui_digitalhuman.providers.keys import MissingKeyError

    with pytest.raises(MissingKeyError) as ei:
        nodes.DH_OpenAIImage().generate("p", "gpt-image-1", "1024x1024", "low", "auto", 1, 0)
    assert str(comfy_stub["user_dir"] / "digitalhuman" / "keys.json") in str(ei.value)


@pytest.mark.parametrize("slip", ["\n", "\u200b"], ids=["newline", "zero-width-space"])
def test_openai_node_key_file_with_a_slip_names_the_file(nodes, comfy_stub, monkeypatch, caplog, slip):
    """The key file in ComfyUI's user folder, read by the node itself: the error names the file, not the key."""
    from comfyui_digitalhuman.providers.keys import InvalidKeyError

    bad = KEY[:12] + slip + KEY[12:]
    with FakeOpenAI(api_key=KEY) as s:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        path = comfy_stub["user_dir"] / "digitalhuman" / "keys.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"OPENAI_API_KEY": bad}))
        caplog.set_level(logging.DEBUG)
        with pytest.raises(InvalidKeyError) as ei:
            nodes.DH_OpenAIImage().generate("p", "gpt-image-1", "1024x1024", "low", "auto", 1, 0)
        assert s.requests == []
    text = str(ei.value) + repr(ei.value.args) + caplog.text
    assert str(path) in str(ei.value)
    assert not [bad[i:i + 8] for i in range(len(bad) - 7) if bad[i:i + 8] in text]


def test_portrait_check_node_batch(nodes, monkeypatch):
    from types import SimpleNamespace

    from test_avatar_portrait_check import GOOD_BOX, make_face, portrait

    good = portrait()
    blank = np.full_like(good, 200)

    class Analyzer:
        def detect(self, image):
            return [make_face(GOOD_BOX)] if image.std() > 0 else []

    def cropper(image, lmk, dsize=512):
        return SimpleNamespace(crop=np.full((dsize, dsize, 3), 9, np.uint8))

    monkeypatch.setattr("comfyui_digitalhuman.model_loaders.face.load_face_analyzer", lambda: Analyzer())
    monkeypatch.setattr(nodes, "check_portrait", functools.partial(nodes.check_portrait, cropper=cropper))
    batch = torch.from_numpy(np.stack([good, blank])).float() / 255
    out = nodes.DH_PortraitCheck().check(batch, 256)
    passed, report, crops = out["result"]
    assert passed is False
    assert report.startswith("image 0: PASS") and "image 1: FAIL: no face found" in report
    assert out["ui"]["text"] == [report]
    assert crops.shape == (2, 256, 256, 3)
    assert torch.allclose(crops[0], torch.full((256, 256, 3), 9 / 255))
    assert torch.allclose(crops[1], torch.full((256, 256, 3), 200 / 255))  # centre square of the input
    passed, report, _ = nodes.DH_PortraitCheck().check(batch[:1], 512)["result"]
    assert passed is True and report.startswith("PASS")


def test_cost_sum_node(nodes):
    out = nodes.DH_CostSum().total("heygen_streaming_minute: 10\n# comment\nopen_source_step: 2", cost_1=0.04, cost_3=0.042)
    total, breakdown = out["result"]
    assert total == pytest.approx(0.04 + 0.042 + 0.5)
    lines = breakdown.splitlines()
    assert lines[0] == "cost_1: $0.040" and lines[1] == "cost_3: $0.042"
    assert lines[2] == "heygen_streaming_minute: 10 minute(s) x $0.050 = $0.500"
    assert lines[-1] == "total: $0.582 (estimate)"
    with pytest.raises(ValueError, match="line 1 'heygen: 3': unknown item 'heygen'"):
        nodes.DH_CostSum().total("heygen: 3")
    with pytest.raises(ValueError, match="quantity 'ten' is not a number"):
        nodes.DH_CostSum().total("heygen_streaming_minute: ten")
    assert nodes.DH_CostSum().total("")["result"][0] == 0.0
