"""The FLUX workflow of Step 1: core nodes only, FLUX settings, the default-guidance note.

Every workflow is also checked against a live ComfyUI in tests/integration/test_workflows.py.
"""
from __future__ import annotations

import json
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def load(name: str) -> tuple[dict, dict]:
    return (json.loads((WORKFLOWS / f"{name}.json").read_text()), json.loads((WORKFLOWS / "api" / f"{name}.json").read_text()))


def test_flux_graph_uses_core_nodes_and_documents_guidance():
    ui, api = load("avatar_flux")
    types_ = {n["class_type"] for n in api.values()}
    assert types_ == {"DH_PortraitPrompt", "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
                      "VAEDecode", "DH_PortraitCheck", "SaveImage"}
    ks = next(n for n in api.values() if n["class_type"] == "KSampler")["inputs"]
    assert (ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["steps"]) == (1.0, "euler", "simple", 20)
    assert next(n for n in api.values() if n["class_type"] == "CheckpointLoaderSimple")["inputs"]["ckpt_name"] == "flux1-dev-fp8.safetensors"
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "3.5" in note and "model_base.py" in note and "FluxGuidance" in note
