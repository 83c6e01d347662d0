"""The model catalogue: every weight file the pack uses, read from ``catalog/*.json``.

The catalogue is data so that adding a model family is one JSON file, and so that the
download code, the pre-fetch node and the CLI all agree on source, size, hash, licence and
target folder. One JSON file per family; ids are ``<family>.<name>`` where ``<family>`` is the
file's stem.

A file comes from a Hugging Face repo (``repo`` + ``revision`` + ``file``) or, for weights their
publisher keeps elsewhere, from plain ``urls`` tried in order; ``pip`` may name a package that
ships the same bytes (at ``file`` inside it), used as a local source when it is installed.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"

#: ComfyUI ``models/`` sub-folders the catalogue may place files in.
FOLDERS: tuple[str, ...] = ("liveportrait", "musetalk", "vae", "audio_encoders", "face_analysis", "latentsync", "cosyvoice")

#: Fields every entry must spell out (``local``, ``pip`` and ``urls`` are optional).
REQUIRED_FIELDS: tuple[str, ...] = (
    "id", "repo", "revision", "file", "size", "sha256", "license", "folder", "nodes", "group", "optional", "note",
)
OPTIONAL_FIELDS: tuple[str, ...] = ("local", "pip", "urls")

HF_HOME_URL = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")


class CatalogError(ValueError):
    """The catalogue JSON is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class ModelFile:
    """One weight or config file: where it comes from and where it goes."""

    id: str
    repo: str | None
    revision: str | None
    file: str
    size: int | None
    sha256: str | None
    license: str
    folder: str
    local: str
    nodes: tuple[str, ...]
    groups: tuple[str, ...]
    optional: bool
    note: str
    pip: str | None = None
    source: str = ""
    urls: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    def url(self, endpoint: str | None = None) -> str | None:
        """The direct download URL: on the hub (``endpoint`` defaults to huggingface.co), else the
        first of ``urls``; None for a file that only a pip package ships."""
        if self.repo is None:
            return self.urls[0] if self.urls else None
        base = (endpoint or HF_HOME_URL).rstrip("/")
        return f"{base}/{self.repo}/resolve/{self.revision}/{self.file}"


def _fail(source: str, index: int, entry_id: Any, msg: str) -> CatalogError:
    where = f"{source}, entry {index}" + (f" ('{entry_id}')" if entry_id else "")
    return CatalogError(f"model catalogue {where}: {msg}")


def _http_url(value: str) -> bool:
    """An absolute http(s) URL with a host, no credentials and no whitespace."""
    parts = urlsplit(value)
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
            and not any(c.isspace() for c in value))


def _relative_posix(value: str) -> bool:
    p = PurePosixPath(value)
    return bool(value) and not p.is_absolute() and ".." not in p.parts and "\\" not in value


def parse_entry(raw: Any, source: str, index: int, family: str | None = None) -> ModelFile:
    """Validate one JSON entry and build its :class:`ModelFile`; errors name file, index and id."""
    if not isinstance(raw, dict):
        raise _fail(source, index, None, f"expected an object, got {type(raw).__name__}")
    eid = raw.get("id")
    missing = [k for k in REQUIRED_FIELDS if k not in raw]
    if missing:
        raise _fail(source, index, eid, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise _fail(source, index, eid, f"unknown field(s) {', '.join(unknown)}")
    if not isinstance(eid, str) or not _ID.match(eid):
        raise _fail(source, index, eid, "'id' must look like '<family>.<name>' (lower case, digits, '_')")
    if family is not None and eid.split(".", 1)[0] != family:
        raise _fail(source, index, eid, f"id must start with the family '{family}.' (the file's name)")
    repo, pip, urls = raw["repo"], raw.get("pip"), raw.get("urls")
    if pip is not None and (not isinstance(pip, str) or not pip.strip()):
        raise _fail(source, index, eid, f"'pip' must name a package, got {pip!r}")
    if urls is not None:
        if repo is not None:
            raise _fail(source, index, eid, "give either 'repo' (Hugging Face) or 'urls', not both")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and _http_url(u) for u in urls):
            raise _fail(source, index, eid, f"'urls' must be a non-empty list of http(s) URLs, got {urls!r}")
    if repo is None:
        if not urls and not pip:
            raise _fail(source, index, eid, "'repo' is null, so 'urls' or 'pip' must say where the file comes from")
    elif not isinstance(repo, str) or repo.count("/") != 1:
        raise _fail(source, index, eid, f"'repo' must be a Hugging Face repo id 'owner/name', got {repo!r}")
    elif not isinstance(raw["revision"], str) or not raw["revision"]:
        raise _fail(source, index, eid, "'revision' must be a branch, tag or commit hash")
    if not isinstance(raw["file"], str) or not _relative_posix(raw["file"]):
        raise _fail(source, index, eid, f"'file' must be a relative path in the repo, got {raw['file']!r}")
    local = raw.get("local") or raw["file"]
    if not isinstance(local, str) or not _relative_posix(local):
        raise _fail(source, index, eid, f"'local' must be a relative path without '..', got {local!r}")
    size = raw["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise _fail(source, index, eid, f"'size' must be a positive byte count or null, got {size!r}")
    sha = raw["sha256"]
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
        raise _fail(source, index, eid, f"'sha256' must be 64 lower-case hex digits or null, got {sha!r}")
    if raw["folder"] not in FOLDERS:
        raise _fail(source, index, eid, f"unknown folder {raw['folder']!r}; known: {', '.join(FOLDERS)}")
    nodes = raw["nodes"]
    if not isinstance(nodes, list) or not all(isinstance(n, str) and n.startswith("DH_") for n in nodes):
        raise _fail(source, index, eid, "'nodes' must be a list of node ids starting with 'DH_'")
    group = raw["group"]
    groups = [group] if isinstance(group, str) else group
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) and g for g in groups):
        raise _fail(source, index, eid, "'group' must be a name or a non-empty list of names")
    if "all" in groups:
        raise _fail(source, index, eid, "'all' is reserved as a group name")
    if not isinstance(raw["optional"], bool):
        raise _fail(source, index, eid, "'optional' must be true or false")
    for key in ("license", "note"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _fail(source, index, eid, f"'{key}' must be a non-empty string")
    return ModelFile(
        id=eid, repo=repo, revision=raw["revision"], file=raw["file"], size=size, sha256=sha,
        license=raw["license"], folder=raw["folder"], local=local, nodes=tuple(nodes), groups=tuple(groups),
        optional=raw["optional"], note=raw["note"], pip=pip, source=source, urls=tuple(urls or ()),
    )


def load_catalog_from(directory: Path) -> dict[str, ModelFile]:
    """Read and merge every ``*.json`` in ``directory``; duplicate ids across files are an error."""
    directory = Path(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise CatalogError(f"no catalogue files (*.json) in {directory}")
    out: dict[str, ModelFile] = {}
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CatalogError(f"model catalogue {path.name}: invalid JSON ({exc})") from None
        if not isinstance(data, list):
            raise CatalogError(f"model catalogue {path.name}: expected a list of entries")
        for i, raw in enumerate(data):
            entry = parse_entry(raw, path.name, i, family=path.stem)
            if entry.id in out:
                raise CatalogError(
                    f"model catalogue: id '{entry.id}' defined twice ({out[entry.id].source} and {path.name})"
                )
            out[entry.id] = entry
    return out


#: A folder of catalogue files whose entries replace the pack's by id (a mirror, fine-tuned
#: weights, or the small stand-ins the integration tests serve from a local fake hub).
OVERRIDES_ENV = "DH_CATALOG_OVERRIDES"


@lru_cache(maxsize=1)
def _default_catalog() -> dict[str, ModelFile]:
    cat = load_catalog_from(CATALOG_DIR)
    extra = os.environ.get(OVERRIDES_ENV)
    if extra:
        overrides = load_catalog_from(Path(extra))
        unknown = sorted(set(overrides) - set(cat))
        if unknown:
            raise CatalogError(f"{OVERRIDES_ENV}={extra} names ids the pack does not have: {', '.join(unknown)}")
        cat.update(overrides)
    return cat


def load_catalog(directory: Path | None = None) -> dict[str, ModelFile]:
    """The merged catalogue (cached for the pack's own folder); a copy, so callers may mutate it."""
    return dict(_default_catalog() if directory is None else load_catalog_from(directory))


def get_model(model_id: str, catalog: dict[str, ModelFile] | None = None) -> ModelFile:
    """The entry for ``model_id``, or a KeyError that lists close ids."""
    cat = catalog if catalog is not None else load_catalog()
    try:
        return cat[model_id]
    except KeyError:
        family = model_id.split(".", 1)[0]
        near = sorted(k for k in cat if k.startswith(family + ".")) or sorted(cat)
        raise KeyError(f"unknown model id '{model_id}'; known ids: {', '.join(near)}") from None


def groups(catalog: dict[str, ModelFile] | None = None) -> list[str]:
    """All group names, sorted, plus ``all``."""
    cat = catalog if catalog is not None else load_catalog()
    return sorted({g for e in cat.values() for g in e.groups}) + ["all"]


def files_for(
    name: str, include_optional: bool | None = None, catalog: dict[str, ModelFile] | None = None
) -> list[ModelFile]:
    """The entries of a group (``all`` = every required file) or of a node id.

    Optional files are left out of ``all`` and of node look-ups, and kept when a group is named
    directly (a group made only of alternatives, such as ``liveportrait_safetensors``, is the
    user's explicit choice). ``include_optional`` overrides both.
    """
    cat = catalog if catalog is not None else load_catalog()
    if name == "all":
        picked, default_opt = list(cat.values()), False
    elif name.startswith("DH_"):
        picked, default_opt = [e for e in cat.values() if name in e.nodes], False
    else:
        picked, default_opt = [e for e in cat.values() if name in e.groups], True
        if not picked:
            raise KeyError(f"unknown model group '{name}'; known groups: {', '.join(groups(cat))}")
    keep_opt = default_opt if include_optional is None else include_optional
    return [e for e in picked if keep_opt or not e.optional]

