"""Model pre-fetch node: download a catalogue group into ComfyUI's models folders."""
from __future__ import annotations

from ..model_loaders.catalog import files_for, groups
from ..model_loaders.download import fetch_models, format_report
from ..model_loaders.folders import register_folders
from .common import CAT_MODELS, Progress, check_interrupt

try:  # cheap: only touches folder_paths' table; outside ComfyUI there is nothing to register
    register_folders()
except ImportError:
    pass


class DH_DownloadModels:
    """Fetch the weights of one model group ahead of time, with a progress bar."""

    DESCRIPTION = (
        "Downloads the model files of the chosen group from Hugging Face (MediaPipe's face models from "
        "MediaPipe's own storage) into ComfyUI's models folders, skipping files already there, and checks "
        "their size and sha256 (a file in place is hashed once; the verdict is remembered). Loader nodes also "
        "fetch on first use; this node lets you do it ahead of time. Set HF_ENDPOINT for a mirror, HF_TOKEN for "
        "gated repos, DH_OFFLINE=1 to download nothing."
    )
    CATEGORY = CAT_MODELS
    FUNCTION = "download"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("One line per file: present, fetched or FAILED (with how to place it by hand).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "group": (groups(), {"tooltip": "Which set of model files to fetch; 'all' is every required file."}),
                "include_optional": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "With 'all': also fetch the optional alternatives (e.g. the .bin twin of a .safetensors file).",
                }),
            }
        }

    def download(self, group: str, include_optional: bool):
        entries = files_for(group, include_optional=True if include_optional else None)
        bar = Progress(max(sum(e.size or 0 for e in entries), len(entries)))
        results = fetch_models(entries, progress=bar, check_interrupt=check_interrupt)
        report = format_report(results)
        return {"ui": {"text": [report]}, "result": (report,)}


NODE_CLASS_MAPPINGS = {"DH_DownloadModels": DH_DownloadModels}
NODE_DISPLAY_NAME_MAPPINGS = {"DH_DownloadModels": "Download Models (DigitalHuman)"}
