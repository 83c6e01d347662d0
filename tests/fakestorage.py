"""A local stand-in for Google Cloud Storage's public object URLs, where MediaPipe publishes its models.

It answers ``GET/HEAD /{bucket}/{object}[?generation=N]`` the way
``https://storage.googleapis.com/{bucket}/{object}`` does for a public object (the XML API):

* ``200`` with the bytes, ``Content-Length``, ``x-goog-generation``, ``x-goog-stored-content-length``,
  ``x-goog-hash: md5=<base64>`` and ``ETag`` (the md5 in hex); without ``generation`` the live
  (latest) generation is served, with it exactly that one;
* ``404`` with the XML body ``<Error><Code>NoSuchKey</Code>...`` for an unknown object or
  generation;
* faults per object: a forced status (``status``, for the next ``fail_times`` requests or for
  all), a corrupt body (same length, wrong bytes), a connection dropped after N body bytes,
  a stall between the headers and the body.

Every request is recorded. Use::

    with FakeStorage() as gcs:
        gcs.add("mediapipe-assets", "modules/face_detection/x.tflite", data, generation=17)
        url = gcs.url("mediapipe-assets", "modules/face_detection/x.tflite", generation=17)

:meth:`FakeStorage.rebase` turns a real ``storage.googleapis.com`` URL into the same path and
query on this server, so an override catalogue can point the real entries here.
"""
from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, quote, unquote, urlsplit

from loopback import LoopbackServer, QuietHandler, RequestLog

_INVERT = bytes(range(255, -1, -1))
GCS_ORIGIN = "https://storage.googleapis.com"


@dataclass
class StoredObject:
    """One generation of an object, with the fault to inject."""

    data: bytes
    generation: int
    status: int | None = None  # forced HTTP status
    fail_times: int | None = None  # how many requests get the forced status (None: all)
    corrupt: bool = False
    drop_after: int | None = None  # close the connection after this many body bytes, once
    stall_s: float = 0.0  # wait this long after the headers before sending the body

    md5: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.md5 = hashlib.md5(self.data).digest()

    def body(self) -> bytes:
        return self.data.translate(_INVERT) if self.corrupt else self.data


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class FakeStorage(RequestLog):
    """A threaded HTTP server on 127.0.0.1 (random port) serving public bucket objects."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str], list[StoredObject]] = {}
        self._srv: LoopbackServer | None = None
        self._next_generation = 1_700_000_000_000_000

    # -- content -------------------------------------------------------------------------
    def add(self, bucket: str, name: str, data: bytes, generation: int | None = None) -> StoredObject:
        """Add a generation of ``bucket/name`` (it becomes the live one)."""
        with self._lock:
            if generation is None:
                self._next_generation += 1
                generation = self._next_generation
            obj = StoredObject(data=bytes(data), generation=int(generation))
            self.objects.setdefault((bucket, name), []).append(obj)
            return obj

    def add_url(self, url: str, data: bytes) -> StoredObject:
        """Serve ``data`` where the real ``storage.googleapis.com`` ``url`` points (its generation too)."""
        parts = urlsplit(url)
        bucket, _, name = unquote(parts.path).lstrip("/").partition("/")
        gen = parse_qs(parts.query).get("generation", [None])[0]
        return self.add(bucket, name, data, int(gen) if gen else None)

    def url(self, bucket: str, name: str, generation: int | None = None) -> str:
        q = f"?generation={generation}" if generation is not None else ""
        return f"{self.origin}/{bucket}/{quote(name)}{q}"

    def rebase(self, url: str) -> str:
        """``url`` on this server (same path and query)."""
        parts = urlsplit(url)
        return f"{self.origin}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    @property
    def origin(self) -> str:
        assert self._srv is not None, "FakeStorage not started"
        return self._srv.origin

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "FakeStorage":
        self._srv = LoopbackServer(_handler(self)).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.stop()

    def __enter__(self) -> "FakeStorage":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _lookup(self, bucket: str, name: str, generation: str | None) -> StoredObject | None:
        gens = self.objects.get((bucket, name))
        if not gens:
            return None
        if generation is None:
            return gens[-1]
        return next((g for g in gens if str(g.generation) == generation), None)


_NO_SUCH_KEY = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
                "<Message>The specified key does not exist.</Message><Details>No such object: {}</Details></Error>")


def _handler(store: FakeStorage) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            store.log(Request(self.command, self.path, dict(self.headers.items())))
            parts = urlsplit(self.path)
            bucket, _, name = unquote(parts.path).lstrip("/").partition("/")
            gen = parse_qs(parts.query).get("generation", [None])[0]
            obj = store._lookup(bucket, name, gen)
            if obj is None:
                body = _NO_SUCH_KEY.format(f"{bucket}/{name}").encode()
                return self._send(404, {"Content-Type": "application/xml; charset=UTF-8"}, body, head)
            if obj.status is not None and (obj.fail_times is None or obj.fail_times > 0):
                if obj.fail_times is not None:
                    obj.fail_times -= 1
                body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code></Error>"
                return self._send(obj.status, {"Content-Type": "application/xml; charset=UTF-8"}, body, head)
            body = obj.body()
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{obj.md5.hex()}"',
                "x-goog-generation": str(obj.generation),
                "x-goog-stored-content-length": str(len(obj.data)),
                "x-goog-hash": "md5=" + base64.b64encode(obj.md5).decode(),
                "Accept-Ranges": "bytes",
            }
            if head:
                return self._head(headers, len(body))
            if obj.stall_s:
                self.send_response(200)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.flush()
                time.sleep(obj.stall_s)
                try:
                    self.wfile.write(body)
                except OSError:  # the client gave up
                    pass
                self.close_connection = True
                return
            if obj.drop_after is not None:
                drop, obj.drop_after = obj.drop_after, None
                self.send_response(200)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(200, headers, body, head=False)

        def _head(self, headers: dict[str, str], length: int) -> None:
            self.send_response(200)
            for k, v in {**headers, "Content-Length": str(length)}.items():
                self.send_header(k, v)
            self.end_headers()

    return Handler


def serve_url_model(store: "FakeStorage", model_id: str, data: bytes, monkeypatch):
    """Serve ``data`` where catalogue entry ``model_id``'s first URL points, on the loopback ``store``, and
    patch the entry (URL, size, sha256) for the test's duration; returns the patched ``ModelFile``
    (the URL counterpart of ``fakehub.serve_model``)."""
    import dataclasses

    from comfyui_digitalhuman.model_loaders import catalog

    entry = catalog.get_model(model_id)
    store.add_url(entry.urls[0], data)
    local = dataclasses.replace(entry, urls=(store.rebase(entry.urls[0]),), size=len(data),
                                sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(catalog._default_catalog(), model_id, local)
    return local
