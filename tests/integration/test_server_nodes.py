"""Every DH_ node is served by a real ComfyUI with the inputs and outputs it declares."""
from __future__ import annotations

import json
import urllib.request

import pytest

pytestmark = pytest.mark.integration

CATEGORIES = {"DigitalHuman/1 Avatar", "DigitalHuman/2 Motion", "DigitalHuman/3 Lip Sync",
              "DigitalHuman/4 Real time", "DigitalHuman/Audio", "DigitalHuman/Video",
              "DigitalHuman/Face", "DigitalHuman/Models", "DigitalHuman/Speech"}


def _norm(x):
    return json.loads(json.dumps(x, default=str))


def test_no_node_module_was_disabled(comfy, pack_nodes):
    assert pack_nodes.DISABLED == {}, f"node modules failed to import: {pack_nodes.DISABLED}"
    log = comfy.log_tail(400)
    assert "nodes of '" not in log, log
    assert "IMPORT FAILED" not in log, log


def test_object_info_lists_every_node_with_its_declared_io(comfy, pack_nodes):
    # fetched now, not the session's copy: file lists in the schemas follow the input folder, which
    # other tests fill
    with urllib.request.urlopen(f"{comfy.url}/object_info", timeout=60) as r:
        object_info = json.loads(r.read())
    ours = {k for k in object_info if k.startswith("DH_")}
    assert ours == set(pack_nodes.NODE_CLASS_MAPPINGS), "server and pack disagree on the DH_ nodes"
    for node_id, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        info = object_info[node_id]
        declared = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert _norm(info["input"].get(section, {})) == _norm(declared.get(section, {})), (node_id, section)
        assert list(info["output"]) == list(cls.RETURN_TYPES), node_id
        assert info["category"] in CATEGORIES, (node_id, info["category"])
        assert info["output_node"] == bool(getattr(cls, "OUTPUT_NODE", False))


def test_every_node_documents_itself(pack_nodes):
    for node_id, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("DH_")
        assert getattr(cls, "DESCRIPTION", "").strip(), f"{node_id} has no DESCRIPTION"
        for section, inputs in cls.INPUT_TYPES().items():
            if section == "hidden":
                continue
            for name, spec in inputs.items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_catalogue_names_only_real_nodes(pack_nodes):
    from comfyui_digitalhuman.model_loaders.catalog import load_catalog

    for entry in load_catalog().values():
        unknown = set(entry.nodes) - set(pack_nodes.NODE_CLASS_MAPPINGS)
        assert not unknown, f"catalogue entry {entry.id} names unknown nodes {sorted(unknown)}"


def test_loaders_ask_only_for_catalogued_files():
    from comfyui_digitalhuman.model_loaders import face, liveportrait, musetalk
    from comfyui_digitalhuman.model_loaders.catalog import load_catalog

    ids = set(load_catalog())
    for module in (face, liveportrait, musetalk):
        wanted = module.CATALOG_IDS.values() if isinstance(module.CATALOG_IDS, dict) else module.CATALOG_IDS
        missing = set(wanted) - ids
        assert not missing, f"{module.__name__} asks for {sorted(missing)}, not in the catalogue"
