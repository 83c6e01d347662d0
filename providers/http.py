"""The HTTP base every API client of the pack shares (OpenAI, HeyGen, D-ID, ElevenLabs, ...).

Why one base: timeouts, retries, interrupt handling and key redaction must behave the same for
every paid API, and a key must never leak into an exception, a log line or ComfyUI's history.

- connect/read timeouts on every request;
- retries with exponential backoff plus jitter on 408, 429 (``Retry-After``/``retry-after-ms``
  honoured), 5xx and
  connection errors, at most ``max_tries`` attempts in all; a read timeout is *not* retried by
  default (the server may have done, and billed, the work);
- while a request is in flight and while waiting between tries, ``check_interrupt()`` is called
  every ``poll_s`` seconds, so ComfyUI's Cancel stops the wait at once;
- errors are :class:`ApiError` with the HTTP status and the API's own message (the
  ``{"error": {"message", "type", "code"}}`` body of OpenAI and similar shapes of others);
- ``Authorization`` and anything that looks like a key is redacted from every message and log line,
  in every form a key can take there (escaped, percent-encoded, pieces of 8 characters); and no
  exception leaves a public method of a client (:func:`guarded`) with a secret in its text, its
  args or its chain, whatever raised it.
"""
from __future__ import annotations

import email.utils
import functools
import json
import logging
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import requests

log = logging.getLogger("DigitalHuman.http")

REDACTED = "[REDACTED]"
# Key-looking tokens: OpenAI style ``sk-...``, bearer tokens, long opaque tokens after key=.
_KEY_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=:+/]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|authorization|token|secret)[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])[^\s\"',&}]{4,}"),
]
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 522, 524, 529})


PIECE = 8  # a run of this many characters of a secret in a text is a leak (shorter secrets: the whole secret)
_SECRET_HEADER = re.compile(r"(?i)authorization|api[_-]?key|token|secret")


def secret_forms(secret: str) -> set[str]:
    """The forms in which ``secret`` can appear in an exception text or a log line.

    Raw; escaped as ``repr``, JSON and ``unicode_escape`` write it (``\\n``, ``\\u200b``: a header
    error quotes the header with ``%r``); percent-encoded (a key in a URL); and its pieces between
    characters that are not printable ASCII (a latin-1 round trip turns one such character into two).
    """
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], secret.encode("unicode_escape").decode("ascii"),
             urllib.parse.quote(secret, safe="")}
    forms.update(p for p in re.split(r"[^!-~]+", secret) if p)
    return {f for f in forms if f}


def _secret_spans(s: str, secrets: Iterable[str]) -> list[tuple[int, int]]:
    """Character ranges of ``s`` that hold a piece of ``PIECE`` characters of any form of any secret."""
    spans = []
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        for form in secret_forms(secret):
            n = min(PIECE, len(secret))
            if len(form) < n:
                continue
            grams = {form[i:i + n] for i in range(len(form) - n + 1)}
            spans.extend((i, i + n) for i in range(len(s) - n + 1) if s[i:i + n] in grams)
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        # overlapping runs join; so do runs split only by an escape or a stray character (no space between)
        if merged and a <= merged[-1][1] + 6 and not any(c.isspace() for c in s[merged[-1][1]:a]):
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """``text`` as a string with every form and every piece of ``PIECE`` characters of the given secrets
    (see :func:`secret_forms`) and every key-looking token replaced by ``[REDACTED]``."""
    s = str(text)
    spans = _secret_spans(s, secrets)
    if spans:
        out, last = [], 0
        for a, b in spans:
            out += [s[last:a], REDACTED]
            last = b
        s = "".join(out) + s[last:]
    for pat in _KEY_PATTERNS:
        if pat.groups:
            s = pat.sub(lambda m: m.group(1) + REDACTED, s)
        else:
            s = pat.sub(REDACTED, s)
    return s


def _chain_text(exc: BaseException) -> str:
    """Everything a traceback print shows of ``exc`` and its causes and contexts, args included."""
    parts, seen, e = [], set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts += [type(e).__name__, str(e), repr(e.args)]
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


class ApiError(RuntimeError):
    """An API call that failed: HTTP status (0 when no answer came), the API's message, type, code."""

    def __init__(self, service: str, status: int, message: str, *, err_type: str | None = None,
                 code: str | None = None, url: str = "", attempts: int = 1, request_id: str | None = None):
        self.service = service
        self.status = int(status)
        self.api_message = message
        self.err_type = err_type
        self.code = code
        self.url = url
        self.attempts = attempts
        self.request_id = request_id
        extra = ", ".join(x for x in (f"type={err_type}" if err_type else "", f"code={code}" if code else "",
                                      f"request id {request_id}" if request_id else "") if x)
        where = f" ({url})" if url else ""
        head = f"{service} API error {status}" if status else f"{service} API: no answer"
        tail = f" [{extra}]" if extra else ""
        tries = f" after {attempts} tries" if attempts > 1 else ""
        super().__init__(f"{head}{where}{tries}: {message}{tail}")


@dataclass
class RetryPolicy:
    """How often and how long to retry. ``max_tries`` counts the first attempt."""

    max_tries: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0
    jitter: float = 0.25  # fraction of the delay added at random
    retry_statuses: frozenset = field(default_factory=lambda: RETRY_STATUSES)
    retry_read_timeout: bool = False

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before try ``attempt + 1`` (attempt counts from 1)."""
        d = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return d * (1.0 + self.jitter * rng.random())


def retry_delay(headers: Any) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms`` (OpenAI) or ``Retry-After``; None if absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("Retry-After"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


def _detail_error(detail: Any) -> Any:
    """``{"detail": {"status", "message"}}`` or ``{"detail": [{"loc", "msg", "type"}]}`` as an error dict."""
    if isinstance(detail, dict):
        return {"message": detail.get("message") or detail.get("msg") or json.dumps(detail)[:500],
                "code": detail.get("status") or detail.get("code"), "type": detail.get("type")}
    if isinstance(detail, list):
        parts = []
        for d in detail[:5]:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", []) if x != "body")
                parts.append(f"{loc}: {d.get('msg', '')}" if loc else str(d.get("msg", "")))
            else:
                parts.append(str(d))
        return {"message": "; ".join(parts) or "invalid request", "code": None,
                "type": (detail[0].get("type") if detail and isinstance(detail[0], dict) else None)}
    return detail


def error_message(resp: requests.Response) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an error response: OpenAI's ``{"error": {...}}``, ``{"code", "message"}``
    envelopes (HeyGen, LiveAvatar), FastAPI's ``{"detail": ...}`` or D-ID's ``{"kind", "description"}``."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return (text[:500] or resp.reason or "no message"), None, None
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict) and not err.get("message") and "kind" in err and "description" in err:
        return str(err["description"]), str(err["kind"]), None  # D-ID: {"kind": "...Error", "description": "..."}
    if isinstance(err, dict) and not err.get("message") and "detail" in err:
        err = _detail_error(err["detail"])  # FastAPI-style APIs (ElevenLabs)
    if isinstance(err, dict):
        msg = err.get("message") or err.get("detail") or err.get("msg") or json.dumps(err)[:500]
        code = err.get("code")
        return str(msg), (str(err["type"]) if err.get("type") else None), (str(code) if code is not None else None)
    if isinstance(err, str):
        return err, None, None
    return json.dumps(body)[:500], None, None


def guarded(method: Callable) -> Callable:
    """Wrap a public method of a provider so that no exception leaves it holding a secret.

    Whatever raised (requests, urllib3, http.client, a codec, our own code), an exception whose
    text, args or cause/context chain holds any form of the client's secrets is replaced by an
    :class:`ApiError` with the redacted text and no chain; one without is passed on unchanged, and
    so is the interrupt raised by ``check_interrupt`` (ComfyUI's Cancel). Every public method of an
    API client is wrapped with this (``HttpClient.request`` is).
    """
    @functools.wraps(method)
    def wrapper(self: "HttpClient", *args: Any, **kw: Any) -> Any:
        try:
            return method(self, *args, **kw)
        except Exception as exc:  # noqa: BLE001 (every exception is inspected, then re-raised or replaced)
            failure = self._leaving(exc)
            if failure is exc:
                raise
        raise failure  # outside the except block: the replaced exception is not chained to it

    wrapper.__dh_guarded__ = True
    return wrapper


class HttpClient:
    """A requests session with the pack's timeouts, retries, interrupt polling and redaction.

    Subclasses (one per API) set ``service`` and the auth headers; they call :meth:`request` and
    wrap their own public methods with :func:`guarded`.
    """

    service = "HTTP"

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None, secrets: Iterable[str] = (),
                 connect_timeout_s: float = 10.0, read_timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, check_interrupt: Callable[[], None] | None = None,
                 poll_s: float = 0.1, sleep: Callable[[float], None] = time.sleep, seed: int | None = None):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(headers or {})
        self._secrets = [s for s in secrets if s]
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.retry = retry or RetryPolicy()
        self.check_interrupt = check_interrupt
        self.poll_s = poll_s
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._interrupt: BaseException | None = None  # the last exception check_interrupt raised

    # -- redaction -------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """The secrets this client knows: those it was given, plus the value and the credential part
        (after ``Bearer ``/``Basic ``) of every header named like a key (Authorization, *api-key*, *token*)."""
        out = list(self._secrets)
        for name, value in self.session.headers.items():
            if value and _SECRET_HEADER.search(str(name)):
                scheme, _, cred = str(value).strip().partition(" ")
                # "Bearer <key>": the credential only, so the scheme word and the space stay readable
                out.append(cred if cred.strip() and scheme.isalpha() else str(value))
        return out

    def redact(self, text: Any) -> str:
        """``text`` with every form of this client's secrets and any key-looking value removed."""
        return redact(text, self.secrets())

    def _leaving(self, exc: Exception) -> Exception:
        """``exc`` itself when it is the interrupt or holds no secret; else a clean :class:`ApiError`."""
        if exc is self._interrupt:
            return exc
        chain = _chain_text(exc)
        if self.redact(chain) == chain:
            return exc
        if isinstance(exc, ApiError):
            return ApiError(exc.service, exc.status, self.redact(exc.api_message), err_type=exc.err_type, code=exc.code,
                            url=self.redact(exc.url), attempts=exc.attempts,
                            request_id=self.redact(exc.request_id) if exc.request_id else None)
        return ApiError(self.service, 0, self.redact(f"{type(exc).__name__}: {exc}"))

    def _log(self, level: int, msg: str, *args: Any) -> None:
        if log.isEnabledFor(level):
            log.log(level, "%s", self.redact(msg % args if args else msg))

    # -- waiting ---------------------------------------------------------------------------
    def _poll(self) -> None:
        """``check_interrupt()``, remembering what it raised so that it passes :func:`guarded` unchanged."""
        if self.check_interrupt is None:
            return
        try:
            self.check_interrupt()
        except BaseException as exc:
            self._interrupt = exc
            raise

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in small steps, calling ``check_interrupt`` between them."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            self._poll()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._sleep(min(self.poll_s, left))

    def _transport(self, method: str, url: str, **kw: Any) -> requests.Response:
        """One ``session.request``. Connection and timeout errors go to the retry loop; anything else
        (a header the HTTP library refuses, a codec error) becomes an :class:`ApiError` here, redacted
        and without its chain: such errors quote the headers, key included, in their text or args."""
        try:
            return self.session.request(method, url, timeout=(self.connect_timeout_s, self.read_timeout_s), **kw)
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001
            hint = " (a header or the URL holds a character HTTP cannot carry)" if isinstance(exc, (UnicodeError, requests.exceptions.InvalidHeader)) else ""
            failure = ApiError(self.service, 0, self.redact(f"the request could not be sent{hint}: {type(exc).__name__}: {exc}"),
                               url=self.redact(url))
        raise failure

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        """One HTTP exchange; with an interrupt hook it runs in a thread so Cancel is seen while waiting."""
        if self.check_interrupt is None:
            return self._transport(method, url, **kw)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["resp"] = self._transport(method, url, **kw)
            except BaseException as exc:  # handed to the waiting thread
                box["exc"] = exc

        t = threading.Thread(target=work, name=f"dh-{self.service}-request", daemon=True)
        t.start()
        while t.is_alive():
            self._poll()  # an interrupt leaves the worker to end at its own timeout
            t.join(self.poll_s)
        if "exc" in box:
            raise box["exc"]
        return box["resp"]

    # -- the request loop ------------------------------------------------------------------
    @guarded
    def request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                files: Any = None, expect_json: bool = True, stream: bool = False) -> Any:
        """Send ``method path`` with retries; return the parsed JSON (or the Response).

        ``stream=True`` (with ``expect_json=False``) returns once the headers of a successful answer
        are in; the caller reads the body as it arrives and closes the response.
        """
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        pol = self.retry
        attempt = 0
        while True:
            attempt += 1
            self._poll()
            self._log(logging.DEBUG, "%s %s %s try %d/%d", self.service, method, url, attempt, pol.max_tries)
            delay: float | None = None
            final = False
            try:
                resp = self._send(method, url, json=json_body, data=data, files=files, stream=stream)
            except requests.exceptions.ConnectTimeout as exc:
                failure = ApiError(self.service, 0, self.redact(f"could not connect within {self.connect_timeout_s:g} s ({type(exc).__name__})"), url=url, attempts=attempt)
            except requests.exceptions.ReadTimeout:
                failure = ApiError(self.service, 0, f"no answer within the read timeout of {self.read_timeout_s:g} s", url=url, attempts=attempt)
                final = not pol.retry_read_timeout
            except requests.exceptions.ConnectionError as exc:
                failure = ApiError(self.service, 0, self.redact(f"connection failed: {exc}"), url=url, attempts=attempt)
            else:
                if resp.status_code < 400:
                    self._log(logging.DEBUG, "%s %s %s -> %d", self.service, method, url, resp.status_code)
                    if not expect_json:
                        return resp
                    try:
                        return resp.json()
                    except ValueError:
                        failure = ApiError(self.service, resp.status_code, "the answer is not JSON: " + self.redact((resp.text or "")[:200]), url=url, attempts=attempt)
                    raise failure  # outside the except block: not chained to the decoder's error
                msg, etype, code = error_message(resp)
                rid = resp.headers.get("x-request-id") or resp.headers.get("request-id")
                failure = ApiError(self.service, resp.status_code, self.redact(msg), err_type=etype, code=code, url=url,
                                   attempts=attempt, request_id=self.redact(rid) if rid else None)
                final = resp.status_code not in pol.retry_statuses
                if not final:
                    delay = retry_delay(resp.headers)
                    if delay is not None:
                        delay = min(delay, pol.max_retry_after_s)
            if final or attempt >= pol.max_tries:
                self._log(logging.WARNING, "%s", failure)
                raise failure  # built in the except block, raised outside it: no chained transport error
            if delay is None:
                delay = pol.backoff(attempt, self._rng)
            self._log(logging.INFO, "%s; retrying in %.1f s (try %d of %d)", failure, delay, attempt + 1, pol.max_tries)
            self.wait(delay)
