"""A local stand-in for the Hugging Face hub, for tests that download with huggingface_hub.

It answers the requests ``hf_hub_download`` makes (huggingface_hub 2.x):

* ``HEAD/GET /{repo}/resolve/{revision}/{path}`` with ``X-Repo-Commit`` and ``ETag``. Small
  files are served directly (ETag = git blob sha1). LFS files (weights) answer ``302`` to a
  second listener on another port, the "CDN", with ``X-Linked-Etag`` (sha256) and
  ``X-Linked-Size``, as the hub does; the CDN serves the bytes and honours ``Range``.
* A renamed repo answers ``307`` to its new name (``FakeHub.rename``).
* ``GET /api/agent-harnesses`` (the registry huggingface_hub fetches for its user agent, and
  caches under ``HF_HOME``) answers like the hub, so a test can see whether it got cached.
* Errors as the hub reports them: ``404`` + ``X-Error-Code: EntryNotFound`` /
  ``RevisionNotFound`` / ``RepoNotFound``; forced ``500``.
* Faults: a corrupt body (same length, wrong bytes), or a connection dropped after N bytes of
  the first GET (the client resumes with a ``Range`` request).

Xet headers are sent only for files marked ``xet=True`` (to check that a client does not use
Xet); the Xet token route is not implemented, so a client that tries Xet fails. Every
request is recorded.

Use::

    with FakeHub() as hub:
        hub.add("org/repo", "weights.pth", data)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)

To fetch a tiny stand-in for a catalogue file through ``ensure_model``, use
:func:`serve_model`, which also makes the catalogue's size and sha256 match the stand-in.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from loopback import LoopbackServer, QuietHandler, RequestLog

_INVERT = bytes(range(255, -1, -1))  # maps every byte b to 255 - b (= b ^ 0xFF)
LFS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".onnx", ".tflite")


@dataclass
class HubFile:
    """One file served by the fake hub, with the fault to inject."""

    data: bytes
    lfs: bool
    status: int | None = None  # forced HTTP status for resolve requests (404, 500, ...)
    corrupt: bool = False  # serve wrong bytes of the right length
    drop_after: int | None = None  # close the connection after this many body bytes, once
    xet: bool = False  # advertise Xet storage (X-Xet-Hash) as the hub does for Xet-backed files

    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha1(self) -> str:
        """The git object id the hub sends as ETag: of the file itself, or of its LFS pointer."""
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
            content = pointer.encode()
        else:
            content = self.data
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def body(self) -> bytes:
        if not self.corrupt:
            return self.data
        return self.data.translate(_INVERT)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    server: str  # "hub" or "cdn"


@dataclass
class _Repo:
    files: dict[str, HubFile] = field(default_factory=dict)
    revisions: set[str] = field(default_factory=lambda: {"main"})


class FakeHub(RequestLog):
    """Threaded HTTP servers on 127.0.0.1 (random ports) that behave like the hub and its CDN."""

    def __init__(self, commit: str = "0123456789abcdef0123456789abcdef01234567"):
        super().__init__()
        self.commit = commit
        self.repos: dict[str, _Repo] = {}
        self.renamed: dict[str, str] = {}  # old repo id -> new repo id (answered with 307)
        self._hub: LoopbackServer | None = None
        self._cdn: LoopbackServer | None = None

    # -- content -------------------------------------------------------------------------
    def add(self, repo: str, path: str, data: bytes, lfs: bool | None = None, revision: str | None = None) -> HubFile:
        """Serve ``data`` as ``path`` of ``repo`` (LFS by default for weight-like names).

        The repo answers to ``main``, to the hub's commit and to ``revision`` if given (a pinned
        commit of a catalogue entry)."""
        is_lfs = path.endswith(LFS_SUFFIXES) if lfs is None else lfs
        f = HubFile(data=bytes(data), lfs=is_lfs)
        r = self.repos.setdefault(repo, _Repo())
        r.files[path] = f
        if revision:
            r.revisions.add(revision)
        return f

    def add_entry(self, entry, data: bytes) -> HubFile:
        """Serve ``data`` where a catalogue ``ModelFile`` says its file lives (repo, revision, path)."""
        return self.add(entry.repo, entry.file, data, revision=entry.revision)

    def rename(self, old: str, new: str) -> None:
        """Answer requests for ``old`` with a redirect to ``new``, as the hub does for moved repos."""
        self.renamed[old] = new

    def file(self, repo: str, path: str) -> HubFile:
        return self.repos[repo].files[path]

    @property
    def endpoint(self) -> str:
        assert self._hub is not None, "FakeHub not started"
        return self._hub.origin

    @property
    def cdn(self) -> str:
        assert self._cdn is not None, "FakeHub not started"
        return self._cdn.origin

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "FakeHub":
        self._hub = LoopbackServer(_handler(self, "hub")).start()
        self._cdn = LoopbackServer(_handler(self, "cdn")).start()
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._cdn):
            if srv is not None:
                srv.stop()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lookup used by the handler --------------------------------------------------------
    def _lookup(self, repo: str, revision: str, path: str) -> tuple[int, HubFile | None, str]:
        if repo not in self.repos:
            return 404, None, "RepoNotFound"
        if revision != self.commit and revision not in self.repos[repo].revisions:
            return 404, None, "RevisionNotFound"
        f = self.repos[repo].files.get(path)
        if f is None:
            return 404, None, "EntryNotFound"
        return 200, f, ""

    def _by_sha(self, sha: str) -> HubFile | None:
        for repo in self.repos.values():
            for f in repo.files.values():
                if f.lfs and f.sha256 == sha:
                    return f
        return None


_RESOLVE = re.compile(r"^/(?:(?:models|datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _record(self) -> None:
            hub.log(Request(self.command, self.path, dict(self.headers.items()), role))

        def do_HEAD(self) -> None:
            self._record()
            self._serve(head=True)

        def do_GET(self) -> None:
            self._record()
            self._serve(head=False)

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"", head: bool = False) -> None:
            self.send_response(status)
            headers = {"Content-Length": str(len(body)), **headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if role == "cdn":
                return self._serve_cdn(path, head)
            if path == "/api/agent-harnesses":
                body = b'{"standardEnvVars": ["AI_AGENT", "AGENT"], "harnesses": {}}'
                return self._send(200, {"Content-Type": "application/json"}, body, head)
            m = _RESOLVE.match(path)
            if not m:
                return self._send(404, {"X-Error-Code": "RepoNotFound"}, b"not found", head)
            if m["repo"] in hub.renamed:
                location = f"/{hub.renamed[m['repo']]}/resolve/{m['rev']}/{m['path']}"
                return self._send(307, {"Location": location}, b"", head)
            status, f, code = hub._lookup(m["repo"], m["rev"], m["path"])
            common = {"X-Repo-Commit": hub.commit}
            if f is not None and f.status is not None:
                msg = b'{"error":"forced failure"}'
                extra = {"X-Error-Code": "EntryNotFound"} if f.status == 404 else {}
                return self._send(f.status, {**common, **extra, "Content-Type": "application/json"}, msg, head)
            if f is None:
                common = common if code == "EntryNotFound" else {}
                return self._send(status, {**common, "X-Error-Code": code, "X-Error-Message": code}, b"{}", head)
            if f.lfs:
                location = f"{hub.cdn}/lfs/{f.sha256}?repo={m['repo']}"
                headers = {
                    **common,
                    "Location": location,
                    "ETag": f'"{f.git_sha1}"',
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(len(f.data)),
                }
                if f.xet:
                    headers["X-Xet-Hash"] = hashlib.sha256(f"xet:{f.sha256}".encode()).hexdigest()
                    headers["X-Xet-Refresh-Route"] = f"{hub.endpoint}/api/models/{m['repo']}/xet-read-token/{hub.commit}"
                return self._send(302, headers, b"", head)
            headers = {**common, "ETag": f'"{f.git_sha1}"', "Content-Type": "application/octet-stream"}
            return self._send_bytes(f, headers, head)

        def _serve_cdn(self, path: str, head: bool) -> None:
            m = re.match(r"^/lfs/([0-9a-f]{64})$", path)
            f = hub._by_sha(m.group(1)) if m else None
            if f is None:
                return self._send(404, {}, b"no such object", head)
            return self._send_bytes(f, {"ETag": f'"{f.sha256}"', "Content-Type": "application/octet-stream"}, head)

        def _send_bytes(self, f: HubFile, headers: dict[str, str], head: bool) -> None:
            body = f.body()
            start, status = 0, 200
            rng = _RANGE.match(self.headers.get("Range", "") or "")
            if rng:
                start = int(rng.group(1))
                end = int(rng.group(2)) if rng.group(2) else len(body) - 1
                if start >= len(body):
                    return self._send(416, {"Content-Range": f"bytes */{len(body)}"}, b"", head)
                headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(body)}"}
                body, status = body[start : end + 1], 206
            headers = {**headers, "Accept-Ranges": "bytes"}
            if head:
                return self._send(status, {**headers, "Content-Length": str(len(body))}, b"", head=True)
            drop = f.drop_after
            if drop is not None and not rng:
                f.drop_after = None  # fault once
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, headers, body)

    return Handler


def serve_model(hub: FakeHub, model_id: str, data: bytes, monkeypatch):
    """Serve ``data`` as catalogue file ``model_id`` and patch its catalogue entry (size,
    sha256) to match, for the test's duration; returns the patched ``ModelFile``."""
    import dataclasses

    from comfyui_digitalhuman.model_loaders import catalog

    entry = catalog.get_model(model_id)
    tiny = dataclasses.replace(entry, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(catalog._default_catalog(), model_id, tiny)
    hub.add_entry(tiny, data)
    return tiny
