"""The OpenAI images client and the shared HTTP base against the local fake server."""
from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import pytest
from PIL import Image

from fakeopenai import FakeOpenAI, fake_key, gen_color
from comfyui_digitalhuman.providers import http as dh_http
from comfyui_digitalhuman.providers.http import ApiError, RetryPolicy
from comfyui_digitalhuman.providers.keys import MissingKeyError
from comfyui_digitalhuman.providers.openai_images import OpenAIImages
from comfyui_digitalhuman.providers.prices import image_cost

KEY = fake_key("test")
FAST = RetryPolicy(max_tries=4, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0.3)


@pytest.fixture()
def server():
    with FakeOpenAI(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def client(server, key=KEY, **kw) -> OpenAIImages:
    kw.setdefault("retry", FAST)
    return OpenAIImages(api_key=key, base_url=server.url, **kw)


def test_generation_request_fields_and_decoding(server):
    res = client(server).generate("a portrait", model="gpt-image-1", size="1024x1536", quality="low",
                                  background="opaque", n=2)
    assert len(server.requests) == 1
    req = server.requests[0]
    assert req.path == "/v1/images/generations"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.json == {"prompt": "a portrait", "model": "gpt-image-1", "n": 2, "size": "1024x1536",
                        "quality": "low", "output_format": "png", "background": "opaque"}
    assert len(res.images) == 2
    for i, im in enumerate(res.images):
        assert im.shape == (96, 64, 3) and im.dtype == np.uint8
        assert tuple(im[0, 0]) == gen_color(i)
    assert res.usage["total_tokens"] == 100
    assert res.cost_usd == pytest.approx(2 * 0.016)


def test_background_auto_is_not_sent(server):
    client(server).generate("p", model="gpt-image-1", size="1024x1024")
    assert "background" not in server.requests[0].json


def test_edit_multipart_single_and_several(server):
    ref = np.zeros((32, 48, 3), np.uint8)
    ref[:, :24] = (255, 0, 0)
    res = client(server).edit("make it formal", [ref], model="gpt-image-1", quality="medium", size="1024x1024")
    req = server.requests[0]
    assert req.path == "/v1/images/edits"
    assert req.form == {"prompt": "make it formal", "model": "gpt-image-1", "n": "1", "size": "1024x1024",
                        "quality": "medium", "output_format": "png"}
    assert [f[0] for f in req.files] == ["image"]
    sent = np.asarray(Image.open(io.BytesIO(req.files[0][3])).convert("RGB"))
    np.testing.assert_array_equal(sent, ref)
    # the fake mirrors the upload: red half must now be on the right
    np.testing.assert_array_equal(res.images[0], ref[:, ::-1])
    client(server).edit("two refs", [ref, ref], model="gpt-image-1")
    assert [f[0] for f in server.requests[1].files] == ["image[]", "image[]"]


def test_unknown_model_shows_api_error(server):
    with pytest.raises(ApiError) as ei:
        client(server).generate("p", model="dall-e-3")
    e = ei.value
    assert e.status == 400 and e.code == "model_not_found" and e.request_id == "req_fake0001"
    assert str(e) == (f"OpenAI API error 400 ({server.url}/images/generations): The model 'dall-e-3' does not exist or "
                      "you do not have access to it. [type=invalid_request_error, code=model_not_found, request id req_fake0001]")
    assert len(server.requests) == 1  # 4xx is not retried


def test_wrong_key_401_message_is_redacted(server, caplog):
    wrong = fake_key("wrongwrong")
    caplog.set_level(logging.DEBUG, logger="DigitalHuman")
    with pytest.raises(ApiError) as ei:
        client(server, key=wrong).generate("p", model="gpt-image-1")
    text = str(ei.value)
    assert ei.value.status == 401 and "Incorrect API key provided" in text
    assert wrong not in text and "wrongwrong" not in text and "[REDACTED]" in text
    assert ei.value.__cause__ is None and wrong not in repr(ei.value.args)
    assert all(wrong not in r.getMessage() for r in caplog.records)
    assert any("401" in r.getMessage() for r in caplog.records)


def test_429_retry_after_is_honoured_then_success(server):
    server.script = [("status", 429, {"Retry-After": "0.2"}), ("status", 429, {"Retry-After": "0.2"})]
    t0 = time.monotonic()
    res = client(server).generate("p", model="gpt-image-1")
    assert time.monotonic() - t0 >= 0.4
    assert len(server.requests) == 3 and len(res.images) == 1


def test_500_then_success_and_bounded_tries(server, caplog):
    caplog.set_level(logging.INFO, logger="DigitalHuman")
    server.script = [("status", 500), ("status", 503)]
    client(server).generate("p", model="gpt-image-1")
    assert len(server.requests) == 3
    server.requests.clear()
    server.script = [("status", 500)] * 10
    with pytest.raises(ApiError) as ei:
        client(server).generate("p", model="gpt-image-1")
    assert len(server.requests) == 4 and ei.value.status == 500 and ei.value.attempts == 4
    assert "after 4 tries" in str(ei.value)
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_read_timeout_is_an_error_not_retried(server):
    server.script = [("hang", 2.0)]
    c = client(server, read_timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(ApiError) as ei:
        c.generate("p", model="gpt-image-1")
    assert time.monotonic() - t0 < 1.5
    assert ei.value.status == 0 and "read timeout of 0.3 s" in str(ei.value)
    assert len(server.requests) == 1


def test_connection_error_retried_then_reported():
    calls = []
    c = OpenAIImages(api_key=KEY, base_url="http://127.0.0.1:9/v1", retry=FAST, sleep=lambda s: calls.append(s) or time.sleep(s))
    with pytest.raises(ApiError) as ei:
        c.generate("p", model="gpt-image-1")
    assert ei.value.status == 0 and "connection failed" in str(ei.value) and ei.value.attempts == 4
    assert calls  # it waited between tries


def test_interrupt_stops_a_hanging_request(server):
    class Stop(Exception):
        pass

    server.script = [("hang", 3.0)]
    t_end = time.monotonic() + 0.3

    def check():
        if time.monotonic() > t_end:
            raise Stop("cancelled")

    t0 = time.monotonic()
    with pytest.raises(Stop):
        client(server, check_interrupt=check).generate("p", model="gpt-image-1")
    assert time.monotonic() - t0 < 1.5


def test_interrupt_during_backoff(server):
    server.script = [("status", 429, {"Retry-After": "30"})]
    n = {"calls": 0}

    def check():
        n["calls"] += 1
        if len(server.requests) >= 1 and n["calls"] > 5:
            raise KeyboardInterrupt

    pol = RetryPolicy(max_tries=3, max_retry_after_s=30)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        OpenAIImages(api_key=KEY, base_url=server.url, retry=pol, check_interrupt=check).generate("p", model="gpt-image-1")
    assert time.monotonic() - t0 < 3 and len(server.requests) == 1


def test_backoff_grows_and_jitters():
    import random

    pol = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, jitter=0.25)
    rng = random.Random(0)
    d = [pol.backoff(a, rng) for a in (1, 2, 3, 4, 5)]
    assert 1.0 <= d[0] <= 1.25 and 2.0 <= d[1] <= 2.5 and 4.0 <= d[2] <= 5.0
    assert 5.0 <= d[3] <= 6.25 and 5.0 <= d[4] <= 6.25


def test_parse_retry_after_forms():
    assert dh_http.parse_retry_after("3") == 3.0
    assert dh_http.parse_retry_after(None) is None and dh_http.parse_retry_after("soon") is None
    assert dh_http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def test_redact_patterns():
    s = dh_http.redact(f'Authorization: Bearer abc.def-123456 key {fake_key("proj")} and "api_key": "zzzzyyyyxxxx"',
                       ["secret-value"])
    assert "abc.def-123456" not in s and fake_key("proj") not in s and "zzzzyyyyxxxx" not in s
    assert dh_http.redact("my secret-value here", ["secret-value"]) == "my [REDACTED] here"


def test_key_from_env_and_file(tmp_path, monkeypatch, server):
    with pytest.raises(MissingKeyError) as ei:
        OpenAIImages(user_dir=tmp_path, base_url=server.url)
    msg = str(ei.value)
    assert "OPENAI_API_KEY" in msg and str(tmp_path / "digitalhuman" / "keys.json") in msg
    (tmp_path / "digitalhuman").mkdir()
    (tmp_path / "digitalhuman" / "keys.json").write_text(json.dumps({"OPENAI_API_KEY": KEY}))
    OpenAIImages(user_dir=tmp_path, base_url=server.url, retry=FAST).generate("p", model="gpt-image-1")
    assert server.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
    (tmp_path / "digitalhuman" / "keys.json").write_text("{not json")
    with pytest.raises(MissingKeyError, match="not valid JSON"):
        OpenAIImages(user_dir=tmp_path, base_url=server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    OpenAIImages(user_dir=tmp_path, retry=FAST).generate("p", model="gpt-image-1")
    assert len(server.requests) == 2


def test_bad_arguments_fail_before_sending(server):
    c = client(server)
    with pytest.raises(ValueError, match="count must be between 1 and 10"):
        c.generate("p", n=11)
    with pytest.raises(ValueError, match="transparent"):
        c.generate("p", background="transparent", output_format="jpeg")
    with pytest.raises(ValueError, match="prompt is empty"):
        c.generate("  ")
    assert server.requests == []


def test_cost_table_lookup():
    assert image_cost("gpt-image-1", "medium", "1024x1024", 1) == pytest.approx(0.042)
    assert image_cost("gpt-image-1", "auto", "auto", 3) == pytest.approx(3 * 0.042)
    assert image_cost("some-future-model", "medium", "1024x1024", 1) == pytest.approx(0.04)


def test_edit_is_resent_whole_after_a_500(server):
    server.script = [("status", 502)]
    ref = np.full((16, 16, 3), 77, np.uint8)
    res = client(server).edit("p", [ref], model="gpt-image-1")
    assert len(server.requests) == 2
    assert [len(r.files) for r in server.requests] == [1, 1]
    assert server.requests[0].files[0][3] == server.requests[1].files[0][3]
    assert server.requests[1].form["prompt"] == "p" and res.images[0].shape == (16, 16, 3)


def test_retry_after_ms_is_preferred():
    assert dh_http.retry_delay({"retry-after-ms": "250", "Retry-After": "9"}) == pytest.approx(0.25)
    assert dh_http.retry_delay({"Retry-After": "2"}) == 2.0
    assert dh_http.retry_delay({}) is None
