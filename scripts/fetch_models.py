#!/usr/bin/env python3
"""Pre-fetch the pack's model files into ComfyUI's models folders (no ComfyUI needed).

    python scripts/fetch_models.py --list
    python scripts/fetch_models.py --group musetalk [--models-dir /path/to/ComfyUI/models]
    python scripts/fetch_models.py --id liveportrait.warping_module --id face.parsing_bisenet
    python scripts/fetch_models.py --group all --verify      # also hash files already in place

Exit codes: 0 all files present or fetched, 1 some failed, 2 bad arguments or no models folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (registers ``comfyui_digitalhuman``)

from comfyui_digitalhuman.model_loaders.catalog import files_for, get_model, groups, load_catalog  # noqa: E402
from comfyui_digitalhuman.model_loaders.download import fetch_models, format_report, target_path  # noqa: E402
from comfyui_digitalhuman.model_loaders.folders import ModelsDirNotFound, models_root  # noqa: E402


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _list(models_dir: str | None) -> str:
    cat = load_catalog()
    try:
        root: Path | None = models_root(models_dir)
    except ModelsDirNotFound:
        root = None
    lines = [f"groups: {', '.join(groups(cat))}", ""]
    for e in cat.values():
        state = ""
        if root is not None:
            state = "present" if target_path(e, root).is_file() else "missing"
        src = e.repo or (urlsplit(e.urls[0]).netloc if e.urls else f"pip:{e.pip}")
        opt = " (optional)" if e.optional else ""
        lines.append(f"{e.id:45} {_size(e.size):>10}  {','.join(e.groups):28} {src}  {state}{opt}")
    return "\n".join(lines)


class _TextProgress:
    """Progress on stderr, one line per 5% step (readable in logs, not only on a TTY)."""

    def __init__(self) -> None:
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if pct // 5 != self.last // 5:
            self.last = pct
            print(f"  {pct:3d}% ({done / 1e6:.1f} / {total / 1e6:.1f} MB)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Download DigitalHuman model files into ComfyUI's models folders.")
    ap.add_argument("--group", action="append", default=[], help="a catalogue group (see --list); repeatable")
    ap.add_argument("--id", action="append", default=[], dest="ids", help="a model id such as musetalk.unet_v15; repeatable")
    ap.add_argument("--list", action="store_true", help="list groups and files (and whether they are present)")
    ap.add_argument("--optional", action="store_true", help="with --group all: include optional alternatives")
    ap.add_argument("--verify", action="store_true", help="also hash files that are already in place")
    ap.add_argument("--models-dir", help="ComfyUI's models folder (default: the ComfyUI this pack is installed in)")
    args = ap.parse_args(argv)

    if args.list:
        print(_list(args.models_dir))
        return 0
    if not args.group and not args.ids:
        ap.print_usage(sys.stderr)
        print("error: give --group, --id or --list", file=sys.stderr)
        return 2
    try:
        entries = []
        for g in args.group:
            entries += files_for(g, include_optional=True if args.optional else None)
        entries += [get_model(i) for i in args.ids]
        root = models_root(args.models_dir)
    except (ModelsDirNotFound, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    unique = list({e.id: e for e in entries}.values())
    print(f"models folder: {root}", file=sys.stderr)
    results = fetch_models(unique, models_dir=root, progress=_TextProgress(), verify=args.verify)
    print(format_report(results))
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
