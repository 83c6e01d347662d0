"""What every OpenAI client of the pack shares: the base URL (``OPENAI_BASE_URL`` for a compatible
server or a proxy), the key (``OPENAI_API_KEY`` or the key file, validated and redacted by the HTTP
base) and the optional organisation header."""
from __future__ import annotations

import os
from typing import Callable

from .api_key_client import ApiKeyClient
from .http import RetryPolicy

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIClient(ApiKeyClient):
    """An :class:`ApiKeyClient` authorised for OpenAI's API (or a compatible server at ``base_url``)."""

    service = "OpenAI"

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, user_dir: str | None = None,
                 check_interrupt: Callable[[], None] | None = None, read_timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, **kw):
        url = base_url or os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
        org = os.environ.get("OPENAI_ORGANIZATION", "").strip()
        super().__init__(url, api_key, "OPENAI_API_KEY", user_dir=user_dir,
                         headers={"OpenAI-Organization": org} if org else None, check_interrupt=check_interrupt,
                         read_timeout_s=read_timeout_s, retry=retry, **kw)
