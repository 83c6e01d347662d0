"""Fetch one file from a plain HTTP(S) URL into a given path, for catalogue entries with ``urls``.

Why not huggingface_hub: some published weights (MediaPipe's face models) live on their
publisher's own storage, not on the hub. This module only moves bytes; where they go, the
size/sha256 check and the move into place belong to ``download.py``, which hands in a path
inside the models folder's staging directory.

Behaviour (settings from ``data/downloads.json``): connect/read timeouts; retries with a
doubling wait on 408/429/5xx and on failed or dropped connections; any other HTTP answer fails
at once; the advertised length is compared with the catalogue's size before a byte is written;
byte progress and ``check_interrupt()`` after every chunk and while waiting between tries.
No credentials are ever sent.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

SETTINGS_FILE = Path(__file__).resolve().parents[1] / "data" / "downloads.json"
_HEADERS = {"User-Agent": "ComfyUI-DigitalHuman (model download)", "Accept-Encoding": "identity"}
_WAIT_STEP_S = 0.1


class UrlFetchFailed(Exception):
    """The URL did not deliver the file; the message is a short reason (no advice)."""


class _Retryable(Exception):
    """A failure worth another attempt (5xx, dropped or refused connection, timeout)."""


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout_s: float
    read_timeout_s: float
    max_tries: int
    retry_delay_s: float
    chunk_bytes: int
    retry_statuses: frozenset[int]


@lru_cache(maxsize=2)
def load_settings(path: str | None = None) -> FetchSettings:
    """The settings in ``data/downloads.json`` (or ``path``); a broken file is an error naming it."""
    p = Path(path) if path else SETTINGS_FILE
    try:
        raw = {k: v["value"] for k, v in json.loads(p.read_text(encoding="utf-8")).items() if not k.startswith("_")}
        return FetchSettings(
            connect_timeout_s=float(raw["connect_timeout_s"]), read_timeout_s=float(raw["read_timeout_s"]),
            max_tries=max(1, int(raw["max_tries"])), retry_delay_s=float(raw["retry_delay_s"]),
            chunk_bytes=max(1024, int(raw["chunk_bytes"])), retry_statuses=frozenset(int(s) for s in raw["retry_statuses"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"download settings {p} could not be read: {type(exc).__name__}: {exc}") from None


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


def _wait(seconds: float, check_interrupt: Callable[[], None] | None) -> None:
    for _ in range(max(1, math.ceil(seconds / _WAIT_STEP_S))):
        if check_interrupt is not None:
            check_interrupt()
        time.sleep(_WAIT_STEP_S)


def fetch_url(
    url: str,
    part: Path,
    expected_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    settings: FetchSettings | None = None,
) -> int:
    """Write the body of ``url`` to ``part`` (overwritten); return its byte count.

    Raises :class:`UrlFetchFailed` with the reason once the tries are used up; whatever
    ``check_interrupt`` raises passes through untouched (the caller removes ``part``).
    """
    s = settings or load_settings()
    attempt = 0
    while True:
        attempt += 1
        if check_interrupt is not None:
            check_interrupt()
        try:
            return _fetch_once(url, Path(part), expected_size, progress, check_interrupt, s)
        except _Retryable as exc:
            if attempt >= s.max_tries:
                tries = f" (tried {attempt} times)" if attempt > 1 else ""
                raise UrlFetchFailed(f"{exc}{tries}") from None
            _wait(s.retry_delay_s * 2 ** (attempt - 1), check_interrupt)


def _fetch_once(url: str, part: Path, expected_size: int | None, progress, check_interrupt, s: FetchSettings) -> int:
    import requests

    host = host_of(url)
    try:
        resp = requests.get(url, stream=True, timeout=(s.connect_timeout_s, s.read_timeout_s), headers=_HEADERS)
    except requests.exceptions.ConnectTimeout:
        raise _Retryable(f"could not connect to {host} within {s.connect_timeout_s:g} s") from None
    except requests.exceptions.ReadTimeout:
        raise _Retryable(f"{host} did not answer within {s.read_timeout_s:g} s") from None
    except requests.exceptions.ConnectionError as exc:
        raise _Retryable(f"could not connect to {host} ({_short(exc)})") from None
    except requests.exceptions.RequestException as exc:  # invalid URL, too many redirects, ...
        raise UrlFetchFailed(f"{type(exc).__name__}: {_short(exc)}") from None
    with resp:
        code = resp.status_code
        if code in s.retry_statuses:
            raise _Retryable(f"{host} answered HTTP {code} ({resp.reason})")
        if code != 200:
            raise UrlFetchFailed(f"{host} answered HTTP {code} ({resp.reason})")
        advertised = _int(resp.headers.get("Content-Length"))
        if advertised is not None and expected_size is not None and advertised != expected_size:
            raise UrlFetchFailed(
                f"{host} offers {advertised} bytes, the catalogue expects {expected_size} (a different file)"
            )
        total = expected_size or advertised or 0
        done = 0
        try:
            with open(part, "wb") as f:
                for chunk in resp.iter_content(s.chunk_bytes):
                    if not chunk:
                        continue
                    done += len(chunk)
                    if expected_size is not None and done > expected_size:
                        raise UrlFetchFailed(f"{host} sent more than the {expected_size} bytes expected")
                    f.write(chunk)
                    if progress is not None:
                        progress(done, total or done)
                    if check_interrupt is not None:
                        check_interrupt()
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout) as exc:
            raise _Retryable(f"the transfer from {host} broke off after {done} bytes ({_short(exc)})") from None
        want = advertised if advertised is not None else expected_size
        if want is not None and done != want:
            raise _Retryable(f"the transfer from {host} ended after {done} of {want} bytes")
        return done


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _short(exc: BaseException, limit: int = 160) -> str:
    """The innermost reason of a requests/urllib3 error, one line."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
