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
PLACEHOLDER_MODELS = {"CheckpointLoaderSimple": ("ckpt_name", "checkpoints"), "UNETLoader": ("unet_name", "diffusion_models"),
                      "CLIPLoader": ("clip_name", "text_encoders"), "VAELoader": ("vae_name", "vae"),
                      "AudioEncoderLoader": ("audio_encoder_name", "audio_encoders")}
# Core nodes newer than the 2024 ComfyUI these tests run on by default (LoadAudio): their /object_info
# entries as today's ComfyUI serves them, and which of our nodes stands in for them when validating.
RECORDED = json.loads((Path(__file__).parent / "data" / "core_nodes_recorded.json").read_text())


# Workflows built on core nodes of today's ComfyUI only (e.g. Wan 2.2 S2V): checked against the
# recorded schemas of all their core nodes, on any server; POSTed only where the server has them.
RECORDED_WORKFLOWS = RECORDED.get("workflows", {})


@pytest.fixture(scope="module")
def schemas(object_info) -> dict:
    """The live server's node schemas, plus the recorded core ones it lacks."""
    return {**{k: v for k, v in RECORDED["nodes"].items() if k not in object_info}, **object_info}


def schemas_for(path: Path, schemas: dict) -> dict:
    """``schemas`` with the recorded ones put first for a workflow made for today's ComfyUI."""
    names = RECORDED_WORKFLOWS.get(path.stem, {}).get("recorded_nodes", [])
    return {**schemas, **{k: RECORDED["nodes"][k] for k in names}}


def is_combo(kind) -> bool:
    """A list of choices: ``[[...], {...}]`` (classic nodes) or ``["COMBO", {"options": [...]}]`` (V3 schema)."""
    return isinstance(kind, list) or kind == "COMBO"


def combo_options(ispec: list) -> list:
    kind, opts = ispec[0], (ispec[1] if len(ispec) > 1 else {})
    return list(kind) if isinstance(kind, list) else list(opts.get("options", []))


def test_workflows_come_in_pairs():
    assert UI_FILES, "no workflows shipped"
    assert {p.stem for p in UI_FILES} == {p.stem for p in API_FILES}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_loads(path, schemas):
    schemas = schemas_for(path, schemas)
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
            assert is_combo(kind) or ltype in (kind, "*"), f"{path.name}: link {link_id} ({ltype}) into {dtype}.{name} ({kind})"
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
            if is_combo(kind) or (kind in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput")):
                names.append(name)
                if kind == "INT" and (name in ("seed", "noise_seed") or opts.get("control_after_generate")):
                    names.append("#control")
                if opts.get("image_upload"):
                    names.append("#upload")
    return names


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_equals_the_ui_graph(path, schemas):
    schemas = schemas_for(path, schemas)
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


def check_against_recorded(path: Path, prompt: dict, schemas: dict) -> None:
    """What ComfyUI's own validation checks, against the recorded schemas: every required input
    given, every link from an existing node's output of the right type, combos among their choices
    (model file names excepted: the user's folders decide), numbers within their ranges."""
    for node_id, node in prompt.items():
        spec = schemas[node["class_type"]]
        req, opt = spec["input"].get("required", {}), spec["input"].get("optional", {})
        missing = [k for k in req if k not in node["inputs"]]
        assert not missing, f"{path.name}: node {node_id} ({node['class_type']}) lacks {missing}"
        for name, value in node["inputs"].items():
            assert name in req or name in opt, f"{path.name}: node {node_id} has unknown input {name}"
            ispec = {**req, **opt}[name]
            kind, opts = ispec[0], (ispec[1] if len(ispec) > 1 else {})
            if isinstance(value, list):
                src = prompt[value[0]]
                out = schemas[src["class_type"]]["output"][value[1]]
                assert is_combo(kind) or out in (kind, "*"), f"{path.name}: {node_id}.{name} ({kind}) fed {out}"
            elif is_combo(kind):
                choices = combo_options(ispec)
                file_input = (node["class_type"] in PLACEHOLDER_MODELS and name == PLACEHOLDER_MODELS[node["class_type"]][0]
                              or (node["class_type"], name) == ("LoadImage", "image"))  # the user's folders decide
                if not file_input:
                    assert value in choices, f"{path.name}: {node_id}.{name}={value!r} not among {choices}"
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (path.name, node_id, name)
                assert opts.get("min", -float("inf")) <= value <= opts.get("max", float("inf")), (path.name, node_id, name, value)
            elif kind == "STRING":
                assert isinstance(value, str), (path.name, node_id, name)
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), (path.name, node_id, name)


@pytest.mark.parametrize("path", [p for p in API_FILES if p.stem in RECORDED_WORKFLOWS], ids=lambda p: p.stem)
def test_workflow_for_todays_comfyui_fits_the_recorded_schemas(path, schemas):
    check_against_recorded(path, json.loads(path.read_text()), schemas_for(path, schemas))


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_validates(path, comfy, object_info, testdata):
    """POST /prompt accepts each API workflow. A core node this server is too old for is checked
    against its recorded schema, then replaced by our node of the same output for validation."""
    prompt = json.loads(path.read_text())
    # names, not paths built from every string input: a prompt text can be longer than a file name may be
    media = {p.name for p in testdata.iterdir() if p.is_file()}
    missing = sorted({n["class_type"] for n in prompt.values()} - set(object_info))
    if path.stem in RECORDED_WORKFLOWS and missing:
        pytest.skip(f"{path.name} needs {RECORDED_WORKFLOWS[path.stem]['needs']}; this ComfyUI lacks {', '.join(missing)} "
                    "(its graph is checked against the recorded schemas by "
                    "test_workflow_for_todays_comfyui_fits_the_recorded_schemas)")
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
            elif isinstance(value, str) and value in media:  # a test file the workflow names: upload it
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
