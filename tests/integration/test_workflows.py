"""Every shipped workflow loads on a real ComfyUI: node types exist, links agree, the API twin validates."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from comfy_helpers import upload

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
# Model files the shipped workflows name, by the ComfyUI folder they are listed from.
PLACEHOLDER_MODELS = {"CheckpointLoaderSimple": ("ckpt_name", "checkpoints")}
# Core nodes newer than the 2024 ComfyUI these tests run on by default (LoadAudio): their /object_info
# entries as today's ComfyUI serves them, and which of our nodes stands in for them when validating.
RECORDED = json.loads((Path(__file__).parent / "data" / "core_nodes_recorded.json").read_text())


@pytest.fixture(scope="module")
def schemas(object_info) -> dict:
    """The live server's node schemas, plus the recorded core ones it lacks."""
    return {**{k: v for k, v in RECORDED["nodes"].items() if k not in object_info}, **object_info}


def test_workflows_come_in_pairs():
    assert UI_FILES, "no workflows shipped"
    assert {p.stem for p in UI_FILES} == {p.stem for p in API_FILES}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_loads(path, schemas):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    for n in nodes.values():
        if n["type"] not in FRONTEND_ONLY:
            assert n["type"] in schemas, f"{path.name}: node {n['id']} has unknown type {n['type']} (a red node)"
    for link in wf["links"]:
        link_id, src, src_slot, dst, dst_slot, ltype = link[:6]
        assert src in nodes and dst in nodes, f"{path.name}: link {link_id} joins missing nodes"
        assert link_id in (nodes[src]["outputs"][src_slot].get("links") or []), f"{path.name}: link {link_id} not on its source"
        assert nodes[dst]["inputs"][dst_slot].get("link") == link_id, f"{path.name}: link {link_id} not on its target"
        stype = nodes[src]["type"]
        if stype not in FRONTEND_ONLY:
            assert schemas[stype]["output"][src_slot] == ltype or ltype == "*", (path.name, link)
        dtype = nodes[dst]["type"]
        if dtype not in FRONTEND_ONLY:
            spec = {**schemas[dtype]["input"].get("required", {}), **schemas[dtype]["input"].get("optional", {})}
            name = nodes[dst]["inputs"][dst_slot]["name"]
            assert name in spec, f"{path.name}: link {link_id} into unknown input {dtype}.{name}"
            kind = spec[name][0]
            assert isinstance(kind, list) or ltype in (kind, "*"), f"{path.name}: link {link_id} ({ltype}) into {dtype}.{name} ({kind})"
    for n in nodes.values():
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                assert any(l[0] == inp["link"] for l in wf["links"]), f"{path.name}: node {n['id']} input {inp['name']} names a missing link"
    assert wf["last_link_id"] >= max((l[0] for l in wf["links"]), default=0)
    assert wf["last_node_id"] >= max(nodes)


def widget_names(spec: dict) -> list[str]:
    """The widget values the frontend saves for a node, in order (``#control`` after seed-like INTs,
    ``#upload`` after an image-upload combo)."""
    names = []
    for section in ("required", "optional"):
        for name, ispec in spec["input"].get(section, {}).items():
            kind, opts = ispec[0], (ispec[1] if len(ispec) > 1 else {})
            if isinstance(kind, list) or (kind in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput")):
                names.append(name)
                if kind == "INT" and (name in ("seed", "noise_seed") or opts.get("control_after_generate")):
                    names.append("#control")
                if opts.get("image_upload"):
                    names.append("#upload")
    return names


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_equals_the_ui_graph(path, schemas):
    ui = json.loads(path.read_text())
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    nodes = [n for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY]
    assert sorted(api) == sorted(str(n["id"]) for n in nodes), f"{path.name}: node ids differ from the API twin"
    links = {l[0]: l for l in ui["links"]}
    for n in nodes:
        a = api[str(n["id"])]
        assert a["class_type"] == n["type"], (path.name, n["id"])
        names = widget_names(schemas[n["type"]])
        assert len(n["widgets_values"]) == len(names), f"{path.name}: node {n['id']} ({n['type']}) widget values"
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        for name, value in zip(names, n["widgets_values"]):
            if name.startswith("#") or name in linked:
                continue
            assert a["inputs"].get(name) == value, f"{path.name}: node {n['id']}.{name}: UI {value!r} vs API {a['inputs'].get(name)!r}"
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                _, src, slot, *_ = links[inp["link"]]
                assert a["inputs"][inp["name"]] == [str(src), slot], (path.name, n["id"], inp["name"])


@pytest.mark.parametrize("path", UI_FILES + API_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_secret_in_workflows(path):
    from comfyui_digitalhuman.providers.http import redact

    text = path.read_text()
    assert redact(text) == text, f"{path.name} holds something key-like"
    assert "sk-" not in text and "Bearer" not in text


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_validates(path, comfy, object_info, testdata):
    """POST /prompt accepts each API workflow. A core node this server is too old for is checked
    against its recorded schema, then replaced by our node of the same output for validation."""
    prompt = json.loads(path.read_text())
    for node_id, node in prompt.items():
        ctype = node["class_type"]
        if ctype not in object_info and ctype in RECORDED["nodes"]:
            rec, stand_in = RECORDED["nodes"][ctype], RECORDED["stand_in"][ctype]
            assert set(rec["input"]["required"]) <= set(node["inputs"]), f"{path.name}: node {node_id} lacks inputs"
            assert object_info[stand_in["class_type"]]["output"] == rec["output"]
            prompt[node_id] = {"class_type": stand_in["class_type"], "inputs": {**node["inputs"], **stand_in["inputs"]}}
    for node_id, node in prompt.items():
        ctype = node["class_type"]
        assert ctype in object_info, f"{path.name}: node {node_id} has unknown type {ctype}"
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert value[0] in prompt, f"{path.name}: node {node_id}.{name} links to missing node {value[0]}"
            elif isinstance(value, str) and (testdata / value).is_file():
                assert upload(comfy, testdata / value) == value
        if ctype in PLACEHOLDER_MODELS:
            key, folder = PLACEHOLDER_MODELS[ctype]
            f = comfy.workdir / "models" / folder / node["inputs"][key]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.touch()
    req = urllib.request.Request(f"{comfy.url}/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        from comfy_client import format_rejection

        pytest.fail(f"{path.name}: {format_rejection(json.loads(e.read()))}")
    assert "prompt_id" in body
    # Validation is what we test here; do not spend CI time running it.
    for endpoint, payload in (("queue", {"delete": [body["prompt_id"]]}), ("interrupt", {})):
        urllib.request.urlopen(urllib.request.Request(f"{comfy.url}/{endpoint}", data=json.dumps(payload).encode(),
                                                      headers={"Content-Type": "application/json"}), timeout=30).read()
