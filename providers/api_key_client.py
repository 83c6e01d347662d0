"""An HTTP client authorised by an account key, for every API the pack calls with one.

The key comes from the ``api_key`` argument, the environment variable ``key_env`` or the key file
(:func:`.keys.resolve_api_key`, which validates it and names where to put it when it is missing).
It goes out in one header and is registered as a secret of the client, so the HTTP base redacts it
from every message, log line and error; a subclass only says which header and scheme its API takes.
"""
from __future__ import annotations

import os

from .http import HttpClient
from .keys import resolve_api_key


class ApiKeyClient(HttpClient):
    """:class:`HttpClient` with the account key in ``auth_header`` as ``auth_scheme + key``."""

    auth_header = "Authorization"
    auth_scheme = "Bearer "

    def __init__(self, base_url: str, api_key: str | None, key_env: str, *,
                 user_dir: str | os.PathLike | None = None, headers: dict[str, str] | None = None, **kw):
        self.key_env = key_env  # where the key came from, for a caller's message about it
        key = resolve_api_key(api_key, key_env, user_dir, service=self.service)
        super().__init__(base_url, headers={self.auth_header: f"{self.auth_scheme}{key}", **(headers or {})},
                         secrets=[key], **kw)
