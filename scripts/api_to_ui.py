#!/usr/bin/env python3
"""Make the UI-format twin (what the ComfyUI frontend loads and saves) of an API-format workflow.

    python scripts/api_to_ui.py workflows/api/talking_head.json -o workflows/talking_head.json

Node inputs, outputs and widget order come from a live server's ``/object_info`` (``--server``,
or a ComfyUI started for the purpose), so the file matches what the frontend builds. Nodes are
laid out left to right by their depth in the graph. Optional ``--note`` adds a Note node.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_server import ComfyServer, server_alive  # noqa: E402

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_NAMES = {"seed", "noise_seed"}


def is_widget(spec: list) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    # a list of choices is a combo widget; today's ComfyUI also writes it as ["COMBO", {"options": [...]}]
    return isinstance(kind, list) or kind == "COMBO" or (kind in WIDGET_TYPES and not opts.get("forceInput"))


def depth_of(prompt: dict) -> dict[str, int]:
    memo: dict[str, int] = {}

    def depth(nid: str) -> int:
        if nid not in memo:
            ups = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            memo[nid] = 1 + max((depth(u) for u in ups), default=-1)
        return memo[nid]

    for nid in prompt:
        depth(nid)
    return memo


def convert(prompt: dict, info: dict, note: str | None = None) -> dict:
    ids = {nid: i + 1 for i, nid in enumerate(sorted(prompt, key=lambda k: (len(k), k)))}
    depth = depth_of(prompt)
    rows: dict[int, int] = {}
    nodes, links = [], []
    link_id = 0
    link_of: dict[tuple[str, str], int] = {}
    for nid, node in prompt.items():
        for name, v in node["inputs"].items():
            if isinstance(v, list):
                link_id += 1
                link_of[(nid, name)] = link_id
    by_source: dict[tuple[str, int], list[int]] = {}
    for (nid, name), lid in link_of.items():
        src, slot = prompt[nid]["inputs"][name]
        by_source.setdefault((str(src), int(slot)), []).append(lid)
    for nid, node in prompt.items():
        ctype = node["class_type"]
        if ctype not in info:
            raise KeyError(f"node {nid}: type {ctype} is not known to the server")
        spec = info[ctype]
        inputs, widgets = [], []
        for section in ("required", "optional"):
            for name, ispec in spec["input"].get(section, {}).items():
                value = node["inputs"].get(name)
                linked = isinstance(value, list)
                if is_widget(ispec):
                    opts = ispec[1] if len(ispec) > 1 else {}
                    default = opts.get("default", ispec[0][0] if isinstance(ispec[0], list) and ispec[0] else None)
                    widgets.append(default if (linked or value is None) else value)
                    if ispec[0] == "INT" and (name in SEED_NAMES or opts.get("control_after_generate")):
                        widgets.append("fixed")
                    if opts.get("image_upload"):
                        widgets.append("image")
                    if linked:
                        inputs.append({"name": name, "type": ispec[0] if isinstance(ispec[0], str) else "COMBO",
                                       "link": link_of[(nid, name)], "widget": {"name": name}})
                elif linked or section == "required":
                    inputs.append({"name": name, "type": ispec[0], "link": link_of.get((nid, name))})
                elif section == "optional":
                    inputs.append({"name": name, "type": ispec[0], "link": None})
        outputs = []
        for slot, (otype, oname) in enumerate(zip(spec["output"], spec.get("output_name", spec["output"]))):
            outputs.append({"name": oname, "type": otype, "links": by_source.get((nid, slot), []), "slot_index": slot})
        col = depth[nid]
        row = rows.get(col, 0)
        height = 60 + 26 * (len(widgets) + max(len(inputs), len(outputs)))
        rows[col] = row + height + 40
        nodes.append({
            "id": ids[nid], "type": ctype, "pos": [40 + 380 * col, 40 + row], "size": [340, height],
            "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": ctype}, "widgets_values": widgets,
            **({"title": node["_meta"]["title"]} if (node.get("_meta") or {}).get("title") else {}),
        })
    for (nid, name), lid in sorted(link_of.items(), key=lambda kv: kv[1]):
        src, slot = prompt[nid]["inputs"][name]
        dst_inputs = next(n for n in nodes if n["id"] == ids[nid])["inputs"]
        dst_slot = next(i for i, inp in enumerate(dst_inputs) if inp["name"] == name)
        ltype = info[prompt[str(src)]["class_type"]]["output"][int(slot)]
        links.append([lid, ids[str(src)], int(slot), ids[nid], dst_slot, ltype])
    order = sorted(prompt, key=lambda k: depth[k])
    for n in nodes:
        n["order"] = next(i for i, k in enumerate(order) if ids[k] == n["id"])
    last_node = max(ids.values())
    if note:
        last_node += 1
        nodes.append({"id": last_node, "type": "Note", "pos": [40, -220], "size": [520, 180], "flags": {},
                      "order": len(nodes), "mode": 0, "properties": {"text": ""}, "widgets_values": [note]})
    return {"last_node_id": last_node, "last_link_id": link_id, "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def fetch_info(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/object_info", timeout=60) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("api_json")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--note", help="text of a Note node placed above the graph")
    args = ap.parse_args()
    prompt = json.loads(Path(args.api_json).read_text())
    if server_alive(args.server):
        info = fetch_info(args.server)
    else:
        with ComfyServer() as server:
            info = fetch_info(server.url)
    Path(args.output).write_text(json.dumps(convert(prompt, info, args.note), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
