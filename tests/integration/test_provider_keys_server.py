"""API keys with copy-paste slips through a real ComfyUI: what /history and the server log keep.

Each case starts its own ComfyUI (about 5 s) with the key in ``OPENAI_API_KEY``, pointed at the
fake OpenAI server in this process, and runs DH_OpenAIImage. A broken key must fail the node with
a message naming the variable, before any request, and no piece of 8 characters of the key (raw
or escaped) may appear anywhere in the history entry or the log.
"""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from comfy_server import ComfyServer
from fakeopenai import FakeOpenAI, fake_key

pytestmark = pytest.mark.integration


def pieces(secret: str, n: int = 8) -> set[str]:
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    return {f[i:i + n] for f in forms for i in range(len(f) - n + 1)}


def prompt() -> dict:
    return {
        "1": {"class_type": "DH_OpenAIImage", "inputs": {"prompt": "a portrait", "model": "gpt-image-1", "size": "1024x1024",
                                                         "quality": "low", "background": "opaque", "count": 1, "run_id": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def run_and_fetch_history(url: str, body: dict, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": body}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        prompt_id = json.loads(r.read())["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=30) as r:
            entry = json.loads(r.read()).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
            return entry
        time.sleep(0.2)
    raise TimeoutError("the prompt did not finish")


def execution_error(entry: dict) -> dict:
    return next(d for name, d in entry["status"]["messages"] if name == "execution_error")


@pytest.mark.parametrize("slip", ["\n", "\r\n", "\u200b"], ids=["newline", "crlf", "zero-width-space"])
def test_broken_env_key_never_reaches_history_or_log(slip, tmp_path):
    good = fake_key("history")
    bad = good[:12] + slip + good[12:]
    with FakeOpenAI(api_key=good) as api:
        with ComfyServer(workdir=tmp_path / "comfy", env={"OPENAI_API_KEY": bad, "OPENAI_BASE_URL": api.url}) as comfy:
            entry = run_and_fetch_history(comfy.url, prompt())
        log = comfy.log_path.read_text(encoding="utf-8", errors="replace")
        assert api.requests == []  # refused where it was read
    err = execution_error(entry)
    assert err["node_type"] == "DH_OpenAIImage"
    assert "environment variable OPENAI_API_KEY" in err["exception_message"], err["exception_message"]
    assert "OPENAI_API_KEY" in log and "Exception during processing" in log
    history_text = json.dumps(entry)
    for name, text in (("history", history_text), ("history (decoded)", str(entry)), ("server log", log)):
        found = sorted(p for p in pieces(bad) | pieces(good) if p in text)
        assert not found, f"{name} holds pieces of the key: {found}"


def test_padded_env_key_is_stripped_and_works(tmp_path):
    good = fake_key("padded")
    with FakeOpenAI(api_key=good) as api:
        with ComfyServer(workdir=tmp_path / "comfy", env={"OPENAI_API_KEY": f"  {good} \n", "OPENAI_BASE_URL": api.url}) as comfy:
            entry = run_and_fetch_history(comfy.url, prompt())
        assert [r.headers["Authorization"] for r in api.requests] == [f"Bearer {good}"]
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["2"]["images"]
