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
- ``Authorization`` and anything that looks like a key is redacted from every message and log line.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
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


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """``text`` as a string with every given secret and every key-looking token replaced."""
    s = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            s = s.replace(secret, REDACTED)
    for pat in _KEY_PATTERNS:
        if pat.groups:
            s = pat.sub(lambda m: m.group(1) + REDACTED, s)
        else:
            s = pat.sub(REDACTED, s)
    return s


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
    """(message, type, code) from an error response: OpenAI's ``{"error": {...}}`` or similar bodies."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return (text[:500] or resp.reason or "no message"), None, None
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict) and not err.get("message") and "detail" in err:
        err = _detail_error(err["detail"])  # FastAPI-style APIs (ElevenLabs)
    if isinstance(err, dict):
        msg = err.get("message") or err.get("detail") or err.get("msg") or json.dumps(err)[:500]
        code = err.get("code")
        return str(msg), (str(err["type"]) if err.get("type") else None), (str(code) if code is not None else None)
    if isinstance(err, str):
        return err, None, None
    return json.dumps(body)[:500], None, None


class HttpClient:
    """A requests session with the pack's timeouts, retries, interrupt polling and redaction.

    Subclasses (one per API) set ``service`` and the auth headers; they call :meth:`request`.
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

    # -- redaction -------------------------------------------------------------------------
    def redact(self, text: Any) -> str:
        """``text`` with this client's secrets and any key-looking value removed."""
        secrets = list(self._secrets)
        auth = self.session.headers.get("Authorization")
        if auth:
            secrets.append(auth)
        return redact(text, secrets)

    def _log(self, level: int, msg: str, *args: Any) -> None:
        if log.isEnabledFor(level):
            log.log(level, "%s", self.redact(msg % args if args else msg))

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in small steps, calling ``check_interrupt`` between them."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            if self.check_interrupt is not None:
                self.check_interrupt()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._sleep(min(self.poll_s, left))

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        """One HTTP exchange; with an interrupt hook it runs in a thread so Cancel is seen while waiting."""
        timeout = (self.connect_timeout_s, self.read_timeout_s)
        if self.check_interrupt is None:
            return self.session.request(method, url, timeout=timeout, **kw)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["resp"] = self.session.request(method, url, timeout=timeout, **kw)
            except BaseException as exc:  # handed to the waiting thread
                box["exc"] = exc

        t = threading.Thread(target=work, name=f"dh-{self.service}-request", daemon=True)
        t.start()
        while t.is_alive():
            self.check_interrupt()  # an interrupt leaves the worker to end at its own timeout
            t.join(self.poll_s)
        if "exc" in box:
            raise box["exc"]
        return box["resp"]

    # -- the request loop ------------------------------------------------------------------
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
            if self.check_interrupt is not None:
                self.check_interrupt()
            self._log(logging.DEBUG, "%s %s %s try %d/%d", self.service, method, url, attempt, pol.max_tries)
            delay: float | None = None
            try:
                resp = self._send(method, url, json=json_body, data=data, files=files, stream=stream)
            except requests.exceptions.ConnectTimeout as exc:
                failure = ApiError(self.service, 0, self.redact(f"could not connect within {self.connect_timeout_s:g} s ({type(exc).__name__})"), url=url, attempts=attempt)
            except requests.exceptions.ReadTimeout:
                failure = ApiError(self.service, 0, f"no answer within the read timeout of {self.read_timeout_s:g} s", url=url, attempts=attempt)
                if not pol.retry_read_timeout:
                    self._log(logging.WARNING, "%s", failure)
                    raise failure from None
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
                        raise ApiError(self.service, resp.status_code, "the answer is not JSON: " + self.redact((resp.text or "")[:200]), url=url, attempts=attempt) from None
                msg, etype, code = error_message(resp)
                rid = resp.headers.get("x-request-id") or resp.headers.get("request-id")
                failure = ApiError(self.service, resp.status_code, self.redact(msg), err_type=etype, code=code, url=url,
                                   attempts=attempt, request_id=self.redact(rid) if rid else None)
                if resp.status_code not in pol.retry_statuses:
                    self._log(logging.WARNING, "%s", failure)
                    raise failure from None
                delay = retry_delay(resp.headers)
                if delay is not None:
                    delay = min(delay, pol.max_retry_after_s)
            if attempt >= pol.max_tries:
                self._log(logging.WARNING, "%s", failure)
                raise failure from None
            if delay is None:
                delay = pol.backoff(attempt, self._rng)
            self._log(logging.INFO, "%s; retrying in %.1f s (try %d of %d)", failure, delay, attempt + 1, pol.max_tries)
            self.wait(delay)
