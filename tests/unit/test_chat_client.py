"""The OpenAI-compatible chat client (providers/chat.py) against the fake server (tests/fakechat.py)."""
from __future__ import annotations

import time

import pytest

from fakechat import FakeChat, default_reply
from fakeopenai import fake_key
from comfyui_digitalhuman.providers.chat import ChatSettings, OpenAICompatibleChat, build_messages
from comfyui_digitalhuman.providers.http import ApiError, RetryPolicy
from comfyui_digitalhuman.providers.keys import MissingKeyError

FAST = RetryPolicy(max_tries=3, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=0.2)
KEY = fake_key("chat")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for v in ("OPENAI_API_KEY", "DH_CHAT_BASE_URL", "MY_CHAT_KEY"):
        monkeypatch.delenv(v, raising=False)


def chat(srv, **kw) -> OpenAICompatibleChat:
    return OpenAICompatibleChat(srv.url, ChatSettings("llama3.2", 0.2, 50), retry=FAST, read_timeout_s=kw.pop("timeout", 5.0), **kw)


MSGS = [{"role": "user", "content": "hello"}]


def test_streamed_tokens_form_the_answer_and_the_body_follows_the_contract():
    with FakeChat() as srv:
        srv.token_delay_s = 0.01
        c = chat(srv)
        t0 = time.monotonic()
        it = c.stream(MSGS)
        first = next(it)
        t_first = time.monotonic() - t0
        rest = list(it)
        assert first + "".join(rest) == default_reply(MSGS)
        assert len(rest) > 5 and t_first < 0.5  # tokens come as they are made, not at the end
        body = srv.requests[-1]
        assert body == {"model": "llama3.2", "messages": MSGS, "stream": True, "temperature": 0.2, "max_tokens": 50}
        assert "Authorization" not in srv.headers_seen[-1]  # a local server: no key needed, none sent


def test_key_from_the_named_variable_and_never_in_errors(monkeypatch):
    with FakeChat(api_key=KEY) as srv:
        monkeypatch.setenv("MY_CHAT_KEY", KEY)
        assert "".join(chat(srv, key_name="MY_CHAT_KEY").stream(MSGS)) == default_reply(MSGS)
        monkeypatch.setenv("MY_CHAT_KEY", fake_key("wrong"))
        with pytest.raises(ApiError) as ei:
            list(chat(srv, key_name="MY_CHAT_KEY").stream(MSGS))
        assert ei.value.status == 401 and "wrong" not in str(ei.value) and fake_key("wrong") not in repr(ei.value)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        OpenAICompatibleChat("https://api.openai.com/v1")
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        OpenAICompatibleChat("http://127.0.0.1:9/v1", key_name=KEY)


def test_429_is_retried_then_answers_and_500_fails_clearly():
    with FakeChat() as srv:
        srv.script = [("status", 429, {"Retry-After": "0.05"})]
        assert "".join(chat(srv).stream(MSGS)) == default_reply(MSGS)
        assert len(srv.requests) == 2
        srv.script = [("status", 500, {})] * 3
        with pytest.raises(ApiError, match="Chat API error 500 .*after 3 tries"):
            list(chat(srv).stream(MSGS))


def test_a_stalled_stream_is_an_error_after_the_read_timeout():
    with FakeChat() as srv:
        srv.script = [("stall", 3, 3.0)]
        got = []
        t0 = time.monotonic()
        with pytest.raises(ApiError, match="stream stopped"):
            for tok in chat(srv, timeout=0.4).stream(MSGS):
                got.append(tok)
        assert len(got) == 3 and time.monotonic() - t0 < 2.5  # the tokens before the stall were given out


def test_garbage_html_and_error_events():
    with FakeChat() as srv:
        srv.script = [("garbage",)]
        with pytest.raises(ApiError, match="not a chat-completions stream"):
            list(chat(srv).stream(MSGS))
        srv.script = [("html",)]
        with pytest.raises(ApiError, match="no server-sent events.*text/html"):
            list(chat(srv).stream(MSGS))
        srv.script = [("error_event", 2)]
        with pytest.raises(ApiError, match="overloaded"):
            list(chat(srv).stream(MSGS))


def test_stop_while_waiting_for_tokens():
    with FakeChat() as srv:
        srv.token_delay_s = 0.3

        class Stop(Exception):
            pass

        deadline = time.monotonic() + 0.5

        def check():
            if time.monotonic() > deadline:
                raise Stop()

        t0 = time.monotonic()
        with pytest.raises(Stop):
            list(chat(srv).stream(MSGS, check_interrupt=check))
        assert time.monotonic() - t0 < 1.0  # polled every 0.1 s while no token comes


def test_server_down_is_a_clear_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OpenAICompatibleChat(f"http://127.0.0.1:{port}/v1", retry=RetryPolicy(max_tries=1))
    with pytest.raises(ApiError, match="connection failed"):
        list(c.stream(MSGS))


def test_messages_carry_system_prompt_knowledge_and_history():
    m = build_messages("You are Ada.", "Opening hours: 9-17.", [("hi", "Hello!"), ("and?", "")], "when do you open?")
    assert m[0] == {"role": "system", "content": "You are Ada.\n\nAnswer using this knowledge where it applies:\nOpening hours: 9-17."}
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "user"]
    assert build_messages("", "", [], "x") == [{"role": "user", "content": "x"}]
